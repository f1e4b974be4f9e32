"""The quarantine as administrators and recipients use it: list, show, preview, release, request
release, delete, purge (spec §10.6). Every admin surface (the CLI, later the admin API) uses this service.

Scoped: each method takes a `Scope` first, and a `QuarantineUser` when a mailbox user acts on their
own mail. A `TenantScope` sees and changes only its tenant's rows; a user sees only the messages they
are a recipient of, and of those only their own recipient rows. A row the caller may not see is "not
found", never "forbidden", so guessing ids tells nothing; ids are never reused (AUTOINCREMENT).

Who may do what (spec §10.6), per row's quarantine policy (`access`):

- the operator and the tenant's administrators: list, show, preview, release and delete, whatever
  the policy;
- a recipient (`user`), DefaultFullAccessPolicy: list, show, preview, release and delete their own
  recipient row;
- a recipient, AdminOnlyAccessPolicy (malware, blocked file types, high-confidence phish): list and
  show; for high-confidence phish, request release (an administrator decides); nothing else.

Malware, blocked file types and high-confidence phish are admin-only whatever a row says (fail
closed: an unknown policy is admin-only too). A refused action raises `QuarantineAccessError` saying
why and what to do; a request that cannot be right (a `--to` that is no recipient of the message,
everything already released, an administrator asking for a release request) `QuarantineRequestError`.

Release delivers a copy per recipient into their mailbox's Inbox, all in one transaction
(`mailstore.deliver`), each with `Return-Path`, `Delivered-To` and `X-Postroom-Quarantine-Released: by
<who>; <date>` above the headers the node added on receipt, in which the antispam report's verdict is
rewritten `SFV:SKQ;` (released; spec §10.6). A recipient that is no mailbox, or whose mailbox is gone,
is reported and stays held. Each recipient released is traced (`Release` event, status `delivered`),
and so are requests, deletions and expiry (`Release` events with `action`). With
`report_false_positive` the message is handed to the spam engine's `learn` (as not spam) after the
release committed; a missing or failing engine is reported and traced, and the release stands.

Exception tree:

    QuarantineError
     ├── QuarantineNotFoundError  (LookupError) no such message for this caller
     ├── QuarantineAccessError    the quarantine policy does not let this caller do it
     └── QuarantineRequestError   (ValueError) the request cannot be right as asked

Writes run in their own transaction (`Database.write`): the CLI acts on the database directly.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import json
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, Row, delete, exists, func, select, true, update

from postroom.mailstore import LocalDelivery, deliver
from postroom.model.flow import EventKind, TraceEvent, TraceRecipient, TraceStatus
from postroom.model.message import MAX_HEADER_SCAN, summarize
from postroom.model.policy import ADMIN_ONLY, FULL_ACCESS
from postroom.model.scope import OperatorScope, Scope
from postroom.model.verdicts import EngineUnavailable
from postroom.protection.headers import ANTISPAM_REPORT, QUARANTINE_RELEASED
from postroom.quarantine.hold import (
    ADMIN_ONLY_REASONS,
    PURGE_BATCH,
    QuarantineReason,
    purge_expired,
    record_traced,
)
from postroom.quarantine.preview import Rendering, inert, render
from postroom.storage import BlobStore, Database
from postroom.storage.schema import quarantine, quarantine_recipients

INBOX = "Inbox"
LIST_LIMIT = 1000  # messages one list returns at most

# The spam engine's learning: (the message, is it spam). A false positive is learned as not spam.
Learn = Callable[[bytes, bool], Awaitable[None]]


class QuarantineError(Exception):
    """A quarantine request the service refused; the message says why and what to do."""


class QuarantineNotFoundError(QuarantineError, LookupError):
    """No quarantined message with that id that this caller can see."""


class QuarantineAccessError(QuarantineError):
    """The message's quarantine policy does not let this caller do that."""


class QuarantineRequestError(QuarantineError, ValueError):
    """The request cannot be right as asked (not a recipient, already released, ...)."""


