"""Reply rendering (single and multi-line, with and without enhanced codes) and the catalogue."""

from __future__ import annotations

import pytest

from postroom.model import Reply, replies

CATALOGUE = {name: value for name, value in vars(replies).items() if isinstance(value, Reply)}
# Replies never sent over SMTP, only written into trace and DSNs as the spec's NDRs give them.
DSN_ONLY = {"MESSAGE_EXPIRED"}  # spec §12.2: 550 4.4.7 QUEUE.Expired


@pytest.mark.parametrize(
    ("reply", "wire"),
    [
        (replies.RECIPIENT_OK, b"250 2.1.5 Recipient OK\r\n"),
        (replies.UNABLE_TO_RELAY, b"550 5.7.1 Unable to relay\r\n"),
        (replies.START_DATA, b"354 Start mail input; end with <CRLF>.<CRLF>\r\n"),
        (
            Reply(250, None, "mx.example\nPIPELINING\nSIZE 100"),
            b"250-mx.example\r\n250-PIPELINING\r\n250 SIZE 100\r\n",
        ),
        (
            Reply(550, "5.7.1", "first line\nsecond line"),
            b"550-5.7.1 first line\r\n550 5.7.1 second line\r\n",
        ),
        (Reply(250, None, ""), b"250\r\n"),
        (Reply(250, "2.0.0", ""), b"250 2.0.0\r\n"),
        (Reply(250, None, "a\n\nb"), b"250-a\r\n250-\r\n250 b\r\n"),
        (Reply(250, "2.0.0", "Grüße"), "250 2.0.0 Grüße\r\n".encode()),
    ],
)
def test_to_bytes(reply: Reply, wire: bytes) -> None:
    assert reply.to_bytes() == wire


def test_lines_and_str_of_a_multi_line_reply() -> None:
    reply = Reply(451, "4.3.0", "one\ntwo")
    assert reply.lines() == ["451-4.3.0 one", "451 4.3.0 two"]
    assert str(reply) == "451-4.3.0 one / 451 4.3.0 two"


def test_with_text_keeps_the_codes() -> None:
    queued = replies.QUEUED.with_text("Queued as 0123")
    assert (queued.code, queued.enhanced, queued.text) == (250, "2.6.0", "Queued as 0123")
    assert replies.QUEUED.text == "Queued as {id}"


@pytest.mark.parametrize(
    ("code", "positive", "temporary", "permanent"),
    [
        (220, True, False, False),
        (354, True, False, False),
        (421, False, True, False),
        (550, False, False, True),
    ],
)
def test_classes(code: int, positive: bool, temporary: bool, permanent: bool) -> None:
    reply = Reply(code, None, "x")
    assert (reply.is_positive, reply.is_temporary, reply.is_permanent) == (positive, temporary, permanent)


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_catalogue_enhanced_code_matches_the_basic_code(name: str) -> None:
    reply = CATALOGUE[name]
    assert 200 <= reply.code < 600
    if reply.enhanced is not None:
        klass, subject, detail = reply.enhanced.split(".")
        assert klass == str(reply.code)[0] or name in DSN_ONLY, f"{name}: {reply.code} with {reply.enhanced}"
        assert subject.isdigit() and detail.isdigit()
    assert "\r" not in reply.text
