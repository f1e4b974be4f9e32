"""One IMAP connection's session: states, commands and untagged updates (RFC 3501 and extensions).

`ImapSession` is the per-connection state machine of the IMAP room. The listener (`imap.server`) feeds
it what the socket read (`receive_data`), lets it act on every complete command (`process`), and
writes what it hands to its `write` callable; the session never touches a socket, so its tests drive
it with bytes. What it needs of the node (the directory for LOGIN, the database, the blob store, the
notification channel, the spam learner) it asks of a `MailAccess` (`app.imap.NodeMailAccess` is the
real one), always off the event loop. States (RFC 3501 §3): not authenticated, authenticated,
selected, logout; IDLE (RFC 2177) is a sub-state of the last two.

Commands: CAPABILITY, NOOP, LOGOUT, ID (RFC 2971), STARTTLS, LOGIN, AUTHENTICATE PLAIN with SASL-IR
(RFC 4959); ENABLE (RFC 5161), NAMESPACE (RFC 2342), SELECT, EXAMINE, CREATE, DELETE, RENAME,
SUBSCRIBE, UNSUBSCRIBE, LIST (with the RFC 5258 selection and return options SUBSCRIBED and
SPECIAL-USE, RFC 6154), LSUB, STATUS, APPEND (APPENDUID, RFC 4315; APPENDLIMIT, RFC 7889), IDLE,
GETQUOTA and GETQUOTAROOT (RFC 9208, only for a mailbox with a size limit); CHECK, CLOSE, UNSELECT
(RFC 3691), EXPUNGE, SEARCH, FETCH, STORE, COPY, MOVE (RFC 6851) and their UID forms with UID
EXPUNGE; CONDSTORE (RFC 7162: MODSEQ, CHANGEDSINCE, UNCHANGEDSINCE, HIGHESTMODSEQ).

Consistency between sessions: a selected session knows the folder's highestmodseq it last reported.
After every command (and during IDLE, when the notification `mailbox:<id>` arrives or every
`poll_seconds` without one: notifications are hints) it reads the folder's row; when its
highestmodseq moved it reports new messages (`EXISTS`), changed flags (`FETCH (FLAGS ...)`) and
removed messages (`EXPUNGE`, never during FETCH, STORE or SEARCH by sequence number, RFC 3501 §7.4.1).
Its own writes are announced the same way (the mailstore announces every write after its commit),
and APPEND answers OK only after its commit (the group committer's durable transaction).

Bounds, each answered: the reader's (`syntax.SyntaxLimits`: line, literal, nesting; before login a
literal is at most `PRE_LOGIN_LITERAL` octets), `commands_before_login` (then `* BYE`), `max_errors`
BAD replies (then `* BYE`), `login_timeout` before login and `idle_timeout` after (`* BYE` from the
listener, `timeout`), `idle_max` for one IDLE, `max_append_size` (`NO [TOOBIG]`, also before the
client sends a synchronizing literal). Failed logins are throttled by the `MailAccess` (per IP and
per account, shared by the node's workers).

*Security:* until LOGIN or AUTHENTICATE succeeded the session answers only the commands of the not
authenticated state, and on a listener without TLS it refuses both (`[PRIVACYREQUIRED]`, and
LOGINDISABLED in the capabilities) unless plaintext logins are allowed. After it, every read and
write names the logged-in mailbox's id, and folders are looked up by name within it: no argument of
any command names another mailbox or tenant. Client text written back (folder names, flags, tags) goes
through `imap.response`, which never lets it end a response line.

Why hand-written: Python has IMAP clients only (imaplib, imapclient); the servers (Twisted's
twisted.mail.imap4, aioimaplib's test server) are tied to their own event frameworks or to an
in-memory mailbox and lack CONDSTORE, MOVE and the bounds above.
"""

from __future__ import annotations

import asyncio
import binascii
import datetime
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeVar

from sqlalchemy import Connection

from postroom import __version__
from postroom.imap.cache import cached_texts
from postroom.imap.fetch import FetchError, parse_fetch, render_fetch
from postroom.imap.folder_names import decode_name, encode_name, list_matcher
from postroom.imap.message import MessageView
from postroom.imap.response import (
    Raw,
    Value,
    continuation,
    encode,
    flag_list,
    tagged,
    untagged,
    untagged_status,
)
from postroom.imap.search import CachedHeaders, SearchError, parse_search
from postroom.imap.sequence import SequenceError, SequenceSet, compact_uid_set
from postroom.imap.syntax import (
    NIL,
    Argument,
    Atom,
    Command,
    CommandReader,
    CommandRefused,
    Line,
    LiteralRequested,
    String,
    SyntaxLimits,
)
from postroom.mailstore import mailbox as store
from postroom.model.message import summarize

T = TypeVar("T")

PRE_LOGIN_LITERAL = 8192  # octets of a literal before login (a user name, a password)
PRE_LOGIN_COMMAND = 65_536  # octets of one command before login
WRITE_CHUNK = 262_144  # octets of responses held before they are handed to `write`
BY_UID_MOST = 500  # a FETCH, STORE or SEARCH of at most this many messages reads only their rows
READ_BATCH = 200  # messages whose octets one worker-thread call reads for FETCH or SEARCH

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """The `[imap]` limits one session enforces (see the module docstring)."""

    login_timeout: float = 60.0
    idle_timeout: float = 1800.0
    idle_max: float = 1800.0
    max_errors: int = 20
    commands_before_login: int = 20
    max_append_size: int = 52_428_800
    poll_seconds: float = 10.0


@dataclass(frozen=True, slots=True)
class ImapAccount:
    """The mailbox a session logged in as."""

    mailbox_id: int
    tenant_id: int
    address: str
    quota_bytes: int | None  # the mailbox's size limit; None: none (then no QUOTA capability)


class LoginRefused(enum.Enum):
    FAILED = "failed"  # wrong name or password (or a mailbox that may not log in)
    THROTTLED = "throttled"  # too many failures lately: refused without checking
    DISCONNECT = "disconnect"  # far too many: refused, and the connection closes


