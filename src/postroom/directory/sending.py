"""Sending: SMTP AUTH switches, size and recipient limits, send-as grants, and restricted senders
(part of the directory service; spec §5, §8, §10.5, §13).

What an admin sets:

- **SMTP AUTH** per tenant (on unless turned off) and per mailbox (on, off, or inherit the tenant's:
  `Set-CASMailbox -SmtpClientAuthenticationDisabled $null`). A mailbox whose SMTP AUTH is off cannot
  log in to the submission listeners (535 5.7.139), whatever its password.
- **Sizes** per tenant and per mailbox: the largest message it may send and receive, in octets, 1 to
  `MAX_MESSAGE_SIZE` (150 MB). A mailbox's own value wins, then its tenant's, then the node's
  `[submission]` default (None here).
- **Recipients per message** per mailbox, 1 to `MAX_RECIPIENTS_LIMIT` (1000); None: the node's default.
- **Send-as grants**: a mailbox may send as another mailbox or a group of the same tenant (every proxy
  address of it). A grant never crosses tenants, whoever asks (the operator included).
- **Restricted senders**: a mailbox that would pass its daily recipient limit, or that had
  `[submission] outbound_spam_per_day` messages refused as spam in a UTC day (`charge_spam`), is
  restricted until the next UTC day, or until an administrator releases it.

Mail flow reads them with the unscoped lookups below inside the caller's connection (the submission
session in a worker thread, the commit job in the writer), like `lookups.py`. `charge_recipients`
counts a submitted message's recipients against the sender's UTC day in the commit's transaction,
so the count is durable and exact across processes and restarts; over the limit, it writes the
restriction instead and the message is refused.

Scope: the admin's reads and changes take a `Scope`; another tenant's recipient is answered as one
that does not exist. Rows are keyed by recipient and tenant ids, which are never reused: a tenant
made later with a removed tenant's names inherits none of its grants, counters or restrictions (they
went with it, by cascade).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import Connection, delete, insert, select, update

from postroom.directory.base import DirectoryBase
from postroom.directory.errors import InvalidInputError, NotFoundError
from postroom.directory.lookups import find_address
from postroom.directory.records import AddressOwner, RecipientKind
from postroom.model.scope import Scope
from postroom.storage.schema import (
    addresses,
    mailbox_sending,
    recipients,
    restricted_senders,
    send_as_grants,
    sender_counters,
    tenant_sending,
    tenants,
)

DAY = 86_400
MAX_MESSAGE_SIZE = 157_286_400  # 150 MB: the largest size limit an admin may set (spec §8)
MAX_RECIPIENTS_LIMIT = 1000  # per message, the per-mailbox ceiling (spec §8)
DAILY_LIMIT_REASON = "daily recipient limit"
OUTBOUND_SPAM_REASON = "sent spam"


class Switch(StrEnum):
    """A per-mailbox switch: on, off, or the tenant's value."""

    ON = "on"
    OFF = "off"
    INHERIT = "inherit"


@dataclass(frozen=True, slots=True)
class SendingSettings:
    """What an admin set for a tenant or a mailbox; None: not set (inherited)."""

    smtp_auth: bool | None
    max_send_size: int | None
    max_receive_size: int | None
    max_recipients: int | None = None  # mailboxes only


@dataclass(frozen=True, slots=True)
class SubmissionAccount:
    """What an SMTP AUTH session needs about the mailbox it logs in as, resolved through inheritance."""

    mailbox_id: int
    tenant_id: int
    address: str  # the primary address
    smtp_auth: bool
    max_send_size: int | None  # None: the node's default
    max_recipients: int | None  # None: the node's default
    senders: frozenset[str]  # the address keys it may send as (its own, and those it was granted)
    password_stamp: str  # a digest of the stored password hash: it changes whenever the password does


@dataclass(frozen=True, slots=True)
class RestrictedSender:
    address: str
    tenant: str
    restricted_at: float
    until: float
    reason: str


