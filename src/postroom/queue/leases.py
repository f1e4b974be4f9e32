"""Leases on queue rows: who is delivering a recipient now, until when, and settling by the reply.

A worker takes due recipients with `lease_due` in a short writer job: rows of a remote route in
state `pending` or `deferred`, due (`next_attempt_at <= now`), whose lease is free or expired, at
most `limit`, oldest due first. Each gets `lease_until = now + lease_seconds` and `lease_owner = `
the worker's lease token, unique to this one lease (node, process, lease number), so a later lease
of the same row, even by the same process, is told apart. On PostgreSQL the due rows are selected
`FOR UPDATE SKIP LOCKED`: several nodes lease from one queue at once and each gets rows no other
transaction holds; on SQLite the single writer (`BEGIN IMMEDIATE`) orders leasers by itself.

A delivery that runs long renews its leases (`renew`); a worker that dies leaves them to expire,
and the rows are due again for anyone. Nothing is lost: a row leaves the queue only by `settle`.

`settle_results` applies what the remote agent answered, one recipient at a time, in the writer:

- `2xx`: the recipient was delivered: its row leaves the queue (Send event, status delivered). This
  is applied even when the row was leased again meanwhile (the delivery happened; the other lease's
  result then finds no row), so a 250 once committed is never delivered again.
- `4xx`: deferred, due again after the next step of the retry schedule (Defer event). Past the
  row's expiry (`expires_at`, set at the first deferral: receipt + `message_expiration`) it fails
  with `4.4.7` instead. A reply that `model.replies.retry_period` gives a shorter period (an outbound
  connector's failure, 4.4.312-318 and 4.7.320; an MTA-STS or DANE failure) brings the expiry to
  receipt + that period (24 h), and the recipient then fails with that reply's own code (550 4.4.316
  ...; retried for 24 hours), so the NDR says what went wrong.
- `5xx`: failed with the reply (Fail event); the DSN round (`queue.bounce`) reports it.

A 4xx or 5xx is applied only while the row still carries our lease token: a result for a row we
no longer hold (another worker leased it after ours expired, an administrator deleted, held or
bounced it) is dropped, never applied twice. A row an administrator held while we delivered stays
held. The trace rows to write are returned (`TraceRows`): the queue does not write trace itself.
"""

from __future__ import annotations

import itertools
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import Connection, or_, select, update

from postroom.model import Reply, replies
from postroom.model.flow import EventKind, Route, TraceEvent, TraceRecipient, TraceStatus
from postroom.model.outbound import RecipientResult
from postroom.queue.spool import QueueState, settle
from postroom.storage.schema import queue_recipients, spool_messages

DUE_STATES = (QueueState.PENDING.value, QueueState.DEFERRED.value)


