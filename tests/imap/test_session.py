"""The IMAP session without sockets: bytes in, bytes out, against an in-memory twin of the node.

What happens before login (greeting, capabilities, STARTTLS, LOGIN and AUTHENTICATE, the error and
command limits, the login throttle's answers) and the commands that need no folder. The commands
over folders and messages run against a real node in test_server.py."""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from typing import TypeVar

import pytest
from sqlalchemy import Connection

from postroom.imap.session import ImapAccount, ImapSession, LoginRefused, SessionLimits
from postroom.mailstore import mailbox as store

T = TypeVar("T")

ALICE = ImapAccount(mailbox_id=7, tenant_id=1, address="alice@contoso.com", quota_bytes=None)


class LoginTwin:
    """A node that knows one login and has no mailbox behind it (no command here reads one)."""

    def __init__(self, refusal: LoginRefused = LoginRefused.FAILED) -> None:
        self.refusal = refusal
        self.logins: list[tuple[str, str, str]] = []

    async def login(self, user: str, password: str, client: str) -> ImapAccount | LoginRefused:
        self.logins.append((user, password, client))
        if (user, password) == ("alice@contoso.com", "alice-pw") and self.refusal is LoginRefused.FAILED:
            return ALICE
        return self.refusal

    async def read(self, job: Callable[[Connection], T]) -> T:
        raise AssertionError("no folder is read here")

    async def write(self, job: Callable[[Connection], T]) -> T:
        raise AssertionError("nothing is written here")

    async def store_blob(self, content: bytes) -> str:
        raise AssertionError("nothing is stored here")

    async def message_bytes(
        self, records: Sequence[store.MessageRecord], *, header_only: bool
    ) -> list[bytes]:
        raise AssertionError("no message is read here")

    def watch(self, mailbox_id: int, callback: Callable[[], None]) -> Callable[[], None]:
        return lambda: None

    def junk_report(self, account: ImapAccount, records: Sequence[store.MessageRecord], spam: bool) -> None:
        raise AssertionError("no report here")

    def cache_structure(self, folder_id: int, records: Sequence[store.MessageRecord]) -> None:
        raise AssertionError("no cache here")


class Wire:
    """One session and what it wrote."""

    def __init__(
        self, *, tls: bool = False, plaintext: bool = False, twin: LoginTwin | None = None, **limits: object
    ) -> None:
        self.twin = twin or LoginTwin()
        self.written = bytearray()
        self.session = ImapSession(
            self.twin,
            SessionLimits(**limits),  # type: ignore[arg-type]
            self._write,
            client="192.0.2.9",
            tls=tls,
            starttls=not tls,
            plaintext_login=plaintext,
        )
        self.written += self.session.greeting()

    async def _write(self, data: bytes) -> None:
        self.written += data

    async def send(self, data: bytes) -> list[bytes]:
        """Feed `data`; the lines written in answer."""
        start = len(self.written)
        self.session.receive_data(data)
        await self.session.process()
        if self.session.wants_starttls:
            await self.session.flush()  # the listener does it once it stopped reading
        return bytes(self.written[start:]).split(b"\r\n")[:-1]


def login_line(user: str = "alice@contoso.com", password: str = "alice-pw") -> bytes:
    return f'a1 LOGIN "{user}" "{password}"\r\n'.encode()


async def test_greeting_offers_starttls_and_disables_login_before_tls() -> None:
    wire = Wire()
    greeting = bytes(wire.written)
    assert greeting.startswith(b"* OK [CAPABILITY IMAP4rev1 ")
    assert b" STARTTLS" in greeting and b" LOGINDISABLED" in greeting and b"AUTH=PLAIN" not in greeting
    lines = await wire.send(login_line())
    assert lines == [b"a1 NO [PRIVACYREQUIRED] Use STARTTLS before logging in"]
    lines = await wire.send(b"a2 AUTHENTICATE PLAIN AGFsaWNlQGNvbnRvc28uY29tAGFsaWNlLXB3\r\n")
    assert lines == [b"a2 NO [PRIVACYREQUIRED] Use STARTTLS before logging in"]
    assert wire.twin.logins == []  # the password never reached the directory


async def test_starttls_drops_what_was_pipelined_after_it_and_then_offers_login() -> None:
    wire = Wire()
    lines = await wire.send(b"a1 STARTTLS\r\na2 LOGIN alice@contoso.com alice-pw\r\n")
    assert lines == [b"a1 OK Begin TLS negotiation now"]
    assert wire.session.wants_starttls
    wire.session.tls_started()
    assert await wire.send(b"a3 CAPABILITY\r\n") == [
        b"* CAPABILITY IMAP4rev1 LITERAL+ SASL-IR ID ENABLE IDLE NAMESPACE UNSELECT AUTH=PLAIN",
        b"a3 OK CAPABILITY completed",
    ]
    assert wire.twin.logins == []
    assert await wire.send(b"a4 STARTTLS\r\n") == [b"a4 BAD TLS is already active"]


