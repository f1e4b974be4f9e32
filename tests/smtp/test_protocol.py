"""The sans-IO SMTP core, fed bytes: replies by code, events in order, message content to the octet."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

import pytest

from postroom.config.settings import SmtpLimits
from postroom.model import replies
from postroom.model.replies import Reply
from postroom.smtp import (
    ConnectionClosing,
    Event,
    HeloReceived,
    MailFromReceived,
    MessageReceived,
    MessageRefused,
    ProtocolUsageError,
    RcptToReceived,
    RecipientRefused,
    SmtpServerProtocol,
    StartTlsRequested,
    TransactionReset,
)

LIMITS = SmtpLimits()
HELLO = b"EHLO client.example\r\n"
ENVELOPE = HELLO + b"MAIL FROM:<alice@sender.example>\r\nRCPT TO:<bob@postroom.test>\r\nDATA\r\n"
_REPLY_LINE = re.compile(rb"(\d{3})([ -])(?:(\d\.\d{1,3}\.\d{1,3}) )?(.*)")


@dataclass
class Transcript:
    """What the core said and did for one input: final reply codes, events, messages, EHLO keywords."""

    replies: list[tuple[int, str | None]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)
    ehlo_keywords: list[list[str]] = field(default_factory=list)
    closed: bool = False

    @property
    def codes(self) -> list[int]:
        return [code for code, _ in self.replies]

    def parse(self, output: bytes) -> None:
        lines: list[str] = []
        for raw in output.split(b"\r\n")[:-1]:
            match = _REPLY_LINE.fullmatch(raw)
            assert match, raw
            lines.append(match.group(4).decode())
            if match.group(2) == b" ":
                enhanced = match.group(3).decode() if match.group(3) else None
                self.replies.append((int(match.group(1)), enhanced))
                if len(lines) > 1:
                    self.ehlo_keywords.append(lines[1:])
                lines = []


def answer(event: Event) -> Reply | None:
    """The application side of the table tests: the twin's policy, synchronously."""
    if isinstance(event, MailFromReceived):
        return replies.SENDER_OK
    if isinstance(event, RcptToReceived):
        if event.recipient.local == "unknown":
            return replies.RECIPIENT_NOT_FOUND
        if event.recipient.local == "closing":
            return replies.SHUTTING_DOWN
        return replies.RECIPIENT_OK
    if isinstance(event, MessageReceived):
        return replies.QUEUED
    return None  # HeloReceived: accept


def converse(
    data: bytes,
    limits: SmtpLimits = LIMITS,
    *,
    chunk: int = 0,
    tls_available: bool = False,
    eof: bool = False,
) -> Transcript:
    """Feed `data` (all at once, or `chunk` octets at a time) and answer every decision."""
    core = SmtpServerProtocol("mx.postroom.test", limits, tls_available=tls_available)
    transcript = Transcript()
    pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)] if chunk else [data]
    if eof:
        pieces.append(b"")
    for piece in pieces:
        core.receive_data(piece)
        while (event := core.next_event()) is not None:
            transcript.events.append(event)
            if isinstance(event, MessageReceived):
                transcript.messages.append(event.content)
            if isinstance(event, HeloReceived | MailFromReceived | RcptToReceived | MessageReceived):
                core.respond(answer(event))
            elif isinstance(event, StartTlsRequested):
                core.tls_started()
    transcript.parse(core.data_to_send())
    transcript.closed = core.closed
    return transcript


def message(body: bytes, limits: SmtpLimits = LIMITS, *, chunk: int = 0) -> Transcript:
    return converse(ENVELOPE + body + b"QUIT\r\n", limits, chunk=chunk)


# --- SMTP smuggling: only <CRLF>.<CRLF> ends DATA -------------------------------------------------

SMUGGLED = b"MAIL FROM:<evil@attacker.example>\r\nRCPT TO:<victim@postroom.test>\r\nDATA\r\nforged\r\n"
FAKE_ENDS = [
    b"\n.\n",
    b"\n.\r\n",
    b"\r.\r",
    b"\r.\n",
    b"\r\n.\n",
    b"\r\n.\r",
    b"\n.\r",
    b"\r.\r\n",
    b"\r\n.\r\r\n",
    b"\n\n.\n\n",
    b"\r\r.\r\r",
]


