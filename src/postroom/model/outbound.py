"""Value types of outbound delivery: what the queue hands the remote delivery agent, what the agent
answers per recipient, and the per-destination settings the agent applies (remote domains, DKIM).

The queue's scheduler leases due recipients and groups them into `DeliveryAttempt`s: one message,
one envelope sender and one destination domain each. `delivery.remote` delivers a batch of attempts
for one destination (reusing connections) and answers one `RecipientResult` per recipient; the
queue settles each by its reply (2xx delivered, 4xx deferred, 5xx failed). Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from postroom.model.replies import Reply


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """A spooled message as the remote agent needs it: its body is `prefix` + the blob's octets."""

    id: str  # the internal message id (also the trace id)
    blob_id: str
    prefix: bytes  # headers the node added on receipt (Received), sent before the blob
    size: int
    received_at: float
    tenant_id: int | None  # the organization it is sent on behalf of (DKIM, remote domains)


@dataclass(frozen=True, slots=True)
class OutboundRecipient:
    queue_id: int  # the queue row this recipient settles
    recipient: str  # RCPT TO
    original_recipient: str  # the trace row
    attempts: int  # attempts before this one


@dataclass(frozen=True, slots=True)
class DeliveryAttempt:
    """One message to some recipients at one destination domain, with one envelope sender."""

    destination: str  # the recipients' domain (lower case, ASCII), whose MX is asked
    sender: str  # MAIL FROM; "" for the null sender <>
    message: OutboundMessage
    recipients: tuple[OutboundRecipient, ...]
    connector_id: int | None = None  # the outbound connector the recipients leave by; None: by MX


@dataclass(frozen=True, slots=True)
class RecipientResult:
    """How one recipient of an attempt ended: the reply decides (2xx, 4xx, 5xx)."""

    queue_id: int
    reply: Reply  # the remote server's reply, or one the agent made (no MX, TLS policy, timeout)
    remote_host: str = ""  # the MX host name talked to, "" when none was reached
    remote_ip: str = ""
    tls: str = ""  # the negotiated TLS version, "" for none


class ContentType(StrEnum):
    """Remote domain `ContentType`: what body parts a message to that domain carries."""

    MIME_HTML_TEXT = "mime-html-text"  # as sent (the default)
    MIME_TEXT = "mime-text"  # text only: HTML parts are converted to text
    MIME_HTML = "mime-html"  # HTML only: text parts are converted to HTML


@dataclass(frozen=True, slots=True)
class RemoteDomainSettings:
    """The settings of one remote domain (spec §7) that apply to outbound mail; the defaults are the
    built-in Default remote domain's (`*`)."""

    pattern: str = "*"  # "*", "example.com" or "*.example.com"
    auto_reply: bool = True  # automatic replies (out of office) may go there
    auto_forward: bool = True  # automatic forwarding (mailbox forwarding, inbox rules) may go there
    oof_type: str = "external"  # external | external-legacy | internal-legacy | none
    delivery_reports: bool = True
    ndr: bool = True  # non-delivery reports may go there
    content_type: ContentType = ContentType.MIME_HTML_TEXT
    line_wrap: int = 0  # 0: unlimited; else 1..132 octets per text line
    charset: str = ""  # for messages that declare none; "" leaves them alone


@dataclass(frozen=True, slots=True)
class DkimSigner:
    """The key a domain signs outbound mail with (its active selector)."""

    domain: str
    selector: str
    private_key_pem: str
