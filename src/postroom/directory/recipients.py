"""Recipients: mailboxes, distribution groups, mail contacts and their proxy addresses (part of the
directory service).

Rules enforced here, whoever calls: an address is unique across the whole service and may only be
in a verified accepted domain of its recipient's tenant; exactly one address of a recipient is
primary; a new mailbox gets its standard folders from the mailstore in the same transaction.

Group members must be recipients of the group's own tenant (mailboxes, groups, contacts). An
address in the tenant's accepted domains that no recipient has yet is refused unless the caller
allows unknown members (`allow_unknown`, for users of an on-premises server behind an
internal-relay domain, or recipients made later). An address outside the tenant's domains, another
tenant's included, is never a member: make it a mail contact first and add the contact, as
Exchange Online requires members to be recipients, so every external destination of a group is a
named, visible directory object. A group may not contain itself, directly or through nested groups;
the refusal names the path.

Scope: a tenant scope creates recipients only in its own domains and sees, changes and removes its
own recipients only; another tenant's address is reported as not found.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import Connection, delete, insert, select, update

from postroom.directory.base import DirectoryChanges, parse_address
from postroom.directory.credentials import Credentials
from postroom.directory.errors import ConflictError, InvalidInputError, NotFoundError
from postroom.directory.lookups import (
    find_address,
    find_domain,
    group_member_addresses,
    recipient_address_keys,
)
from postroom.directory.records import AcceptedDomain, DomainStatus, Recipient, RecipientKind
from postroom.mailstore import create_mailbox_folders
from postroom.model import Address
from postroom.model.scope import OPERATOR, Scope
from postroom.storage.schema import addresses, group_members, recipients, tenants


class Recipients(Credentials):
    def add_mailbox(
        self,
        scope: Scope,
        address: str,
        *,
        display_name: str = "",
        password: str | None = None,
        aliases: Sequence[str] = (),
    ) -> Recipient:
        """Create a mailbox with its primary address, proxy addresses and standard folders."""
        with self._write() as (conn, changes):
            recipient_id = self._create_recipient(
                conn,
                scope,
                changes,
                RecipientKind.MAILBOX,
                address,
                aliases,
                display_name=display_name,
                password=password,
            )
            create_mailbox_folders(conn, recipient_id, self._clock())
            return self._recipient(conn, recipient_id)

    def add_group(
        self,
        scope: Scope,
        address: str,
        *,
        members: Iterable[str],
        display_name: str = "",
        aliases: Sequence[str] = (),
        allow_unknown: bool = False,
    ) -> Recipient:
        """Create a distribution group; members are recipients of the tenant (see the module rules)."""
        with self._write() as (conn, changes):
            recipient_id = self._create_recipient(
                conn, scope, changes, RecipientKind.GROUP, address, aliases, display_name=display_name
            )
            self._add_members(conn, changes, recipient_id, members, allow_unknown=allow_unknown)
            return self._recipient(conn, recipient_id)

    def add_contact(
        self,
        scope: Scope,
        address: str,
        *,
        external_address: str,
        display_name: str = "",
        aliases: Sequence[str] = (),
    ) -> Recipient:
        """Create a mail contact: an address in the tenant's domain that stands for an external one."""
        external = parse_address(external_address)
        with self._write() as (conn, changes):
            recipient_id = self._create_recipient(
                conn,
                scope,
                changes,
                RecipientKind.CONTACT,
                address,
                aliases,
                display_name=display_name,
                external_address=str(external),
            )
            return self._recipient(conn, recipient_id)

    def set_recipient(
        self,
        scope: Scope,
        address: str,
        *,
        display_name: str | None = None,
        password: str | None = None,
        add_aliases: Sequence[str] = (),
        remove_aliases: Sequence[str] = (),
        primary: str | None = None,
        add_members: Sequence[str] = (),
        remove_members: Sequence[str] = (),
        allow_unknown: bool = False,
    ) -> Recipient:
        with self._write() as (conn, changes):
            owner = self._owner(conn, scope, address)
            changes.addresses.update(recipient_address_keys(conn, owner.recipient_id))
            if display_name is not None:
                conn.execute(
                    update(recipients)
                    .where(recipients.c.id == owner.recipient_id)
                    .values(display_name=display_name)
                )
            if password is not None:
                if owner.kind is not RecipientKind.MAILBOX:
                    raise InvalidInputError("only mailboxes have passwords")
                conn.execute(
                    update(recipients)
                    .where(recipients.c.id == owner.recipient_id)
                    .values(password_hash=self._hash(password, owner.primary_address))
                )
            for alias in add_aliases:
                self._add_address(conn, changes, owner.recipient_id, owner.tenant_id, alias, primary=False)
            for alias in remove_aliases:
                key = parse_address(alias).key
                if key == parse_address(owner.primary_address).key:
                    raise ConflictError(f"{alias} is the primary address; make another address primary first")
                removed = conn.execute(
                    delete(addresses).where(
                        (addresses.c.key == key) & (addresses.c.recipient_id == owner.recipient_id)
                    )
                ).rowcount
                if not removed:
                    raise NotFoundError(f"{alias} is not an address of {owner.primary_address}")
            if primary is not None:
                key = parse_address(primary).key
                if not conn.execute(
                    select(addresses.c.id).where(
                        (addresses.c.key == key) & (addresses.c.recipient_id == owner.recipient_id)
                    )
                ).first():
                    self._add_address(
                        conn, changes, owner.recipient_id, owner.tenant_id, primary, primary=False
                    )
                conn.execute(
                    update(addresses)
                    .where(addresses.c.recipient_id == owner.recipient_id)
                    .values(is_primary=False)
                )
                conn.execute(update(addresses).where(addresses.c.key == key).values(is_primary=True))
            if add_members or remove_members:
                if owner.kind is not RecipientKind.GROUP:
                    raise InvalidInputError(f"{owner.primary_address} is not a group")
                self._add_members(conn, changes, owner.recipient_id, add_members, allow_unknown=allow_unknown)
                for member in remove_members:
                    conn.execute(
                        delete(group_members).where(
                            (group_members.c.group_id == owner.recipient_id)
                            & (group_members.c.member_key == parse_address(member).key)
                        )
                    )
                changes.groups.add(owner.recipient_id)
            return self._recipient(conn, owner.recipient_id)

    def remove_recipient(self, scope: Scope, address: str) -> None:
        """Remove a recipient (a mailbox's folders and messages go with it, by cascade)."""
        with self._write() as (conn, changes):
            owner = self._owner(conn, scope, address)
            changes.addresses.update(recipient_address_keys(conn, owner.recipient_id))
            changes.groups.add(owner.recipient_id)
            conn.execute(delete(recipients).where(recipients.c.id == owner.recipient_id))

    def get_recipient(self, scope: Scope, address: str) -> Recipient:
        with self._db.read() as conn:
            return self._recipient(conn, self._owner(conn, scope, address).recipient_id)

    def list_recipients(
        self,
        scope: Scope,
        *,
        tenant: str | None = None,
        kind: RecipientKind | None = None,
        domain: str | None = None,
    ) -> list[Recipient]:
        with self._db.read() as conn:
            query = select(recipients.c.id, recipients.c.tenant_id).join(
                addresses, (addresses.c.recipient_id == recipients.c.id) & addresses.c.is_primary
            )
            if tenant is not None:
                query = query.where(recipients.c.tenant_id == self._tenant(conn, scope, tenant).id)
            if kind is not None:
                query = query.where(recipients.c.kind == kind.value)
            if domain is not None:
                query = query.where(addresses.c.domain_id == self._domain(conn, scope, domain).id)
            rows = conn.execute(query.order_by(addresses.c.key)).all()
            return [self._recipient(conn, row.id) for row in rows if scope.allows(row.tenant_id)]

    # --- internals --------------------------------------------------------------------------------
    def _create_recipient(
        self,
        conn: Connection,
        scope: Scope,
        changes: DirectoryChanges,
        kind: RecipientKind,
        address: str,
        aliases: Sequence[str],
        *,
        display_name: str = "",
        password: str | None = None,
        external_address: str | None = None,
    ) -> int:
        primary = parse_address(address)
        domain = self._accepting_domain(conn, scope, primary)
        recipient_id: int = conn.execute(
            insert(recipients).values(
                tenant_id=domain.tenant_id,
                kind=kind.value,
                display_name=display_name,
                external_address=external_address,
                password_hash=self._hash(password, address) if password is not None else None,
                created_at=self._clock(),
            )
        ).inserted_primary_key[0]  # type: ignore[index]
        self._add_address(conn, changes, recipient_id, domain.tenant_id, address, primary=True)
        for alias in aliases:
            self._add_address(conn, changes, recipient_id, domain.tenant_id, alias, primary=False)
        return recipient_id

    def _accepting_domain(self, conn: Connection, scope: Scope, address: Address) -> AcceptedDomain:
        domain = find_domain(conn, address.domain)
        if domain is None or not scope.allows(domain.tenant_id):
            raise InvalidInputError(
                f"{address.domain} is not an accepted domain; add it with "
                f"`postroom domain add {address.domain} --tenant NAME` and verify it"
            )
        if domain.status is not DomainStatus.VERIFIED:
            raise InvalidInputError(
                f"{address.domain} is not verified yet; publish its TXT record and run "
                f"`postroom domain verify {address.domain}` (see `postroom domain show {address.domain}`)"
            )
        return domain

    def _add_address(
        self,
        conn: Connection,
        changes: DirectoryChanges,
        recipient_id: int,
        tenant_id: int,
        text: str,
        *,
        primary: bool,
    ) -> None:
        address = parse_address(text)
        domain = self._accepting_domain(conn, OPERATOR, address)
        if domain.tenant_id != tenant_id:
            raise InvalidInputError(
                f"{address.domain} belongs to another tenant; an address must be in its own tenant's domains"
            )
        if find_address(conn, address.key) is not None:
            raise ConflictError(f"the address {address} is already in use")
        conn.execute(
            insert(addresses).values(
                key=address.key,
                address=str(address),
                recipient_id=recipient_id,
                domain_id=domain.id,
                is_primary=primary,
            )
        )
        changes.addresses.add(address.key)

    def _add_members(
        self,
        conn: Connection,
        changes: DirectoryChanges,
        group_id: int,
        members: Iterable[str],
        *,
        allow_unknown: bool,
    ) -> None:
        tenant_id: int = conn.execute(
            select(recipients.c.tenant_id).where(recipients.c.id == group_id)
        ).scalar_one()
        for member in members:
            address = parse_address(member)
            self._check_member(conn, tenant_id, address, allow_unknown=allow_unknown)
            exists = conn.execute(
                select(group_members.c.group_id).where(
                    (group_members.c.group_id == group_id) & (group_members.c.member_key == address.key)
                )
            ).first()
            if not exists:
                conn.execute(
                    insert(group_members).values(
                        group_id=group_id, member_key=address.key, member_address=str(address)
                    )
                )
        changes.groups.add(group_id)
        cycle = _group_cycle(conn, group_id)
        if cycle:
            raise ConflictError(
                f"a group cannot contain itself: {' -> '.join(cycle)}; remove one of these memberships"
            )

    @staticmethod
    def _check_member(conn: Connection, tenant_id: int, address: Address, *, allow_unknown: bool) -> None:
        owner = find_address(conn, address.key)
        if owner is not None and owner.tenant_id == tenant_id:
            return
        domain = find_domain(conn, address.domain)
        if owner is None and domain is not None and domain.tenant_id == tenant_id:
            if allow_unknown:
                return
            raise InvalidInputError(
                f"no recipient has the address {address}; create it first, or allow members not in "
                "the directory (--allow-unknown) for an on-premises or later recipient"
            )
        raise InvalidInputError(
            f"{address} is outside this tenant's accepted domains; a group's members are the tenant's "
            f"recipients: create a mail contact for it (`postroom contact add NAME@yourdomain "
            f"--external {address}`) and add the contact"
        )

    def _recipient(self, conn: Connection, recipient_id: int) -> Recipient:
        row = conn.execute(
            select(recipients, tenants.c.name.label("tenant"))
            .join(tenants, tenants.c.id == recipients.c.tenant_id)
            .where(recipients.c.id == recipient_id)
        ).one()
        owned = conn.execute(
            select(addresses.c.address, addresses.c.is_primary)
            .where(addresses.c.recipient_id == recipient_id)
            .order_by(addresses.c.key)
        ).all()
        kind = RecipientKind(row.kind)
        return Recipient(
            id=row.id,
            tenant_id=row.tenant_id,
            tenant=row.tenant,
            kind=kind,
            display_name=row.display_name,
            primary_address=next(a for a, is_primary in owned if is_primary),
            aliases=tuple(a for a, is_primary in owned if not is_primary),
            external_address=row.external_address,
            members=tuple(group_member_addresses(conn, recipient_id)) if kind is RecipientKind.GROUP else (),
            has_password=bool(row.password_hash),
            created_at=row.created_at,
        )


def _group_cycle(conn: Connection, group_id: int) -> list[str] | None:
    """The addresses on a path from the group back to itself through nested groups, if there is one."""
    start = find_primary(conn, group_id)
    seen: set[int] = set()

    def visit(current: int, path: list[str]) -> list[str] | None:
        for member in group_member_addresses(conn, current):
            owner = find_address(conn, parse_address(member).key)
            if owner is None or owner.kind is not RecipientKind.GROUP:
                continue
            if owner.recipient_id == group_id:
                return [*path, member]
            if owner.recipient_id not in seen:
                seen.add(owner.recipient_id)
                found = visit(owner.recipient_id, [*path, member])
                if found:
                    return found
        return None

    return visit(group_id, [start])


def find_primary(conn: Connection, recipient_id: int) -> str:
    return str(
        conn.execute(
            select(addresses.c.address).where(
                (addresses.c.recipient_id == recipient_id) & addresses.c.is_primary
            )
        ).scalar_one()
    )
