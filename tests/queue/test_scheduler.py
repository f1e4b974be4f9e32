"""The scheduler with a fake remote agent whose replies each test chooses: leases, settling by reply
(2xx, 4xx with retries until expiry, 5xx), DSNs where the sender sees them, delay notices, leases
that outlive a crash, and failures that never lose a row. Time is an injected clock."""

from __future__ import annotations

import asyncio
import email
import email.policy
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import Connection, func, select

from postroom.app.outbound import DsnSink, write_trace
from postroom.directory import Directory
from postroom.mailstore import Mailstore
from postroom.model import Reply
from postroom.model.outbound import DeliveryAttempt, RecipientResult
from postroom.model.scope import OPERATOR
from postroom.queue import (
    DeliveryPolicy,
    LeasedRecipient,
    LeaseTokens,
    Reporter,
    RetryPolicy,
    Scheduler,
    TraceRows,
    always_allowed,
    lease_due,
    settle_results,
)
from postroom.storage import BlobStore, Database, FileBlobStore, GroupCommitter
from postroom.storage.schema import queue_recipients, spool_messages
from postroom.trace import TraceService
from tests.support.records import Org, exported, populate, receive, stored_messages

OK = Reply(250, "2.0.0", "Queued as 42")
BUSY = Reply(451, "4.7.1", "Greylisted, try again later")
UNKNOWN = Reply(550, "5.1.1", "No such user here")
DAY = 86_400.0
START = 1_000_000.0

CONTENT = (
    b"From: Alice <alice@contoso.com>\r\n"
    b"To: ext@partner.example\r\n"
    b"Subject: Quarterly numbers\r\n"
    b"Message-ID: <q1@contoso.com>\r\n"
    b"\r\n"
    b"Numbers attached.\r\n"
)


class Clock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeAgent:
    """Answers each recipient with its next scripted reply (the last one repeats)."""

    script: dict[str, list[Reply]] = field(default_factory=dict)
    default: Reply = OK
    calls: list[list[DeliveryAttempt]] = field(default_factory=list)
    raises: bool = False
    hold: asyncio.Event | None = None  # set: answer; unset: hang until cancelled

    async def deliver(self, attempts: Sequence[DeliveryAttempt]) -> list[RecipientResult]:
        self.calls.append(list(attempts))
        if self.hold is not None:
            await self.hold.wait()
        if self.raises:
            raise RuntimeError("the agent broke")
        results = []
        for attempt in attempts:
            for r in attempt.recipients:
                queue = self.script.get(r.recipient, [])
                reply = queue.pop(0) if len(queue) > 1 else (queue[0] if queue else self.default)
                results.append(
                    RecipientResult(r.queue_id, reply, "mx.partner.example", "192.0.2.25", "TLSv1.3")
                )
        return results

    @property
    def recipients(self) -> list[str]:
        return [r.recipient for call in self.calls for a in call for r in a.recipients]


@pytest.fixture
def org(directory: Directory) -> Org:
    return populate(directory)


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    return FileBlobStore(tmp_path / "blobs")


@pytest.fixture
def mailstore(database: Database, blobs: BlobStore) -> Mailstore:
    return Mailstore(database, blobs)


@pytest.fixture
async def committer(database: Database) -> AsyncIterator[GroupCommitter]:
    writer = GroupCommitter(database)
    writer.start()
    yield writer
    await asyncio.to_thread(writer.stop)


POLICY = DeliveryPolicy(
    retry=RetryPolicy((300.0, 600.0, 3600.0), 2 * DAY),
    batch_max=50,
    lease_seconds=300.0,
    delay_notification=4 * 3600.0,
)


def scheduler(
    committer: GroupCommitter,
    agent: FakeAgent | None,
    blobs: BlobStore,
    clock: Clock,
    *,
    policy: DeliveryPolicy = POLICY,
    ndr_allowed: Callable[[int | None, str], bool] = always_allowed,
) -> Scheduler:
    reporter = Reporter(
        reporting_mta="mx.postroom.test",
        postmaster_for=lambda tenant: "postmaster@contoso.postroom.test",
        submit_generated=DsnSink(blobs, max_recipients=100),
        blobs=blobs,
        ndr_allowed=ndr_allowed,
    )
    return Scheduler(committer, agent, policy, write_trace=write_trace, reporter=reporter, clock=clock)


