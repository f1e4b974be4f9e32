"""Queue control: what an administrator sees of the queue and does to it (list, show, retry, hold,
release, delete, summary). Every admin surface (the CLI, later the admin API) uses this service.

A recipient that leaves by an outbound connector shows it (`connector_id`, and its `connector` name,
read with the row: the name of the row's own tenant's connector only; a connector removed since shows
its id, and the row is then sent by MX).

Scoped: each method takes a `Scope` first. A `TenantScope` sees and changes only its own recipient
rows (a message shared with another tenant shows only the tenant's rows; one with none of them is
"not found", never "forbidden"); `OPERATOR` sees all, including rows of no tenant.

What each action does to a recipient row (queue states: `queue.spool`):

- `retry`: a `pending` or `deferred` row is due now (`next_attempt_at = now`); its lease, if a
  worker is delivering it, is left alone. A node picks it up at its next turn (its timer).
- `hold`: `pending`/`deferred` rows become `held`: never leased until released. A delivery in flight
  finishes: a 2xx still settles the row (it was delivered), a 4xx leaves it held.
- `release`: `held` rows are due now again (`deferred` if they were tried before, else `pending`).
- `delete`: without `bounce`, the rows leave the queue at once, traced as Fail "deleted by an
  administrator" (no DSN). With `bounce`, they become `failed` with `550 5.3.0 ... deleted ... by an
  administrator` and the DSN round tells the sender, as for any failure. A delivery in flight
  can no longer settle them (its lease is gone), except that a 2xx still counts as delivered.

Writes run in their own transaction (`Database.write`): the CLI acts on the database directly, and a
serving node sees the change at its scheduler's next turn.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, Row, func, select, true, update

from postroom.model import replies
from postroom.model.flow import EventKind, TraceEvent, TraceRecipient, TraceStatus
from postroom.model.scope import OperatorScope, Scope
from postroom.queue.leases import TraceRows
from postroom.queue.scheduler import TraceWriter
from postroom.queue.spool import QueueState, QueueSummary, queue_summary, settle
from postroom.storage import Database
from postroom.storage.schema import outbound_connectors, queue_recipients, spool_messages

# Ages of queued messages in `overview` (upper bounds in seconds; the last bucket is everything older).
AGE_BUCKETS: tuple[tuple[str, float], ...] = (
    ("< 5 min", 300.0),
    ("< 1 h", 3600.0),
    ("< 4 h", 14_400.0),
    ("< 1 day", 86_400.0),
    (">= 1 day", float("inf")),
)
LIST_LIMIT = 1000


class QueueRowNotFoundError(LookupError):
    """No queued message with that id (that the scope can see)."""


@dataclass(frozen=True, slots=True)
class QueuedRecipient:
    queue_id: int
    tenant_id: int | None
    recipient: str
    original_recipient: str
    destination: str
    state: str
    attempts: int
    next_attempt_at: float
    last_reply: str
    remote_mta: str
    envelope_sender: str | None
    lease_owner: str | None
    lease_until: float | None
    expires_at: float | None
    connector_id: int | None = None  # the outbound connector it leaves by; None: by MX
    connector: str = ""  # that connector's name; "" by MX, or when it was removed since

    @property
    def route(self) -> str:
        """Where it goes: its destination, and the connector it leaves by (`x.com via on-prem`)."""
        if self.connector_id is None:
            return self.destination
        name = self.connector or f"connector {self.connector_id} (removed: sent by MX)"
        return f"{self.destination} via {name}"


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    id: str
    received_at: float
    sender: str
    subject: str
    size: int
    recipients: tuple[QueuedRecipient, ...]

    @property
    def states(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.recipients:
            counts[r.state] = counts.get(r.state, 0) + 1
        return counts

    @property
    def destinations(self) -> list[str]:
        return sorted({r.destination for r in self.recipients})

    @property
    def routes(self) -> list[str]:
        """Its destinations with the connectors they leave by (`QueuedRecipient.route`)."""
        return sorted({r.route for r in self.recipients})

    @property
    def next_attempt_at(self) -> float | None:
        due = [r.next_attempt_at for r in self.recipients if r.state in ("pending", "deferred")]
        return min(due, default=None)


@dataclass(frozen=True, slots=True)
class AgeBucket:
    age: str
    messages: int


@dataclass(frozen=True, slots=True)
class QueueOverview:
    summary: QueueSummary
    by_destination: dict[str, dict[str, int]]  # destination -> state -> recipients
    by_age: tuple[AgeBucket, ...]


def _visible(scope: Scope) -> ColumnElement[bool]:
    q = queue_recipients
    return true() if isinstance(scope, OperatorScope) else q.c.tenant_id == scope.tenant_id


class QueueControl:
    """The queue as administrators see it."""

    def __init__(
        self, database: Database, write_trace: TraceWriter, clock: Callable[[], float] = time.time
    ) -> None:
        self._db = database
        self._write_trace = write_trace
        self._clock = clock

    # --- reading ----------------------------------------------------------------------------------
    def list_messages(
        self,
        scope: Scope,
        *,
        state: str | None = None,
        destination: str | None = None,
        limit: int = LIST_LIMIT,
    ) -> list[QueuedMessage]:
        """Queued messages, oldest first, each with the rows `scope` sees (filtered by state and
        destination: a message is listed when any of its rows matches, with the rows that match)."""
        q = queue_recipients
        condition = _visible(scope)
        if state is not None:
            condition = condition & (q.c.state == state)
        if destination is not None:
            condition = condition & (q.c.destination == destination.strip().rstrip(".").lower())
        with self._db.read() as conn:
            ids = list(
                conn.execute(
                    select(q.c.message_id, func.min(q.c.id))
                    .where(condition)
                    .group_by(q.c.message_id)
                    .order_by(func.min(q.c.id))
                    .limit(limit)
                ).scalars()
            )
            return self._messages(conn, ids, condition)

    def show(self, scope: Scope, message_id: str) -> QueuedMessage:
        with self._db.read() as conn:
            found = self._messages(conn, [message_id], _visible(scope))
        if not found:
            raise QueueRowNotFoundError(f"no queued message {message_id!r}")
        return found[0]

    def overview(self, scope: Scope) -> QueueOverview:
        """Counts by state, by destination and state, and messages by age."""
        q, m = queue_recipients, spool_messages
        tenant_only = not isinstance(scope, OperatorScope)
        tenant_id = None if isinstance(scope, OperatorScope) else scope.tenant_id
        now = self._clock()
        with self._db.read() as conn:
            summary = queue_summary(conn, tenant_id, tenant_only=tenant_only)
            by_destination: dict[str, dict[str, int]] = {}
            rows = conn.execute(
                select(q.c.destination, q.c.state, func.count())
                .where(_visible(scope))
                .group_by(q.c.destination, q.c.state)
                .order_by(q.c.destination)
            )
            for destination, state, count in rows:
                by_destination.setdefault(destination, {})[state] = int(count)
            visible_messages = select(q.c.message_id).where(_visible(scope))
            received = conn.execute(select(m.c.received_at).where(m.c.id.in_(visible_messages))).scalars()
            ages = [0] * len(AGE_BUCKETS)
            for at in received:
                age = now - at
                index = next(i for i, (_, bound) in enumerate(AGE_BUCKETS) if age < bound)
                ages[index] += 1
        return QueueOverview(
            summary,
            by_destination,
            tuple(AgeBucket(label, count) for (label, _), count in zip(AGE_BUCKETS, ages, strict=True)),
        )

    def _messages(
        self, conn: Connection, ids: Sequence[str], condition: ColumnElement[bool]
    ) -> list[QueuedMessage]:
        if not ids:
            return []
        q, m, c = queue_recipients, spool_messages, outbound_connectors
        rows = conn.execute(
            select(q, m.c.sender, m.c.subject, m.c.size, c.c.name.label("connector_name"))
            .join(m, m.c.id == q.c.message_id)
            # The connector's name, only ever the row's own tenant's (a removed one has none).
            .outerjoin(c, (c.c.id == q.c.connector_id) & (c.c.tenant_id == q.c.tenant_id))
            .where(q.c.message_id.in_(list(ids)))
            .where(condition)
            .order_by(q.c.id)
        ).all()
        messages: dict[str, list[Row[Any]]] = {}
        for row in rows:
            messages.setdefault(row.message_id, []).append(row)
        found = []
        for message_id in ids:
            group = messages.get(message_id)
            if not group:
                continue
            first = group[0]
            found.append(
                QueuedMessage(
                    id=message_id,
                    received_at=first.received_at,
                    sender=first.sender,
                    subject=first.subject,
                    size=first.size,
                    recipients=tuple(_recipient(r) for r in group),
                )
            )
        return found

    # --- acting -----------------------------------------------------------------------------------
    def retry(self, scope: Scope, message_id: str | None = None, *, destination: str | None = None) -> int:
        """Make the message's (or the destination's) waiting rows due now; returns how many."""
        q = queue_recipients
        if (message_id is None) == (destination is None):
            raise ValueError("retry takes a message id or a destination")
        where: ColumnElement[bool] = q.c.state.in_([QueueState.PENDING.value, QueueState.DEFERRED.value])
        if message_id is not None:
            where = where & (q.c.message_id == message_id)
        else:
            assert destination is not None
            where = where & (q.c.destination == destination.strip().rstrip(".").lower())
        with self._db.write() as conn:
            if message_id is not None:
                self._require(conn, scope, message_id)
            return conn.execute(
                update(q).where(where).where(_visible(scope)).values(next_attempt_at=self._clock())
            ).rowcount

    def hold(self, scope: Scope, message_id: str) -> int:
        q = queue_recipients
        with self._db.write() as conn:
            self._require(conn, scope, message_id)
            return conn.execute(
                update(q)
                .where(q.c.message_id == message_id)
                .where(_visible(scope))
                .where(q.c.state.in_([QueueState.PENDING.value, QueueState.DEFERRED.value]))
                .values(state=QueueState.HELD.value)
            ).rowcount

    def release(self, scope: Scope, message_id: str) -> int:
        q = queue_recipients
        now = self._clock()
        with self._db.write() as conn:
            self._require(conn, scope, message_id)
            held = (q.c.message_id == message_id) & (q.c.state == QueueState.HELD.value)
            released = 0
            for state, tried in (
                (QueueState.DEFERRED, q.c.attempts > 0),
                (QueueState.PENDING, q.c.attempts == 0),
            ):
                released += conn.execute(
                    update(q)
                    .where(held & tried)
                    .where(_visible(scope))
                    .values(state=state.value, next_attempt_at=now)
                ).rowcount
            return released

    def delete(self, scope: Scope, message_id: str, *, bounce: bool = False) -> int:
        """Delete the message's rows (with `bounce`: fail them, so the sender gets a DSN)."""
        q = queue_recipients
        now = self._clock()
        reply = replies.DELETED_BY_ADMINISTRATOR
        with self._db.write() as conn:
            self._require(conn, scope, message_id)
            rows = conn.execute(
                select(
                    q.c.id, q.c.tenant_id, q.c.recipient, q.c.original_recipient, q.c.also_settles, q.c.state
                )
                .where(q.c.message_id == message_id)
                .where(_visible(scope))
            ).all()
            if bounce:
                # Failed rows already wait for their DSN; the others join them.
                ids = [r.id for r in rows if r.state != QueueState.FAILED.value]
                conn.execute(
                    update(q)
                    .where(q.c.id.in_(ids))
                    .values(
                        state=QueueState.FAILED.value,
                        last_reply=str(reply),
                        remote_mta="",
                        lease_owner=None,
                        lease_until=None,
                    )
                )
            else:
                ids = [r.id for r in rows]
                settle(conn, set(ids))
            trace = TraceRows()
            detail: dict[str, object] = {"reply": str(reply), "by": "administrator", "bounce": bounce}
            for r in rows:
                if r.id not in ids:
                    continue
                for row in (r.original_recipient, *(a for a in r.also_settles.split("\n") if a)):
                    trace.events.append(TraceEvent(message_id, EventKind.FAIL, r.tenant_id, row, detail))
                    trace.statuses.append(
                        TraceRecipient(message_id, r.tenant_id, row, TraceStatus.FAILED, r.recipient)
                    )
            self._write_trace(conn, trace, now)
            return len(ids)

    def _require(self, conn: Connection, scope: Scope, message_id: str) -> None:
        q = queue_recipients
        found = conn.execute(
            select(q.c.id).where(q.c.message_id == message_id).where(_visible(scope)).limit(1)
        ).first()
        if found is None:
            raise QueueRowNotFoundError(f"no queued message {message_id!r}")


def _recipient(r: Row[Any]) -> QueuedRecipient:
    return QueuedRecipient(
        queue_id=r.id,
        tenant_id=r.tenant_id,
        recipient=r.recipient,
        original_recipient=r.original_recipient,
        destination=r.destination,
        state=r.state,
        attempts=r.attempts,
        next_attempt_at=r.next_attempt_at,
        last_reply=r.last_reply,
        remote_mta=r.remote_mta,
        envelope_sender=r.envelope_sender,
        lease_owner=r.lease_owner,
        lease_until=r.lease_until,
        expires_at=r.expires_at,
        connector_id=r.connector_id,
        connector=r.connector_name or "",
    )
