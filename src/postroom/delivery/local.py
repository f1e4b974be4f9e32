"""Local delivery: messages for mailboxes of this service go into their Inbox (or the folder
protection chose: Junk for spam), at commit.

`deliver_at_commit` runs inside the spool commit of a received message: the mailstore rows, the
Deliver trace events and the settled trace rows are written in the same durable transaction that
lets the SMTP session say 250, so a local recipient is never "accepted but not yet delivered" and
needs no queue row. Nothing local is ever queued: a mailbox that vanished between RCPT and the
commit fails in that same transaction (below), so the scheduler has no local round.

Each delivered message is prefixed with `Return-Path` (the envelope sender) and `Delivered-To`, then
the recipient's protection headers (`RoutedRecipient.headers`), then the headers added on receipt;
the body blob is shared, never copied (a copy whose body an action rewrote names its own blob). A
copy delivered to Junk is traced `filtered-as-spam`. A recipient whose mailbox has
gone fails permanently (5.1.1, a Fail event). Any other error rolls the whole transaction back:
nothing is half-delivered and nothing is lost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection

from postroom.mailstore import LocalDelivery, deliver
from postroom.model.flow import EventKind, Route, RoutedRecipient, TraceEvent, TraceRecipient, TraceStatus
from postroom.queue import SpoolEntry

INBOX = "Inbox"
JUNK = "Junk"
MAILBOX_GONE = "550 5.1.1 The mailbox no longer exists"


@dataclass(frozen=True, slots=True)
class _Item:
    message: SpoolEntry
    route: RoutedRecipient


TraceRows = tuple[list[TraceEvent], list[TraceRecipient]]


def _deliver(conn: Connection, items: Sequence[_Item]) -> TraceRows:
    """Store `items`; returns their trace events and settled rows (a gone mailbox: Fail)."""
    deliveries = []
    for item in items:
        entry, route = item.message, item.route
        assert route.mailbox_id is not None
        prefix = (
            f"Return-Path: <{entry.sender}>\r\nDelivered-To: {route.recipient}\r\n".encode()
            + route.headers
            + entry.prefix
        )
        deliveries.append(
            LocalDelivery(
                mailbox_id=route.mailbox_id,
                folder=route.folder,
                blob_id=route.blob_id or entry.blob_id,
                prefix=prefix,
                size=len(prefix) + (route.blob_size if route.blob_id else entry.size - len(entry.prefix)),
                internal_date=entry.received_at,
                summary=entry.summary,
                trace_id=entry.id,
            )
        )
    missing = deliver(conn, deliveries)
    events = []
    statuses = []
    for item in items:
        entry, route = item.message, item.route
        for row in route.trace_rows:
            if route.mailbox_id in missing:
                detail: dict[str, object] = {"reply": MAILBOX_GONE}
                kind, status = EventKind.FAIL, TraceStatus.FAILED
            else:
                detail = {"mailbox": route.recipient, "folder": route.folder}
                kind, status = EventKind.DELIVER, TraceStatus.DELIVERED
                if route.folder == JUNK:
                    status = TraceStatus.FILTERED_AS_SPAM
            events.append(TraceEvent(entry.id, kind, route.tenant_id, row, detail))
            statuses.append(TraceRecipient(entry.id, route.tenant_id, row, status, route.recipient))
    return events, statuses


def deliver_at_commit(conn: Connection, message: SpoolEntry, routes: Sequence[RoutedRecipient]) -> TraceRows:
    """Deliver a just-received message to its local recipients, in the spool commit's transaction.

    Returns the trace rows, for the caller to write with the rest of the message's trace.
    """
    return _deliver(conn, [_Item(message, route) for route in routes if route.route is Route.LOCAL])
