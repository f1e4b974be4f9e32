"""The admin center's connectors page (`GET /connectors` on the admin listener): one tenant's inbound
and outbound connectors, each outbound one with its validation state.

Rendered from value types (`model.connectors`) only, as the status page is: one HTML page with no
script, no style sheet and nothing fetched from elsewhere. Every text from the database (names,
domains, comments, validation replies, which a remote server wrote) is HTML-escaped. Who may see it
and whose connectors it shows is the route's business (`admin.api`: the tenant of the caller's token).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

from postroom.model.connectors import (
    InboundConnector,
    OutboundConnector,
    ValidationResult,
    last_validation_run,
    validation_state,
)


def _cells(values: Sequence[str], tag: str = "td") -> str:
    return "".join(f"<{tag}>{html.escape(value)}</{tag}>" for value in values)


def _validation(results: Sequence[ValidationResult]) -> str:
    state = html.escape(validation_state(results))
    run = last_validation_run(results)
    if not run:
        return state
    items = "".join(
        f"<li>{html.escape(r.recipient)}: {'ok' if r.ok else 'failed'}"
        + (f" ({html.escape(r.reply)})" if r.reply else "")
        + "</li>"
        for r in run
    )
    return f"{state}<ul>{items}</ul>"


def render_connectors(
    tenant: str,
    inbound: Sequence[InboundConnector],
    outbound: Sequence[OutboundConnector],
    validations: Mapping[int, Sequence[ValidationResult]],
) -> str:
    """The page's HTML; `validations` holds each outbound connector's history by its id (newest first)."""
    inbound_rows = "".join(
        "<tr>"
        + _cells(
            (
                c.name,
                c.type.value,
                "on" if c.enabled else "off",
                ", ".join(c.sender_domains),
                ", ".join(c.sender_ips) or "-",
                c.tls_certificate_name or "-",
                "required" if c.require_tls else "optional",
            )
        )
        + "</tr>"
        for c in inbound
    )
    outbound_rows = "".join(
        "<tr>"
        + _cells(
            (
                c.name,
                c.type.value,
                "on" if c.enabled else "off",
                ", ".join(c.recipient_domains) or "-",
                "yes" if c.all_accepted_domains else "no",
                ", ".join(c.smart_hosts) or "MX",
                c.tls.value + (f" ({c.tls_domain})" if c.tls_domain else ""),
            )
        )
        + f"<td>{_validation(validations.get(c.id, ()))}</td></tr>"
        for c in outbound
    )
    inbound_head = _cells(
        ("name", "type", "state", "sender domains", "sender IPs", "certificate name", "TLS"), "th"
    )
    outbound_head = _cells(
        (
            "name",
            "type",
            "state",
            "recipient domains",
            "all accepted domains",
            "delivers to",
            "TLS",
            "validation",
        ),
        "th",
    )
    none = "<p>None.</p>"
    name = html.escape(tenant)
    return (
        '<!doctype html><html><head><meta charset="utf-8">'
        f"<title>Postroom connectors: {name}</title></head><body>"
        f"<h1>Connectors of {name}</h1>"
        "<h2>Inbound</h2>"
        + (
            f'<table border="1" cellpadding="4"><tr>{inbound_head}</tr>{inbound_rows}</table>'
            if inbound
            else none
        )
        + "<h2>Outbound</h2>"
        + (
            f'<table border="1" cellpadding="4"><tr>{outbound_head}</tr>{outbound_rows}</table>'
            if outbound
            else none
        )
        + "<p>Turn a connector on or off with <code>POST /api/v1/connectors/inbound|outbound/NAME/"
        "enable</code> (or <code>/disable</code>) and your token as a Bearer header.</p>"
        "</body></html>"
    )
