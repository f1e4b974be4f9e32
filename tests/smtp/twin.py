"""An in-memory twin of the application's `SmtpSession`: a post office that keeps what it accepts.

`MemoryPostOffice` is the `SmtpSessionFactory`; each connection gets a `MemorySession` that records the
calls it received (in order, in `calls`) and stores committed messages in the office's `messages`. Its
answers follow the recipient's or sender's local part, so tests choose an outcome by address:

- recipient `unknown@...` -> 550 5.1.10; recipient `boom@...` -> the session raises (the server must say
  451 4.3.0); recipient `closing@...` -> 421 (the server must close);
- sender `denied@...` -> 550 5.1.0; sender `crash@...` -> `data()` raises;
- anything else is accepted; `data()` waits `data_delay` seconds first (a slow durable commit).

`authenticate` accepts the office's one account (`USER`, `PASSWORD`) and keeps who logged in in
`logins` (mechanism, authzid, authcid); the user `closing@...` gets 421 (the server must close); any
other credentials get 535 5.7.8.

Refusals the server makes itself arrive through `rcpt_refused` and `data_refused`; the session keeps
them in `refusals` (reply code and enhanced code), and `data()` notes in `spooled` whether the message
came as a spool file.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field

from postroom.model import replies
from postroom.model.address import Address
from postroom.model.replies import Reply
from postroom.smtp import ConnectionInfo, MailParams, MessageContent, RcptParams, SaslCredentials, TlsInfo

USER = "alice@postroom.test"
PASSWORD = "correct horse battery staple"  # ASCII: smtplib encodes AUTH responses as ASCII


@dataclass(frozen=True, slots=True)
class StoredMessage:
    sender: Address | None
    recipients: tuple[Address, ...]
    content: bytes
    tls: TlsInfo | None
    helo: str | None


@dataclass
class MemorySession:
    office: MemoryPostOffice
    info: ConnectionInfo
    calls: list[str] = field(default_factory=list)
    tls: TlsInfo | None = None
    helo_name: str | None = None
    sender: Address | None = None
    recipients: list[Address] = field(default_factory=list)
    refusals: list[tuple[str, int, str | None]] = field(default_factory=list)
    spooled: list[bool] = field(default_factory=list)
    closed: bool = False

    async def connect(self) -> Reply | None:
        self.calls.append("connect")
        return self.office.refuse_connect

    async def tls_started(self, info: TlsInfo) -> None:
        self.calls.append("tls_started")
        self.tls = info

    async def helo(self, name: str, extended: bool) -> Reply | None:
        self.calls.append("ehlo" if extended else "helo")
        if name == "refused.example":
            return replies.SENDER_DENIED
        self.helo_name = name
        return None

    async def authenticate(self, credentials: SaslCredentials) -> Reply:
        self.calls.append("auth")
        if credentials.authcid == "closing@postroom.test":
            return replies.SHUTTING_DOWN
        if (credentials.authcid, credentials.password) != (USER, PASSWORD):
            return replies.AUTH_FAILED
        self.office.logins.append((credentials.mechanism, credentials.authzid, credentials.authcid))
        return replies.AUTH_SUCCEEDED

    async def mail_from(self, sender: Address | None, params: MailParams) -> Reply:
        self.calls.append("mail")
        if sender is not None and sender.local == "denied":
            return replies.SENDER_DENIED
        self.sender = sender
        return replies.SENDER_OK

    async def rcpt_to(self, recipient: Address, params: RcptParams) -> Reply:
        self.calls.append("rcpt")
        if recipient.local == "boom":
            raise RuntimeError("directory exploded")
        if recipient.local == "unknown":
            return replies.RECIPIENT_NOT_FOUND
        if recipient.local == "closing":
            return replies.SHUTTING_DOWN
        self.recipients.append(recipient)
        return replies.RECIPIENT_OK

    async def rcpt_refused(self, recipient: Address, reply: Reply) -> None:
        self.refusals.append((str(recipient), reply.code, reply.enhanced))

    async def data(self, content: MessageContent) -> Reply:
        self.calls.append("data")
        if self.sender is not None and self.sender.local == "crash":
            raise RuntimeError("spool full")
        if self.office.data_delay:
            await asyncio.sleep(self.office.data_delay)
        self.spooled.append(content.spooled)
        octets = content.read()
        assert len(octets) == content.size
        message = StoredMessage(self.sender, tuple(self.recipients), octets, self.tls, self.helo_name)
        self.office.messages.append(message)
        return replies.QUEUED.with_text(f"Queued as {next(self.office.ids)}")

    def data_refused(self, reply: Reply) -> None:
        self.refusals.append(("DATA", reply.code, reply.enhanced))

    def reset(self) -> None:
        self.calls.append("reset")
        self.sender = None
        self.recipients = []

    def close(self) -> None:
        self.calls.append("close")
        self.closed = True


@dataclass
class MemoryPostOffice:
    refuse_connect: Reply | None = None
    data_delay: float = 0.0
    messages: list[StoredMessage] = field(default_factory=list)
    logins: list[tuple[str, str, str]] = field(default_factory=list)
    sessions: list[MemorySession] = field(default_factory=list)
    ids: itertools.count[int] = field(default_factory=itertools.count)

    def __call__(self, info: ConnectionInfo) -> MemorySession:
        session = MemorySession(self, info)
        self.sessions.append(session)
        return session