@dataclass(frozen=True, slots=True)
class QuarantineUser:
    """A mailbox user acting on their own quarantined mail (the adapter resolved and authenticated them)."""

    mailbox_id: int
    address: str  # how they are named in trace and in the released header


@dataclass(frozen=True, slots=True)
class QuarantinedRecipient:
    recipient: str  # the address as given
    mailbox_id: int | None  # where a release delivers; None: no mailbox of this service
    released_at: float | None
    released_by: str | None
    release_requested_at: float | None


@dataclass(frozen=True, slots=True)
class QuarantinedMessage:
    id: int
    message_id: str  # the trace id (`postroom trace show`)
    tenant_id: int
    sender: str
    from_header: str
    subject: str
    message_id_header: str
    size: int
    reason: str
    policy: str
    access: str
    detail: dict[str, object]  # the verdicts
    received_at: float
    expires_at: float
    recipients: tuple[QuarantinedRecipient, ...]  # those the caller sees

    @property
    def admin_only(self) -> bool:
        """Only an administrator releases it (AdminOnlyAccessPolicy, or an admin-only reason)."""
        return _admin_only(self.access, self.reason)

    @property
    def state(self) -> str:
        """held, released, partly released, or release requested (of the recipients the caller sees)."""
        released = sum(1 for r in self.recipients if r.released_at is not None)
        if self.recipients and released == len(self.recipients):
            return "released"
        if released:
            return f"released to {released} of {len(self.recipients)}"
        if any(r.release_requested_at is not None for r in self.recipients):
            return "release requested"
        return "held"


@dataclass(frozen=True, slots=True)
class Preview:
    message: QuarantinedMessage
    rendering: Rendering


@dataclass(frozen=True, slots=True)
class Released:
    """What a release did."""

    id: int
    delivered: tuple[str, ...]  # recipients whose Inbox has it now
    not_delivered: tuple[tuple[str, str], ...]  # (recipient, why): still held
    report: str  # what became of the false-positive report; "" when none was asked for


def _admin_only(access: str, reason: str) -> bool:
    return access != FULL_ACCESS or reason in ADMIN_ONLY_REASONS


def _like(pattern: str) -> str:
    """A one-wildcard pattern (`*@contoso.com`) as LIKE, with LIKE's own characters escaped."""
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")


def _matches(column: Any, pattern: str) -> ColumnElement[bool]:
    if "*" in pattern:
        return column.ilike(_like(pattern), escape="\\")  # type: ignore[no-any-return]
    return func.lower(column) == pattern.lower()


