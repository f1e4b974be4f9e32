"""SMTP AUTH in the sans-IO core, fed bytes: the SASL exchange, its refusals and its attacker cases."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field

import pytest

from postroom.config.settings import SmtpLimits
from postroom.model import replies
from postroom.model.replies import Reply
from postroom.smtp import (
    AuthPolicy,
    AuthReceived,
    ConnectionClosing,
    Event,
    HeloReceived,
    MailFromReceived,
    MessageReceived,
    ProtocolUsageError,
    RcptToReceived,
    SaslCredentials,
    SmtpServerProtocol,
    StartTlsRequested,
)

SUBMISSION = AuthPolicy()
LIMITS = SmtpLimits()
USER = "alice@postroom.test"
PASSWORD = "pässwörd ünd spaces"  # UTF-8 and spaces: carried exactly
_REPLY_LINE = re.compile(rb"(\d{3})([ -])(?:(\d\.\d{1,3}\.\d{1,3}) )?(.*)")


def b64(data: bytes | str) -> bytes:
    return base64.b64encode(data.encode() if isinstance(data, str) else data)


def plain(authcid: str = USER, password: str = PASSWORD, authzid: str = "") -> bytes:
    return b64(f"{authzid}\0{authcid}\0{password}")


def authenticate(credentials: SaslCredentials) -> Reply:
    """The application: one account; `closing@` gets 421, `throttled@` 454."""
    if credentials.authcid == "closing@postroom.test":
        return replies.SHUTTING_DOWN
    if credentials.authcid == "throttled@postroom.test":
        return replies.AUTH_THROTTLED
    if (credentials.authcid, credentials.password) == (USER, PASSWORD):
        return replies.AUTH_SUCCEEDED
    return replies.AUTH_FAILED


@dataclass
class Dialogue:
    """One connection to the core, fed one client write at a time, with the application answering."""

    core: SmtpServerProtocol
    replies: list[tuple[int, str | None]] = field(default_factory=list)
    challenges: list[str] = field(default_factory=list)
    keywords: list[list[str]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    @classmethod
    def open(
        cls,
        policy: AuthPolicy | None = SUBMISSION,
        limits: SmtpLimits = LIMITS,
        *,
        tls_active: bool = True,
        tls_available: bool = False,
    ) -> Dialogue:
        core = SmtpServerProtocol(
            "smtp.postroom.test", limits, tls_available=tls_available, tls_active=tls_active, auth=policy
        )
        return cls(core)

    def say(self, *writes: bytes) -> list[tuple[int, str | None]]:
        """Send each write after the replies to the one before; returns the replies to all of them."""
        start = len(self.replies)
        for data in writes:
            self.core.receive_data(data)
            while (event := self.core.next_event()) is not None:
                self.events.append(event)
                if isinstance(event, AuthReceived):
                    self.core.respond(authenticate(event.credentials))
                elif isinstance(event, MailFromReceived):
                    self.core.respond(replies.SENDER_OK)
                elif isinstance(event, RcptToReceived):
                    self.core.respond(replies.RECIPIENT_OK)
                elif isinstance(event, MessageReceived):
                    self.core.respond(replies.QUEUED)
                elif isinstance(event, HeloReceived):
                    self.core.respond(None)
                elif isinstance(event, StartTlsRequested):
                    self.core.tls_started()
            self._parse(self.core.data_to_send())
        return self.replies[start:]

    def _parse(self, output: bytes) -> None:
        lines: list[str] = []
        for raw in output.split(b"\r\n")[:-1]:
            match = _REPLY_LINE.fullmatch(raw)
            assert match, raw
            lines.append(match.group(4).decode())
            if match.group(2) == b" ":
                code = int(match.group(1))
                self.replies.append((code, match.group(3).decode() if match.group(3) else None))
                if code == 334:
                    assert raw.startswith(b"334 "), "RFC 4954: 334 SP [base64]"
                    self.challenges.append(lines[-1])
                if len(lines) > 1:
                    self.keywords.append(lines[1:])
                lines = []

    @property
    def logins(self) -> list[SaslCredentials]:
        return [event.credentials for event in self.events if isinstance(event, AuthReceived)]


EHLO = b"EHLO scanner.example\r\n"
MAIL = b"MAIL FROM:<alice@postroom.test>\r\n"
OK_235 = (235, "2.7.0")
C334 = (334, None)
BAD = (501, "5.5.2")


def ehlo_keywords(dialogue: Dialogue) -> list[str]:
    dialogue.say(EHLO)
    return [keyword for keyword in dialogue.keywords[-1] if keyword.startswith("AUTH")]


# --- what EHLO advertises --------------------------------------------------------------------------


def test_auth_is_advertised_only_where_it_is_allowed() -> None:
    assert ehlo_keywords(Dialogue.open()) == ["AUTH PLAIN LOGIN"]
    assert ehlo_keywords(Dialogue.open(tls_active=False, tls_available=True)) == []
    assert ehlo_keywords(Dialogue.open(AuthPolicy(tls_required=False), tls_active=False)) == [
        "AUTH PLAIN LOGIN"
    ]
    assert ehlo_keywords(Dialogue.open(AuthPolicy(mechanisms=("LOGIN",)))) == ["AUTH LOGIN"]
    assert ehlo_keywords(Dialogue.open(None)) == []


def test_auth_is_advertised_after_starttls() -> None:
    dialogue = Dialogue.open(tls_active=False, tls_available=True)
    assert ehlo_keywords(dialogue) == []
    assert dialogue.say(b"STARTTLS\r\n") == [(220, "2.0.0")]
    assert ehlo_keywords(dialogue) == ["AUTH PLAIN LOGIN"]


# --- the exchanges that succeed ----------------------------------------------------------------------

SUCCESSES = [
    ("plain-initial-response", [b"AUTH PLAIN " + plain() + b"\r\n"], [OK_235], []),
    ("plain-challenge", [b"AUTH PLAIN\r\n", plain() + b"\r\n"], [C334, OK_235], [""]),
    ("plain-lowercase", [b"auth plain " + plain() + b"\r\n"], [OK_235], []),
    (
        "login-challenges",
        [b"AUTH LOGIN\r\n", b64(USER) + b"\r\n", b64(PASSWORD) + b"\r\n"],
        [C334, C334, OK_235],
        ["VXNlcm5hbWU6", "UGFzc3dvcmQ6"],
    ),
    (
        "login-initial-response",
        [b"AUTH LOGIN " + b64(USER) + b"\r\n", b64(PASSWORD) + b"\r\n"],
        [C334, OK_235],
        ["UGFzc3dvcmQ6"],
    ),
]


@pytest.mark.parametrize(
    ("writes", "expected", "challenges"),
    [case[1:] for case in SUCCESSES],
    ids=[case[0] for case in SUCCESSES],
)
def test_successful_exchanges(
    writes: list[bytes], expected: list[tuple[int, str | None]], challenges: list[str]
) -> None:
    dialogue = Dialogue.open()
    dialogue.say(EHLO)
    assert dialogue.say(*writes) == expected
    assert dialogue.challenges == challenges
    [credentials] = dialogue.logins
    assert (credentials.authcid, credentials.password, credentials.authzid) == (USER, PASSWORD, "")
    assert credentials.mechanism in ("PLAIN", "LOGIN")
    assert dialogue.core.authenticated
    assert dialogue.say(MAIL) == [(250, "2.1.0")]


def test_plain_carries_the_authorization_identity() -> None:
    dialogue = Dialogue.open()
    dialogue.say(EHLO, b"AUTH PLAIN " + plain(authzid="shared@postroom.test") + b"\r\n")
    assert [(c.mechanism, c.authzid, c.authcid) for c in dialogue.logins] == [
        ("PLAIN", "shared@postroom.test", USER)
    ]


def test_the_password_is_never_in_a_repr() -> None:
    dialogue = Dialogue.open()
    dialogue.say(EHLO, b"AUTH PLAIN " + plain() + b"\r\n")
    assert PASSWORD not in repr(dialogue.events) and USER in repr(dialogue.events)


# --- refusals --------------------------------------------------------------------------------------

Case = tuple[str, list[bytes], list[tuple[int, str | None]]]
REFUSALS: list[Case] = [
    ("wrong-password", [b"AUTH PLAIN " + plain(password="guess") + b"\r\n"], [(535, "5.7.8")]),
    (
        "unknown-user-login",
        [b"AUTH LOGIN " + b64("mallory") + b"\r\n", b64("x") + b"\r\n"],
        [C334, (535, "5.7.8")],
    ),
    ("application-454", [b"AUTH PLAIN " + plain("throttled@postroom.test") + b"\r\n"], [(454, "4.7.0")]),
    ("unknown-mechanism", [b"AUTH CRAM-MD5\r\n"], [(504, "5.5.4")]),
    ("no-mechanism", [b"AUTH\r\n"], [(501, "5.5.4")]),
    ("cancel-plain", [b"AUTH PLAIN\r\n", b"*\r\n"], [C334, (501, "5.0.0")]),
    ("cancel-mid-login", [b"AUTH LOGIN\r\n", b64(USER) + b"\r\n", b"*\r\n"], [C334, C334, (501, "5.0.0")]),
    ("garbage-base64", [b"AUTH PLAIN !!notbase64!!\r\n"], [BAD]),
    ("missing-padding", [b"AUTH PLAIN " + plain().rstrip(b"=") + b"A\r\n"], [BAD]),
    ("space-inside-base64", [b"AUTH PLAIN\r\n", plain()[:8] + b" " + plain()[8:] + b"\r\n"], [C334, BAD]),
    ("garbage-login-password", [b"AUTH LOGIN " + b64(USER) + b"\r\n", b"%%%\r\n"], [C334, BAD]),
    ("non-utf8", [b"AUTH PLAIN " + b64(b"\0al\xffice\0pw") + b"\r\n"], [BAD]),
    ("empty-initial-response-plain", [b"AUTH PLAIN =\r\n"], [BAD]),
    ("empty-initial-response-login", [b"AUTH LOGIN =\r\n"], [BAD]),
    ("empty-plain-response", [b"AUTH PLAIN\r\n", b"\r\n"], [C334, BAD]),
    ("bare-lf-response", [b"AUTH PLAIN\r\n", plain() + b"\n"], [C334, BAD]),
    ("cr-inside-response", [b"AUTH PLAIN\r\n", plain() + b"\rNOOP\r\n"], [C334, BAD]),
    # NUL tricks: a third NUL, an empty login name or password, a NUL inside a LOGIN name
    ("plain-three-nuls", [b"AUTH PLAIN " + b64(f"\0{USER}\0{PASSWORD}\0admin") + b"\r\n"], [BAD]),
    ("plain-one-nul", [b"AUTH PLAIN " + b64(f"{USER}\0{PASSWORD}") + b"\r\n"], [BAD]),
    ("plain-empty-authcid", [b"AUTH PLAIN " + b64(f"{USER}\0\0{PASSWORD}") + b"\r\n"], [BAD]),
    ("plain-empty-password", [b"AUTH PLAIN " + b64(f"\0{USER}\0") + b"\r\n"], [BAD]),
    ("login-nul-in-name", [b"AUTH LOGIN " + b64(f"{USER}\0admin") + b"\r\n"], [BAD]),
    (
        "login-nul-in-password",
        [b"AUTH LOGIN " + b64(USER) + b"\r\n", b64(f"{PASSWORD}\0") + b"\r\n"],
        [C334, BAD],
    ),
]


@pytest.mark.parametrize(
    ("writes", "expected"), [case[1:] for case in REFUSALS], ids=[case[0] for case in REFUSALS]
)
def test_refusals_keep_the_session_unauthenticated(
    writes: list[bytes], expected: list[tuple[int, str | None]]
) -> None:
    dialogue = Dialogue.open()
    dialogue.say(EHLO)
    assert dialogue.say(*writes) == expected
    assert not dialogue.core.authenticated and dialogue.core.auth_failures == 1
    assert dialogue.say(MAIL, b"NOOP\r\n") == [(530, "5.7.57"), (250, "2.0.0")]


def test_malformed_credentials_never_reach_the_application() -> None:
    for name, writes, expected in REFUSALS:
        if expected[-1] == BAD:
            dialogue = Dialogue.open()
            dialogue.say(EHLO, *writes)
            assert dialogue.logins == [], name


SEQUENCE: list[Case] = [
    ("before-ehlo", [b"AUTH PLAIN " + plain() + b"\r\n"], [(503, "5.5.1")]),
    (
        "after-helo",
        [b"HELO scanner.example\r\n", b"AUTH PLAIN " + plain() + b"\r\n"],
        [(250, None), (503, "5.5.1")],
    ),
    (
        "twice",
        [EHLO, b"AUTH PLAIN " + plain() + b"\r\n", b"AUTH PLAIN " + plain() + b"\r\n"],
        [(250, None), OK_235, (503, "5.5.1")],
    ),
]


@pytest.mark.parametrize(
    ("writes", "expected"), [case[1:] for case in SEQUENCE], ids=[case[0] for case in SEQUENCE]
)
def test_auth_out_of_sequence(writes: list[bytes], expected: list[tuple[int, str | None]]) -> None:
    assert Dialogue.open().say(*writes) == expected


def test_already_authenticated_says_so() -> None:
    dialogue = Dialogue.open()
    dialogue.say(EHLO, b"AUTH PLAIN " + plain() + b"\r\n")
    dialogue.core.receive_data(b"AUTH LOGIN\r\n")
    assert dialogue.core.next_event() is None
    assert dialogue.core.data_to_send() == b"503 5.5.1 Already authenticated\r\n"


def test_auth_inside_a_mail_transaction_is_refused() -> None:
    dialogue = Dialogue.open(AuthPolicy(required_for_mail=False))
    assert dialogue.say(EHLO, MAIL, b"AUTH PLAIN " + plain() + b"\r\n") == [
        (250, None),
        (250, "2.1.0"),
        (503, "5.5.1"),
    ]
    assert dialogue.logins == []


def test_a_mechanism_the_listener_does_not_offer_is_unknown() -> None:
    dialogue = Dialogue.open(AuthPolicy(mechanisms=("LOGIN",)))
    assert dialogue.say(EHLO, b"AUTH PLAIN " + plain() + b"\r\n") == [(250, None), (504, "5.5.4")]


def test_the_mx_role_answers_502_and_never_closes_for_logins() -> None:
    dialogue = Dialogue.open(None)
    dialogue.say(EHLO)
    assert dialogue.say(*[b"AUTH PLAIN " + plain() + b"\r\n"] * 5) == [(502, "5.5.1")] * 5
    assert not dialogue.core.closed and dialogue.logins == []
    assert dialogue.say(MAIL) == [(250, "2.1.0")]  # no AUTH needed where none is offered


# --- TLS --------------------------------------------------------------------------------------------


def test_auth_pipelined_before_starttls_is_refused() -> None:
    dialogue = Dialogue.open(tls_active=False, tls_available=True)
    written = dialogue.say(EHLO + b"AUTH PLAIN " + plain() + b"\r\nSTARTTLS\r\n")
    assert written == [(250, None), (530, "5.7.0"), (220, "2.0.0")]
    assert dialogue.logins == []
    assert dialogue.say(EHLO, MAIL) == [(250, None), (530, "5.7.57")]


def test_login_before_starttls_is_refused_even_by_steps() -> None:
    dialogue = Dialogue.open(tls_active=False, tls_available=True)
    assert dialogue.say(EHLO, b"AUTH LOGIN\r\n", b64(USER) + b"\r\n") == [
        (250, None),
        (530, "5.7.0"),
        (500, "5.5.2"),
    ]
    assert dialogue.logins == []


def test_starttls_forgets_the_authentication() -> None:
    dialogue = Dialogue.open(AuthPolicy(tls_required=False), tls_active=False, tls_available=True)
    assert dialogue.say(EHLO, b"AUTH PLAIN " + plain() + b"\r\n") == [(250, None), OK_235]
    assert dialogue.say(b"STARTTLS\r\n", EHLO, MAIL) == [(220, "2.0.0"), (250, None), (530, "5.7.57")]
    assert not dialogue.core.authenticated
    assert dialogue.say(b"AUTH PLAIN " + plain() + b"\r\n", MAIL) == [OK_235, (250, "2.1.0")]


# --- pipelining ------------------------------------------------------------------------------------


def test_commands_pipelined_after_plain_with_an_initial_response_are_commands() -> None:
    dialogue = Dialogue.open()
    written = dialogue.say(
        EHLO + b"AUTH PLAIN " + plain() + b"\r\n" + MAIL + b"RCPT TO:<bob@fabrikam.example>\r\n"
    )
    assert written == [(250, None), OK_235, (250, "2.1.0"), (250, "2.1.5")]


def test_commands_pipelined_after_a_failed_plain_are_commands_of_an_unauthenticated_session() -> None:
    dialogue = Dialogue.open()
    written = dialogue.say(EHLO + b"AUTH PLAIN " + plain(password="guess") + b"\r\n" + MAIL)
    assert written == [(250, None), (535, "5.7.8"), (530, "5.7.57")]


@pytest.mark.parametrize(
    "pipelined",
    [
        b"AUTH PLAIN\r\n" + plain() + b"\r\n",
        b"AUTH LOGIN\r\n" + b64(USER) + b"\r\n" + b64(PASSWORD) + b"\r\n",
        b"AUTH LOGIN " + b64(USER) + b"\r\n" + b64(PASSWORD) + b"\r\n",
    ],
    ids=["plain", "login", "login-initial-response"],
)
def test_a_response_sent_before_its_334_is_a_protocol_error(pipelined: bytes) -> None:
    dialogue = Dialogue.open()
    written = dialogue.say(EHLO + pipelined)
    assert written[:2] == [(250, None), (503, "5.5.1")]
    assert all(code == 500 for code, _ in written[2:])  # the rest is read as (unknown) commands
    assert dialogue.logins == [] and not dialogue.core.authenticated


def test_a_command_pipelined_into_the_exchange_is_not_taken_as_sasl_data() -> None:
    dialogue = Dialogue.open()
    assert dialogue.say(EHLO + b"AUTH PLAIN\r\n" + MAIL) == [(250, None), (503, "5.5.1"), (530, "5.7.57")]


# --- bounds ----------------------------------------------------------------------------------------


def test_a_huge_sasl_line_is_refused_and_skipped() -> None:
    dialogue = Dialogue.open()
    dialogue.say(EHLO, b"AUTH PLAIN\r\n")
    huge = b"QUFB" * 5000  # 20000 octets of valid base64
    written = dialogue.say(huge[:7000], huge[7000:] + b"\r\nNOOP\r\n")
    assert written == [(500, "5.5.6"), (250, "2.0.0")]
    assert dialogue.core.buffered == 0 and dialogue.logins == []


def test_a_sasl_line_just_over_the_limit_is_refused_whole() -> None:
    limits = SmtpLimits(max_auth_line=100)
    dialogue = Dialogue.open(limits=limits)
    dialogue.say(EHLO, b"AUTH PLAIN\r\n")
    assert dialogue.say(b"A" * 99 + b"\r\n") == [(500, "5.5.6")]
    dialogue.say(b"AUTH PLAIN\r\n")
    response = plain(password="x" * 51)  # 72 octets, 96 in base64: with CRLF within the limit
    assert len(response) == 96
    assert dialogue.say(response + b"\r\n") == [(535, "5.7.8")]  # read, decoded, refused by the application


def test_an_auth_line_may_be_longer_than_a_command_line_up_to_its_own_limit() -> None:
    limits = SmtpLimits(max_command_line=512)
    dialogue = Dialogue.open(limits=limits)
    long_password = plain(password="p" * 3000)
    assert dialogue.say(EHLO, b"AUTH PLAIN " + long_password + b"\r\n") == [(250, None), (535, "5.7.8")]
    assert dialogue.say(b"NOOP " + b"x" * 600 + b"\r\n") == [(500, "5.5.2")]  # other commands keep theirs
    assert dialogue.say(b"AUTH PLAIN " + b"QUFB" * 4000 + b"\r\n") == [(500, "5.5.6")]


def test_failed_logins_end_the_session() -> None:
    dialogue = Dialogue.open()
    dialogue.say(EHLO)
    wrong = b"AUTH PLAIN " + plain(password="guess") + b"\r\n"
    assert dialogue.say(wrong, wrong) == [(535, "5.7.8")] * 2
    assert not dialogue.core.closed
    assert dialogue.say(wrong + b"NOOP\r\n") == [(535, "5.7.8"), (421, "4.7.0")]
    assert dialogue.core.closed and isinstance(dialogue.events[-1], ConnectionClosing)


def test_every_kind_of_failed_auth_counts_toward_the_bound() -> None:
    dialogue = Dialogue.open(limits=SmtpLimits(max_auth_failures=5))
    written = dialogue.say(
        EHLO,
        b"AUTH CRAM-MD5\r\n",
        b"AUTH PLAIN !!\r\n",
        b"AUTH LOGIN\r\n",
        b"*\r\n",
        b"AUTH PLAIN " + plain("throttled@postroom.test") + b"\r\n",
        b"AUTH PLAIN " + plain(password="guess") + b"\r\n",
    )
    assert written == [
        (250, None),
        (504, "5.5.4"),
        BAD,
        C334,
        (501, "5.0.0"),
        (454, "4.7.0"),
        (535, "5.7.8"),
        (421, "4.7.0"),
    ]
    assert dialogue.core.closed


def test_a_successful_login_after_failures_is_allowed_below_the_bound() -> None:
    dialogue = Dialogue.open()
    wrong = b"AUTH PLAIN " + plain(password="guess") + b"\r\n"
    assert dialogue.say(EHLO, wrong, wrong, b"AUTH PLAIN " + plain() + b"\r\n") == [
        (250, None),
        (535, "5.7.8"),
        (535, "5.7.8"),
        OK_235,
    ]


def test_protocol_faults_in_auth_also_count_as_errors() -> None:
    dialogue = Dialogue.open(limits=SmtpLimits(max_errors=3, max_auth_failures=10))
    assert dialogue.say(EHLO, b"AUTH PLAIN !!\r\n", b"AUTH FOO\r\n", b"AUTH PLAIN ==\r\n") == [
        (250, None),
        BAD,
        (504, "5.5.4"),
        BAD,
        (421, "4.7.0"),
    ]
    assert dialogue.core.closed


def test_a_421_from_the_application_closes() -> None:
    dialogue = Dialogue.open()
    assert dialogue.say(EHLO, b"AUTH PLAIN " + plain("closing@postroom.test") + b"\r\n") == [
        (250, None),
        (421, "4.3.2"),
    ]
    assert dialogue.core.closed


def test_end_of_file_in_the_exchange_closes() -> None:
    dialogue = Dialogue.open()
    dialogue.say(EHLO, b"AUTH LOGIN\r\n", b64(USER)[:4])
    dialogue.core.receive_data(b"")
    assert dialogue.core.next_event() == ConnectionClosing("eof")


def test_auth_received_needs_a_reply() -> None:
    core = SmtpServerProtocol(
        "smtp.postroom.test", SmtpLimits(), tls_available=False, tls_active=True, auth=AuthPolicy()
    )
    core.receive_data(EHLO)
    assert isinstance(core.next_event(), HeloReceived)
    core.respond(None)
    core.receive_data(b"AUTH PLAIN " + plain() + b"\r\n")
    assert isinstance(core.next_event(), AuthReceived)
    with pytest.raises(ProtocolUsageError):
        core.respond(None)


# --- MAIL and AUTH ----------------------------------------------------------------------------------


def test_mail_needs_auth_only_where_the_policy_says() -> None:
    assert Dialogue.open().say(EHLO, MAIL) == [(250, None), (530, "5.7.57")]
    assert Dialogue.open(AuthPolicy(required_for_mail=False)).say(EHLO, MAIL) == [(250, None), (250, "2.1.0")]


@pytest.mark.parametrize("parameter", [b"AUTH=<>", b"AUTH=alice+40postroom.test"])
def test_the_mail_auth_parameter_is_accepted_and_ignored(parameter: bytes) -> None:
    dialogue = Dialogue.open()
    written = dialogue.say(EHLO, b"AUTH PLAIN " + plain() + b"\r\n", MAIL[:-2] + b" " + parameter + b"\r\n")
    assert written == [(250, None), OK_235, (250, "2.1.0")]
    mail = [event for event in dialogue.events if isinstance(event, MailFromReceived)]
    assert mail[0].params.auth == parameter.decode()[5:]
