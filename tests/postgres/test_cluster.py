"""Several nodes on one PostgreSQL database: notifications (LISTEN/NOTIFY, reconnecting), a directory
change made through one node seen by RCPT on the other within a second, mail queued on one node
delivered by the other as soon as it is notified, `postroom node list`, and an IMAP IDLE session on one
node woken by mail delivered on the other.

Each node has its own data directory and config; both share the database and one blob directory
(`[node] blob_dir`). Remote delivery goes to a recording agent (`App.remote_agent`).
"""

from __future__ import annotations

import asyncio
import json
import smtplib
import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from imapclient import IMAPClient
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from postroom.app import App
from postroom.cluster import DIRECTORY, QUEUE, Notifications, PostgresChannel
from postroom.config import Settings, load_settings
from postroom.model import replies
from postroom.model.outbound import DeliveryAttempt, RecipientResult
from postroom.model.scope import OPERATOR
from tests.cli.test_commands import postroom
from tests.conftest import populate, wait_for
from tests.support.node import RunningNode, make_node

MESSAGE = b"From: news@partner.example\r\nSubject: cluster\r\n\r\nHello.\r\n"


class RecordingAgent:
    """A remote agent that accepts everything (after `gate` opens) and records who delivered what."""

    def __init__(
        self, name: str, delivered: list[tuple[str, str]], gate: threading.Event | None = None
    ) -> None:
        self.name = name
        self.delivered = delivered
        self.gate = gate

    async def deliver(self, attempts: Sequence[DeliveryAttempt]) -> list[RecipientResult]:
        if self.gate is not None:
            await asyncio.to_thread(self.gate.wait)
        results = []
        for attempt in attempts:
            for recipient in attempt.recipients:
                self.delivered.append((self.name, recipient.recipient))
                results.append(RecipientResult(recipient.queue_id, replies.OK))
        return results


def node_config(directory: Path, postgres_url: str, blobs: Path, name: str) -> Settings:
    settings = make_node(directory)
    config = settings.source.read_text()
    config = config.replace('\nurl = ""', f'\nurl = "{postgres_url}"', 1)
    config = config.replace('\nblob_dir = ""', f'\nblob_dir = "{blobs}"', 1)
    config = config.replace('\nname = ""', f'\nname = "{name}"', 1)
    config = config.replace("\nheartbeat_seconds = 5.0", "\nheartbeat_seconds = 0.5", 1)
    settings.source.write_text(config)
    loaded = load_settings(settings.source)
    assert (loaded.database_url, loaded.blob_dir, loaded.node_name) == (postgres_url, blobs, name)
    return loaded


@pytest.fixture
def two_nodes(tmp_path: Path, postgres_url: str) -> Iterator[tuple[Settings, Settings]]:
    blobs = tmp_path / "shared-blobs"
    blobs.mkdir()
    a = node_config(tmp_path / "a", postgres_url, blobs, "node-a")
    b = node_config(tmp_path / "b", postgres_url, blobs, "node-b")
    setup = App.open(a)
    populate(setup)
    setup.directory.add_contact(OPERATOR, "partner@contoso.com", external_address="someone@remote.example")
    setup.close()
    yield a, b


def start(settings: Settings, agent: RecordingAgent) -> RunningNode:
    node = RunningNode(settings)
    node.app.remote_agent = agent
    return node.start()


def rcpt(node: RunningNode, address: str) -> tuple[int, bytes]:
    with smtplib.SMTP(*node.mx, timeout=10) as client:
        client.ehlo("mta.partner.example")
        assert client.mail("news@partner.example")[0] == 250
        code, reply = client.rcpt(address)
        return code, reply.split()[0]