class QuarantineService:
    """The quarantine, scoped."""

    def __init__(
        self,
        database: Database,
        blobs: BlobStore,
        clock: Callable[[], float] = time.time,
        learn: Learn | None = None,
    ) -> None:
        self._db = database
        self._blobs = blobs
        self._clock = clock
        self._learn = learn

    # --- reading ----------------------------------------------------------------------------------
    def list_messages(
        self,
        scope: Scope,
        *,
        recipient: str | None = None,
        reason: str | None = None,
        sender: str | None = None,
        since: float | None = None,
        user: QuarantineUser | None = None,
        limit: int = LIST_LIMIT,
    ) -> list[QuarantinedMessage]:
        """Quarantined messages `scope` (and `user`) sees, newest first, at most `limit` (≤ LIST_LIMIT).

        `recipient` and `sender` are addresses, exact (any case) or with one wildcard (`*@contoso.com`);
        `reason` a `QuarantineReason` value (ValueError otherwise); `since` a receipt time."""
        q, r = quarantine, quarantine_recipients
        condition = _visible(scope, user)
        if recipient:
            mine = _mine(user)
            condition = condition & exists().where(
                (r.c.quarantine_id == q.c.id) & _matches(r.c.recipient, recipient) & mine
            )
        if reason is not None:
            condition = condition & (q.c.reason == QuarantineReason(reason).value)
        if sender:
            condition = condition & _matches(q.c.sender, sender)
        if since is not None:
            condition = condition & (q.c.received_at >= since)
        with self._db.read() as conn:
            rows = conn.execute(
                select(q)
                .where(condition)
                .order_by(q.c.received_at.desc(), q.c.id.desc())
                .limit(max(0, min(limit, LIST_LIMIT)))
            ).all()
            recipients = self._recipients(conn, [row.id for row in rows], user)
        return [_message(row, recipients.get(row.id, ())) for row in rows]

    def show(
        self, scope: Scope, quarantine_id: int, *, user: QuarantineUser | None = None
    ) -> QuarantinedMessage:
        """One quarantined message: its verdicts, recipients (a user: their own), release state, expiry."""
        with self._db.read() as conn:
            row = self._row(conn, scope, quarantine_id, user)
            recipients = self._recipients(conn, [row.id], user)
        return _message(row, recipients.get(row.id, ()))

    def preview(self, scope: Scope, quarantine_id: int, *, user: QuarantineUser | None = None) -> Preview:
        """The message's header fields and a safe text rendering (`quarantine.preview`)."""
        message = self.show(scope, quarantine_id, user=user)
        if user is not None and message.admin_only:
            raise QuarantineAccessError(
                f"quarantined message {quarantine_id} was held as {message.reason} under "
                f"{ADMIN_ONLY}: only an administrator of your organization can preview it"
            )
        with self._db.read() as conn:
            found = conn.execute(
                select(quarantine.c.prefix, quarantine.c.blob_id).where(quarantine.c.id == quarantine_id)
            ).one()
        return Preview(message, render(bytes(found.prefix) + self._blobs.get(found.blob_id)))

    # --- acting -----------------------------------------------------------------------------------
    async def release(
        self,
        scope: Scope,
        quarantine_id: int,
        *,
        to: Sequence[str] = (),
        user: QuarantineUser | None = None,
        report_false_positive: bool = False,
    ) -> Released:
        """Release to every recipient not released yet (or to `to`, recipients of the message): a copy
        in each one's Inbox, in one transaction; then, with `report_false_positive`, the spam engine
        learns the message as not spam."""
        released, original = await asyncio.to_thread(
            self._release, scope, quarantine_id, tuple(to), user, report_false_positive
        )
        if original is None:
            return released
        report = await self._report(original)
        event = TraceEvent(
            original.message_id,
            EventKind.RELEASE,
            original.tenant_id,
            "",
            {"action": "reported-false-positive", "by": _who(scope, user), "result": report},
        )
        await asyncio.to_thread(self._record, [event])
        return Released(released.id, released.delivered, released.not_delivered, report)

    def request_release(self, scope: Scope, quarantine_id: int, user: QuarantineUser | None) -> int:
        """A recipient asks an administrator to release a high-confidence phish held for them;
        returns how many of their rows were newly marked (0: asked before)."""
        now = self._clock()
        r = quarantine_recipients
        with self._db.write() as conn:
            row = self._row(conn, scope, quarantine_id, user)
            if user is None:
                raise QuarantineRequestError(
                    "a release request is a recipient's: as an administrator, release the message instead"
                )
            if not _admin_only(row.access, row.reason):
                raise QuarantineRequestError(
                    f"you may release quarantined message {quarantine_id} yourself: release it instead"
                )
            if row.reason != QuarantineReason.HIGH_CONFIDENCE_PHISH:
                raise QuarantineAccessError(
                    f"quarantined message {quarantine_id} was held as {row.reason}: its release cannot be "
                    "requested; only an administrator of your organization can release it, ask them"
                )
            mine = [x for x in self._recipients(conn, [row.id], user)[row.id] if x.released_at is None]
            if not mine:
                raise QuarantineRequestError(
                    f"quarantined message {quarantine_id} was released to you already"
                )
            new = [x.recipient for x in mine if x.release_requested_at is None]
            if new:
                conn.execute(
                    update(r)
                    .where((r.c.quarantine_id == row.id) & r.c.recipient.in_(new))
                    .values(release_requested_at=now)
                )
                detail: dict[str, object] = {
                    "action": "release-requested",
                    "by": user.address,
                    "quarantine": row.id,
                }
                record_traced(
                    conn,
                    [TraceEvent(row.message_id, EventKind.RELEASE, row.tenant_id, a, detail) for a in new],
                    now,
                )
            return len(new)

    def delete(self, scope: Scope, quarantine_id: int, *, user: QuarantineUser | None = None) -> int:
        """Delete the message from quarantine (a user: only their own recipient rows, and the message
        when no recipient is left); returns how many recipient rows went."""
        now = self._clock()
        q, r = quarantine, quarantine_recipients
        with self._db.write() as conn:
            row = self._row(conn, scope, quarantine_id, user)
            if user is not None and _admin_only(row.access, row.reason):
                raise QuarantineAccessError(
                    f"quarantined message {quarantine_id} was held as {row.reason} under {ADMIN_ONLY}: "
                    "only an administrator of your organization can delete it"
                )
            gone = [x.recipient for x in self._recipients(conn, [row.id], user)[row.id]]
            conn.execute(delete(r).where((r.c.quarantine_id == row.id) & r.c.recipient.in_(gone)))
            left = conn.execute(
                select(func.count()).select_from(r).where(r.c.quarantine_id == row.id)
            ).scalar()
            if not left:
                conn.execute(delete(q).where(q.c.id == row.id))
            detail: dict[str, object] = {"action": "deleted", "by": _who(scope, user), "quarantine": row.id}
            record_traced(
                conn,
                [TraceEvent(row.message_id, EventKind.RELEASE, row.tenant_id, a, detail) for a in gone],
                now,
            )
        return len(gone)

    def purge(self, *, batch: int = PURGE_BATCH) -> int:
        """Delete every expired quarantined message, a batch per transaction (the operator's: every
        tenant); returns how many went."""
        removed = 0
        while True:
            with self._db.write() as conn:
                count = purge_expired(conn, self._clock(), batch)
            if not count:
                return removed
            removed += count

    # --- inside ---------------------------------------------------------------------------------------
    def _release(
        self,
        scope: Scope,
        quarantine_id: int,
        to: tuple[str, ...],
        user: QuarantineUser | None,
        report: bool,
    ) -> tuple[Released, _Original | None]:
        with self._db.read() as conn:
            blob_id = self._row(conn, scope, quarantine_id, user).blob_id
        summary = summarize(self._blobs.head(blob_id, MAX_HEADER_SCAN))  # before the writer's turn
        now = self._clock()
        who = _who(scope, user)
        r = quarantine_recipients
        with self._db.write() as conn:
            row = self._row(conn, scope, quarantine_id, user)
            if user is not None and _admin_only(row.access, row.reason):
                raise QuarantineAccessError(_user_may_not_release(quarantine_id, row.reason))
            targets = _targets(quarantine_id, self._recipients(conn, [row.id], user)[row.id], to)
            stamp = released_prefix(bytes(row.prefix), who, now)
            deliveries: dict[str, LocalDelivery] = {}
            not_delivered: list[tuple[str, str]] = []
            for target in targets:
                if target.mailbox_id is None:
                    not_delivered.append((target.recipient, "not a mailbox of this service"))
                    continue
                prefix = (
                    f"Return-Path: <{inert(row.sender, newlines=False)}>\r\n"
                    f"Delivered-To: {inert(target.recipient, newlines=False)}\r\n"
                ).encode() + stamp
                deliveries[target.recipient] = LocalDelivery(
                    mailbox_id=target.mailbox_id,
                    folder=INBOX,
                    blob_id=row.blob_id,
                    prefix=prefix,
                    size=row.size - len(row.prefix) + len(prefix),
                    internal_date=row.received_at,
                    summary=summary,
                    trace_id=row.message_id,
                )
            missing = deliver(conn, list(deliveries.values()))
            delivered = [a for a, item in deliveries.items() if item.mailbox_id not in missing]
            not_delivered += [
                (a, "the mailbox no longer exists")
                for a, item in deliveries.items()
                if item.mailbox_id in missing
            ]
            if delivered:
                conn.execute(
                    update(r)
                    .where((r.c.quarantine_id == row.id) & r.c.recipient.in_(delivered))
                    .values(released_at=now, released_by=who)
                )
            _trace_release(conn, row, who, delivered, not_delivered, now)
            original = (
                _Original(row.message_id, row.tenant_id, bytes(row.prefix), row.blob_id) if report else None
            )
        released = Released(row.id, tuple(delivered), tuple(not_delivered), "")
        return released, original

    async def _report(self, original: _Original) -> str:
        if self._learn is None:
            return "not learned: this node has no spam engine that learns"
        content = await asyncio.to_thread(self._blobs.get, original.blob_id)
        try:
            await self._learn(original.prefix + content, False)
        except EngineUnavailable as error:
            return f"not learned: {error}"
        return "learned as not spam"

    def _record(self, events: list[TraceEvent]) -> None:
        with self._db.write() as conn:
            record_traced(conn, events, self._clock())

    @staticmethod
    def _row(conn: Connection, scope: Scope, quarantine_id: int, user: QuarantineUser | None) -> Row[Any]:
        q = quarantine
        row = conn.execute(select(q).where((q.c.id == quarantine_id) & _visible(scope, user))).first()
        if row is None:
            raise QuarantineNotFoundError(f"no quarantined message {quarantine_id}")
        return row

    @staticmethod
    def _recipients(
        conn: Connection, ids: Sequence[int], user: QuarantineUser | None
    ) -> dict[int, tuple[QuarantinedRecipient, ...]]:
        if not ids:
            return {}
        r = quarantine_recipients
        rows = conn.execute(
            select(r)
            .where(r.c.quarantine_id.in_(list(ids)) & _mine(user))
            .order_by(r.c.quarantine_id, r.c.recipient)
        ).all()
        found: dict[int, list[QuarantinedRecipient]] = {i: [] for i in ids}
        for x in rows:
            found[x.quarantine_id].append(
                QuarantinedRecipient(
                    x.recipient, x.mailbox_id, x.released_at, x.released_by, x.release_requested_at
                )
            )
        return {i: tuple(v) for i, v in found.items()}


