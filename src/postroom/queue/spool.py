"""The spool: a received message and its recipients, written durably in one transaction.

`write_spool` inserts the message row (pointing at its body blob, which is already on disk) and one
queue row per recipient, all in the caller's transaction; the SMTP session runs it as a job of the
group committer and says 250 only when that commit returned. The queue keeps state per recipient,
so one message can be delivered for one recipient and deferred for another.

Queue states have plain names: `pending` (due now or at `next_attempt_at`), `deferred` (failed
temporarily, retried with backoff), `held` (an administrator stopped it: never leased until
released), `failed` (failed for good, waiting for the DSN round to tell the sender; `last_reply` is
the final reply). A recipient that routing already failed (`RoutedRecipient.failure`: a refused
forward, a size over a limit) is written `failed` at once, so every failure reaches the sender by the
same durable path. A settled recipient (delivered, or failed and reported) leaves the queue; a
message with no recipients left leaves the spool (its blob stays while the mailstore uses it).

Each row keeps its `destination` (the recipient's domain, ASCII lower case: what delivery groups by
and `queue list --destination` filters on), its own `envelope_sender` (NULL: the message's) and the
outbound connector it leaves by (`connector_id`, NULL: by MX; routing chose it). The lease columns
are `queue.leases`'.

This module owns the spool and queue tables: a delivery agent settles its recipients with `settle`
in its own unit of work (the transaction it delivered in), never by writing the tables itself.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import Connection, delete, func, select

from postroom.model.address import destination_of
from postroom.model.flow import RoutedRecipient
from postroom.model.message import HeaderSummary
from postroom.storage.prepared import PreparedInsert
from postroom.storage.schema import queue_recipients, spool_messages


class QueueState(StrEnum):
    PENDING = "pending"
    DEFERRED = "deferred"
    HELD = "held"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    id: str
    sender: str  # "" for the null sender <>
    blob_id: str
    prefix: bytes  # headers this node added on receipt (Received)
    size: int
    received_at: float
    summary: HeaderSummary


def new_message_id(now: float | None = None) -> str:
    """A sortable, unique internal message id: milliseconds then 64 random bits, in hex."""
    millis = int((now if now is not None else time.time()) * 1000)
    return f"{millis:012x}{os.urandom(8).hex()}"


_INSERT_SPOOL = PreparedInsert(
    spool_messages,
    [
        "id",
        "sender",
        "blob_id",
        "prefix",
        "size",
        "received_at",
        "from_header",
        "subject",
        "date_header",
        "message_id_header",
    ],
)
_INSERT_QUEUE = PreparedInsert(
    queue_recipients,
    [
        "message_id",
        "tenant_id",
        "recipient",
        "original_recipient",
        "also_settles",
        "route",
        "mailbox_id",
        "state",
        "attempts",
        "next_attempt_at",
        "lease_until",
        "last_reply",
        "destination",
        "envelope_sender",
        "delay_notified",
        "remote_mta",
        "received_at",
        "headers",
        "connector_id",
    ],
)


def write_spool(conn: Connection, entry: SpoolEntry, recipients: list[RoutedRecipient]) -> None:
    """Spool one message and queue its recipients, in the caller's transaction."""
    _INSERT_SPOOL.run(
        conn,
        [
            {
                "id": entry.id,
                "sender": entry.sender,
                "blob_id": entry.blob_id,
                "prefix": entry.prefix,
                "size": entry.size,
                "received_at": entry.received_at,
                "from_header": entry.summary.from_header,
                "subject": entry.summary.subject,
                "date_header": entry.summary.date,
                "message_id_header": entry.summary.message_id,
            }
        ],
    )
    _INSERT_QUEUE.run(
        conn,
        [
            {
                "message_id": entry.id,
                "tenant_id": r.tenant_id,
                "recipient": r.recipient,
                "original_recipient": r.original_recipient,
                "also_settles": "\n".join(r.also_settles),
                "route": r.route.value,
                "mailbox_id": r.mailbox_id,
                "state": (QueueState.FAILED if r.failure else QueueState.PENDING).value,
                "attempts": 0,
                "next_attempt_at": entry.received_at,
                "lease_until": None,
                "last_reply": r.failure[:512],
                "destination": destination_of(r.recipient),
                "envelope_sender": r.envelope_sender,
                "delay_notified": False,
                "remote_mta": "",
                "received_at": entry.received_at,
                "headers": r.headers,
                "connector_id": r.connector_id,
            }
            for r in recipients
        ],
    )