async def test_login_over_tls_then_the_authenticated_capabilities() -> None:
    wire = Wire(tls=True)
    assert b"STARTTLS" not in bytes(wire.written)
    (line,) = await wire.send(login_line())
    assert line.startswith(b"a1 OK [CAPABILITY IMAP4rev1 ") and b"UIDPLUS" in line and b"MOVE" in line
    assert b"APPENDLIMIT=52428800" in line and b"QUOTA" not in line  # Alice has no size limit
    assert wire.twin.logins == [("alice@contoso.com", "alice-pw", "192.0.2.9")]
    assert await wire.send(b"a2 LOGIN x y\r\n") == [b"a2 BAD LOGIN is not allowed in the authenticated state"]


async def test_plaintext_login_when_the_lab_allows_it() -> None:
    wire = Wire(plaintext=True)
    assert b"LOGINDISABLED" not in bytes(wire.written)
    (line,) = await wire.send(login_line())
    assert line.startswith(b"a1 OK [CAPABILITY")


@pytest.mark.parametrize(
    ("refusal", "expected"),
    [
        (LoginRefused.FAILED, [b"a1 NO [AUTHENTICATIONFAILED] Authentication failed"]),
        (LoginRefused.THROTTLED, [b"a1 NO [UNAVAILABLE] Too many failed logins; try again later"]),
        (
            LoginRefused.DISCONNECT,
            [b"a1 NO [UNAVAILABLE] Too many failed logins", b"* BYE Too many failed logins"],
        ),
    ],
)
async def test_refused_logins_answer_with_their_codes(refusal: LoginRefused, expected: list[bytes]) -> None:
    wire = Wire(tls=True, twin=LoginTwin(refusal))
    assert await wire.send(login_line(password="wrong")) == expected
    assert wire.session.closed is (refusal is LoginRefused.DISCONNECT)


async def test_authenticate_plain_with_an_initial_response_and_with_a_continuation() -> None:
    token = base64.b64encode(b"\0alice@contoso.com\0alice-pw")
    wire = Wire(tls=True)
    (line,) = await wire.send(b"a1 AUTHENTICATE PLAIN " + token + b"\r\n")
    assert line.startswith(b"a1 OK [CAPABILITY")
    wire = Wire(tls=True)
    assert await wire.send(b"a1 AUTHENTICATE PLAIN\r\n") == [b"+ "]
    (line,) = await wire.send(token + b"\r\n")
    assert line.startswith(b"a1 OK [CAPABILITY")


async def test_authenticate_refuses_garbage_cancel_other_mechanisms_and_other_identities() -> None:
    wire = Wire(tls=True)
    assert await wire.send(b"a1 AUTHENTICATE PLAIN\r\n") == [b"+ "]
    assert await wire.send(b"*\r\n") == [b"a1 BAD AUTHENTICATE cancelled"]
    assert await wire.send(b"a2 AUTHENTICATE PLAIN !!!\r\n") == [b"a2 BAD Invalid PLAIN response"]
    assert await wire.send(b"a3 AUTHENTICATE CRAM-MD5\r\n") == [b"a3 NO Unsupported mechanism; use PLAIN"]
    other = base64.b64encode(b"bob@contoso.com\0alice@contoso.com\0alice-pw")
    assert await wire.send(b"a4 AUTHENTICATE PLAIN " + other + b"\r\n") == [
        b"a4 NO [AUTHORIZATIONFAILED] Acting as another user is not allowed"
    ]
    assert wire.twin.logins == []


async def test_malformed_commands_get_bad_until_the_error_limit_then_bye() -> None:
    wire = Wire(max_errors=3)
    assert await wire.send(b"a1 FROB\r\n") == [b"a1 BAD Unknown command FROB"]
    assert await wire.send(b'a2 NOOP "unterminated\r\n') == [b"a2 BAD Unterminated quoted string"]
    assert await wire.send(b"a3 NOOP\r\n") == [b"a3 OK NOOP completed"]  # still served
    assert await wire.send(b"a4 SELECT INBOX\r\n") == [
        b"a4 BAD SELECT is not allowed in the not authenticated state",
        b"* BYE Too many errors",
    ]
    assert wire.session.closed


async def test_commands_before_login_are_bounded() -> None:
    wire = Wire(commands_before_login=3)
    assert await wire.send(b"a1 NOOP\r\na2 NOOP\r\na3 NOOP\r\na4 NOOP\r\na5 NOOP\r\n") == [
        b"a1 OK NOOP completed",
        b"a2 OK NOOP completed",
        b"a3 OK NOOP completed",
        b"* BYE Too many commands without logging in",
    ]
    assert wire.session.closed