@dataclass(frozen=True, slots=True)
class _Original:
    """What a false-positive report hands the engine: the message as it was scored."""

    message_id: str
    tenant_id: int
    prefix: bytes
    blob_id: str


def _visible(scope: Scope, user: QuarantineUser | None) -> ColumnElement[bool]:
    q, r = quarantine, quarantine_recipients
    condition: ColumnElement[bool] = (
        true() if isinstance(scope, OperatorScope) else q.c.tenant_id == scope.tenant_id
    )
    if user is not None:
        condition = condition & exists().where(
            (r.c.quarantine_id == q.c.id) & (r.c.mailbox_id == user.mailbox_id)
        )
    return condition


def _mine(user: QuarantineUser | None) -> ColumnElement[bool]:
    r = quarantine_recipients
    return true() if user is None else r.c.mailbox_id == user.mailbox_id


def _trace_release(
    conn: Connection,
    row: Row[Any],
    who: str,
    delivered: list[str],
    not_delivered: list[tuple[str, str]],
    now: float,
) -> None:
    def event(recipient: str, detail: dict[str, object]) -> TraceEvent:
        return TraceEvent(row.message_id, EventKind.RELEASE, row.tenant_id, recipient, detail)

    released: dict[str, object] = {"action": "released", "by": who, "quarantine": row.id, "folder": INBOX}
    record_traced(
        conn,
        [event(a, released) for a in delivered]
        + [
            event(a, {"action": "not-released", "by": who, "quarantine": row.id, "reason": why})
            for a, why in not_delivered
        ],
        now,
        [TraceRecipient(row.message_id, row.tenant_id, a, TraceStatus.DELIVERED, a) for a in delivered],
    )


