"""Mailbox forwarding: where a mailbox's mail goes, and whether the mailbox keeps a copy (part of the
directory service).

`postroom mailbox set ADDRESS --forward-to TARGET [--keep-copy]` stores one forwarding per mailbox
(`--no-forward` removes it). The target may be any syntactically valid address: a recipient of the
same tenant, another tenant's (a remote organization) or an external one. Whether an external
forward may leave is decided while mail flows, by the tenant's automatic forwarding policy and the
remote domain of the target (`routing.categorize`), not here: the policy can change after the
forwarding was set, and an admin sees the refusal as a 5.7.520 NDR to the mailbox owner.

Rules: only a mailbox forwards (a group's members and a contact's external address already say where
its mail goes); a mailbox cannot forward to one of its own addresses. The forwarding row goes with
its mailbox (cascade), so a removed tenant's forwarding can never act for a new tenant that reuses its
names (recipient ids are never reused).

Scope: another tenant's mailbox is answered as one that does not exist. A change is logged under the
mailbox's recipient id (the change kind the caches also use for groups), so a caching node drops it.
`find_forwarding(conn, recipient_id)` is the unscoped mail-flow lookup the views use.
"""

from __future__ import annotations

from sqlalchemy import Connection, delete, insert, select

from postroom.directory.base import DirectoryBase, parse_address
from postroom.directory.errors import InvalidInputError
from postroom.directory.lookups import recipient_address_keys
from postroom.directory.records import MailboxForwarding, RecipientKind
from postroom.model.scope import Scope
from postroom.storage.schema import mailbox_forwarding


def find_forwarding(conn: Connection, recipient_id: int) -> MailboxForwarding | None:
    row = conn.execute(
        select(mailbox_forwarding.c.forward_to, mailbox_forwarding.c.keep_copy).where(
            mailbox_forwarding.c.recipient_id == recipient_id
        )
    ).first()
    return MailboxForwarding(row.forward_to, bool(row.keep_copy)) if row else None


class Forwarding(DirectoryBase):
    """The part of `Directory` that reads and changes mailbox forwarding."""

    def forwarding(self, scope: Scope, address: str) -> MailboxForwarding | None:
        with self._db.read() as conn:
            return find_forwarding(conn, self._forwarding_mailbox(conn, scope, address))

    def set_forwarding(
        self, scope: Scope, address: str, forward_to: str | None, *, keep_copy: bool = False
    ) -> MailboxForwarding | None:
        """Forward the mailbox's mail to `forward_to` (keeping a copy with `keep_copy`); None: stop."""
        target = parse_address(forward_to) if forward_to else None
        with self._write() as (conn, changes):
            recipient_id = self._forwarding_mailbox(conn, scope, address)
            if target is not None and target.key in recipient_address_keys(conn, recipient_id):
                raise InvalidInputError(f"{address} cannot forward to its own address {target}")
            conn.execute(delete(mailbox_forwarding).where(mailbox_forwarding.c.recipient_id == recipient_id))
            changes.groups.add(recipient_id)
            if target is None:
                return None
            conn.execute(
                insert(mailbox_forwarding).values(
                    recipient_id=recipient_id, forward_to=str(target), keep_copy=keep_copy
                )
            )
            return MailboxForwarding(str(target), keep_copy)

    def _forwarding_mailbox(self, conn: Connection, scope: Scope, address: str) -> int:
        owner = self._owner(conn, scope, address)
        if owner.kind is not RecipientKind.MAILBOX:
            raise InvalidInputError(
                f"{owner.primary_address} is a {owner.kind.value}; only a mailbox forwards"
            )
        return owner.recipient_id
