"""A Postroom-run SMTP sink: the project's own `SmtpListener` as a remote MTA that records and obeys.

`SmtpSink` listens on one loopback address (127.0.0.x) and port, records every message it accepts
(`messages`: sender, recipients, content, TLS version) and answers as the test commands through its
`behaviour`: a refusal at connect, at MAIL, per recipient (`recipients`), at the end of data (`data`),
or a 421 at MAIL once a connection has carried `close_after` messages. It counts connections (`connections`,
and the most open at once, `most_concurrent`). With `tls` it offers STARTTLS with that context; with
`hidden` it leaves those EHLO keywords out (8BITMIME, SMTPUTF8, PIPELINING, STARTTLS) to play an older
server.

*Security:* test code only; it listens on loopback and accepts anything.
"""

from __future__ import annotations

import socket
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from postroom.config.settings import ListenAddress, SmtpLimits
from postroom.model import replies
from postroom.model.address import Address
from postroom.model.replies import Reply
from postroom.smtp import MailParams, MemoryBudget, MessageContent, RcptParams, SmtpListener
from postroom.smtp.session import SaslCredentials, TlsInfo


@dataclass(frozen=True, slots=True)
class SunkMessage:
    sender: str
    recipients: tuple[str, ...]
    content: bytes
    tls: str  # the TLS version, "" for plaintext
    body_8bitmime: bool
    smtputf8: bool


@dataclass
class SinkBehaviour:
    """How the sink answers; tests change it between deliveries."""

    connect: Reply | None = None  # refuse at connect (a 4xx/5xx greeting)
    mail: Reply | None = None
    recipients: dict[str, Reply] = field(default_factory=dict)  # by lower-case address
    data: Reply | None = None  # the reply at the end of data; None: 250
    close_after: int | None = None  # 421 at the MAIL after this many messages in one connection


class _SinkSession:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink
        self.tls = ""
        self.sender = ""
        self.params: MailParams | None = None
        self.recipients: list[str] = []
        self.taken = 0

    async def connect(self) -> Reply | None:
        sink = self.sink
        sink.connections += 1
        sink.open_now += 1
        sink.most_concurrent = max(sink.most_concurrent, sink.open_now)
        return sink.behaviour.connect

    async def tls_started(self, info: TlsInfo) -> None:
        self.tls = info.version

    async def helo(self, name: str, extended: bool) -> Reply | None:
        self.sink.helo_names.append(name)
        return None

    async def authenticate(self, credentials: SaslCredentials) -> Reply:
        return replies.NOT_IMPLEMENTED

    async def mail_from(self, sender: Address | None, params: MailParams) -> Reply:
        behaviour = self.sink.behaviour
        if behaviour.close_after is not None and self.taken >= behaviour.close_after:
            return replies.SHUTTING_DOWN
        if behaviour.mail is not None:
            return behaviour.mail
        self.sender = str(sender) if sender else ""
        self.params = params
        return replies.SENDER_OK

    async def rcpt_to(self, recipient: Address, params: RcptParams) -> Reply:
        reply = self.sink.behaviour.recipients.get(str(recipient).lower())
        if reply is not None:
            return reply
        self.recipients.append(str(recipient))
        return replies.RECIPIENT_OK

    async def rcpt_refused(self, recipient: Address, reply: Reply) -> None:
        return None

    async def data(self, content: MessageContent) -> Reply:
        reply = self.sink.behaviour.data
        if reply is not None:
            return reply
        params = self.params
        self.sink.messages.append(
            SunkMessage(
                self.sender,
                tuple(self.recipients),
                content.read(),
                self.tls,
                body_8bitmime=params is not None and params.body == "8BITMIME",
                smtputf8=params is not None and params.smtputf8,
            )
        )
        self.taken += 1
        return replies.QUEUED.with_text(f"Queued as sink-{len(self.sink.messages)}")

    def data_refused(self, reply: Reply) -> None:
        return None

    def reset(self) -> None:
        self.sender, self.params, self.recipients = "", None, []

    def close(self) -> None:
        self.sink.open_now -= 1


class SmtpSink:
    """One sink on `host:port`; an async context manager."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        hostname: str = "sink.remote.test",
        tls: ssl.SSLContext | None = None,
        hidden: frozenset[str] = frozenset(),
    ) -> None:
        self.host = host
        self.port = port
        self.behaviour = SinkBehaviour()
        self.messages: list[SunkMessage] = []
        self.helo_names: list[str] = []
        self.connections = 0
        self.open_now = 0
        self.most_concurrent = 0
        self._spool = tempfile.TemporaryDirectory(prefix="postroom-sink-")
        self.listener = SmtpListener(
            "sink",
            (ListenAddress(host, port),),
            SmtpLimits(max_connections_per_ip=500, max_connections_per_prefix=500),
            hostname,
            lambda info: _SinkSession(self),
            ssl_context=tls,
            spool_dir=Path(self._spool.name),
            memory=MemoryBudget(64 * 1024 * 1024),
            hidden_extensions=hidden,
        )

    def reset(self) -> None:
        """Forget what was recorded and answer normally again."""
        self.behaviour = SinkBehaviour()
        self.messages.clear()
        self.helo_names.clear()
        self.connections = self.most_concurrent = 0

    async def start(self) -> SmtpSink:
        await self.listener.start()
        return self

    async def stop(self) -> None:
        await self.listener.stop(0.5)
        self._spool.cleanup()

    async def __aenter__(self) -> SmtpSink:
        return await self.start()

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` a moment ago; sinks on other 127.0.0.x addresses share it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])
