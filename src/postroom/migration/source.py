"""The source side of an IMAP migration: one login on the old IMAP server, read only.

`SourceServer` is the endpoint (host, port, security: implicit TLS, STARTTLS or plain, and the TLS
context that checks the server's certificate and name). `SourceServer.open(user, password)` logs in
and gives a `SourceMailbox`: its folders (`folders`, from LIST with the server's special-use flags),
a folder's UIDVALIDITY and messages (`select`, `messages`: UID, flags, internal date, size, in
chunks of `FETCH_CHUNK` UIDs) and a group of messages' bytes (`bodies`, `BODY.PEEK[]`, so nothing
is marked \\Seen on the source). Nothing is ever written to the source server.

Failure: a refused login raises `SourceLoginError`, every other problem (refused connection, TLS,
a NO or BAD, a dropped connection, a bound passed) `SourceError`, each with a message that says
what to do. The migration fails that one mailbox and goes on with the next.

*Security:* the source server is a stranger's server as much as any SMTP client is. What it can
make Postroom hold is bounded: a line at most imaplib's 1,000,000 octets (`imaplib._MAXLINE`), a
literal at most `max_literal` octets (the largest message the migration takes plus headroom; the
size is checked before a single octet is read, so `{99999999999}` costs nothing), and all that one
command's answer may bring at most `MAX_RESPONSE` octets (the command fails past it: a LIST of a
million folders or a FETCH answer that never ends). Folder counts and names are bounded by the
caller (`migration.folders`). Every socket read has a timeout (`TIMEOUT_SECONDS`). Passwords are sent
only after TLS unless the operator chose `plain` for a lab; they never reach a log or the report.

IMAPClient (a library) parses the answers: LIST with modified UTF-7 names, FETCH with literals and
dates, STATUS. Only the reading is bounded here, by subclassing the imaplib classes it creates: no
IMAP parser of our own for a read-only client.
"""

from __future__ import annotations

import contextlib
import imaplib
import socket
import ssl
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from imapclient import IMAPClient  # type: ignore[import-untyped]
from imapclient.exceptions import IMAPClientError, LoginError  # type: ignore[import-untyped]

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

MAX_RESPONSE = 64 * 1024 * 1024  # octets one command's answer may bring in all (bodies included)
FETCH_CHUNK = 500  # UIDs asked for in one FETCH of flags, dates and sizes
TIMEOUT_SECONDS = 60.0  # connect and each read


class Security(StrEnum):
    SSL = "ssl"  # implicit TLS (port 993)
    STARTTLS = "starttls"  # STARTTLS before login (port 143)
    PLAIN = "plain"  # no TLS at all: a lab, or a source on the same trusted network


class SourceError(Exception):
    """The source server failed this mailbox; the message says what went wrong and what to do."""


class SourceLoginError(SourceError):
    """The source server refused the UserName and Password."""


@dataclass(frozen=True, slots=True)
class SourceFolder:
    name: str  # as the server names it (decoded from modified UTF-7)
    separator: str  # the server's hierarchy separator ("" when flat)
    flags: frozenset[str]  # LIST attributes: \Noselect, \Sent, \HasChildren ...

    @property
    def selectable(self) -> bool:
        return not {"\\noselect", "\\nonexistent"} & {flag.lower() for flag in self.flags}


@dataclass(frozen=True, slots=True)
class SourceMessage:
    uid: int
    flags: tuple[str, ...]  # as the server sent them, \Recent left out
    internal_date: float  # epoch seconds
    size: int  # RFC822.SIZE


class _Bounded:
    """Read bounds for an imaplib connection (mixed into the classes IMAPClient creates)."""

    max_literal = 0
    _budget = MAX_RESPONSE

    def _spend(self, octets: int) -> None:
        self._budget -= octets
        if self._budget < 0:
            raise imaplib.IMAP4.abort(f"the server's answer passed {MAX_RESPONSE} octets")

    def read(self, size: int) -> bytes:
        if size > self.max_literal:
            raise imaplib.IMAP4.abort(
                f"the server sent a literal of {size} octets (at most {self.max_literal})"
            )
        self._spend(size)
        data: bytes = super().read(size)  # type: ignore[misc]
        return data

    def readline(self) -> bytes:
        line: bytes = super().readline()  # type: ignore[misc]
        self._spend(len(line))
        return line

    def send(self, data: ReadableBuffer) -> None:
        self._budget = MAX_RESPONSE  # a new command (or its literal): a new answer to bound
        super().send(data)  # type: ignore[misc]


class _PlainConnection(_Bounded, imaplib.IMAP4):
    def __init__(self, host: str, port: int, timeout: float) -> None:
        imaplib.IMAP4.__init__(self, host, port, timeout)


class _TlsConnection(_Bounded, imaplib.IMAP4_SSL):
    def __init__(self, host: str, port: int, context: ssl.SSLContext, timeout: float) -> None:
        imaplib.IMAP4_SSL.__init__(self, host, port, ssl_context=context, timeout=timeout)


class _Client(IMAPClient):  # type: ignore[misc]
    """IMAPClient over the bounded connections."""

    def __init__(self, server: SourceServer, max_literal: int) -> None:
        self._server = server
        self._max_literal = max_literal
        super().__init__(
            server.host,
            server.port,
            ssl=server.security is Security.SSL,
            ssl_context=server.tls_context,
            timeout=TIMEOUT_SECONDS,
        )

    def _create_IMAP4(self) -> imaplib.IMAP4:  # IMAPClient's name
        connection: _PlainConnection | _TlsConnection
        if self._server.security is Security.SSL:
            connection = _TlsConnection(
                self._server.host, self._server.port, self._server.tls_context, TIMEOUT_SECONDS
            )
        else:
            connection = _PlainConnection(self._server.host, self._server.port, TIMEOUT_SECONDS)
        connection.max_literal = self._max_literal
        return connection


