"""`postroom explain`: why mail goes where it goes, stage by stage, without sending or storing anything."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from postroom.app.explain import (
    DEFAULT_CLIENT_IP,
    ExplainError,
    ExplainRequest,
    Explanation,
    explain,
    read_message,
)
from postroom.cli.context import JsonOption, node, refusals
from postroom.cli.output import console, emit_json, fail, fields, table, visible


def register(app: typer.Typer) -> None:
    app.command("explain")(explain_command)


def explain_command(
    sender: Annotated[str, typer.Option("--from", help="The envelope sender (MAIL FROM); '' for <>.")],
    to: Annotated[list[str], typer.Option("--to", help="A recipient (RCPT TO); repeatable.")],
    client_ip: Annotated[
        str, typer.Option(help="The connecting server's address (default: an Internet server).")
    ] = DEFAULT_CLIENT_IP,
    tls_cert: Annotated[
        list[str] | None,
        typer.Option(
            "--tls-cert",
            help="A name in the client's TLS certificate, taken as verified (repeatable; implies --tls).",
        ),
    ] = None,
    tls: Annotated[bool, typer.Option("--tls", help="The client used STARTTLS.")] = False,
    helo: Annotated[str, typer.Option(help="The client's EHLO name (default: its address literal).")] = "",
    message: Annotated[
        Path | None, typer.Option(help="The message (.eml) to judge (default: a minimal one).")
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Run a message through the flow without sending or storing it: attribution to a connector and
    tenant, each recipient's RCPT decision, authentication and filtering verdicts, and the route, the
    connector and the hosts each final recipient would take."""
    current = node()
    try:
        body = read_message(message, current.settings.mx.limits.max_message_size) if message else None
        request = ExplainRequest(
            sender=sender.strip(),
            recipients=tuple(to),
            client_ip=client_ip,
            helo=helo,
            tls=tls,
            certificate=tuple(tls_cert or ()),
            message=body,
        )
        with refusals():
            explained = asyncio.run(explain(current, request))
    except ExplainError as error:
        raise fail(str(error), 2) from None
    if json_output:
        emit_json(explained)
        return
    _show(explained)


def _heading(text: str) -> None:
    console.print(Text(text, style="bold"))


def _show(e: Explanation) -> None:
    a = e.attribution
    _heading("1. Connection and attribution")
    pairs: list[tuple[str, object]] = [
        ("client", a.client_ip),
        ("TLS", "yes" if a.tls else "no"),
        ("certificate", ", ".join(a.certificate) or "-"),
        ("sender", e.sender),
        ("sender's tenant", a.sender_tenant or "-"),
        (
            "connector",
            f"{a.connector.name} ({a.connector.type}, tenant {a.connector.tenant})" if a.connector else "-",
        ),
        ("decision", a.summary),
    ]
    fields(pairs)
    if a.matched:
        table(
            "matched connectors",
            ["connector", "type", "tenant"],
            [(c.name, c.type, c.tenant) for c in a.matched],
        )
    _heading("2. Recipients (RCPT)")
    table(
        None,
        ["recipient", "outcome", "reply", "detail"],
        [(r.recipient, r.outcome, r.reply, r.detail) for r in e.recipients],
    )
    p = e.protection
    _heading("3. Authentication and filtering")
    if not p.enabled:
        console.print(visible(p.connection))
    else:
        fields(
            [
                ("connection filter", p.connection or "-"),
                ("SPF", p.spf or "-"),
                ("DKIM", ", ".join(p.dkim) or "none"),
                ("DMARC", p.dmarc or "-"),
                ("composite auth", p.compauth or "-"),
                ("malware", p.malware or "-"),
                ("spam", p.spam or "not checked"),
            ]
        )
        if p.deferred:
            console.print(visible(f"deferred: {p.deferred}"))
        if p.recipients:
            table(
                None,
                ["recipient", "verdict", "action", "folder", "SFV", "SCL", "policy", "reply"],
                [
                    (v.recipient, v.verdict, v.action, v.folder, v.sfv, v.scl, v.policy, v.reply)
                    for v in p.recipients
                ],
            )
    _heading("4. Routes")
    for event in e.events:
        console.print(visible(f"  {event}"))
    if e.routes:
        table(
            None,
            ["recipient", "route", "destination", "hosts", "failure"],
            [(r.recipient, r.route, r.destination, "\n".join(r.hosts), r.failure) for r in e.routes],
        )
    else:
        console.print("  no route: no recipient was accepted", markup=False)
    _heading("Outcome")
    console.print(visible(e.outcome))