def rows(database: Database) -> list[tuple[str, str, int]]:
    q = queue_recipients
    with database.read() as conn:
        return [(r.recipient, r.state, r.attempts) for r in conn.execute(select(q).order_by(q.c.id))]


def events(database: Database, message_id: str) -> list[tuple[str, str, dict[str, object]]]:
    detail = TraceService(database).detail(message_id, OPERATOR)
    assert detail is not None
    return [(e.event, e.recipient, e.detail) for e in detail.events]


def parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def delivery_status(dsn: EmailMessage) -> tuple[dict[str, str], list[dict[str, str]]]:
    """(per-message fields, per-recipient fields) of a DSN's message/delivery-status part."""
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    text, status, headers = dsn.get_payload()  # type: ignore[misc]
    assert text.get_content_type() == "text/plain"
    assert status.get_content_type() == "message/delivery-status"
    assert headers.get_content_type() == "text/rfc822-headers"
    blocks = status.get_payload()
    fields = [{k: str(v) for k, v in block.items()} for block in blocks]
    return fields[0], fields[1:]


async def test_a_2xx_settles_the_recipient_and_traces_send(
    database: Database, org: Org, blobs: BlobStore, committer: GroupCommitter
) -> None:
    message_id = receive(database, blobs, "alice@contoso.com", ["partner@contoso.com"], CONTENT, at=START)
    agent = FakeAgent()
    assert await scheduler(committer, agent, blobs, Clock()).round() == 1
    [[attempt]] = agent.calls
    assert (attempt.destination, attempt.sender, attempt.message.id) == (
        "partner.example",
        "alice@contoso.com",
        message_id,
    )
    assert [r.recipient for r in attempt.recipients] == ["ext@partner.example"]
    assert attempt.message.tenant_id == org.contoso
    assert attempt.message.prefix.startswith(b"Received:")
    assert rows(database) == []
    with database.read() as conn:
        assert conn.execute(select(func.count()).select_from(spool_messages)).scalar() == 0
    [send] = [e for e in events(database, message_id) if e[0] == "Send"]
    assert send[1] == "partner@contoso.com"
    assert send[2]["remote_host"] == "mx.partner.example"
    assert send[2]["remote_ip"] == "192.0.2.25"
    assert send[2]["tls"] == "TLSv1.3"
    assert send[2]["reply"] == str(OK) and send[2]["status"] == "delivered"
    detail = TraceService(database).detail(message_id, OPERATOR)
    assert detail is not None and [r.status.value for r in detail.recipients] == ["delivered"]
    assert await scheduler(committer, agent, blobs, Clock()).round() == 0
    assert len(agent.calls) == 1  # delivered once, never again


async def test_a_4xx_defers_on_the_schedule_then_a_2xx_delivers(
    database: Database, org: Org, blobs: BlobStore, committer: GroupCommitter
) -> None:
    message_id = receive(database, blobs, "alice@contoso.com", ["partner@contoso.com"], CONTENT, at=START)
    clock = Clock()
    agent = FakeAgent({"ext@partner.example": [BUSY, BUSY, OK]})
    runner = scheduler(committer, agent, blobs, clock)
    await runner.round()
    assert rows(database) == [("ext@partner.example", "deferred", 1)]
    with database.read() as conn:
        row = conn.execute(select(queue_recipients)).one()
    assert row.next_attempt_at == START + 300.0
    assert row.last_reply == str(BUSY) and row.remote_mta == "mx.partner.example"
    assert row.lease_owner is None and row.expires_at == START + 2 * DAY
    clock.now = START + 299.0
    assert await runner.round() == 0  # not due yet
    clock.now = START + 300.0
    await runner.round()
    assert rows(database) == [("ext@partner.example", "deferred", 2)]
    clock.now += 600.0  # the second step of the schedule
    await runner.round()
    assert rows(database) == []
    assert [e[0] for e in events(database, message_id) if e[0] in ("Defer", "Send")] == [
        "Defer",
        "Defer",
        "Send",
    ]
    defer = next(e for e in events(database, message_id) if e[0] == "Defer")
    assert defer[2]["reply"] == str(BUSY) and defer[2]["attempts"] == 1


