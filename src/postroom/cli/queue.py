"""`postroom queue ...`: the delivery queue: list, show, retry, hold, release, delete, summary.

The commands act on the database directly, as the service operator (or, with `--tenant`, for one
tenant: only its rows); a serving node picks the changes up at once (`retry` and `release` publish the `queue`
notification) or at its scheduler's next turn.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated

import typer

from postroom.cli.context import JsonOption, TenantScopeOption, as_dict, node, scope_for
from postroom.cli.output import emit_json, fail, fields, table, when
from postroom.cluster import QUEUE
from postroom.queue import QueuedMessage, QueueRowNotFoundError, QueueState

queue_app = typer.Typer(help="The delivery queue.", no_args_is_help=True)

STATES = [state.value for state in QueueState]


@contextlib.contextmanager
def _found() -> Iterator[None]:
    try:
        yield
    except QueueRowNotFoundError as error:
        raise fail(f"{error}: `postroom queue list` shows the queued message ids") from None


def _message_json(message: QueuedMessage) -> dict[str, object]:
    return {
        **as_dict(message),
        "states": message.states,
        "destinations": message.destinations,
        "routes": message.routes,
        "next_attempt_at": message.next_attempt_at,
    }


@queue_app.command("list")
def queue_list(
    status: Annotated[
        str | None, typer.Option("--status", help=f"Only recipients in this state: {', '.join(STATES)}.")
    ] = None,
    destination: Annotated[
        str | None, typer.Option("--destination", help="Only recipients at this domain.")
    ] = None,
    tenant: TenantScopeOption = None,
    json_output: JsonOption = False,
) -> None:
    """The queued messages, oldest first."""
    if status is not None and status not in STATES:
        raise fail(f"--status {status!r} is not a queue state: use one of {', '.join(STATES)}", 2)
    messages = node().queue.list_messages(scope_for(tenant), state=status, destination=destination)
    if json_output:
        return emit_json([_message_json(m) for m in messages])
    table(
        None,
        ["id", "received", "sender", "recipients", "state", "destination", "next attempt", "last reply"],
        [
            (
                m.id,
                when(m.received_at),
                m.sender or "<>",
                len(m.recipients),
                ", ".join(f"{state} {count}" for state, count in sorted(m.states.items())),
                ", ".join(m.routes),
                when(m.next_attempt_at),
                next((r.last_reply for r in m.recipients if r.last_reply), ""),
            )
            for m in messages
        ],
    )


@queue_app.command("show")
def queue_show(message_id: str, tenant: TenantScopeOption = None, json_output: JsonOption = False) -> None:
    """One queued message and every recipient row: state, route (the destination and the outbound
    connector it leaves by), attempts, next attempt, last reply, lease."""
    with _found():
        message = node().queue.show(scope_for(tenant), message_id)
    if json_output:
        return emit_json(_message_json(message))
    fields(
        [
            ("id", message.id),
            ("received", when(message.received_at)),
            ("sender", message.sender or "<>"),
            ("subject", message.subject),
            ("size", message.size),
        ]
    )
    table(
        None,
        [
            "recipient",
            "state",
            "route",
            "attempts",
            "next attempt",
            "last reply",
            "remote",
            "lease",
            "expires",
        ],
        [
            (
                r.recipient
                if r.recipient == r.original_recipient
                else f"{r.recipient} ({r.original_recipient})",
                r.state,
                r.route,
                r.attempts,
                when(r.next_attempt_at) if r.state in ("pending", "deferred") else "-",
                r.last_reply,
                r.remote_mta,
                f"{r.lease_owner} until {when(r.lease_until)}" if r.lease_owner else "-",
                when(r.expires_at),
            )
            for r in message.recipients
        ],
    )


@queue_app.command("retry")
def queue_retry(
    message_id: Annotated[str | None, typer.Argument(help="The queued message's id.")] = None,
    destination: Annotated[
        str | None, typer.Option("--destination", help="Every recipient at this domain.")
    ] = None,
    tenant: TenantScopeOption = None,
) -> None:
    """Make a message's (or a destination's) waiting recipients due now."""
    if (message_id is None) == (destination is None):
        raise fail("give a message id or --destination DOMAIN (one of them)", 2)
    with _found():
        count = node().queue.retry(scope_for(tenant), message_id, destination=destination)
        node().notifications.publish(QUEUE)  # serving nodes lease them now, not at their next turn
    typer.echo(f"{count} recipient(s) due now")


@queue_app.command("hold")
def queue_hold(message_id: str, tenant: TenantScopeOption = None) -> None:
    """Hold a message: its waiting recipients are not delivered until released."""
    with _found():
        count = node().queue.hold(scope_for(tenant), message_id)
    typer.echo(f"{count} recipient(s) held")


@queue_app.command("release")
def queue_release(message_id: str, tenant: TenantScopeOption = None) -> None:
    """Release a held message: its recipients are due now."""
    with _found():
        count = node().queue.release(scope_for(tenant), message_id)
        node().notifications.publish(QUEUE)  # serving nodes lease them now, not at their next turn
    typer.echo(f"{count} recipient(s) released")


@queue_app.command("delete")
def queue_delete(
    message_id: str,
    bounce: Annotated[
        bool, typer.Option("--bounce", help="Tell the sender with a non-delivery report.")
    ] = False,
    tenant: TenantScopeOption = None,
) -> None:
    """Delete a message from the queue (with --bounce the sender gets a non-delivery report)."""
    with _found():
        count = node().queue.delete(scope_for(tenant), message_id, bounce=bounce)
    typer.echo(
        f"{count} recipient(s) " + ("failed; the sender gets a non-delivery report" if bounce else "deleted")
    )


@queue_app.command("summary")
def queue_summary(tenant: TenantScopeOption = None, json_output: JsonOption = False) -> None:
    """How many recipients wait in the queue: by state, by destination, and messages by age."""
    overview = node().queue.overview(scope_for(tenant))
    summary = overview.summary
    if json_output:
        return emit_json(
            {
                **as_dict(summary),
                "by_destination": overview.by_destination,
                "by_age": {bucket.age: bucket.messages for bucket in overview.by_age},
            }
        )
    fields(
        [
            ("pending", summary.pending),
            ("deferred", summary.deferred),
            ("held", summary.held),
            ("failed", summary.failed),
            ("messages", summary.messages),
            ("oldest", when(summary.oldest_received_at)),
        ]
    )
    if overview.by_destination:
        table(
            "by destination",
            ["destination", *STATES],
            [(d, *(states.get(s, 0) for s in STATES)) for d, states in overview.by_destination.items()],
        )
    table("messages by age", ["age", "messages"], [(b.age, b.messages) for b in overview.by_age])
