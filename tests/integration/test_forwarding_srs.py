"""Forwarding and SRS through the real MX listener, over smtplib: a refused external forward (the
mailbox keeps the message, the forward is queued failed with 5.7.520 for the mailbox owner), an
allowed one (SRS-rewritten sender), and bounces to SRS addresses: accepted from <> only, routed back
to the original sender; forged, foreign-key, expired and malformed ones refused."""

from __future__ import annotations

import json
import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from postroom.app import App
from postroom.model import Address
from postroom.model.flow import TraceStatus
from postroom.model.scope import OPERATOR, TenantScope
from postroom.routing import Srs
from postroom.storage.schema import queue_recipients, trace_events
from postroom.trace import TraceQuery
from tests.conftest import populate
from tests.support.dns_server import DnsTestServer
from tests.support.node import RunningNode, make_node, running

MESSAGE = b"From: sender@origin.example\r\nSubject: hello\r\n\r\nhi\r\n"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    # A DNS server with no zones: every lookup of a remote domain is refused, so remote recipients are
    # deferred and stay in the queue for the assertions (never subject to the machine's resolver).
    no_zones = DnsTestServer().start()
    settings = make_node(tmp_path_factory.mktemp("policy") / "node", nameservers=(str(no_zones.address),))
    app = App.open(settings)
    populate(app)
    d = app.directory
    d.set_forwarding(OPERATOR, "alice@contoso.com", "friend@internet.example")  # contoso: automatic (off)
    d.set_auto_forward(OPERATOR, "fabrikam", "on")
    d.set_forwarding(OPERATOR, "carol@fabrikam.com", "carol.home@internet.example")
    app.close()
    with running(settings) as serving:
        yield serving
    no_zones.stop()


def queued(app: App, message_id_suffix: str) -> list[tuple[str, str, str]]:
    with app.database.read() as conn:
        rows = conn.execute(
            select(
                queue_recipients.c.recipient, queue_recipients.c.original_recipient, queue_recipients.c.route
            ).where(queue_recipients.c.message_id == message_id_suffix)
        ).all()
    return [tuple(row) for row in rows]  # type: ignore[misc]


def send(node: RunningNode, sender: str, rcpts: list[str]) -> str:
    with smtplib.SMTP(*node.mx) as client:
        client.ehlo("mta.origin.example")
        client.mail(sender)
        for rcpt in rcpts:
            code, text = client.rcpt(rcpt)
            assert code == 250, (rcpt, code, text)
        code, text = client.data(MESSAGE)
    assert code == 250, text
    return text.decode().rsplit(" ", 1)[-1]  # "Queued as <id>"


def rcpt_reply(node: RunningNode, sender: str, rcpt: str) -> tuple[int, str]:
    with smtplib.SMTP(*node.mx) as client:
        client.ehlo("mta.origin.example")
        client.mail(sender)
        code, text = client.rcpt(rcpt)
        client.rset()
    return code, text.decode()


def test_a_refused_forward_keeps_the_message_and_queues_a_5_7_520_failure(node: RunningNode) -> None:
    app = node.app
    message_id = send(node, "sender@origin.example", ["alice@contoso.com"])
    contoso = TenantScope(app.directory.get_tenant(OPERATOR, "contoso").id)
    rows = {
        r.recipient: r.status for r in app.trace.search(TraceQuery(), contoso) if r.message_id == message_id
    }
    assert rows == {"alice@contoso.com": TraceStatus.DELIVERED, "friend@internet.example": TraceStatus.FAILED}
    assert queued(app, message_id) == [("friend@internet.example", "friend@internet.example", "remote")]
    detail = app.trace.detail(message_id, contoso)
    assert detail is not None
    fails = [e.detail for e in detail.events if e.event == "Fail"]
    assert fails == [
        {
            "reply": "550 5.7.520 Access denied, your organization does not allow external forwarding",
            "forwarded_by": "alice@contoso.com",
        }
    ]
    redirects = [e.detail for e in detail.events if e.event == "Redirect"]
    assert redirects[0]["refused"] == fails[0]["reply"]


def test_an_allowed_forward_leaves_with_an_srs_sender(node: RunningNode) -> None:
    app = node.app
    message_id = send(node, "sender@origin.example", ["carol@fabrikam.com"])
    assert queued(app, message_id) == [
        ("carol.home@internet.example", "carol.home@internet.example", "remote")
    ]
    with app.database.read() as conn:
        [detail] = conn.execute(
            select(trace_events.c.detail).where(
                (trace_events.c.message_id == message_id) & (trace_events.c.event == "Redirect")
            )
        ).scalars()
    rewritten = json.loads(detail)["envelope_sender"]
    assert rewritten.startswith("SRS0=") and rewritten.endswith("@postroom.test")
    assert app.srs().reverse(Address.parse(rewritten)) == Address.parse("sender@origin.example")


def test_a_bounce_to_our_srs_address_is_accepted_and_routed_back(node: RunningNode) -> None:
    srs = node.app.srs()  # the serving node's key, read from the same file
    address = srs.forward("sender@origin.example")
    message_id = send(node, "", [address])
    assert queued(node.app, message_id) == [("sender@origin.example", address, "remote")]
    # A relay that changed the case on the way still reaches the same sender.
    message_id = send(node, "", [address.upper()])
    assert [row[0].lower() for row in queued(node.app, message_id)] == ["sender@origin.example"]
    # An SRS address of a local sender goes to the mailbox.
    local = srs.forward("bob@contoso.com")
    message_id = send(node, "", [local])
    assert queued(node.app, message_id) == []
    contoso = TenantScope(node.app.directory.get_tenant(OPERATOR, "contoso").id)
    rows = [
        (r.recipient, r.status, r.resolved)
        for r in node.app.trace.search(TraceQuery(), contoso)
        if r.message_id == message_id
    ]
    assert rows == [(local, TraceStatus.DELIVERED, "bob@contoso.com")]


def test_an_srs_address_is_not_a_relay_for_anyone_else(node: RunningNode) -> None:
    srs = node.app.srs()
    valid = srs.forward("victim@target.example")
    code, text = rcpt_reply(node, "spammer@evil.example", valid)
    assert (code, text[:5]) == (550, "5.7.1")
    key = Path(node.settings.srs_secret_path).read_bytes().strip()
    forged = [
        "SRS0=AAAAAA=AB=target.example=victim@postroom.test",
        Srs("postroom.test", b"attacker key").forward("victim@target.example"),
        Srs("postroom.test", key, clock=lambda: 1_000_000.0).forward("victim@target.example"),  # long expired
        "SRS0=" + valid.split("=", 1)[1].replace("victim", "other"),  # a valid hash on another address
        "SRS1=AAAAAA=fwd.example==x@postroom.test",
        "srs0=garbage@postroom.test",
    ]
    for address in forged:
        code, text = rcpt_reply(node, "", address)
        assert (code, text[:5]) == (550, "5.1.1"), address
