"""Connectors as values: what a tenant's inbound and outbound connectors say, and the pure rules that
match them (spec §3). Nothing here does I/O; the directory stores connectors, routing asks these
functions, delivery follows an outbound connector's hosts and TLS settings.

**Inbound connectors** (spec §3.1, §3.4) identify a source that is not an ordinary internet server:
a tenant's own on-premises server (`OnPremises`) or a partner, a third-party filtering service
(`Partner`). A source is identified by its IP address (`sender_ips`: addresses, `a-b` ranges, CIDR
/24-/32 for IPv4 and /48-/128 for IPv6, parsed by `model.ipfilter`) or by the name in the TLS client
certificate it presented and that the node verified (`tls_certificate_name`: a domain, or
`*.contoso.com`, matched against the certificate's CN and DNS SANs by `certificate_matches`).

- `ConnectorTable` holds every enabled inbound connector of every tenant and answers "which connectors
  claim this IP or this certificate" in O(log n) for IPs (one `IpList` per connector would be O(n)).
  Several tenants may name the same IP: a third-party filtering service serves many organizations. So
  IP and certificate only narrow the candidates; `attribute` picks the OnPremises connector (and so
  the tenant) a connection belongs to using the sender's domain too, and refuses to guess when the
  candidates belong to several tenants and nothing tells them apart.
- `partner_for(connectors, sender_domain)`: the Partner connector of the recipient's tenant that
  covers a sender domain: exact, then wildcard (`*.x.com`), then `*` (spec §3.4 (impl)).

**Outbound connectors** (spec §3.2, §3.3): `choose_outbound(connectors, recipient_domain, accepted)`
picks the connector for a recipient: an exact recipient-domain match, else an "all accepted domains"
connector (for a recipient in one of the tenant's accepted domains), else the longest wildcard match.
Rule-scoped connectors and disabled ones are never chosen here (a mail flow rule names them).
`parse_smart_host` reads a smart host as the directory stores it (`host`, `host:port`, `[v6]:port`).

**Records** (values the directory stores and reads back): `ValidationResult` is one recipient of one
validation run of an outbound connector (spec §3.5), with its `ValidationStep`s (`dns`, `tcp`, `tls`,
`message`), as `delivery.validation` makes them and the directory keeps them (`connector_validations`),
read with `last_validation_run` and `validation_state`; `TenantScenario`, the scenario of spec §4 a
tenant applied.
"""

from __future__ import annotations

import bisect
import datetime
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from postroom.model.ipfilter import EMPTY, IpAddress, IpList, IpListError, client_address, entry_range


class ConnectorType(StrEnum):
    PARTNER = "partner"  # a partner organization, a third-party filtering service
    ON_PREMISES = "on-premises"  # the tenant's own servers, sending from its accepted domains


class OutboundTls(StrEnum):
    """An outbound connector's `TlsSettings` (spec §3.2)."""

    OPPORTUNISTIC = "opportunistic"  # `$null`: STARTTLS when offered, like MX delivery
    ENCRYPTION_ONLY = "encryption-only"  # TLS required, the certificate not checked
    CERTIFICATE_VALIDATION = "certificate-validation"  # TLS required, the chain checked
    DOMAIN_VALIDATION = "domain-validation"  # TLS required, the chain and the name `tls_domain`