def _who(scope: Scope, user: QuarantineUser | None) -> str:
    if user is not None:
        return user.address
    return "operator" if isinstance(scope, OperatorScope) else "tenant administrator"


def _user_may_not_release(quarantine_id: int, reason: str) -> str:
    held = f"quarantined message {quarantine_id} was held as {reason} under {ADMIN_ONLY}"
    if reason == QuarantineReason.HIGH_CONFIDENCE_PHISH:
        return (
            f"{held}: only an administrator of your organization can release it; request its release instead"
        )
    return f"{held}: only an administrator of your organization can release it; ask them"


def _targets(
    quarantine_id: int, recipients: tuple[QuarantinedRecipient, ...], to: Iterable[str]
) -> list[QuarantinedRecipient]:
    """The recipients a release is for: those of `to` (each a recipient of the message, not released
    yet), or every one not released yet."""
    wanted = [address.strip() for address in to if address.strip()]
    if not wanted:
        waiting = [x for x in recipients if x.released_at is None]
        if not waiting:
            raise QuarantineRequestError(
                f"quarantined message {quarantine_id} was released to every recipient already"
            )
        return waiting
    by_address = {x.recipient.lower(): x for x in recipients}
    chosen: list[QuarantinedRecipient] = []
    for address in wanted:
        found = by_address.get(address.lower())
        if found is None:
            known = ", ".join(x.recipient for x in recipients) or "none you can release"
            raise QuarantineRequestError(
                f"{address} is not a recipient of quarantined message {quarantine_id}; "
                f"its recipients: {known}"
            )
        if found.released_at is not None:
            raise QuarantineRequestError(
                f"quarantined message {quarantine_id} was released to {found.recipient} already "
                f"(by {found.released_by} at {_date(found.released_at)})"
            )
        if found not in chosen:
            chosen.append(found)
    return chosen


