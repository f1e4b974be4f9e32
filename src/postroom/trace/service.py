"""Message trace: an event for every step a message takes, and the search that answers
"what happened to this message".

Writers append `TraceEvent`s and settle per-recipient `TraceStatus` rows inside the transaction
that made the step happen (the spool commit, the delivery), so trace never claims a step that did
not commit. Readers search the summary (one row per recipient: group first, then its members) and
show one message's events in time order.

Tenant isolation: `search` and `detail` take a required `Scope` (`postroom.model.scope`); there is no
default meaning everyone. A `TenantScope` sees only its own recipients' rows and events (a row
belongs to the tenant whose mail it is: routing gives a group member in another tenant the group's
tenant). Rows without a tenant (mail refused before any tenant was known, such as relay attempts,
and the aggregated refusals of a client) are seen only by the operator (`OPERATOR`).

Each recipient row keeps the address as given and what it resolved to (the mailbox, group or remote
address), so a search by mailbox finds mail sent to any of its addresses (`TraceQuery.addresses`).

Search at scale (schema step 5): Message-ID and an address without a wildcard are answered from
btree indexes (`message_id_header`; `lower(recipient)`, `lower(resolved)`); on PostgreSQL a suffix
pattern (`*@contoso.com`: one wildcard, leading) from the reversed-address indexes of
`storage.migrations.SUFFIX_INDEXES`; any other pattern by ILIKE over the rows in scope. Each form
returns what ILIKE would.

Retention: `purge(conn, before, batch)` deletes the messages received before a time with their
rows and events, one batch per call, so the node's purge (a background task, one batch per writer
job) never holds the writer long; `TraceService.purge` runs batches until none is left.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, String, and_, delete, func, or_, select

from postroom.model.flow import TraceEvent, TraceRecipient, TraceStatus
from postroom.model.scope import OperatorScope, Scope
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
    recipient: str  # the address as given (RCPT, or a group's member)
    subject: str
    status: TraceStatus
    message_id_header: str
    tenant_id: int | None
    resolved: str = ""  # the mailbox, group or remote address it resolved to; "" when none


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
    sender: str | None = None  # exact, or one wildcard: *@contoso.com
    recipient: str | None = None  # matches the address as given or the one it resolved to
    addresses: tuple[str, ...] = ()  # a mailbox's addresses (primary and aliases): mail sent to any
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
    ["message_id", "tenant_id", "recipient", "resolved", "status", "updated_at"],
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
    """Insert or update the summary row of each (message, recipient); an update keeps `resolved`."""
    at = now if now is not None else time.time()
    _UPSERT_STATUS.run(
        conn,
        [
            {
                "message_id": r.message_id,
                "tenant_id": r.tenant_id,
                "recipient": r.recipient,
                "resolved": r.resolved,
                "status": r.status.value,
                "updated_at": at,
            }
            for r in rows
        ],
    )


# --- retention ----------------------------------------------------------------------------------
def purge(conn: Connection, before: float, batch: int) -> int:
    """Delete up to `batch` messages received before `before`, with their rows and events, in the
    caller's transaction; returns how many trace rows (messages, recipients, events) went."""
    ids = list(
        conn.execute(
            select(trace_messages.c.id)
            .where(trace_messages.c.received_at < before)
            .order_by(trace_messages.c.received_at)
            .limit(batch)
        ).scalars()
    )
    if not ids:
        return 0
    removed = 0
    for table in (trace_events, trace_recipients):
        removed += conn.execute(delete(table).where(table.c.message_id.in_(ids))).rowcount
    removed += conn.execute(delete(trace_messages).where(trace_messages.c.id.in_(ids))).rowcount
    return removed


# --- reading ------------------------------------------------------------------------------------
def _like(pattern: str) -> str:
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")


class TraceService:
    """Search, detail and purge over the trace tables."""

    def __init__(self, database: Database) -> None:
        self._db = database

    def search(self, query: TraceQuery, scope: Scope) -> list[TraceRow]:
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
            r.c.resolved,
        ).join(r, r.c.message_id == m.c.id)
        conditions = []
        if not isinstance(scope, OperatorScope):
            conditions.append(r.c.tenant_id == scope.tenant_id)
        if query.sender:
            conditions.append(m.c.sender.ilike(_like(query.sender), escape="\\"))
        recipient = query.recipient
        if recipient and "*" not in recipient:
            # No wildcard: ILIKE would be case-insensitive equality; lower() = lower() says the same
            # and is served by the lower() indexes of both columns.
            wanted_address = func.lower(recipient)
            conditions.append(
                or_(func.lower(r.c.recipient) == wanted_address, func.lower(r.c.resolved) == wanted_address)
            )
        elif recipient and recipient.count("*") == 1 and recipient.startswith("*") and not self._db.is_sqlite:
            # "*tail": lower(address) ends with lower(tail), i.e. its reverse starts with the reverse;
            # the pattern is computed by the server (its lower(), as ILIKE's) and folded to a constant
            # at planning, so the prefix is served by the index.
            tail = func.reverse(func.lower(recipient[1:]))
            escaped = func.replace(func.replace(tail, "\\", "\\\\"), "%", "\\%")
            prefix = func.replace(escaped, "_", "\\_", type_=String)
            conditions.append(
                or_(
                    func.reverse(func.lower(r.c.recipient)).like(prefix + "%", escape="\\"),
                    func.reverse(func.lower(r.c.resolved)).like(prefix + "%", escape="\\"),
                )
            )
        elif recipient:
            pattern = _like(recipient)
            conditions.append(
                or_(r.c.recipient.ilike(pattern, escape="\\"), r.c.resolved.ilike(pattern, escape="\\"))
            )
        if query.addresses:
            wanted = sorted({a.lower() for a in query.addresses})
            conditions.append(
                or_(func.lower(r.c.recipient).in_(wanted), func.lower(r.c.resolved).in_(wanted))
            )
        if query.message_id_header:
            wanted_id = query.message_id_header.strip()
            conditions.append(
                or_(m.c.message_id_header == wanted_id, m.c.message_id_header == f"<{wanted_id.strip('<>')}>")
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
                resolved=row[8],
            )
            for row in rows
        ]

    def detail(self, message_id: str, scope: Scope) -> TraceDetail | None:
        """One message's rows and events as `scope` sees them; None when it sees none of them."""
        tenant_only = not isinstance(scope, OperatorScope)
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
            if not isinstance(scope, OperatorScope):
                recipient_query = recipient_query.where(trace_recipients.c.tenant_id == scope.tenant_id)
                event_query = event_query.where(trace_events.c.tenant_id == scope.tenant_id)
            recipient_rows = conn.execute(recipient_query.order_by(trace_recipients.c.id)).all()
            event_rows = conn.execute(event_query.order_by(trace_events.c.at, trace_events.c.id)).all()
        if tenant_only and not recipient_rows:
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
                    resolved=r.resolved,
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

    def purge(self, before: float, *, batch: int = 500) -> int:
        """Delete every message received before `before`, a batch per transaction; returns the rows."""
        removed = 0
        while True:
            with self._db.write() as conn:
                count = purge(conn, before, batch)
            if not count:
                return removed
            removed += count


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
