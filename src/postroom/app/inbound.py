"""Inbound connectors on the MX endpoint: a connection's attribution, its trace, and enhanced filtering.

The MX session (`app.mx`) asks these at three moments; each is a question to the directory view
(the node's cache: asked through `MxEndpoint.ask`, no SQL on the event loop):

- **Connect** (`claimed_on_premises`): the client's IP is named by a tenant's OnPremises inbound
  connector, so the connection filter does not count it against its rates (spec §3.6).
- **MAIL** (`attribute_source`): after STARTTLS and with the sender known, the connection is
  attributed (`model.connectors.attribute`: the verified client certificate's names, for a tenant
  only when they name one of its verified domains, then the IP; the sender's domain picks among
  several tenants' connectors) and becomes the transaction's
  `Source`, which routing decides every RCPT with. `Attributed.inside` is the tenant the sender is
  inside of (attributed to that tenant's OnPremises connector and sending from one of its verified
  accepted domains: group delivery restrictions let it in), `Attributed.internal` the tenant for
  which the message is internal (the same, over a connector that treats messages as internal:
  anti-spam is skipped for that tenant's copies).
- **DATA**: `connector_of` names, per recipient tenant, the connector the message came over (the
  tenant's attributed OnPremises connector, else its Partner connector covering the sender's
  domain) for the tenant's own Receive trace event (`receive_detail`, never another tenant's:
  connector names are tenant data), and `enhanced_views` runs enhanced filtering's walk
  (`protection.enhanced`) for each tenant whose connector has it.

Security: attribution rests on the socket's address and a certificate the node verified; the
sender's domain only chooses among the connectors those matched. Enhanced filtering trusts the
first hop only when the connector identified the connection (`protection.enhanced`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from postroom.delivery.remote import LocalEndpoints
from postroom.directory import DirectoryView, DomainStatus
from postroom.dns import Resolver
from postroom.dns.mail_hosts import MailHostError, mail_hosts
from postroom.model import Reply, replies
from postroom.model.connectors import (
    NOT_ATTRIBUTED,
    ConnectorType,
    InboundConnector,
    Source,
    attribute,
    certificate_matches,
)
from postroom.model.ipfilter import client_address
from postroom.protection.enhanced import OriginalSender, original_sender, scope_matches
from postroom.protection.received import received_hops
from postroom.routing import names_tenant_domain, partner_connector


@dataclass(frozen=True, slots=True)
class Attributed:
    """A transaction's source, and the tenant whose verified accepted domain the sender's is."""

    source: Source
    sender_tenant: int | None

    @property
    def connector(self) -> InboundConnector | None:
        """The OnPremises connector the connection is attributed to, if any."""
        return self.source.attribution.connector

    @property
    def inside(self) -> int | None:
        """The tenant the sender is inside of: over its OnPremises connector, from its own domain."""
        connector = self.connector
        if connector is not None and connector.tenant_id == self.sender_tenant:
            return connector.tenant_id
        return None

    @property
    def internal(self) -> int | None:
        """The tenant for which the message is internal (TreatMessagesAsInternal), if any."""
        connector = self.connector
        return self.inside if connector is not None and connector.treat_messages_as_internal else None


def claimed_on_premises(peer_ip: str, directory: DirectoryView) -> bool:
    """Whether an OnPremises inbound connector of some tenant names the client's IP."""
    address = client_address(peer_ip)
    table = directory.inbound_connectors()
    if address is None or not len(table):
        return False
    return any(c.type is ConnectorType.ON_PREMISES for c in table.by_ip(address))


def attribute_source(
    directory: DirectoryView,
    *,
    peer_ip: str,
    tls: bool,
    certificate: tuple[str, ...],
    sender_domain: str,
) -> Attributed:
    """The transaction's `Source`: the connection attributed to an inbound connector, if any."""
    sender_tenant = None
    if sender_domain:
        domain = directory.domain(sender_domain)
        if domain is not None and domain.status is DomainStatus.VERIFIED:
            sender_tenant = domain.tenant_id
    table = directory.inbound_connectors()
    attribution = NOT_ATTRIBUTED
    if len(table):
        owners = {sender_domain: sender_tenant} if sender_tenant is not None else {}
        claimed = {
            c.tenant_id for c in table.by_certificate(certificate) if c.type is ConnectorType.ON_PREMISES
        }
        named = {t for t in sorted(claimed) if names_tenant_domain(directory, certificate, t)}
        attribution = attribute(table, peer_ip, certificate, sender_domain, owners, named)
    return Attributed(Source(peer_ip, sender_domain, tls, certificate, attribution), sender_tenant)


def connector_of(directory: DirectoryView, source: Source, tenant_id: int) -> InboundConnector | None:
    """The tenant's connector the message came over: the OnPremises one the connection is attributed
    to, else its Partner connector that covers the sender's domain (whose restrictions RCPT checked)."""
    attributed = source.attribution.connector
    if attributed is not None and attributed.tenant_id == tenant_id:
        return attributed
    return partner_connector(directory, tenant_id, source)


def receive_detail(connector: InboundConnector, source: Source) -> dict[str, object]:
    """What the tenant's Receive trace event says about the connector the message came over."""
    by = "sender-domain"
    if connector.tls_certificate_name and certificate_matches(
        connector.tls_certificate_name, source.certificate
    ):
        by = "certificate"
    elif any(c.id == connector.id for c in source.attribution.candidates):
        by = "ip"
    return {
        "connector": connector.name,
        "connector_type": connector.type.value,
        "connector_match": by,
        "tenant": connector.tenant_id,
    }


@dataclass(frozen=True, slots=True)
class EnhancedView:
    """Enhanced filtering for one tenant's recipients: the connector, the original sender its walk
    found, and whether it applies (`ef_users` covers every recipient of the tenant)."""

    connector: InboundConnector
    original: OriginalSender
    applied: bool


def enhanced_views(
    directory: DirectoryView,
    source: Source,
    message: bytes,
    recipients: Mapping[int, Sequence[str]],
    max_hops: int,
) -> dict[int, EnhancedView]:
    """For each tenant of `recipients` (its RCPT address keys) whose connector has enhanced
    filtering and whose walk found the original sender: what the stack should judge instead."""
    views: dict[int, EnhancedView] = {}
    hops = None
    for tenant_id, addresses in recipients.items():
        connector = connector_of(directory, source, tenant_id)
        if connector is None or not connector.enhanced_filtering:
            continue
        if hops is None:
            hops = received_hops(message, max_hops)
        identified = any(c.id == connector.id for c in source.attribution.candidates)
        original = original_sender(connector, source.peer_ip, hops, identified=identified)
        if original is not None:
            views[tenant_id] = EnhancedView(connector, original, scope_matches(connector, addresses))
    return views


async def mx_elsewhere(
    resolver: Resolver, local: LocalEndpoints, smtp_port: int, domain: str
) -> bool | Reply:
    """Whether `domain`'s MX is not this service (True: an unknown recipient of the internal-relay
    domain may go there by MX); False when it is, or when the domain has no usable MX (550 5.4.1
    stands); a temporary reply (451 4.4.3) when the DNS failed."""
    try:
        hosts = await mail_hosts(resolver, domain)
    except MailHostError as error:
        return error.reply if error.reply.enhanced == replies.DNS_TEMPORARY.enhanced else False
    return not any(local.holds(host, smtp_port) for host in hosts)
