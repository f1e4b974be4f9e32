"""`postroom remote-domain ...`: a tenant's settings for mail to other domains (spec §7)."""

from __future__ import annotations

from typing import Annotated

import typer

from postroom.cli.context import JsonOption, node, refusals
from postroom.cli.output import console, emit_json, fail, fields, table
from postroom.directory import DEFAULT_REMOTE_DOMAIN, RemoteDomain, RemoteDomainChange
from postroom.model.scope import OPERATOR

remote_domain_app = typer.Typer(
    help="Remote domains: a tenant's settings for mail it sends to other domains.", no_args_is_help=True
)

TenantOption = Annotated[str, typer.Option("--tenant", help="The tenant whose remote domains these are.")]
AutoReply = Annotated[
    bool | None, typer.Option("--auto-reply/--no-auto-reply", help="Allow automatic replies (out of office).")
]
AutoForward = Annotated[
    bool | None,
    typer.Option("--auto-forward/--no-auto-forward", help="Allow automatic forwarding to the domain."),
]
OofType = Annotated[
    str | None, typer.Option(help="Out-of-office type: external, external-legacy, internal-legacy, none.")
]
DeliveryReports = Annotated[
    bool | None, typer.Option("--delivery-reports/--no-delivery-reports", help="Allow delivery reports.")
]
Ndr = Annotated[bool | None, typer.Option("--ndr/--no-ndr", help="Allow non-delivery reports.")]
ContentTypeOption = Annotated[
    str | None, typer.Option(help="mime-html-text (as sent), mime-text (text only), mime-html (HTML only).")
]
LineWrap = Annotated[int | None, typer.Option(help="Line wrap size, 0 (unlimited) to 132.")]
Charset = Annotated[
    str | None, typer.Option(help='Character set for messages that declare none ("": leave them alone).')
]


def _change(
    auto_reply: bool | None,
    auto_forward: bool | None,
    oof_type: str | None,
    delivery_reports: bool | None,
    ndr: bool | None,
    content_type: str | None,
    line_wrap: int | None,
    charset: str | None,
) -> RemoteDomainChange:
    return RemoteDomainChange(
        auto_reply, auto_forward, oof_type, delivery_reports, ndr, content_type, line_wrap, charset
    )


def _row(domain: RemoteDomain) -> dict[str, object]:
    s = domain.settings
    return {
        "name": domain.name,
        "tenant": domain.tenant,
        "pattern": s.pattern,
        "auto_reply": s.auto_reply,
        "auto_forward": s.auto_forward,
        "oof_type": s.oof_type,
        "delivery_reports": s.delivery_reports,
        "ndr": s.ndr,
        "content_type": s.content_type.value,
        "line_wrap": s.line_wrap,
        "charset": s.charset,
    }


def _show(domain: RemoteDomain) -> None:
    s = domain.settings
    fields(
        [
            ("name", domain.name),
            ("tenant", domain.tenant),
            ("pattern", s.pattern),
            ("auto reply", _yes(s.auto_reply)),
            ("auto forward", _yes(s.auto_forward)),
            ("out of office", s.oof_type),
            ("delivery reports", _yes(s.delivery_reports)),
            ("NDRs", _yes(s.ndr)),
            ("content type", s.content_type.value),
            ("line wrap", s.line_wrap or "unlimited"),
            ("charset", s.charset or "-"),
        ]
    )


def _yes(value: bool) -> str:
    return "allowed" if value else "blocked"


@remote_domain_app.command("add")
def remote_domain_add(
    name: str,
    pattern: Annotated[str, typer.Argument(help="example.com, or *.example.com for its subdomains.")],
    tenant: TenantOption,
    auto_reply: AutoReply = None,
    auto_forward: AutoForward = None,
    oof_type: OofType = None,
    delivery_reports: DeliveryReports = None,
    ndr: Ndr = None,
    content_type: ContentTypeOption = None,
    line_wrap: LineWrap = None,
    charset: Charset = None,
) -> None:
    """Add a remote domain (the most specific pattern wins; `*.example.com` does not cover example.com)."""
    change = _change(
        auto_reply, auto_forward, oof_type, delivery_reports, ndr, content_type, line_wrap, charset
    )
    with refusals():
        added = node().directory.add_remote_domain(OPERATOR, tenant, name, pattern, change)
    console.print(
        f"remote domain {added.name} ({added.settings.pattern}) added to {added.tenant}", markup=False
    )


@remote_domain_app.command("set")
def remote_domain_set(
    name: Annotated[
        str, typer.Argument(help=f"The remote domain's name or pattern ({DEFAULT_REMOTE_DOMAIN}: `*`).")
    ],
    tenant: TenantOption,
    auto_reply: AutoReply = None,
    auto_forward: AutoForward = None,
    oof_type: OofType = None,
    delivery_reports: DeliveryReports = None,
    ndr: Ndr = None,
    content_type: ContentTypeOption = None,
    line_wrap: LineWrap = None,
    charset: Charset = None,
) -> None:
    """Change a remote domain's settings (the built-in Default's too)."""
    change = _change(
        auto_reply, auto_forward, oof_type, delivery_reports, ndr, content_type, line_wrap, charset
    )
    if change == RemoteDomainChange():
        raise fail("nothing to change: give a setting such as --no-auto-forward or --line-wrap 78", 2)
    with refusals():
        changed = node().directory.set_remote_domain(OPERATOR, tenant, name, change)
    _show(changed)


@remote_domain_app.command("list")
def remote_domain_list(tenant: TenantOption, json_output: JsonOption = False) -> None:
    """List a tenant's remote domains, the Default first."""
    with refusals():
        found = node().directory.remote_domains(OPERATOR, tenant)
    if json_output:
        return emit_json([_row(d) for d in found])
    table(
        None,
        ["name", "pattern", "auto reply", "auto forward", "NDRs", "content type", "line wrap", "charset"],
        [
            (
                d.name,
                d.settings.pattern,
                _yes(d.settings.auto_reply),
                _yes(d.settings.auto_forward),
                _yes(d.settings.ndr),
                d.settings.content_type.value,
                d.settings.line_wrap or "unlimited",
                d.settings.charset or "-",
            )
            for d in found
        ],
    )


@remote_domain_app.command("show")
def remote_domain_show(name: str, tenant: TenantOption, json_output: JsonOption = False) -> None:
    """Show one remote domain."""
    with refusals():
        found = node().directory.get_remote_domain(OPERATOR, tenant, name)
    if json_output:
        return emit_json(_row(found))
    _show(found)


@remote_domain_app.command("remove")
def remote_domain_remove(name: str, tenant: TenantOption) -> None:
    """Remove a remote domain (not the built-in Default)."""
    with refusals():
        node().directory.remove_remote_domain(OPERATOR, tenant, name)
    console.print(f"remote domain {name} removed from {tenant}", markup=False)