@dataclass(frozen=True, slots=True)
class SourceServer:
    """The old IMAP server: where it is and how to talk to it."""

    host: str
    port: int
    security: Security
    tls_context: ssl.SSLContext

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"

    def open(self, user: str, password: str, max_literal: int) -> SourceMailbox:
        """Log in as `user`; `max_literal` bounds a message (literal) the server may send."""
        try:
            client = _Client(self, max_literal)
        except (OSError, imaplib.IMAP4.error, IMAPClientError) as error:
            raise SourceError(_connect_problem(self, error)) from None
        try:
            client.normalise_times = False  # aware datetimes: the internal date's own offset
            if self.security is Security.STARTTLS:
                client.starttls(self.tls_context)
            client.login(user, password)
        except LoginError:
            _close(client)
            raise SourceLoginError(
                f"{self.name} refused the login of {user!r}; check UserName and Password in the CSV "
                "(a password changed after the first run makes later runs fail)"
            ) from None
        except (OSError, imaplib.IMAP4.error, IMAPClientError) as error:
            _close(client)
            raise SourceError(_connect_problem(self, error)) from None
        return SourceMailbox(self, client)


def _connect_problem(server: SourceServer, error: BaseException) -> str:
    if isinstance(error, ssl.SSLCertVerificationError):
        return (
            f"the certificate of {server.name} is not trusted ({error.verify_message}); give the CA "
            "that signed it with --ca-file, or the name it was issued for with --host"
        )
    if isinstance(error, ssl.SSLError):
        return f"TLS with {server.name} failed ({error.reason}); check --port and --security"
    if isinstance(error, socket.timeout | TimeoutError):
        return f"{server.name} did not answer within {TIMEOUT_SECONDS:.0f} s; check --host and --port"
    if isinstance(error, ConnectionRefusedError):
        return f"{server.name} refused the connection; check --host, --port and --security"
    return f"{server.name}: {error}; check the source server, then run the batch again (it resumes)"


def _close(client: Any) -> None:
    try:
        client.logout()
    except Exception:  # the connection is being dropped either way; a dead one cannot log out
        with contextlib.suppress(OSError):
            client.shutdown()


class SourceMailbox:
    """One logged-in mailbox on the source server. Close it with `close()` (or `with`)."""

    def __init__(self, server: SourceServer, client: Any) -> None:
        self.server = server
        self._client = client

    def __enter__(self) -> SourceMailbox:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        _close(self._client)

    def _call(self, what: str, function: Any, *args: Any) -> Any:
        try:
            return function(*args)
        except (OSError, imaplib.IMAP4.error, IMAPClientError) as error:
            raise SourceError(
                f"{self.server.name} failed {what}: {error}; run the batch again to resume"
            ) from None

    def folders(self) -> list[SourceFolder]:
        found = self._call("LIST", self._client.list_folders)
        return [
            SourceFolder(
                name=str(name),
                separator=_text(separator),
                flags=frozenset(_text(flag) for flag in flags),
            )
            for flags, separator, name in found
        ]

    def select(self, folder: str) -> int:
        """Select the folder read-only; its UIDVALIDITY."""
        answer = self._call(f"SELECT {folder!r}", self._client.select_folder, folder, True)
        uidvalidity = answer.get(b"UIDVALIDITY")
        if not isinstance(uidvalidity, int):
            raise SourceError(f"{self.server.name} gave {folder!r} no UIDVALIDITY; it cannot be synced")
        return uidvalidity

    def messages(self) -> list[SourceMessage]:
        """Every message of the selected folder: UID, flags, internal date, size."""
        uids = sorted(int(uid) for uid in self._call("UID SEARCH", self._client.search, ["ALL"]))
        found: list[SourceMessage] = []
        for chunk in _chunks(uids, FETCH_CHUNK):
            answer = self._call("FETCH", self._client.fetch, chunk, ["FLAGS", "INTERNALDATE", "RFC822.SIZE"])
            for uid, items in answer.items():
                date = items.get(b"INTERNALDATE")
                size = items.get(b"RFC822.SIZE")
                if not isinstance(date, datetime) or not isinstance(size, int):
                    continue  # a message the server cannot describe is never copied half
                flags = tuple(_text(flag) for flag in items.get(b"FLAGS", ()) if _text(flag) != "\\Recent")
                found.append(
                    SourceMessage(uid=int(uid), flags=flags, internal_date=date.timestamp(), size=size)
                )
        return found

    def bodies(self, uids: Sequence[int]) -> dict[int, bytes]:
        """The messages' bytes exactly as stored on the source, in one FETCH (the caller keeps their
        sizes within `MAX_RESPONSE`); a UID that has gone meanwhile is missing from the answer."""
        answer = self._call("FETCH of message bodies", self._client.fetch, list(uids), ["BODY.PEEK[]"])
        found: dict[int, bytes] = {}
        for uid, items in answer.items():
            body = items.get(b"BODY[]")
            if isinstance(body, bytes):
                found[int(uid)] = bytes(body)
        return found


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def _chunks(values: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(values), size):
        yield list(values[start : start + size])
