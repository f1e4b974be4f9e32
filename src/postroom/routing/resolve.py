"""Recipient resolution at RCPT time: accept, or reject with the reply that says why.

The routing table is total: every recipient gets exactly one outcome.

| recipient's domain                        | known recipient | unknown recipient            |
|-------------------------------------------|-----------------|------------------------------|
| verified accepted domain, Authoritative   | accept          | 550 5.4.1 (DBEB)             |
| verified accepted domain, InternalRelay   | accept          | 550 5.4.1 until an outbound  |
|                                           |                 | on-premises connector exists |
| pending (unverified) accepted domain      | 550 5.7.1 Unable to relay      |                  |
| any other domain                          | 550 5.7.1 Unable to relay (unauthenticated)        |
| address literal ([192.0.2.1])             | 550 5.7.1 Unable to relay      |                  |

This module is the one place the anti-relay rule lives: a client that is not authenticated (and,
later, not a connector that allows relaying) never gets a remote recipient accepted.

Security: the recipient is untrusted input, already parsed by `model.Address`; lookups are exact
key matches, never patterns.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from postroom.directory import AddressOwner, DirectoryView, DomainStatus, DomainType
from postroom.model import Address, Reply, replies


class RejectReason(StrEnum):
    RELAY_DENIED = "relay-denied"
    UNVERIFIED_DOMAIN = "unverified-domain"
    UNKNOWN_RECIPIENT = "unknown-recipient"  # Directory Based Edge Blocking
    RECIPIENT_LIMIT = "recipient-limit"  # past the listener's max_recipients (refused by the SMTP core)


@dataclass(frozen=True, slots=True)
class Accepted:
    recipient: Address
    owner: AddressOwner


@dataclass(frozen=True, slots=True)
class Rejected:
    recipient: Address
    reply: Reply
    reason: RejectReason
    tenant_id: int | None  # the tenant whose domain it was, when known


Resolution = Accepted | Rejected


def resolve_recipient(directory: DirectoryView, recipient: Address) -> Resolution:
    """Decide one RCPT from an unauthenticated client (the MX endpoint)."""
    domain = directory.domain(recipient.domain)
    if domain is None:
        # Remote domain: relaying is only ever for authenticated senders, on the submission port.
        return Rejected(recipient, replies.UNABLE_TO_RELAY, RejectReason.RELAY_DENIED, None)
    if domain.status is not DomainStatus.VERIFIED:
        return Rejected(recipient, replies.UNABLE_TO_RELAY, RejectReason.UNVERIFIED_DOMAIN, domain.tenant_id)
    owner = directory.address(recipient.key)
    if owner is not None:
        return Accepted(recipient, owner)
    if domain.type is DomainType.INTERNAL_RELAY:
        # Relayed to the on-premises connector once connectors exist; with none, nothing can take it.
        return Rejected(
            recipient, replies.RECIPIENT_ACCESS_DENIED, RejectReason.UNKNOWN_RECIPIENT, domain.tenant_id
        )
    return Rejected(
        recipient, replies.RECIPIENT_ACCESS_DENIED, RejectReason.UNKNOWN_RECIPIENT, domain.tenant_id
    )