def test_a_directory_change_through_one_node_is_seen_by_the_other_within_a_second(
    two_nodes: tuple[Settings, Settings],
) -> None:
    delivered: list[tuple[str, str]] = []
    a, b = (
        start(two_nodes[0], RecordingAgent("a", delivered)),
        start(two_nodes[1], RecordingAgent("b", delivered)),
    )
    try:
        assert rcpt(b, "dave@contoso.com") == (550, b"5.4.1")  # DBEB: cached on b as unknown
        a.app.directory.add_mailbox(OPERATOR, "dave@contoso.com", display_name="Dave")
        started = time.monotonic()
        wait_for(lambda: rcpt(b, "dave@contoso.com") == (250, b"2.1.5"), timeout=1.0, interval=0.02)
        added = time.monotonic() - started
        a.app.directory.remove_recipient(OPERATOR, "dave@contoso.com")
        started = time.monotonic()
        wait_for(lambda: rcpt(b, "dave@contoso.com") == (550, b"5.4.1"), timeout=1.0, interval=0.02)
        removed = time.monotonic() - started
        assert added < 1.0 and removed < 1.0
    finally:
        a.stop()
        b.stop()


def test_mail_accepted_on_either_node_is_delivered_and_queued_mail_wakes_the_other_node(
    two_nodes: tuple[Settings, Settings],
) -> None:
    delivered: list[tuple[str, str]] = []
    gate = threading.Event()
    settings_a, settings_b = two_nodes
    # Node a takes one recipient at a time and its agent stalls: what a queues next waits for b.
    settings_a = replace(settings_a, queue=replace(settings_a.queue, max_deliveries_in_flight=1))
    a = start(settings_a, RecordingAgent("a", delivered, gate))
    b = start(settings_b, RecordingAgent("b", delivered))
    try:
        with smtplib.SMTP(*a.mx) as client:
            client.sendmail("news@partner.example", ["partner@contoso.com"], MESSAGE)  # a leases it, stalls
        wait_for(lambda: a.app.queue_summary().pending + a.app.queue_summary().deferred == 1)
        time.sleep(0.3)  # a's scheduler has leased it (its only slot) by now
        with smtplib.SMTP(*a.mx) as client:
            client.sendmail("news@partner.example", ["partner@contoso.com", "alice@contoso.com"], MESSAGE)
        queued = time.monotonic()
        # b's scheduler sleeps up to 5 s between turns: only the notification makes this prompt.
        wait_for(lambda: ("b", "someone@remote.example") in delivered, timeout=2.0, interval=0.02)
        assert time.monotonic() - queued < 2.0
        with smtplib.SMTP(*b.mx) as client:  # accepted on b, delivered (by whichever node is free)
            client.sendmail("news@partner.example", ["partner@contoso.com"], MESSAGE)
        wait_for(lambda: len(delivered) == 2, timeout=5)
        gate.set()
        wait_for(lambda: len(delivered) == 3, timeout=5)
        assert [to for _, to in delivered] == ["someone@remote.example"] * 3  # each once
        wait_for(lambda: b.app.queue_summary().messages == 0, timeout=5)
    finally:
        gate.set()
        a.stop()
        b.stop()


def test_idle_on_one_node_is_woken_by_mail_delivered_on_the_other(
    two_nodes: tuple[Settings, Settings],
) -> None:
    """The mailbox's change is announced after the delivery's commit on b (LISTEN/NOTIFY) and wakes
    the IDLE session on a well before its poll (10 s by default)."""
    delivered: list[tuple[str, str]] = []
    a, b = (
        start(two_nodes[0], RecordingAgent("a", delivered)),
        start(two_nodes[1], RecordingAgent("b", delivered)),
    )
    try:
        a.app.directory.set_recipient(OPERATOR, "alice@contoso.com", password="alice-password-1")
        untrusted = ssl.create_default_context()
        untrusted.check_hostname = False
        untrusted.verify_mode = ssl.CERT_NONE
        host, port = a.address("imaps")
        imap = IMAPClient(host, port, ssl=True, ssl_context=untrusted, timeout=15)
        try:
            imap.login("alice@contoso.com", "alice-password-1")
            imap.select_folder("INBOX")
            imap.idle()
            with smtplib.SMTP(*b.mx, timeout=10) as client:
                client.sendmail("news@partner.example", ["alice@contoso.com"], MESSAGE)
            sent = time.monotonic()
            responses = imap.idle_check(timeout=5)
            woken = time.monotonic() - sent
            imap.idle_done()
            assert (1, b"EXISTS") in responses, responses
            assert woken < 1.0, f"IDLE on node a woke {woken:.2f} s after node b's delivery"
            fetched = imap.fetch([1], ["BODY.PEEK[TEXT]"])
            assert b"Hello." in fetched[1][b"BODY[TEXT]"]
        finally:
            imap.logout()
    finally:
        a.stop()
        b.stop()


