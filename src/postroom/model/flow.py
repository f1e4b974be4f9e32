"""Value types of a message's way through the node: routes, routed recipients, trace events.

They are what `routing` hands to `queue`, what `delivery` settles and what `trace` stores, so they
live here, below all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Route(StrEnum):
    LOCAL = "local"  # a mailbox of this service
    REMOTE = "remote"  # another server: by MX, or by an outbound connector


@dataclass(frozen=True, slots=True)
class RoutedRecipient:
    """One final recipient of a message and how it will be delivered."""

    recipient: str  # where the message goes
    original_recipient: str  # the trace row this delivery settles
    tenant_id: int | None
    route: Route
    mailbox_id: int | None = None
    also_settles: tuple[str, ...] = ()  # other RCPT rows that named the same final recipient
    # The MAIL FROM this recipient's copy leaves with; None: the message's own sender. A forward
    # rewritten by SRS carries its SRS address here.
    envelope_sender: str | None = None
    # Non-empty: the recipient failed while it was routed (a refused forward, a size over the
    # mailbox's limit). It is queued already failed, with this reply, and the queue's DSN round
    # tells the sender: one path for every failure, durable from the commit.
    failure: str = ""
    # Protection (issue 10): the headers of this recipient's copy (Authentication-Results, the
    # antispam report; prepended above the message's own prefix), the mailbox folder a local copy
    # goes into (Junk for spam), and a body of its own when an action rewrote it (prepend subject).
    headers: bytes = b""
    folder: str = "Inbox"
    blob_id: str = ""  # "": the message's blob (local copies only: the queue sends the message's)
    blob_size: int = 0  # the size of `blob_id`'s content
    # Connectors (issue 11): the outbound connector a remote copy leaves by (`queue_recipients.
    # connector_id`; its smart hosts or MX and its TLS settings), None: MX delivery.
    connector_id: int | None = None

    @property
    def trace_rows(self) -> tuple[str, ...]:
        return (self.original_recipient, *self.also_settles)


class TraceStatus(StrEnum):
    DELIVERED = "delivered"
    FAILED = "failed"
    PENDING = "pending"
    EXPANDED = "expanded"
    QUARANTINED = "quarantined"
    FILTERED_AS_SPAM = "filtered-as-spam"
    FORWARDED = "forwarded"  # a mailbox that forwards without keeping a copy: its mail went on


class EventKind(StrEnum):
    RECEIVE = "Receive"
    RESOLVE = "Resolve"
    EXPAND = "Expand"
    DELIVER = "Deliver"
    DEFER = "Defer"
    FAIL = "Fail"
    SUBMIT = "Submit"  # an authenticated client submitted the message
    SEND = "Send"  # handed to a remote server (host, IP, TLS, its reply)
    DSN = "DSN"  # a delivery status notification was generated for the recipient
    REDIRECT = "Redirect"  # forwarded to another address
    FILTER = "Filter"  # a protection verdict (authentication, connection, malware, spam) and its action
    QUARANTINE = "Quarantine"  # held in quarantine instead of delivered
    RELEASE = "Release"  # released from quarantine (to the Inbox) or deleted from it
    JUNK_REPORT = "JunkReport"  # its recipient moved it into Junk (spam) or out of it (not spam) over IMAP


@dataclass(frozen=True, slots=True)
class TraceEvent:
    message_id: str
    event: EventKind
    tenant_id: int | None
    recipient: str = ""
    detail: dict[str, object] = field(default_factory=dict)
    at: float = 0.0


@dataclass(frozen=True, slots=True)
class TraceRecipient:
    """The summary status of one recipient row of a message."""

    message_id: str
    tenant_id: int | None
    recipient: str  # the address as given (RCPT, group member)
    status: TraceStatus
    resolved: str = ""  # the mailbox, group or remote address it resolved to; "" when it resolved to none
