"""The MX endpoint's bounds on a real node: what the core refuses by itself is traced, big messages are
spooled to disk on their way into the mailbox, and the spool is cleaned.

Driven over loopback sockets (raw where smtplib would repair the input) against `App.serve`.
"""

from __future__ import annotations

import smtplib
import socket

import pytest

from postroom.model.flow import TraceStatus
from postroom.model.scope import OPERATOR
from postroom.trace import TraceQuery
from tests.conftest import Hosted, wait_for
from tests.integration.test_hosted_flow import inbox
from tests.support.node import running, with_limits


def send_raw(address: tuple[str, int], commands: list[bytes]) -> list[bytes]:
    """Send each command (or message) and read one reply line for it; the final reply lines."""
    with socket.create_connection(address, timeout=10) as sock, sock.makefile("rb") as replies:
        answers = [replies.readline()]
        for command in commands:
            sock.sendall(command)
            line = replies.readline()
            while line[3:4] == b"-":
                line = replies.readline()
            answers.append(line)
        return answers


@pytest.mark.parametrize(
    ("body", "reply"),
    [
        (b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 20, b"552 5.3.4"),
        (b"Subject: lf\r\n\r\nbare\nLF\r\n", b"550 5.6.11"),
        (b"Subject: long\r\n\r\n" + b"y" * 2000 + b"\r\n", b"550 5.6.0"),
        (b"Subject: nul\r\n\r\nnul \x00 octet\r\n", b"550 5.6.0"),
    ],
    ids=["too-big", "bare-lf", "line-too-long", "nul"],
)
def test_end_of_data_refusals_are_traced_as_failed(hosted: Hosted, body: bytes, reply: bytes) -> None:
    settings = with_limits(hosted.settings, max_message_size=10_000, max_data_line=1000)
    with running(settings) as node:
        answers = send_raw(
            node.mx,
            [
                b"EHLO partner.example\r\n",
                b"MAIL FROM:<news@partner.example>\r\n",
                b"RCPT TO:<bob@contoso.com>\r\n",
                b"DATA\r\n",
                body + b".\r\n",
                b"QUIT\r\n",
            ],
        )
        assert answers[5].startswith(reply)
        wait_for(lambda: hosted.app.trace.search(TraceQuery(recipient="bob@contoso.com"), OPERATOR))
    [row] = hosted.app.trace.search(TraceQuery(recipient="bob@contoso.com"), OPERATOR)
    assert row.status is TraceStatus.FAILED
    detail = hosted.app.trace.detail(row.message_id, OPERATOR)
    assert detail is not None
    [fail] = [event for event in detail.events if event.event == "Fail"]
    assert fail.detail["stage"] == "DATA" and reply.decode()[4:] in str(fail.detail["reply"])
    assert inbox(hosted, "bob@contoso.com") == []


def test_a_recipient_past_the_limit_is_traced_as_failed(hosted: Hosted) -> None:
    settings = with_limits(hosted.settings, max_recipients=1)
    with running(settings) as node, smtplib.SMTP(*node.mx) as client:
        client.ehlo("partner.example")
        client.mail("news@partner.example")
        assert client.rcpt("alice@contoso.com")[0] == 250
        code, text = client.rcpt("bob@contoso.com")
        assert (code, text.split()[0]) == (452, b"4.5.3")
        assert client.data(b"Subject: one\r\n\r\nx\r\n")[0] == 250
        wait_for(lambda: hosted.app.trace.search(TraceQuery(recipient="bob@contoso.com"), OPERATOR))
    [row] = hosted.app.trace.search(TraceQuery(recipient="bob@contoso.com"), OPERATOR)
    assert row.status is TraceStatus.FAILED
    detail = hosted.app.trace.detail(row.message_id, OPERATOR)
    assert detail is not None
    [fail] = [event for event in detail.events if event.event == "Fail"]
    assert fail.detail["stage"] == "RCPT" and "4.5.3" in str(fail.detail["reply"])
    wait_for(lambda: len(inbox(hosted, "alice@contoso.com")) == 1)


def test_a_spooled_message_lands_exactly_and_leaves_no_spool_file(hosted: Hosted) -> None:
    settings = with_limits(hosted.settings, spool_threshold=10_000)
    leftover = settings.spool_dir / "999999999-0.spool"  # a process that is gone left it
    leftover.parent.mkdir(parents=True, exist_ok=True)
    leftover.write_bytes(b"half a message")
    body = b"Subject: big\r\n\r\n" + b"".join(b".%07d of a long message\r\n" % n for n in range(20_000))
    with running(settings) as node:
        assert not leftover.exists()
        with smtplib.SMTP(*node.mx) as client:
            assert client.sendmail("news@partner.example", ["alice@contoso.com"], body) == {}
        wait_for(lambda: len(inbox(hosted, "alice@contoso.com")) == 1)
    [stored] = inbox(hosted, "alice@contoso.com")
    assert stored.endswith(body)
    assert list(settings.spool_dir.iterdir()) == []


def test_recipient_probing_is_cut_off(hosted: Hosted) -> None:
    settings = with_limits(hosted.settings, max_refused_recipients=3, refusal_slowdown=1, refusal_delay=0.01)
    probes = b"".join(b"RCPT TO:<guess%d@contoso.com>\r\n" % n for n in range(3))
    with running(settings) as node, socket.create_connection(node.mx, timeout=10) as sock:
        sock.sendall(b"EHLO probe.example\r\nMAIL FROM:<x@probe.example>\r\n" + probes)
        transcript = b""
        while chunk := sock.recv(65536):  # until the server closes
            transcript += chunk
    *_, sender, first, second, third, closing, end = transcript.split(b"\r\n")
    assert [line[:9] for line in (first, second, third, closing)] == [b"550 5.4.1"] * 3 + [b"421 4.7.0"]
    assert sender.startswith(b"250") and end == b""