@pytest.mark.parametrize("chunk", [0, 1, 3])
@pytest.mark.parametrize("fake_end", FAKE_ENDS, ids=repr)
def test_smuggling_variants_never_end_data_and_are_refused(fake_end: bytes, chunk: int) -> None:
    body = b"Subject: hi\r\n\r\nhello" + fake_end + SMUGGLED + b".\r\n"
    transcript = message(body, chunk=chunk)
    assert transcript.replies == [
        (250, None),
        (250, "2.1.0"),
        (250, "2.1.5"),
        (354, None),
        (550, "5.6.11"),
        (221, "2.0.0"),
    ]
    assert transcript.messages == []
    assert sum(isinstance(event, MailFromReceived) for event in transcript.events) == 1


@pytest.mark.parametrize("chunk", [0, 2])
@pytest.mark.parametrize("fake_end", FAKE_ENDS, ids=repr)
def test_smuggling_variants_normalized_stay_inside_one_message(fake_end: bytes, chunk: int) -> None:
    limits = replace(LIMITS, bare_lf="normalize")
    body = b"Subject: hi\r\n\r\nhello" + fake_end + SMUGGLED + b".\r\n"
    transcript = message(body, limits, chunk=chunk)
    assert transcript.codes == [250, 250, 250, 354, 250, 221]
    [content] = transcript.messages
    assert b"MAIL FROM:<evil@attacker.example>\r\n" in content
    assert content.count(b"\r") == content.count(b"\n") == content.count(b"\r\n")
    assert sum(isinstance(event, MailFromReceived) for event in transcript.events) == 1


@pytest.mark.parametrize(
    ("body", "content"),
    [
        (b"one\r\n.\r\n", b"one\r\n"),
        (b".\r\n", b""),
        (b"\r\n.\r\n", b"\r\n"),
        (b"..first\r\n.\r\n", b".first\r\n"),
        (b"a\r\n..b\r\n...c\r\n.d\r\n.\r\n", b"a\r\n.b\r\n..c\r\nd\r\n"),
        (b"8bit \xe9\xff\x01\x7f\r\n\tfolded\r\n.\r\n", b"8bit \xe9\xff\x01\x7f\r\n\tfolded\r\n"),
        (b"no dot. at end .\r\n.\r\n", b"no dot. at end .\r\n"),
    ],
    ids=[
        "plain",
        "empty",
        "one-empty-line",
        "stuffed-first-line",
        "stuffed-lines",
        "octets",
        "dots-mid-line",
    ],
)
@pytest.mark.parametrize("chunk", [0, 1, 4])
def test_content_is_unstuffed_and_exact(body: bytes, content: bytes, chunk: int) -> None:
    transcript = message(body, chunk=chunk)
    assert transcript.messages == [content]
    assert transcript.replies[-2:] == [(250, "2.6.0"), (221, "2.0.0")]


def test_normalize_stores_bare_lf_and_bare_cr_as_crlf() -> None:
    limits = replace(LIMITS, bare_lf="normalize")
    transcript = message(b"a\nb\rc\r\n..d\n\r\n.\r\n", limits)
    assert transcript.messages == [b"a\r\nb\r\nc\r\n.d\r\n\r\n"]


def test_bare_lf_refusal_keeps_the_session_going() -> None:
    body = (
        b"bare\nline\r\n.\r\nMAIL FROM:<a@sender.example>\r\nRCPT TO:<b@postroom.test>\r\nDATA\r\nok\r\n.\r\n"
    )
    transcript = message(body)
    assert transcript.replies[4:] == [
        (550, "5.6.11"),
        (250, "2.1.0"),
        (250, "2.1.5"),
        (354, None),
        (250, "2.6.0"),
        (221, "2.0.0"),
    ]
    assert transcript.messages == [b"ok\r\n"]
    assert any(isinstance(event, TransactionReset) for event in transcript.events)


# --- size and line limits ------------------------------------------------------------------------


def test_size_parameter_over_the_limit_is_refused_at_mail() -> None:
    limits = replace(LIMITS, max_message_size=1000)
    transcript = converse(
        HELLO + b"MAIL FROM:<a@sender.example> SIZE=1001\r\nMAIL FROM:<a@s.example> SIZE=1000\r\n", limits
    )
    assert transcript.replies[1:] == [(552, "5.3.4"), (250, "2.1.0")]
    assert transcript.ehlo_keywords[0][1] == "SIZE 1000"


@pytest.mark.parametrize("chunk", [0, 100])
def test_oversize_data_is_read_to_its_real_end_then_refused(chunk: int) -> None:
    limits = replace(LIMITS, max_message_size=1000)
    body = b"QUIT\r\n" * 2000 + b".\r\nNOOP\r\n"
    transcript = message(body, limits, chunk=chunk)
    assert transcript.replies[4:] == [(552, "5.3.4"), (250, "2.0.0"), (221, "2.0.0")]
    assert transcript.messages == []


