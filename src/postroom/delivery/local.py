"""Local delivery: messages for mailboxes of this service go into their Inbox.

Two entrances, one mechanism:

- `deliver_at_commit` runs inside the spool commit of a received message: the mailstore rows, the
  Deliver trace events and the settled trace rows are written in the same durable transaction that
  lets the SMTP session say 250, so a local recipient is never "accepted but not yet delivered" and
  needs no queue row. (This is the fast path: one transaction per message instead of two.)
- `LocalDeliveryAgent` is the scheduler's round for local recipients that are queued (for example
  when a mailbox could not take the message at commit): it takes up to `batch_max` due recipients
  and settles them in the round's transaction.

Each delivered message is prefixed with `Return-Path` (the envelope sender) and `Delivered-To`, then
the headers added on receipt; the body blob is shared, never copied. A recipient whose mailbox has
gone fails permanently (5.1.1, a Fail event). Any other error rolls the whole transaction back:
nothing is half-delivered and nothing is lost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, delete, select

from postroom.mailstore import LocalDelivery, deliver
from postroom.model.flow import EventKind, Route, RoutedRecipient, TraceEvent, TraceRecipient, TraceStatus
from postroom.model.message import HeaderSummary
from postroom.queue import SpoolEntry, remove_settled_messages
from postroom.storage.schema import queue_recipients, spool_messages
from postroom.trace import record_events, set_statuses

INBOX = "Inbox"
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
            f"Return-Path: <{entry.sender}>\r\nDelivered-To: {route.recipient}\r\n".encode() + entry.prefix
        )
        deliveries.append(
            LocalDelivery(
                mailbox_id=route.mailbox_id,
                folder=INBOX,
                blob_id=entry.blob_id,
                prefix=prefix,
                size=entry.size + len(prefix) - len(entry.prefix),
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
                detail = {"mailbox": route.recipient, "folder": INBOX}
                kind, status = EventKind.DELIVER, TraceStatus.DELIVERED
            events.append(TraceEvent(entry.id, kind, route.tenant_id, row, detail))
            statuses.append(TraceRecipient(entry.id, route.tenant_id, row, status))
    return events, statuses


def deliver_at_commit(conn: Connection, message: SpoolEntry, routes: Sequence[RoutedRecipient]) -> TraceRows:
    """Deliver a just-received message to its local recipients, in the spool commit's transaction.

    Returns the trace rows, for the caller to write with the rest of the message's trace.
    """
    return _deliver(conn, [_Item(message, route) for route in routes if route.route is Route.LOCAL])


class LocalDeliveryAgent:
    """The scheduler's round for queued local recipients, one transaction per round."""

    def __init__(self, *, batch_max: int = 256) -> None:
        self._batch_max = batch_max

    def __call__(self, conn: Connection, now: float) -> int:
        q, s = queue_recipients, spool_messages
        due = conn.execute(
            select(
                q.c.id,
                q.c.message_id,
                q.c.tenant_id,
                q.c.recipient,
                q.c.original_recipient,
                q.c.also_settles,
                q.c.mailbox_id,
                s.c.sender,
                s.c.blob_id,
                s.c.prefix,
                s.c.size,
                s.c.received_at,
                s.c.from_header,
                s.c.subject,
                s.c.date_header,
                s.c.message_id_header,
            )
            .join(s, s.c.id == q.c.message_id)
            .where((q.c.route == Route.LOCAL.value) & (q.c.next_attempt_at <= now))
            .order_by(q.c.next_attempt_at, q.c.id)
            .limit(self._batch_max)
        ).all()
        if not due:
            return 0
        items = [
            _Item(
                SpoolEntry(
                    id=row.message_id,
                    sender=row.sender,
                    blob_id=row.blob_id,
                    prefix=bytes(row.prefix),
                    size=row.size,
                    received_at=row.received_at,
                    summary=HeaderSummary(
                        row.from_header, row.subject, row.date_header, row.message_id_header
                    ),
                ),
                RoutedRecipient(
                    row.recipient, row.original_recipient, row.tenant_id, Route.LOCAL, row.mailbox_id
                ),
            )
            for row in due
        ]
        events, statuses = _deliver(conn, items)
        record_events(conn, events, now)
        set_statuses(conn, statuses, now)
        conn.execute(delete(q).where(q.c.id.in_([row.id for row in due])))
        remove_settled_messages(conn, {row.message_id for row in due})
        return len(due)