# --- mail-flow lookups (unscoped, in the caller's connection) --------------------------------------
def find_submission_account(conn: Connection, key: str) -> SubmissionAccount | None:
    """The mailbox that owns the address `key`, as SMTP AUTH sees it; None when it is not a mailbox."""
    owner = find_address(conn, key)
    if owner is None or owner.kind is not RecipientKind.MAILBOX:
        return None
    password_hash = conn.execute(
        select(recipients.c.password_hash).where(recipients.c.id == owner.recipient_id)
    ).scalar_one()
    tenant = _tenant_settings(conn, owner.tenant_id)
    mailbox = _mailbox_settings(conn, owner.recipient_id)
    identities = select(send_as_grants.c.identity_id).where(
        (send_as_grants.c.grantee_id == owner.recipient_id) & (send_as_grants.c.tenant_id == owner.tenant_id)
    )
    senders = conn.execute(
        select(addresses.c.key).where(
            (addresses.c.recipient_id == owner.recipient_id) | addresses.c.recipient_id.in_(identities)
        )
    ).scalars()
    smtp_auth = mailbox.smtp_auth if mailbox.smtp_auth is not None else tenant.smtp_auth is not False
    return SubmissionAccount(
        mailbox_id=owner.recipient_id,
        tenant_id=owner.tenant_id,
        address=owner.primary_address,
        smtp_auth=smtp_auth,
        max_send_size=_first(mailbox.max_send_size, tenant.max_send_size),
        max_recipients=mailbox.max_recipients,
        senders=frozenset(senders),
        password_stamp=hashlib.sha256((password_hash or "").encode()).hexdigest(),
    )


def find_receive_limit(conn: Connection, mailbox_id: int) -> int | None:
    """The largest message the mailbox may receive (its own, else its tenant's); None: the node's."""
    tenant_id = conn.execute(
        select(recipients.c.tenant_id).where(recipients.c.id == mailbox_id)
    ).scalar_one_or_none()
    if tenant_id is None:
        return None
    own = _mailbox_settings(conn, mailbox_id).max_receive_size
    return _first(own, _tenant_settings(conn, tenant_id).max_receive_size)


def restricted_until(conn: Connection, mailbox_id: int, now: float) -> float | None:
    """When the mailbox's restriction ends; None when it is not restricted (or that time has passed)."""
    until = conn.execute(
        select(restricted_senders.c.until).where(restricted_senders.c.mailbox_id == mailbox_id)
    ).scalar_one_or_none()
    return until if until is not None and until > now else None


