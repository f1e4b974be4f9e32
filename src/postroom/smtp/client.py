"""The outbound SMTP client connection: one TCP (then TLS) connection to a remote server, its replies
read in order so a pipelined group (RFC 2920) gets each reply attributed to its own command.

`SmtpClient.connect(address, port, timeouts)` opens the TCP connection; the caller then reads the
greeting (`read_reply`), says EHLO (`ehlo`, which records the server's extensions) or HELO, may start
TLS (`starttls`), and runs transactions: `write_commands(lines)` writes several command lines in ONE
write (a pipelined group; a single line is the unpipelined case) and `read_reply()` is awaited once per
command, in order; `send_content(content)` sends the message after a 354 (line endings made CRLF, lines
dot-stuffed, the terminating `.`) and reads the reply to its end. `quit()` says QUIT and closes.

Why this is Postroom's own and not aiosmtplib: aiosmtplib (5.x) is built one command, one reply: its
protocol drops reply octets that arrive while no command is waiting, and parses one reply per read, so a
client cannot write MAIL, RCPT and DATA together and read three replies. Extending it would mean
replacing its private protocol class (its buffer, its waiter), tied to its internals from release to
release. What delivery needs of a client is small (replies, EHLO keywords, STARTTLS, content), so this
module is that client on a plain `asyncio.Protocol`, with every bound its own.

Timeouts, per phase (`ClientTimeouts`, from `[delivery]`): `connect` for the TCP connection and the TLS
handshake, `command` for the greeting and each command's reply (and for writing command lines),
`data` for writing the message and for the reply to its end. A timeout raises `ReplyTimeout`.

Exceptions (all `SmtpClientError`; after any of them the connection is not to be used again):

    SmtpClientError
    ├── ReplyTimeout         a phase took longer than its timeout
    ├── ServerDisconnected   the server closed the connection (or it was reset)
    ├── ProtocolViolation    a reply that is not SMTP, too long, too many lines, or unsolicited
    └── TlsFailed            the TLS handshake failed (the connection is closed)

*Security:* every octet read comes from a remote server. A reply line is at most `MAX_REPLY_LINE`
octets, a reply at most `MAX_REPLY_LINES` lines, and the unread input at most `MAX_PENDING` octets
(reading pauses beyond it); reply text is decoded as UTF-8 with replacement and kept only as text.
Input the client did not ask for is refused: octets buffered before STARTTLS's handshake (a reply
injected in plaintext would otherwise be read as if it came over TLS, the client side of
CVE-2011-0411), and octets pending when a new group is written (a reply to nothing would be
attributed to the next command). Command lines with control characters are refused before writing
(no command injection through an address).
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

MAX_REPLY_LINE = 4096  # octets of one reply line with its CRLF (RFC 5321 §4.5.3.1.5 says 512; be lenient)
MAX_REPLY_LINES = 100  # lines of one (multi-line) reply; an EHLO reply has a few dozen at most
MAX_PENDING = 64 * 1024  # octets read ahead before reading pauses
QUIT_TIMEOUT = 10.0  # seconds for the reply to QUIT: a courtesy, never worth waiting long for
LARGE_CONTENT = 1024 * 1024  # content larger than this is dot-stuffed in a worker thread

_LINE_ENDINGS = re.compile(rb"\r\n|\n|\r(?!\n)")
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")


class SmtpClientError(Exception):
    """The connection failed; see the module docstring for the kinds."""


class ReplyTimeout(SmtpClientError):
    pass


class ServerDisconnected(SmtpClientError):
    pass


class ProtocolViolation(SmtpClientError):
    pass


class TlsFailed(SmtpClientError):
    pass


@dataclass(frozen=True, slots=True)
class ClientTimeouts:
    connect: float
    command: float
    data: float


@dataclass(frozen=True, slots=True)
class ServerReply:
    """One reply: its code and its lines' text (without code and separator) joined by newlines."""

    code: int
    text: str


