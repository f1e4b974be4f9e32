"""The contract between the SMTP server and the application: one `SmtpSession` per connection.

The listener builds a session per accepted connection with the `SmtpSessionFactory` it was given, passing
the `ConnectionInfo`. It then calls the session's methods in protocol order and sends what they return:

    connect()                      -> None accepts (the 220 greeting follows); a Reply refuses and closes
    tls_started(info)              after STARTTLS or, on an implicit-TLS listener, right after connect()
    helo(name, extended)           -> None accepts (the server writes its EHLO keywords); a Reply refuses
    mail_from(sender, params)      -> the reply; positive opens the transaction (sender None is `<>`)
    rcpt_to(recipient, params)     -> the reply; positive adds the recipient
    data(content)                  -> the final reply for the transaction: 250 only once the message is
                                      committed durably; 4xx/5xx otherwise
    reset()                        the open transaction ended (RSET, new EHLO, end of message, STARTTLS)
    close()                        the connection is gone; always called exactly once, last

Guarantees to the application: calls are never concurrent for one session; `data` receives the whole
message, dot-unstuffed, with CRLF line ends, already within the listener's size, line and bare-LF rules;
recipients arrive only after an accepted MAIL; `close` is called however the connection ends.

Failure behaviour: an exception raised by an async method is logged by the server and the client is told
451 4.3.0 (421 4.3.0 at connect); the session goes on. The client never sees internal details.

Security: everything in `ConnectionInfo` and `TlsInfo` comes from the socket and the TLS stack, not from
the client's words; the HELO name, addresses and parameters do come from the client and are only as
trustworthy as their syntax, which the protocol core has already checked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from postroom.model.address import Address
from postroom.model.replies import Reply
from postroom.smtp.params import MailParams, RcptParams

__all__ = ["ConnectionInfo", "MailParams", "RcptParams", "SmtpSession", "SmtpSessionFactory", "TlsInfo"]


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """Where a connection comes from and which listener took it."""

    peer_ip: str
    peer_port: int
    local_ip: str
    local_port: int
    listener_name: str


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


class SmtpSession(Protocol):
    """What the application implements for one connection (see the module docstring for the order)."""

    async def connect(self) -> Reply | None: ...

    async def tls_started(self, info: TlsInfo) -> None: ...

    async def helo(self, name: str, extended: bool) -> Reply | None: ...

    async def mail_from(self, sender: Address | None, params: MailParams) -> Reply: ...

    async def rcpt_to(self, recipient: Address, params: RcptParams) -> Reply: ...

    async def data(self, content: bytes) -> Reply: ...

    def reset(self) -> None: ...

    def close(self) -> None: ...


SmtpSessionFactory = Callable[[ConnectionInfo], SmtpSession]
