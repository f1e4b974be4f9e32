"""The serving node's outbound path with a fake remote agent: a message to a contact is leased as
soon as the MX commits it, a 250 settles it, a 5xx bounces it into the local sender's Inbox."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from postroom.model.scope import OPERATOR
from postroom.storage.schema import queue_recipients
from tests.conftest import Hosted, wait_for
from tests.queue.test_scheduler import UNKNOWN, FakeAgent
from tests.support.node import RunningNode
from tests.support.records import stored_messages

MESSAGE = b"From: alice@contoso.com\r\nSubject: Offer\r\nMessage-ID: <o1@contoso.com>\r\n\r\nHello\r\n"


@pytest.fixture
def agent() -> FakeAgent:
    return FakeAgent({"ext@partner.example": [UNKNOWN]})


@pytest.fixture
def outbound_node(hosted: Hosted, agent: FakeAgent) -> Iterator[RunningNode]:
    hosted.app.directory.add_contact(OPERATOR, "partner@contoso.com", external_address="ext@partner.example")
    hosted.app.directory.add_contact(OPERATOR, "friend@contoso.com", external_address="f@friends.example")
    node = RunningNode(hosted.settings)
    node.app.remote_agent = agent
    node.start()
    yield node
    node.stop()


def queued(node: RunningNode) -> int:
    with node.app.database.read() as conn:
        return int(conn.execute(select(func.count()).select_from(queue_recipients)).scalar_one())


def test_the_node_delivers_and_bounces_through_its_scheduler(
    outbound_node: RunningNode, hosted: Hosted, agent: FakeAgent
) -> None:
    with smtplib.SMTP(*outbound_node.mx) as client:
        client.sendmail("alice@contoso.com", ["friend@contoso.com"], MESSAGE)
        client.sendmail("alice@contoso.com", ["partner@contoso.com"], MESSAGE)
    wait_for(lambda: sorted(agent.recipients) == ["ext@partner.example", "f@friends.example"], timeout=5)
    app = outbound_node.app
    wait_for(lambda: len(stored_messages(app.directory, app.mailstore, "alice@contoso.com")) == 1, timeout=15)
    [dsn] = stored_messages(app.directory, app.mailstore, "alice@contoso.com")
    assert dsn.subject == "Undeliverable: Offer"
    wait_for(lambda: queued(outbound_node) == 0, timeout=5)
    assert sorted(agent.recipients) == ["ext@partner.example", "f@friends.example"]  # each sent once