def test_message_of_exactly_the_limit_passes_counting_unstuffed_octets() -> None:
    limits = replace(LIMITS, max_message_size=12)
    assert message(b"..34567890\r\n.\r\n", limits).messages == [b".34567890\r\n"]
    assert message(b"..3456789012\r\n.\r\n", limits).replies[4] == (552, "5.3.4")


def test_data_line_too_long_is_refused_at_the_end() -> None:
    limits = replace(LIMITS, max_data_line=100)
    fits = b"x" * 98 + b"\r\n"
    assert message(fits * 3 + b".\r\n", limits).messages == [fits * 3]
    transcript = message(fits + b"y" * 99 + b"\r\n" + fits + b".\r\n", limits)
    assert transcript.replies[4:] == [(550, "5.6.0"), (221, "2.0.0")]


def test_command_line_too_long_is_refused_and_skipped() -> None:
    limits = replace(LIMITS, max_command_line=64)
    transcript = converse(b"NOOP " + b"x" * 100 + b"\r\nNOOP\r\n", limits, chunk=10)
    assert transcript.replies == [(500, "5.5.2"), (250, "2.0.0")]
    exact = b"NOOP " + b"x" * 57 + b"\r\n"
    assert converse(exact, limits).replies == [(250, "2.0.0")]


@pytest.mark.parametrize(
    "line",
    [b"NOOP\n", b"NOOP\rRSET\r\n", b"\n", b"EHLO a\n.\nNOOP\r\n"],
    ids=repr,
)
def test_bare_lf_or_cr_in_a_command_line_is_refused(line: bytes) -> None:
    transcript = converse(line)
    assert transcript.replies[0] == (500, "5.5.2")
    assert not any(isinstance(event, HeloReceived) for event in transcript.events)


def test_too_many_recipients() -> None:
    limits = replace(LIMITS, max_recipients=2)
    rcpts = b"".join(b"RCPT TO:<r%d@postroom.test>\r\n" % i for i in range(3))
    transcript = converse(HELLO + b"MAIL FROM:<a@sender.example>\r\n" + rcpts + b"DATA\r\nx\r\n.\r\n", limits)
    assert transcript.replies[2:] == [
        (250, "2.1.5"),
        (250, "2.1.5"),
        (452, "4.5.3"),
        (354, None),
        (250, "2.6.0"),
    ]


# --- sequence, syntax, parameters ----------------------------------------------------------------