@dataclass(frozen=True, slots=True)
class InboundConnector:
    """One inbound connector (spec §3.1). Names are unique per tenant (case-insensitive)."""

    id: int
    tenant_id: int
    name: str
    type: ConnectorType
    enabled: bool = True
    sender_domains: tuple[str, ...] = ("*",)  # "*", "x.com", "*.x.com"
    sender_ips: tuple[str, ...] = ()  # as given; parsed into `ips`
    tls_certificate_name: str = ""  # "", "mail.x.com" or "*.x.com"
    require_tls: bool = True
    restrict_domains_to_ips: bool = False  # Partner only
    restrict_domains_to_certificate: bool = False  # Partner only
    treat_messages_as_internal: bool = False  # OnPremises only
    associated_accepted_domains: tuple[str, ...] = ()  # () = all of the tenant's
    ef_skip_last_ip: bool = False  # enhanced filtering: the last hop is the trusted gateway
    ef_skip_ips: tuple[str, ...] = ()  # enhanced filtering: the gateways' IPs (IpList entries)
    ef_users: tuple[str, ...] = ()  # enhanced filtering applies only when every recipient is listed; () = all
    comment: str = ""
    created_at: float = 0.0
    ips: IpList = field(default=EMPTY, compare=False, repr=False)

    @property
    def by_certificate(self) -> bool:
        return bool(self.tls_certificate_name)

    @property
    def enhanced_filtering(self) -> bool:
        return self.ef_skip_last_ip or bool(self.ef_skip_ips)

    def covers_sender(self, sender_domain: str) -> bool:
        return any(domain_matches(pattern, sender_domain) for pattern in self.sender_domains)


@dataclass(frozen=True, slots=True)
class OutboundConnector:
    """One outbound connector (spec §3.2)."""

    id: int
    tenant_id: int
    name: str
    type: ConnectorType
    enabled: bool = True
    recipient_domains: tuple[str, ...] = ()  # "x.com", "*.x.com"
    all_accepted_domains: bool = False  # OnPremises: every accepted domain of the tenant
    smart_hosts: tuple[str, ...] = ()  # host names or IPs, each optionally ":port"; () = use MX
    tls: OutboundTls = OutboundTls.OPPORTUNISTIC
    tls_domain: str = ""  # the name DomainValidation checks ("*.x.com" allowed)
    rule_scoped: bool = False  # used only by a mail flow rule
    route_all_via_on_premises: bool = False  # centralized mail transport (OnPremises)
    sender_rewriting: bool = False  # SRS before on-premises (OnPremises)
    validation_recipients: tuple[str, ...] = ()
    comment: str = ""
    created_at: float = 0.0

    @property
    def use_mx(self) -> bool:
        return not self.smart_hosts

    @property
    def requires_tls(self) -> bool:
        return self.tls is not OutboundTls.OPPORTUNISTIC


def split_smart_host(entry: str) -> tuple[str, int]:
    """A smart host entry as delivery connects to it: (host lower-cased, port), port 0 for the SMTP
    port of delivery (`parse_smart_host` reads it). Raises ValueError naming what is wrong."""
    host, port = parse_smart_host(entry)
    if not host:
        raise ValueError(f"{entry!r}: the smart host has no host name or address")
    return host.rstrip(".").lower(), port or 0


def domain_matches(pattern: str, domain: str) -> bool:
    """`*` matches every domain, `*.x.com` every subdomain of x.com (not x.com itself), `x.com` itself."""
    pattern, domain = pattern.lower(), domain.lower()
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return domain.endswith(pattern[1:])
    return domain == pattern


def certificate_matches(pattern: str, names: Iterable[str]) -> bool:
    """Whether a certificate naming `names` (its CN and DNS SANs, as presented) matches a connector's
    `tls_certificate_name`: `x.com` matches a name `x.com`; `*.x.com` matches `a.x.com`, `b.a.x.com`
    and a certificate's own wildcard `*.x.com` (spec §3.4: the CN/SAN must contain a tenant domain)."""
    wanted = pattern.lower().rstrip(".")
    for name in names:
        name = name.lower().rstrip(".")
        if name == wanted:
            return True
        if wanted.startswith("*.") and name.endswith(wanted[1:]) and not name.startswith("*"):
            return True
    return False


def certificate_names(subject: str | None, sans: Sequence[str]) -> tuple[str, ...]:
    """The DNS names of a verified client certificate: its DNS SANs, else its CN (`TlsInfo` form:
    `CN=...,O=...` with values escaped as RFC 4514 does, so an escaped `,CN=x` inside another
    attribute's value is part of that value, never a CN of its own)."""
    dns = tuple(san[4:] for san in sans if san.startswith("DNS:"))
    if dns:
        return dns
    for part in _rdns(subject or ""):
        key, _, value = part.strip().partition("=")
        if key.upper() == "CN" and value:
            return (value,)
    return ()