async def test_expiry_fails_with_4_4_7_and_the_local_sender_gets_delayed_then_failed_dsns(
    database: Database,
    org: Org,
    blobs: BlobStore,
    committer: GroupCommitter,
    directory: Directory,
    mailstore: Mailstore,
) -> None:
    message_id = receive(database, blobs, "alice@contoso.com", ["partner@contoso.com"], CONTENT, at=START)
    clock = Clock()
    runner = scheduler(committer, FakeAgent(default=BUSY), blobs, clock)
    tries = 0
    while rows(database) and tries < 200:
        await runner.round()
        tries += 1
        with database.read() as conn:
            due = conn.execute(select(func.min(queue_recipients.c.next_attempt_at))).scalar()
        if due is not None:
            clock.now = max(clock.now, due)
    assert not rows(database), "the recipient never expired"
    assert START + 2 * DAY <= clock.now < START + 2 * DAY + 3600.0 + 1
    inbox = stored_messages(directory, mailstore, "alice@contoso.com")
    assert [m.subject for m in inbox] == [
        "Delivery delayed: Quarterly numbers",
        "Undeliverable: Quarterly numbers",
    ]
    delayed, failed = (parse(exported(directory, mailstore, "alice@contoso.com", m.uid)) for m in inbox)
    assert delayed["Return-Path"] == "<>"
    _, [notice] = delivery_status(delayed)
    assert notice["Action"] == "delayed" and notice["Status"] == "4.7.1"
    assert "Will-Retry-Until" in notice
    assert failed["From"] == "Mail Delivery System <postmaster@contoso.postroom.test>"
    assert failed["To"] == "alice@contoso.com"
    assert failed["Auto-Submitted"] == "auto-replied"
    assert failed["In-Reply-To"] == "<q1@contoso.com>"
    per_message, [recipient] = delivery_status(failed)
    assert per_message["Reporting-MTA"] == "dns; mx.postroom.test"
    assert "Arrival-Date" in per_message
    assert recipient["Final-Recipient"] == "rfc822; ext@partner.example"
    assert recipient["Original-Recipient"] == "rfc822; partner@contoso.com"
    assert recipient["Action"] == "failed"
    assert recipient["Status"] == "4.4.7"
    assert recipient["Remote-MTA"] == "dns; mx.partner.example"
    assert recipient["Diagnostic-Code"].startswith("smtp; 550 4.4.7 QUEUE.Expired")
    assert "4.7.1 Greylisted" in recipient["Diagnostic-Code"]  # the last reply, for the admin
    assert "Last-Attempt-Date" in recipient
    text, _, original = failed.get_payload()  # type: ignore[misc]
    readable = text.get_content()
    assert (
        "couldn't be delivered" in readable
        and "How to fix it" in readable
        and "Who should fix it" in readable
    )
    returned = original.get_payload()
    assert "Subject: Quarterly numbers" in returned and "Message-ID: <q1@contoso.com>" in returned
    assert "Numbers attached" not in returned  # headers only
    kinds = [e[0] for e in events(database, message_id)]
    assert kinds.count("DSN") == 2 and kinds[-2:] == ["Fail", "DSN"]
    fail = [e for e in events(database, message_id) if e[0] == "Fail"][-1]
    assert "4.4.7" in str(fail[2]["reply"])


