"""Local delivery: due recipients of mailboxes of this service go into their Inbox.

One round takes up to `batch_max` due local recipients and, in the round's transaction, stores each
message in its mailbox (the body blob is shared, only the delivery headers are new), removes the
queue rows, writes the Deliver trace event and settles the trace row. A message is prefixed with
`Return-Path` (the envelope sender) and `Delivered-To`, then the headers added on receipt.

Failure: a recipient whose mailbox has gone since RCPT fails permanently (5.1.1, a Fail event);
every other error rolls the whole round back and the scheduler retries it, so nothing is lost.
"""

from __future__ import annotations

from sqlalchemy import Connection, delete, select

from postroom.mailstore import LocalDelivery, deliver
from postroom.model.flow import EventKind, Route, TraceEvent, TraceRecipient, TraceStatus
from postroom.model.message import HeaderSummary
from postroom.queue import remove_settled_messages
from postroom.storage.schema import folders, queue_recipients, spool_messages
from postroom.trace import record_events, set_statuses

INBOX = "Inbox"


class LocalDeliveryAgent:
    """Delivers to mailboxes of this service, one transaction per round."""

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
        mailbox_ids = {row.mailbox_id for row in due}
        with_inbox = set(
            conn.execute(
                select(folders.c.mailbox_id).where(
                    folders.c.mailbox_id.in_(mailbox_ids) & (folders.c.name == INBOX)
                )
            ).scalars()
        )
        deliveries: list[LocalDelivery] = []
        events: list[TraceEvent] = []
        statuses: list[TraceRecipient] = []
        for row in due:
            if row.mailbox_id not in with_inbox:
                events.append(
                    TraceEvent(
                        row.message_id,
                        EventKind.FAIL,
                        row.tenant_id,
                        row.original_recipient,
                        {"reply": "550 5.1.1 The mailbox no longer exists"},
                    )
                )
                statuses.append(
                    TraceRecipient(row.message_id, row.tenant_id, row.original_recipient, TraceStatus.FAILED)
                )
                continue
            prefix = f"Return-Path: <{row.sender}>\r\nDelivered-To: {row.recipient}\r\n".encode() + bytes(
                row.prefix
            )
            deliveries.append(
                LocalDelivery(
                    mailbox_id=row.mailbox_id,
                    folder=INBOX,
                    blob_id=row.blob_id,
                    prefix=prefix,
                    size=row.size + len(prefix) - len(row.prefix),
                    internal_date=row.received_at,
                    summary=HeaderSummary(
                        row.from_header, row.subject, row.date_header, row.message_id_header
                    ),
                    trace_id=row.message_id,
                )
            )
            events.append(
                TraceEvent(
                    row.message_id,
                    EventKind.DELIVER,
                    row.tenant_id,
                    row.original_recipient,
                    {"mailbox": row.recipient, "folder": INBOX},
                )
            )
            statuses.append(
                TraceRecipient(row.message_id, row.tenant_id, row.original_recipient, TraceStatus.DELIVERED)
            )
        deliver(conn, deliveries)
        conn.execute(delete(q).where(q.c.id.in_([row.id for row in due])))
        remove_settled_messages(conn, {row.message_id for row in due})
        record_events(conn, events, now)
        set_statuses(conn, statuses, now)
        return len(due)
