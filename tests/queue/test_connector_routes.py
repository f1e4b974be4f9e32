"""The queue with outbound connectors: a recipient's connector from spool to lease to the attempt the
agent gets, routes grouped by (destination, connector), a connector failure retried for 24 hours and
then bounced with its own code, and what queue show says of the connector (never another tenant's)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select, update

from postroom.app.outbound import write_trace
from postroom.directory import Directory
from postroom.mailstore import Mailstore
from postroom.model import replies
from postroom.model.connectors import ConnectorType
from postroom.model.scope import OPERATOR, TenantScope
from postroom.queue import QueueControl
from postroom.storage import BlobStore, Database, FileBlobStore, GroupCommitter
from postroom.storage.schema import queue_recipients
from tests.queue.test_scheduler import (
    CONTENT,
    DAY,
    START,
    Clock,
    FakeAgent,
    delivery_status,
    events,
    parse,
    rows,
    scheduler,
)
from tests.support.outbound_connectors import add_outbound_connector, remove_outbound_connector
from tests.support.records import Org, exported, populate, receive, stored_messages


@pytest.fixture
def org(directory: Directory) -> Org:
    found = populate(directory)
    directory.add_contact(OPERATOR, "other@contoso.com", external_address="ext2@partner.example")
    directory.add_contact(OPERATOR, "elsewhere@contoso.com", external_address="someone@elsewhere.example")
    return found


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


@pytest.fixture
def partner(database: Database, org: Org) -> int:
    return add_outbound_connector(
        database,
        org.contoso,
        "Partner TLS",
        ConnectorType.PARTNER,
        recipient_domains=["partner.example"],
        smart_hosts=["smtp.partner.example"],
    )


async def test_the_connector_goes_from_spool_to_the_attempt_and_routes_are_grouped_by_it(
    database: Database, org: Org, blobs: BlobStore, committer: GroupCommitter, partner: int
) -> None:
    recipients = ["partner@contoso.com", "other@contoso.com", "elsewhere@contoso.com"]
    message_id = receive(database, blobs, "alice@contoso.com", recipients, CONTENT, at=START)
    with database.read() as conn:
        stored = {r.recipient: r.connector_id for r in conn.execute(select(queue_recipients))}
    assert stored == {
        "ext@partner.example": partner,
        "ext2@partner.example": partner,
        "someone@elsewhere.example": None,
    }
    agent = FakeAgent()
    assert await scheduler(committer, agent, blobs, Clock()).round() == 3
    calls = sorted(
        (
            (a.destination, a.connector_id, sorted(r.recipient for r in a.recipients))
            for call in agent.calls
            for a in call
        ),
        key=str,
    )
    assert calls == [
        ("elsewhere.example", None, ["someone@elsewhere.example"]),
        ("partner.example", partner, ["ext2@partner.example", "ext@partner.example"]),
    ]
    assert len(agent.calls) == 2  # one delivery per route
    send = [e for e in events(database, message_id) if e[0] == "Send"]
    assert {e[1]: e[2].get("connector_id") for e in send} == {
        "partner@contoso.com": partner,
        "other@contoso.com": partner,
        "elsewhere@contoso.com": None,
    }


async def test_a_connector_failure_is_retried_24_hours_then_bounced_with_its_code(
    database: Database,
    org: Org,
    blobs: BlobStore,
    committer: GroupCommitter,
    directory: Directory,
    mailstore: Mailstore,
    partner: int,
) -> None:
    message_id = receive(database, blobs, "alice@contoso.com", ["partner@contoso.com"], CONTENT, at=START)
    refused = replies.CONNECTOR_REFUSED.with_text(f"{replies.CONNECTOR_REFUSED.text} (smtp.partner.example)")
    clock = Clock()
    runner = scheduler(committer, FakeAgent(default=refused), blobs, clock)
    await runner.round()
    with database.read() as conn:
        row = conn.execute(select(queue_recipients)).one()
    assert row.state == "deferred" and row.expires_at == START + DAY  # a day, not the queue's two
    tries = 0
    while rows(database) and tries < 200:
        await runner.round()
        tries += 1
        with database.read() as conn:
            due = conn.execute(select(queue_recipients.c.next_attempt_at)).scalar()
        if due is not None:
            clock.now = max(clock.now, due)
    assert not rows(database), "the recipient never expired"
    assert START + DAY <= clock.now < START + DAY + 3600.0 + 1
    inbox = stored_messages(directory, mailstore, "alice@contoso.com")
    assert [m.subject for m in inbox][-1] == "Undeliverable: Quarterly numbers"
    failed = parse(exported(directory, mailstore, "alice@contoso.com", inbox[-1].uid))
    _, [recipient] = delivery_status(failed)
    assert recipient["Action"] == "failed"
    assert recipient["Status"] == "4.4.316"
    assert recipient["Diagnostic-Code"].startswith("smtp; 550 4.4.316 Connection refused")
    assert "retried for 24 hours" in recipient["Diagnostic-Code"]
    readable = failed.get_payload()[0].get_content()  # type: ignore[index]
    assert "connector" in readable and "postroom connector validate" in readable
    fail = [e for e in events(database, message_id) if e[0] == "Fail"][-1]
    assert str(fail[2]["reply"]).startswith("550 4.4.316")


async def test_other_deferrals_of_a_connector_route_keep_the_queues_expiry(
    database: Database, org: Org, blobs: BlobStore, committer: GroupCommitter, partner: int
) -> None:
    receive(database, blobs, "alice@contoso.com", ["partner@contoso.com"], CONTENT, at=START)
    await scheduler(committer, FakeAgent(default=replies.LOCAL_ERROR), blobs, Clock()).round()
    with database.read() as conn:
        assert conn.execute(select(queue_recipients.c.expires_at)).scalar() == START + 2 * DAY


def test_queue_show_names_the_connector_of_the_rows_own_tenant_only(
    database: Database, org: Org, blobs: BlobStore, partner: int
) -> None:
    control = QueueControl(database, write_trace, Clock())
    message_id = receive(
        database,
        blobs,
        "alice@contoso.com",
        ["partner@contoso.com", "elsewhere@contoso.com"],
        CONTENT,
        at=START,
    )
    shown = {
        r.recipient: (r.connector_id, r.connector, r.route)
        for r in control.show(OPERATOR, message_id).recipients
    }
    assert shown == {
        "ext@partner.example": (partner, "Partner TLS", "partner.example via Partner TLS"),
        "someone@elsewhere.example": (None, "", "elsewhere.example"),
    }
    [listed] = control.list_messages(TenantScope(org.contoso))
    assert listed.routes == ["elsewhere.example", "partner.example via Partner TLS"]
    assert control.list_messages(TenantScope(org.fabrikam)) == []
    # A row pointing at another tenant's connector (never written by routing) shows no name of it.
    theirs = add_outbound_connector(
        database, org.fabrikam, "Fabrikam secret", recipient_domains=["x.example"]
    )
    with database.write() as conn:
        conn.execute(
            update(queue_recipients)
            .where(queue_recipients.c.connector_id == partner)
            .values(connector_id=theirs)
        )
    [row] = [r for r in control.show(OPERATOR, message_id).recipients if r.connector_id is not None]
    assert row.connector == "" and "Fabrikam" not in row.route
    # A removed connector: its id, and the row goes by MX.
    remove_outbound_connector(database, org.fabrikam, theirs)
    [row] = [r for r in control.show(TenantScope(org.contoso), message_id).recipients if r.connector_id]
    assert row.route == f"partner.example via connector {theirs} (removed: sent by MX)"
