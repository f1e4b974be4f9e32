"""Recipient resolution at RCPT time: accept, or reject with the reply that says why.

The routing table is total: every recipient gets exactly one outcome.

| recipient's domain                        | known recipient | unknown recipient                      |
|-------------------------------------------|-----------------|----------------------------------------|
| verified accepted domain, Authoritative   | accept          | 550 5.4.1 (DBEB)                       |
| verified accepted domain, InternalRelay   | accept          | relayed: to the tenant's on-premises   |
|                                           |                 | outbound connector, else by MX when    |
|                                           |                 | the MX is not this service; else       |
|                                           |                 | 550 5.4.1; from the tenant's own       |
|                                           |                 | on-premises connector 550 5.4.1 (loop) |
| pending (unverified) accepted domain      | 550 5.7.1 Unable to relay                                |
| any other domain                          | 550 5.7.1 Unable to relay (unauthenticated, no connector) |
| address literal ([192.0.2.1])             | 550 5.7.1 Unable to relay, whoever asks                  |

**Inbound connectors** (spec §3.4, §3.6): `source` is where the transaction comes from, with its
attribution to a tenant T's OnPremises inbound connector (`model.connectors.attribute`, at MAIL).
For a recipient outside T's verified accepted domains (the internet, a pending domain, another
tenant's domain):

- attributed to T, and the sender's domain is a verified domain of T (rule (a)): relayed for T;
- attributed to T by its client certificate, whose CN/SAN is (or is under) a verified domain of T
  (rule (b)): relayed for T, also for the null sender (on-premises NDRs) and any sender domain;
- attributed to T, neither (a) nor (b), or the null sender without (b):
  `550 5.7.64 Relay Access Denied ATTR36`;
- not attributed, and the sender's domain is a verified domain of a tenant that has an OnPremises
  inbound connector (the client's IP or certificate no longer matches it: drift):
  `550 5.7.64 TenantAttribution; Relay Access Denied`;
- not attributed, anything else: `550 5.7.1 Unable to relay`.

A recipient in another tenant's verified domain that the rule does not relay is that organization's
inbound mail, decided as from outside (the table above). One relayed leaves and comes back in
through the MX, as mail between tenants always does. Devices: direct send (no connector) reaches the
tenant's own recipients only; SMTP relay over an IP or certificate OnPremises connector reaches
external recipients too.

**Partner connectors** (spec §3.4): a recipient of tenant T accepted from a source not attributed
to T is held to T's Partner connector that covers the sender's domain (`partner_for`: exact, then
wildcard, then `*`, the null sender counts as any domain): its `require_tls` (the session is TLS),
`restrict_domains_to_ips` (the client's IP is one of the connector's) and
`restrict_domains_to_certificate` (the verified client certificate matches its name). Mail that does
not meet them gets `550 5.7.51` (TenantInboundAttribution): mail that bypasses a third-party filter
in front of the tenant is refused.

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
  tenant an authenticated sender belongs to, or whose OnPremises connector the connection is
  attributed to when the sender's domain is that tenant's); otherwise None.

- **SRS bounces** (`routing.srs`): a recipient at the SRS domain whose local part starts `SRS0=` or
  `SRS1=` is decoded before anything else. It is accepted only when the hash verifies against the
  node's key and an SRS0 has not expired, and only from the null sender (a bounce, as postsrsd's
  reverse map is meant for: an SRS address seen in a forwarded message must not become a relay for
  anyone who read it); any other sender gets `550 5.7.1`. A forged, expired or malformed one gets
  `550 5.1.1` (it names no mailbox here). A decoded address in one of our verified accepted domains
  is resolved by these same rules (the result keeps the SRS address as the RCPT); any other goes
  back out: `Relayed` (Route.REMOTE), mail of no tenant (the SRS domain is the service's own).

Internal-relay domains without an on-premises outbound connector: whether the domain's MX points
elsewhere is a DNS question, which this pure function does not ask. It answers
`INTERNAL_RELAY_UNROUTED` (550 5.4.1); the caller (the MX session, `postroom explain`) may look the
MX up and, when none of its hosts is this service, ask again with the domain in `mx_elsewhere`.

This module is the one place the anti-relay rule lives: a client that is neither authenticated nor
attributed to an OnPremises connector that meets the rule above never gets a remote recipient
accepted, except the original sender of a bounce to a valid SRS address of ours (which we rewrote
ourselves). Only the submission endpoint passes `authenticated_tenant`, and only after a successful
SMTP AUTH: its remote recipients are `Relayed` for that tenant.

Security: the recipient is untrusted input, already parsed by `model.Address`; lookups are exact
key matches, never patterns. The attribution (`Source`) comes from the socket's address and a client
certificate the node verified, never from the client's words; the sender's domain only picks among
the connectors those matched, and only its verified owner passes rule (a).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import StrEnum

from postroom.directory import (
    AcceptedDomain,
    AddressOwner,
    DirectoryView,
    DomainStatus,
    DomainType,
    RecipientKind,
)
from postroom.model import Address, Reply, replies
from postroom.model.connectors import (
    ConnectorType,
    InboundConnector,
    Source,
    certificate_matches,
    choose_outbound,
    partner_for,
)
from postroom.model.ipfilter import client_address
from postroom.routing.srs import Srs, SrsError

MAX_CERTIFICATE_NAMES = 20  # names of a client certificate looked up for the anti-relay rule's (b)


class RejectReason(StrEnum):
    RELAY_DENIED = "relay-denied"
    UNVERIFIED_DOMAIN = "unverified-domain"
    UNKNOWN_RECIPIENT = "unknown-recipient"  # Directory Based Edge Blocking
    RECIPIENT_LIMIT = "recipient-limit"  # past the listener's max_recipients (refused by the SMTP core)
    SENDER_NOT_AUTHENTICATED = "sender-not-authenticated"  # a group that takes mail from inside only
    POSTMASTER_NOT_CONFIGURED = "postmaster-not-configured"
    RECIPIENT_SIZE = "recipient-size"  # MAIL's SIZE= is over the mailbox's receive limit
    MAILBOX_FULL = "mailbox-full"  # the mailbox is at or over its quota (refused by the endpoint)
    SENDER_RECIPIENT_LIMIT = "sender-recipient-limit"  # past the sender's recipients per message
    SRS_INVALID = "srs-invalid"  # a forged, expired or malformed SRS address
    SRS_NOT_A_BOUNCE = "srs-not-a-bounce"  # a valid SRS address, but the sender is not <>
    IP_BLOCKED = "ip-blocked"  # the client IP is on the recipient's tenant's IP Block list
    BLOCKLISTED = "blocklisted"  # a DNS blocklist lists the client IP (and its tenant does not allow it)
    # Inbound connectors (spec §3.4, §3.6):
    RELAY_ACCESS_DENIED = "relay-access-denied"  # attributed on-premises, neither rule (a) nor (b): ATTR36
    TENANT_ATTRIBUTION = "tenant-attribution"  # the sender's tenant has on-premises connectors; none matched
    PARTNER_RESTRICTED = "partner-restricted"  # the recipient's tenant's Partner connector refuses it
    INTERNAL_RELAY_LOOP = "internal-relay-loop"  # unknown in an internal-relay domain, from its on-premises
    INTERNAL_RELAY_UNROUTED = "internal-relay-unrouted"  # unknown there, no connector, MX not known elsewhere


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
    mx_elsewhere: Collection[str] = frozenset(),
) -> Resolution:
    """Decide one RCPT. `sender_internal_to` is the tenant the sender is inside of (None on MX);
    `srs` decodes bounces to SRS addresses, which only the null sender (`null_sender`) may send;
    `authenticated_tenant` is the tenant of an SMTP AUTH sender (None: not authenticated, no relay);
    `source` is where the transaction comes from (its inbound connector attribution; None: nowhere
    special: no connector relays, no Partner restriction applies); `mx_elsewhere` holds the
    internal-relay domains (ASCII, lower case) whose MX the caller found not to be this service."""
    if srs is not None and srs.names(recipient):
        return _resolve_srs(directory, recipient, srs, null_sender, sender_internal_to)
    found = _resolve(
        directory,
        recipient,
        sender_internal_to,
        service_postmaster,
        null_sender,
        authenticated_tenant,
        source,
        mx_elsewhere,
    )
    if source is not None and authenticated_tenant is None:
        return _partner_restrictions(directory, found, source)
    return found


def _resolve(
    directory: DirectoryView,
    recipient: Address,
    sender_internal_to: int | None,
    service_postmaster: ServicePostmaster,
    null_sender: bool,
    authenticated_tenant: int | None,
    source: Source | None,
    mx_elsewhere: Collection[str],
) -> Resolution:
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
        # Remote domain: relaying is for authenticated senders, on the submission port, ...
        return Relayed(recipient, recipient, authenticated_tenant)
    if source is not None and authenticated_tenant is None:
        # ... and for an on-premises source of a tenant that meets the anti-relay rule.
        relayed = _connector_relay(directory, recipient, domain, source, null_sender)
        if relayed is not None:
            return relayed
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
        return _internal_relay(directory, recipient, domain, source, mx_elsewhere)
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


def _tenant_of(directory: DirectoryView, domain_name: str) -> int | None:
    """The tenant whose verified accepted domain `domain_name` is, or None ("" is nobody's)."""
    if not domain_name or domain_name.startswith("["):
        return None
    domain = directory.domain(domain_name)
    return domain.tenant_id if domain is not None and domain.status is DomainStatus.VERIFIED else None


def _has_on_premises_connector(directory: DirectoryView, tenant_id: int) -> bool:
    connectors = directory.inbound_connectors().of_tenant(tenant_id)
    return any(c.type is ConnectorType.ON_PREMISES for c in connectors)


def names_tenant_domain(directory: DirectoryView, names: Sequence[str], tenant_id: int) -> bool:
    """Whether a client certificate naming `names` names a verified domain of the tenant: a name that
    is one (`*.contoso.com` counts as contoso.com) or lies under one (`mail.contoso.com`): spec §3.6
    (b). A CA vouched for the name, so its holder holds that part of the tenant's domain."""
    for name in names[:MAX_CERTIFICATE_NAMES]:
        labels = name.lower().rstrip(".").removeprefix("*.").split(".")
        for start in range(len(labels) - 1):
            if _tenant_of(directory, ".".join(labels[start:])) == tenant_id:
                return True
    return False


def _connector_relay(
    directory: DirectoryView,
    recipient: Address,
    domain: AcceptedDomain | None,
    source: Source,
    null_sender: bool,
) -> Resolution | None:
    """The anti-relay rule of spec §3.6 for a recipient outside the verified domains of the source's
    tenant: Relayed or refused; None where it does not decide (the tenant's own recipients, and
    another tenant's recipients it does not relay: that organization's inbound mail)."""
    tenant = source.on_premises_tenant
    hosted = domain is not None and domain.status is DomainStatus.VERIFIED
    literal = recipient.domain.startswith("[")
    if tenant is None:
        if hosted or literal:
            return None
        owner = _tenant_of(directory, source.sender_domain)
        if owner is not None and _has_on_premises_connector(directory, owner):
            # The sender's organization relays through an on-premises connector, but this client
            # matched none of them: its IP or certificate changed (drift). Said so, still refused.
            return Rejected(
                recipient, replies.TENANT_ATTRIBUTION_DENIED, RejectReason.TENANT_ATTRIBUTION, owner
            )
        return None
    if hosted and domain is not None and domain.tenant_id == tenant:
        return None
    if literal:
        return Rejected(recipient, replies.UNABLE_TO_RELAY, RejectReason.RELAY_DENIED, tenant)
    by_certificate = source.attribution.by_certificate and names_tenant_domain(
        directory, source.certificate, tenant
    )
    if by_certificate or (not null_sender and _tenant_of(directory, source.sender_domain) == tenant):
        return Relayed(recipient, recipient, tenant)
    if hosted:
        return None
    return Rejected(recipient, replies.RELAY_ACCESS_DENIED_ATTR, RejectReason.RELAY_ACCESS_DENIED, tenant)


def _internal_relay(
    directory: DirectoryView,
    recipient: Address,
    domain: AcceptedDomain,
    source: Source | None,
    mx_elsewhere: Collection[str],
) -> Resolution:
    """An unknown recipient in a verified internal-relay domain (spec §1.2, §6)."""
    tenant = domain.tenant_id
    if source is not None and source.on_premises_tenant == tenant:
        # On-premises sent it here, so on-premises did not know the recipient either: sending it
        # back would loop.
        return Rejected(recipient, replies.RECIPIENT_ACCESS_DENIED, RejectReason.INTERNAL_RELAY_LOOP, tenant)
    connector = choose_outbound(directory.outbound_connectors(tenant), domain.name, accepted_domain=True)
    if connector is not None and connector.type is ConnectorType.ON_PREMISES:
        return Relayed(recipient, recipient, tenant)  # categorize routes it over the connector
    if domain.name in mx_elsewhere:
        return Relayed(recipient, recipient, tenant)  # by MX, which is not this service
    return Rejected(recipient, replies.RECIPIENT_ACCESS_DENIED, RejectReason.INTERNAL_RELAY_UNROUTED, tenant)


def meets_partner_restrictions(connector: InboundConnector, source: Source) -> bool:
    """Whether a transaction from `source` meets a Partner connector's restrictions (spec §3.1)."""
    if connector.require_tls and not source.tls:
        return False
    if connector.restrict_domains_to_ips:
        address = client_address(source.peer_ip)
        if address is None or connector.ips.match(address) is None:
            return False
    if connector.restrict_domains_to_certificate:
        name = connector.tls_certificate_name
        if not name or not certificate_matches(name, source.certificate):
            return False
    return True


def partner_connector(directory: DirectoryView, tenant_id: int, source: Source) -> InboundConnector | None:
    """The tenant's Partner connector that covers the source's sender domain, if any."""
    return partner_for(directory.inbound_connectors().of_tenant(tenant_id), source.sender_domain)


def _partner_restrictions(directory: DirectoryView, found: Resolution, source: Source) -> Resolution:
    """`found`, or refused 550 5.7.51 when its tenant's Partner connector's restrictions are not met.
    A source attributed to the tenant's own OnPremises connector is not held to them (spec §3.4:
    OnPremises first)."""
    tenant = found.tenant_id
    if isinstance(found, Rejected) or tenant is None or source.on_premises_tenant == tenant:
        return found
    partner = partner_connector(directory, tenant, source)
    if partner is None or meets_partner_restrictions(partner, source):
        return found
    return Rejected(found.recipient, replies.PARTNER_RESTRICTED, RejectReason.PARTNER_RESTRICTED, tenant)
