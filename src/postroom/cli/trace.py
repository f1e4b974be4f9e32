"""`postroom trace`: search message trace and show one message's events."""

from __future__ import annotations

import datetime
from typing import Annotated

import typer

from postroom.cli.context import JsonOption, node, refusals
from postroom.cli.output import emit_json, fail, fields, table, when
from postroom.model.flow import TraceStatus
from postroom.model.scope import OPERATOR
from postroom.trace import TraceQuery

trace_app = typer.Typer(help="Message trace: what happened to a message.")


# --- trace and queue ------------------------------------------------------------------------------
def _timestamp(text: str | None, option: str) -> float | None:
    if text is None:
        return None
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise fail(
            f"{option} {text!r} is not a date; use ISO 8601, e.g. 2026-11-27 or 2026-11-27T08:00", 2
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


@trace_app.callback(invoke_without_command=True)
def trace_search(
    ctx: typer.Context,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's recipients.")] = None,
    sender: Annotated[
        str | None, typer.Option(help="Sender address; one wildcard allowed: *@contoso.com.")
    ] = None,
    recipient: Annotated[str | None, typer.Option(help="Recipient address; one wildcard allowed.")] = None,
    message_id: Annotated[str | None, typer.Option(help="The Message-ID header, with or without <>.")] = None,
    since: Annotated[str | None, typer.Option(help="From this time (ISO 8601, UTC).")] = None,
    until: Annotated[str | None, typer.Option(help="Up to this time (ISO 8601, UTC).")] = None,
    status: Annotated[TraceStatus | None, typer.Option(help="Only rows with this status.")] = None,
    json_output: JsonOption = False,
) -> None:
    """Search message trace: one row per recipient. `postroom trace show ID` shows the events."""
    if ctx.invoked_subcommand is not None:
        return
    current = node()
    with refusals():
        tenant_id = current.directory.get_tenant(OPERATOR, tenant).id if tenant else None
    rows = current.trace.search(
        TraceQuery(
            tenant_id=tenant_id,
            sender=sender,
            recipient=recipient,
            message_id_header=message_id,
            since=_timestamp(since, "--since"),
            until=_timestamp(until, "--until"),
            status=status,
        )
    )
    if json_output:
        return emit_json(rows)
    table(
        None,
        ["time (UTC)", "sender", "recipient", "subject", "status", "id"],
        [
            (when(r.received_at), r.sender or "<>", r.recipient, r.subject, r.status.value, r.message_id)
            for r in rows
        ],
    )


@trace_app.command("show")
def trace_show(
    message: Annotated[
        str, typer.Argument(help="The internal message id (the id column of `postroom trace`).")
    ],
    tenant: Annotated[str | None, typer.Option(help="As this tenant sees it.")] = None,
    json_output: JsonOption = False,
) -> None:
    """Show one message's trace: its recipients and every event."""
    current = node()
    with refusals():
        tenant_id = current.directory.get_tenant(OPERATOR, tenant).id if tenant else None
    detail = current.trace.detail(message, tenant_id)
    if detail is None:
        raise fail(f"no traced message {message}; search with `postroom trace --sender ...`")
    if json_output:
        return emit_json(detail)
    m = detail.message
    fields(
        [
            ("message", m.id),
            ("Message-ID", m.message_id_header or "-"),
            ("sender", m.sender or "<>"),
            ("subject", m.subject),
            ("size", m.size),
            ("client IP", m.client_ip),
            ("received", when(m.received_at)),
        ]
    )
    table("recipients", ["recipient", "status"], [(r.recipient, r.status.value) for r in detail.recipients])
    table(
        "events",
        ["time (UTC)", "event", "recipient", "detail"],
        [
            (when(e.at), e.event, e.recipient, ", ".join(f"{k}={v}" for k, v in e.detail.items()))
            for e in detail.events
        ],
    )
