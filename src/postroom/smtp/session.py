"""The contract between the SMTP server and the application: one `SmtpSession` per connection.

The listener builds a session per accepted connection with the `SmtpSessionFactory` it was given, passing
the `ConnectionInfo`. It then calls the session's methods in protocol order and sends what they return:

    connect()                      -> None accepts (the 220 greeting follows); a Reply refuses and closes
    tls_started(info)              after STARTTLS or, on an implicit-TLS listener, right after connect()
    helo(name, extended)           -> None accepts (the server writes its EHLO keywords); a Reply refuses
    authenticate(credentials)      -> the reply to a completed AUTH exchange, only on a listener given an
                                      `AuthPolicy` (PLAIN or LOGIN, decoded and checked by the core):
                                      235 2.7.0 authenticates the session (MAIL is then accepted where
                                      the policy requires AUTH); 535 5.7.8 refuses; 454 4.7.0 refuses
                                      for now; a 421 refuses and closes. Every refusal counts toward
                                      `max_auth_failures` (then 421 4.7.0). STARTTLS forgets it.
    mail_from(sender, params)      -> the reply; positive opens the transaction (sender None is `<>`)
    rcpt_to(recipient, params)     -> the reply; positive adds the recipient
    rcpt_refused(recipient, reply) the server refused a RCPT itself (452 4.5.3 too many recipients)
    data(content)                  -> the final reply for the transaction: 250 only once the message is
                                      committed durably; 4xx/5xx otherwise
    data_refused(reply)            the server refused the message at its end (552 5.3.4, 550 5.6.11,
                                      550 5.6.0); `reset` follows
    reset()                        the open transaction ended (RSET, new EHLO, end of message, STARTTLS)
    close()                        the connection is gone; always called exactly once, last

Guarantees to the application: calls are never concurrent for one session; `data` receives the whole
message as a `MessageContent`, dot-unstuffed, with CRLF line ends, already within the listener's size,
line, bare-LF and NUL rules: in memory when it is small, else a spool file (`spool_threshold`) written
while it was received, with its size and SHA-256. The spool file is the server's: the session may move
it away during `data` (into the blob store); whatever is left of it is deleted when `data` returns.
Recipients arrive only after an accepted MAIL; `close` is called however the connection ends.

`credentials.password` is the client's secret: never log it (its repr leaves it out) and drop it once
`authenticate` has verified it.

Failure behaviour: an exception raised by an async method is logged by the server and the client is told
451 4.3.0 (421 4.3.0 at connect); the session goes on. The client never sees internal details.

Security: everything in `ConnectionInfo` and `TlsInfo` comes from the socket and the TLS stack, not from
the client's words (the client address from a PROXY header is taken only from a balancer the operator
listed as trusted: `[mx] trusted_proxies`); the HELO name, addresses and parameters do come from the
client and are only as trustworthy as their syntax, which the protocol core has already checked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from postroom.model.address import Address
from postroom.model.replies import Reply
from postroom.smtp.params import MailParams, RcptParams

__all__ = [
    "ConnectionInfo",
    "MailParams",
    "MessageContent",
    "RcptParams",
    "SaslCredentials",
    "SmtpSession",
    "SmtpSessionFactory",
    "TlsInfo",
]

_READ_SIZE = 1 << 20


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """Where a connection comes from and which listener took it.

    `peer_ip`/`peer_port` are the client's: the socket's peer, or, when that peer is a trusted balancer
    (then `proxy_ip`), the client its PROXY header named. Limits, filtering, trace and `Received` use
    `peer_ip` only; `local_ip`/`local_port` are the socket's own end on this node."""

    peer_ip: str
    peer_port: int
    local_ip: str
    local_port: int
    listener_name: str
    network: str  # the client network the listener's limits count it in (IPv4 /24, IPv6 /64 by default)
    proxy_ip: str = ""  # the trusted balancer the connection came through ("": a direct connection)


@dataclass(frozen=True, slots=True)
class TlsInfo:
    """The negotiated TLS: protocol version, cipher suite, and the client certificate when one was verified.

    `peer_subject` is the certificate subject as `CN=...,O=...`; `peer_sans` its subjectAltName entries
    as `DNS:name` / `IP Address:addr` strings. Both are empty when the client sent no verified certificate.
    """

    version: str
    cipher: str
    peer_subject: str | None = None
    peer_sans: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SaslCredentials:
    """What a client gave in a completed AUTH PLAIN or LOGIN exchange (RFC 4616, RFC 4954).

    `authzid` is the identity to act as ("" when the client gave none, as usual); `authcid` the login
    name; `password` the secret. All three come from the client and are only as trustworthy as that."""

    mechanism: str  # "PLAIN" or "LOGIN"
    authzid: str
    authcid: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class MessageContent:
    """A received message: its octets in memory (`data`), or in a spool file (`path`, with the SHA-256
    hex digest computed while it was written). `size` is the message size either way."""

    size: int
    data: bytes | None = field(default=None, repr=False)
    path: Path | None = None
    sha256: str | None = None

    @property
    def spooled(self) -> bool:
        return self.path is not None

    def head(self, limit: int) -> bytes:
        """At most the first `limit` octets (enough for the header section), without reading the rest."""
        if self.data is not None:
            return self.data[:limit]
        assert self.path is not None
        with self.path.open("rb") as spool:
            return spool.read(limit)

    def chunks(self) -> Iterator[bytes]:
        """The message in pieces of at most 1 MiB."""
        if self.data is not None:
            yield self.data
            return
        assert self.path is not None
        with self.path.open("rb") as spool:
            while chunk := spool.read(_READ_SIZE):
                yield chunk

    def read(self) -> bytes:
        """The whole message in memory (for small messages and tests; a spooled one is loaded whole)."""
        return self.data if self.data is not None else b"".join(self.chunks())


class SmtpSession(Protocol):
    """What the application implements for one connection (see the module docstring for the order)."""

    async def connect(self) -> Reply | None: ...

    async def tls_started(self, info: TlsInfo) -> None: ...

    async def helo(self, name: str, extended: bool) -> Reply | None: ...

    async def authenticate(self, credentials: SaslCredentials) -> Reply: ...

    async def mail_from(self, sender: Address | None, params: MailParams) -> Reply: ...

    async def rcpt_to(self, recipient: Address, params: RcptParams) -> Reply: ...

    async def rcpt_refused(self, recipient: Address, reply: Reply) -> None: ...

    async def data(self, content: MessageContent) -> Reply: ...

    def data_refused(self, reply: Reply) -> None: ...

    def reset(self) -> None: ...

    def close(self) -> None: ...


SmtpSessionFactory = Callable[[ConnectionInfo], SmtpSession]
