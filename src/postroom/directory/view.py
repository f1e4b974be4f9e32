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
        if name in self._domains:
            return self._domains[name]
        generation = self.generation
        with self._database.read() as conn:
            found = find_domain(conn, name)
        with self._lock:
            if generation == self.generation:  # not refreshed meanwhile: the answer is current
                self._bounded(self._domains)[name] = found
        return found

    def address(self, key: str) -> AddressOwner | None:
        if key in self._addresses:
            return self._addresses[key]
        generation = self.generation
        with self._database.read() as conn:
            found = find_address(conn, key)
        with self._lock:
            if generation == self.generation:
                self._bounded(self._addresses)[key] = found
        return found

    def members(self, group_id: int) -> list[str]:
        if group_id in self._members:
            return self._members[group_id]
        generation = self.generation
        with self._database.read() as conn:
            found = group_member_addresses(conn, group_id)
        with self._lock:
            if generation == self.generation:
                self._bounded(self._members)[group_id] = found
        return found

    @staticmethod
    def _bounded(table: dict[K, V]) -> dict[K, V]:
        if len(table) >= MAX_ENTRIES:
            table.clear()
        return table
