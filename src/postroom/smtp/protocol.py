"""The SMTP server state machine, sans-IO: bytes in, events out, replies in, bytes out.

`SmtpServerProtocol` is one connection's protocol state, in the style of h11. The driver feeds it what
the socket read (`receive_data`, `b""` at end of file), takes events one at a time (`next_event`),
answers each decision event with a reply (`respond`) and writes whatever `data_to_send` returns. It does
no I/O, knows no clock and imports only value types, so it is tested by feeding it bytes.

Events. Decision events wait for `respond` before anything later in the input is read: `HeloReceived`
(`respond(None)` or any positive reply accepts and the core writes its own 250 with the EHLO keywords; a
4xx/5xx refuses), `AuthReceived` (a completed AUTH exchange, below), `MailFromReceived`,
`RcptToReceived`, `MessageReceived` (after `<CRLF>.<CRLF>` or the last BDAT chunk; the content is
dot-unstuffed and otherwise exactly as received). `StartTlsRequested` follows the core's own 220: the
driver flushes, upgrades the transport and calls `tls_started`, which puts the session back to before
EHLO and unauthenticated (RFC 3207 §4.2). Informational events: `RecipientRefused` (the core said 452
4.5.3 to a RCPT past `max_recipients`), `MessageRefused` (the core refused the message at its end: 552,
550 5.6.11, 550 5.6.0; it comes before the transaction's reset), `TransactionReset` (the open transaction
was discarded or completed: RSET, a new EHLO, the end of a message, a failed BDAT; the driver resets its
transaction state), `ConnectionClosing` (QUIT, too many errors, refused recipients or junk commands or
failed logins, end of file, or a 421; after it nothing is read, and the driver closes once it has sent
`data_to_send`).

Message content is checked while it streams in, not when it is complete: the bare LF, line length and
NUL rules and dot-unstuffing carry their state across reads, and the core holds only the content of
the message (`held`). The driver may take what is held at any time (`take_content`, to spool it to
disk); `MessageReceived` then carries the rest, and its `size` is the whole message's. While the driver
sets `message_refusal` (its memory budget is spent), DATA and a first BDAT get that reply instead.
`refused_recipients` and `data_octets` let the driver slow recipient probing and measure the data rate:
the core knows no clock.

AUTH (RFC 4954), only when the core is given an `AuthPolicy` (else AUTH is 502 5.5.1 and not
advertised). The core runs the SASL exchange itself: PLAIN (RFC 4616) and LOGIN, with or without an
initial response, 334 challenges, `*` to cancel (501 5.0.0). Each response is one CRLF line of strict
base64 of UTF-8, bounded by `max_auth_line` (500 5.5.6); malformed credentials (bad base64, not UTF-8, a
PLAIN message without exactly two NULs, an empty name or password, a NUL in a LOGIN field) get 501 5.5.2
and never reach the driver. A complete exchange is the `AuthReceived` decision: a positive reply
authenticates the session, a 421 closes it. AUTH is refused before EHLO, during a transaction and once
authenticated (503 5.5.1), and with 530 5.7.0 (and not advertised) while the policy needs TLS that is
not active. Where the policy requires it, MAIL before a successful AUTH gets 530 5.7.57. Every failed
AUTH reply counts, the core's and the driver's; at `max_auth_failures` the core says 421 4.7.0 and
closes. Protocol faults among them (sequence, syntax, unknown mechanism, line length) also count
toward `max_errors`.

Guarantees. Events come out in input order, so pipelined commands (RFC 2920) are decided in order and
their replies are buffered together until the driver flushes. Everything else the core answers itself
from the reply catalogue: EHLO/HELO, RSET, NOOP, QUIT, VRFY, HELP, unknown commands, sequence and
parameter errors, the SIZE, recipient and line limits of `SmtpLimits`. A reply with code 421, from the
application or from `close_with`, closes the session. Every error reply the core makes for a protocol
fault counts; at `max_errors` it says 421 4.7.0 and closes. Policy outcomes (a SIZE over the limit, too
many recipients, a message refused for its content, the application's own refusals) do not count as
errors, but every refused RCPT (the application's 550s, the core's 452 and syntax errors) counts toward
`max_refused_recipients` in the session, and at it the core says 421 4.7.0 and closes. Commands that
move no mail (NOOP, RSET, VRFY, EXPN, HELP) are counted too, from the last accepted message on: the
one past `max_junk_commands` gets 421 4.7.0 and the session closes.

Failure behaviour. Misuse by the driver (responding with nothing pending, `tls_started` without
STARTTLS) raises `ProtocolUsageError`. Input never raises: every fault becomes a reply.

Security: this reads untrusted network input and is the guard against SMTP smuggling. Command lines
end only at <CRLF>; a bare LF or a CR inside a command line is refused (500 5.5.2) and never splits or
ends a command. Message data ends only at <CRLF>.<CRLF> (or a first line of "."): no combination of bare
LF or bare CR with a dot (<LF>.<LF>, <LF>.<CRLF>, <CR>.<CR>, <CRLF>.<LF>, ...) ends a message or starts
another. A message holding a bare LF or bare CR is refused after its real end with 550 5.6.11 when
`bare_lf` is "reject"; with "normalize" both are stored as CRLF. A NUL octet is refused the same way
with 550 5.6.0 when `nul` is "reject", or removed with "strip" (never stored as received). BDAT chunks
are counted, never scanned for a terminator (BODY=BINARYMIME content takes any octet). Plaintext
pipelined after STARTTLS is discarded (CVE-2011-0411). A SASL response is read only after its 334 was
written: input already buffered when a 334 is due was sent before the client could see it, so the
exchange fails (503 5.5.1) and that input is read as commands, never as credentials; commands pipelined
after AUTH PLAIN with an initial response are commands of the session the AUTH left. Every input is
bounded: command lines by
`max_command_line`, messages by `max_message_size` (the excess is read and discarded to the real end,
then 552 5.3.4), recipients by `max_recipients` and refused ones by `max_refused_recipients`, errors by
`max_errors`, junk commands by `max_junk_commands`, AUTH lines by `max_auth_line` and logins by
`max_auth_failures`. Credentials travel only in `AuthReceived`, whose repr leaves the password out.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal

from postroom.config.settings import SmtpLimits
from postroom.model import replies
from postroom.model.address import Address, AddressError
from postroom.model.replies import Reply
from postroom.smtp.params import MailParams, ParameterError, RcptParams, parse_mail_params, parse_rcpt_params
from postroom.smtp.sasl import (
    LOGIN_PASSWORD_CHALLENGE,
    LOGIN_USERNAME_CHALLENGE,
    AuthPolicy,
    decode_response,
    login_field,
    plain_credentials,
)
from postroom.smtp.session import SaslCredentials

CloseReason = Literal["quit", "errors", "eof", "server"]
_JUNK = frozenset({"NOOP", "RSET", "VRFY", "EXPN", "HELP"})  # commands that move no mail (Postfix's junk)


@dataclass(frozen=True, slots=True)
class HeloReceived:
    """EHLO (`extended`) or HELO with the name the client gave. Decision: `respond(None)` accepts."""

    name: str
    extended: bool


@dataclass(frozen=True, slots=True)
class AuthReceived:
    """An AUTH exchange completed with these credentials. Decision: 235 authenticates the session,
    a 421 closes it, anything else refuses (and counts toward `max_auth_failures`)."""

    credentials: SaslCredentials


@dataclass(frozen=True, slots=True)
class MailFromReceived:
    """MAIL FROM; `sender` is None for the null reverse-path `<>`. Decision."""

    sender: Address | None
    params: MailParams


@dataclass(frozen=True, slots=True)
class RcptToReceived:
    """RCPT TO for one recipient. Decision; a positive reply counts the recipient as accepted."""

    recipient: Address
    params: RcptParams


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """The message of the transaction is complete (dot-unstuffed, CRLF lines). Decision: the final reply.

    `content` is what the core still holds: the whole message, unless the driver took the earlier parts
    with `take_content` (to spool them); `size` is the size of the whole message.
    """

    content: bytes = field(repr=False)
    size: int


@dataclass(frozen=True, slots=True)
class RecipientRefused:
    """The core refused a RCPT itself (too many recipients); informational, for the trace."""

    recipient: Address
    reply: Reply


@dataclass(frozen=True, slots=True)
class MessageRefused:
    """The core refused the message at its end (size, bare LF, line length, NUL); informational.

    It comes before the `TransactionReset` of the transaction, so the driver can tell the session."""

    reply: Reply


@dataclass(frozen=True, slots=True)
class StartTlsRequested:
    """The core said 220 to STARTTLS; the driver upgrades the transport, then calls `tls_started`."""


@dataclass(frozen=True, slots=True)
class TransactionReset:
    """The open mail transaction ended (completed or discarded); the driver resets its envelope."""


@dataclass(frozen=True, slots=True)
class ConnectionClosing:
    """The session is over; send `data_to_send()` and close the connection."""

    reason: CloseReason


Decision = HeloReceived | AuthReceived | MailFromReceived | RcptToReceived | MessageReceived
Notice = StartTlsRequested | RecipientRefused | MessageRefused | TransactionReset | ConnectionClosing
Event = Decision | Notice


class ProtocolUsageError(RuntimeError):
    """The driver called the core out of turn (a bug in the driver, not in the input)."""


class _Phase(Enum):
    COMMAND = "command"  # reading command lines
    DATA = "data"  # reading DATA content up to <CRLF>.<CRLF>
    CHUNK = "chunk"  # reading the octets of one BDAT chunk
    TLS = "tls"  # 220 sent to STARTTLS; waiting for `tls_started`
    SASL = "sasl"  # 334 sent to AUTH; reading the client's response line
    CLOSED = "closed"


# Module-level names for the phases: an Enum member lookup on the class costs ten times more, and the
# phase is tested several times per command.
_COMMAND, _DATA, _CHUNK, _TLS, _CLOSED = _Phase.COMMAND, _Phase.DATA, _Phase.CHUNK, _Phase.TLS, _Phase.CLOSED
_SASL = _Phase.SASL
_DECISIONS = (HeloReceived, AuthReceived, MailFromReceived, RcptToReceived, MessageReceived)


_PATH = r'<((?:"(?:[^"\\]|\\.)*"|[^<>"])*)>'
_MAIL = re.compile(rf"FROM:[ \t]*{_PATH}(?:[ \t]+(.*))?", re.IGNORECASE)
_RCPT = re.compile(rf"TO:[ \t]*{_PATH}(?:[ \t]+(.*))?", re.IGNORECASE)
_BDAT = re.compile(r"([0-9]{1,20})(?:[ \t]+(LAST))?[ \t]*", re.IGNORECASE)
_ANY_NEWLINE = re.compile(rb"\r\n|\r|\n")
_DATA_END = b"\r\n.\r\n"
_EMPTY_DATA_END = b".\r\n"  # a first line of "." ends an empty message
_CR = 13


def _encode(reply: Reply) -> bytes:
    """`reply.to_bytes()`, with a fast path for the one-line replies that make up nearly all traffic."""
    if "\n" in reply.text:
        return reply.to_bytes()
    line = f"{reply.code} {reply.enhanced} {reply.text}" if reply.enhanced else f"{reply.code} {reply.text}"
    return (line.rstrip() + "\r\n").encode()


def _strip_route(path: str) -> str | None:
    """Drop an RFC 5321 source route (`@a,@b:user@c`), which servers must accept and ignore."""
    if not path.startswith("@"):
        return path
    _, sep, mailbox = path.partition(":")
    return mailbox if sep and mailbox else None


def _has_long_line(raw: bytes, limit: int, position: int = 0) -> bool:
    """True when a line of `raw` from `position` on, counting its line end, is longer than `limit`
    octets (an unterminated last line of `limit` octets counts: its line end would pass the limit).

    Jumps from the last LF of each window of `limit` octets, so it costs O(len / limit) calls into C,
    not a Python step per line.
    """
    end = len(raw)
    while end - position >= limit:
        newline = raw.rfind(b"\n", position, position + limit)
        if newline < 0:
            return True
        position = newline + 1
    return False


class _ContentScan:
    """The content rules applied to one message while it streams in, segment by segment.

    Every rule holds across segment boundaries: a CR at the end of a segment is carried to the next (it
    may start a CRLF), the length of the open line is carried, and so is whether the next octet starts a
    line (for dot-unstuffing). `feed` returns the content of a segment (NUL stripped, bare line ends
    normalized, dots unstuffed, as the limits say); `refusal` is the reply the message has earned.
    """

    __slots__ = ("_binary", "_carry", "_limits", "_line", "_line_start", "_stuffed", "bare", "long", "nul")

    def __init__(self, limits: SmtpLimits, *, dot_stuffed: bool, binary: bool) -> None:
        self._limits = limits
        self._stuffed = dot_stuffed
        self._binary = binary
        self._carry = b""
        self._line = 0  # octets of the line still open at the end of the last segment
        self._line_start = True
        self.bare = self.long = self.nul = False

    def feed(self, data: bytes) -> bytes:
        if self._binary:  # BODY=BINARYMIME (RFC 3030): any octet, no line rules
            return data
        if self._carry:
            data, self._carry = self._carry + data, b""
        if data.endswith(b"\r"):
            data, self._carry = data[:-1], b"\r"
        return self._scan(data) if data else b""

    def finish(self) -> bytes:
        """The content held back at the end (a last CR, which is then bare)."""
        data, self._carry = self._carry, b""
        return self._scan(data) if data else b""

    @property
    def refusal(self) -> Reply | None:
        limits = self._limits
        if self.bare and limits.bare_lf != "normalize":
            return replies.BARE_LF_DATA
        if self.long:
            return replies.DATA_LINE_TOO_LONG
        if self.nul and limits.nul != "strip":
            return replies.NUL_IN_DATA
        return None

    def _scan(self, data: bytes) -> bytes:
        limits = self._limits
        crlf = data.count(b"\r\n")
        bare = data.count(b"\r") != crlf or data.count(b"\n") != crlf
        self.bare = self.bare or bare
        limit = limits.max_data_line
        if not self.long:
            first = data.find(b"\n")
            if first < 0:
                self._line += len(data)
                self.long = self._line >= limit
            else:
                self.long = self._line + first + 1 > limit or (
                    len(data) - first > limit and _has_long_line(data, limit, first + 1)
                )
                self._line = len(data) - data.rfind(b"\n") - 1
        if b"\x00" in data:
            self.nul = True
            if limits.nul == "strip":
                data = data.replace(b"\x00", b"")
        if bare and limits.bare_lf == "normalize":
            data = _ANY_NEWLINE.sub(b"\r\n", data)
        if self._stuffed and data:
            # RFC 5321 §4.5.2: a leading period is removed from every line that has one.
            line_start, self._line_start = self._line_start, data.endswith(b"\r\n")
            if line_start and data.startswith(b"."):
                data = data[1:]
            data = data.replace(b"\r\n.", b"\r\n")
        return data


class SmtpServerProtocol:
    """One server-side SMTP session as a state machine; see the module docstring for the contract."""

    def __init__(
        self,
        hostname: str,
        limits: SmtpLimits,
        *,
        tls_available: bool,
        tls_active: bool = False,
        auth: AuthPolicy | None = None,
    ) -> None:
        self._hostname = hostname
        self._limits = limits
        self._auth = auth
        self._auth_failures = 0
        self._tls_available = tls_available
        self._tls_active = tls_active
        # EHLO keywords not to advertise (a listener that plays an older server: test sinks, labs).
        self.hidden_extensions: frozenset[str] = frozenset()
        self._buffer = bytearray()
        self._out = bytearray()
        self._events: deque[Event] = deque()
        self._phase = _COMMAND
        self._pending: Decision | None = None
        self._eof = False
        self._errors = 0
        self._refused_recipients = 0
        self._junk_commands = 0
        self._discarding_line = False
        self.message_refusal: Reply | None = None
        # session scope: reset by STARTTLS
        self._greeted = False
        self._extended = False  # greeted with EHLO: extensions (AUTH) may be used
        self._authenticated = False
        # the SASL exchange in progress (phase SASL)
        self._sasl_mechanism = ""
        self._sasl_username: str | None = None  # LOGIN: the user name, once given
        # transaction scope: reset by RSET, EHLO, the end of a message
        self._mail: MailParams | None = None
        self._recipients_tried = 0
        self._recipients_accepted = 0
        self._chunked = False
        self._bdat_failed = False
        # the message being read
        self._parts: list[bytes] = []
        self._held = 0  # octets in `_parts`
        self._size = 0  # octets of content so far (after unstuffing), held or taken
        self._received = 0  # octets received for the message (before unstuffing)
        self._data_octets = 0  # octets of message data received in the session
        self._scan = _ContentScan(limits, dot_stuffed=True, binary=False)
        self._oversize = False
        self._at_data_start = False
        self._chunk_left = 0
        self._chunk_size = 0
        self._chunk_last = False
        self._chunk_refusal: Reply | None = None
        self._commands: dict[str, Callable[[str], None]] = {
            "EHLO": self._ehlo,
            "HELO": self._helo,
            "AUTH": self._auth_command,
            "MAIL": self._mail_from,
            "RCPT": self._rcpt_to,
            "DATA": self._data,
            "BDAT": self._bdat,
            "RSET": self._rset,
            "NOOP": self._noop,
            "QUIT": self._quit,
            "VRFY": self._vrfy,
            "EXPN": self._not_implemented,
            "HELP": self._help,
            "STARTTLS": self._starttls,
        }

    # --- the driver's side -------------------------------------------------------------------------

    def greeting(self) -> bytes:
        """The 220 greeting to send when the connection is accepted."""
        return replies.GREETING.with_text(replies.GREETING.text.format(hostname=self._hostname)).to_bytes()

    def receive_data(self, data: bytes) -> None:
        """Add bytes read from the client; `b""` means the client closed its side."""
        if not data:
            self._eof = True
        elif self._phase is not _CLOSED and self._phase is not _TLS:
            self._buffer += data
        # In the TLS phase, bytes are plaintext sent before the handshake (injection): dropped. The
        # driver holds what arrives through TLS until it has called `tls_started`.

    def next_event(self) -> Event | None:
        """The next event, or None when more input (or a `respond`, or `tls_started`) is needed."""
        while True:
            if self._events:
                event = self._events.popleft()
                if isinstance(event, _DECISIONS):
                    self._pending = event
                return event
            if self._pending is not None or self._phase is _CLOSED or self._phase is _TLS:
                return None
            if self._phase is _COMMAND:
                progressed = self._read_command()
            elif self._phase is _DATA:
                progressed = self._read_data()
            elif self._phase is _CHUNK:
                progressed = self._read_chunk()
            else:
                progressed = self._read_sasl()
            if not progressed:
                if not self._eof:
                    return None
                self._close("eof")

    def respond(self, reply: Reply | None = None) -> None:
        """Answer the pending decision event. `None` is allowed only for `HeloReceived` (accept)."""
        event = self._pending
        if event is None:
            raise ProtocolUsageError("respond() called with no decision pending")
        if reply is None and not isinstance(event, HeloReceived):
            raise ProtocolUsageError(f"{type(event).__name__} needs a reply")
        self._pending = None
        if isinstance(event, HeloReceived) and (reply is None or reply.is_positive):
            self._accept_helo(event)
            return
        assert reply is not None
        self._write(reply)
        if isinstance(event, MailFromReceived) and reply.is_positive:
            self._mail = event.params
        elif isinstance(event, AuthReceived) and reply.is_positive:
            self._authenticated = True
        elif isinstance(event, RcptToReceived) and reply.is_positive:
            self._recipients_accepted += 1
        elif isinstance(event, MessageReceived):
            if reply.is_positive:
                self._junk_commands = 0  # as Postfix: the count starts again once mail is delivered
            self._end_transaction()
        if reply.code == 421:
            self._close("server")
        elif isinstance(event, RcptToReceived) and not reply.is_positive:
            self._recipient_refused()
        elif isinstance(event, AuthReceived) and not reply.is_positive:
            self._auth_failed()

    def tls_started(self) -> None:
        """The transport is now TLS: forget everything said before it (RFC 3207 §4.2)."""
        if self._phase is not _TLS:
            raise ProtocolUsageError("tls_started() called without STARTTLS")
        self._phase = _COMMAND
        self._tls_active = True
        self._greeted = self._extended = self._authenticated = False
        self._buffer.clear()

    def close_with(self, reply: Reply) -> None:
        """End the session from the server's side with `reply`: a 421 for a timeout, a shutdown or a
        connection limit; at connect, whatever refusal the application chose (421 or 554)."""
        if self._phase is _CLOSED:
            return
        self._pending = None
        self._events.clear()
        self._write(reply)
        self._close("server")

    def data_to_send(self) -> bytes:
        """The replies written since the last call, to send in one write."""
        out = bytes(self._out)
        self._out.clear()
        return out

    @property
    def closed(self) -> bool:
        return self._phase is _CLOSED

    @property
    def expecting_data(self) -> bool:
        """True while message octets (DATA or a BDAT chunk) are being read: the data timeout applies."""
        return self._phase is _DATA or self._phase is _CHUNK

    @property
    def idle(self) -> bool:
        """True between transactions with nothing pending: the point where a drain may close."""
        return self._phase is _COMMAND and self._pending is None and self._mail is None

    @property
    def authenticated(self) -> bool:
        """True once the application said 235 to an AUTH exchange (until STARTTLS)."""
        return self._authenticated

    @property
    def auth_failures(self) -> int:
        """Failed AUTH replies in the session so far (the driver logs each one)."""
        return self._auth_failures

    @property
    def refused_recipients(self) -> int:
        """RCPTs refused in the session so far (the driver slows the replies past `refusal_slowdown`)."""
        return self._refused_recipients

    @property
    def held(self) -> int:
        """Octets of message content the core holds (the driver spools them with `take_content`)."""
        return self._held

    @property
    def data_octets(self) -> int:
        """Octets of message data received in the session (the driver measures the data rate)."""
        return self._data_octets

    def take_content(self) -> list[bytes]:
        """Hand the message content held so far to the driver (which spools it); the core forgets it."""
        parts, self._parts, self._held = self._parts, [], 0
        return parts

    @property
    def buffered(self) -> int:
        """Octets received but not yet parsed (the driver pauses reading when this grows)."""
        return len(self._buffer)

    # --- plumbing ----------------------------------------------------------------------------------

    def _write(self, reply: Reply) -> None:
        self._out += _encode(reply)

    def _error(self, reply: Reply) -> None:
        """Write an error reply for a protocol fault; too many of them end the session."""
        self._write(reply)
        self._errors += 1
        if self._errors >= self._limits.max_errors:
            self._write(replies.TOO_MANY_ERRORS)
            self._close("errors")

    def _recipient_refused(self) -> None:
        """Count a refused RCPT; at `max_refused_recipients` the session ends (recipient probing)."""
        self._refused_recipients += 1
        if self._refused_recipients >= self._limits.max_refused_recipients and self._phase is not _CLOSED:
            self._write(replies.TOO_MANY_REFUSED_RECIPIENTS)
            self._close("errors")

    def _junk(self) -> bool:
        """Count a command that moves no mail; True (and the session ends) when it is one too many."""
        self._junk_commands += 1
        if self._junk_commands > self._limits.max_junk_commands:
            self._write(replies.TOO_MANY_JUNK_COMMANDS)
            self._close("errors")
            return True
        return False

    def _close(self, reason: CloseReason) -> None:
        self._phase = _CLOSED
        self._buffer.clear()
        self._parts, self._held = [], 0
        self._events.append(ConnectionClosing(reason))

    def _end_transaction(self) -> None:
        self._mail = None
        self._recipients_tried = 0
        self._recipients_accepted = 0
        self._chunked = False
        self._parts, self._held = [], 0
        self._events.append(TransactionReset())

    def _start_message(self, *, dot_stuffed: bool, binary: bool) -> None:
        self._parts, self._held = [], 0
        self._size = self._received = 0
        self._oversize = False
        self._scan = _ContentScan(self._limits, dot_stuffed=dot_stuffed, binary=binary)

    # --- commands ----------------------------------------------------------------------------------

    def _read_command(self) -> bool:
        buffer = self._buffer
        end = buffer.find(b"\n")
        if self._discarding_line:
            if end < 0:
                buffer.clear()
                return False
            del buffer[: end + 1]
            self._discarding_line = False
            return True
        if end < 0:
            if len(buffer) > self._limits.max_command_line and len(buffer) > self._line_limit(buffer):
                auth = self._is_auth_line(buffer)
                buffer.clear()
                self._discarding_line = True
                self._line_too_long(auth)
                return True
            return False
        line = bytes(buffer[: end + 1])
        del buffer[: end + 1]
        if len(line) > self._limits.max_command_line and len(line) > self._line_limit(line):
            self._line_too_long(self._is_auth_line(line))
            return True
        if end == 0 or line[-2] != _CR or b"\r" in line[:-2]:
            self._error(replies.BARE_LF_COMMAND)
            return True
        if b"\x00" in line:
            self._error(replies.SYNTAX_ERROR)
            return True
        try:
            text = line[:-2].decode("utf-8")
        except UnicodeDecodeError:
            self._error(replies.SYNTAX_ERROR)
            return True
        verb, _, argument = text.partition(" ")
        verb = verb.upper()
        if verb != "BDAT":
            self._bdat_failed = False
        command = self._commands.get(verb)
        if command is None:
            self._error(replies.SYNTAX_ERROR)
        elif verb not in _JUNK or not self._junk():
            command(argument.strip(" \t"))
        return True

    def _is_auth_line(self, line: bytes | bytearray) -> bool:
        return self._auth is not None and line[:5].upper() == b"AUTH "

    def _line_limit(self, line: bytes | bytearray) -> int:
        """The longest command line allowed: an AUTH line with an initial response may be longer
        (RFC 4954 §4), when AUTH is offered."""
        if self._is_auth_line(line):
            return max(self._limits.max_command_line, self._limits.max_auth_line)
        return self._limits.max_command_line

    def _line_too_long(self, auth: bool) -> None:
        if auth:
            self._auth_refused(replies.AUTH_LINE_TOO_LONG)
        else:
            self._error(replies.LINE_TOO_LONG)

    def _capabilities(self) -> list[str]:
        keywords = ["PIPELINING", f"SIZE {self._limits.max_message_size}", "8BITMIME", "SMTPUTF8"]
        keywords.append("ENHANCEDSTATUSCODES")
        if self._auth is not None and (self._tls_active or not self._auth.tls_required):
            keywords.append("AUTH " + " ".join(self._auth.mechanisms))
        if self._tls_available and not self._tls_active:
            keywords.append("STARTTLS")
        keywords += ["CHUNKING", "BINARYMIME"]
        if self.hidden_extensions:
            keywords = [k for k in keywords if k.split()[0] not in self.hidden_extensions]
        return keywords

    def _hello(self, name: str, extended: bool) -> None:
        words = name.split()
        if not words:
            self._error(replies.ARGUMENT_ERROR)
            return
        self._events.append(HeloReceived(words[0], extended))

    def _ehlo(self, argument: str) -> None:
        self._hello(argument, True)

    def _helo(self, argument: str) -> None:
        self._hello(argument, False)

    def _accept_helo(self, event: HeloReceived) -> None:
        if self._mail is not None:
            self._end_transaction()
        self._greeted = True
        self._extended = event.extended
        lines = [self._hostname]
        if event.extended:
            lines += self._capabilities()
        self._write(replies.HELLO.with_text("\n".join(lines)))

    def _mail_from(self, argument: str) -> None:
        if not self._greeted:
            self._error(replies.HELO_FIRST)
            return
        if self._auth is not None and self._auth.required_for_mail and not self._authenticated:
            self._error(replies.AUTH_REQUIRED)
            return
        if self._mail is not None:
            self._error(replies.NESTED_MAIL)
            return
        match = _MAIL.fullmatch(argument)
        if match is None:
            self._error(
                replies.BAD_SENDER_SYNTAX if argument[:5].upper() == "FROM:" else replies.ARGUMENT_ERROR
            )
            return
        try:
            params = parse_mail_params(match.group(2) or "")
        except ParameterError as error:
            self._error(error.reply)
            return
        if params.size is not None and params.size > self._limits.max_message_size:
            self._write(replies.MESSAGE_TOO_BIG)
            return
        path = _strip_route(match.group(1))
        if path is None:
            self._error(replies.BAD_SENDER_SYNTAX)
            return
        if not path.isascii() and not params.smtputf8:
            self._error(replies.SMTPUTF8_REQUIRED)
            return
        sender: Address | None = None
        if path:
            try:
                sender = Address.parse(path)
            except AddressError:
                self._error(replies.BAD_SENDER_SYNTAX)
                return
        self._events.append(MailFromReceived(sender, params))

    def _rcpt_to(self, argument: str) -> None:
        if self._mail is None:
            self._error(replies.NEED_MAIL)
            return
        self._recipients_tried += 1
        refusal = self._rcpt_refusal(argument, self._mail)
        if refusal is not None:
            self._error(refusal)
            self._recipient_refused()

    def _rcpt_refusal(self, argument: str, mail: MailParams) -> Reply | None:
        """Decode a RCPT: the protocol fault to answer, or None when an event (or 452) was made."""
        match = _RCPT.fullmatch(argument)
        if match is None:
            return replies.BAD_RECIPIENT_SYNTAX if argument[:3].upper() == "TO:" else replies.ARGUMENT_ERROR
        try:
            params = parse_rcpt_params(match.group(2) or "")
        except ParameterError as error:
            return error.reply
        path = _strip_route(match.group(1))
        if not path:
            return replies.BAD_RECIPIENT_SYNTAX
        if not path.isascii() and not mail.smtputf8:
            return replies.SMTPUTF8_REQUIRED
        if path.lower() == "postmaster":  # RFC 5321 §4.5.1: must be accepted without a domain
            path = f"{path}@{self._hostname}"
        try:
            recipient = Address.parse(path)
        except AddressError:
            return replies.BAD_RECIPIENT_SYNTAX
        if self._recipients_accepted >= self._limits.max_recipients:
            # A policy outcome, not a protocol fault: traced, counted as refused, not as an error.
            self._write(replies.TOO_MANY_RECIPIENTS)
            self._events.append(RecipientRefused(recipient, replies.TOO_MANY_RECIPIENTS))
            self._recipient_refused()
        else:
            self._events.append(RcptToReceived(recipient, params))
        return None

    def _recipients_ready(self) -> Reply | None:
        """The refusal for DATA or BDAT now, or None when the transaction may take a message."""
        if self._mail is None:
            return replies.NEED_MAIL
        if self._recipients_accepted == 0:
            return replies.NO_VALID_RECIPIENTS if self._recipients_tried else replies.NEED_RCPT
        return None

    def _data(self, argument: str) -> None:
        if argument:
            self._error(replies.ARGUMENT_ERROR)
            return
        refusal = self._recipients_ready()
        if refusal is replies.NO_VALID_RECIPIENTS:
            self._write(refusal)  # the outcome of refused recipients, not a protocol fault
            return
        if refusal is not None:
            self._error(refusal)
            return
        assert self._mail is not None
        if self._chunked or self._mail.body == "BINARYMIME":  # RFC 3030 §3, §4
            self._error(replies.BAD_SEQUENCE)
            return
        if self.message_refusal is not None:  # the driver's memory budget is spent
            self._write(self.message_refusal)
            return
        self._write(replies.START_DATA)
        self._start_message(dot_stuffed=True, binary=False)
        self._at_data_start = True
        self._phase = _DATA

    def _bdat(self, argument: str) -> None:
        match = _BDAT.fullmatch(argument)
        if match is None:
            # Without a size the chunk cannot be framed; its octets would be read as commands.
            self._write(replies.ARGUMENT_ERROR)
            self._close("errors")
            return
        refusal = self._recipients_ready()
        if refusal is None and not self._chunked:
            refusal = self.message_refusal
        if refusal is None and not self._chunked:
            assert self._mail is not None
            self._chunked = True
            self._start_message(dot_stuffed=False, binary=self._mail.body == "BINARYMIME")
        self._chunk_size = self._chunk_left = int(match.group(1))
        self._chunk_last = match.group(2) is not None
        self._chunk_refusal = refusal
        self._phase = _CHUNK

    def _rset(self, argument: str) -> None:
        if self._mail is not None:
            self._end_transaction()
        self._write(replies.RESET)

    def _noop(self, argument: str) -> None:
        self._write(replies.NOOP)

    def _quit(self, argument: str) -> None:
        self._write(replies.CLOSING)
        self._close("quit")

    def _vrfy(self, argument: str) -> None:
        self._write(replies.CANNOT_VRFY)

    def _help(self, argument: str) -> None:
        self._write(replies.HELP)

    def _not_implemented(self, argument: str) -> None:
        self._error(replies.NOT_IMPLEMENTED)

    def _starttls(self, argument: str) -> None:
        if argument:
            self._error(replies.ARGUMENT_ERROR)
        elif self._tls_active:
            self._error(replies.TLS_ALREADY_ACTIVE)
        elif not self._tls_available:
            self._error(replies.TLS_UNAVAILABLE)
        elif not self._greeted:
            self._error(replies.HELO_FIRST)
        elif self._mail is not None:
            self._error(replies.BAD_SEQUENCE)
        else:
            self._write(replies.READY_TLS)
            self._buffer.clear()  # plaintext pipelined after STARTTLS must not reach the TLS session
            self._phase = _TLS
            self._events.append(StartTlsRequested())

    # --- AUTH (RFC 4954) ----------------------------------------------------------------------------

    def _auth_command(self, argument: str) -> None:
        policy = self._auth
        if policy is None:
            self._error(replies.NOT_IMPLEMENTED)  # the MX role: AUTH is not offered at all
            return
        if not self._extended:
            self._auth_refused(replies.AUTH_NEEDS_EHLO)
        elif policy.tls_required and not self._tls_active:
            self._auth_refused(replies.MUST_ISSUE_STARTTLS, fault=False)
        elif self._authenticated:
            self._auth_refused(replies.ALREADY_AUTHENTICATED)
        elif self._mail is not None:
            self._auth_refused(replies.AUTH_IN_TRANSACTION)
        else:
            mechanism, _, initial = argument.partition(" ")
            mechanism, initial = mechanism.upper(), initial.strip(" \t")
            if not mechanism:
                self._auth_refused(replies.ARGUMENT_ERROR)
            elif not policy.offers(mechanism):
                self._auth_refused(replies.AUTH_UNSUPPORTED_MECHANISM)
            else:
                self._sasl_mechanism = mechanism
                if not initial:
                    self._challenge("" if mechanism == "PLAIN" else LOGIN_USERNAME_CHALLENGE)
                else:
                    self._sasl_step(decode_response(initial.encode(), initial=True))

    def _read_sasl(self) -> bool:
        """Read one response line of the exchange (bounded by `max_auth_line`, CRLF only)."""
        buffer = self._buffer
        end = buffer.find(b"\n")
        limit = self._limits.max_auth_line
        if end < 0:
            if len(buffer) > limit:
                buffer.clear()
                self._discarding_line = True  # the command reader skips the rest of the line
                self._end_sasl()
                self._auth_refused(replies.AUTH_LINE_TOO_LONG)
                return True
            return False
        line = bytes(buffer[: end + 1])
        del buffer[: end + 1]
        if len(line) > limit:
            self._end_sasl()
            self._auth_refused(replies.AUTH_LINE_TOO_LONG)
        elif end == 0 or line[-2] != _CR or b"\r" in line[:-2]:
            self._end_sasl()
            self._auth_refused(replies.AUTH_BAD_RESPONSE)
        elif line == b"*\r\n":  # RFC 4954 §4: the client cancels the exchange
            self._end_sasl()
            self._auth_refused(replies.AUTH_CANCELLED, fault=False)
        else:
            self._phase = _COMMAND
            self._sasl_step(decode_response(line[:-2]))
        return True

    def _sasl_step(self, data: bytes | None) -> None:
        """Take one decoded response: finish the exchange, or ask for the LOGIN password."""
        credentials: SaslCredentials | None = None
        if data is None:
            pass
        elif self._sasl_mechanism == "PLAIN":
            credentials = plain_credentials(data)
        elif self._sasl_username is None:
            username = login_field(data)
            if username is not None:
                self._sasl_username = username
                self._challenge(LOGIN_PASSWORD_CHALLENGE)
                return
        else:
            password = login_field(data)
            if password is not None:
                credentials = SaslCredentials("LOGIN", "", self._sasl_username, password)
        self._end_sasl()
        if credentials is None:
            self._auth_refused(replies.AUTH_BAD_RESPONSE)
        else:
            self._events.append(AuthReceived(credentials))

    def _challenge(self, challenge: str) -> None:
        """Send a 334 and wait for the response line; input already buffered was sent before the
        client could see the 334 (pipelined into the exchange), so the exchange fails instead."""
        if self._buffer:
            self._end_sasl()
            self._auth_refused(replies.AUTH_NOT_WAITED)
            return
        self._out += f"334 {challenge}\r\n".encode()  # "334" SP [base64] (RFC 4954 §4), never stripped
        self._phase = _SASL

    def _end_sasl(self) -> None:
        self._phase = _COMMAND
        self._sasl_mechanism = ""
        self._sasl_username = None

    def _auth_refused(self, reply: Reply, *, fault: bool = True) -> None:
        """Refuse AUTH with `reply` (a protocol `fault` also counts toward `max_errors`)."""
        if fault:
            self._error(reply)
        else:
            self._write(reply)
        self._auth_failed()

    def _auth_failed(self) -> None:
        """Count a failed AUTH; at `max_auth_failures` the session ends (password guessing)."""
        self._auth_failures += 1
        if self._auth_failures >= self._limits.max_auth_failures and self._phase is not _CLOSED:
            self._write(replies.AUTH_TOO_MANY_FAILURES)
            self._close("errors")

    # --- message content ---------------------------------------------------------------------------

    def _keep(self, count: int) -> None:
        """Move `count` octets from the buffer into the message."""
        self._take(bytes(self._buffer[:count]))
        del self._buffer[:count]

    def _take(self, data: bytes) -> None:
        """Scan octets of the message and hold their content, or drop them once the message is refused
        (oversize: no longer scanned either)."""
        self._data_octets += len(data)
        if self._oversize:
            return
        self._received += len(data)
        content = self._scan.feed(data)
        self._size += len(content)
        maximum = self._limits.max_message_size
        # The exact check is on the content; the raw bound stops what stripping or unstuffing would hide.
        if self._size > maximum or self._received > maximum + maximum // 8:
            self._oversize = True
            self._parts, self._held = [], 0
        elif content and self._scan.refusal is None:
            self._parts.append(content)
            self._held += len(content)

    def _read_data(self) -> bool:
        buffer = self._buffer
        if self._at_data_start:
            if len(buffer) < len(_EMPTY_DATA_END) and _EMPTY_DATA_END.startswith(buffer):
                return False
            self._at_data_start = False
            if buffer.startswith(_EMPTY_DATA_END):
                del buffer[: len(_EMPTY_DATA_END)]
                self._finish_message()
                return True
        end = buffer.find(_DATA_END)
        if end < 0:
            # Keep the last 4 octets: they may be the start of a terminator split across reads.
            if len(buffer) > len(_DATA_END) - 1:
                self._keep(len(buffer) - (len(_DATA_END) - 1))
            return False
        self._keep(end + 2)  # the content keeps the CRLF of its last line
        del buffer[:3]
        self._finish_message()
        return True

    def _read_chunk(self) -> bool:
        if self._chunk_left:
            buffer = self._buffer
            if not buffer:
                return False
            take = min(len(buffer), self._chunk_left)
            self._chunk_left -= take
            if self._chunk_refusal is None:
                self._take(bytes(buffer[:take]))
            else:
                self._data_octets += take
            del buffer[:take]
            if self._chunk_left:
                return False
        self._phase = _COMMAND
        last = self._chunk_last
        if self._chunk_refusal is not None:
            if self._bdat_failed:  # RFC 3030 §4.1: chunks pipelined after a failed one are discarded
                self._write(self._chunk_refusal)
            else:
                self._error(self._chunk_refusal)
            self._bdat_failed = self._bdat_failed and not last
        elif self._oversize:
            self._write(replies.MESSAGE_TOO_BIG)
            self._events.append(MessageRefused(replies.MESSAGE_TOO_BIG))
            self._end_transaction()
            self._bdat_failed = not last
        elif not last:
            size = replies.CHUNK_RECEIVED.text.format(size=self._chunk_size)
            self._write(replies.CHUNK_RECEIVED.with_text(size))
        else:
            self._finish_message()
        return True

    def _finish_message(self) -> None:
        """Check the complete message and hand it out, or refuse it; either way the data phase ends."""
        self._phase = _COMMAND
        if not self._oversize:
            self._take_tail(self._scan.finish())
        refusal = replies.MESSAGE_TOO_BIG if self._oversize else self._scan.refusal
        if refusal is None:
            content = b"".join(self._parts)
            self._parts, self._held = [], 0
            self._events.append(MessageReceived(content, self._size))
        else:
            self._write(refusal)
            self._events.append(MessageRefused(refusal))
            self._end_transaction()

    def _take_tail(self, content: bytes) -> None:
        if content:
            self._size += len(content)
            if self._size > self._limits.max_message_size:
                self._oversize = True
            elif self._scan.refusal is None:
                self._parts.append(content)
                self._held += len(content)
