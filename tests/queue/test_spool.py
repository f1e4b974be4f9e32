"""The spool: message and per-recipient queue rows in one transaction, summary, settling."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import select

from postroom.model.flow import Route, RoutedRecipient
from postroom.model.message import HeaderSummary
from postroom.queue import (
    QueueState,
    QueueSummary,
    SpoolEntry,
    new_message_id,
    queue_summary,
    settle,
    write_spool,
)
from postroom.storage import Database
from postroom.storage.schema import queue_recipients, spool_messages

SUMMARY = HeaderSummary("a@example.net", "Hello", "", "<1@example.net>")


def entry(message_id: str, at: float) -> SpoolEntry:
    return SpoolEntry(message_id, "a@example.net", "ab" * 32, b"Received: x\r\n", 100, at, SUMMARY)


ROUTES = [
    RoutedRecipient("alice@contoso.com", "al@contoso.com", 1, Route.LOCAL, 7),
    RoutedRecipient("ext@partner.example", "partner@contoso.com", 1, Route.REMOTE),
]


def test_write_spool_queues_each_recipient_pending(database: Database) -> None:
    with database.write() as conn:
        write_spool(conn, entry("m1", 1000.0), ROUTES)
    with database.read() as conn:
        spooled = conn.execute(select(spool_messages)).one()
        rows = conn.execute(select(queue_recipients).order_by(queue_recipients.c.id)).all()
        summary = queue_summary(conn)
    assert (
        spooled.id,
        spooled.sender,
        bytes(spooled.prefix),
        spooled.subject,
        spooled.message_id_header,
    ) == (
        "m1",
        "a@example.net",
        b"Received: x\r\n",
        "Hello",
        "<1@example.net>",
    )
    assert [
        (r.recipient, r.original_recipient, r.route, r.mailbox_id, r.state, r.attempts, r.next_attempt_at)
        for r in rows
    ] == [
        ("alice@contoso.com", "al@contoso.com", "local", 7, "pending", 0, 1000.0),
        ("ext@partner.example", "partner@contoso.com", "remote", None, "pending", 0, 1000.0),
    ]
    assert (summary.pending, summary.deferred, summary.messages, summary.oldest_received_at) == (
        2,
        0,
        1,
        1000.0,
    )


def test_write_spool_is_all_or_nothing(database: Database) -> None:
    with database.write() as conn:
        write_spool(conn, entry("m1", 1000.0), ROUTES)
    with pytest.raises(Exception, match="UNIQUE"), database.write() as conn:
        write_spool(conn, entry("m2", 2000.0), ROUTES)
        write_spool(conn, entry("m1", 3000.0), ROUTES)  # the same id again: the whole job fails
    with database.read() as conn:
        assert conn.execute(select(spool_messages.c.id)).scalars().all() == ["m1"]
        assert queue_summary(conn).pending == 2


def test_queue_summary_of_an_empty_queue(database: Database) -> None:
    with database.read() as conn:
        assert queue_summary(conn) == QueueSummary(pending=0, deferred=0, messages=0, oldest_received_at=None)


def test_summary_counts_deferred(database: Database) -> None:
    with database.write() as conn:
        write_spool(conn, entry("m1", 1000.0), ROUTES)
        write_spool(conn, entry("m2", 500.0), ROUTES[:1])
        conn.execute(
            queue_recipients.update()
            .where(queue_recipients.c.route == Route.REMOTE.value)
            .values(state=QueueState.DEFERRED.value)
        )
    with database.read() as conn:
        summary = queue_summary(conn)
    assert (summary.pending, summary.deferred, summary.messages, summary.oldest_received_at) == (
        2,
        1,
        2,
        500.0,
    )


def test_settle_takes_recipients_out_and_messages_with_none_left(database: Database) -> None:
    with database.write() as conn:
        write_spool(conn, entry("m1", 1000.0), ROUTES)
        write_spool(conn, entry("m2", 1000.0), ROUTES)
        write_spool(conn, entry("m3", 1000.0), [])
    q = queue_recipients
    with database.read() as conn:
        ids = {(row.message_id, row.route): row.id for row in conn.execute(select(q))}
    with database.write() as conn:
        settle(conn, {ids[("m1", "local")], ids[("m1", "remote")], ids[("m2", "local")]})
        settle(conn, set())
    with database.read() as conn:
        assert sorted(conn.execute(select(spool_messages.c.id)).scalars().all()) == ["m2", "m3"]
        assert conn.execute(select(q.c.message_id, q.c.route)).all() == [("m2", "remote")]


def test_message_ids_are_unique_and_sort_by_time() -> None:
    ids = [new_message_id(1000.0 + n * 0.25) for n in range(100)]
    assert len(set(ids)) == 100
    assert ids == sorted(ids)
    assert len({new_message_id(5.0) for _ in range(100)}) == 100
    assert all(len(i) == 28 and int(i, 16) >= 0 for i in ids)


def test_a_forked_child_never_repeats_its_parents_message_ids() -> None:
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child process
        os.close(reader)
        os.write(writer, " ".join(new_message_id(9.0) for _ in range(50)).encode())
        os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as pipe:
        child_ids = set(pipe.read().split())
    os.waitpid(child, 0)
    parent_ids = {new_message_id(9.0) for _ in range(50)}
    assert len(child_ids) == 50
    assert not child_ids & parent_ids


def test_a_recipient_routing_failed_is_queued_failed_with_its_reply_and_its_own_sender(
    database: Database,
) -> None:
    routes = [
        RoutedRecipient(
            "Ext@Partner.Example", "fwd@contoso.com", 1, Route.REMOTE, envelope_sender="SRS0=x@contoso.com"
        ),
        RoutedRecipient(
            "big@bücher.example", "big@bücher.example", 1, Route.REMOTE, failure="550 5.7.520 Access denied"
        ),
    ]
    with database.write() as conn:
        write_spool(conn, entry("m1", 1000.0), routes)
    with database.read() as conn:
        rows = conn.execute(select(queue_recipients).order_by(queue_recipients.c.id)).all()
        summary = queue_summary(conn)
    assert [(r.state, r.destination, r.envelope_sender, r.last_reply) for r in rows] == [
        ("pending", "partner.example", "SRS0=x@contoso.com", ""),
        ("failed", "xn--bcher-kva.example", None, "550 5.7.520 Access denied"),
    ]
    assert (summary.pending, summary.failed) == (1, 1)
