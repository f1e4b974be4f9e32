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

- **SRS bounces** (`routing.srs`): a recipient at the SRS domain whose local part starts `SRS0=` or
  `SRS1=` is decoded before anything else. It is accepted only when the hash verifies against the
  node's key and an SRS0 has not expired, and only from the null sender (a bounce, as postsrsd's
  reverse map is meant for: an SRS address seen in a forwarded message must not become a relay for
  anyone who read it); any other sender gets `550 5.7.1`. A forged, expired or malformed one gets
  `550 5.1.1` (it names no mailbox here). A decoded address in one of our verified accepted domains
  is resolved by these same rules (the result keeps the SRS address as the RCPT); any other goes
  back out: `Relayed` (Route.REMOTE), mail of no tenant (the SRS domain is the service's own).

This module is the one place the anti-relay rule lives: a client that is not authenticated (and,
later, not a connector that allows relaying) never gets a remote recipient accepted, except the
original sender of a bounce to a valid SRS address of ours (which we rewrote ourselves). Only the
submission endpoint passes `authenticated_tenant`, and only after a successful SMTP AUTH: its remote
recipients are `Relayed` for that tenant.

Security: the recipient is untrusted input, already parsed by `model.Address`; lookups are exact
key matches, never patterns.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from postroom.directory import AddressOwner, DirectoryView, DomainStatus, DomainType, RecipientKind
from postroom.model import Address, Reply, replies
from postroom.model.connectors import Source
from postroom.routing.srs import Srs, SrsError


class RejectReason(StrEnum):
    RELAY_DENIED = "relay-denied"
    UNVERIFIED_DOMAIN = "unverified-domain"
    UNKNOWN_RECIPIENT = "unknown-recipient"  # Directory Based Edge Blocking
    RECIPIENT_LIMIT = "recipient-limit"  # past the listener's max_recipients (refused by the SMTP core)
    SENDER_NOT_AUTHENTICATED = "sender-not-authenticated"  # a group that takes mail from inside only
    POSTMASTER_NOT_CONFIGURED = "postmaster-not-configured"
    RECIPIENT_SIZE = "recipient-size"  # MAIL's SIZE= is over the mailbox's receive limit
    SENDER_RECIPIENT_LIMIT = "sender-recipient-limit"  # past the sender's recipients per message
    SRS_INVALID = "srs-invalid"  # a forged, expired or malformed SRS address
    SRS_NOT_A_BOUNCE = "srs-not-a-bounce"  # a valid SRS address, but the sender is not <>
    IP_BLOCKED = "ip-blocked"  # the client IP is on the recipient's tenant's IP Block list
    BLOCKLISTED = "blocklisted"  # a DNS blocklist lists the client IP (and its tenant does not allow it)


@dataclass(frozen=True, slots=True)
class Accepted:
    recipient: Address
    owner: AddressOwner

    @property
    def tenant_id(self) -> int | None:
        return self.owner.tenant_id


@dataclass(frozen=True, slots=True)
class Relayed:
    """A recipient accepted to be sent on to a remote address (`target`): a remote recipient of an
    authenticated sender (target = recipient), or the original sender behind a bounce to an SRS address."""

    recipient: Address  # as given in RCPT
    target: Address  # where it goes
    tenant_id: int | None  # whose mail it is: the authenticated sender's tenant; None: the service's (SRS)


@dataclass(frozen=True, slots=True)
class Rejected:
    recipient: Address
    reply: Reply
    reason: RejectReason
    tenant_id: int | None  # the tenant whose domain it was, when known


Resolution = Accepted | Relayed | Rejected

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
    srs: Srs | None = None,
    null_sender: bool = False,
    authenticated_tenant: int | None = None,
    source: Source | None = None,
) -> Resolution:
    """Decide one RCPT. `sender_internal_to` is the tenant the sender is inside of (None on MX);
    `srs` decodes bounces to SRS addresses, which only the null sender (`null_sender`) may send;
    `authenticated_tenant` is the tenant of an SMTP AUTH sender (None: not authenticated, no relay);
    `source` is where the transaction comes from (its inbound connector attribution; None: nowhere
    special)."""
    if srs is not None and srs.names(recipient):
        return _resolve_srs(directory, recipient, srs, null_sender, sender_internal_to)
    if service_postmaster.names(recipient) and directory.domain(recipient.domain) is None:
        target = service_postmaster.address
        if target is not None and not service_postmaster.names(target):
            found = resolve_recipient(directory, target, sender_internal_to=sender_internal_to)
            if isinstance(found, Accepted):
                return Accepted(recipient, found.owner)
            if isinstance(found, Rejected) and found.reason is RejectReason.SENDER_NOT_AUTHENTICATED:
                # The postmaster takes mail from anyone, whatever its group's own restriction says.
                owner = directory.address(target.key)
                assert owner is not None
                return Accepted(recipient, owner)
        return Rejected(
            recipient, replies.POSTMASTER_NOT_CONFIGURED, RejectReason.POSTMASTER_NOT_CONFIGURED, None
        )
    domain = directory.domain(recipient.domain)
    # Another tenant's domain is a remote organization's: its mail leaves and comes back in through
    # the MX, as mail from outside would (its own rules, limits and trace apply there, not here).
    remote = (
        domain is None
        or domain.status is not DomainStatus.VERIFIED
        or domain.tenant_id != authenticated_tenant
    )
    if remote and authenticated_tenant is not None and not recipient.domain.startswith("["):
        # Remote domain: relaying is only ever for authenticated senders, on the submission port.
        return Relayed(recipient, recipient, authenticated_tenant)
    if domain is None:
        return Rejected(recipient, replies.UNABLE_TO_RELAY, RejectReason.RELAY_DENIED, None)
    if domain.status is not DomainStatus.VERIFIED:
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


def _resolve_srs(
    directory: DirectoryView, recipient: Address, srs: Srs, null_sender: bool, sender_internal_to: int | None
) -> Resolution:
    try:
        original = srs.reverse(recipient)
    except SrsError:
        return Rejected(recipient, replies.SRS_INVALID, RejectReason.SRS_INVALID, None)
    if not null_sender:
        return Rejected(recipient, replies.SRS_BOUNCES_ONLY, RejectReason.SRS_NOT_A_BOUNCE, None)
    if directory.domain(original.domain) is None:
        return Relayed(recipient, original, None)
    found = resolve_recipient(directory, original, sender_internal_to=sender_internal_to)
    if isinstance(found, Accepted):
        return Accepted(recipient, found.owner)
    if isinstance(found, Rejected):
        return Rejected(recipient, found.reply, found.reason, found.tenant_id)
    return Relayed(recipient, found.target, found.tenant_id)