_SFV = re.compile(rb"(?<![A-Za-z0-9-])SFV:[^;\r\n]*;?")
_REPORT = re.compile(
    rb"^" + re.escape(ANTISPAM_REPORT.encode()) + rb"[ \t]*:(?P<value>[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*)",
    re.IGNORECASE | re.MULTILINE,
)


def released_prefix(prefix: bytes, who: str, now: float) -> bytes:
    """The released copy's header fields: the released stamp, then `prefix` with its antispam report's
    verdict rewritten `SFV:SKQ;` (added when the report, or its SFV field, is missing)."""
    stamp = f"{QUARANTINE_RELEASED}: by {inert(who, newlines=False)}; {_date(now)}\r\n".encode()
    found = _REPORT.search(prefix)
    if found is None:
        return stamp + prefix + f"{ANTISPAM_REPORT}: SFV:SKQ;\r\n".encode()
    value, count = _SFV.subn(b"SFV:SKQ;", found["value"], count=1)
    if not count:
        fields = value.rstrip()
        if not fields.strip():
            value = b" SFV:SKQ;"
        else:
            value = fields + (b"" if fields.endswith(b";") else b";") + b"SFV:SKQ;"
    return stamp + prefix[: found.start("value")] + value + prefix[found.end("value") :]


def _date(at: float) -> str:
    return email.utils.format_datetime(datetime.datetime.fromtimestamp(at, datetime.UTC))


def _message(row: Row[Any], recipients: tuple[QuarantinedRecipient, ...]) -> QuarantinedMessage:
    try:
        detail = json.loads(row.detail or "{}")
    except ValueError:
        detail = {}
    return QuarantinedMessage(
        id=row.id,
        message_id=row.message_id,
        tenant_id=row.tenant_id,
        sender=row.sender,
        from_header=row.from_header,
        subject=row.subject,
        message_id_header=row.message_id_header,
        size=row.size,
        reason=row.reason,
        policy=row.policy,
        access=row.access,
        detail=detail if isinstance(detail, dict) else {},
        received_at=row.received_at,
        expires_at=row.expires_at,
        recipients=recipients,
    )
