"""The directory service: tenants, accepted domains, recipients, proxy addresses, groups.

Every change is one transaction, and every rule an IT pro relies on is enforced here, not in the
CLI or the API: a domain belongs to one tenant; an address is unique across the whole service and
may only be in a verified accepted domain of its recipient's tenant; exactly one address of a
recipient is primary; passwords are stored as Argon2id hashes only.

Lookups used while mail flows (`find_domain`, `find_address`, `group_member_addresses`) take the
caller's connection so they can run inside the caller's transaction (RCPT resolution, expansion in
the commit job).

Errors: `DirectoryError` and its subclasses carry a sentence for the user that says what is wrong
and what to do; nothing is half-written when one is raised.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection, delete, func, insert, select, update

from postroom.directory.dkim import DKIM_SELECTORS, DkimKey, generate_key_pair
from postroom.directory.domain_key import derive_domain_key
from postroom.directory.records import (
    AcceptedDomain,
    AddressOwner,
    DomainEvent,
    DomainStatus,
    DomainType,
    Recipient,
    RecipientKind,
    Tenant,
)
from postroom.model import Address, AddressError, normalize_domain
from postroom.storage import Database
from postroom.storage.schema import (
    addresses,
    directory_generation,
    dkim_keys,
    domain_history,
    domains,
    folders,
    group_members,
    recipients,
    tenants,
)

MAILBOX_FOLDERS = ("Inbox", "Sent", "Drafts", "Junk", "Trash", "Archive")
TENANT_NAME_MAX = 63


class DirectoryError(Exception):
    """A directory request that cannot be done; the message says why and what to do."""


class NotFoundError(DirectoryError):
    pass


class ConflictError(DirectoryError):
    pass


class InvalidInputError(DirectoryError):
    pass


def _domain_from_row(row: object) -> AcceptedDomain:
    r = row._mapping  # type: ignore[attr-defined]
    return AcceptedDomain(
        id=r["id"],
        tenant_id=r["tenant_id"],
        tenant=r["tenant"],
        name=r["name"],
        type=DomainType(r["type"]),
        status=DomainStatus(r["status"]),
        is_default=bool(r["is_default"]),
        verification_token=r["verification_token"],
        domain_key=r["domain_key"],
        created_at=r["created_at"],
        verified_at=r["verified_at"],
    )


_DOMAIN_COLUMNS = (*domains.c, tenants.c.name.label("tenant"))


def find_domain(conn: Connection, name: str) -> AcceptedDomain | None:
    """The accepted domain with this ASCII name, verified or not."""
    row = conn.execute(
        select(*_DOMAIN_COLUMNS)
        .join(tenants, tenants.c.id == domains.c.tenant_id)
        .where(domains.c.name == name)
    ).first()
    return _domain_from_row(row) if row else None


def find_address(conn: Connection, key: str) -> AddressOwner | None:
    """The recipient that owns the address `key` (casefolded local @ ASCII domain)."""
    owner = addresses.alias("owner")
    primary = addresses.alias("primary")
    row = conn.execute(
        select(
            recipients.c.id,
            recipients.c.tenant_id,
            recipients.c.kind,
            primary.c.address,
            recipients.c.external_address,
        )
        .select_from(owner)
        .join(recipients, recipients.c.id == owner.c.recipient_id)
        .join(primary, (primary.c.recipient_id == recipients.c.id) & primary.c.is_primary)
        .where(owner.c.key == key)
    ).first()
    if row is None:
        return None
    return AddressOwner(
        recipient_id=row[0],
        tenant_id=row[1],
        kind=RecipientKind(row[2]),
        primary_address=row[3],
        external_address=row[4],
    )


def group_member_addresses(conn: Connection, group_id: int) -> list[str]:
    return list(
        conn.execute(
            select(group_members.c.member_address)
            .where(group_members.c.group_id == group_id)
            .order_by(group_members.c.member_key)
        ).scalars()
    )


class Directory:
    """Organization configuration as data, for the CLI, the admin API and the app."""

    def __init__(
        self,
        database: Database,
        *,
        service_domain: str,
        clock: Callable[[], float] = time.time,
        password_hasher: PasswordHasher | None = None,
    ) -> None:
        self._db = database
        self.service_domain = normalize_domain(service_domain)
        self._clock = clock
        self._hasher = password_hasher or PasswordHasher()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A write transaction that tells caching nodes the directory changed."""
        with self._db.write() as conn:
            yield conn
            bump = directory_generation.c.generation + 1
            conn.execute(update(directory_generation).values(generation=bump))

    # --- tenants ----------------------------------------------------------------------------------
    def add_tenant(self, name: str) -> Tenant:
        """Create a tenant with its default domain `<name>.<service domain>`, verified."""
        name = name.strip().lower()
        try:
            label = normalize_domain(name)
        except AddressError:
            label = ""
        if not label or "." in label or len(label) > TENANT_NAME_MAX:
            raise InvalidInputError(
                f"{name!r} is not a valid tenant name: use letters, digits and hyphens "
                f"(at most {TENANT_NAME_MAX}), it becomes the default domain {name}.{self.service_domain}"
            )
        now = self._clock()
        with self._write() as conn:
            if conn.execute(select(tenants.c.id).where(tenants.c.name == label)).first():
                raise ConflictError(f"tenant {label!r} already exists")
            default_domain = f"{label}.{self.service_domain}"
            if find_domain(conn, default_domain):
                raise ConflictError(f"the domain {default_domain} is already an accepted domain")
            created = conn.execute(insert(tenants).values(name=label, created_at=now))
            tenant_id: int = created.inserted_primary_key[0]  # type: ignore[index]
            self._insert_domain(
                conn,
                tenant_id,
                default_domain,
                DomainType.AUTHORITATIVE,
                verified=True,
                is_default=True,
                why="default domain of the tenant",
            )
        return Tenant(id=tenant_id, name=label, created_at=now)

    def list_tenants(self) -> list[Tenant]:
        with self._db.read() as conn:
            rows = conn.execute(select(tenants).order_by(tenants.c.name)).all()
        return [Tenant(id=r.id, name=r.name, created_at=r.created_at) for r in rows]

    def get_tenant(self, name: str) -> Tenant:
        with self._db.read() as conn:
            return self._tenant(conn, name)

    def remove_tenant(self, name: str) -> None:
        """Remove a tenant with all its domains and recipients (their stored mail goes too)."""
        with self._write() as conn:
            tenant = self._tenant(conn, name)
            conn.execute(delete(tenants).where(tenants.c.id == tenant.id))

    def _tenant(self, conn: Connection, name: str) -> Tenant:
        key = name.strip().lower()
        with suppress(AddressError):
            key = normalize_domain(key)  # as `add_tenant` stored it: a Unicode name is kept as its A-label
        row = conn.execute(select(tenants).where(tenants.c.name == key)).first()
        if row is None:
            raise NotFoundError(f"no tenant named {name!r}; `postroom tenant list` shows them")
        return Tenant(id=row.id, name=row.name, created_at=row.created_at)

    # --- accepted domains -------------------------------------------------------------------------
    def add_domain(
        self,
        name: str,
        tenant: str,
        domain_type: DomainType = DomainType.AUTHORITATIVE,
        *,
        verified: bool = False,
    ) -> AcceptedDomain:
        """Add an accepted domain, pending until its ownership is verified (or `verified`)."""
        ascii_name = self._domain_name(name)
        if ascii_name == self.service_domain or ascii_name.endswith("." + self.service_domain):
            raise InvalidInputError(
                f"{ascii_name} is inside the service domain {self.service_domain}; "
                "tenants get their default domain there from `postroom tenant add`"
            )
        with self._write() as conn:
            owner = self._tenant(conn, tenant)
            existing = find_domain(conn, ascii_name)
            if existing:
                raise ConflictError(
                    f"{ascii_name} is already an accepted domain of tenant {existing.tenant!r}"
                )
            why = (
                "added as verified by the service administrator"
                if verified
                else "added, pending verification"
            )
            self._insert_domain(
                conn, owner.id, ascii_name, domain_type, verified=verified, is_default=False, why=why
            )
            domain = find_domain(conn, ascii_name)
        assert domain is not None
        return domain

    def _insert_domain(
        self,
        conn: Connection,
        tenant_id: int,
        name: str,
        domain_type: DomainType,
        *,
        verified: bool,
        is_default: bool,
        why: str,
    ) -> int:
        now = self._clock()

        def is_taken(key: str) -> bool:
            return conn.execute(select(domains.c.id).where(domains.c.domain_key == key)).first() is not None

        domain_id: int = conn.execute(
            insert(domains).values(
                tenant_id=tenant_id,
                name=name,
                type=domain_type.value,
                status=(DomainStatus.VERIFIED if verified else DomainStatus.PENDING).value,
                is_default=is_default,
                verification_token=secrets.token_hex(12),
                domain_key=derive_domain_key(name, is_taken),
                created_at=now,
                verified_at=now if verified else None,
            )
        ).inserted_primary_key[0]  # type: ignore[index]
        conn.execute(insert(domain_history).values(domain_id=domain_id, at=now, event="added", detail=why))
        return domain_id

    def list_domains(self, tenant: str | None = None) -> list[AcceptedDomain]:
        with self._db.read() as conn:
            query = select(*_DOMAIN_COLUMNS).join(tenants, tenants.c.id == domains.c.tenant_id)
            if tenant is not None:
                query = query.where(domains.c.tenant_id == self._tenant(conn, tenant).id)
            rows = conn.execute(query.order_by(tenants.c.name, domains.c.name)).all()
        return [_domain_from_row(r) for r in rows]

    def get_domain(self, name: str) -> AcceptedDomain:
        with self._db.read() as conn:
            return self._domain(conn, name)

    def _domain(self, conn: Connection, name: str) -> AcceptedDomain:
        domain = find_domain(conn, self._domain_name(name))
        if domain is None:
            raise NotFoundError(f"{name} is not an accepted domain; add it with `postroom domain add`")
        return domain

    def domain_history(self, name: str) -> list[DomainEvent]:
        with self._db.read() as conn:
            domain = self._domain(conn, name)
            rows = conn.execute(
                select(domain_history)
                .where(domain_history.c.domain_id == domain.id)
                .order_by(domain_history.c.at, domain_history.c.id)
            ).all()
        return [DomainEvent(at=r.at, event=r.event, detail=r.detail) for r in rows]

    def mark_verified(self, name: str, how: str) -> AcceptedDomain:
        with self._write() as conn:
            domain = self._domain(conn, name)
            if domain.status is not DomainStatus.VERIFIED:
                now = self._clock()
                conn.execute(
                    update(domains)
                    .where(domains.c.id == domain.id)
                    .values(status=DomainStatus.VERIFIED.value, verified_at=now)
                )
                conn.execute(
                    insert(domain_history).values(domain_id=domain.id, at=now, event="verified", detail=how)
                )
            verified = find_domain(conn, domain.name)
        assert verified is not None
        return verified

    def record_domain_event(self, name: str, event: str, detail: str) -> None:
        with self._write() as conn:
            domain = self._domain(conn, name)
            conn.execute(
                insert(domain_history).values(
                    domain_id=domain.id, at=self._clock(), event=event, detail=detail
                )
            )

    def remove_domain(self, name: str) -> None:
        """Remove an accepted domain that no address uses any more."""
        with self._write() as conn:
            domain = self._domain(conn, name)
            if domain.is_default:
                raise ConflictError(
                    f"{domain.name} is the default domain of tenant {domain.tenant!r}; remove the tenant"
                )
            used = conn.execute(select(func.count()).where(addresses.c.domain_id == domain.id)).scalar_one()
            if used:
                raise ConflictError(
                    f"{used} address(es) still use {domain.name}; remove or change them first "
                    f"(`postroom mailbox list --domain {domain.name}`)"
                )
            conn.execute(delete(domains).where(domains.c.id == domain.id))

    # --- DKIM keys --------------------------------------------------------------------------------
    def dkim_keys(self, name: str) -> tuple[DkimKey, ...]:
        """The domain's DKIM selectors, in `DKIM_SELECTORS` order; made on first use (the first active)."""
        return self._made_dkim_keys(self.get_domain(name))

    def _made_dkim_keys(self, domain: AcceptedDomain) -> tuple[DkimKey, ...]:
        keys = self._dkim_keys(domain)
        if len(keys) == len(DKIM_SELECTORS):
            return keys
        made = {s: generate_key_pair() for s in DKIM_SELECTORS if s not in {k.selector for k in keys}}
        with self._write() as conn:
            present = {
                row.selector
                for row in conn.execute(
                    select(dkim_keys.c.selector).where(dkim_keys.c.domain_id == domain.id)
                ).all()
            }
            for selector, pair in made.items():
                if selector in present:  # another process made it meanwhile: keep theirs
                    continue
                conn.execute(
                    insert(dkim_keys).values(
                        domain_id=domain.id,
                        selector=selector,
                        private_key=pair.private_key_pem,
                        public_key=pair.public_key,
                        active=selector == DKIM_SELECTORS[0] and not present,
                        created_at=self._clock(),
                    )
                )
            if not present:
                conn.execute(
                    insert(domain_history).values(
                        domain_id=domain.id,
                        at=self._clock(),
                        event="dkim-keys-created",
                        detail=f"DKIM keys made for selectors {', '.join(DKIM_SELECTORS)}; "
                        f"{DKIM_SELECTORS[0]} signs",
                    )
                )
        return self._dkim_keys(domain)

    def rotate_dkim(self, name: str) -> tuple[DkimKey, ...]:
        """Sign with the other selector from now on, and give the retired one a new key pair.

        The new key is what the retired selector must publish before the next rotation; the selector that
        signs now kept its key, which has been in DNS since it was made.
        """
        domain = self.get_domain(name)
        keys = self._made_dkim_keys(domain)
        retired = next(k for k in keys if k.active)
        successor = next(k for k in keys if not k.active)
        pair = generate_key_pair()
        with self._write() as conn:
            rows = dkim_keys.c.domain_id == domain.id
            conn.execute(
                update(dkim_keys).where(rows, dkim_keys.c.selector == successor.selector).values(active=True)
            )
            conn.execute(
                update(dkim_keys)
                .where(rows, dkim_keys.c.selector == retired.selector)
                .values(
                    active=False,
                    private_key=pair.private_key_pem,
                    public_key=pair.public_key,
                    created_at=self._clock(),
                )
            )
            conn.execute(
                insert(domain_history).values(
                    domain_id=domain.id,
                    at=self._clock(),
                    event="dkim-rotated",
                    detail=f"{successor.selector} signs now; {retired.selector} has a new key to publish",
                )
            )
        return self._dkim_keys(domain)

    def dkim_signing_key(self, name: str) -> tuple[str, str]:
        """The active selector of the domain and its private key (PKCS#8 PEM), for the signer."""
        domain = self.get_domain(name)
        active = next(k for k in self._made_dkim_keys(domain) if k.active)
        with self._db.read() as conn:
            pem: str = conn.execute(
                select(dkim_keys.c.private_key).where(
                    dkim_keys.c.domain_id == domain.id, dkim_keys.c.selector == active.selector
                )
            ).scalar_one()
        return active.selector, pem

    def _dkim_keys(self, domain: AcceptedDomain) -> tuple[DkimKey, ...]:
        with self._db.read() as conn:
            rows = conn.execute(
                select(
                    dkim_keys.c.selector, dkim_keys.c.public_key, dkim_keys.c.active, dkim_keys.c.created_at
                ).where(dkim_keys.c.domain_id == domain.id)
            ).all()
        order = {selector: index for index, selector in enumerate(DKIM_SELECTORS)}
        return tuple(
            DkimKey(domain.name, row.selector, row.public_key, row.active, row.created_at)
            for row in sorted(rows, key=lambda row: order.get(row.selector, len(order)))
        )

    @staticmethod
    def _domain_name(name: str) -> str:
        try:
            return normalize_domain(name)
        except AddressError as error:
            raise InvalidInputError(f"{name!r} is not a valid domain name: {error}") from None

    # --- recipients -------------------------------------------------------------------------------
    def add_mailbox(
        self,
        address: str,
        *,
        display_name: str = "",
        password: str | None = None,
        aliases: Sequence[str] = (),
    ) -> Recipient:
        """Create a mailbox with its primary address, proxy addresses and standard folders."""
        with self._write() as conn:
            recipient_id = self._create_recipient(
                conn, RecipientKind.MAILBOX, address, aliases, display_name=display_name, password=password
            )
            now = self._clock()
            for index, folder in enumerate(MAILBOX_FOLDERS):
                conn.execute(
                    insert(folders).values(
                        mailbox_id=recipient_id,
                        name=folder,
                        uidvalidity=int(now) + index,
                        uidnext=1,
                    )
                )
            return self._recipient(conn, recipient_id)

    def add_group(
        self, address: str, *, members: Iterable[str], display_name: str = "", aliases: Sequence[str] = ()
    ) -> Recipient:
        """Create a distribution group; members are any addresses (mailboxes, groups, external)."""
        with self._write() as conn:
            recipient_id = self._create_recipient(
                conn, RecipientKind.GROUP, address, aliases, display_name=display_name
            )
            self._add_members(conn, recipient_id, members)
            return self._recipient(conn, recipient_id)

    def add_contact(
        self, address: str, *, external_address: str, display_name: str = "", aliases: Sequence[str] = ()
    ) -> Recipient:
        """Create a mail contact: an address in the tenant's domain that stands for an external one."""
        external = self._parse(external_address)
        with self._write() as conn:
            recipient_id = self._create_recipient(
                conn,
                RecipientKind.CONTACT,
                address,
                aliases,
                display_name=display_name,
                external_address=str(external),
            )
            return self._recipient(conn, recipient_id)

    def set_recipient(
        self,
        address: str,
        *,
        display_name: str | None = None,
        password: str | None = None,
        add_aliases: Sequence[str] = (),
        remove_aliases: Sequence[str] = (),
        primary: str | None = None,
        add_members: Sequence[str] = (),
        remove_members: Sequence[str] = (),
    ) -> Recipient:
        with self._write() as conn:
            owner = self._owner(conn, address)
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
                    .values(password_hash=self._hash(password))
                )
            for alias in add_aliases:
                self._add_address(conn, owner.recipient_id, owner.tenant_id, alias, primary=False)
            for alias in remove_aliases:
                key = self._parse(alias).key
                if key == self._parse(owner.primary_address).key:
                    raise ConflictError(f"{alias} is the primary address; make another address primary first")
                removed = conn.execute(
                    delete(addresses).where(
                        (addresses.c.key == key) & (addresses.c.recipient_id == owner.recipient_id)
                    )
                ).rowcount
                if not removed:
                    raise NotFoundError(f"{alias} is not an address of {owner.primary_address}")
            if primary is not None:
                key = self._parse(primary).key
                if not conn.execute(
                    select(addresses.c.id).where(
                        (addresses.c.key == key) & (addresses.c.recipient_id == owner.recipient_id)
                    )
                ).first():
                    self._add_address(conn, owner.recipient_id, owner.tenant_id, primary, primary=False)
                conn.execute(
                    update(addresses)
                    .where(addresses.c.recipient_id == owner.recipient_id)
                    .values(is_primary=False)
                )
                conn.execute(update(addresses).where(addresses.c.key == key).values(is_primary=True))
            if add_members or remove_members:
                if owner.kind is not RecipientKind.GROUP:
                    raise InvalidInputError(f"{owner.primary_address} is not a group")
                self._add_members(conn, owner.recipient_id, add_members)
                for member in remove_members:
                    conn.execute(
                        delete(group_members).where(
                            (group_members.c.group_id == owner.recipient_id)
                            & (group_members.c.member_key == self._parse(member).key)
                        )
                    )
            return self._recipient(conn, owner.recipient_id)

    def remove_recipient(self, address: str) -> None:
        with self._write() as conn:
            owner = self._owner(conn, address)
            conn.execute(delete(recipients).where(recipients.c.id == owner.recipient_id))

    def get_recipient(self, address: str) -> Recipient:
        with self._db.read() as conn:
            return self._recipient(conn, self._owner(conn, address).recipient_id)

    def list_recipients(
        self, *, tenant: str | None = None, kind: RecipientKind | None = None, domain: str | None = None
    ) -> list[Recipient]:
        with self._db.read() as conn:
            query = select(recipients.c.id).join(
                addresses, (addresses.c.recipient_id == recipients.c.id) & addresses.c.is_primary
            )
            if tenant is not None:
                query = query.where(recipients.c.tenant_id == self._tenant(conn, tenant).id)
            if kind is not None:
                query = query.where(recipients.c.kind == kind.value)
            if domain is not None:
                query = query.where(addresses.c.domain_id == self._domain(conn, domain).id)
            ids = conn.execute(query.order_by(addresses.c.key)).scalars().all()
            return [self._recipient(conn, recipient_id) for recipient_id in ids]

    def check_password(self, address: str, password: str) -> bool:
        """True when `password` is the mailbox's password (constant-time, Argon2id)."""
        with self._db.read() as conn:
            owner = find_address(conn, self._parse(address).key)
            if owner is None:
                return False
            stored = conn.execute(
                select(recipients.c.password_hash).where(recipients.c.id == owner.recipient_id)
            ).scalar_one()
        if not stored:
            return False
        try:
            return self._hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False

    # --- internals --------------------------------------------------------------------------------
    def _hash(self, password: str) -> str:
        if not password:
            raise InvalidInputError("the password is empty")
        return self._hasher.hash(password)

    @staticmethod
    def _parse(address: str) -> Address:
        try:
            return Address.parse(address.strip())
        except AddressError as error:
            raise InvalidInputError(f"{address!r} is not a valid address: {error}") from None

    def _owner(self, conn: Connection, address: str) -> AddressOwner:
        owner = find_address(conn, self._parse(address).key)
        if owner is None:
            raise NotFoundError(f"no recipient has the address {address}")
        return owner

    def _create_recipient(
        self,
        conn: Connection,
        kind: RecipientKind,
        address: str,
        aliases: Sequence[str],
        *,
        display_name: str = "",
        password: str | None = None,
        external_address: str | None = None,
    ) -> int:
        primary = self._parse(address)
        domain = self._accepting_domain(conn, primary)
        recipient_id: int = conn.execute(
            insert(recipients).values(
                tenant_id=domain.tenant_id,
                kind=kind.value,
                display_name=display_name,
                external_address=external_address,
                password_hash=self._hash(password) if password is not None else None,
                created_at=self._clock(),
            )
        ).inserted_primary_key[0]  # type: ignore[index]
        self._add_address(conn, recipient_id, domain.tenant_id, address, primary=True)
        for alias in aliases:
            self._add_address(conn, recipient_id, domain.tenant_id, alias, primary=False)
        return recipient_id

    def _accepting_domain(self, conn: Connection, address: Address) -> AcceptedDomain:
        domain = find_domain(conn, address.domain)
        if domain is None:
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
        self, conn: Connection, recipient_id: int, tenant_id: int, text: str, *, primary: bool
    ) -> None:
        address = self._parse(text)
        domain = self._accepting_domain(conn, address)
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

    def _add_members(self, conn: Connection, group_id: int, members: Iterable[str]) -> None:
        for member in members:
            address = self._parse(member)
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