class MailAccess(Protocol):
    """What a session needs of the node; every call runs off the event loop or is a quick hand-off."""

    async def login(self, user: str, password: str, client: str) -> ImapAccount | LoginRefused: ...

    async def read(self, job: Callable[[Connection], T]) -> T: ...

    async def write(self, job: Callable[[Connection], T]) -> T:
        """Run `job` in the group committer: it returns after the durable commit."""
        ...

    async def store_blob(self, content: bytes) -> str: ...

    async def message_bytes(
        self, records: Sequence[store.MessageRecord], *, header_only: bool
    ) -> list[bytes]:
        """The messages' octets (only about their header with `header_only`), in one worker-thread
        call for all of them."""
        ...

    def watch(self, mailbox_id: int, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` on the event loop when the mailbox changes; returns the unsubscribe."""
        ...

    def junk_report(self, account: ImapAccount, records: Sequence[store.MessageRecord], spam: bool) -> None:
        """Train the spam engine with these messages and trace it, in the background."""
        ...

    def cache_structure(self, folder_id: int, records: Sequence[store.MessageRecord]) -> None:
        """Compute and store the ENVELOPE, BODYSTRUCTURE and SEARCH header text of these messages, in
        the background."""
        ...


class State(enum.Enum):
    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


@dataclass(slots=True)
class _Selected:
    folder: store.Folder
    read_only: bool
    uids: list[int]  # sequence number - 1 -> UID, as this session's client knows them
    modseq: int  # the folder's highestmodseq last reported
    flags: dict[int, frozenset[str]] = field(default_factory=dict)  # uid -> flags last reported


class _Bad(Exception):
    """The command's arguments are malformed: tagged BAD (counted as an error)."""


class _No(Exception):
    def __init__(self, text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.code = code


_Handler = Callable[["ImapSession", Command], Awaitable[None]]
_ANY = frozenset(State) - {State.LOGOUT}
_AUTHENTICATED = frozenset({State.AUTHENTICATED, State.SELECTED})
_SELECTED = frozenset({State.SELECTED})
_PRE_LOGIN = frozenset({State.NOT_AUTHENTICATED})
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_STRUCTURE_ITEMS = frozenset({"ENVELOPE", "BODYSTRUCTURE", "BODY"})  # what `cache_structure` spares
_COMMANDS_WITHOUT_EXPUNGE = frozenset({"FETCH", "STORE", "SEARCH"})  # RFC 3501 §7.4.1 (by sequence)


def display_name(name: str) -> str:
    """A stored folder name as IMAP shows it: "Inbox" is INBOX (RFC 3501 §5.1)."""
    if name == store.INBOX:
        return "INBOX"
    if name.startswith(store.INBOX + store.SEPARATOR):
        return "INBOX" + name[len(store.INBOX) :]
    return name


def stored_name(name: str) -> str:
    """A client's folder name as stored: INBOX in any case is "Inbox"."""
    head, separator, rest = name.partition(store.SEPARATOR)
    if head.upper() == "INBOX":
        return store.INBOX + separator + rest
    return name


class ImapSession:
    """One connection's IMAP session (see the module docstring)."""

    def __init__(
        self,
        access: MailAccess,
        limits: SessionLimits,
        write: Callable[[bytes], Awaitable[None]],
        *,
        client: str,
        tls: bool,
        starttls: bool,
        plaintext_login: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`tls`: the connection is encrypted now; `starttls`: it may become so (the 143 role);
        `plaintext_login`: LOGIN is allowed without TLS (a lab)."""
        self.access = access
        self.limits = limits
        self._write = write
        self.client = client
        self.tls = tls
        self._starttls = starttls
        self._plaintext_login = plaintext_login
        self._clock = clock
        self.reader = CommandReader(
            SyntaxLimits(max_literal=PRE_LOGIN_LITERAL, max_command=PRE_LOGIN_COMMAND)
        )
        self.state = State.NOT_AUTHENTICATED
        self.account: ImapAccount | None = None
        self.selected: _Selected | None = None
        self.condstore = False  # CONDSTORE enabled (ENABLE, SELECT (CONDSTORE), or a MODSEQ use)
        self.errors = 0
        self.commands = 0
        self.wants_starttls = False  # the listener upgrades the connection, then calls `tls_started`
        self.idling: Command | None = None  # the IDLE command in progress
        self.idle_since = 0.0
        self.woken = asyncio.Event()  # the selected folder's mailbox changed (a hint)
        self.shutdown = asyncio.Event()  # the node stops: say BYE at the next pause
        self._unwatch: Callable[[], None] | None = None
        self._out = bytearray()
        self._auth_tag: str | None = None  # an AUTHENTICATE waiting for its response line
        self._last_check = clock()

    # --- driving ---------------------------------------------------------------------------------
    def greeting(self) -> bytes:
        return untagged_status("OK", "Postroom IMAP ready", "CAPABILITY " + " ".join(self.capabilities()))

    def receive_data(self, data: bytes) -> None:
        self.reader.receive_data(data)

    @property
    def closed(self) -> bool:
        return self.state is State.LOGOUT

    def timeout(self) -> float:
        """Seconds the listener waits for input before `timed_out`."""
        if self.idling is not None:
            return max(0.0, self.idle_since + self.limits.idle_max - self._clock())
        if self.state is State.NOT_AUTHENTICATED:
            return self.limits.login_timeout
        return self.limits.idle_timeout

    async def shut_down(self) -> None:
        await self._bye("Server shutting down")

    async def timed_out(self) -> None:
        text = "IDLE for too long" if self.idling is not None else "Autologout; idle for too long"
        await self._bye(text)

    async def process(self) -> None:
        """Act on every complete event the reader holds (stopping at STARTTLS or the end)."""
        while not self.closed and not self.wants_starttls:
            event = self.reader.next_event()
            if event is None:
                break
            if isinstance(event, LiteralRequested):
                await self._literal_requested(event)
            elif isinstance(event, CommandRefused):
                await self._refused(event)
            elif isinstance(event, Line):
                await self._line(event)
            else:
                await self._command(event)
        if not self.wants_starttls:
            await self.flush()

    async def wake(self) -> None:
        """The mailbox changed or the poll interval passed: during IDLE, tell the client at once."""
        self.woken.clear()
        if self.idling is not None and self.selected is not None:
            await self._updates(expunges=True)
            await self.flush()

    def poll_due(self) -> float:
        """Seconds until the next poll of the selected folder during IDLE (notifications are hints)."""
        return max(0.0, self._last_check + self.limits.poll_seconds - self._clock())

    def tls_started(self) -> None:
        self.tls = True
        self.wants_starttls = False

    def close(self) -> None:
        """The connection is gone: end the subscription."""
        self._stop_watching()
        self.state = State.LOGOUT

    # --- output ----------------------------------------------------------------------------------
    def _send(self, data: bytes) -> None:
        if self.state is not State.LOGOUT:  # after BYE nothing more is said
            self._out += data

    async def flush(self) -> None:
        if self._out:
            data, self._out = bytes(self._out), bytearray()
            await self._write(data)

    async def _send_soon(self, data: bytes) -> None:
        self._send(data)
        if len(self._out) >= WRITE_CHUNK:
            await self.flush()

    async def _bye(self, text: str) -> None:
        self._send(untagged_status("BYE", text))
        await self.flush()
        self.close()

    # --- events ----------------------------------------------------------------------------------
    async def _literal_requested(self, event: LiteralRequested) -> None:
        self._send(continuation("Ready for literal"))
        await self.flush()

    async def _refused(self, event: CommandRefused) -> None:
        if self.idling is not None or self._auth_tag is not None:  # the awaited line was too long
            await self._line(Line(b""))
            return
        if event.too_big and self.state is not State.NOT_AUTHENTICATED:
            self._send(tagged(event.tag, "NO", "Message too large", "TOOBIG"))
            return
        await self._error(event.tag, event.reply)

    async def _error(self, tag: str, text: str) -> None:
        self.errors += 1
        self._send(tagged(tag, "BAD", text))
        if self.errors >= self.limits.max_errors:
            await self._bye("Too many errors")

    async def _line(self, event: Line) -> None:
        if self.idling is not None:
            command, self.idling = self.idling, None
            self._stop_watching_unless_selected()
            if event.octets.upper() == b"DONE":
                self._send(tagged(command.tag, "OK", "IDLE terminated"))
            else:
                await self._error(command.tag, "Expected DONE to end IDLE")
            return
        tag, self._auth_tag = self._auth_tag or "*", None
        if event.octets == b"*":
            await self._error(tag, "AUTHENTICATE cancelled")
            return
        await self._plain(tag, event.octets)

    async def _command(self, command: Command) -> None:
        if self.state is State.NOT_AUTHENTICATED:
            self.commands += 1
            if self.commands > self.limits.commands_before_login:
                await self._bye("Too many commands without logging in")
                return
        entry = _HANDLERS.get(command.name)
        if entry is None:
            await self._error(command.tag, f"Unknown command {command.name[:32]}")
            return
        states, handler = entry
        if self.state not in states:
            await self._error(command.tag, f"{command.name} is not allowed in the {self.state.value} state")
            return
        try:
            await handler(self, command)
        except _Bad as bad:
            await self._error(command.tag, str(bad))
        except _No as no:
            self._send(tagged(command.tag, "NO", no.text, no.code))
        except store.FolderError as error:
            self._send(tagged(command.tag, "NO", str(error), _folder_code(error)))

    # --- any state -------------------------------------------------------------------------------
    def capabilities(self) -> list[str]:
        found = ["IMAP4rev1", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE", "NAMESPACE", "UNSELECT"]
        if self.state is State.NOT_AUTHENTICATED:
            if self._starttls and not self.tls:
                found.append("STARTTLS")
            if self._login_allowed():
                found.append("AUTH=PLAIN")
            else:
                found.append("LOGINDISABLED")
            return found
        found += ["UIDPLUS", "MOVE", "SPECIAL-USE", "LIST-EXTENDED", "CONDSTORE"]
        found.append(f"APPENDLIMIT={self.limits.max_append_size}")
        if self.account is not None and self.account.quota_bytes is not None:
            found.append("QUOTA")
        return found

    def _login_allowed(self) -> bool:
        return self.tls or self._plaintext_login

    async def _capability(self, command: Command) -> None:
        _no_arguments(command)
        self._send(untagged(Atom("CAPABILITY"), *(Atom(item) for item in self.capabilities())))
        await self._done(command)

    async def _noop(self, command: Command) -> None:
        _no_arguments(command)
        await self._done(command)

    async def _logout(self, command: Command) -> None:
        _no_arguments(command)
        self._send(untagged_status("BYE", "Logging out"))
        self._send(tagged(command.tag, "OK", "LOGOUT completed"))
        await self.flush()
        self.close()

    async def _id(self, command: Command) -> None:
        if len(command.arguments) != 1 or not (
            command.arguments[0] is NIL or isinstance(command.arguments[0], tuple)
        ):
            raise _Bad("ID takes a parameter list or NIL")
        self._send(untagged(Atom("ID"), ("name", "Postroom", "version", __version__)))
        await self._done(command)

    # --- not authenticated -----------------------------------------------------------------------
    async def _starttls_command(self, command: Command) -> None:
        _no_arguments(command)
        if not self._starttls or self.tls:
            raise _Bad("TLS is already active" if self.tls else "STARTTLS is not offered here")
        # Not flushed here: the listener stops reading first, then writes it and starts the handshake.
        self._send(tagged(command.tag, "OK", "Begin TLS negotiation now"))
        self.wants_starttls = True
        self.reader = CommandReader(self.reader.limits)  # nothing sent before TLS is read after it

    async def _login(self, command: Command) -> None:
        if len(command.arguments) != 2:
            raise _Bad("LOGIN takes a user name and a password")
        user, password = (_astring(argument) for argument in command.arguments)
        if not self._login_allowed():
            raise _No("Use STARTTLS before logging in", "PRIVACYREQUIRED")
        try:
            await self._log_in(command.tag, user.decode("utf-8"), password.decode("utf-8"))
        except UnicodeDecodeError:
            raise _Bad("User name and password must be UTF-8") from None

    async def _authenticate(self, command: Command) -> None:
        arguments = command.arguments
        if not arguments or len(arguments) > 2 or not isinstance(arguments[0], Atom):
            raise _Bad("AUTHENTICATE takes a mechanism and an optional initial response")
        if arguments[0].text.upper() != "PLAIN":
            raise _No("Unsupported mechanism; use PLAIN")
        if not self._login_allowed():
            raise _No("Use STARTTLS before logging in", "PRIVACYREQUIRED")
        if len(arguments) == 2:
            initial = arguments[1]
            if not isinstance(initial, Atom):
                raise _Bad("The initial response must be base64")
            await self._plain(command.tag, initial.text.encode("ascii"), initial=True)
            return
        self._auth_tag = command.tag
        self.reader.expect_line()
        self._send(b"+ \r\n")

    async def _plain(self, tag: str, response: bytes, *, initial: bool = False) -> None:
        if initial and response == b"=":
            response = b""
        try:
            decoded = binascii.a2b_base64(response, strict_mode=True)
            authzid, authcid, password = decoded.decode("utf-8").split("\0")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            await self._error(tag, "Invalid PLAIN response")
            return
        if not authcid or not password:
            await self._error(tag, "Invalid PLAIN response")
            return
        if authzid and authzid.casefold() != authcid.casefold():
            self._send(tagged(tag, "NO", "Acting as another user is not allowed", "AUTHORIZATIONFAILED"))
            return
        await self._log_in(tag, authcid, password)

    async def _log_in(self, tag: str, user: str, password: str) -> None:
        outcome = await self.access.login(user.strip(), password, self.client)
        if outcome is LoginRefused.DISCONNECT:
            self._send(tagged(tag, "NO", "Too many failed logins", "UNAVAILABLE"))
            await self._bye("Too many failed logins")
            return
        if outcome is LoginRefused.THROTTLED:
            self._send(tagged(tag, "NO", "Too many failed logins; try again later", "UNAVAILABLE"))
            return
        if not isinstance(outcome, ImapAccount):
            self._send(tagged(tag, "NO", "Authentication failed", "AUTHENTICATIONFAILED"))
            return
        self.account = outcome
        self.state = State.AUTHENTICATED
        most = self.limits.max_append_size
        self.reader.limits = SyntaxLimits(max_literal=most, max_command=most + 1_048_576)
        self._send(tagged(tag, "OK", "Logged in", "CAPABILITY " + " ".join(self.capabilities())))

    # --- authenticated ---------------------------------------------------------------------------
    @property
    def _mailbox(self) -> int:
        assert self.account is not None
        return self.account.mailbox_id

    async def _enable(self, command: Command) -> None:
        if not command.arguments or not all(isinstance(item, Atom) for item in command.arguments):
            raise _Bad("ENABLE takes capability names")
        names = {item.text.upper() for item in command.arguments if isinstance(item, Atom)}
        enabled = []
        if "CONDSTORE" in names:
            self.condstore = True
            enabled.append(Atom("CONDSTORE"))
        self._send(untagged(Atom("ENABLED"), *enabled))
        await self._done(command)

    async def _namespace(self, command: Command) -> None:
        _no_arguments(command)
        self._send(untagged(Atom("NAMESPACE"), (("", store.SEPARATOR),), None, None))
        await self._done(command)

    async def _folder(self, name: str) -> store.Folder:
        mailbox = self._mailbox
        found = await self.access.read(lambda conn: store.find_folder(conn, mailbox, name))
        if found is None:
            raise _No(f"No folder {display_name(name)}", "NONEXISTENT")
        return found

    async def _select(self, command: Command) -> None:
        await self._open(command, read_only=command.name == "EXAMINE")

    async def _open(self, command: Command, *, read_only: bool) -> None:
        arguments = command.arguments
        if not 1 <= len(arguments) <= 2:
            raise _Bad(f"{command.name} takes a folder name")
        if len(arguments) == 2:
            parameters = arguments[1]
            if not isinstance(parameters, tuple) or any(
                not isinstance(item, Atom) or item.text.upper() != "CONDSTORE" for item in parameters
            ):
                raise _Bad("Unknown SELECT parameter")
            self.condstore = True
        name = _folder_name(arguments[0])
        self._unselect()
        folder = await self._folder(name)
        rows = await self.access.read(lambda conn: store.folder_flags(conn, folder.id))
        selected = _Selected(
            folder=folder,
            read_only=read_only,
            uids=[uid for uid, _, _ in rows],
            modseq=folder.highestmodseq,
            flags={uid: flags for uid, flags, _ in rows},
        )
        keywords = sorted({flag for _, flags, _ in rows for flag in flags if not flag.startswith("\\")})
        flags = flag_list([*store.SYSTEM_FLAGS, *keywords])
        self._send(untagged(Atom("FLAGS"), flags))
        permanent: tuple[Value, ...] = () if read_only else (*flags, Raw(b"\\*"))  # flag-perm "\*": an atom
        self._send(untagged_status("OK", "Flags permitted", "PERMANENTFLAGS " + encode(permanent).decode()))
        self._send(untagged(len(rows), Atom("EXISTS")))
        self._send(untagged(0, Atom("RECENT")))
        unseen = next((seq for seq, (_, flags, _) in enumerate(rows, 1) if "\\Seen" not in flags), 0)
        if unseen:
            self._send(untagged_status("OK", "First unseen", f"UNSEEN {unseen}"))
        self._send(untagged_status("OK", "UIDs valid", f"UIDVALIDITY {folder.uidvalidity}"))
        self._send(untagged_status("OK", "Predicted next UID", f"UIDNEXT {folder.uidnext}"))
        self._send(untagged_status("OK", "Highest", f"HIGHESTMODSEQ {folder.highestmodseq}"))
        self.selected = selected
        self.state = State.SELECTED
        self._watch()
        code = "READ-ONLY" if read_only else "READ-WRITE"
        self._send(tagged(command.tag, "OK", f"{command.name} completed", code))

    def _watch(self) -> None:
        if self._unwatch is None:
            self._unwatch = self.access.watch(self._mailbox, self.woken.set)

    def _stop_watching(self) -> None:
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None

    def _stop_watching_unless_selected(self) -> None:
        if self.selected is None:
            self._stop_watching()

    def _unselect(self) -> None:
        self.selected = None
        if self.state is State.SELECTED:
            self.state = State.AUTHENTICATED
        self._stop_watching()

    async def _create(self, command: Command) -> None:
        (name,) = _arguments(command, 1)
        folder_name = _folder_name(name).rstrip(store.SEPARATOR)
        if folder_name == store.INBOX:
            raise _No("The Inbox exists", "ALREADYEXISTS")
        mailbox, now = self._mailbox, time.time()
        await self.access.write(lambda conn: store.create_folder(conn, mailbox, folder_name, now))
        await self._done(command)

    async def _delete(self, command: Command) -> None:
        (name,) = _arguments(command, 1)
        folder_name, mailbox = _folder_name(name), self._mailbox
        if self.selected is not None and self.selected.folder.name == folder_name:
            self._unselect()
        await self.access.write(lambda conn: store.delete_folder(conn, mailbox, folder_name))
        await self._done(command)

    async def _rename(self, command: Command) -> None:
        old, new = (_folder_name(argument) for argument in _arguments(command, 2))
        mailbox, now = self._mailbox, time.time()
        await self.access.write(lambda conn: store.rename_folder(conn, mailbox, old, new, now))
        await self._done(command)

    async def _subscribe(self, command: Command) -> None:
        (name,) = _arguments(command, 1)
        folder_name, mailbox, on = _folder_name(name), self._mailbox, command.name == "SUBSCRIBE"
        await self.access.write(lambda conn: store.subscribe(conn, mailbox, folder_name, on))
        await self._done(command)

    async def _list(self, command: Command) -> None:
        arguments = list(command.arguments)
        selection: set[str] = set()
        returns: set[str] = set()
        first = arguments[0] if arguments else None
        if isinstance(first, tuple):
            selection = {_atom_text(item).upper() for item in first}
            arguments.pop(0)
        if len(arguments) == 4 and isinstance(arguments[2], Atom) and arguments[2].text.upper() == "RETURN":
            options = arguments[3]
            if not isinstance(options, tuple):
                raise _Bad("RETURN takes a list of options")
            returns = {_atom_text(item).upper() for item in options}
            arguments = arguments[:2]
        if len(arguments) != 2:
            raise _Bad(f"{command.name} takes a reference and a pattern")
        reference = _mailbox_text(arguments[0])
        patterns_argument = arguments[1]
        patterns = (
            [_mailbox_text(item) for item in patterns_argument]
            if isinstance(patterns_argument, tuple)
            else [_mailbox_text(patterns_argument)]
        )
        lsub = command.name == "LSUB"
        if not lsub and patterns == [""]:
            self._send(untagged(Atom("LIST"), (Atom("\\Noselect"),), store.SEPARATOR, ""))
            await self._done(command)
            return
        unknown = selection - {"SUBSCRIBED", "SPECIAL-USE", "RECURSIVEMATCH"}
        if unknown or returns - {"SUBSCRIBED", "SPECIAL-USE", "CHILDREN"}:
            raise _Bad("Unknown LIST option")
        try:
            matchers = [list_matcher(reference, pattern) for pattern in patterns]
        except ValueError as error:
            raise _Bad(str(error)) from None
        mailbox = self._mailbox
        folders = await self.access.read(lambda conn: store.list_folders(conn, mailbox))
        names = {folder.name for folder in folders}
        subscribed_only = lsub or "SUBSCRIBED" in selection
        for folder in folders:
            shown = display_name(folder.name)
            if not any(matches(shown) for matches in matchers):
                continue
            if subscribed_only and not folder.subscribed:
                continue
            if "SPECIAL-USE" in selection and not folder.special_use:
                continue
            has_children = any(other.startswith(folder.name + store.SEPARATOR) for other in names)
            attributes = [Atom("\\HasChildren" if has_children else "\\HasNoChildren")]
            if folder.special_use and not lsub:
                attributes.append(Atom(folder.special_use))
            if folder.subscribed and ("SUBSCRIBED" in returns or "SUBSCRIBED" in selection):
                attributes.append(Atom("\\Subscribed"))
            self._send(untagged(Atom(command.name), tuple(attributes), store.SEPARATOR, encode_name(shown)))
        await self._done(command)

    async def _status(self, command: Command) -> None:
        if len(command.arguments) != 2 or not isinstance(command.arguments[1], tuple):
            raise _Bad("STATUS takes a folder name and a list of items")
        items = [_atom_text(item).upper() for item in command.arguments[1]]
        allowed = {"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ", "SIZE"}
        if not items or set(items) - allowed:
            raise _Bad("Unknown STATUS item")
        folder = await self._folder(_folder_name(command.arguments[0]))
        status = await self.access.read(lambda conn: store.folder_status(conn, folder.id))
        values = {
            "MESSAGES": status.messages,
            "RECENT": 0,
            "UIDNEXT": status.uidnext,
            "UIDVALIDITY": status.uidvalidity,
            "UNSEEN": status.unseen,
            "HIGHESTMODSEQ": status.highestmodseq,
            "SIZE": status.size,
        }
        found: list[Value] = []
        for item in items:
            found += [Atom(item), values[item]]
        self._send(untagged(Atom("STATUS"), encode_name(display_name(folder.name)), tuple(found)))
        await self._done(command)

    async def _append(self, command: Command) -> None:
        arguments = list(command.arguments)
        if len(arguments) < 2 or not isinstance(arguments[-1], String):
            raise _Bad("APPEND takes a folder name, optional flags and date, and the message literal")
        name = _folder_name(arguments.pop(0))
        literal = arguments.pop()
        assert isinstance(literal, String)
        content = literal.octets
        flags: list[str] = []
        internal_date = time.time()
        given = arguments[0] if arguments else None
        if isinstance(given, tuple):
            flags = [_flag(item) for item in given]
            arguments.pop(0)
        given = arguments[0] if arguments else None
        if isinstance(given, String) and not given.literal:
            internal_date = _date_time(given)
            arguments.pop(0)
        if arguments:
            raise _Bad("APPEND takes a folder name, optional flags and date, and the message literal")
        if len(content) > self.limits.max_append_size:
            raise _No("Message too large", "TOOBIG")
        if not content:
            raise _No("An empty message cannot be stored")
        mailbox = self._mailbox
        folder = await self.access.read(lambda conn: store.find_folder(conn, mailbox, name))
        if folder is None:
            raise _No(f"No folder {display_name(name)}", "TRYCREATE")
        blob_id = await self.access.store_blob(content)
        summary = summarize(content)
        cached = await asyncio.to_thread(cached_texts, content)  # in hand: FETCH, SEARCH need not read them

        def job(conn: Connection) -> tuple[int, int]:
            return store.append(
                conn,
                mailbox,
                folder.id,
                blob_id=blob_id,
                size=len(content),
                flags=flags,
                internal_date=internal_date,
                summary=summary,
                cached=cached,
            )

        uidvalidity, uid = await self.access.write(job)
        await self._updates(expunges=True)
        self._send(tagged(command.tag, "OK", "APPEND completed", f"APPENDUID {uidvalidity} {uid}"))

    async def _idle(self, command: Command) -> None:
        _no_arguments(command)
        await self._updates(expunges=True)
        self._send(continuation("idling"))
        self.idling = command
        self.idle_since = self._clock()
        self._last_check = self._clock()
        self.reader.expect_line()
        if self.selected is not None:
            self._watch()

    async def _quota_root(self, command: Command) -> None:
        (name,) = _arguments(command, 1)
        quota = self._quota()
        folder = await self._folder(_folder_name(name))
        self._send(untagged(Atom("QUOTAROOT"), encode_name(display_name(folder.name)), ""))
        await self._send_quota(quota)
        await self._done(command)

    async def _quota_command(self, command: Command) -> None:
        (root,) = _arguments(command, 1)
        quota = self._quota()
        if _mailbox_text(root) != "":
            raise _No("No such quota root", "NONEXISTENT")
        await self._send_quota(quota)
        await self._done(command)

    def _quota(self) -> int:
        assert self.account is not None
        if self.account.quota_bytes is None:
            raise _No("This mailbox has no size limit")
        return self.account.quota_bytes

    async def _send_quota(self, quota: int) -> None:
        mailbox = self._mailbox
        used = await self.access.read(lambda conn: store.mailbox_usage(conn, mailbox))
        self._send(untagged(Atom("QUOTA"), "", (Atom("STORAGE"), (used + 1023) // 1024, quota // 1024)))

    async def _setquota(self, command: Command) -> None:
        raise _No("Quotas are set by the administrator")

    # --- selected --------------------------------------------------------------------------------
    async def _done(self, command: Command, text: str = "") -> None:
        """Report what changed in the selected folder, then the command's OK."""
        await self._updates(expunges=_expunges_allowed(command))
        self._send(tagged(command.tag, "OK", text or f"{command.name} completed"))

    async def _updates(self, *, expunges: bool) -> None:
        """Untagged EXISTS, FETCH FLAGS and (when allowed) EXPUNGE for what others changed."""
        selected = self.selected
        self._last_check = self._clock()
        if selected is None:
            return
        folder_id, mailbox = selected.folder.id, self._mailbox
        # The folder's row, found by id: one of at most a few hundred rows, where a count of its
        # messages would scan them all after every command.
        folders = await self.access.read(lambda conn: store.list_folders(conn, mailbox))
        current = next((folder for folder in folders if folder.id == folder_id), None)
        if current is None:
            await self._bye("The selected folder was deleted")
            return
        selected.folder = current  # renamed by another session: the same folder, a new name
        if current.highestmodseq == selected.modseq:
            return
        known = selected.modseq

        def read(conn: Connection) -> tuple[list[store.MessageRecord], list[int]]:
            return store.changes_since(conn, folder_id, known), store.folder_uids(conn, folder_id)

        changed, present = await self.access.read(read)
        if expunges:
            still = set(present)
            for seq in range(len(selected.uids), 0, -1):
                uid = selected.uids[seq - 1]
                if uid not in still:
                    del selected.uids[seq - 1]
                    selected.flags.pop(uid, None)
                    await self._send_soon(untagged(seq, Atom("EXPUNGE")))
        highest = selected.uids[-1] if selected.uids else 0
        new = [record for record in changed if record.uid > highest]
        new_uids = {record.uid for record in new}
        if new:
            selected.uids += [record.uid for record in new]
            await self._send_soon(untagged(len(selected.uids), Atom("EXISTS")))
        positions = {uid: seq for seq, uid in enumerate(selected.uids, 1)}
        for record in changed:
            position = positions.get(record.uid)
            if position is None:
                continue
            if record.uid in selected.flags and selected.flags[record.uid] == record.flags:
                continue
            selected.flags[record.uid] = record.flags
            if record.uid in new_uids:
                continue
            await self._send_soon(self._flags_line(position, record, with_uid=True))
        if expunges or set(present).issuperset(selected.uids):
            selected.modseq = current.highestmodseq  # else: the expunges are still to be told

    def _flags_line(self, seq: int, record: store.MessageRecord, *, with_uid: bool) -> bytes:
        items: list[Value] = []
        if with_uid:
            items += [Atom("UID"), record.uid]
        items += [Atom("FLAGS"), flag_list(record.flags)]
        if self.condstore:
            items += [Atom("MODSEQ"), (record.modseq,)]
        return untagged(seq, Atom("FETCH"), tuple(items))

    def _chosen(self, text: str, by_uid: bool) -> list[int]:
        """The UIDs a sequence set names among those the client knows."""
        selected = self.selected
        assert selected is not None
        try:
            chosen = SequenceSet.parse(text)
        except SequenceError as error:
            raise _Bad(str(error)) from None
        uids = selected.uids
        if by_uid:
            return chosen.select(uids, uids[-1] if uids else 0)
        if chosen.highest(len(uids)) > len(uids) and not chosen.uses_star:
            raise _Bad("No such message")
        return [uids[seq - 1] for seq in chosen.members(len(uids))]

    async def _check(self, command: Command) -> None:
        _no_arguments(command)
        await self._done(command)

    async def _close(self, command: Command) -> None:
        _no_arguments(command)
        selected = self.selected
        assert selected is not None
        if not selected.read_only:
            folder_id = selected.folder.id
            await self.access.write(lambda conn: store.expunge(conn, folder_id))
        self._unselect()
        self._send(tagged(command.tag, "OK", "CLOSE completed"))

    async def _unselect_command(self, command: Command) -> None:
        _no_arguments(command)
        self._unselect()
        self._send(tagged(command.tag, "OK", "UNSELECT completed"))

    async def _uid(self, command: Command) -> None:
        if not command.arguments or not isinstance(command.arguments[0], Atom):
            raise _Bad("UID takes FETCH, SEARCH, STORE, COPY, MOVE or EXPUNGE")
        name = command.arguments[0].text.upper()
        inner = Command(command.tag, name, command.arguments[1:])
        handler = _UID_HANDLERS.get(name)
        if handler is None:
            raise _Bad("UID takes FETCH, SEARCH, STORE, COPY, MOVE or EXPUNGE")
        await handler(self, inner, True)

    def _writable(self) -> _Selected:
        selected = self.selected
        assert selected is not None
        if selected.read_only:
            raise _No("The folder is read-only (EXAMINE)")
        return selected

    async def _expunge(self, command: Command, by_uid: bool = False) -> None:
        selected = self._writable()
        only: list[int] | None = None
        if by_uid:
            (text,) = _arguments(command, 1)
            only = self._chosen(_atom_text(text), True)
        elif command.arguments:
            raise _Bad("EXPUNGE takes no arguments")
        folder_id = selected.folder.id
        removed = await self.access.write(lambda conn: store.expunge(conn, folder_id, only))
        await self._remove(removed)
        await self._done(command)

    async def _remove(self, removed: Iterable[int]) -> None:
        """This session's own removal: EXPUNGE lines for the removed UIDs it knows."""
        selected = self.selected
        assert selected is not None
        gone = set(removed)
        for seq in range(len(selected.uids), 0, -1):
            if selected.uids[seq - 1] in gone:
                selected.flags.pop(selected.uids.pop(seq - 1), None)
                await self._send_soon(untagged(seq, Atom("EXPUNGE")))

    async def _records(self, uids: Sequence[int], *, structure: bool = True) -> list[store.MessageRecord]:
        selected = self.selected
        assert selected is not None
        folder_id = selected.folder.id
        if len(uids) <= BY_UID_MOST:  # a few messages of a large folder: read only their rows
            chosen = list(uids)
            return await self.access.read(
                lambda conn: store.messages_by_uid(conn, folder_id, chosen, structure=structure)
            )
        records = await self.access.read(
            lambda conn: store.folder_messages(conn, folder_id, structure=structure)
        )
        wanted = set(uids)
        return [record for record in records if record.uid in wanted]

    async def _fetch(self, command: Command, by_uid: bool = False) -> None:
        selected = self.selected
        assert selected is not None
        if len(command.arguments) < 2:
            raise _Bad("FETCH takes a sequence set and items")
        uids = self._chosen(_atom_text(command.arguments[0]), by_uid)
        try:
            request = parse_fetch(command.arguments[1:], uid=by_uid)
        except FetchError as error:
            raise _Bad(str(error)) from None
        if request.uses_modseq:
            self.condstore = True
        records = await self._records(uids)
        if request.changed_since is not None:
            records = [record for record in records if record.modseq > request.changed_since]
        seen: set[int] = set()
        if request.sets_seen and not selected.read_only:
            records, seen = await self._mark_seen(records)
        positions = {uid: seq for seq, uid in enumerate(selected.uids, 1)}
        uncached: list[store.MessageRecord] = []
        for start in range(0, len(records), READ_BATCH):
            batch = records[start : start + READ_BATCH]
            needs = [request.needs_for(record) for record in batch]
            views = await self._views(batch, needs)
            for record, view in zip(batch, views, strict=True):
                if view is not None and (record.envelope is None or record.search_headers is None):
                    uncached.append(record)
                position = positions[record.uid]
                flags_changed = record.uid in seen
                await self._send_soon(
                    render_fetch(request, position, record, view, uid=by_uid, flags_changed=flags_changed)
                )
        if uncached and any(item.name in _STRUCTURE_ITEMS for item in request.items):
            self.access.cache_structure(selected.folder.id, uncached)  # the next FETCH reads no bytes
        await self._done(command)

    async def _views(
        self, records: Sequence[store.MessageRecord], needs: Sequence[str]
    ) -> list[MessageView | None]:
        """Each message's view as far as `needs` asks ("none": no view), read in one go."""
        views: list[MessageView | None] = [None] * len(records)
        for kind in ("header", "full"):
            wanted = [index for index, need in enumerate(needs) if need == kind]
            if not wanted:
                continue
            contents = await self.access.message_bytes(
                [records[index] for index in wanted], header_only=kind == "header"
            )
            for index, content in zip(wanted, contents, strict=True):
                views[index] = MessageView(content)
        return views

    async def _mark_seen(
        self, records: list[store.MessageRecord]
    ) -> tuple[list[store.MessageRecord], set[int]]:
        """Set \\Seen on what a non-PEEK fetch reads; the records after, and the UIDs that changed."""
        selected = self.selected
        assert selected is not None
        unseen = [record.uid for record in records if "\\Seen" not in record.flags]
        if not unseen:
            return records, set()
        folder_id = selected.folder.id
        update = await self.access.write(
            lambda conn: store.store_flags(conn, folder_id, unseen, ["\\Seen"], "add")
        )
        self._own_write(update.highestmodseq)
        changed = {record.uid: record for record in update.updated}
        for record in update.updated:
            selected.flags[record.uid] = record.flags
        return [changed.get(record.uid, record) for record in records], set(changed)

    def _own_write(self, highestmodseq: int) -> None:
        """After this session's own flag write: when nobody else wrote in between, it knows it all."""
        selected = self.selected
        if selected is not None and highestmodseq == selected.modseq + 1:
            selected.modseq = highestmodseq

    async def _store(self, command: Command, by_uid: bool = False) -> None:
        selected = self._writable()
        arguments = list(command.arguments)
        if len(arguments) < 3:
            raise _Bad("STORE takes a sequence set, an item and flags")
        uids = self._chosen(_atom_text(arguments.pop(0)), by_uid)
        unchanged_since: int | None = None
        modifier = arguments[0]
        if isinstance(modifier, tuple):
            arguments.pop(0)
            if (
                len(modifier) != 2
                or _atom_text(modifier[0]).upper() != "UNCHANGEDSINCE"
                or not _atom_text(modifier[1]).isdigit()
            ):
                raise _Bad("Unknown STORE modifier")
            unchanged_since = int(_atom_text(modifier[1]))
            self.condstore = True
        item = _atom_text(arguments.pop(0)).upper()
        modes: dict[str, Literal["set", "add", "remove"]] = {
            "FLAGS": "set",
            "+FLAGS": "add",
            "-FLAGS": "remove",
        }
        silent = item.endswith(".SILENT")
        mode = modes.get(item.removesuffix(".SILENT"))
        if mode is None or not arguments:
            raise _Bad("STORE takes FLAGS, +FLAGS or -FLAGS (.SILENT) and flags")
        given = arguments[0] if len(arguments) == 1 and isinstance(arguments[0], tuple) else tuple(arguments)
        flags = [_flag(flag) for flag in given]
        folder_id = selected.folder.id
        update = await self.access.write(
            lambda conn: store.store_flags(conn, folder_id, uids, flags, mode, unchanged_since)
        )
        self._own_write(update.highestmodseq)
        positions = {uid: seq for seq, uid in enumerate(selected.uids, 1)}
        for record in update.updated:
            selected.flags[record.uid] = record.flags
            seq = positions.get(record.uid)
            if seq is not None and (not silent or unchanged_since is not None):
                await self._send_soon(self._flags_line(seq, record, with_uid=by_uid))
        await self._updates(expunges=by_uid)
        if update.modified:
            modified = update.modified if by_uid else [positions[uid] for uid in update.modified]
            code = f"MODIFIED {compact_uid_set(sorted(modified))}"
            self._send(tagged(command.tag, "OK", "Conditional STORE failed for some", code))
            return
        self._send(tagged(command.tag, "OK", "STORE completed"))

    async def _copy(self, command: Command, by_uid: bool = False) -> None:
        await self._transfer(command, by_uid, move=command.name == "MOVE")

    async def _transfer(self, command: Command, by_uid: bool, *, move: bool) -> None:
        selected = self._writable() if move else self.selected
        assert selected is not None
        sequence, target_name = _arguments(command, 2)
        uids = self._chosen(_atom_text(sequence), by_uid)
        name, mailbox = _folder_name(target_name), self._mailbox
        target = await self.access.read(lambda conn: store.find_folder(conn, mailbox, name))
        if target is None:
            raise _No(f"No folder {display_name(name)}", "TRYCREATE")
        source = selected.folder
        report = _junk_report(source.special_use, target.special_use)
        records = await self._records(uids) if report is not None and uids else []
        operation = store.move_messages if move else store.copy_messages
        pairs = await self.access.write(lambda conn: operation(conn, mailbox, source.id, uids, target.id))
        if report is not None and records:
            assert self.account is not None
            self.access.junk_report(self.account, records, report)
        code = None
        if pairs:
            sources = compact_uid_set(source_uid for source_uid, _ in pairs)
            targets = compact_uid_set(target_uid for _, target_uid in pairs)
            code = f"COPYUID {target.uidvalidity} {sources} {targets}"
        if move:
            if code:
                self._send(untagged_status("OK", "Moved", code))
            await self._remove(source_uid for source_uid, _ in pairs)
            await self._done(command, "MOVE completed")
            return
        await self._updates(expunges=_expunges_allowed(command))
        self._send(tagged(command.tag, "OK", "COPY completed", code))

    async def _search(self, command: Command, by_uid: bool = False) -> None:
        selected = self.selected
        assert selected is not None
        try:
            program = parse_search(command.arguments, utf8=False)
        except SearchError as error:
            if error.status == "NO":
                raise _No(str(error), error.code) from None
            raise _Bad(str(error)) from None
        if program.uses_modseq:
            self.condstore = True
        await self._updates(expunges=False)  # search what arrived too (the client is told of it first)
        positions = {uid: seq for seq, uid in enumerate(selected.uids, 1)}
        messages, highest_uid = len(selected.uids), selected.uids[-1] if selected.uids else 0
        matched: list[tuple[int, int]] = []  # (uid, modseq)
        folder_id = selected.folder.id
        cached = program.cached
        if program.needs == "none" or cached:
            # Flags, dates, sizes and cached header text: six columns a message, no octets; only the
            # messages without a header cache are read below.
            rows = await self.access.read(lambda conn: store.search_rows(conn, folder_id))
            lacking: list[int] = []
            reads_text = program.needs != "none"
            for uid, flags, internal_date, size, modseq, text in rows:
                seq = positions.get(uid)
                if seq is None:
                    continue  # arrived after `_updates`: the client does not know it yet
                if reads_text and not text:
                    lacking.append(uid)
                    continue
                subject = _Subject(seq, uid, flags, internal_date, size, modseq)
                if cached and text:
                    subject.cached = CachedHeaders(text)
                if program.matches(subject, messages=messages, highest_uid=highest_uid):
                    matched.append((uid, modseq))
            records = await self._records(lacking, structure=False) if lacking else []
        else:
            records = await self._records(selected.uids, structure=False)  # SEARCH reads no ENVELOPE
        uncached: list[store.MessageRecord] = []
        for start in range(0, len(records), READ_BATCH):
            batch = records[start : start + READ_BATCH]
            views = await self._views(batch, [program.needs] * len(batch))
            for record, view in zip(batch, views, strict=True):
                if view is not None and record.search_headers is None:
                    uncached.append(record)
                subject = _Subject(
                    positions[record.uid],
                    record.uid,
                    record.flags,
                    record.internal_date,
                    record.size,
                    record.modseq,
                )
                subject.loaded = view
                if program.matches(subject, messages=messages, highest_uid=highest_uid):
                    matched.append((record.uid, record.modseq))
        if uncached:
            self.access.cache_structure(folder_id, uncached)  # the next SEARCH reads no bytes
        matched.sort()
        found = [uid if by_uid else positions[uid] for uid, _ in matched]
        highest_modseq = max((modseq for _, modseq in matched), default=0)
        line = b"* SEARCH" + b"".join(b" %d" % number for number in found)
        if program.uses_modseq and found:
            line += b" (MODSEQ %d)" % highest_modseq
        self._send(line + b"\r\n")
        await self._done(command)


class _Subject:
    """One message as SEARCH sees it (`search.SearchSubject`)."""

    __slots__ = ("cached", "flags", "internal_date", "loaded", "modseq", "seq", "size", "uid")

    def __init__(
        self, seq: int, uid: int, flags: frozenset[str], internal_date: float, size: int, modseq: int
    ) -> None:
        self.seq = seq
        self.uid = uid
        self.flags = flags
        self.internal_date = internal_date
        self.size = size
        self.modseq = modseq
        self.loaded: MessageView | None = None  # the message's octets, when the search reads them
        self.cached: CachedHeaders | None = None  # its cached header text, when the search uses it

    def view(self) -> MessageView:
        assert self.loaded is not None, "SearchProgram.needs said the bytes were not needed"
        return self.loaded

    def header_value(self, name: str) -> list[str]:
        if self.cached is not None:
            return self.cached.header_value(name)
        return self.view().header_value(name)


def _junk_report(source: str, target: str) -> bool | None:
    """A junk report (True) into Junk, a not-junk report (False) out of it to anything but Trash."""
    if target == "\\Junk" and source != "\\Junk":
        return True
    if source == "\\Junk" and target not in ("\\Junk", "\\Trash"):
        return False
    return None


def _folder_code(error: store.FolderError) -> str | None:
    if isinstance(error, store.FolderExistsError):
        return "ALREADYEXISTS"
    if isinstance(error, store.NoSuchFolderError):
        return "NONEXISTENT"
    if isinstance(error, store.OverQuotaError):
        return "OVERQUOTA"
    return "CANNOT"


def _expunges_allowed(command: Command) -> bool:
    return command.name not in _COMMANDS_WITHOUT_EXPUNGE


def _no_arguments(command: Command) -> None:
    if command.arguments:
        raise _Bad(f"{command.name} takes no arguments")


def _arguments(command: Command, count: int) -> tuple[Argument, ...]:
    if len(command.arguments) != count:
        raise _Bad(f"{command.name} takes {count} argument(s)")
    return command.arguments


def _atom_text(argument: Argument) -> str:
    if not isinstance(argument, Atom):
        raise _Bad("Expected an atom")
    return argument.text


def _astring(argument: Argument) -> bytes:
    if isinstance(argument, Atom):
        return argument.text.encode("ascii")
    if isinstance(argument, String):
        return argument.octets
    raise _Bad("Expected a string")


def _mailbox_text(argument: Argument) -> str:
    """A folder name or pattern as the client wrote it, decoded from modified UTF-7."""
    try:
        return decode_name(_astring(argument).decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise _Bad("Invalid folder name (modified UTF-7, RFC 3501 §5.1.3)") from None


def _folder_name(argument: Argument) -> str:
    name = _mailbox_text(argument)
    if not name or any(ord(character) < 0x20 or character == "\x7f" for character in name):
        raise _Bad("Invalid folder name")
    return stored_name(name)


_SYSTEM_FLAGS = {flag.casefold(): flag for flag in store.SYSTEM_FLAGS}


def _flag(argument: Argument) -> str:
    """A flag from the client: a system flag in its usual case, or a keyword as given."""
    text = _atom_text(argument)
    if not text.startswith("\\"):
        return text
    flag = _SYSTEM_FLAGS.get(text.casefold())
    if flag is None:
        raise _Bad(
            f"{text[:32]} cannot be set" if text.casefold() == "\\recent" else f"Unknown flag {text[:32]}"
        )
    return flag


def _date_time(argument: String) -> float:
    """An APPEND date-time ("17-Jul-1996 02:44:25 -0700") as epoch seconds."""
    try:
        text = argument.octets.decode("ascii").strip()
        day_text, month_text, rest = text.split("-", 2)
        month = _MONTHS.index(month_text.capitalize()) + 1
        parsed = datetime.datetime.strptime(f"{int(day_text):02d}-{month:02d}-{rest}", "%d-%m-%Y %H:%M:%S %z")
    except (UnicodeDecodeError, ValueError):
        raise _Bad('Invalid date-time (like "17-Jul-1996 02:44:25 -0700")') from None
    return parsed.timestamp()


def _by_uid(handler: Callable[[ImapSession, Command, bool], Awaitable[None]]) -> _Handler:
    async def plain(session: ImapSession, command: Command) -> None:
        await handler(session, command, False)

    return plain


_HANDLERS: dict[str, tuple[frozenset[State], _Handler]] = {
    "CAPABILITY": (_ANY, ImapSession._capability),
    "NOOP": (_ANY, ImapSession._noop),
    "LOGOUT": (_ANY, ImapSession._logout),
    "ID": (_ANY, ImapSession._id),
    "STARTTLS": (_PRE_LOGIN, ImapSession._starttls_command),
    "LOGIN": (_PRE_LOGIN, ImapSession._login),
    "AUTHENTICATE": (_PRE_LOGIN, ImapSession._authenticate),
    "ENABLE": (_AUTHENTICATED, ImapSession._enable),
    "NAMESPACE": (_AUTHENTICATED, ImapSession._namespace),
    "SELECT": (_AUTHENTICATED, ImapSession._select),
    "EXAMINE": (_AUTHENTICATED, ImapSession._select),
    "CREATE": (_AUTHENTICATED, ImapSession._create),
    "DELETE": (_AUTHENTICATED, ImapSession._delete),
    "RENAME": (_AUTHENTICATED, ImapSession._rename),
    "SUBSCRIBE": (_AUTHENTICATED, ImapSession._subscribe),
    "UNSUBSCRIBE": (_AUTHENTICATED, ImapSession._subscribe),
    "LIST": (_AUTHENTICATED, ImapSession._list),
    "LSUB": (_AUTHENTICATED, ImapSession._list),
    "STATUS": (_AUTHENTICATED, ImapSession._status),
    "APPEND": (_AUTHENTICATED, ImapSession._append),
    "IDLE": (_AUTHENTICATED, ImapSession._idle),
    "GETQUOTAROOT": (_AUTHENTICATED, ImapSession._quota_root),
    "GETQUOTA": (_AUTHENTICATED, ImapSession._quota_command),
    "SETQUOTA": (_AUTHENTICATED, ImapSession._setquota),
    "CHECK": (_SELECTED, ImapSession._check),
    "CLOSE": (_SELECTED, ImapSession._close),
    "UNSELECT": (_SELECTED, ImapSession._unselect_command),
    "EXPUNGE": (_SELECTED, _by_uid(ImapSession._expunge)),
    "SEARCH": (_SELECTED, _by_uid(ImapSession._search)),
    "FETCH": (_SELECTED, _by_uid(ImapSession._fetch)),
    "STORE": (_SELECTED, _by_uid(ImapSession._store)),
    "COPY": (_SELECTED, _by_uid(ImapSession._copy)),
    "MOVE": (_SELECTED, _by_uid(ImapSession._copy)),
    "UID": (_SELECTED, ImapSession._uid),
}

_UID_HANDLERS: dict[str, Callable[[ImapSession, Command, bool], Awaitable[None]]] = {
    "FETCH": ImapSession._fetch,
    "SEARCH": ImapSession._search,
    "STORE": ImapSession._store,
    "COPY": ImapSession._copy,
    "MOVE": ImapSession._copy,
    "EXPUNGE": ImapSession._expunge,
}
