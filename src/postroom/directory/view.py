"""Read views of the directory for mail flow: straight from a connection, or cached in the node.

Routing asks three questions for every recipient: which accepted domain is this, who owns this
address, who are this group's members; and two of the organization settings (`organization.py`): who
is this tenant's postmaster, does this group take mail from outside. `DirectoryView` is that narrow
interface. `ConnectionView` answers from the database inside the caller's transaction;
`CachedDirectory` answers from memory and asks the database only on a miss, so the SMTP session
resolves a known recipient without I/O.

Freshness: every directory change bumps `directory_generation` in the same transaction. The cache
drops everything when `refresh()` sees a new generation; the node calls `refresh()` every
`REFRESH_SECONDS`, so a change made by any process (the CLI, another node) is in force within that
time. Negative answers are cached too (a DBEB flood of unknown recipients costs no queries), and
are dropped on the same signal.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol, TypeVar

from sqlalchemy import Connection, select

from postroom.directory.organization import find_postmaster, group_allows_external_senders
from postroom.directory.records import AcceptedDomain, AddressOwner, RecipientKind
from postroom.directory.service import find_address, find_domain, group_member_addresses
from postroom.storage import Database
from postroom.storage.schema import directory_generation

REFRESH_SECONDS = 1.0
MAX_ENTRIES = 200_000


class DirectoryView(Protocol):
    def domain(self, name: str) -> AcceptedDomain | None: ...

    def address(self, key: str) -> AddressOwner | None: ...

    def members(self, group_id: int) -> list[str]: ...

    def postmaster(self, tenant_id: int) -> AddressOwner | None: ...

    def allows_external_senders(self, group_id: int) -> bool: ...


class ConnectionView:
    """The directory as the caller's connection sees it now."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def domain(self, name: str) -> AcceptedDomain | None:
        return find_domain(self._conn, name)

    def address(self, key: str) -> AddressOwner | None:
        return find_address(self._conn, key)

    def members(self, group_id: int) -> list[str]:
        return group_member_addresses(self._conn, group_id)

    def postmaster(self, tenant_id: int) -> AddressOwner | None:
        return find_postmaster(self._conn, tenant_id)

    def allows_external_senders(self, group_id: int) -> bool:
        return group_allows_external_senders(self._conn, group_id)


K = TypeVar("K")
V = TypeVar("V")


class CachedDirectory:
    """A process-wide directory cache, safe to use from the event loop and from worker threads."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self._lock = threading.Lock()
        self._domains: dict[str, AcceptedDomain | None] = {}
        self._addresses: dict[str, AddressOwner | None] = {}
        self._members: dict[int, list[str]] = {}
        self._postmasters: dict[int, AddressOwner | None] = {}
        self._external_senders: dict[int, bool] = {}
        self.generation = -1

    def refresh(self) -> bool:
        """Drop the cache when the directory changed since the last look; True when it did."""
        with self._database.read() as conn:
            generation = conn.execute(select(directory_generation.c.generation)).scalar_one()
        if generation == self.generation:
            return False
        with self._lock:
            self._domains.clear()
            self._addresses.clear()
            self._members.clear()
            self._postmasters.clear()
            self._external_senders.clear()
            self.generation = generation
        return True

    def knows(self, domain: str, key: str) -> bool:
        """True when the RCPT of `key` in `domain` is answered from memory (no I/O needed): the domain,
        the address, and the organization setting it needs (a group's senders, the postmaster)."""
        if domain not in self._domains or key not in self._addresses:
            return False
        owner, accepted = self._addresses[key], self._domains[domain]
        if owner is not None:
            return owner.kind is not RecipientKind.GROUP or owner.recipient_id in self._external_senders
        postmaster = key.startswith("postmaster@")
        return accepted is None or not postmaster or accepted.tenant_id in self._postmasters

    def domain(self, name: str) -> AcceptedDomain | None:
        return self._cached(self._domains, name, find_domain)

    def address(self, key: str) -> AddressOwner | None:
        return self._cached(self._addresses, key, find_address)

    def members(self, group_id: int) -> list[str]:
        return self._cached(self._members, group_id, group_member_addresses)

    def postmaster(self, tenant_id: int) -> AddressOwner | None:
        return self._cached(self._postmasters, tenant_id, find_postmaster)

    def allows_external_senders(self, group_id: int) -> bool:
        return self._cached(self._external_senders, group_id, group_allows_external_senders)

    def _cached(self, table: dict[K, V], key: K, load: Callable[[Connection, K], V]) -> V:
        """The answer from `table`, or loaded from the database and kept if still current."""
        if key in table:
            return table[key]
        generation = self.generation
        with self._database.read() as conn:
            found = load(conn, key)
        with self._lock:
            if generation == self.generation:  # not refreshed meanwhile: the answer is current
                self._bounded(table)[key] = found
        return found

    @staticmethod
    def _bounded(table: dict[K, V]) -> dict[K, V]:
        if len(table) >= MAX_ENTRIES:
            table.clear()
        return table