class _Wire(asyncio.Protocol):
    """The socket's input, buffered and bounded, and its output with flow control."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.closed: Exception | None = None
        self._input = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport; uvloop's (the node's loop) are not subclasses of asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._input.set()
        if len(self.buffer) > MAX_PENDING and self.transport is not None and not self._paused:
            self._paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self._lost(ServerDisconnected("the server closed the connection"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(ServerDisconnected(f"connection lost: {exc}" if exc else "connection closed"))

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def _lost(self, error: Exception) -> None:
        if self.closed is None:
            self.closed = error
        self._input.set()
        self._writable.set()

    async def line(self) -> bytes:
        """The next input line with its LF; raises when it is too long or the connection ended."""
        while True:
            end = self.buffer.find(b"\n", 0, MAX_REPLY_LINE)
            if end >= 0:
                line = bytes(self.buffer[: end + 1])
                del self.buffer[: end + 1]
                if self._paused and len(self.buffer) <= MAX_PENDING // 2 and self.transport is not None:
                    self._paused = False
                    self.transport.resume_reading()
                return line
            if len(self.buffer) >= MAX_REPLY_LINE:
                raise ProtocolViolation(f"a reply line longer than {MAX_REPLY_LINE} octets")
            if self.closed is not None:
                raise self.closed
            self._input.clear()
            await self._input.wait()

    async def write(self, data: bytes) -> None:
        if self.closed is not None or self.transport is None or self.transport.is_closing():
            raise self.closed or ServerDisconnected("connection closed")
        self.transport.write(data)
        await self._writable.wait()
        if self.closed is not None:
            raise self.closed


class SmtpClient:
    """One client connection; see the module docstring."""

    def __init__(self, wire: _Wire, timeouts: ClientTimeouts) -> None:
        self._wire = wire
        self.timeouts = timeouts
        self.extensions: dict[str, str] = {}  # EHLO keyword (upper case) -> its parameters
        self.tls = ""  # the TLS version once STARTTLS succeeded

    @classmethod
    async def connect(cls, address: str, port: int, timeouts: ClientTimeouts) -> SmtpClient:
        """The TCP connection (raises OSError or TimeoutError); the greeting is the caller's to read."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeouts.connect):
            _, wire = await loop.create_connection(_Wire, address, port)
        return cls(wire, timeouts)

    # --- replies ----------------------------------------------------------------------------------

    async def read_reply(self, timeout: float | None = None) -> ServerReply:
        """The next reply, within `timeout` (the command timeout by default)."""
        try:
            async with asyncio.timeout(self.timeouts.command if timeout is None else timeout):
                return await self._read_reply()
        except TimeoutError as error:
            raise ReplyTimeout("no reply in time") from error

    async def _read_reply(self) -> ServerReply:
        code = -1
        texts: list[str] = []
        while len(texts) < MAX_REPLY_LINES:
            line = (await self._wire.line()).rstrip(b"\r\n")
            if len(line) < 3 or not line[:3].isdigit() or line[3:4] not in (b"", b" ", b"-"):
                raise ProtocolViolation(f"not an SMTP reply: {line[:80]!r}")
            if code not in (-1, int(line[:3])):
                raise ProtocolViolation("the lines of one reply carry different codes")
            code = int(line[:3])
            texts.append(line[4:].decode("utf-8", "replace").strip())
            if line[3:4] != b"-":
                return ServerReply(code, "\n".join(texts))
        raise ProtocolViolation(f"a reply of more than {MAX_REPLY_LINES} lines")

    # --- commands ---------------------------------------------------------------------------------

    async def write_commands(self, lines: Sequence[bytes]) -> None:
        """Write `lines` (without CRLF) in one write: a pipelined group when there are several."""
        if self._wire.buffer:
            raise ProtocolViolation("the server sent a reply to no command")
        for line in lines:
            if _CONTROL.search(line):
                raise ValueError(f"a command line with a control character: {line[:80]!r}")
        try:
            async with asyncio.timeout(self.timeouts.command):
                await self._wire.write(b"".join(line + b"\r\n" for line in lines))
        except TimeoutError as error:
            raise ReplyTimeout("the server did not read our commands in time") from error

    async def command(self, line: bytes) -> ServerReply:
        """One command and its reply."""
        await self.write_commands([line])
        return await self.read_reply()

    async def ehlo(self, name: str) -> ServerReply:
        """EHLO; on 250 the server's extensions replace what was known."""
        reply = await self.command(b"EHLO " + name.encode("ascii"))
        if reply.code == 250:
            self.extensions = {}
            for line in reply.text.split("\n")[1:]:
                keyword, _, parameters = line.strip().partition(" ")
                if keyword:
                    self.extensions[keyword.upper()] = parameters.strip()
        return reply

    def supports(self, keyword: str) -> bool:
        return keyword.upper() in self.extensions

    async def starttls(self, context: ssl.SSLContext, server_hostname: str) -> None:
        """The TLS handshake after a 220 to STARTTLS; raises `TlsFailed` (the connection is closed)."""
        wire = self._wire
        if wire.buffer:
            raise ProtocolViolation("the server sent octets after its reply to STARTTLS")
        transport = wire.transport
        if transport is None or wire.closed is not None:
            raise wire.closed or ServerDisconnected("connection closed")
        loop = asyncio.get_running_loop()
        try:
            secure = await loop.start_tls(
                transport,
                wire,
                context,
                server_hostname=server_hostname,
                ssl_handshake_timeout=self.timeouts.connect,
            )
        except (ssl.SSLError, OSError, TimeoutError, ConnectionError) as error:
            transport.close()
            raise TlsFailed(f"TLS handshake failed: {error or type(error).__name__}") from error
        if secure is None:  # the connection closed during the handshake
            raise TlsFailed("TLS handshake failed: connection closed")
        wire.transport = secure
        ssl_object = secure.get_extra_info("ssl_object")
        self.tls = (ssl_object.version() if isinstance(ssl_object, ssl.SSLObject) else None) or "TLS"
        self.extensions = {}  # RFC 3207 §4.2: forget what was learnt before TLS

    def peer_certificate(self) -> bytes | None:
        """The server's certificate (DER) once TLS is up. Only the leaf: Python 3.11's ssl does not
        expose the rest of an unverified peer's chain."""
        transport = self._wire.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        if not isinstance(ssl_object, ssl.SSLObject):
            return None
        return ssl_object.getpeercert(binary_form=True)

    async def send_content(self, content: bytes) -> ServerReply:
        """After a 354: the message, dot-stuffed and terminated, and the reply to its end."""
        if len(content) > LARGE_CONTENT:
            data = await asyncio.to_thread(stuffed, content)
        else:
            data = stuffed(content)
        try:
            async with asyncio.timeout(self.timeouts.data):
                await self._wire.write(data)
        except TimeoutError as error:
            raise ReplyTimeout("the server did not read the message in time") from error
        return await self.read_reply(self.timeouts.data)

    async def quit(self) -> None:
        """QUIT when the connection is still up, its reply awaited briefly; always closes."""
        try:
            if self._wire.closed is None:
                await self.write_commands([b"QUIT"])
                await self.read_reply(min(QUIT_TIMEOUT, self.timeouts.command))
        except (SmtpClientError, OSError):
            pass
        finally:
            self.close()

    def close(self) -> None:
        transport = self._wire.transport
        if transport is not None:
            transport.close()

    @property
    def is_open(self) -> bool:
        transport = self._wire.transport
        return self._wire.closed is None and transport is not None and not transport.is_closing()


def stuffed(content: bytes) -> bytes:
    """`content` as sent after DATA: every line ending CRLF, a leading `.` doubled (RFC 5321 §4.5.2),
    a final CRLF, and the terminating `.` line (alone for empty content)."""
    data = _LINE_ENDINGS.sub(b"\r\n", content)
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"
    if data.startswith(b"."):
        data = b"." + data
    return data.replace(b"\r\n.", b"\r\n..") + b".\r\n"
