"""Read views of the directory for mail flow: straight from a connection, or cached in the node.

Routing asks three questions for every recipient: which accepted domain is this, who owns this
address, who are this group's members; some of the organization settings (`organization.py`): who
is this tenant's postmaster, does this group take mail from outside, does this mailbox forward
(`forwarding.py`), may this tenant forward automatically, and which of its remote domains covers a
destination (`remote_domains.py`; also what delivery asks per destination); and one of the sending
settings (`sending.py`): how large a message may this mailbox receive. A mailbox's quota comes with
its address owner (`quota.py`): no question of its own. `DirectoryView` is that narrow
interface. `ConnectionView`
answers from the database inside the caller's transaction; `CachedDirectory` answers from memory and
asks the database only on a miss; `CachedDirectory.in_memory()` answers from memory only and raises
`NotCached` on a miss, which is what the SMTP session's event loop uses (a miss goes to a worker
thread, so no SQL ever runs on the event loop).

Freshness: every directory change bumps `directory_generation` and logs what it changed (domain
names, address keys, group ids, tenant ids) under the new generation, in the same transaction (`base.py`).
`refresh()` reads the generation; when it moved, it reads the log since the cache's generation and
drops exactly those entries, so a change to one address costs every other cached answer nothing.
It drops everything only when the log no longer covers the gap (the node was more than
`CHANGE_LOG_GENERATIONS` behind) or a change was logged as "everything" (a tenant's removal with
many entries). The node calls `refresh()` every `REFRESH_SECONDS`, so a change made by any process
(the CLI, another node) is in force within that time. Negative answers are cached too (a DBEB
flood of unknown recipients costs no queries), and are dropped by the same log (adding an address
logs its key). A tenant's postmaster is dropped when the tenant's choice changes and whenever any
address changes (the fallback, the tenant's first mailbox, may be the one that came or went); a
group's external-senders answer and a mailbox's forwarding go with the recipient id's entry (logged
as a group change); a tenant's auto-forwarding policy, remote domains and protection policies go with the
tenant's entry (its policies also whenever any address changes, if they name users or groups: they
hold those recipients' addresses); a mailbox's safe and blocked senders go with the mailbox's entry; a
mailbox's receive limit goes when the mailbox's settings change, and all of them when any tenant's do
(a mailbox may inherit its tenant's). Connectors: the service's inbound connectors are one entry (a
connection is attributed before its tenant is known) and a tenant's outbound connectors one entry
each; a change to a tenant's connectors drops the inbound table and that tenant's outbound list.

Guarantees: an answer loaded while a refresh ran is not kept (it may predate the change the refresh
dropped); each table holds at most `MAX_ENTRIES` answers (it is emptied when full).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol, TypeVar

from sqlalchemy import Connection, select

from postroom.directory.base import CHANGE_LOG_GENERATIONS, ChangeKind
from postroom.directory.connectors import load_inbound_table, load_outbound_connectors
from postroom.directory.forwarding import find_forwarding
from postroom.directory.lookups import find_address, find_domain, group_member_addresses
from postroom.directory.organization import find_auto_forward, find_postmaster, group_allows_external_senders
from postroom.directory.protection import load_sender_lists, load_tenant_protection
from postroom.directory.records import AcceptedDomain, AddressOwner, AutoForward, MailboxForwarding
from postroom.directory.remote_domains import match_remote_domain, remote_domains_of
from postroom.directory.sending import find_receive_limit
from postroom.model.connectors import ConnectorTable, OutboundConnector
from postroom.model.outbound import RemoteDomainSettings
from postroom.model.policy import MailboxSenderLists, TenantProtection
from postroom.storage import Database
from postroom.storage.schema import directory_changes, directory_generation

REFRESH_SECONDS = 1.0
MAX_ENTRIES = 200_000


class DirectoryView(Protocol):
    def domain(self, name: str) -> AcceptedDomain | None: ...

    def address(self, key: str) -> AddressOwner | None: ...

    def members(self, group_id: int) -> list[str]: ...

    def postmaster(self, tenant_id: int) -> AddressOwner | None: ...

    def allows_external_senders(self, group_id: int) -> bool: ...

    def receive_limit(self, mailbox_id: int) -> int | None: ...
    def forwarding(self, recipient_id: int) -> MailboxForwarding | None: ...

    def auto_forward(self, tenant_id: int) -> AutoForward: ...

    def remote_domain(self, tenant_id: int, domain: str) -> RemoteDomainSettings: ...

    def protection(self, tenant_id: int) -> TenantProtection: ...

    def sender_lists(self, mailbox_id: int) -> MailboxSenderLists: ...

    def inbound_connectors(self) -> ConnectorTable: ...

    def outbound_connectors(self, tenant_id: int) -> tuple[OutboundConnector, ...]: ...


class NotCached(LookupError):
    """The in-memory view does not hold this answer: ask again off the event loop."""


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

    def receive_limit(self, mailbox_id: int) -> int | None:
        return find_receive_limit(self._conn, mailbox_id)

    def forwarding(self, recipient_id: int) -> MailboxForwarding | None:
        return find_forwarding(self._conn, recipient_id)

    def auto_forward(self, tenant_id: int) -> AutoForward:
        return find_auto_forward(self._conn, tenant_id)

    def remote_domain(self, tenant_id: int, domain: str) -> RemoteDomainSettings:
        return match_remote_domain(remote_domains_of(self._conn, tenant_id), domain)

    def protection(self, tenant_id: int) -> TenantProtection:
        return load_tenant_protection(self._conn, tenant_id)

    def sender_lists(self, mailbox_id: int) -> MailboxSenderLists:
        return load_sender_lists(self._conn, mailbox_id)

    def inbound_connectors(self) -> ConnectorTable:
        return load_inbound_table(self._conn)

    def outbound_connectors(self, tenant_id: int) -> tuple[OutboundConnector, ...]:
        return load_outbound_connectors(self._conn, tenant_id)


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
        self._receive_limits: dict[int, int | None] = {}
        self._forwardings: dict[int, MailboxForwarding | None] = {}
        self._auto_forward: dict[int, AutoForward] = {}
        self._remote_domains: dict[int, tuple[RemoteDomainSettings, ...]] = {}
        self._protection: dict[int, TenantProtection] = {}
        self._sender_lists: dict[int, MailboxSenderLists] = {}
        self._inbound: dict[None, ConnectorTable] = {}  # one entry: the service's inbound connectors
        self._outbound: dict[int, tuple[OutboundConnector, ...]] = {}
        self.generation = -1

    def refresh(self) -> bool:
        """Drop what changed since the last look (all of it when the log cannot say); True when it did."""
        with self._database.read() as conn:
            generation = conn.execute(select(directory_generation.c.generation)).scalar_one()
            if generation == self.generation:
                return False
            changes: list[tuple[int, str, str]] = []
            behind = self.generation < 0 or generation - self.generation >= CHANGE_LOG_GENERATIONS
            if not behind:
                changes = [
                    (row.generation, row.kind, row.key)
                    for row in conn.execute(
                        select(
                            directory_changes.c.generation, directory_changes.c.kind, directory_changes.c.key
                        ).where(
                            (directory_changes.c.generation > self.generation)
                            & (directory_changes.c.generation <= generation)
                        )
                    ).all()
                ]
        covered = {change[0] for change in changes}
        everything = behind or len(covered) != generation - self.generation
        everything = everything or any(kind == ChangeKind.EVERYTHING for _, kind, _ in changes)
        with self._lock:
            if everything:
                self._domains.clear()
                self._addresses.clear()
                self._members.clear()
                self._postmasters.clear()
                self._external_senders.clear()
                self._forwardings.clear()
                self._auto_forward.clear()
                self._remote_domains.clear()
                self._receive_limits.clear()
                self._protection.clear()
                self._sender_lists.clear()
                self._inbound.clear()
                self._outbound.clear()
            else:
                address_changed = False
                for _, kind, key in changes:
                    if kind == ChangeKind.DOMAIN:
                        self._domains.pop(key, None)
                    elif kind == ChangeKind.ADDRESS:
                        self._addresses.pop(key, None)
                        self._postmasters.clear()
                        address_changed = True
                    elif kind == ChangeKind.GROUP:
                        self._members.pop(int(key), None)
                        self._external_senders.pop(int(key), None)
                        self._forwardings.pop(int(key), None)
                        address_changed = True  # a policy's group filter holds the group's members
                    elif kind == ChangeKind.TENANT:
                        self._postmasters.pop(int(key), None)
                        self._auto_forward.pop(int(key), None)
                        self._remote_domains.pop(int(key), None)
                        self._protection.pop(int(key), None)
                        self._receive_limits.clear()  # its mailboxes may inherit the tenant's limit
                    elif kind == ChangeKind.RECIPIENT:
                        self._receive_limits.pop(int(key), None)
                        self._sender_lists.pop(int(key), None)
                    elif kind == ChangeKind.CONNECTORS:
                        self._inbound.clear()
                        self._outbound.pop(int(key), None)
                if address_changed:
                    self._drop_named_recipients()
            self.generation = generation
        return True

    def _drop_named_recipients(self) -> None:
        """Drop the tenants' policies whose filters name users or groups: they hold those recipients'
        addresses, and an address changed (held under the lock)."""
        for tenant_id, held in list(self._protection.items()):
            filters = [p.recipients for p in held.antispam] + [p.recipients for p in held.antimalware]
            if any(f.users or f.groups for f in filters):
                del self._protection[tenant_id]

    def in_memory(self) -> DirectoryView:
        """This cache answering from memory only: a miss raises `NotCached` (for the event loop)."""
        return _InMemory(self)

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

    def receive_limit(self, mailbox_id: int) -> int | None:
        return self._cached(self._receive_limits, mailbox_id, find_receive_limit)

    def forwarding(self, recipient_id: int) -> MailboxForwarding | None:
        return self._cached(self._forwardings, recipient_id, find_forwarding)

    def auto_forward(self, tenant_id: int) -> AutoForward:
        return self._cached(self._auto_forward, tenant_id, find_auto_forward)

    def remote_domain(self, tenant_id: int, domain: str) -> RemoteDomainSettings:
        """The settings of the tenant's remote domain that covers `domain` (also for delivery: the
        hook `remote_domain(tenant_id, destination)` of the remote agent); one cached entry per tenant."""
        held: tuple[RemoteDomainSettings, ...] = self._cached(
            self._remote_domains, tenant_id, remote_domains_of
        )
        return match_remote_domain(held, domain)

    def protection(self, tenant_id: int) -> TenantProtection:
        return self._cached(self._protection, tenant_id, load_tenant_protection)

    def sender_lists(self, mailbox_id: int) -> MailboxSenderLists:
        return self._cached(self._sender_lists, mailbox_id, load_sender_lists)

    def inbound_connectors(self) -> ConnectorTable:
        return self._cached(self._inbound, None, lambda conn, _: load_inbound_table(conn))

    def outbound_connectors(self, tenant_id: int) -> tuple[OutboundConnector, ...]:
        return self._cached(self._outbound, tenant_id, load_outbound_connectors)

    def _cached(self, table: dict[K, V], key: K, load: Callable[[Connection, K], V]) -> V:
        """The answer from `table`, or loaded from the database and kept if still current."""
        try:
            return table[key]
        except KeyError:
            pass
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


class _InMemory:
    """The cache's answers, never the database's (a dict read is atomic: no lock on the event loop)."""

    def __init__(self, cache: CachedDirectory) -> None:
        self._cache = cache

    def domain(self, name: str) -> AcceptedDomain | None:
        return _held(self._cache._domains, name)

    def address(self, key: str) -> AddressOwner | None:
        return _held(self._cache._addresses, key)

    def members(self, group_id: int) -> list[str]:
        return _held(self._cache._members, group_id)

    def postmaster(self, tenant_id: int) -> AddressOwner | None:
        return _held(self._cache._postmasters, tenant_id)

    def allows_external_senders(self, group_id: int) -> bool:
        return _held(self._cache._external_senders, group_id)

    def receive_limit(self, mailbox_id: int) -> int | None:
        return _held(self._cache._receive_limits, mailbox_id)

    def forwarding(self, recipient_id: int) -> MailboxForwarding | None:
        return _held(self._cache._forwardings, recipient_id)

    def auto_forward(self, tenant_id: int) -> AutoForward:
        return _held(self._cache._auto_forward, tenant_id)

    def remote_domain(self, tenant_id: int, domain: str) -> RemoteDomainSettings:
        held: tuple[RemoteDomainSettings, ...] = _held(self._cache._remote_domains, tenant_id)
        return match_remote_domain(held, domain)

    def protection(self, tenant_id: int) -> TenantProtection:
        return _held(self._cache._protection, tenant_id)

    def sender_lists(self, mailbox_id: int) -> MailboxSenderLists:
        return _held(self._cache._sender_lists, mailbox_id)

    def inbound_connectors(self) -> ConnectorTable:
        return _held(self._cache._inbound, None)

    def outbound_connectors(self, tenant_id: int) -> tuple[OutboundConnector, ...]:
        return _held(self._cache._outbound, tenant_id)


def _held(table: dict[K, V], key: K) -> V:
    try:
        return table[key]
    except KeyError:
        raise NotCached(key) from None