CASES = [
    ("mail-before-ehlo", b"MAIL FROM:<a@s.example>\r\n", [(503, "5.5.1")]),
    ("rcpt-before-mail", HELLO + b"RCPT TO:<b@postroom.test>\r\n", [(250, None), (503, "5.5.1")]),
    ("data-before-mail", HELLO + b"DATA\r\n", [(250, None), (503, "5.5.1")]),
    ("data-before-rcpt", HELLO + b"MAIL FROM:<>\r\nDATA\r\n", [(250, None), (250, "2.1.0"), (503, "5.5.1")]),
    (
        "data-no-valid-recipient",
        HELLO + b"MAIL FROM:<>\r\nRCPT TO:<unknown@postroom.test>\r\nDATA\r\n",
        [(250, None), (250, "2.1.0"), (550, "5.1.10"), (554, "5.5.1")],
    ),
    (
        "nested-mail",
        HELLO + b"MAIL FROM:<>\r\nMAIL FROM:<>\r\n",
        [(250, None), (250, "2.1.0"), (503, "5.5.1")],
    ),
    ("unknown-command", b"FROB\r\n", [(500, "5.5.2")]),
    ("empty-line", b"\r\n", [(500, "5.5.2")]),
    ("nul-in-command", b"NOOP \x00\r\n", [(500, "5.5.2")]),
    ("invalid-utf8", b"NOOP \xff\r\n", [(500, "5.5.2")]),
    ("expn", b"EXPN staff\r\n", [(502, "5.5.1")]),
    ("ehlo-without-name", b"EHLO\r\n", [(501, "5.5.4")]),
    ("vrfy", b"VRFY bob\r\n", [(252, "2.5.0")]),
    ("help", b"HELP\r\n", [(214, "2.0.0")]),
    ("noop-rset", b"noop\r\nRSET\r\n", [(250, "2.0.0"), (250, "2.0.0")]),
    ("helo", b"HELO client.example\r\nMAIL FROM:<>\r\n", [(250, None), (250, "2.1.0")]),
    ("mail-without-brackets", HELLO + b"MAIL FROM:a@s.example\r\n", [(250, None), (501, "5.1.7")]),
    ("mail-without-from", HELLO + b"MAIL <a@s.example>\r\n", [(250, None), (501, "5.5.4")]),
    ("mail-bad-address", HELLO + b"MAIL FROM:<a@@s>\r\n", [(250, None), (501, "5.1.7")]),
    ("mail-space-after-colon", HELLO + b"mail from: <a@s.example>\r\n", [(250, None), (250, "2.1.0")]),
    (
        "mail-source-route",
        HELLO + b"MAIL FROM:<@relay.example:a@s.example>\r\n",
        [(250, None), (250, "2.1.0")],
    ),
    ("mail-unknown-param", HELLO + b"MAIL FROM:<> FROB=1\r\n", [(250, None), (555, "5.5.4")]),
    ("mail-bad-size", HELLO + b"MAIL FROM:<> SIZE=12k\r\n", [(250, None), (501, "5.5.4")]),
    ("mail-bad-body", HELLO + b"MAIL FROM:<> BODY=9BIT\r\n", [(250, None), (501, "5.5.4")]),
    ("mail-duplicate-param", HELLO + b"MAIL FROM:<> SIZE=1 SIZE=2\r\n", [(250, None), (501, "5.5.4")]),
    ("mail-smtputf8-with-value", HELLO + b"MAIL FROM:<> SMTPUTF8=yes\r\n", [(250, None), (501, "5.5.4")]),
    (
        "mail-all-params",
        HELLO + b"MAIL FROM:<a@s.example> SIZE=10 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=x+2By AUTH=<>\r\n",
        [(250, None), (250, "2.1.0")],
    ),
    (
        "rcpt-bad-notify",
        HELLO + b"MAIL FROM:<>\r\nRCPT TO:<b@postroom.test> NOTIFY=NEVER,DELAY\r\n",
        [(250, None), (250, "2.1.0"), (501, "5.5.4")],
    ),
    (
        "rcpt-unknown-param",
        HELLO + b"MAIL FROM:<>\r\nRCPT TO:<b@postroom.test> SIZE=1\r\n",
        [(250, None), (250, "2.1.0"), (555, "5.5.4")],
    ),
    (
        "rcpt-bad-address",
        HELLO + b"MAIL FROM:<>\r\nRCPT TO:<b@>\r\nRCPT TO:<>\r\n",
        [(250, None), (250, "2.1.0"), (501, "5.1.3"), (501, "5.1.3")],
    ),
    (
        "rcpt-postmaster-without-domain",
        HELLO + b"MAIL FROM:<>\r\nRCPT TO:<Postmaster>\r\n",
        [(250, None), (250, "2.1.0"), (250, "2.1.5")],
    ),
    ("starttls-unavailable", HELLO + b"STARTTLS\r\n", [(250, None), (454, "4.7.0")]),
    (
        "data-with-argument",
        HELLO + b"MAIL FROM:<>\r\nRCPT TO:<b@x.example>\r\nDATA x\r\n",
        [(250, None), (250, "2.1.0"), (250, "2.1.5"), (501, "5.5.4")],
    ),
    (
        "binarymime-needs-bdat",
        HELLO + b"MAIL FROM:<> BODY=BINARYMIME\r\nRCPT TO:<b@x.example>\r\nDATA\r\n",
        [(250, None), (250, "2.1.0"), (250, "2.1.5"), (503, "5.5.1")],
    ),
    ("quit", b"QUIT\r\nNOOP\r\n", [(221, "2.0.0")]),
]