def test_node_list_shows_both_nodes_serving_then_stopped(two_nodes: tuple[Settings, Settings]) -> None:
    delivered: list[tuple[str, str]] = []
    a, b = (
        start(two_nodes[0], RecordingAgent("a", delivered)),
        start(two_nodes[1], RecordingAgent("b", delivered)),
    )
    try:
        listed = postroom("node", "list", "--json", config=two_nodes[0].source)
        assert listed.returncode == 0, listed.stderr
        rows = json.loads(listed.stdout)
        assert [(row["node"], row["worker"], row["state"]) for row in rows] == [
            ("node-a", 1, "serving"),
            ("node-b", 1, "serving"),
        ]
        assert {row["id"] for row in rows} == {a.app.lease_tokens.owner, b.app.lease_tokens.owner}
        mx = {f"{a.mx[0]}:{a.mx[1]}", f"{b.mx[0]}:{b.mx[1]}"}
        assert {item["address"] for row in rows for item in row["listeners"] if item["name"] == "mx"} == mx
        wait_for(lambda: all("connections" in row["load"] for row in _listed(two_nodes[1])), timeout=3)
        table = postroom("node", "list", config=two_nodes[1].source)
        assert table.returncode == 0 and table.stdout.count("serving") == 2
    finally:
        a.stop()
    try:
        states = {row["node"]: row["state"] for row in _listed(two_nodes[1])}
        assert states == {"node-a": "stopped", "node-b": "serving"}
    finally:
        b.stop()


def _listed(settings: Settings) -> list[dict[str, object]]:
    listed = postroom("node", "list", "--json", config=settings.source)
    assert listed.returncode == 0, listed.stderr
    rows: list[dict[str, object]] = json.loads(listed.stdout)
    return rows


def test_postgres_notifications_reach_every_listener_and_survive_a_lost_connection(postgres_url: str) -> None:
    listener = Notifications(PostgresChannel(postgres_url))
    received: list[tuple[str, str | None]] = []
    listener.subscribe(DIRECTORY, lambda payload: received.append((DIRECTORY, payload)))
    listener.subscribe(QUEUE, lambda payload: received.append((QUEUE, payload)))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    task = asyncio.run_coroutine_threadsafe(listener.listen(), loop)
    publisher = Notifications(PostgresChannel(postgres_url))
    admin = create_engine(postgres_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        assert listener.listening.wait(10)
        publisher.publish(DIRECTORY, "7")
        publisher.publish(QUEUE)
        wait_for(lambda: received == [(DIRECTORY, "7"), (QUEUE, "")], timeout=3)

        listener.listening.clear()
        with admin.connect() as conn:  # the server drops the listening connection
            ended = conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = 'postroom listen'"
                )
            ).all()
        assert ended == [(True,)]
        assert listener.listening.wait(10)
        wait_for(
            lambda: (DIRECTORY, None) in received and (QUEUE, None) in received, timeout=3
        )  # refresh fully
        publisher.publish(DIRECTORY, "8")
        wait_for(lambda: received[-1] == (DIRECTORY, "8"), timeout=3)
    finally:
        task.cancel()
        wait_for(lambda: not listener.listening.is_set())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        publisher.close()
        listener.close()
        admin.dispose()
