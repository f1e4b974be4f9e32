"""What every part of the directory service shares: the store, the clock, scoped lookups, and the
write transaction that tells caching nodes exactly what changed.

Every write runs in `_write()`, which yields the connection and a `DirectoryChanges` the write fills
with what it changed (domain names, address keys, group, tenant and recipient ids). When it recorded anything,
the commit bumps `directory_generation` and logs the changes under the new generation (`directory_changes`),
so a node's cache drops those entries only (see `view.CachedDirectory`). A change too large to list
(more than `CHANGE_LOG_MAX_KEYS`) is logged as "everything". The log keeps the last
`CHANGE_LOG_GENERATIONS` generations; a node further behind drops its whole cache. After such a
commit `on_change` (set by the app) is called, so caching processes hear of it at once instead of at
their next poll; a write made in a caller's transaction (`delete_tenant`) leaves that to the caller.

Scope: every lookup of tenant data here takes the caller's `Scope`, and a row of another tenant is
answered exactly as a row that does not exist (`NotFoundError`), so a tenant can learn nothing
about another tenant's names by probing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

from sqlalchemy import Connection, delete, insert, select, update

from postroom.directory.errors import InvalidInputError, NotFoundError, RefusedError
from postroom.directory.lookups import find_address, find_domain
from postroom.directory.names import domain_name
from postroom.directory.records import AcceptedDomain, AddressOwner, Tenant
from postroom.model import Address, AddressError, normalize_domain
from postroom.model.scope import OperatorScope, Scope
from postroom.storage import Database
from postroom.storage.schema import directory_changes, directory_generation, tenants

CHANGE_LOG_GENERATIONS = 1000  # generations of targeted changes kept for caching nodes
CHANGE_LOG_MAX_KEYS = 1000  # a change touching more entries is logged as "everything"


class ChangeKind:
    DOMAIN = "domain"
    ADDRESS = "address"
    GROUP = "group"
    TENANT = "tenant"  # a tenant-wide setting the caches hold (its postmaster, its default limits)
    RECIPIENT = "recipient"  # a recipient's own setting the caches hold (a mailbox's receive limit)
    CONNECTORS = "connectors"  # a tenant's connectors (key: its id): the inbound table, its outbound list
    EVERYTHING = "all"


@dataclass(slots=True)
class DirectoryChanges:
    """What one write changed, as the caches key it."""

    domains: set[str] = field(default_factory=set)
    addresses: set[str] = field(default_factory=set)
    groups: set[int] = field(default_factory=set)
    tenants: set[int] = field(default_factory=set)
    recipients: set[int] = field(default_factory=set)
    connectors: set[int] = field(default_factory=set)  # tenants whose connectors changed

    def rows(self) -> list[tuple[str, str]]:
        rows = [(ChangeKind.DOMAIN, name) for name in sorted(self.domains)]
        rows += [(ChangeKind.ADDRESS, key) for key in sorted(self.addresses)]
        rows += [(ChangeKind.GROUP, str(group)) for group in sorted(self.groups)]
        rows += [(ChangeKind.TENANT, str(tenant)) for tenant in sorted(self.tenants)]
        rows += [(ChangeKind.RECIPIENT, str(recipient)) for recipient in sorted(self.recipients)]
        rows += [(ChangeKind.CONNECTORS, str(tenant)) for tenant in sorted(self.connectors)]
        return rows if len(rows) <= CHANGE_LOG_MAX_KEYS else [(ChangeKind.EVERYTHING, "")]


class DirectoryBase:
    """The shared state of the directory's parts (see `service.Directory`)."""

    def __init__(
        self,
        database: Database,
        *,
        service_domain: str,
        clock: Callable[[], float] = time.time,
        on_change: Callable[[], None] | None = None,
    ):
        self._db = database
        self.service_domain = normalize_domain(service_domain)
        self._clock = clock
        # Called after a write that moved the generation committed (the app publishes the
        # `directory` notification so every caching process refreshes at once, not at its next poll).
        self.on_change = on_change

    @contextmanager
    def _write(self) -> Iterator[tuple[Connection, DirectoryChanges]]:
        """A write transaction that logs what it changed for caching nodes."""
        with self._db.write() as conn:
            changes = DirectoryChanges()
            yield conn, changes
            logged = log_changes(conn, changes)
        if logged and self.on_change is not None:
            self.on_change()

    # --- scoped lookups ---------------------------------------------------------------------------
    @staticmethod
    def _require_operator(scope: Scope, what: str) -> None:
        if not isinstance(scope, OperatorScope):
            raise RefusedError(f"only the service operator can {what}")

    def _tenant(self, conn: Connection, scope: Scope, name: str) -> Tenant:
        key = name.strip().lower()
        with suppress(AddressError):
            key = normalize_domain(key)  # as `add_tenant` stored it: a Unicode name is kept as its A-label
        row = conn.execute(select(tenants).where(tenants.c.name == key)).first()
        if row is None or not scope.allows(row.id):
            raise NotFoundError(f"no tenant named {name!r}; `postroom tenant list` shows them")
        return Tenant(id=row.id, name=row.name, created_at=row.created_at)

    def _domain(self, conn: Connection, scope: Scope, name: str) -> AcceptedDomain:
        domain = find_domain(conn, domain_name(name))
        if domain is None or not scope.allows(domain.tenant_id):
            raise NotFoundError(f"{name} is not an accepted domain; add it with `postroom domain add`")
        return domain

    def _owner(self, conn: Connection, scope: Scope, address: str) -> AddressOwner:
        owner = find_address(conn, parse_address(address).key)
        if owner is None or not scope.allows(owner.tenant_id):
            raise NotFoundError(f"no recipient has the address {address}")
        return owner


def parse_address(address: str) -> Address:
    try:
        return Address.parse(address.strip())
    except AddressError as error:
        raise InvalidInputError(f"{address!r} is not a valid address: {error}") from None


def log_changes(conn: Connection, changes: DirectoryChanges) -> bool:
    """Bump the generation and log what changed under it; nothing when nothing a cache holds changed.
    True when the generation moved."""
    rows = changes.rows()
    if not rows:
        return False
    conn.execute(update(directory_generation).values(generation=directory_generation.c.generation + 1))
    generation: int = conn.execute(select(directory_generation.c.generation)).scalar_one()
    conn.execute(
        insert(directory_changes),
        [{"generation": generation, "kind": kind, "key": key} for kind, key in rows],
    )
    conn.execute(
        delete(directory_changes).where(directory_changes.c.generation <= generation - CHANGE_LOG_GENERATIONS)
    )
    return True
