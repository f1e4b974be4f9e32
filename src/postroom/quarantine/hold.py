"""Holding a message in quarantine, and the other writes to the quarantine tables that run in a caller's
transaction: the blobs a row keeps, a tenant's removal, the purge of expired rows.

`hold` runs inside the receiving commit (the MX commit job calls it with the open transaction): it
writes one `quarantine` row per message and tenant and one `quarantine_recipients` row per recipient,
and returns the trace rows (a `Quarantine` event and the `quarantined` status per recipient) for the
caller to record with the rest of the message's trace. It never commits and never opens a
transaction, so a message is in quarantine exactly when its receipt committed. A second hold of the
same message for the same tenant adds the recipients it did not have yet (the first hold's reason and
policy stay; the later expiry wins).

The body is not copied: the row names the blob the spool wrote, with `prefix` (the headers the
node added on receipt). The blob sweep and tenant removal keep a blob while a row names it
(`quarantined_blobs`); once the row is deleted, released or not, the blob is the sweep's like any other.

Expiry: `expires_at` is the receipt time plus the policy's retention (1-30 days, spec §10.4; a value
outside is clamped, never a reason to refuse mail). `purge_expired` deletes expired rows a batch per
call (the node runs it every `[protection] quarantine_purge_interval`, one batch per writer job) and
traces each purged recipient as a `Release` event `expired` while the message's trace is kept.

Failure: an unknown reason or quarantine policy is a programming error (ValueError): the commit fails
and the message is deferred, never held under a policy no one can read. Database errors propagate to
the caller's transaction.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import Connection, delete, insert, select, update

from postroom.model.flow import EventKind, TraceEvent, TraceRecipient, TraceStatus
from postroom.model.policy import ADMIN_ONLY, FULL_ACCESS
from postroom.storage.schema import quarantine, quarantine_recipients, trace_messages
from postroom.trace import record_events, set_statuses

DAY = 86_400.0
MIN_RETENTION_DAYS = 1  # spec §10.4: quarantine retention is 1-30 days
MAX_RETENTION_DAYS = 30
PURGE_BATCH = 500  # expired messages deleted per transaction: a purge never holds the writer long


class QuarantineReason(StrEnum):
    """Why a message was held: the verdict whose action was quarantine."""

    MALWARE = "malware"
    FILE_TYPE = "file-type"  # the common attachment filter (spec §10.3)
    HIGH_CONFIDENCE_PHISH = "high-confidence-phish"
    PHISH = "phish"
    HIGH_CONFIDENCE_SPAM = "high-confidence-spam"
    SPAM = "spam"
    BULK = "bulk"
    SPOOF = "spoof"
    UNPARSEABLE = "unparseable"  # the MIME walk could not read it and the policy holds such mail


# Held under AdminOnlyAccessPolicy whatever a row says (spec §10.3, §10.6): a user never releases these.
ADMIN_ONLY_REASONS = frozenset(
    {QuarantineReason.MALWARE, QuarantineReason.FILE_TYPE, QuarantineReason.HIGH_CONFIDENCE_PHISH}
)
ACCESS_POLICIES = (ADMIN_ONLY, FULL_ACCESS)


@dataclass(frozen=True, slots=True)
class Hold:
    """One message to hold for one tenant's recipients."""

    message_id: str  # the trace id
    tenant_id: int
    blob_id: str
    prefix: bytes  # the headers the node added on receipt (protection's among them)
    size: int  # octets as stored: prefix and body
    sender: str  # the envelope sender, "" for <>
    from_header: str
    subject: str
    message_id_header: str
    reason: str  # a QuarantineReason value
    policy: str  # the protection policy's name
    access: str  # model.policy ADMIN_ONLY or FULL_ACCESS
    detail: dict[str, object]  # the verdicts (JSON-able)
    received_at: float
    retention_days: int
    recipients: tuple[tuple[str, int | None], ...]  # (address as given, mailbox id or None)


TraceRows = tuple[list[TraceEvent], list[TraceRecipient]]


