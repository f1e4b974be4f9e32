"""Read views of the directory for mail flow: straight from a connection, or cached in the node.

Routing asks three questions for every recipient: which accepted domain is this, who owns this
address, who are this group's members. `DirectoryView` is that narrow interface. `ConnectionView`
answers from the database inside the caller's transaction; `CachedDirectory` answers from memory and
asks the database only on a miss, so the SMTP session resolves a known recipient without I/O.

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

from postroom.directory.records import AcceptedDomain, AddressOwner
from postroom.directory.service import find_address, find_domain, group_member_addresses
from postroom.storage import Database
from postroom.storage.schema import directory_generation

REFRESH_SECONDS = 1.0
MAX_ENTRIES = 200_000


class DirectoryView(Protocol):
    def domain(self, name: str) -> AcceptedDomain | None: ...

    def address(self, key: str) -> AddressOwner | None: ...

    def members(self, group_id: int) -> list[str]: ...


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
            self.generation = generation
        return True

    def knows(self, domain: str, key: str) -> bool:
        """True when `domain` and `key` are both answered from memory (no I/O needed)."""
        return domain in self._domains and key in self._addresses

    def domain(self, name: str) -> AcceptedDomain | None:
        return self._cached(self._domains, name, find_domain)

    def address(self, key: str) -> AddressOwner | None:
        return self._cached(self._addresses, key, find_address)

    def members(self, group_id: int) -> list[str]:
        return self._cached(self._members, group_id, group_member_addresses)

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