def _rdns(subject: str) -> list[str]:
    """A subject string's `KEY=value` parts: split at unescaped commas, with the escapes removed."""
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for char in subject:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


@dataclass(frozen=True, slots=True)
class Attribution:
    """Which inbound connectors a connection matched, and the OnPremises one it belongs to.

    `connector` is the OnPremises connector (and so the tenant) the connection is attributed to, or
    None. `by_certificate` says whether that came from the client certificate (the anti-relay rule's
    (b)). `candidates` are every connector whose IP or certificate matched (Partner ones included),
    for the recipient's tenant to look up its Partner connector in."""

    connector: InboundConnector | None = None
    by_certificate: bool = False
    candidates: tuple[InboundConnector, ...] = ()
    ambiguous: bool = False  # several tenants' OnPremises connectors matched and nothing told them apart

    @property
    def tenant_id(self) -> int | None:
        return self.connector.tenant_id if self.connector is not None else None

    def of_tenant(self, tenant_id: int) -> tuple[InboundConnector, ...]:
        return tuple(c for c in self.candidates if c.tenant_id == tenant_id)


NOT_ATTRIBUTED = Attribution()


class ConnectorTable:
    """Every enabled inbound connector of the service, indexed by IP and certificate name."""

    def __init__(self, connectors: Iterable[InboundConnector]) -> None:
        self.connectors = tuple(c for c in connectors if c.enabled)
        # IPv4 and IPv6 intervals (first, last, index) sorted by first; a query scans the intervals
        # whose first is <= the address (bisect), keeping those whose last is >= it. Entries are at
        # most a /24 or a /48 wide, so overlaps are few and the scan is short.
        self._intervals: dict[int, list[tuple[int, int, int]]] = {4: [], 6: []}
        self._by_name: list[int] = []
        self._by_tenant: dict[int, tuple[InboundConnector, ...]] = {}
        for connector in self.connectors:
            self._by_tenant[connector.tenant_id] = (*self._by_tenant.get(connector.tenant_id, ()), connector)
        for index, connector in enumerate(self.connectors):
            for entry in connector.sender_ips:
                interval = _interval(entry)
                if interval is not None:
                    version, first, last = interval
                    self._intervals[version].append((first, last, index))
            if connector.tls_certificate_name:
                self._by_name.append(index)
        for intervals in self._intervals.values():
            intervals.sort()
        self._firsts = {v: [i[0] for i in intervals] for v, intervals in self._intervals.items()}
        self._widest = {
            v: max((i[1] - i[0] for i in intervals), default=0) for v, intervals in self._intervals.items()
        }

    def by_ip(self, address: IpAddress) -> list[InboundConnector]:
        version, value = address.version, int(address)
        firsts, intervals = self._firsts[version], self._intervals[version]
        end = bisect.bisect_right(firsts, value)
        start = bisect.bisect_left(firsts, value - self._widest[version])
        found = {intervals[i][2] for i in range(start, end) if intervals[i][1] >= value}
        return [self.connectors[i] for i in sorted(found)]

    def by_certificate(self, names: Sequence[str]) -> list[InboundConnector]:
        if not names:
            return []
        return [
            self.connectors[i]
            for i in self._by_name
            if certificate_matches(self.connectors[i].tls_certificate_name, names)
        ]

    def of_tenant(self, tenant_id: int) -> tuple[InboundConnector, ...]:
        """The tenant's enabled connectors (asked at every RCPT: held by tenant, not scanned)."""
        return self._by_tenant.get(tenant_id, ())

    def __len__(self) -> int:
        return len(self.connectors)


EMPTY_TABLE = ConnectorTable(())


def _interval(entry: str) -> tuple[int, int, int] | None:
    """(version, first, last) of a stored entry; None for one that no longer parses (checked when written)."""
    try:
        return entry_range(entry)
    except IpListError:
        return None