async def test_a_5xx_fails_and_an_external_sender_gets_a_dsn_through_the_queue(
    database: Database, org: Org, blobs: BlobStore, committer: GroupCommitter
) -> None:
    message_id = receive(database, blobs, "someone@example.net", ["partner@contoso.com"], CONTENT, at=START)
    agent = FakeAgent({"ext@partner.example": [UNKNOWN]})
    runner = scheduler(committer, agent, blobs, Clock())
    await runner.round()
    assert rows(database) == [("ext@partner.example", "failed", 1)]
    await runner.round()  # the DSN round: the DSN is queued for example.net, and sent in this round
    attempts = [a for call in agent.calls for a in call]
    dsn_attempt = attempts[-1]
    assert (dsn_attempt.destination, dsn_attempt.sender) == ("example.net", "")
    assert [r.recipient for r in dsn_attempt.recipients] == ["someone@example.net"]
    dsn = parse(blobs.get(dsn_attempt.message.blob_id))
    assert dsn["Subject"] == "Undeliverable: Quarterly numbers"
    _, [recipient] = delivery_status(dsn)
    assert (recipient["Action"], recipient["Status"]) == ("failed", "5.1.1")
    assert recipient["Diagnostic-Code"] == f"smtp; {UNKNOWN}"
    assert rows(database) == []
    dsn_event = [e for e in events(database, message_id) if e[0] == "DSN"]
    assert dsn_event and dsn_event[0][2]["dsn"] == dsn_attempt.message.id
    assert events(database, dsn_attempt.message.id)[0][2] == {"generated": "DSN", "regarding": message_id}


async def test_a_dsn_to_a_local_sender_is_in_their_inbox_at_once(
    database: Database,
    org: Org,
    blobs: BlobStore,
    committer: GroupCommitter,
    directory: Directory,
    mailstore: Mailstore,
) -> None:
    receive(database, blobs, "al@contoso.com", ["partner@contoso.com"], CONTENT, at=START)
    agent = FakeAgent({"ext@partner.example": [UNKNOWN]})
    runner = scheduler(committer, agent, blobs, Clock())
    await runner.round()
    await runner.round()
    [dsn] = stored_messages(directory, mailstore, "alice@contoso.com")
    assert dsn.subject == "Undeliverable: Quarterly numbers"
    assert len(agent.calls) == 1  # nothing was sent out for it
    assert rows(database) == []


DSN_CONTENT = (
    b"From: postmaster@partner.example\r\n"
    b"Subject: Undeliverable\r\n"
    b'Content-Type: multipart/report; report-type="Delivery-Status"; boundary="b"\r\n'
    b"\r\n--b--\r\n"
)
AUTO_REPLY = b"From: ooo@partner.example\r\nAuto-Submitted: auto-replied\r\nSubject: Away\r\n\r\nAway.\r\n"


@pytest.mark.parametrize(
    ("sender", "content", "reason"),
    [
        ("", CONTENT, "null sender"),
        ("someone@example.net", DSN_CONTENT, "itself a report"),
        ("someone@example.net", AUTO_REPLY, "auto-submitted"),
    ],
    ids=["null-sender", "dsn", "auto-submitted"],
)
async def test_no_dsn_to_the_null_sender_nor_for_a_report(
    database: Database,
    org: Org,
    blobs: BlobStore,
    committer: GroupCommitter,
    sender: str,
    content: bytes,
    reason: str,
) -> None:
    message_id = receive(database, blobs, sender, ["partner@contoso.com"], content, at=START)
    agent = FakeAgent({"ext@partner.example": [UNKNOWN]})
    runner = scheduler(committer, agent, blobs, Clock())
    await runner.round()
    await runner.round()
    assert rows(database) == []  # settled all the same
    assert len(agent.calls) == 1
    with database.read() as conn:
        assert conn.execute(select(func.count()).select_from(spool_messages)).scalar() == 0
    [dsn] = [e for e in events(database, message_id) if e[0] == "DSN"]
    assert reason in str(dsn[2]["suppressed"]) and "dsn" not in dsn[2]


