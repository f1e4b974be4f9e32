"""SMTP: the server (a sans-IO protocol core, the asyncio listener around it, the session contract)
and the outbound client connection (`smtp.client`, which `delivery.remote` drives).

The public face: `SmtpListener` (bind, serve, drain; `AuthPolicy` when it offers SMTP AUTH,
`ClientCertificates` when STARTTLS asks for a client certificate), the
`SmtpSession` protocol the application implements per connection with its values (`ConnectionInfo`,
`TlsInfo`, `MailParams`, `RcptParams`, `MessageContent`, `SaslCredentials`), `TrustedProxies` for a
listener behind load balancers that speak the PROXY protocol (`smtp.proxy_protocol`),
and `SmtpServerProtocol` with its events for whoever drives SMTP without sockets (tests, other
transports). Each module's docstring states its guarantees; the smuggling rules are in `protocol`.
"""

from postroom.smtp.client_certificates import ClientCertificates
from postroom.smtp.params import MailParams, RcptParams
from postroom.smtp.protocol import (
    AuthReceived,
    ConnectionClosing,
    Decision,
    Event,
    HeloReceived,
    MailFromReceived,
    MessageReceived,
    MessageRefused,
    ProtocolUsageError,
    RcptToReceived,
    RecipientRefused,
    SmtpServerProtocol,
    StartTlsRequested,
    TransactionReset,
)
from postroom.smtp.proxy_protocol import TrustedProxies
from postroom.smtp.sasl import AuthPolicy
from postroom.smtp.server import MemoryBudget, SmtpListener
from postroom.smtp.session import (
    ConnectionInfo,
    MessageContent,
    SaslCredentials,
    SmtpSession,
    SmtpSessionFactory,
    TlsInfo,
)

__all__ = [
    "AuthPolicy",
    "AuthReceived",
    "ClientCertificates",
    "ConnectionClosing",
    "ConnectionInfo",
    "Decision",
    "Event",
    "HeloReceived",
    "MailFromReceived",
    "MailParams",
    "MemoryBudget",
    "MessageContent",
    "MessageReceived",
    "MessageRefused",
    "ProtocolUsageError",
    "RcptParams",
    "RcptToReceived",
    "RecipientRefused",
    "SaslCredentials",
    "SmtpListener",
    "SmtpServerProtocol",
    "SmtpSession",
    "SmtpSessionFactory",
    "StartTlsRequested",
    "TlsInfo",
    "TransactionReset",
    "TrustedProxies",
]
