"""The hosted scenario end to end: mail from the internet to the real MX endpoint lands in mailboxes.

Driven by smtplib over loopback against `App.serve`; asserts what a user sees: reply codes, where
the message landed, its exact bytes, and the trace.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from collections.abc import Iterator

import pytest

from postroom.app import App
from postroom.model.flow import TraceStatus
from postroom.model.scope import OPERATOR, TenantScope
from postroom.trace import TraceQuery
from tests.conftest import Hosted, populate, wait_for
from tests.support.node import RunningNode, make_node, running, with_limits
from tests.support.records import exported, stored_messages

MESSAGE = (
    b"From: Partner <news@partner.example>\r\n"
    b"To: Team <team@contoso.com>\r\n"
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
    b"Message-ID: <golden-1@partner.example>\r\n"
    b"Date: Fri, 27 Nov 2026 08:00:00 +0000\r\n"
    b"\r\n"
    b"Hello team.\r\n"
    b"..A line that started with a dot.\r\n"
    b"Trailing spaces stay   \r\n"
)
STORED_BODY = MESSAGE  # smtplib dot-stuffs on the wire; the server unstuffs: the bytes come back exact


@pytest.fixture(scope="module")
def refusing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Hosted, RunningNode]]:
    """One node for the module's refusal tests: each is refused before anything is stored, so they
    share it (and its empty queue) instead of starting one each."""
    settings = make_node(tmp_path_factory.mktemp("refusing"))
    app = App.open(settings)
    populate(app)
    try:
        with running(settings) as node:
            yield Hosted(settings, app), node
    finally:
        app.close()


def inbox(hosted: Hosted, address: str) -> list[bytes]:
    app = hosted.app
    return [
        exported(app.directory, app.mailstore, address, m.uid)
        for m in stored_messages(app.directory, app.mailstore, address)
    ]


def test_mail_to_group_alias_and_mailbox_is_delivered_once_each(hosted: Hosted, mx_node: RunningNode) -> None:
    with smtplib.SMTP(*mx_node.mx) as client:
        refused = client.sendmail(
            "news@partner.example", ["team@contoso.com", "AL@Contoso.com", "bob@contoso.com"], MESSAGE
        )
    assert refused == {}
    wait_for(
        lambda: len(inbox(hosted, "alice@contoso.com")) == 1 and len(inbox(hosted, "bob@contoso.com")) == 1
    )
    for address in ("alice@contoso.com", "bob@contoso.com"):
        [raw] = inbox(hosted, address)
        headers, _, _ = raw.partition(b"\r\n\r\n")
        assert raw.startswith(b"Return-Path: <news@partner.example>\r\n")
        assert f"Delivered-To: {address}".encode() in headers
        assert b"Received: from " in headers and b"by mx.postroom.test (Postroom)" in raw
        assert raw.endswith(STORED_BODY), "the body is stored exactly as sent"
    [listed] = stored_messages(hosted.app.directory, hosted.app.mailstore, "alice@contoso.com")
    assert listed.subject == "Grüße"
    assert listed.message_id == "<golden-1@partner.example>"


def test_unknown_recipient_is_refused_at_rcpt_by_dbeb(refusing: tuple[Hosted, RunningNode]) -> None:
    _, mx_node = refusing
    with smtplib.SMTP(*mx_node.mx) as client:
        client.ehlo("mta.partner.example")
        client.mail("news@partner.example")
        code, text = client.rcpt("nobody@contoso.com")
    assert (code, text.split()[0]) == (550, b"5.4.1")
    assert b"Recipient address rejected: Access denied" in text


@pytest.mark.parametrize(
    "recipient",
    [
        "victim@elsewhere.example",  # not a domain of the service
        "carol@pending.example",  # accepted but unverified: receives no mail
        "postmaster@[127.0.0.1]",  # address literal
        "alice@contoso.com.evil.example",  # suffix trick
        "alice@sub.contoso.com",  # subdomains are not accepted unless configured
    ],
)
def test_relay_is_refused_for_unauthenticated_clients(
    refusing: tuple[Hosted, RunningNode], recipient: str
) -> None:
    _, mx_node = refusing
    with smtplib.SMTP(*mx_node.mx) as client:
        client.ehlo("spammer.example")
        client.mail("spam@spammer.example")
        code, text = client.rcpt(recipient)
    assert code == 550
    assert text.split()[0] in (b"5.7.1", b"5.1.3")


def test_relay_attempt_gets_nothing_queued(hosted: Hosted, mx_node: RunningNode) -> None:
    with smtplib.SMTP(*mx_node.mx) as client, pytest.raises(smtplib.SMTPRecipientsRefused):
        client.sendmail("spam@spammer.example", ["victim@elsewhere.example"], b"Subject: x\r\n\r\nx\r\n")
    assert hosted.app.queue_summary().messages == 0
    wait_for(lambda: hosted.app.trace.search(TraceQuery(recipient="victim@elsewhere.example"), OPERATOR))
    rows = hosted.app.trace.search(TraceQuery(recipient="victim@elsewhere.example"), OPERATOR)
    assert [(r.status, r.tenant_id) for r in rows] == [(TraceStatus.FAILED, None)]


def test_tenants_see_only_their_own_trace(hosted: Hosted, mx_node: RunningNode) -> None:
    with smtplib.SMTP(*mx_node.mx) as client:
        client.sendmail(
            "x@partner.example", ["alice@contoso.com", "carol@fabrikam.com"], b"Subject: both\r\n\r\nhi\r\n"
        )
    contoso = hosted.app.directory.get_tenant(OPERATOR, "contoso").id
    fabrikam = hosted.app.directory.get_tenant(OPERATOR, "fabrikam").id
    wait_for(lambda: len(inbox(hosted, "carol@fabrikam.com")) == 1)
    assert {r.recipient for r in hosted.app.trace.search(TraceQuery(), TenantScope(contoso))} == {
        "alice@contoso.com"
    }
    assert {r.recipient for r in hosted.app.trace.search(TraceQuery(), TenantScope(fabrikam))} == {
        "carol@fabrikam.com"
    }
    message_id = hosted.app.trace.search(TraceQuery(), TenantScope(contoso))[0].message_id
    detail = hosted.app.trace.detail(message_id, TenantScope(fabrikam))
    assert detail is not None
    assert {e.recipient for e in detail.events} <= {"", "carol@fabrikam.com"}


def test_trace_shows_receive_expand_and_deliver(hosted: Hosted, mx_node: RunningNode) -> None:
    with smtplib.SMTP(*mx_node.mx) as client:
        client.sendmail("news@partner.example", ["team@contoso.com", "nobody@contoso.com"], MESSAGE)
    wait_for(lambda: len(inbox(hosted, "bob@contoso.com")) == 1)
    rows = hosted.app.trace.search(TraceQuery(message_id_header="golden-1@partner.example"), OPERATOR)
    statuses = {r.recipient: r.status for r in rows}
    assert statuses == {
        "team@contoso.com": TraceStatus.EXPANDED,
        "alice@contoso.com": TraceStatus.DELIVERED,
        "bob@contoso.com": TraceStatus.DELIVERED,
        "nobody@contoso.com": TraceStatus.FAILED,
    }
    detail = hosted.app.trace.detail(rows[0].message_id, OPERATOR)
    assert detail is not None
    kinds = [e.event for e in detail.events]
    assert kinds[0] == "Receive"
    assert {"Expand", "Deliver", "Fail"} <= set(kinds)
    receive = detail.events[0].detail
    assert receive["client_ip"] == "127.0.0.1" and receive["tls"] == "none"
    fail = next(e for e in detail.events if e.event == "Fail")
    assert "5.4.1" in str(fail.detail["reply"])
    assert detail.message.subject == "Grüße"


def test_starttls_then_delivery_records_tls(hosted: Hosted, mx_node: RunningNode) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP(*mx_node.mx) as client:
        client.ehlo("mta.partner.example")
        assert client.has_extn("starttls")
        client.starttls(context=context)
        client.ehlo("mta.partner.example")
        assert not client.has_extn("starttls")
        client.sendmail("news@partner.example", ["alice@contoso.com"], b"Subject: tls\r\n\r\nsecret\r\n")
    wait_for(lambda: len(inbox(hosted, "alice@contoso.com")) == 1)
    [raw] = inbox(hosted, "alice@contoso.com")
    assert b"with ESMTPS id" in raw and b"(using TLSv1." in raw


def test_oversize_message_is_refused_with_552(hosted: Hosted) -> None:
    settings = with_limits(hosted.settings, max_message_size=10_000)
    with running(settings) as node, smtplib.SMTP(*node.mx) as client:
        client.ehlo("x")
        assert client.esmtp_features["size"] == "10000"
        code, text = client.mail("a@partner.example", ["SIZE=20000"])
        assert (code, text.split()[0]) == (552, b"5.3.4")
        client.rset()
        client.mail("a@partner.example")  # no SIZE: the limit is enforced on the data itself
        client.rcpt("alice@contoso.com")
        code, text = client.data(b"Subject: big\r\n\r\n" + b"x" * 998 + b"\r\n" * 30)
        assert code == 250
        client.mail("a@partner.example")
        client.rcpt("alice@contoso.com")
        code, text = client.data(b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 20)
        assert (code, text.split()[0]) == (552, b"5.3.4")
        assert client.noop()[0] == 250
    wait_for(lambda: len(inbox(hosted, "alice@contoso.com")) == 1)
    [stored] = inbox(hosted, "alice@contoso.com")
    assert len(stored) < 10_000, "only the message within the limit was stored"


def test_too_many_recipients_get_452(hosted: Hosted) -> None:
    settings = with_limits(hosted.settings, max_recipients=2)
    with running(settings) as node, smtplib.SMTP(*node.mx) as client:
        client.ehlo("x")
        client.mail("a@partner.example")
        assert client.rcpt("alice@contoso.com")[0] == 250
        assert client.rcpt("bob@contoso.com")[0] == 250
        code, text = client.rcpt("team@contoso.com")
        assert (code, text.split()[0]) == (452, b"4.5.3")
        assert client.data(b"Subject: two\r\n\r\nok\r\n")[0] == 250
    wait_for(lambda: len(inbox(hosted, "bob@contoso.com")) == 1)


def test_pipelined_transactions_in_one_packet(hosted: Hosted, mx_node: RunningNode) -> None:
    with socket.create_connection(mx_node.mx) as raw:
        reader = raw.makefile("rb")
        assert reader.readline().startswith(b"220 ")
        raw.sendall(b"EHLO pipe.example\r\n")
        while not reader.readline().startswith(b"250 "):
            pass
        raw.sendall(
            b"MAIL FROM:<p@partner.example>\r\nRCPT TO:<alice@contoso.com>\r\n"
            b"RCPT TO:<ghost@contoso.com>\r\nDATA\r\n"
        )
        replies = [reader.readline()[:9] for _ in range(4)]
        assert replies == [b"250 2.1.0", b"250 2.1.5", b"550 5.4.1", b"354 Start"]
        raw.sendall(
            b"Subject: piped\r\n\r\none\r\n.\r\n"
            b"MAIL FROM:<p@partner.example>\r\nRCPT TO:<bob@contoso.com>\r\nDATA\r\n"
        )
        assert [reader.readline()[:9] for _ in range(4)] == [
            b"250 2.6.0",
            b"250 2.1.0",
            b"250 2.1.5",
            b"354 Start",
        ]
        raw.sendall(b"Subject: piped 2\r\n\r\ntwo\r\n.\r\nQUIT\r\n")
        assert reader.readline()[:9] == b"250 2.6.0"
        assert reader.readline()[:3] == b"221"
    wait_for(
        lambda: len(inbox(hosted, "alice@contoso.com")) == 1 and len(inbox(hosted, "bob@contoso.com")) == 1
    )


@pytest.mark.parametrize(
    "smuggled",
    [b"\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\n", b"\r\n.\r", b"\n.\r", b"\r.\r\n", b"\r\n\x00.\r\n"],
)
def test_smuggled_end_of_data_never_starts_a_second_message(
    hosted: Hosted, mx_node: RunningNode, smuggled: bytes
) -> None:
    payload = (
        b"Subject: outer\r\n\r\nfirst"
        + smuggled
        + b"MAIL FROM:<ceo@contoso.com>\r\nRCPT TO:<bob@contoso.com>\r\nDATA\r\n"
        + b"Subject: smuggled\r\n\r\nforged\r\n.\r\n"
    )
    with smtplib.SMTP(*mx_node.mx) as client:
        client.ehlo("smuggler.example")
        client.mail("a@partner.example")
        client.rcpt("alice@contoso.com")
        code, _ = client.data(payload)
        assert code in (250, 550)
        assert client.noop()[0] == 250, "the session is still in step: nothing was left over as commands"
    wait_for(lambda: hosted.app.queue_summary().messages == 0)
    assert inbox(hosted, "bob@contoso.com") == [], "no second message was smuggled in"
    assert len(inbox(hosted, "alice@contoso.com")) <= 1


def test_mail_from_the_null_sender_is_accepted(hosted: Hosted, mx_node: RunningNode) -> None:
    with smtplib.SMTP(*mx_node.mx) as client:
        client.ehlo("mta.example")
        assert client.mail("<>")[0] == 250
        assert client.rcpt("bob@contoso.com")[0] == 250
        assert client.data(b"Subject: bounce\r\n\r\nDSN\r\n")[0] == 250
    wait_for(lambda: len(inbox(hosted, "bob@contoso.com")) == 1)
    assert inbox(hosted, "bob@contoso.com")[0].startswith(b"Return-Path: <>\r\n")


def test_mail_loop_is_refused_by_hop_count(hosted: Hosted, mx_node: RunningNode) -> None:
    looped = b"".join(
        b"Received: from hop%d by relay.example; Fri, 27 Nov 2026 08:00:00 +0000\r\n" % i for i in range(31)
    )
    with smtplib.SMTP(*mx_node.mx) as client, pytest.raises(smtplib.SMTPDataError) as refused:
        client.sendmail("a@partner.example", ["bob@contoso.com"], looped + b"Subject: loop\r\n\r\nx\r\n")
    assert (refused.value.smtp_code, refused.value.smtp_error.split()[0]) == (554, b"5.4.14")
    wait_for(lambda: hosted.app.trace.search(TraceQuery(recipient="bob@contoso.com"), OPERATOR))
    [row] = hosted.app.trace.search(TraceQuery(recipient="bob@contoso.com"), OPERATOR)
    assert row.status is TraceStatus.FAILED
    detail = hosted.app.trace.detail(row.message_id, OPERATOR)
    assert detail is not None
    [fail] = [e for e in detail.events if e.event == "Fail"]
    assert fail.detail["stage"] == "DATA" and "5.4.14" in str(fail.detail["reply"])


def test_smtputf8_mailbox_receives_mail(hosted: Hosted, mx_node: RunningNode) -> None:
    hosted.app.directory.add_mailbox(OPERATOR, "jörg@contoso.com", display_name="Jörg")
    with smtplib.SMTP(*mx_node.mx) as client:
        client.ehlo("mta.example")
        assert client.has_extn("smtputf8")
        client.sendmail(
            "sender@partner.example",
            ["JÖRG@contoso.com"],
            "Subject: ü\r\n\r\nhallo\r\n".encode(),
            mail_options=["SMTPUTF8"],
        )
    wait_for(lambda: len(inbox(hosted, "jörg@contoso.com")) == 1)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (b"<victim%elsewhere.example@contoso.com>", b"550 5.4.1"),  # percent hack
        (b"<@contoso.com:victim@elsewhere.example>", b"550 5.7.1"),  # source route: the route is ignored
        (b'<"victim@elsewhere.example"@contoso.com>', b"550 5.4.1"),  # quoted local part
        (b"<elsewhere.example!victim@contoso.com>", b"550 5.4.1"),  # bang path
        (b"<victim@elsewhere.example@contoso.com>", b"501 5.1.3"),  # two @
    ],
    ids=["percent-hack", "source-route", "quoted", "bang-path", "double-at"],
)
def test_relay_tricks_in_the_address_are_refused(
    refusing: tuple[Hosted, RunningNode], path: bytes, expected: bytes
) -> None:
    hosted, mx_node = refusing
    with socket.create_connection(mx_node.mx) as raw:
        reader = raw.makefile("rb")
        reader.readline()
        raw.sendall(b"EHLO attacker.example\r\n")
        while not reader.readline().startswith(b"250 "):
            pass
        raw.sendall(b"MAIL FROM:<spam@attacker.example>\r\nRCPT TO:" + path + b"\r\nQUIT\r\n")
        assert reader.readline().startswith(b"250 ")
        assert reader.readline()[:9] == expected
    assert hosted.app.queue_summary().messages == 0
