"""Message trace: an event for every step a message takes, and the search that answers
"what happened to this message".

Writers append `TraceEvent`s and settle per-recipient `TraceStatus` rows inside the transaction
that made the step happen (the spool commit, the delivery), so trace never claims a step that did
not commit. Readers search the summary (one row per recipient: group first, then its members) and
show one message's events in time order.

Tenant isolation: every search takes an optional tenant id; a tenant-scoped caller passes it and
sees only its own recipients' rows and events. Rows without a tenant (mail refused before any
tenant was known, such as relay attempts) are seen only by the service administrator (tenant None).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, and_, delete, or_, select

from postroom.model.flow import TraceEvent, TraceRecipient, TraceStatus
from postroom.storage import Database
from postroom.storage.prepared import PreparedInsert
from postroom.storage.schema import trace_events, trace_messages, trace_recipients


@dataclass(frozen=True, slots=True)
class TraceMessage:
    """What trace keeps of a message when it is received."""

    id: str
    message_id_header: str
    sender: str
    subject: str
    size: int
    client_ip: str
    received_at: float


@dataclass(frozen=True, slots=True)
class TraceRow:
    """One row of the trace summary: one recipient of one message."""

    message_id: str
    received_at: float
    sender: str
    recipient: str
    subject: str
    status: TraceStatus
    message_id_header: str
    tenant_id: int | None


@dataclass(frozen=True, slots=True)
class StoredTraceEvent:
    at: float
    event: str
    recipient: str
    detail: dict[str, object]


@dataclass(frozen=True, slots=True)
class TraceDetail:
    message: TraceMessage
    recipients: tuple[TraceRow, ...]
    events: tuple[StoredTraceEvent, ...]


@dataclass(frozen=True, slots=True)
class TraceQuery:
    tenant_id: int | None = None  # None: the service administrator, sees every row
    sender: str | None = None  # exact, or one wildcard: *@contoso.com
    recipient: str | None = None
    message_id_header: str | None = None
    since: float | None = None
    until: float | None = None
    status: TraceStatus | None = None
    limit: int = 1000


# --- writing (inside the caller's transaction) ---------------------------------------------------
_MESSAGE_COLUMNS = ["id", "message_id_header", "sender", "subject", "size", "client_ip", "received_at"]
_UPSERT_MESSAGE = PreparedInsert(
    trace_messages,
    _MESSAGE_COLUMNS,
    on_conflict=(["id"], ["message_id_header", "subject", "size"]),
)
_INSERT_EVENT = PreparedInsert(
    trace_events, ["message_id", "tenant_id", "at", "event", "recipient", "detail"]
)
_UPSERT_STATUS = PreparedInsert(
    trace_recipients,
    ["message_id", "tenant_id", "recipient", "status", "updated_at"],
    on_conflict=(["message_id", "recipient"], ["status", "updated_at"]),
)


def record_message(conn: Connection, message: TraceMessage) -> None:
    """Record (or complete) what trace keeps of a message."""
    _UPSERT_MESSAGE.run(
        conn,
        [
            {
                "id": message.id,
                "message_id_header": message.message_id_header,
                "sender": message.sender,
                "subject": message.subject,
                "size": message.size,
                "client_ip": message.client_ip,
                "received_at": message.received_at,
            }
        ],
    )


def record_events(conn: Connection, events: Sequence[TraceEvent], now: float | None = None) -> None:
    at = now if now is not None else time.time()
    _INSERT_EVENT.run(
        conn,
        [
            {
                "message_id": e.message_id,
                "tenant_id": e.tenant_id,
                "at": e.at or at,
                "event": e.event.value,
                "recipient": e.recipient,
                "detail": json.dumps(e.detail, sort_keys=True),
            }
            for e in events
        ],
    )


def set_statuses(conn: Connection, rows: Iterable[TraceRecipient], now: float | None = None) -> None:
    """Insert or update the summary row of each (message, recipient)."""
    at = now if now is not None else time.time()
    _UPSERT_STATUS.run(
        conn,
        [
            {
                "message_id": r.message_id,
                "tenant_id": r.tenant_id,
                "recipient": r.recipient,
                "status": r.status.value,
                "updated_at": at,
            }
            for r in rows
        ],
    )


# --- reading ------------------------------------------------------------------------------------
def _like(pattern: str) -> str:
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")


class TraceService:
    """Search and detail over the trace tables."""

    def __init__(self, database: Database) -> None:
        self._db = database

    def search(self, query: TraceQuery) -> list[TraceRow]:
        m, r = trace_messages, trace_recipients
        statement = select(
            m.c.id,
            m.c.received_at,
            m.c.sender,
            r.c.recipient,
            m.c.subject,
            r.c.status,
            m.c.message_id_header,
            r.c.tenant_id,
        ).join(r, r.c.message_id == m.c.id)
        conditions = []
        if query.tenant_id is not None:
            conditions.append(r.c.tenant_id == query.tenant_id)
        if query.sender:
            conditions.append(m.c.sender.ilike(_like(query.sender), escape="\\"))
        if query.recipient:
            conditions.append(r.c.recipient.ilike(_like(query.recipient), escape="\\"))
        if query.message_id_header:
            wanted = query.message_id_header.strip()
            conditions.append(
                or_(m.c.message_id_header == wanted, m.c.message_id_header == f"<{wanted.strip('<>')}>")
            )
        if query.since is not None:
            conditions.append(m.c.received_at >= query.since)
        if query.until is not None:
            conditions.append(m.c.received_at <= query.until)
        if query.status is not None:
            conditions.append(r.c.status == query.status.value)
        if conditions:
            statement = statement.where(and_(*conditions))
        statement = statement.order_by(m.c.received_at.desc(), m.c.id, r.c.id).limit(query.limit)
        with self._db.read() as conn:
            rows = conn.execute(statement).all()
        return [
            TraceRow(
                message_id=row[0],
                received_at=row[1],
                sender=row[2],
                recipient=row[3],
                subject=row[4],
                status=TraceStatus(row[5]),
                message_id_header=row[6],
                tenant_id=row[7],
            )
            for row in rows
        ]

    def detail(self, message_id: str, tenant_id: int | None = None) -> TraceDetail | None:
        """One message's rows and events; None when it does not exist for this caller."""
        with self._db.read() as conn:
            row = conn.execute(select(trace_messages).where(trace_messages.c.id == message_id)).first()
            if row is None:
                return None
            message = TraceMessage(
                id=row.id,
                message_id_header=row.message_id_header,
                sender=row.sender,
                subject=row.subject,
                size=row.size,
                client_ip=row.client_ip,
                received_at=row.received_at,
            )
            recipient_query = select(trace_recipients).where(trace_recipients.c.message_id == message_id)
            event_query = select(trace_events).where(trace_events.c.message_id == message_id)
            if tenant_id is not None:
                recipient_query = recipient_query.where(trace_recipients.c.tenant_id == tenant_id)
                event_query = event_query.where(trace_events.c.tenant_id == tenant_id)
            recipient_rows = conn.execute(recipient_query.order_by(trace_recipients.c.id)).all()
            event_rows = conn.execute(event_query.order_by(trace_events.c.at, trace_events.c.id)).all()
        if tenant_id is not None and not recipient_rows:
            return None
        return TraceDetail(
            message=message,
            recipients=tuple(
                TraceRow(
                    message_id=message_id,
                    received_at=message.received_at,
                    sender=message.sender,
                    recipient=r.recipient,
                    subject=message.subject,
                    status=TraceStatus(r.status),
                    message_id_header=message.message_id_header,
                    tenant_id=r.tenant_id,
                )
                for r in recipient_rows
            ),
            events=tuple(
                StoredTraceEvent(
                    at=e.at, event=e.event, recipient=e.recipient, detail=json.loads(e.detail or "{}")
                )
                for e in event_rows
            ),
        )