def hold(conn: Connection, item: Hold) -> TraceRows:
    """Hold `item` in the caller's transaction; returns its trace rows for the caller to record."""
    reason = QuarantineReason(item.reason)  # ValueError: not a reason
    if item.access not in ACCESS_POLICIES:
        raise ValueError(
            f"unknown quarantine policy {item.access!r}: use one of {', '.join(ACCESS_POLICIES)}"
        )
    days = min(max(item.retention_days, MIN_RETENTION_DAYS), MAX_RETENTION_DAYS)
    expires_at = item.received_at + days * DAY
    q, r = quarantine, quarantine_recipients
    found = conn.execute(
        select(q.c.id, q.c.expires_at).where(
            (q.c.message_id == item.message_id) & (q.c.tenant_id == item.tenant_id)
        )
    ).first()
    if found is None:
        inserted = conn.execute(
            insert(q).values(
                message_id=item.message_id,
                tenant_id=item.tenant_id,
                blob_id=item.blob_id,
                prefix=item.prefix,
                size=item.size,
                sender=item.sender[:320],
                from_header=item.from_header[:512],
                subject=item.subject[:512],
                message_id_header=item.message_id_header[:512],
                reason=reason.value,
                policy=item.policy[:64],
                access=item.access,
                detail=json.dumps(item.detail, sort_keys=True, default=str),
                received_at=item.received_at,
                expires_at=expires_at,
            )
        )
        assert inserted.inserted_primary_key is not None  # an INSERT of one row
        quarantine_id = int(inserted.inserted_primary_key[0])
        held: set[str] = set()
    else:
        quarantine_id = int(found.id)
        if expires_at > found.expires_at:
            conn.execute(update(q).where(q.c.id == quarantine_id).values(expires_at=expires_at))
        held = set(conn.execute(select(r.c.recipient).where(r.c.quarantine_id == quarantine_id)).scalars())
    added: dict[str, int | None] = {}
    for address, mailbox_id in item.recipients:
        if address not in held and address not in added:
            added[address] = mailbox_id
    if added:
        conn.execute(
            insert(r),
            [
                {"quarantine_id": quarantine_id, "recipient": address, "mailbox_id": mailbox_id}
                for address, mailbox_id in added.items()
            ],
        )
    detail: dict[str, object] = {
        "quarantine": quarantine_id,
        "reason": reason.value,
        "policy": item.policy,
        "access": item.access,
        "expires_at": expires_at,
    }
    events = [TraceEvent(item.message_id, EventKind.QUARANTINE, item.tenant_id, a, detail) for a in added]
    statuses = [
        TraceRecipient(item.message_id, item.tenant_id, a, TraceStatus.QUARANTINED, "") for a in added
    ]
    return events, statuses


def quarantined_blobs(conn: Connection, blob_ids: frozenset[str]) -> set[str]:
    """Those of `blob_ids` that a quarantined message still names (the blob sweep keeps them)."""
    if not blob_ids:
        return set()
    return set(conn.execute(select(quarantine.c.blob_id).where(quarantine.c.blob_id.in_(blob_ids))).scalars())


@dataclass(frozen=True, slots=True)
class RemovedQuarantine:
    messages: int
    blob_ids: frozenset[str]  # blobs the removed rows named (others may still use them)


def remove_tenant_quarantine(conn: Connection, tenant_id: int) -> RemovedQuarantine:
    """Delete the tenant's quarantine, in the caller's transaction (tenant removal)."""
    q, r = quarantine, quarantine_recipients
    owned = select(q.c.id).where(q.c.tenant_id == tenant_id)
    blob_ids = frozenset(conn.execute(select(q.c.blob_id).where(q.c.tenant_id == tenant_id)).scalars())
    conn.execute(delete(r).where(r.c.quarantine_id.in_(owned)))
    removed = conn.execute(delete(q).where(q.c.tenant_id == tenant_id)).rowcount
    return RemovedQuarantine(messages=removed, blob_ids=blob_ids)


def purge_expired(conn: Connection, now: float, batch: int = PURGE_BATCH) -> int:
    """Delete up to `batch` quarantined messages that expired before `now`, in the caller's
    transaction, tracing each recipient as `expired`; returns how many messages went."""
    q, r = quarantine, quarantine_recipients
    rows = conn.execute(
        select(q.c.id, q.c.message_id, q.c.tenant_id)
        .where(q.c.expires_at < now)
        .order_by(q.c.expires_at)
        .limit(batch)
    ).all()
    if not rows:
        return 0
    ids = [row.id for row in rows]
    recipients = conn.execute(
        select(r.c.quarantine_id, r.c.recipient).where(r.c.quarantine_id.in_(ids)).order_by(r.c.quarantine_id)
    ).all()
    events = []
    by_id = {row.id: row for row in rows}
    for quarantine_id, recipient in recipients:
        row = by_id[quarantine_id]
        detail: dict[str, object] = {"action": "expired", "quarantine": quarantine_id}
        events.append(TraceEvent(row.message_id, EventKind.RELEASE, row.tenant_id, recipient, detail))
    conn.execute(delete(r).where(r.c.quarantine_id.in_(ids)))
    conn.execute(delete(q).where(q.c.id.in_(ids)))
    record_traced(conn, events, now)
    return len(ids)


def record_traced(
    conn: Connection, events: Sequence[TraceEvent], now: float, statuses: Sequence[TraceRecipient] = ()
) -> None:
    """Record `events` and `statuses` of the messages whose trace is still kept (trace has its own
    retention: a row for a purged message would be an orphan no purge ever finds)."""
    kept = _traced(conn, {e.message_id for e in events} | {s.message_id for s in statuses})
    record_events(conn, [e for e in events if e.message_id in kept], now)
    set_statuses(conn, [s for s in statuses if s.message_id in kept], now)


def _traced(conn: Connection, message_ids: set[str]) -> set[str]:
    if not message_ids:
        return set()
    wanted = sorted(message_ids)
    return set(conn.execute(select(trace_messages.c.id).where(trace_messages.c.id.in_(wanted))).scalars())