async def test_a_literal_before_login_is_bounded_and_a_refused_one_is_never_read_as_commands() -> None:
    wire = Wire(plaintext=True)
    assert await wire.send(b"a1 LOGIN {100000}\r\n") == [b"a1 BAD Literal too large"]
    # LITERAL+: the client sends it anyway; its octets are dropped, not run
    hidden = b"a9 LOGIN alice@contoso.com alice-pw\r\n"
    lines = await wire.send(
        b"a2 LOGIN {9000+}\r\n" + hidden * (9000 // len(hidden)) + b"x" * (9000 % len(hidden))
    )
    assert lines == [b"a2 BAD Literal too large"]
    assert await wire.send(b"\r\na3 NOOP\r\n") == [b"a3 OK NOOP completed"]
    assert wire.twin.logins == []


async def test_a_synchronizing_literal_gets_a_continuation() -> None:
    wire = Wire(plaintext=True)
    assert await wire.send(b"a1 LOGIN {17}\r\n") == [b"+ Ready for literal"]
    (line,) = await wire.send(b"alice@contoso.com {8}\r\n")
    assert line == b"+ Ready for literal"
    (line,) = await wire.send(b"alice-pw\r\n")
    assert line.startswith(b"a1 OK [CAPABILITY")


async def test_id_namespace_enable_logout() -> None:
    wire = Wire(tls=True)
    (line, done) = await wire.send(b'a1 ID ("name" "imaplib")\r\n')
    assert line.startswith(b'* ID ("name" "Postroom" "version" ') and done == b"a1 OK ID completed"
    await wire.send(login_line())
    assert await wire.send(b"a2 NAMESPACE\r\n") == [
        b'* NAMESPACE (("" "/")) NIL NIL',
        b"a2 OK NAMESPACE completed",
    ]
    assert await wire.send(b"a3 ENABLE CONDSTORE X-UNKNOWN\r\n") == [
        b"* ENABLED CONDSTORE",
        b"a3 OK ENABLE completed",
    ]
    assert await wire.send(b"a4 GETQUOTAROOT INBOX\r\n") == [b"a4 NO This mailbox has no size limit"]
    assert await wire.send(b"a5 LOGOUT\r\n") == [b"* BYE Logging out", b"a5 OK LOGOUT completed"]
    assert wire.session.closed


async def test_idle_without_a_folder_ends_with_done_and_anything_else_is_bad() -> None:
    wire = Wire(tls=True)
    await wire.send(login_line())
    assert await wire.send(b"a1 IDLE\r\n") == [b"+ idling"]
    assert wire.session.idling is not None
    assert wire.session.timeout() <= SessionLimits().idle_max
    assert await wire.send(b"DONE\r\na2 NOOP\r\n") == [b"a1 OK IDLE terminated", b"a2 OK NOOP completed"]
    assert await wire.send(b"a3 IDLE\r\n") == [b"+ idling"]
    assert await wire.send(b"a4 NOOP\r\n") == [b"a3 BAD Expected DONE to end IDLE"]


async def test_timeouts_before_and_after_login_and_the_bye() -> None:
    wire = Wire(tls=True, login_timeout=60.0, idle_timeout=1800.0)
    assert wire.session.timeout() == 60.0
    await wire.send(login_line())
    assert wire.session.timeout() == 1800.0
    await wire.session.timed_out()
    assert bytes(wire.written).endswith(b"* BYE Autologout; idle for too long\r\n")
    assert wire.session.closed


async def test_selected_commands_are_refused_without_a_folder() -> None:
    wire = Wire(tls=True)
    await wire.send(login_line())
    for command in (b"FETCH 1 FLAGS", b"UID SEARCH ALL", b"EXPUNGE", b"CLOSE"):
        name = command.split()[0]
        assert await wire.send(b"t " + command + b"\r\n") == [
            b"t BAD " + name + b" is not allowed in the authenticated state"
        ]


async def test_an_append_over_the_limit_is_refused_before_its_literal_is_sent() -> None:
    wire = Wire(tls=True, max_append_size=100)
    await wire.send(login_line())
    assert await wire.send(b"a2 APPEND INBOX {200}\r\n") == [b"a2 NO [TOOBIG] Message too large"]
    # LITERAL+: the octets come anyway; they are dropped, never read as commands
    hidden = b"a9 LOGOUT\r\n" * 20
    assert await wire.send(b"a3 APPEND INBOX {220+}\r\n" + hidden + b"\r\na4 NOOP\r\n") == [
        b"a3 NO [TOOBIG] Message too large",
        b"a4 OK NOOP completed",
    ]
    assert not wire.session.closed


async def test_a_line_too_long_for_done_or_a_sasl_response_ends_the_exchange_with_bad() -> None:
    wire = Wire(tls=True)
    assert await wire.send(b"a1 AUTHENTICATE PLAIN\r\n") == [b"+ "]
    assert await wire.send(b"A" * 9000 + b"\r\n") == [b"a1 BAD Invalid PLAIN response"]
    await wire.send(login_line())
    assert await wire.send(b"a2 IDLE\r\n") == [b"+ idling"]
    assert await wire.send(b"x" * 9000 + b"\r\na3 NOOP\r\n") == [
        b"a2 BAD Expected DONE to end IDLE",
        b"a3 OK NOOP completed",
    ]