def charge_recipients(
    conn: Connection, mailbox_id: int, tenant_id: int, count: int, now: float, daily_limit: int
) -> bool:
    """Count `count` recipients against the mailbox's UTC day, in the caller's (the commit's) transaction.

    False when they would pass `daily_limit`: nothing is counted, and the mailbox is restricted until
    the next UTC day instead (the caller refuses the message with 5.1.90)."""
    day = int(now // DAY)
    where = (sender_counters.c.mailbox_id == mailbox_id) & (sender_counters.c.day == day)
    sent = conn.execute(select(sender_counters.c.recipients).where(where)).scalar_one_or_none()
    if (sent or 0) + count > daily_limit:
        _restrict(conn, mailbox_id, tenant_id, now, DAILY_LIMIT_REASON)
        return False
    if sent is None:
        conn.execute(delete(sender_counters).where(sender_counters.c.mailbox_id == mailbox_id))  # old days
        conn.execute(insert(sender_counters).values(mailbox_id=mailbox_id, day=day, recipients=count))
    else:
        conn.execute(update(sender_counters).where(where).values(recipients=sent + count))
    return True


def charge_spam(conn: Connection, mailbox_id: int, tenant_id: int, now: float, daily_limit: int) -> bool:
    """Count one message of the mailbox refused as outbound spam against its UTC day, in the caller's
    transaction; True when that reached `daily_limit` and the mailbox is now restricted until the
    next UTC day (spec §10.5's default action; an administrator may release it sooner)."""
    day = int(now // DAY)
    where = (sender_counters.c.mailbox_id == mailbox_id) & (sender_counters.c.day == day)
    found = conn.execute(select(sender_counters.c.spam).where(where)).scalar_one_or_none()
    if found is None:
        conn.execute(delete(sender_counters).where(sender_counters.c.mailbox_id == mailbox_id))  # old days
        conn.execute(insert(sender_counters).values(mailbox_id=mailbox_id, day=day, recipients=0, spam=1))
    else:
        conn.execute(update(sender_counters).where(where).values(spam=found + 1))
    if (found or 0) + 1 < daily_limit:
        return False
    _restrict(conn, mailbox_id, tenant_id, now, OUTBOUND_SPAM_REASON)
    return True


def _restrict(conn: Connection, mailbox_id: int, tenant_id: int, now: float, reason: str) -> None:
    """Restrict the mailbox until the next UTC day (an administrator may release it sooner)."""
    conn.execute(delete(restricted_senders).where(restricted_senders.c.mailbox_id == mailbox_id))
    conn.execute(
        insert(restricted_senders).values(
            mailbox_id=mailbox_id,
            tenant_id=tenant_id,
            restricted_at=now,
            until=float((int(now // DAY) + 1) * DAY),
            reason=reason,
        )
    )


def _first(*values: int | None) -> int | None:
    return next((value for value in values if value is not None), None)


def _tenant_settings(conn: Connection, tenant_id: int) -> SendingSettings:
    row = conn.execute(select(tenant_sending).where(tenant_sending.c.tenant_id == tenant_id)).first()
    if row is None:
        return SendingSettings(None, None, None)
    return SendingSettings(row.smtp_auth, row.max_send_size, row.max_receive_size)


def _mailbox_settings(conn: Connection, mailbox_id: int) -> SendingSettings:
    row = conn.execute(select(mailbox_sending).where(mailbox_sending.c.mailbox_id == mailbox_id)).first()
    if row is None:
        return SendingSettings(None, None, None, None)
    return SendingSettings(row.smtp_auth, row.max_send_size, row.max_receive_size, row.max_recipients)


def _check_size(name: str, value: int | None) -> None:
    if value is not None and not 0 <= value <= MAX_MESSAGE_SIZE:
        raise InvalidInputError(
            f"{name} must be from 1 to {MAX_MESSAGE_SIZE} octets (150 MB), or 0 to inherit; got {value}"
        )


class Sending(DirectoryBase):
    """The part of `Directory` that reads and changes the sending settings, grants and restrictions."""

    # --- settings ---------------------------------------------------------------------------------
    def tenant_sending(self, scope: Scope, tenant: str) -> SendingSettings:
        with self._db.read() as conn:
            return _tenant_settings(conn, self._tenant(conn, scope, tenant).id)

    def set_tenant_sending(
        self,
        scope: Scope,
        tenant: str,
        *,
        smtp_auth: bool | None = None,
        max_send_size: int | None = None,
        max_receive_size: int | None = None,
    ) -> SendingSettings:
        """Change a tenant's sending settings; None leaves one as it is, a size of 0 clears it."""
        _check_size("the send size", max_send_size)
        _check_size("the receive size", max_receive_size)
        with self._write() as (conn, changes):
            tenant_id = self._tenant(conn, scope, tenant).id
            old = _tenant_settings(conn, tenant_id)
            new = SendingSettings(
                smtp_auth if smtp_auth is not None else old.smtp_auth,
                _changed(old.max_send_size, max_send_size),
                _changed(old.max_receive_size, max_receive_size),
            )
            conn.execute(delete(tenant_sending).where(tenant_sending.c.tenant_id == tenant_id))
            conn.execute(
                insert(tenant_sending).values(
                    tenant_id=tenant_id,
                    smtp_auth=new.smtp_auth,
                    max_send_size=new.max_send_size,
                    max_receive_size=new.max_receive_size,
                )
            )
            changes.tenants.add(tenant_id)
            return new

    def mailbox_sending(self, scope: Scope, address: str) -> SendingSettings:
        with self._db.read() as conn:
            return _mailbox_settings(conn, self._mailbox(conn, scope, address).recipient_id)

    def set_mailbox_sending(
        self,
        scope: Scope,
        address: str,
        *,
        smtp_auth: Switch | None = None,
        max_send_size: int | None = None,
        max_receive_size: int | None = None,
        max_recipients: int | None = None,
    ) -> SendingSettings:
        """Change a mailbox's sending settings; None leaves one as it is, 0 clears a limit (inherit)."""
        _check_size("the send size", max_send_size)
        _check_size("the receive size", max_receive_size)
        if max_recipients is not None and not 0 <= max_recipients <= MAX_RECIPIENTS_LIMIT:
            raise InvalidInputError(
                f"recipients per message must be from 1 to {MAX_RECIPIENTS_LIMIT}, or 0 for the default; "
                f"got {max_recipients}"
            )
        with self._write() as (conn, changes):
            mailbox_id = self._mailbox(conn, scope, address).recipient_id
            old = _mailbox_settings(conn, mailbox_id)
            switch = {Switch.ON: True, Switch.OFF: False, Switch.INHERIT: None}
            new = SendingSettings(
                switch[smtp_auth] if smtp_auth is not None else old.smtp_auth,
                _changed(old.max_send_size, max_send_size),
                _changed(old.max_receive_size, max_receive_size),
                _changed(old.max_recipients, max_recipients),
            )
            conn.execute(delete(mailbox_sending).where(mailbox_sending.c.mailbox_id == mailbox_id))
            conn.execute(
                insert(mailbox_sending).values(
                    mailbox_id=mailbox_id,
                    smtp_auth=new.smtp_auth,
                    max_send_size=new.max_send_size,
                    max_receive_size=new.max_receive_size,
                    max_recipients=new.max_recipients,
                )
            )
            changes.recipients.add(mailbox_id)
            return new

    # --- send-as ----------------------------------------------------------------------------------
    def grant_send_as(self, scope: Scope, identity: str, grantee: str) -> None:
        """Let the mailbox `grantee` send as `identity` (a mailbox or group of the same tenant)."""
        with self._write() as (conn, _):
            sent_as, mailbox = self._grant_pair(conn, scope, identity, grantee)
            table = send_as_grants
            conn.execute(
                delete(table).where(
                    (table.c.identity_id == sent_as.recipient_id)
                    & (table.c.grantee_id == mailbox.recipient_id)
                )
            )
            conn.execute(
                insert(table).values(
                    identity_id=sent_as.recipient_id,
                    grantee_id=mailbox.recipient_id,
                    tenant_id=sent_as.tenant_id,
                    created_at=self._clock(),
                )
            )

    def revoke_send_as(self, scope: Scope, identity: str, grantee: str) -> None:
        with self._write() as (conn, _):
            sent_as, mailbox = self._grant_pair(conn, scope, identity, grantee)
            table = send_as_grants
            removed = conn.execute(
                delete(table).where(
                    (table.c.identity_id == sent_as.recipient_id)
                    & (table.c.grantee_id == mailbox.recipient_id)
                )
            ).rowcount
            if not removed:
                raise NotFoundError(f"{grantee} has no send-as permission on {identity}")

    def send_as_grantees(self, scope: Scope, identity: str) -> list[str]:
        """The mailboxes that may send as `identity` (their primary addresses)."""
        with self._db.read() as conn:
            owner = self._owner(conn, scope, identity)
            return sorted(
                conn.execute(
                    select(addresses.c.address)
                    .join(send_as_grants, send_as_grants.c.grantee_id == addresses.c.recipient_id)
                    .where((send_as_grants.c.identity_id == owner.recipient_id) & addresses.c.is_primary)
                ).scalars()
            )

    def _grant_pair(
        self, conn: Connection, scope: Scope, identity: str, grantee: str
    ) -> tuple[AddressOwner, AddressOwner]:
        sent_as = self._owner(conn, scope, identity)
        if sent_as.kind is RecipientKind.CONTACT:
            raise InvalidInputError(
                f"{sent_as.primary_address} is a contact; send-as is on mailboxes and groups"
            )
        mailbox = self._mailbox(conn, scope, grantee)
        if mailbox.tenant_id != sent_as.tenant_id:
            raise InvalidInputError(
                f"{grantee} and {identity} are in different tenants; send-as is granted within one tenant"
            )
        return sent_as, mailbox

    # --- restricted senders -----------------------------------------------------------------------
    def restricted_senders(self, scope: Scope, tenant: str | None = None) -> list[RestrictedSender]:
        """The senders restricted now (a restriction past its end is not listed)."""
        with self._db.read() as conn:
            query = (
                select(restricted_senders, addresses.c.address, tenants.c.name.label("tenant"))
                .join(
                    addresses,
                    (addresses.c.recipient_id == restricted_senders.c.mailbox_id) & addresses.c.is_primary,
                )
                .join(tenants, tenants.c.id == restricted_senders.c.tenant_id)
                .where(restricted_senders.c.until > self._clock())
                .order_by(addresses.c.key)
            )
            if tenant is not None:
                query = query.where(restricted_senders.c.tenant_id == self._tenant(conn, scope, tenant).id)
            return [
                RestrictedSender(row.address, row.tenant, row.restricted_at, row.until, row.reason)
                for row in conn.execute(query).all()
                if scope.allows(row.tenant_id)
            ]

    def release_sender(self, scope: Scope, address: str) -> None:
        """Lift a sender's restriction now (its day's count starts again from zero)."""
        with self._write() as (conn, _):
            mailbox_id = self._mailbox(conn, scope, address).recipient_id
            removed = conn.execute(
                delete(restricted_senders).where(
                    (restricted_senders.c.mailbox_id == mailbox_id)
                    & (restricted_senders.c.until > self._clock())
                )
            ).rowcount
            if not removed:
                raise NotFoundError(
                    f"{address} is not restricted; `postroom sender restricted list` shows who is"
                )
            conn.execute(delete(restricted_senders).where(restricted_senders.c.mailbox_id == mailbox_id))
            conn.execute(delete(sender_counters).where(sender_counters.c.mailbox_id == mailbox_id))

    def _mailbox(self, conn: Connection, scope: Scope, address: str) -> AddressOwner:
        owner = self._owner(conn, scope, address)
        if owner.kind is not RecipientKind.MAILBOX:
            raise InvalidInputError(f"{owner.primary_address} is not a mailbox")
        return owner


def _changed(old: int | None, given: int | None) -> int | None:
    """The new value of a limit: unchanged for None, cleared (inherit) for 0."""
    if given is None:
        return old
    return given or None
