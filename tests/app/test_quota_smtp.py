"""Mailbox quotas at RCPT over real sockets: smtplib against a running node's MX and submission
listeners. A full mailbox is refused 552 5.2.2 at RCPT (traced, never bounced by Postroom); the other
recipients of the transaction get their mail; clearing the quota lets mail in again.

One node serves the module; each test fills its own mailbox, so no test's quota touches another's."""

from __future__ import annotations

import asyncio
import json
import smtplib
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from postroom.app import App
from postroom.app.explain import ExplainRequest, explain
from postroom.model.scope import OPERATOR
from postroom.storage.schema import queue_recipients, trace_events
from tests.app.test_submission import PASSWORD, auth, connect, message
from tests.conftest import populate, wait_for
from tests.support.node import RunningNode, make_node, running


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    settings = make_node(tmp_path_factory.mktemp("quota") / "node")
    app = App.open(settings)
    populate(app)
    app.close()
    with running(settings) as running_node:
        yield running_node


def full_mailbox(node: RunningNode, address: str) -> None:
    """A mailbox of contoso with the test password, a quota of one octet, and one message in it."""
    directory = node.app.directory
    directory.add_mailbox(OPERATOR, address, password=PASSWORD)
    directory.set_mailbox_quota(OPERATOR, address, 1)
    assert mx_send(node, [address], subject="the last one in") == {address: "250", "DATA": "250"}
    # The node's directory cache hears of the quota within a second.
    wait_for(lambda: mx_send(node, [address], data=False)[address] == "552 5.2.2")


def mx_send(
    node: RunningNode, to: list[str], *, subject: str = "hello", data: bool = True, size: int | None = None
) -> dict[str, str]:
    """One MX transaction from outside: each RCPT's code and enhanced code, and DATA's code."""
    smtp = smtplib.SMTP(*node.mx, timeout=15)
    smtp.ehlo("mta.partner.example")
    options = [f"SIZE={size}"] if size is not None else []
    assert smtp.mail("news@partner.example", options)[0] == 250
    outcome = {}
    for recipient in to:
        code, text = smtp.rcpt(recipient)
        outcome[recipient] = f"{code} {text.decode().split()[0]}" if code >= 400 else str(code)
    if data and any(value == "250" for value in outcome.values()):
        outcome["DATA"] = str(smtp.data(message("news@partner.example", to, subject=subject))[0])
    smtp.quit()
    return outcome


def inbox(node: RunningNode, address: str) -> list[str]:
    owner = node.app.directory.get_recipient(OPERATOR, address)
    return [m.subject for m in node.app.mailstore.list_messages(OPERATOR, owner.id, "Inbox")]


def test_a_full_mailbox_is_refused_at_rcpt_and_the_others_get_their_mail(node: RunningNode) -> None:
    full_mailbox(node, "full1@contoso.com")
    smtp = smtplib.SMTP(*node.mx, timeout=15)
    smtp.ehlo("mta.partner.example")
    assert smtp.mail("news@partner.example")[0] == 250
    code, text = smtp.rcpt("full1@contoso.com")
    assert (code, text.decode()) == (552, "5.2.2 Mailbox full: the recipient's mailbox is full")
    assert smtp.rcpt("bob@contoso.com")[0] == 250
    code, text = smtp.data(
        message("news@partner.example", ["full1@contoso.com", "bob@contoso.com"], subject="for bob")
    )
    smtp.quit()
    assert code == 250, text
    assert inbox(node, "full1@contoso.com") == ["the last one in"]
    assert inbox(node, "bob@contoso.com") == ["for bob"]
    with node.app.database.read() as conn:
        queued = conn.execute(select(queue_recipients.c.recipient)).scalars().all()
        failed = conn.execute(
            select(trace_events.c.detail).where(
                (trace_events.c.recipient == "full1@contoso.com") & (trace_events.c.event == "Fail")
            )
        ).scalars()
        details = [json.loads(detail) for detail in failed]
    assert queued == [], "nothing queued: no bounce is ever written for a full mailbox"
    assert {"reply": "552 5.2.2 Mailbox full: the recipient's mailbox is full", "stage": "RCPT"} in details

    # Clearing the quota lets mail in again.
    node.app.directory.set_mailbox_quota(OPERATOR, "full1@contoso.com", 0)
    wait_for(lambda: mx_send(node, ["full1@contoso.com"], data=False)["full1@contoso.com"] == "250")
    assert mx_send(node, ["full1@contoso.com"], subject="room again") == {
        "full1@contoso.com": "250",
        "DATA": "250",
    }
    assert inbox(node, "full1@contoso.com") == ["the last one in", "room again"]


def test_a_declared_size_that_would_pass_the_quota_is_refused(node: RunningNode) -> None:
    directory = node.app.directory
    directory.add_mailbox(OPERATOR, "roomy@contoso.com")
    directory.set_mailbox_quota(OPERATOR, "roomy@contoso.com", 10_000)
    wait_for(
        lambda: (
            mx_send(node, ["roomy@contoso.com"], data=False, size=10_001)["roomy@contoso.com"] == "552 5.2.2"
        )
    )
    assert mx_send(node, ["roomy@contoso.com"], data=False, size=9_000) == {"roomy@contoso.com": "250"}
    assert mx_send(node, ["roomy@contoso.com"], data=False) == {"roomy@contoso.com": "250"}


def test_submission_refuses_a_full_internal_mailbox_at_rcpt(node: RunningNode) -> None:
    full_mailbox(node, "full2@contoso.com")
    node.app.directory.add_mailbox(OPERATOR, "writer@contoso.com", password=PASSWORD)
    smtp = connect(node)
    assert auth(smtp, "writer@contoso.com", PASSWORD)[0] == 235
    assert smtp.mail("writer@contoso.com")[0] == 250
    code, text = smtp.rcpt("full2@contoso.com")
    assert (code, text.decode().split()[0]) == (552, "5.2.2")
    assert smtp.rcpt("alice@contoso.com")[0] == 250
    code, text = smtp.data(
        message("writer@contoso.com", ["full2@contoso.com", "alice@contoso.com"], subject="memo")
    )
    smtp.quit()
    assert code == 250, text
    assert "memo" in inbox(node, "alice@contoso.com")
    assert inbox(node, "full2@contoso.com") == ["the last one in"]


def test_explain_says_a_full_mailbox_is_refused_at_rcpt(node: RunningNode) -> None:
    full_mailbox(node, "full3@contoso.com")
    request = ExplainRequest("news@partner.example", ("full3@contoso.com", "bob@contoso.com"))
    found = asyncio.run(explain(node.app, request))
    outcomes = {stage.recipient: (stage.outcome, stage.reply, stage.detail) for stage in found.recipients}
    assert outcomes["full3@contoso.com"] == (
        "rejected",
        "552 5.2.2 Mailbox full: the recipient's mailbox is full",
        "mailbox-full",
    )
    assert outcomes["bob@contoso.com"][0] == "accepted"
    assert [route.recipient for route in found.routes] == ["bob@contoso.com"]