async def test_no_dsn_where_the_remote_domain_refuses_ndrs(
    database: Database, org: Org, blobs: BlobStore, committer: GroupCommitter
) -> None:
    asked: list[tuple[int | None, str]] = []

    def ndr_allowed(tenant_id: int | None, domain: str) -> bool:
        asked.append((tenant_id, domain))
        return False

    message_id = receive(database, blobs, "someone@Example.NET", ["partner@contoso.com"], CONTENT, at=START)
    runner = scheduler(committer, FakeAgent(default=UNKNOWN), blobs, Clock(), ndr_allowed=ndr_allowed)
    await runner.round()
    await runner.round()
    assert asked == [(org.contoso, "example.net")]
    [dsn] = [e for e in events(database, message_id) if e[0] == "DSN"]
    assert "example.net" in str(dsn[2]["suppressed"])


async def test_one_delay_notification_per_recipient(
    database: Database,
    org: Org,
    blobs: BlobStore,
    committer: GroupCommitter,
    directory: Directory,
    mailstore: Mailstore,
) -> None:
    receive(database, blobs, "alice@contoso.com", ["partner@contoso.com"], CONTENT, at=START)
    clock = Clock()
    runner = scheduler(committer, FakeAgent(default=BUSY), blobs, clock)
    await runner.round()
    clock.now = START + 4 * 3600.0 - 1
    await runner.round()
    assert stored_messages(directory, mailstore, "alice@contoso.com") == []
    for step in range(3):
        clock.now = START + 4 * 3600.0 + step * 3600.0
        await runner.round()
    inbox = stored_messages(directory, mailstore, "alice@contoso.com")
    assert [m.subject for m in inbox] == ["Delivery delayed: Quarterly numbers"]
    assert rows(database)[0][1] == "deferred"  # still being retried


async def test_a_crash_mid_delivery_leaves_leases_that_expire_and_are_retried(
    database: Database, org: Org, blobs: BlobStore, committer: GroupCommitter
) -> None:
    message_id = receive(database, blobs, "alice@contoso.com", ["partner@contoso.com"], CONTENT, at=START)
    clock = Clock()
    hung = FakeAgent(hold=asyncio.Event())
    crashed = scheduler(committer, hung, blobs, clock)
    task = asyncio.ensure_future(crashed.round())
    while not hung.calls:
        await asyncio.sleep(0.01)
    task.cancel()  # the process dies: its in-memory work is gone, its lease stays in the database
    with pytest.raises(asyncio.CancelledError):
        await task
    with database.read() as conn:
        row = conn.execute(select(queue_recipients)).one()
    assert row.lease_owner.startswith(crashed.tokens.owner) and row.lease_until == START + 300.0
    survivor = FakeAgent()
    other = scheduler(committer, survivor, blobs, clock)
    assert await other.round() == 0  # still leased
    clock.now = START + 301.0
    assert await other.round() == 1
    assert survivor.recipients == ["ext@partner.example"] and rows(database) == []
    # The crashed worker's result comes late: it is not applied twice.
    leased = LeasedRecipient(
        queue_id=row.id,
        message_id=row.message_id,
        tenant_id=row.tenant_id,
        recipient=row.recipient,
        original_recipient=row.original_recipient,
        also_settles=(),
        attempts=0,
        destination=row.destination,
        sender="alice@contoso.com",
        blob_id="",
        prefix=b"",
        size=0,
        received_at=START,
    )
    late = [(leased, RecipientResult(leased.queue_id, BUSY))]
    with database.write() as conn:
        trace = settle_results(conn, f"{crashed.tokens.owner}/1", late, clock.now, POLICY.retry)
    assert trace.events == [] and rows(database) == []
    assert [e[0] for e in events(database, message_id)].count("Send") == 1