def attribute(
    table: ConnectorTable,
    peer_ip: str,
    certificate: Sequence[str],
    sender_domain: str,
    tenant_of_domain: dict[str, int] | None = None,
    certificate_tenants: Collection[int] | None = None,
) -> Attribution:
    """Attribute a connection (at MAIL, once TLS and the sender are known).

    `certificate`: the names of the client certificate the node verified (() for none);
    `tenant_of_domain`: for the sender's domain, which tenant has it as a verified accepted domain
    ({} when none does); `certificate_tenants`: the tenants of which the certificate names a
    verified accepted domain (spec §3.4: the CN/SAN must contain a domain registered in the tenant),
    so that a tenant whose OnPremises connector claims another tenant's certificate name never gets
    that tenant's server (None: not checked). The order (spec §3.4 (impl)): OnPremises by
    certificate, then OnPremises by IP; among several tenants' connectors, the one whose tenant owns
    the sender's domain; a certificate-matched connector beats an IP-matched one of another tenant."""
    address = client_address(peer_ip)
    by_name = table.by_certificate(certificate)
    by_ip = table.by_ip(address) if address is not None else []
    candidates = tuple(dict.fromkeys([*by_name, *by_ip]))
    owner = (tenant_of_domain or {}).get(sender_domain.lower())
    for pool, cert in ((by_name, True), (by_ip, False)):
        on_premises = [c for c in pool if c.type is ConnectorType.ON_PREMISES]
        if cert and certificate_tenants is not None:
            on_premises = [c for c in on_premises if c.tenant_id in certificate_tenants]
        tenants = {c.tenant_id for c in on_premises}
        if not tenants:
            continue
        if owner in tenants:
            chosen = next(c for c in on_premises if c.tenant_id == owner)
        elif len(tenants) == 1:
            chosen = on_premises[0]
        else:
            return Attribution(None, False, candidates, ambiguous=True)
        return Attribution(chosen, cert, candidates)
    return Attribution(None, False, candidates)


def partner_for(connectors: Iterable[InboundConnector], sender_domain: str) -> InboundConnector | None:
    """The recipient's tenant's Partner connector that covers `sender_domain`: an exact domain, then
    the longest wildcard, then `*` (spec §3.4 (impl)). Disabled ones are not in the table."""
    best: tuple[int, InboundConnector] | None = None
    domain = sender_domain.lower()
    for connector in connectors:
        if connector.type is not ConnectorType.PARTNER or not connector.enabled:
            continue
        for pattern in connector.sender_domains:
            pattern = pattern.lower()
            if pattern == domain:
                rank = 1_000
            elif pattern.startswith("*.") and domain.endswith(pattern[1:]):
                rank = len(pattern)
            elif pattern == "*":
                rank = 0
            else:
                continue
            if best is None or rank > best[0]:
                best = (rank, connector)
    return best[1] if best is not None else None


def choose_outbound(
    connectors: Iterable[OutboundConnector], recipient_domain: str, accepted_domain: bool
) -> OutboundConnector | None:
    """The outbound connector for a recipient in `recipient_domain` (spec §3.3): exact match, else an
    all-accepted-domains connector when `accepted_domain` (the recipient's domain is one of the
    tenant's accepted domains), else the longest wildcard match; None: delivery by MX."""
    domain = recipient_domain.lower()
    usable = [c for c in connectors if c.enabled and not c.rule_scoped]
    for connector in usable:
        if domain in (d.lower() for d in connector.recipient_domains):
            return connector
    if accepted_domain:
        for connector in usable:
            if connector.all_accepted_domains:
                return connector
    best: tuple[int, OutboundConnector] | None = None
    for connector in usable:
        for pattern in connector.recipient_domains:
            pattern = pattern.lower()
            wildcard = pattern.startswith("*.") and domain.endswith(pattern[1:])
            if wildcard and (best is None or len(pattern) > best[0]):
                best = (len(pattern), connector)
    return best[1] if best is not None else None


def on_premises_route(connectors: Iterable[OutboundConnector]) -> OutboundConnector | None:
    """The tenant's enabled OnPremises connector with centralized mail transport, if any."""
    for connector in connectors:
        if (
            connector.enabled
            and connector.type is ConnectorType.ON_PREMISES
            and connector.route_all_via_on_premises
        ):
            return connector
    return None