@dataclass(slots=True)
class TraceRows:
    """Trace events and summary rows a queue step produces, for the caller to write in its job."""

    events: list[TraceEvent] = field(default_factory=list)
    statuses: list[TraceRecipient] = field(default_factory=list)
    # What each recipient settled here came to (Send, Defer or Fail) with its final reply, for the
    # caller to count once the job committed (a job may run twice when its batch is replayed).
    settled: list[tuple[EventKind, Reply]] = field(default_factory=list)

    def extend(self, other: TraceRows) -> None:
        self.events += other.events
        self.statuses += other.statuses
        self.settled += other.settled


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long a temporarily failing recipient waits, and when it gives up."""

    schedule: tuple[float, ...]  # seconds before retry 1, 2, ...; the last repeats
    message_expiration: float  # seconds after receipt

    def delay(self, attempts: int) -> float:
        """The wait after the `attempts`-th attempt failed temporarily (attempts >= 1)."""
        return self.schedule[min(max(attempts, 1), len(self.schedule)) - 1]


class LeaseTokens:
    """Lease tokens of one process: `<host>:<pid>:<random>/<n>`, unique per lease."""

    def __init__(self, owner: str | None = None) -> None:
        self.owner = owner or f"{socket.gethostname()[:60]}:{os.getpid()}:{os.urandom(3).hex()}"
        self._numbers = itertools.count(1)

    def next(self) -> str:
        return f"{self.owner}/{next(self._numbers)}"


@dataclass(frozen=True, slots=True)
class LeasedRecipient:
    """One leased queue row with what delivering it needs."""

    queue_id: int
    message_id: str
    tenant_id: int | None
    recipient: str
    original_recipient: str
    also_settles: tuple[str, ...]
    attempts: int
    destination: str
    sender: str  # the envelope sender of this copy ("" for <>)
    blob_id: str
    prefix: bytes
    size: int
    received_at: float
    connector_id: int | None = None  # the outbound connector it leaves by; None: by MX

    @property
    def trace_rows(self) -> tuple[str, ...]:
        return (self.original_recipient, *self.also_settles)


@dataclass(frozen=True, slots=True)
class Lease:
    token: str
    until: float
    recipients: tuple[LeasedRecipient, ...]
    next_due: float | None  # when the next row not taken comes due (None: no row waits)


def lease_due(conn: Connection, *, token: str, now: float, lease_seconds: float, limit: int) -> Lease:
    """Lease up to `limit` due remote recipients for `token` (see the module docstring)."""
    q = queue_recipients
    until = now + lease_seconds
    due = (
        select(q.c.id)
        .where(
            (q.c.route == Route.REMOTE.value)
            & q.c.state.in_(DUE_STATES)
            & (q.c.next_attempt_at <= now)
            & or_(q.c.lease_until.is_(None), q.c.lease_until < now)
        )
        .order_by(q.c.next_attempt_at, q.c.id)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    ids = list(conn.execute(due).scalars()) if limit > 0 else []
    leased: tuple[LeasedRecipient, ...] = ()
    if ids:
        conn.execute(update(q).where(q.c.id.in_(ids)).values(lease_until=until, lease_owner=token))
        m = spool_messages
        rows = conn.execute(
            select(q, m.c.sender, m.c.blob_id, m.c.prefix, m.c.size)
            .join(m, m.c.id == q.c.message_id)
            .where(q.c.id.in_(ids))
            .order_by(q.c.id)
        ).all()
        leased = tuple(
            LeasedRecipient(
                queue_id=r.id,
                message_id=r.message_id,
                tenant_id=r.tenant_id,
                recipient=r.recipient,
                original_recipient=r.original_recipient,
                also_settles=tuple(a for a in r.also_settles.split("\n") if a),
                attempts=r.attempts,
                destination=r.destination,
                sender=r.sender if r.envelope_sender is None else r.envelope_sender,
                blob_id=r.blob_id,
                prefix=bytes(r.headers) + bytes(r.prefix),
                size=r.size + len(r.headers),
                received_at=r.received_at,
                connector_id=r.connector_id,
            )
            for r in rows
        )
    return Lease(token, until, leased, _next_due(conn, ids))


def _next_due(conn: Connection, taken: list[int]) -> float | None:
    """When the next remote row not in `taken` comes due: at its `next_attempt_at`, or when its lease
    ends if that is later. Three ordered look-ups of one row each (the first free row of each due state
    by `ix_queue_due`, the first lease to end by `ix_queue_leased`), so the cost follows the rows
    leased now, never the length of the queue (a min() over every waiting row read them all)."""
    q = queue_recipients
    waiting = (q.c.route == Route.REMOTE.value) & q.c.id.not_in(taken)
    candidates = [
        conn.execute(
            select(q.c.next_attempt_at)
            .where(
                waiting
                & (q.c.state == state)
                & or_(q.c.lease_until.is_(None), q.c.lease_until <= q.c.next_attempt_at)
            )
            .order_by(q.c.next_attempt_at)
            .limit(1)
        ).scalar()
        for state in DUE_STATES
    ]
    candidates.append(
        conn.execute(
            select(q.c.lease_until)
            .where(
                waiting
                & q.c.state.in_(DUE_STATES)
                & q.c.lease_until.is_not(None)
                & (q.c.lease_until > q.c.next_attempt_at)
            )
            .order_by(q.c.lease_until)
            .limit(1)
        ).scalar()
    )
    return min((at for at in candidates if at is not None), default=None)


def renew(conn: Connection, token: str, queue_ids: Sequence[int], until: float) -> int:
    """Extend our lease on these rows to `until`; returns how many we still held."""
    q = queue_recipients
    if not queue_ids:
        return 0
    return conn.execute(
        update(q).where(q.c.id.in_(list(queue_ids)) & (q.c.lease_owner == token)).values(lease_until=until)
    ).rowcount


def settle_results(
    conn: Connection,
    token: str,
    results: Sequence[tuple[LeasedRecipient, RecipientResult]],
    now: float,
    policy: RetryPolicy,
) -> TraceRows:
    """Apply the agent's replies to the rows we leased (see the module docstring)."""
    q = queue_recipients
    trace = TraceRows()
    ids = [leased.queue_id for leased, _ in results]
    current = {
        r.id: r
        for r in conn.execute(
            select(q.c.id, q.c.lease_owner, q.c.state, q.c.attempts, q.c.expires_at).where(q.c.id.in_(ids))
        )
    }
    delivered: set[int] = set()
    for leased, result in results:
        row = current.get(leased.queue_id)
        if row is None:
            continue  # settled already (by another lease, or deleted by an administrator)
        reply = result.reply
        detail: dict[str, object] = {
            "reply": str(reply),
            "remote_host": result.remote_host,
            "remote_ip": result.remote_ip,
            "tls": result.tls or "none",
        }
        if leased.connector_id is not None:
            detail["connector_id"] = leased.connector_id
        if reply.is_positive:
            delivered.add(leased.queue_id)
            trace.settled.append((EventKind.SEND, reply))
            trace.extend(
                _rows(leased, EventKind.SEND, {**detail, "status": "delivered"}, TraceStatus.DELIVERED)
            )
            continue
        if row.lease_owner != token:
            continue  # no longer ours: whoever holds it now settles it
        attempts = row.attempts + 1
        values: dict[str, object] = {
            "attempts": attempts,
            "last_reply": str(reply)[:512],
            "remote_mta": result.remote_host[:255],
            "last_attempt_at": now,
            "lease_until": None,
            "lease_owner": None,
        }
        expires_at = (
            row.expires_at if row.expires_at is not None else leased.received_at + policy.message_expiration
        )
        retry_for = replies.retry_period(reply)
        if retry_for is not None:  # a connector or TLS policy failure: retried for a day, not two
            expires_at = min(expires_at, leased.received_at + retry_for)
        if reply.is_temporary and now < expires_at:
            if row.state != QueueState.HELD.value:
                values["state"] = QueueState.DEFERRED.value
            values["next_attempt_at"] = now + policy.delay(attempts)
            values["expires_at"] = expires_at
            trace.extend(_rows(leased, EventKind.DEFER, {**detail, "attempts": attempts}, None))
            trace.settled.append((EventKind.DEFER, reply))
        else:
            final = reply if reply.is_permanent else _expired(reply, retry_for)
            values["state"] = QueueState.FAILED.value
            values["last_reply"] = str(final)[:512]
            trace.extend(_rows(leased, EventKind.FAIL, {**detail, "reply": str(final)}, TraceStatus.FAILED))
            trace.settled.append((EventKind.FAIL, final))
        conn.execute(update(q).where(q.c.id == leased.queue_id).values(**values))
    settle(conn, delivered)
    return trace


