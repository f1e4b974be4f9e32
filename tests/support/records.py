"""Unit-layer records: a migrated SQLite database in a temp directory and a directory over it.

The directory hashes with Argon2id at the lowest cost, so tests that set passwords stay fast; the
algorithm is the production one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher

from postroom.delivery import deliver_at_commit
from postroom.directory import ConnectionView, Directory, DirectoryView, DomainType
from postroom.mailstore import Mailstore, StoredMessage
from postroom.model import Address
from postroom.model.flow import Route
from postroom.model.message import summarize
from postroom.model.scope import OPERATOR
from postroom.queue import SpoolEntry, new_message_id, write_spool
from postroom.routing import Accepted, categorize
from postroom.storage import BlobStore, Database
from postroom.trace import TraceMessage, record_events, record_message, set_statuses

SERVICE_DOMAIN = "postroom.test"


def open_database(directory: Path) -> Database:
    database = Database(f"sqlite:///{directory}/t.db")
    database.migrate()
    return database


def new_directory(database: Database, clock: Callable[[], float] = time.time) -> Directory:
    hasher = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)
    return Directory(database, service_domain=SERVICE_DOMAIN, password_hasher=hasher, clock=clock)


@dataclass(frozen=True)
class Org:
    """Two tenants. contoso: contoso.com (alice with alias al@, bob, team@ = alice+bob, partner@ a
    contact for ext@partner.example), relay.contoso.com (InternalRelay, verified). fabrikam:
    fabrikam.com (carol), pending.example (not verified)."""

    contoso: int
    fabrikam: int
    alice: int
    bob: int
    carol: int


def populate(directory: Directory) -> Org:
    contoso = directory.add_tenant(OPERATOR, "contoso")
    directory.add_domain(OPERATOR, "contoso.com", "contoso", verified=True)
    directory.add_domain(OPERATOR, "relay.contoso.com", "contoso", DomainType.INTERNAL_RELAY, verified=True)
    alice = directory.add_mailbox(
        OPERATOR, "alice@contoso.com", display_name="Alice", aliases=["al@contoso.com"]
    )
    bob = directory.add_mailbox(OPERATOR, "bob@contoso.com", display_name="Bob")
    directory.add_group(OPERATOR, "team@contoso.com", members=["alice@contoso.com", "bob@contoso.com"])
    directory.add_contact(OPERATOR, "partner@contoso.com", external_address="ext@partner.example")
    fabrikam = directory.add_tenant(OPERATOR, "fabrikam")
    directory.add_domain(OPERATOR, "fabrikam.com", "fabrikam", verified=True)
    carol = directory.add_mailbox(OPERATOR, "carol@fabrikam.com")
    directory.add_domain(OPERATOR, "pending.example", "fabrikam")
    return Org(contoso=contoso.id, fabrikam=fabrikam.id, alice=alice.id, bob=bob.id, carol=carol.id)


MAX_RECIPIENTS = 10_000  # the default of [routing] max_expanded_recipients


def accepted(view: DirectoryView, *rcpts: str) -> list[Accepted]:
    """The recipients as RCPT accepted them (known addresses; delivery restrictions are routing's
    `resolve_recipient`'s to test)."""
    found = []
    for rcpt in rcpts:
        address = Address.parse(rcpt)
        owner = view.address(address.key)
        assert owner is not None, rcpt
        found.append(Accepted(address, owner))
    return found


def receive(
    database: Database,
    blobs: BlobStore,
    sender: str,
    rcpts: list[str],
    content: bytes,
    *,
    at: float = 1000.0,
) -> str:
    """What the MX commit does with a message whose recipients were accepted: categorize, deliver the
    local ones (`deliver_at_commit`), spool the rest, trace, in one transaction. Returns its id."""
    message_id = new_message_id(at)
    prefix = b"Received: from client by mx.postroom.test\r\n"
    entry = SpoolEntry(
        id=message_id,
        sender=sender,
        blob_id=blobs.put(content),
        prefix=prefix,
        size=len(prefix) + len(content),
        received_at=at,
        summary=summarize(content),
    )
    with database.write() as conn:
        view = ConnectionView(conn)
        categorized = categorize(view, message_id, accepted(view, *rcpts), max_recipients=MAX_RECIPIENTS)
        queued = [r for r in categorized.routes if r.route is not Route.LOCAL]
        if queued:
            write_spool(conn, entry, queued)
        record_message(
            conn,
            TraceMessage(
                message_id, entry.summary.message_id, sender, entry.summary.subject, entry.size, "", at
            ),
        )
        record_events(conn, categorized.events, at)
        set_statuses(conn, categorized.statuses, at)
        events, statuses = deliver_at_commit(conn, entry, categorized.routes)
        record_events(conn, events, at)
        set_statuses(conn, statuses, at)
    return message_id


def stored_messages(
    directory: Directory, mailstore: Mailstore, address: str, folder: str = "Inbox"
) -> list[StoredMessage]:
    """A mailbox's messages as the operator reads them: the address resolved, then the mailstore asked."""
    return mailstore.list_messages(OPERATOR, directory.get_recipient(OPERATOR, address).id, folder)


def exported(
    directory: Directory, mailstore: Mailstore, address: str, uid: int, folder: str = "Inbox"
) -> bytes:
    return mailstore.export(OPERATOR, directory.get_recipient(OPERATOR, address).id, uid, folder)