def remove_tenant_trace(conn: Connection, tenant_id: int) -> int:
    """Delete the tenant's trace rows and events in the caller's transaction (tenant removal).

    A message whose trace then has no rows left goes too; one another tenant (or the operator) still
    has rows for stays. Returns how many messages the tenant had trace rows for.
    """
    touched = set(
        conn.execute(
            select(trace_recipients.c.message_id).where(trace_recipients.c.tenant_id == tenant_id)
        ).scalars()
    ) | set(
        conn.execute(select(trace_events.c.message_id).where(trace_events.c.tenant_id == tenant_id)).scalars()
    )
    conn.execute(delete(trace_recipients).where(trace_recipients.c.tenant_id == tenant_id))
    conn.execute(delete(trace_events).where(trace_events.c.tenant_id == tenant_id))
    ids = sorted(touched)
    for start in range(0, len(ids), 500):
        batch = ids[start : start + 500]
        kept = (
            select(trace_recipients.c.message_id)
            .where(trace_recipients.c.message_id.in_(batch))
            .union(select(trace_events.c.message_id).where(trace_events.c.message_id.in_(batch)))
        )
        conn.execute(
            delete(trace_messages).where(trace_messages.c.id.in_(batch) & trace_messages.c.id.not_in(kept))
        )
    return len(touched)