def _expired(last: Reply, retry_for: float | None = None) -> Reply:
    """What a recipient fails with when its retries ran out: 4.4.7 saying what the last attempt got;
    after a connector or TLS policy failure (`retry_for`, 24 h), that failure's own code, so the
    NDR names the cause (spec §3.6: "retried 24 h, then NDR")."""
    if retry_for is not None and last.enhanced is not None:
        hours = round(retry_for / 3600)
        return Reply(550, last.enhanced, f"{last.text}; retried for {hours} hours, message expired"[:400])
    return replies.MESSAGE_EXPIRED.with_text(f"{replies.MESSAGE_EXPIRED.text}; last reply: {last}"[:400])


def _rows(
    leased: LeasedRecipient, kind: EventKind, detail: dict[str, object], status: TraceStatus | None
) -> TraceRows:
    rows = TraceRows()
    for row in leased.trace_rows:
        rows.events.append(TraceEvent(leased.message_id, kind, leased.tenant_id, row, detail))
        if status is not None:
            rows.statuses.append(
                TraceRecipient(leased.message_id, leased.tenant_id, row, status, leased.recipient)
            )
    return rows


def release_leases(conn: Connection, token: str) -> int:
    """Give up every lease `token` holds (a worker that stops cleanly): the rows are due again."""
    q = queue_recipients
    return conn.execute(
        update(q).where(q.c.lease_owner == token).values(lease_until=None, lease_owner=None)
    ).rowcount
