"""Local delivery at commit: into the mailstore in the spool commit's transaction, with trace; a
mailbox that vanished between RCPT and the commit fails there and is never queued."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Connection, select

from postroom.delivery import deliver_at_commit
from postroom.directory import ConnectionView, Directory
from postroom.mailstore import Mailstore
from postroom.model.flow import Route, TraceStatus
from postroom.model.message import summarize
from postroom.model.scope import OPERATOR, TenantScope
from postroom.queue import SpoolEntry
from postroom.routing import categorize
from postroom.storage import BlobStore, Database, FileBlobStore
from postroom.storage.schema import queue_recipients
from postroom.trace import TraceMessage, TraceService, record_events, record_message, set_statuses
from tests.support.records import MAX_RECIPIENTS, Org, accepted, exported, populate, receive, stored_messages

CONTENT = (
    b"From: Carol <carol@example.net>\r\n"
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
    b"Message-ID: <g@example.net>\r\n"
    b"\r\n"
    b"Hi\r\n"
)


@pytest.fixture
def org(directory: Directory) -> Org:
    return populate(directory)


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    return FileBlobStore(tmp_path / "blobs")


@pytest.fixture
def mailstore(database: Database, directory: Directory, blobs: BlobStore) -> Mailstore:
    return Mailstore(database, blobs)


def queued(conn: Connection) -> list[tuple[str, str]]:
    return [
        (r.recipient, r.route) for r in conn.execute(select(queue_recipients).order_by(queue_recipients.c.id))
    ]


def statuses(trace: TraceService, message_id: str) -> dict[str, TraceStatus]:
    detail = trace.detail(message_id, OPERATOR)
    assert detail is not None
    return {r.recipient: r.status for r in detail.recipients}


def test_delivery_at_commit_needs_no_queue_row(
    directory: Directory, database: Database, org: Org, blobs: BlobStore, mailstore: Mailstore
) -> None:
    message_id = receive(
        database,
        blobs,
        "carol@example.net",
        ["team@contoso.com", "al@contoso.com", "partner@contoso.com"],
        CONTENT,
    )
    with database.read() as conn:
        assert queued(conn) == [("ext@partner.example", "remote")]
    for mailbox in ("alice@contoso.com", "bob@contoso.com"):
        [stored] = stored_messages(directory, mailstore, mailbox)
        assert (stored.uid, stored.subject, stored.message_id, stored.trace_id) == (
            1,
            "Grüße",
            "<g@example.net>",
            message_id,
        )
        raw = exported(directory, mailstore, mailbox, 1)
        assert raw.endswith(b"Received: from client by mx.postroom.test\r\n" + CONTENT)
        assert raw.startswith(f"Return-Path: <carol@example.net>\r\nDelivered-To: {mailbox}\r\n".encode())
        assert stored.size == len(raw)
    trace = TraceService(database)
    assert statuses(trace, message_id) == {
        "al@contoso.com": TraceStatus.DELIVERED,
        "team@contoso.com": TraceStatus.EXPANDED,
        "bob@contoso.com": TraceStatus.DELIVERED,
        "partner@contoso.com": TraceStatus.PENDING,
    }
    detail = trace.detail(message_id, TenantScope(org.contoso))
    assert detail is not None
    delivers = [(e.recipient, e.detail) for e in detail.events if e.event == "Deliver"]
    assert delivers == [
        ("al@contoso.com", {"mailbox": "alice@contoso.com", "folder": "Inbox"}),
        ("bob@contoso.com", {"mailbox": "bob@contoso.com", "folder": "Inbox"}),
    ]


def test_a_mailbox_removed_between_rcpt_and_commit_fails_at_commit_and_is_never_queued(
    database: Database, directory: Directory, org: Org, blobs: BlobStore, mailstore: Mailstore
) -> None:
    with database.read() as conn:
        at_rcpt = accepted(ConnectionView(conn), "alice@contoso.com", "bob@contoso.com")
    directory.remove_recipient(OPERATOR, "bob@contoso.com")  # after RCPT, before the end of DATA
    entry = SpoolEntry(
        "m-gone", "x@example.net", blobs.put(CONTENT), b"", len(CONTENT), 1000.0, summarize(CONTENT)
    )
    with database.write() as conn:
        # What the MX endpoint's cache may still say at commit: bob's mailbox, by its old id.
        with database.read() as cached:
            routes = categorize(
                ConnectionView(cached), entry.id, at_rcpt, max_recipients=MAX_RECIPIENTS
            ).routes
        assert [r.route for r in routes] == [Route.LOCAL, Route.LOCAL]
        record_message(conn, TraceMessage(entry.id, "", entry.sender, "", entry.size, "", 1000.0))
        events, rows = deliver_at_commit(conn, entry, routes)
        record_events(conn, events, 1000.0)
        set_statuses(conn, rows, 1000.0)
        assert queued(conn) == []
    assert [m.uid for m in stored_messages(directory, mailstore, "alice@contoso.com")] == [1]
    trace = TraceService(database)
    assert statuses(trace, "m-gone") == {
        "alice@contoso.com": TraceStatus.DELIVERED,
        "bob@contoso.com": TraceStatus.FAILED,
    }
    detail = trace.detail("m-gone", OPERATOR)
    assert detail is not None
    [fail] = [e for e in detail.events if e.event == "Fail"]
    assert fail.recipient == "bob@contoso.com"
    assert str(fail.detail["reply"]).startswith("550 5.1.1")


def test_uids_ascend_across_messages(
    directory: Directory, database: Database, org: Org, blobs: BlobStore, mailstore: Mailstore
) -> None:
    for n in range(3):
        receive(
            database, blobs, "x@example.net", ["alice@contoso.com"], CONTENT + str(n).encode(), at=1000.0 + n
        )
    receive(database, blobs, "x@example.net", ["al@contoso.com"], CONTENT, at=1010.0)
    assert [m.uid for m in stored_messages(directory, mailstore, "alice@contoso.com")] == [1, 2, 3, 4]
