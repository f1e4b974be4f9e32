"""LocalDeliveryAgent: one round over spooled messages, into the mailstore, with trace."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import Connection, select

from postroom.delivery import LocalDeliveryAgent
from postroom.directory import Directory
from postroom.mailstore import Mailstore
from postroom.model.flow import TraceStatus
from postroom.model.scope import OPERATOR
from postroom.queue import Scheduler, queue_summary
from postroom.storage import BlobStore, Database, GroupCommitter
from postroom.storage.schema import queue_recipients, spool_messages
from postroom.trace import TraceService
from tests.support.records import Org, exported, populate, receive, stored_messages

CONTENT = (
    b"From: Carol <carol@example.net>\r\n"
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
    b"Message-ID: <g@example.net>\r\n"
    b"\r\n"
    b"Hi\r\n"
)
NOW = 2000.0


@pytest.fixture
def org(directory: Directory) -> Org:
    return populate(directory)


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs")


@pytest.fixture
def mailstore(database: Database, directory: Directory, blobs: BlobStore) -> Mailstore:
    return Mailstore(database, blobs)


def round_(database: Database, now: float = NOW, batch_max: int = 256) -> int:
    with database.write() as conn:
        return LocalDeliveryAgent(batch_max=batch_max)(conn, now)


def queued(conn: Connection) -> list[tuple[str, str]]:
    return [
        (r.recipient, r.route) for r in conn.execute(select(queue_recipients).order_by(queue_recipients.c.id))
    ]


def statuses(trace: TraceService, message_id: str) -> dict[str, TraceStatus]:
    detail = trace.detail(message_id)
    assert detail is not None
    return {r.recipient: r.status for r in detail.recipients}


def test_round_delivers_local_recipients_and_leaves_remote_ones(
    directory: Directory, database: Database, org: Org, blobs: BlobStore, mailstore: Mailstore
) -> None:
    message_id = receive(
        database,
        blobs,
        "carol@example.net",
        ["team@contoso.com", "al@contoso.com", "partner@contoso.com"],
        CONTENT,
    )
    assert round_(database) == 2
    with database.read() as conn:
        assert queued(conn) == [("ext@partner.example", "remote")]
        assert conn.execute(select(spool_messages.c.id)).scalars().all() == [
            message_id
        ]  # remote still queued
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
    detail = trace.detail(message_id, tenant_id=org.contoso)
    assert detail is not None
    delivers = [(e.recipient, e.detail, e.at) for e in detail.events if e.event == "Deliver"]
    assert delivers == [
        ("al@contoso.com", {"mailbox": "alice@contoso.com", "folder": "Inbox"}, NOW),
        ("bob@contoso.com", {"mailbox": "bob@contoso.com", "folder": "Inbox"}, NOW),
    ]
    assert round_(database) == 0


def test_delivery_at_commit_needs_no_queue_row(
    directory: Directory, database: Database, org: Org, blobs: BlobStore, mailstore: Mailstore
) -> None:
    message_id = receive(
        database,
        blobs,
        "x@example.net",
        ["team@contoso.com", "partner@contoso.com"],
        CONTENT,
        local_at_commit=True,
    )
    with database.read() as conn:
        assert queued(conn) == [("ext@partner.example", "remote")]
    assert [m.trace_id for m in stored_messages(directory, mailstore, "alice@contoso.com")] == [message_id]
    assert exported(directory, mailstore, "bob@contoso.com", 1).endswith(CONTENT)
    assert statuses(TraceService(database), message_id) == {
        "team@contoso.com": TraceStatus.EXPANDED,
        "alice@contoso.com": TraceStatus.DELIVERED,
        "bob@contoso.com": TraceStatus.DELIVERED,
        "partner@contoso.com": TraceStatus.PENDING,
    }
    assert round_(database) == 0


def test_spool_row_is_removed_when_every_recipient_settled(
    database: Database, org: Org, blobs: BlobStore
) -> None:
    first = receive(database, blobs, "", ["alice@contoso.com"], CONTENT)
    second = receive(database, blobs, "x@example.net", ["bob@contoso.com", "carol@fabrikam.com"], CONTENT)
    assert round_(database) == 3
    with database.read() as conn:
        assert queued(conn) == []
        assert (
            conn.execute(select(spool_messages.c.id).where(spool_messages.c.id.in_([first, second]))).all()
            == []
        )
        assert queue_summary(conn).messages == 0


def test_a_removed_mailbox_fails_its_recipient(
    database: Database, directory: Directory, org: Org, blobs: BlobStore, mailstore: Mailstore
) -> None:
    message_id = receive(database, blobs, "x@example.net", ["alice@contoso.com", "bob@contoso.com"], CONTENT)
    directory.remove_recipient(OPERATOR, "bob@contoso.com")
    assert round_(database) == 2
    with database.read() as conn:
        assert queued(conn) == []
        assert conn.execute(select(spool_messages)).all() == []
    assert [m.uid for m in stored_messages(directory, mailstore, "alice@contoso.com")] == [1]
    trace = TraceService(database)
    assert statuses(trace, message_id) == {
        "alice@contoso.com": TraceStatus.DELIVERED,
        "bob@contoso.com": TraceStatus.FAILED,
    }
    detail = trace.detail(message_id)
    assert detail is not None
    [fail] = [e for e in detail.events if e.event == "Fail"]
    assert fail.recipient == "bob@contoso.com"
    assert str(fail.detail["reply"]).startswith("550 5.1.1")


def test_uids_ascend_across_rounds(
    directory: Directory, database: Database, org: Org, blobs: BlobStore, mailstore: Mailstore
) -> None:
    for n in range(3):
        receive(
            database, blobs, "x@example.net", ["alice@contoso.com"], CONTENT + str(n).encode(), at=1000.0 + n
        )
        assert round_(database) == 1
    receive(database, blobs, "x@example.net", ["al@contoso.com"], CONTENT, at=1010.0)
    receive(database, blobs, "x@example.net", ["alice@contoso.com"], CONTENT, at=1011.0)
    assert round_(database) == 2
    assert [m.uid for m in stored_messages(directory, mailstore, "alice@contoso.com")] == [1, 2, 3, 4, 5]


def test_only_due_recipients_and_at_most_batch_max(database: Database, org: Org, blobs: BlobStore) -> None:
    receive(
        database,
        blobs,
        "x@example.net",
        ["alice@contoso.com", "bob@contoso.com", "carol@fabrikam.com"],
        CONTENT,
        at=1000.0,
    )
    receive(database, blobs, "x@example.net", ["alice@contoso.com"], CONTENT, at=3000.0)
    assert round_(database, now=500.0) == 0
    assert round_(database, now=NOW, batch_max=2) == 2
    assert round_(database, now=NOW) == 1
    assert round_(database, now=NOW) == 0  # the later message is not due yet
    assert round_(database, now=3000.0) == 1


async def test_scheduler_runs_rounds_until_the_queue_is_empty(
    directory: Directory, database: Database, org: Org, blobs: BlobStore, mailstore: Mailstore
) -> None:
    for n in range(5):
        receive(database, blobs, "x@example.net", ["team@contoso.com"], CONTENT, at=1000.0 + n)
    committer = GroupCommitter(database)
    committer.start()
    failures: list[float] = []

    def flaky(conn: Connection, now: float) -> int:
        if not failures:
            failures.append(now)
            raise RuntimeError("transient")
        return 0

    scheduler = Scheduler(committer, [flaky, LocalDeliveryAgent(batch_max=3)], idle_interval=0.05)
    task = asyncio.ensure_future(scheduler.run())
    try:
        for _ in range(200):
            if scheduler.delivered >= 10:
                break
            await asyncio.sleep(0.01)
    finally:
        scheduler.stop()
        await asyncio.wait_for(task, 5)
        await asyncio.to_thread(committer.stop)
    assert scheduler.delivered == 10
    assert len(failures) == 1  # the failing round did not stop the scheduler
    assert [m.uid for m in stored_messages(directory, mailstore, "bob@contoso.com")] == [1, 2, 3, 4, 5]
    with database.read() as conn:
        assert queue_summary(conn).pending == 0
