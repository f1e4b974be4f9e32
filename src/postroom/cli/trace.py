"""`postroom trace`: search message trace, show one message's events, purge old trace.

The node's CLI acts as the service operator (every tenant's rows, and those of no tenant) unless
`--tenant` narrows it to one tenant's rows."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from postroom.cli.context import JsonOption, node, refusals, scope_for
from postroom.cli.output import console, emit_json, fail, fields, moment, table, when
from postroom.model.flow import TraceStatus
from postroom.trace import TraceQuery

DAY = 86_400.0

trace_app = typer.Typer(help="Message trace: what happened to a message.")


@trace_app.callback(invoke_without_command=True)
def trace_search(
    ctx: typer.Context,
    tenant: Annotated[
        str | None, typer.Option(help="As this tenant sees it (default: the operator, every row).")
    ] = None,
    sender: Annotated[
        str | None, typer.Option(help="Sender address; one wildcard allowed: *@contoso.com.")
    ] = None,
    recipient: Annotated[
        str | None,
        typer.Option(help="Recipient address as given, or the one it resolved to; one wildcard allowed."),
    ] = None,
    mailbox: Annotated[
        str | None, typer.Option(help="Mail to this recipient by any of its addresses (primary, aliases).")
    ] = None,
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
    scope = scope_for(tenant)
    addresses: tuple[str, ...] = ()
    if mailbox:
        with refusals():
            found = current.directory.get_recipient(scope, mailbox)
        addresses = (found.primary_address, *found.aliases)
    rows = current.trace.search(
        TraceQuery(
            sender=sender,
            recipient=recipient,
            addresses=addresses,
            message_id_header=message_id,
            since=moment(since, "--since"),
            until=moment(until, "--until"),
            status=status,
        ),
        scope,
    )
    if json_output:
        return emit_json(rows)
    table(
        None,
        ["time (UTC)", "sender", "recipient", "resolved to", "subject", "status", "id"],
        [
            (
                when(r.received_at),
                r.sender or "<>",
                r.recipient,
                r.resolved or "-",
                r.subject,
                r.status.value,
                r.message_id,
            )
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
    detail = node().trace.detail(message, scope_for(tenant))
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
    table(
        "recipients",
        ["recipient", "resolved to", "status"],
        [(r.recipient, r.resolved or "-", r.status.value) for r in detail.recipients],
    )
    table(
        "events",
        ["time (UTC)", "event", "recipient", "detail"],
        [
            (when(e.at), e.event, e.recipient, ", ".join(f"{k}={v}" for k, v in e.detail.items()))
            for e in detail.events
        ],
    )


@trace_app.command("purge")
def trace_purge(
    older_than: Annotated[
        int | None,
        typer.Option(min=0, help="Remove trace older than this many days (default: [trace] retention_days)."),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm: the rows are deleted for good.")] = False,
) -> None:
    """Remove trace older than the retention (the node does this by itself every purge_interval)."""
    current = node()
    days = current.settings.trace.retention_days if older_than is None else older_than
    if not yes:
        raise fail(f"this deletes every trace row older than {days} days; repeat with --yes", 2)
    removed = current.trace.purge(time.time() - days * DAY, batch=current.settings.trace.purge_batch)
    console.print(f"removed {removed} trace rows older than {days} days", markup=False)