@pytest.mark.parametrize(("data", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_replies(data: bytes, expected: list[tuple[int, str | None]]) -> None:
    assert converse(data).replies == expected


# --- SMTPUTF8 ------------------------------------------------------------------------------------

UTF8_SENDER = "MAIL FROM:<δοκιμή@παράδειγμα.δοκιμή>".encode()
UTF8_RECIPIENT = "RCPT TO:<用户@例子.广告>".encode()


def test_utf8_address_needs_the_smtputf8_parameter() -> None:
    transcript = converse(
        HELLO + UTF8_SENDER + b"\r\n" + UTF8_SENDER + b" SMTPUTF8\r\n" + UTF8_RECIPIENT + b"\r\n"
    )
    assert transcript.replies == [(250, None), (553, "5.6.7"), (250, "2.1.0"), (250, "2.1.5")]
    mail = next(event for event in transcript.events if isinstance(event, MailFromReceived))
    assert mail.sender is not None and mail.sender.local == "δοκιμή" and mail.params.smtputf8
    assert mail.sender.domain == "xn--hxajbheg2az3al.xn--jxalpdlp"


def test_utf8_recipient_in_an_ascii_transaction_is_refused() -> None:
    transcript = converse(HELLO + b"MAIL FROM:<a@s.example>\r\n" + UTF8_RECIPIENT + b"\r\n")
    assert transcript.replies[-1] == (553, "5.6.7")


def test_ehlo_keywords() -> None:
    [plain] = converse(HELLO).ehlo_keywords
    assert plain == [
        "PIPELINING",
        "SIZE 36700160",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
        "BINARYMIME",
    ]
    [with_tls] = converse(HELLO, tls_available=True).ehlo_keywords
    assert "STARTTLS" in with_tls
    assert converse(b"HELO client.example\r\n").ehlo_keywords == []


# --- pipelining, events, decisions ---------------------------------------------------------------


def test_pipelined_commands_wait_for_each_decision_in_order() -> None:
    core = SmtpServerProtocol("mx.postroom.test", LIMITS, tls_available=False)
    core.receive_data(
        HELLO + b"MAIL FROM:<a@s.example>\r\nRCPT TO:<b@postroom.test>\r\nRCPT TO:<unknown@postroom.test>\r\n"
        b"DATA\r\nbody\r\n.\r\nQUIT\r\n"
    )
    seen: list[str] = []
    while (event := core.next_event()) is not None:
        seen.append(type(event).__name__)
        if isinstance(event, HeloReceived | MailFromReceived | RcptToReceived | MessageReceived):
            assert core.next_event() is None  # nothing moves while a decision is pending
            core.respond(answer(event))
    assert seen == [
        "HeloReceived",
        "MailFromReceived",
        "RcptToReceived",
        "RcptToReceived",
        "MessageReceived",
        "TransactionReset",
        "ConnectionClosing",
    ]
    transcript = Transcript()
    transcript.parse(core.data_to_send())
    assert transcript.codes == [250, 250, 250, 550, 354, 250, 221]


def test_helo_can_be_refused_and_then_mail_needs_hello() -> None:
    core = SmtpServerProtocol("mx.postroom.test", LIMITS, tls_available=False)
    core.receive_data(b"EHLO bad.example\r\nMAIL FROM:<>\r\n")
    assert isinstance(core.next_event(), HeloReceived)
    core.respond(replies.SENDER_DENIED)
    assert core.next_event() is None
    transcript = Transcript()
    transcript.parse(core.data_to_send())
    assert transcript.replies == [(550, "5.1.0"), (503, "5.5.1")]


def test_a_421_from_the_application_closes() -> None:
    transcript = converse(HELLO + b"MAIL FROM:<>\r\nRCPT TO:<closing@postroom.test>\r\nNOOP\r\n")
    assert transcript.replies[-1] == (421, "4.3.2")
    assert transcript.closed
    assert transcript.events[-1] == ConnectionClosing("server")


def test_rset_and_new_ehlo_end_the_open_transaction() -> None:
    transcript = converse(
        HELLO + b"MAIL FROM:<>\r\nRSET\r\nMAIL FROM:<>\r\nEHLO again.example\r\nMAIL FROM:<>\r\n"
    )
    assert transcript.codes == [250, 250, 250, 250, 250, 250]
    assert sum(isinstance(event, TransactionReset) for event in transcript.events) == 2


def test_max_errors_ends_with_421() -> None:
    limits = replace(LIMITS, max_errors=3)
    transcript = converse(b"FROB\r\nFROB\r\nNOOP\r\nFROB\r\nNOOP\r\n", limits)
    assert transcript.replies == [
        (500, "5.5.2"),
        (500, "5.5.2"),
        (250, "2.0.0"),
        (500, "5.5.2"),
        (421, "4.7.0"),
    ]
    assert transcript.closed and transcript.events[-1] == ConnectionClosing("errors")


def test_end_of_file_closes_after_what_came_before_it() -> None:
    transcript = converse(b"NOOP\r\nNOO", eof=True)
    assert transcript.replies == [(250, "2.0.0")]
    assert transcript.events == [ConnectionClosing("eof")]


def test_respond_out_of_turn_is_a_usage_error() -> None:
    core = SmtpServerProtocol("mx.postroom.test", LIMITS, tls_available=False)
    with pytest.raises(ProtocolUsageError):
        core.respond(replies.OK)
    core.receive_data(HELLO + b"MAIL FROM:<>\r\n")
    core.next_event()
    core.respond(None)
    assert isinstance(core.next_event(), MailFromReceived)
    with pytest.raises(ProtocolUsageError):
        core.respond(None)
    with pytest.raises(ProtocolUsageError):
        core.tls_started()


def test_close_with_replaces_what_is_pending() -> None:
    core = SmtpServerProtocol("mx.postroom.test", LIMITS, tls_available=False)
    core.receive_data(HELLO)
    core.next_event()
    core.close_with(replies.TIMEOUT)
    assert core.next_event() == ConnectionClosing("server")
    assert core.data_to_send() == replies.TIMEOUT.to_bytes()
    assert core.greeting().startswith(b"220 mx.postroom.test ")


# --- STARTTLS ------------------------------------------------------------------------------------


def test_starttls_discards_pipelined_plaintext_and_resets_the_session() -> None:
    core = SmtpServerProtocol("mx.postroom.test", LIMITS, tls_available=True)
    core.receive_data(HELLO + b"STARTTLS\r\nMAIL FROM:<injected@attacker.example>\r\n")
    assert isinstance(core.next_event(), HeloReceived)
    core.respond(None)
    assert isinstance(core.next_event(), StartTlsRequested)
    core.receive_data(b"RCPT TO:<injected@postroom.test>\r\n")  # still plaintext: dropped
    assert core.next_event() is None
    core.tls_started()
    assert core.next_event() is None
    core.receive_data(b"MAIL FROM:<>\r\nEHLO client.example\r\nSTARTTLS\r\n")
    transcript = Transcript()
    while (event := core.next_event()) is not None:
        core.respond(answer(event))
    transcript.parse(core.data_to_send())
    assert transcript.replies == [(250, None), (220, "2.0.0"), (503, "5.5.1"), (250, None), (503, "5.5.1")]
    assert "STARTTLS" not in transcript.ehlo_keywords[-1]


def test_starttls_inside_a_transaction_is_refused() -> None:
    transcript = converse(HELLO + b"MAIL FROM:<>\r\nSTARTTLS\r\n", tls_available=True)
    assert transcript.replies[-1] == (503, "5.5.1")


# --- BDAT (RFC 3030) -----------------------------------------------------------------------------

BDAT_ENVELOPE = HELLO + b"MAIL FROM:<a@s.example>\r\nRCPT TO:<b@postroom.test>\r\n"


@pytest.mark.parametrize("chunk", [0, 1, 5])
def test_bdat_chunks_are_binary_safe_and_not_unstuffed(chunk: int) -> None:
    data = BDAT_ENVELOPE + b"BDAT 9\r\nhello\r\n..BDAT 8 LAST\r\n\r\n.\r\nX\r\nQUIT\r\n"
    transcript = converse(data, chunk=chunk)
    assert transcript.replies[3:] == [(250, "2.0.0"), (250, "2.6.0"), (221, "2.0.0")]
    assert transcript.messages == [b"hello\r\n..\r\n.\r\nX\r\n"]


def test_bdat_zero_last_and_empty_message() -> None:
    transcript = converse(BDAT_ENVELOPE + b"BDAT 3\r\nabcBDAT 0 LAST\r\n")
    assert transcript.messages == [b"abc"]


def test_bdat_bare_lf_is_refused_unless_binarymime() -> None:
    refused = converse(BDAT_ENVELOPE + b"BDAT 4 LAST\r\na\nb\n")
    assert refused.replies[-1] == (550, "5.6.11")
    binary = (
        HELLO
        + b"MAIL FROM:<a@s.example> BODY=BINARYMIME\r\nRCPT TO:<b@postroom.test>\r\nBDAT 4 LAST\r\na\nb\n"
    )
    assert converse(binary).messages == [b"a\nb\n"]


def test_bdat_without_transaction_consumes_the_chunk() -> None:
    transcript = converse(HELLO + b"BDAT 6\r\nQUIT\r\nNOOP\r\n")
    assert transcript.replies == [(250, None), (503, "5.5.1"), (250, "2.0.0")]
    assert not transcript.closed


def test_bdat_oversize_discards_the_rest_of_the_pipeline() -> None:
    limits = replace(LIMITS, max_message_size=10, max_errors=2)
    data = BDAT_ENVELOPE + b"BDAT 8\r\n12345678BDAT 8\r\n12345678BDAT 8\r\n12345678BDAT 1 LAST\r\nxNOOP\r\n"
    transcript = converse(data, limits)
    assert transcript.replies[3:] == [
        (250, "2.0.0"),
        (552, "5.3.4"),
        (503, "5.5.1"),
        (503, "5.5.1"),
        (250, "2.0.0"),
    ]
    assert transcript.messages == [] and not transcript.closed


def test_bdat_bad_size_closes_because_the_chunk_cannot_be_framed() -> None:
    transcript = converse(BDAT_ENVELOPE + b"BDAT many\r\nNOOP\r\n")
    assert transcript.replies[-1] == (501, "5.5.4")
    assert transcript.closed


def test_data_after_bdat_is_a_sequence_error() -> None:
    transcript = converse(BDAT_ENVELOPE + b"BDAT 2\r\nabDATA\r\n")
    assert transcript.replies[-1] == (503, "5.5.1")


def test_fast_reply_encoding_matches_the_catalogue() -> None:
    from postroom.smtp.protocol import _encode

    catalogue = [value for value in vars(replies).values() if isinstance(value, Reply)]
    extra = [Reply(250, None, "two\nlines"), Reply(250, "2.0.0", "trailing  "), Reply(554, None, "")]
    for reply in catalogue + extra:
        assert _encode(reply) == reply.to_bytes()


# --- bounds an unauthenticated client meets -------------------------------------------------------


def test_refused_recipients_end_the_session() -> None:
    limits = replace(LIMITS, max_refused_recipients=4, refusal_slowdown=2)
    rcpts = b"RCPT TO:<unknown@postroom.test>\r\n" * 3 + b"RCPT TO:<bad syntax>\r\n" + b"NOOP\r\n"
    transcript = converse(HELLO + b"MAIL FROM:<a@sender.example>\r\n" + rcpts, limits)
    assert transcript.replies[2:] == [
        (550, "5.1.10"),
        (550, "5.1.10"),
        (550, "5.1.10"),
        (501, "5.1.3"),
        (421, "4.7.0"),
    ]
    assert transcript.closed


def test_refused_recipients_are_counted_across_transactions() -> None:
    limits = replace(LIMITS, max_refused_recipients=3, refusal_slowdown=1)
    one = b"MAIL FROM:<a@sender.example>\r\nRCPT TO:<unknown@postroom.test>\r\nRSET\r\n"
    transcript = converse(HELLO + one * 3, limits)
    assert transcript.replies[-2:] == [(550, "5.1.10"), (421, "4.7.0")]
    assert transcript.closed


@pytest.mark.parametrize("verb", [b"NOOP", b"RSET", b"VRFY bob", b"HELP", b"EXPN list"])
def test_junk_commands_are_limited(verb: bytes) -> None:
    limits = replace(LIMITS, max_junk_commands=5, max_errors=100)
    transcript = converse(HELLO + (verb + b"\r\n") * 6 + b"NOOP\r\n", limits)
    assert len(transcript.replies) == 1 + 6
    assert transcript.replies[-1] == (421, "4.7.0")
    assert transcript.closed


@pytest.mark.parametrize("chunk", [0, 1, 3])
def test_nul_in_a_message_is_refused(chunk: int) -> None:
    transcript = message(b"Subject: x\r\n\r\nnul \x00 here\r\n.\r\n", chunk=chunk)
    assert transcript.replies[-2:] == [(550, "5.6.0"), (221, "2.0.0")]
    assert transcript.messages == []


@pytest.mark.parametrize("chunk", [0, 1, 3])
def test_nul_can_be_stripped_by_configuration(chunk: int) -> None:
    limits = replace(LIMITS, nul="strip")
    transcript = message(b"Subject: x\r\n\r\n\x00nul \x00\x00here\r\n..\x00\r\n.\r\n", limits, chunk=chunk)
    assert transcript.messages == [b"Subject: x\r\n\r\nnul here\r\n.\r\n"]


def test_nul_in_bdat_is_refused_unless_binarymime() -> None:
    envelope = HELLO + b"MAIL FROM:<a@sender.example>%s\r\nRCPT TO:<bob@postroom.test>\r\n"
    chunk = b"BDAT 5 LAST\r\na\x00b\r\n"
    assert converse(envelope % b"" + chunk).replies[-1] == (550, "5.6.0")
    assert converse(envelope % b" BODY=BINARYMIME" + chunk).messages == [b"a\x00b\r\n"]


@pytest.mark.parametrize(
    ("command", "reply"),
    [
        (b"MAIL FROM:<alice@sender.example.>", (501, "5.1.7")),
        (b"MAIL FROM:<alice@sender.example..>", (501, "5.1.7")),
        (b"RCPT TO:<bob@postroom.test.>", (501, "5.1.3")),
        (b"RCPT TO:<bob@postroom.test..>", (501, "5.1.3")),
    ],
)
def test_a_domain_with_trailing_dots_is_a_syntax_error(command: bytes, reply: tuple[int, str]) -> None:
    before = b"" if command.startswith(b"MAIL") else b"MAIL FROM:<a@sender.example>\r\n"
    transcript = converse(HELLO + before + command + b"\r\n")
    assert transcript.replies[-1] == reply
    assert not any(isinstance(event, RcptToReceived | MailFromReceived) for event in transcript.events[2:])


@pytest.mark.parametrize(
    ("body", "limits", "reply"),
    [
        (b"x" * 200 + b"\r\n.\r\n", replace(LIMITS, max_message_size=100), replies.MESSAGE_TOO_BIG),
        (b"bare\nLF\r\n.\r\n", LIMITS, replies.BARE_LF_DATA),
        (b"y" * 200 + b"\r\n.\r\n", replace(LIMITS, max_data_line=100), replies.DATA_LINE_TOO_LONG),
        (b"nul\x00\r\n.\r\n", LIMITS, replies.NUL_IN_DATA),
    ],
    ids=["size", "bare-lf", "line", "nul"],
)
def test_end_of_data_refusals_reach_the_driver_before_the_reset(
    body: bytes, limits: SmtpLimits, reply: Reply
) -> None:
    events = message(body, limits).events
    refused = [index for index, event in enumerate(events) if isinstance(event, MessageRefused)]
    assert [events[i] for i in refused] == [MessageRefused(reply)]
    assert isinstance(events[refused[0] + 1], TransactionReset)


def test_a_recipient_past_the_limit_reaches_the_driver() -> None:
    limits = replace(LIMITS, max_recipients=1)
    rcpts = b"RCPT TO:<bob@postroom.test>\r\nRCPT TO:<carol@postroom.test>\r\n"
    transcript = converse(HELLO + b"MAIL FROM:<a@sender.example>\r\n" + rcpts, limits)
    assert transcript.replies[-1] == (452, "4.5.3")
    [refused] = [event for event in transcript.events if isinstance(event, RecipientRefused)]
    assert (str(refused.recipient), refused.reply) == ("carol@postroom.test", replies.TOO_MANY_RECIPIENTS)


def test_message_refusal_answers_data_and_bdat() -> None:
    core = SmtpServerProtocol("mx.postroom.test", LIMITS, tls_available=False)
    core.message_refusal = replies.INSUFFICIENT_STORAGE
    envelope = b"MAIL FROM:<a@sender.example>\r\nRCPT TO:<bob@postroom.test>\r\n"
    core.receive_data(HELLO + envelope + b"DATA\r\nRSET\r\n" + envelope + b"BDAT 3 LAST\r\nabc" + b"NOOP\r\n")
    transcript = Transcript()
    while (event := core.next_event()) is not None:
        if isinstance(event, HeloReceived | MailFromReceived | RcptToReceived | MessageReceived):
            core.respond(answer(event))
    transcript.parse(core.data_to_send())
    assert transcript.replies[3] == (452, "4.3.1")
    assert transcript.replies[7:] == [(452, "4.3.1"), (250, "2.0.0")]
    assert not any(isinstance(event, MessageReceived) for event in transcript.events)


STREAMED = [
    b"Subject: s\r\n\r\n..a\r\n.\r\n\r\n..\r\n...\r\nend.\r\n.\r\n",
    b".first\r\n\r\n.\r\n",
    b"x" * 50 + b"\r\n." + b"y" * 30 + b"\r\n.\r\n",
]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7])
@pytest.mark.parametrize("body", STREAMED, ids=range(len(STREAMED)))
def test_content_taken_by_the_driver_while_streaming_is_exact(body: bytes, size: int) -> None:
    expected = message(body).messages
    core = SmtpServerProtocol("mx.postroom.test", LIMITS, tls_available=False)
    taken: list[bytes] = []
    data = ENVELOPE + body
    for start in range(0, len(data), size):
        core.receive_data(data[start : start + size])
        while (event := core.next_event()) is not None:
            if isinstance(event, MessageReceived):
                taken.append(event.content)
                assert event.size == len(b"".join(taken))
            if isinstance(event, HeloReceived | MailFromReceived | RcptToReceived | MessageReceived):
                core.respond(answer(event))
        taken += core.take_content()
    assert [b"".join(taken)] == expected


def test_the_junk_count_starts_again_after_a_delivered_message() -> None:
    limits = replace(LIMITS, max_junk_commands=2)
    delivered = b"MAIL FROM:<a@sender.example>\r\nRCPT TO:<bob@postroom.test>\r\nDATA\r\nx\r\n.\r\n"
    transcript = converse(HELLO + (b"RSET\r\nNOOP\r\n" + delivered) * 3 + b"QUIT\r\n", limits)
    assert transcript.codes[-1] == 221
    assert len(transcript.messages) == 3