@dataclass(frozen=True, slots=True)
class Source:
    """Where a transaction comes from, as routing sees it: the MX session builds it at MAIL (after
    STARTTLS and attribution) and passes it to `routing.resolve_recipient` and `routing.categorize`;
    `postroom explain` builds the same from its options.

    `certificate` holds the names of the client certificate the node verified (() for none)."""

    peer_ip: str
    sender_domain: str  # the MAIL FROM domain, "" for the null sender
    tls: bool = False
    certificate: tuple[str, ...] = ()
    attribution: Attribution = NOT_ATTRIBUTED

    @property
    def on_premises_tenant(self) -> int | None:
        """The tenant whose OnPremises connector the connection is attributed to, or None."""
        return self.attribution.tenant_id


def parse_smart_host(text: str) -> tuple[str, int | None]:
    """(host, port) of an outbound connector's smart host as stored: `mail.x.com`, `mail.x.com:2525`,
    `192.0.2.7`, `192.0.2.7:25`, `[2001:db8::7]` or `[2001:db8::7]:25` (an IPv6 address comes back
    without its brackets). The port is None when not given (25). ValueError when it is none of these;
    the directory checks smart hosts when they are written, so a stored one parses."""
    value = text.strip()
    if value.startswith("["):
        literal, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r}: write an IPv6 smart host as [2001:db8::7] or [2001:db8::7]:25")
        return literal, _port(rest[1:], text) if rest else None
    if value.count(":") > 1:
        return value, None  # a bare IPv6 address: no port can follow it unbracketed
    host, colon, port = value.partition(":")
    return host, _port(port, text) if colon else None


def _port(text: str, entry: str) -> int:
    if not text.isascii() or not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{entry!r}: the port must be a number from 1 to 65535")
    return int(text)


@dataclass(frozen=True, slots=True)
class ValidationStep:
    """One step of validating an outbound connector for one recipient (spec §3.5), in the order a
    delivery takes them: `dns` (the smart hosts' or the MX hosts' addresses), `tcp` (the connection
    and the greeting), `tls` (STARTTLS by the connector's `tls` setting), `message` (a test message).
    `reply` is the failure's reply with its code (the spec §3.6 codes), "" when the step passed."""

    step: str
    ok: bool
    detail: str
    reply: str = ""


@dataclass(frozen=True, slots=True)
class ValidationResult:
    """One recipient's outcome in one validation run of an outbound connector (spec §3.5). Several
    recipients validated together share `run`; `reply` is the failing step's reply, "" when ok."""

    connector_id: int
    run: str
    recipient: str
    ok: bool
    reply: str
    steps: tuple[ValidationStep, ...]
    at: float


def last_validation_run(results: Sequence[ValidationResult]) -> list[ValidationResult]:
    """The results of the newest run among `results` (as the directory gives them: newest first), in
    recipient order; [] for a connector never validated."""
    if not results:
        return []
    newest = results[0].run
    return sorted((r for r in results if r.run == newest), key=lambda r: r.recipient)


def validation_state(results: Sequence[ValidationResult]) -> str:
    """An outbound connector's validation state as the CLI and the admin center show it: "never
    validated", "ok at <time>" or "<n> of <m> failed at <time>" (the newest run; time in UTC)."""
    run = last_validation_run(results)
    if not run:
        return "never validated"
    failed = sum(1 for r in run if not r.ok)
    outcome = "ok" if not failed else f"{failed} of {len(run)} failed"
    at = datetime.datetime.fromtimestamp(max(r.at for r in run), datetime.UTC)
    return f"{outcome} at {at:%Y-%m-%d %H:%M:%S} UTC"


@dataclass(frozen=True, slots=True)
class TenantScenario:
    """The scenario of spec §4 a tenant applied (`postroom scenario apply`), with its parameters."""

    tenant_id: int
    scenario: str
    parameters: dict[str, object]
    applied_at: float