@dataclass(frozen=True, slots=True)
class QueueSummary:
    pending: int
    deferred: int
    messages: int
    oldest_received_at: float | None
    held: int = 0
    failed: int = 0


def queue_summary(
    conn: Connection, tenant_id: int | None = None, *, tenant_only: bool = False
) -> QueueSummary:
    """Counts by state; with `tenant_only`, of `tenant_id`'s rows only (and the messages they are of)."""
    q = queue_recipients
    rows = select(q.c.state, func.count())
    if tenant_only:
        rows = rows.where(q.c.tenant_id == tenant_id)
    counts = {state: int(count) for state, count in conn.execute(rows.group_by(q.c.state))}
    spooled = select(func.count(), func.min(spool_messages.c.received_at))
    if tenant_only:
        spooled = spooled.where(
            spool_messages.c.id.in_(select(q.c.message_id).where(q.c.tenant_id == tenant_id))
        )
    messages, oldest = conn.execute(spooled).one()
    return QueueSummary(
        pending=int(counts.get(QueueState.PENDING.value, 0)),
        deferred=int(counts.get(QueueState.DEFERRED.value, 0)),
        messages=int(messages),
        oldest_received_at=oldest,
        held=int(counts.get(QueueState.HELD.value, 0)),
        failed=int(counts.get(QueueState.FAILED.value, 0)),
    )


@dataclass(frozen=True, slots=True)
class QueueDepth:
    """What the queue holds, for monitoring: recipients by state (every state, 0 when none) and when
    the oldest queued message was received (None: the queue is empty)."""

    recipients: dict[QueueState, int]
    oldest_received_at: float | None


def queue_depth(conn: Connection) -> QueueDepth:
    """The whole queue's depth, cheaply: a count by state over the due index, one probe of the
    spool's receipt index (no count of messages)."""
    q = queue_recipients
    rows = conn.execute(select(q.c.state, func.count()).group_by(q.c.state))
    counts = {str(state): int(count) for state, count in rows}
    oldest = conn.execute(select(func.min(spool_messages.c.received_at))).scalar()
    return QueueDepth({state: int(counts.get(state.value, 0)) for state in QueueState}, oldest)


def settle(conn: Connection, queue_ids: set[int]) -> None:
    """Take these settled recipients (delivered or failed) out of the queue, and the messages left
    with no queued recipient out of the spool, in the caller's transaction."""
    if not queue_ids:
        return
    q = queue_recipients
    message_ids = set(conn.execute(select(q.c.message_id).where(q.c.id.in_(queue_ids))).scalars())
    conn.execute(delete(q).where(q.c.id.in_(queue_ids)))
    still_queued = select(q.c.message_id).where(q.c.message_id.in_(message_ids))
    conn.execute(
        delete(spool_messages).where(
            spool_messages.c.id.in_(message_ids) & spool_messages.c.id.not_in(still_queued)
        )
    )


@dataclass(frozen=True, slots=True)
class RemovedQueue:
    recipients: int
    blob_ids: frozenset[str]  # bodies of spooled messages that left the spool (others may still use them)


def remove_tenant_queue(conn: Connection, tenant_id: int) -> RemovedQueue:
    """Delete the tenant's queue rows and the spooled messages left with none (caller's transaction)."""
    message_ids = set(
        conn.execute(
            select(queue_recipients.c.message_id).where(queue_recipients.c.tenant_id == tenant_id)
        ).scalars()
    )
    removed = conn.execute(delete(queue_recipients).where(queue_recipients.c.tenant_id == tenant_id)).rowcount
    still_queued = select(queue_recipients.c.message_id).where(queue_recipients.c.message_id.in_(message_ids))
    leaving = spool_messages.c.id.in_(message_ids) & spool_messages.c.id.not_in(still_queued)
    blob_ids = frozenset(conn.execute(select(spool_messages.c.blob_id).where(leaving)).scalars())
    conn.execute(delete(spool_messages).where(leaving))
    return RemovedQueue(recipients=removed, blob_ids=blob_ids)


def spooled_blobs(conn: Connection, blob_ids: frozenset[str]) -> set[str]:
    """Those of `blob_ids` that a spooled message still points at."""
    if not blob_ids:
        return set()
    return set(
        conn.execute(select(spool_messages.c.blob_id).where(spool_messages.c.blob_id.in_(blob_ids))).scalars()
    )
