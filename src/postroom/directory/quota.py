"""Mailbox quotas: the size limit of a mailbox, in octets (part of the directory service).

`postroom mailbox set ADDRESS --quota OCTETS` stores the limit in `recipients.quota_bytes`; 0 clears
it (no limit: the default). A limit is 1 octet to `MAX_QUOTA` (1 TiB). What the limit does is
decided by the rooms that add mail: the mailstore refuses an IMAP APPEND or COPY that would pass it
(`mailstore.mailbox`), and the MX and submission endpoints refuse mail at RCPT for a mailbox at or over
it (552 5.2.2, `app.mx`), so the sender's own server reports it and Postroom writes no bounce.

The limit travels with the answer to "who owns this address?" (`AddressOwner.quota_bytes`, read by
`lookups.find_address`), which every node caches for RCPT: a mailbox without a quota costs mail flow
nothing more. So a change is logged under every address key of the mailbox, and a caching node
drops exactly those answers.

Scope: another tenant's mailbox is answered as one that does not exist. The limit is a column of the
mailbox's own row, and recipient ids are never reused: a tenant made later with a removed tenant's
names starts with no quota on any of its mailboxes.
"""

from __future__ import annotations

from sqlalchemy import Connection, select, update

from postroom.directory.base import DirectoryBase
from postroom.directory.errors import InvalidInputError
from postroom.directory.lookups import recipient_address_keys
from postroom.directory.records import RecipientKind
from postroom.model.scope import Scope
from postroom.storage.schema import recipients

MAX_QUOTA = 1 << 40  # 1 TiB: the largest mailbox quota an admin may set


class Quotas(DirectoryBase):
    """The part of `Directory` that reads and changes mailbox quotas."""

    def mailbox_quota(self, scope: Scope, address: str) -> int | None:
        """The mailbox's size limit in octets; None: no limit."""
        with self._db.read() as conn:
            return _quota(conn, self._quota_mailbox(conn, scope, address))

    def set_mailbox_quota(self, scope: Scope, address: str, quota: int) -> int | None:
        """Limit the mailbox to `quota` octets (0: no limit); the limit now in force."""
        if not 0 <= quota <= MAX_QUOTA:
            raise InvalidInputError(
                f"a mailbox quota must be from 1 to {MAX_QUOTA} octets (1 TiB), or 0 for no limit; "
                f"got {quota}"
            )
        with self._write() as (conn, changes):
            mailbox_id = self._quota_mailbox(conn, scope, address)
            conn.execute(
                update(recipients).where(recipients.c.id == mailbox_id).values(quota_bytes=quota or None)
            )
            changes.addresses.update(recipient_address_keys(conn, mailbox_id))
            return quota or None

    def _quota_mailbox(self, conn: Connection, scope: Scope, address: str) -> int:
        owner = self._owner(conn, scope, address)
        if owner.kind is not RecipientKind.MAILBOX:
            raise InvalidInputError(
                f"{owner.primary_address} is a {owner.kind.value}; only a mailbox has a quota"
            )
        return owner.recipient_id


def _quota(conn: Connection, mailbox_id: int) -> int | None:
    quota = conn.execute(select(recipients.c.quota_bytes).where(recipients.c.id == mailbox_id)).scalar()
    return None if quota is None else int(quota)