async def test_a_stale_result_is_dropped_but_a_stale_250_still_counts_as_delivered(
    database: Database, org: Org, blobs: BlobStore
) -> None:
    receive(database, blobs, "alice@contoso.com", ["partner@contoso.com"], CONTENT, at=START)
    tokens = LeaseTokens("node-a:1:x")
    with database.write() as conn:
        first = lease_due(conn, token=tokens.next(), now=START, lease_seconds=300.0, limit=10)
    with database.write() as conn:
        second = lease_due(conn, token=tokens.next(), now=START + 400.0, lease_seconds=300.0, limit=10)
    assert first.recipients[0].queue_id == second.recipients[0].queue_id and first.token != second.token
    [leased] = first.recipients
    with database.write() as conn:
        stale = settle_results(
            conn,
            first.token,
            [(leased, RecipientResult(leased.queue_id, UNKNOWN))],
            START + 401,
            POLICY.retry,
        )
    assert stale.events == [] and rows(database) == [("ext@partner.example", "pending", 0)]
    with database.write() as conn:
        delivered = settle_results(
            conn, first.token, [(leased, RecipientResult(leased.queue_id, OK))], START + 402, POLICY.retry
        )
    assert [e.event.value for e in delivered.events] == ["Send"] and rows(database) == []
    with database.write() as conn:  # the second lease's answer now finds nothing to settle
        assert (
            settle_results(
                conn,
                second.token,
                [(leased, RecipientResult(leased.queue_id, BUSY))],
                START + 403,
                POLICY.retry,
            ).events
            == []
        )


async def test_an_agent_that_raises_defers_and_a_failed_settle_loses_nothing(
    database: Database, org: Org, blobs: BlobStore, committer: GroupCommitter
) -> None:
    receive(database, blobs, "alice@contoso.com", ["partner@contoso.com"], CONTENT, at=START)
    clock = Clock()
    await scheduler(committer, FakeAgent(raises=True), blobs, clock).round()
    assert rows(database) == [("ext@partner.example", "deferred", 1)]
    with database.read() as conn:
        assert "4.3.0" in conn.execute(select(queue_recipients.c.last_reply)).scalar_one()

    failures = []

    def broken_trace(conn: Connection, rows_: TraceRows, now: float) -> None:
        failures.append(now)
        raise RuntimeError("trace is down")

    clock.now += 300.0
    broken = Scheduler(committer, FakeAgent(), POLICY, write_trace=broken_trace, clock=clock)
    assert await broken.round() == 0
    assert failures and rows(database) == [("ext@partner.example", "deferred", 1)]  # still queued, leased
    clock.now += 301.0
    agent = FakeAgent()
    assert await scheduler(committer, agent, blobs, clock).round() == 1
    assert rows(database) == []


async def test_the_run_loop_delivers_on_wake_and_renews_long_leases(
    database: Database, org: Org, blobs: BlobStore, committer: GroupCommitter
) -> None:
    policy = DeliveryPolicy(retry=POLICY.retry, lease_seconds=0.3)
    gate = asyncio.Event()
    agent = FakeAgent(hold=gate)
    runner = Scheduler(committer, agent, policy, write_trace=write_trace, idle_interval=30.0)
    task = asyncio.ensure_future(runner.run())
    try:
        await asyncio.sleep(0.05)
        receive(database, blobs, "alice@contoso.com", ["partner@contoso.com"], CONTENT, at=time.time())
        runner.wake()
        while not agent.calls:
            await asyncio.sleep(0.01)
        with database.read() as conn:
            first_until = conn.execute(select(queue_recipients.c.lease_until)).scalar_one()
        await asyncio.sleep(0.5)  # longer than the lease: renewed meanwhile
        with database.read() as conn:
            renewed = conn.execute(select(queue_recipients.c.lease_until)).scalar_one()
        assert renewed > first_until and renewed > time.time()
        with database.write() as conn:  # another node finds nothing to take
            assert (
                lease_due(conn, token="other/1", now=time.time(), lease_seconds=1.0, limit=10).recipients
                == ()
            )
        gate.set()
        while rows(database):
            await asyncio.sleep(0.01)
    finally:
        runner.stop()
        await asyncio.wait_for(task, 5)
    assert len(agent.calls) == 1 and runner.settled == 1
