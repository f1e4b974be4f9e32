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

For an authenticated sender (`authenticated_tenant`: the tenant of the mailbox an SMTP AUTH session
logged in as) the rows "pending accepted domain" and "any other domain" accept instead: the
recipient is remote (`Accepted.owner` None), the sender's tenant's mail. Address literals stay
refused for everyone.

Two rows come before the table's "unknown recipient" column:

- **Postmaster** (RFC 5321 §4.5.1). `postmaster@` any verified accepted domain that has no such
  mailbox or alias is accepted for the tenant's postmaster (`DirectoryView.postmaster`: the chosen
  mailbox or group, else the tenant's first mailbox). The bare `<postmaster>` (which the SMTP core
  qualifies with the node's host name) goes to the service operator's postmaster
  (`ServicePostmaster`, `[service] postmaster`), resolved by these same rules; when that address is
  not hosted here the RCPT gets `451 4.3.5` (the node is misconfigured; the sender retries).
- **Group delivery restriction** (spec §8, `RequireSenderAuthenticationEnabled`): a group accepts
  mail only from senders inside its organization unless it allows external senders; others get
  `550 5.7.133`. Whether the sender is inside is the session's fact (`sender_internal_to`: the
  tenant an authenticated sender or an inbound connector belongs to); on the MX endpoint it is None.

This module is the one place the anti-relay rule lives: a client that is not authenticated (and,
later, not a connector that allows relaying) never gets a remote recipient accepted. Only the
submission endpoint passes `authenticated_tenant`, and only after a successful SMTP AUTH.

Security: the recipient is untrusted input, already parsed by `model.Address`; lookups are exact
key matches, never patterns.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from postroom.directory import AddressOwner, DirectoryView, DomainStatus, DomainType, RecipientKind
from postroom.model import Address, Reply, replies


class RejectReason(StrEnum):
    RELAY_DENIED = "relay-denied"
    UNVERIFIED_DOMAIN = "unverified-domain"
    UNKNOWN_RECIPIENT = "unknown-recipient"  # Directory Based Edge Blocking
    RECIPIENT_LIMIT = "recipient-limit"  # past the listener's max_recipients (refused by the SMTP core)
    SENDER_NOT_AUTHENTICATED = "sender-not-authenticated"  # a group that takes mail from inside only
    POSTMASTER_NOT_CONFIGURED = "postmaster-not-configured"
    RECIPIENT_SIZE = "recipient-size"  # MAIL's SIZE= is over the mailbox's receive limit
    SENDER_RECIPIENT_LIMIT = "sender-recipient-limit"  # past the sender's recipients per message


@dataclass(frozen=True, slots=True)
class Accepted:
    recipient: Address
    owner: AddressOwner | None  # None: a remote recipient, relayed for an authenticated sender
    relayed_for: int | None = None  # the authenticated sender's tenant, for a remote recipient

    @property
    def tenant_id(self) -> int:
        """Whose mail this recipient is: the owner's tenant, or the authenticated sender's."""
        if self.owner is not None:
            return self.owner.tenant_id
        assert self.relayed_for is not None
        return self.relayed_for


@dataclass(frozen=True, slots=True)
class Rejected:
    recipient: Address
    reply: Reply
    reason: RejectReason
    tenant_id: int | None  # the tenant whose domain it was, when known


Resolution = Accepted | Rejected

POSTMASTER = "postmaster"


@dataclass(frozen=True, slots=True)
class ServicePostmaster:
    """Where the bare `<postmaster>` goes: `hosts` are the names the SMTP core qualifies it with."""

    hosts: frozenset[str]
    address: Address | None  # None: not configured

    def names(self, recipient: Address) -> bool:
        return recipient.local.lower() == POSTMASTER and recipient.domain in self.hosts


NO_SERVICE_POSTMASTER = ServicePostmaster(frozenset(), None)


def resolve_recipient(
    directory: DirectoryView,
    recipient: Address,
    *,
    sender_internal_to: int | None = None,
    service_postmaster: ServicePostmaster = NO_SERVICE_POSTMASTER,
    authenticated_tenant: int | None = None,
) -> Resolution:
    """Decide one RCPT. `sender_internal_to` is the tenant the sender is inside of (None on MX);
    `authenticated_tenant` the tenant of an SMTP AUTH sender (None: not authenticated, no relay)."""
    if service_postmaster.names(recipient) and directory.domain(recipient.domain) is None:
        target = service_postmaster.address
        if target is not None and not service_postmaster.names(target):
            found = resolve_recipient(directory, target, sender_internal_to=sender_internal_to)
            if isinstance(found, Accepted):
                return Accepted(recipient, found.owner)
            if found.reason is RejectReason.SENDER_NOT_AUTHENTICATED:
                # The postmaster takes mail from anyone, whatever its group's own restriction says.
                owner = directory.address(target.key)
                assert owner is not None
                return Accepted(recipient, owner)
        return Rejected(
            recipient, replies.POSTMASTER_NOT_CONFIGURED, RejectReason.POSTMASTER_NOT_CONFIGURED, None
        )
    domain = directory.domain(recipient.domain)
    if domain is None or domain.status is not DomainStatus.VERIFIED:
        # Remote domain: relaying is only ever for authenticated senders, on the submission port.
        if authenticated_tenant is not None and not recipient.domain.startswith("["):
            return Accepted(recipient, None, relayed_for=authenticated_tenant)
        if domain is None:
            return Rejected(recipient, replies.UNABLE_TO_RELAY, RejectReason.RELAY_DENIED, None)
        return Rejected(recipient, replies.UNABLE_TO_RELAY, RejectReason.UNVERIFIED_DOMAIN, domain.tenant_id)
    owner = directory.address(recipient.key)
    if owner is None and recipient.local.lower() == POSTMASTER:
        # The tenant's postmaster takes mail from anyone, whatever its own restrictions say.
        postmaster = directory.postmaster(domain.tenant_id)
        if postmaster is not None:
            return Accepted(recipient, postmaster)
    if owner is not None:
        if (
            owner.kind is RecipientKind.GROUP
            and sender_internal_to != owner.tenant_id
            and not directory.allows_external_senders(owner.recipient_id)
        ):
            return Rejected(
                recipient,
                replies.GROUP_SENDER_NOT_AUTHENTICATED,
                RejectReason.SENDER_NOT_AUTHENTICATED,
                owner.tenant_id,
            )
        return Accepted(recipient, owner)
    if domain.type is DomainType.INTERNAL_RELAY:
        # Relayed to the on-premises connector once connectors exist; with none, nothing can take it.
        return Rejected(
            recipient, replies.RECIPIENT_ACCESS_DENIED, RejectReason.UNKNOWN_RECIPIENT, domain.tenant_id
        )
    return Rejected(
        recipient, replies.RECIPIENT_ACCESS_DENIED, RejectReason.UNKNOWN_RECIPIENT, domain.tenant_id
    )
