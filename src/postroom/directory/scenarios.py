"""The scenarios of the overview table (spec §4) as data, and the plan of what applying one creates.

Each row of `SCENARIOS` says where a scenario puts the domain's MX, whose addresses its one SPF record
lists, which connectors it needs, which type its domains take and how mail flows; `plan_scenario`
turns a row and the administrator's parameters (the on-premises server's host, addresses and
certificate name, the third party's, the devices') into a `ScenarioPlan`: the connectors to create
or update, with their exact settings (the field names of `model.connectors`), the domain type, the
MX host and the SPF senders. `app.scenarios` applies a plan through the directory service and prints
its DNS records; `dns.diagnosis.scenario` checks a tenant against the plan of the scenario it
applied. Everything here is pure: no I/O, the same plan for the same input.

The rows (names are the CLI's; EF: enhanced filtering, spec §3.7):

| name | MX | connectors created | domain type |
|---|---|---|---|
| hosted | Postroom | none | Authoritative |
| third-party-filtering | third party | Partner inbound `*` locked to the third party, EF | Authoritative |
| third-party-no-filtering | (unsupported) | | |
| hybrid-1 | Postroom | OnPremises inbound (certificate preferred) + OnPremises outbound | InternalRelay |
| hybrid-2 | Postroom | hybrid-1 + centralized mail transport on the outbound | InternalRelay |
| hybrid-3 | on-premises | Partner inbound locked to on-premises, EF + OnPremises outbound | InternalRelay |
| hybrid-4 | on-premises | OnPremises inbound (certificate-based) + OnPremises outbound | InternalRelay |
| third-party-hybrid | third party | third-party-filtering's Partner + hybrid-1's pair | InternalRelay |
| devices | unchanged | OnPremises inbound by the devices' IPs (SMTP relay) | unchanged |
| filtering-only | Postroom | OnPremises inbound + OnPremises outbound to the smart host | InternalRelay |

Decisions the spec leaves open, made here:
- Connector names are `<scenario>-<role>` (`hybrid-1-on-premises-inbound`): applying the same scenario
  again updates them; applying another disables the previous scenario's connectors it does not reuse
  (a third-party lock-down left enabled would refuse every message once the MX moves back), and
  removes a previous outbound connector that routes the same domains (one connector per recipient
  domain).
- `devices` adds to the scenario a tenant has (a hybrid organization has printers too): it creates its
  relay connector, keeps the recorded scenario and adds the devices' addresses to its SPF. Applying
  another scenario later keeps the devices' addresses.
- An OnPremises connector identified by certificate requires TLS inbound, and its outbound twin
  validates the on-premises server's certificate against the same name (`domain-validation`); by IP
  only, TLS is opportunistic both ways.
- OnPremises inbound connectors of hybrid rows treat mail as internal (on-premises users are the
  organization's); filtering-only's and devices' do not (their mail is filtered like any other).
- Enhanced filtering on a lock-down skips the listed gateway addresses, or the last hop when the
  gateway is known by certificate only.
- Addresses must be ones SPF can list (addresses or CIDR networks, no `a-b` ranges), since the same
  values go into the connector and the SPF record.

Every refusal is a `ScenarioError` (an `InvalidInputError`) naming the option that fixes it;
`third-party-no-filtering` is refused with `UnsupportedScenario` (a `RefusedError`) saying why.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum

from sqlalchemy import Connection, select

from postroom.directory.base import DirectoryBase
from postroom.directory.errors import InvalidInputError, RefusedError
from postroom.directory.records import AcceptedDomain, DomainStatus, DomainType
from postroom.model import AddressError, normalize_domain
from postroom.model.connectors import ConnectorType, OutboundTls
from postroom.model.ipfilter import IpListError, entry_range
from postroom.model.scope import Scope
from postroom.storage.schema import tenant_scenarios


class ScenarioError(InvalidInputError):
    """A scenario cannot be planned as asked; the message names the option that fixes it."""


class UnsupportedScenario(RefusedError):
    """A row of the table that Postroom does not support; the message says why and what to do."""


class MxAt(StrEnum):
    SERVICE = "service"  # the domain's MX is Postroom's per-domain host
    ON_PREMISES = "on-premises"  # the organization's own server receives first
    THIRD_PARTY = "third-party"  # a third-party filtering service receives first
    UNCHANGED = "unchanged"  # devices: wherever the tenant's scenario puts it


class Senders(StrEnum):
    """Whose addresses a scenario's SPF record lists besides Postroom's include."""

    ON_PREMISES = "on-premises"
    THIRD_PARTY = "third-party"


class ConnectorSide(StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


@dataclass(frozen=True, slots=True)
class Scenario:
    """One row of the overview table (spec §4)."""

    name: str
    title: str
    mx: MxAt
    spf: str  # the SPF record's terms, in words
    spf_senders: tuple[Senders, ...]
    connectors: str  # what applying it creates, in words
    domain_type: DomainType | None  # None: the domains keep their type
    flow: str
    needs: str = ""  # the options it needs, in words
    supported: bool = True
    why_unsupported: str = ""
    additive: bool = False  # added to the tenant's scenario, not in place of it (devices)

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "title": self.title,
            "mx": self.mx.value,
            "spf": self.spf,
            "connectors": self.connectors,
            "domain_type": self.domain_type.value if self.domain_type is not None else None,
            "flow": self.flow,
            "needs": self.needs,
            "supported": self.supported,
            "why_unsupported": self.why_unsupported,
        }


_ON_PREMISES_NEEDS = "--on-premises-host, and --on-premises-certificate-name (preferred) or --on-premises-ip"
_THIRD_PARTY_NEEDS = "--third-party-ip or --third-party-certificate-name (--third-party-host: its MX host)"

UNSUPPORTED_WHY = (
    "mail would reach Postroom unfiltered from the third party's servers, which are not the real "
    "senders: SPF, DMARC and the connection filter would judge the third party's address instead of "
    "the sender's, so spoofed and spam mail would pass and legitimate mail could be refused. Either "
    "put a third party that filters in front (`postroom scenario apply third-party-filtering`: a "
    "Partner connector locked down to its addresses, with enhanced filtering), or point the MX at "
    "Postroom (`postroom scenario apply hosted`)"
)

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "hosted",
            "Hosted: every mailbox in Postroom",
            MxAt.SERVICE,
            "include:<service> -all",
            (),
            "none",
            DomainType.AUTHORITATIVE,
            "Internet ↔ Postroom",
        ),
        Scenario(
            "third-party-filtering",
            "Third-party filtering in front (scenario 1)",
            MxAt.THIRD_PARTY,
            "include:<service> -all (outbound leaves directly)",
            (),
            "Partner inbound for `*`, locked down to the third party's IPs or certificate, with "
            "enhanced filtering",
            DomainType.AUTHORITATIVE,
            "Internet → third party → Postroom; outbound direct",
            _THIRD_PARTY_NEEDS,
        ),
        Scenario(
            "third-party-no-filtering",
            "Third party in front without spam filtering (scenario 2)",
            MxAt.THIRD_PARTY,
            "-",
            (),
            "-",
            None,
            "Internet → third party → Postroom, unfiltered",
            supported=False,
            why_unsupported=UNSUPPORTED_WHY,
        ),
        Scenario(
            "hybrid-1",
            "Hybrid 1: MX at Postroom, Postroom filters",
            MxAt.SERVICE,
            "ip4:<on-premises> include:<service> -all",
            (Senders.ON_PREMISES,),
            "OnPremises inbound (certificate preferred: on-premises NDRs and other senders' domains need "
            "it) + OnPremises outbound to on-premises",
            DomainType.INTERNAL_RELAY,
            "Internet → Postroom → cloud mailbox or on-premises; on-premises → Postroom → Internet",
            _ON_PREMISES_NEEDS,
        ),
        Scenario(
            "hybrid-2",
            "Hybrid 2: MX at Postroom, centralized mail transport",
            MxAt.SERVICE,
            "ip4:<on-premises> include:<service> -all",
            (Senders.ON_PREMISES,),
            "as hybrid-1, the outbound connector routing all mail via on-premises (CMT)",
            DomainType.INTERNAL_RELAY,
            "Internet → Postroom → on-premises → Postroom → mailbox; cloud outbound → on-premises → "
            "Postroom → Internet",
            _ON_PREMISES_NEEDS,
        ),
        Scenario(
            "hybrid-3",
            "Hybrid 3: MX at on-premises",
            MxAt.ON_PREMISES,
            "ip4:<on-premises> include:<service> -all",
            (Senders.ON_PREMISES,),
            "Partner inbound locked down to on-premises, with enhanced filtering + OnPremises outbound",
            DomainType.INTERNAL_RELAY,
            "Internet → on-premises → Postroom (DBEB and DMARC enforcement happen on-premises)",
            _ON_PREMISES_NEEDS,
        ),
        Scenario(
            "hybrid-4",
            "Hybrid 4: MX at on-premises, outbound via Postroom",
            MxAt.ON_PREMISES,
            "ip4:<on-premises> include:<service> -all",
            (Senders.ON_PREMISES,),
            "OnPremises inbound, certificate-based (NDRs, other senders' domains, forwarding) + "
            "OnPremises outbound",
            DomainType.INTERNAL_RELAY,
            "Internet → on-premises → Postroom; on-premises → Postroom → Internet",
            _ON_PREMISES_NEEDS,
        ),
        Scenario(
            "third-party-hybrid",
            "Third-party filtering with hybrid",
            MxAt.THIRD_PARTY,
            "ip4:<third party> ip4:<on-premises> include:<service> -all",
            (Senders.THIRD_PARTY, Senders.ON_PREMISES),
            "third-party-filtering's Partner inbound + hybrid-1's OnPremises inbound and outbound",
            DomainType.INTERNAL_RELAY,
            "Internet → third party → Postroom → cloud mailbox or on-premises; outbound via Postroom",
            f"{_THIRD_PARTY_NEEDS}; {_ON_PREMISES_NEEDS}",
        ),
        Scenario(
            "devices",
            "Devices and applications: SMTP relay (spec §5)",
            MxAt.UNCHANGED,
            "the scenario's, plus ip4:<device>",
            (),
            "OnPremises inbound by the devices' static IPs (relay to internal and external recipients)",
            None,
            "device → Postroom MX endpoint → mailbox or Internet (added to the tenant's scenario)",
            "--device-ip",
            additive=True,
        ),
        Scenario(
            "filtering-only",
            "Filtering only for on-premises servers (EOP standalone)",
            MxAt.SERVICE,
            "ip4:<on-premises> include:<service> -all",
            (Senders.ON_PREMISES,),
            "OnPremises inbound + OnPremises outbound to the on-premises smart host (required)",
            DomainType.INTERNAL_RELAY,
            "Internet → Postroom (filtered) → on-premises; on-premises → Postroom → Internet",
            _ON_PREMISES_NEEDS,
        ),
    )
}


def scenario_named(name: str) -> Scenario:
    """The row called `name`; `ScenarioError` listing the names otherwise."""
    found = SCENARIOS.get(name.strip().lower())
    if found is None:
        raise ScenarioError(
            f"no scenario named {name!r}; the scenarios are {', '.join(SCENARIOS)} (`postroom scenario list`)"
        )
    return found


# --- parameters -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ScenarioParameters:
    """What the administrator told `scenario apply`; stored with the applied scenario (as JSON)."""

    domains: tuple[str, ...] = ()
    on_premises_host: str = ""  # host name or IP, optionally ":port" (the smart host; hybrid-3/4: the MX)
    on_premises_ips: tuple[str, ...] = ()
    on_premises_certificate_name: str = ""
    third_party_host: str = ""  # the third party's MX host name
    third_party_ips: tuple[str, ...] = ()
    third_party_certificate_name: str = ""
    device_ips: tuple[str, ...] = ()
    spf_includes: tuple[str, ...] = ()  # other senders' SPF hosts, kept in the one record

    def as_json(self) -> dict[str, object]:
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}

    @classmethod
    def from_json(cls, value: Mapping[str, object]) -> ScenarioParameters:
        """Parameters read back from storage; a key of another version or of the wrong type is left out."""
        known: dict[str, object] = {}
        for item in fields(cls):
            raw = value.get(item.name)
            if isinstance(item.default, tuple) and isinstance(raw, list):
                known[item.name] = tuple(str(entry) for entry in raw)
            elif isinstance(item.default, str) and isinstance(raw, str):
                known[item.name] = raw
        return cls(**known)  # type: ignore[arg-type]


OPTIONS = {
    "domains": "--domain",
    "on_premises_host": "--on-premises-host",
    "on_premises_ips": "--on-premises-ip",
    "on_premises_certificate_name": "--on-premises-certificate-name",
    "third_party_host": "--third-party-host",
    "third_party_ips": "--third-party-ip",
    "third_party_certificate_name": "--third-party-certificate-name",
    "device_ips": "--device-ip",
    "spf_includes": "--spf-include",
}


# --- the plan -------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ConnectorPlan:
    """One connector a scenario needs, with the settings it must have (`model.connectors` field names).

    `recommended` names the settings whose difference `scenario check` reports as a warning (the
    administrator may have chosen otherwise: TLS strength, enhanced filtering); any other difference is
    an error (the connector would not do the scenario's job)."""

    side: ConnectorSide
    name: str
    type: ConnectorType
    settings: tuple[tuple[str, object], ...]
    purpose: str
    recommended: frozenset[str] = frozenset()

    @property
    def values(self) -> dict[str, object]:
        return dict(self.settings)

    def as_json(self) -> dict[str, object]:
        return {
            "side": self.side.value,
            "name": self.name,
            "type": self.type.value,
            "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in self.settings},
            "purpose": self.purpose,
        }


@dataclass(frozen=True, slots=True)
class ScenarioPlan:
    """What applying a scenario makes true: the connectors, the domains' type, the MX and SPF."""

    scenario: Scenario  # the row whose MX and domain type apply (devices: the tenant's own scenario)
    parameters: ScenarioParameters
    connectors: tuple[ConnectorPlan, ...]
    domain_type: DomainType | None
    mx_at: MxAt
    mx_host: str  # the MX exchange when not Postroom ("" when Postroom's, or a third party's unknown)
    spf_senders: tuple[str, ...]  # addresses or networks, as SPF lists them
    spf_includes: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    recorded: str = ""  # the scenario name recorded for the tenant ("" = scenario.name)
    additive: bool = False  # devices: the plan adds its connectors and leaves every other one alone

    @property
    def recorded_name(self) -> str:
        return self.recorded or self.scenario.name

    def as_json(self) -> dict[str, object]:
        return {
            "scenario": self.recorded_name,
            "parameters": self.parameters.as_json(),
            "connectors": [c.as_json() for c in self.connectors],
            "domain_type": self.domain_type.value if self.domain_type is not None else None,
            "mx": {"at": self.mx_at.value, "host": self.mx_host},
            "spf_senders": list(self.spf_senders),
            "spf_includes": list(self.spf_includes),
            "warnings": list(self.warnings),
        }


def connector_name(scenario: str, role: str) -> str:
    return f"{scenario}-{role}"


DEVICE_CONNECTOR = connector_name("devices", "relay-inbound")


def planned_connector_names() -> frozenset[str]:
    """Every connector name any scenario creates (a previous scenario's are recognized by these)."""
    roles = ("partner-inbound", "on-premises-inbound", "on-premises-outbound", "relay-inbound")
    return frozenset(connector_name(name, role) for name in SCENARIOS for role in roles)


def choose_domains(
    tenant_domains: Sequence[AcceptedDomain], requested: Sequence[str]
) -> list[AcceptedDomain]:
    """The domains a scenario applies to: those `requested` (each an accepted domain of the tenant, not
    its default domain), else every verified custom domain of the tenant."""
    custom = [d for d in tenant_domains if not d.is_default]
    if not requested:
        chosen = [d for d in custom if d.status is DomainStatus.VERIFIED]
        if not chosen:
            raise ScenarioError(
                "the tenant has no verified custom domain; add and verify one (`postroom domain add`, "
                "`postroom domain verify`) or name a pending one with --domain"
            )
        return chosen
    by_name = {d.name: d for d in tenant_domains}
    chosen = []
    for name in requested:
        try:
            key = normalize_domain(name)
        except AddressError as error:
            raise ScenarioError(f"--domain {name!r} is not a domain name: {error}") from None
        domain = by_name.get(key)
        if domain is None:
            raise ScenarioError(
                f"--domain {name}: not an accepted domain of the tenant; add it with `postroom domain add`"
            )
        if domain.is_default:
            raise ScenarioError(
                f"--domain {name}: the tenant's default domain lives in the service's zone, whose MX is "
                "Postroom's; a scenario applies to the tenant's own domains"
            )
        if domain not in chosen:
            chosen.append(domain)
    return chosen


def plan_scenario(
    scenario: Scenario,
    parameters: ScenarioParameters,
    tenant_domains: Sequence[AcceptedDomain],
    *,
    base: Scenario | None = None,
) -> ScenarioPlan:
    """The plan of `scenario` with `parameters` (whose `domains` are chosen already, see
    `choose_domains`), for a tenant with `tenant_domains`. `base` is the scenario a tenant has when an
    additive row (devices) is applied on top of it: the plan then keeps `base`'s MX, SPF and domain type
    and creates the additive row's connectors only."""
    if not scenario.supported:
        raise UnsupportedScenario(f"{scenario.name} is not supported: {scenario.why_unsupported}")
    if not parameters.domains:
        raise ScenarioError("no domain to apply the scenario to; name one with --domain")
    p = _checked(parameters, tenant_domains)
    warnings: list[str] = []
    row = base if scenario.additive and base is not None and not base.additive else scenario
    connectors = _connectors(scenario, p, warnings)
    if not scenario.additive and p.device_ips:  # the devices' relay stays with any scenario
        connectors += _connectors(SCENARIOS["devices"], p, warnings)
    if row is not scenario:
        warnings.append(
            f"added to the tenant's scenario {row.name}: its MX, SPF and domain types apply, with the "
            "devices' addresses added to SPF"
        )
    if Senders.ON_PREMISES in row.spf_senders and not p.on_premises_ips:
        warnings.append(
            "the SPF record lists no on-premises address (none given with --on-premises-ip): mail the "
            "on-premises server sends straight to the Internet fails SPF"
        )
    mx_at, mx_host = scenario_mx(row, p)
    if mx_at is MxAt.ON_PREMISES:
        _mx_host(p.on_premises_host, "--on-premises-host")
    elif mx_at is MxAt.THIRD_PARTY and not p.third_party_host:
        warnings.append(
            "no --third-party-host given: keep the MX the third party gave you; `scenario check` then "
            "only checks that the MX is not Postroom's"
        )
    return ScenarioPlan(
        scenario=row,
        parameters=p,
        connectors=tuple(connectors),
        domain_type=row.domain_type,
        mx_at=mx_at,
        mx_host=mx_host,
        spf_senders=scenario_spf_senders(row, p),
        spf_includes=p.spf_includes,
        warnings=tuple(warnings),
        recorded=row.name,
        additive=scenario.additive,
    )


def scenario_spf_senders(row: Scenario, p: ScenarioParameters) -> tuple[str, ...]:
    """The addresses the one SPF record of a domain under `row` lists (the devices' with any row)."""
    senders: list[str] = []
    for group in row.spf_senders:
        senders += p.on_premises_ips if group is Senders.ON_PREMISES else p.third_party_ips
    return tuple(dict.fromkeys([*senders, *p.device_ips]))


def scenario_mx(row: Scenario, p: ScenarioParameters) -> tuple[MxAt, str]:
    """Where a domain under `row` has its MX, and the host ("" for Postroom's, or a third party's not
    named). Devices leave it where it was: Postroom's, for a tenant with no other scenario."""
    if row.mx is MxAt.ON_PREMISES:
        host, _ = split_host_port(p.on_premises_host)
        return row.mx, host
    if row.mx is MxAt.THIRD_PARTY:
        return row.mx, p.third_party_host
    return MxAt.SERVICE, ""


MX_AT_WORDS = {
    MxAt.ON_PREMISES: "the on-premises server",
    MxAt.THIRD_PARTY: "the third-party filtering service",
}


def _connectors(scenario: Scenario, p: ScenarioParameters, warnings: list[str]) -> list[ConnectorPlan]:
    name = scenario.name
    if name == "hosted":
        return []
    if name == "third-party-filtering":
        return [
            _lockdown(
                name, "partner-inbound", "third party", p.third_party_ips, p.third_party_certificate_name
            )
        ]
    if name == "hybrid-3":
        _require_on_premises(p, host=True)
        return [
            _lockdown(
                name, "on-premises-inbound", "on-premises", p.on_premises_ips, p.on_premises_certificate_name
            ),
            _on_premises_outbound(name, p, cmt=False),
        ]
    if name in ("hybrid-1", "hybrid-2", "hybrid-4", "filtering-only"):
        _require_on_premises(p, host=True)
        if not p.on_premises_certificate_name and name != "filtering-only":  # hybrid rows relay NDRs
            warnings.append(_IP_ONLY)
        internal = name != "filtering-only"
        return [
            _on_premises_inbound(name, p, internal=internal),
            _on_premises_outbound(name, p, cmt=name == "hybrid-2"),
        ]
    if name == "third-party-hybrid":
        _require_on_premises(p, host=True)
        if not p.on_premises_certificate_name:
            warnings.append(_IP_ONLY)
        return [
            _lockdown(
                name, "partner-inbound", "third party", p.third_party_ips, p.third_party_certificate_name
            ),
            _on_premises_inbound(name, p, internal=True),
            _on_premises_outbound(name, p, cmt=False),
        ]
    if name == "devices":
        if not p.device_ips:
            raise ScenarioError("devices needs the devices' static addresses: give --device-ip (repeatable)")
        settings: tuple[tuple[str, object], ...] = (
            ("sender_domains", ("*",)),
            ("sender_ips", p.device_ips),
            ("tls_certificate_name", ""),
            ("require_tls", False),
            ("treat_messages_as_internal", False),
        )
        return [
            ConnectorPlan(
                ConnectorSide.INBOUND,
                DEVICE_CONNECTOR,
                ConnectorType.ON_PREMISES,
                settings,
                "SMTP relay for the devices: their mail from the tenant's domains goes to internal and "
                "external recipients",
                frozenset({"require_tls"}),
            )
        ]
    raise AssertionError(f"no connectors are planned for {name}")  # every row is handled above


_IP_ONLY = (
    "the on-premises connector is identified by IP only: on-premises NDRs (the null sender) and mail "
    "from domains that are not the tenant's are refused (550 5.7.64); give "
    "--on-premises-certificate-name to relay them"
)


def _lockdown(scenario: str, role: str, whose: str, ips: tuple[str, ...], certificate: str) -> ConnectorPlan:
    """A Partner connector for `*` that refuses mail not from the gateway (spec §3.4 lock-down), with
    enhanced filtering skipping the gateway's hop (spec §3.7)."""
    if not ips and not certificate:
        option = "--third-party" if whose == "third party" else "--on-premises"
        raise ScenarioError(
            f"{scenario} locks the {whose} down by address or certificate: give {option}-ip or "
            f"{option}-certificate-name"
        )
    settings: tuple[tuple[str, object], ...] = (
        ("sender_domains", ("*",)),
        ("sender_ips", ips),
        ("tls_certificate_name", certificate),
        ("restrict_domains_to_ips", bool(ips)),
        ("restrict_domains_to_certificate", bool(certificate)),
        ("require_tls", bool(certificate)),
        ("ef_skip_ips", ips),
        ("ef_skip_last_ip", not ips),
    )
    return ConnectorPlan(
        ConnectorSide.INBOUND,
        connector_name(scenario, role),
        ConnectorType.PARTNER,
        settings,
        f"accepts the tenant's inbound mail only from the {whose} (the MX), and judges SPF and the "
        "connection filter on the original sender's address (enhanced filtering)",
        frozenset({"require_tls", "ef_skip_ips", "ef_skip_last_ip"}),
    )


def _on_premises_inbound(scenario: str, p: ScenarioParameters, *, internal: bool) -> ConnectorPlan:
    certificate = p.on_premises_certificate_name
    settings: tuple[tuple[str, object], ...] = (
        ("sender_domains", ("*",)),
        ("sender_ips", p.on_premises_ips),
        ("tls_certificate_name", certificate),
        ("require_tls", bool(certificate)),
        ("treat_messages_as_internal", internal),
    )
    return ConnectorPlan(
        ConnectorSide.INBOUND,
        connector_name(scenario, "on-premises-inbound"),
        ConnectorType.ON_PREMISES,
        settings,
        "attributes the on-premises server's connections to the tenant: its mail is relayed out"
        + (" (NDRs and other senders' domains too: certificate-based)" if certificate else ""),
        frozenset({"require_tls", "treat_messages_as_internal"}),
    )


def _on_premises_outbound(scenario: str, p: ScenarioParameters, *, cmt: bool) -> ConnectorPlan:
    certificate = p.on_premises_certificate_name
    settings: list[tuple[str, object]] = [
        ("recipient_domains", p.domains),
        ("smart_hosts", (p.on_premises_host,)),
        ("tls", OutboundTls.DOMAIN_VALIDATION if certificate else OutboundTls.OPPORTUNISTIC),
        ("tls_domain", certificate),
        ("route_all_via_on_premises", cmt),
    ]
    purpose = "delivers to the on-premises server the recipients Postroom does not host"
    if cmt:
        purpose = "routes all the tenant's mail through the on-premises server (centralized mail transport)"
    return ConnectorPlan(
        ConnectorSide.OUTBOUND,
        connector_name(scenario, "on-premises-outbound"),
        ConnectorType.ON_PREMISES,
        tuple(settings),
        purpose,
        frozenset({"tls", "tls_domain"}),
    )


def _require_on_premises(p: ScenarioParameters, *, host: bool) -> None:
    if host and not p.on_premises_host:
        raise ScenarioError("give --on-premises-host: the on-premises server Postroom delivers to")
    if not p.on_premises_ips and not p.on_premises_certificate_name:
        raise ScenarioError(
            "give --on-premises-certificate-name (preferred) or --on-premises-ip: how Postroom knows "
            "the on-premises server's connections"
        )


def _checked(p: ScenarioParameters, tenant_domains: Sequence[AcceptedDomain]) -> ScenarioParameters:
    """The parameters normalized; `ScenarioError` naming the option of the first bad one."""
    owned = [d.name for d in tenant_domains if d.status is DomainStatus.VERIFIED]
    certificate = _certificate(p.on_premises_certificate_name, "--on-premises-certificate-name")
    if certificate and not any(_names_domain(certificate, domain) for domain in owned):
        raise ScenarioError(
            f"--on-premises-certificate-name {certificate}: it must name one of the tenant's verified "
            f"domains ({', '.join(owned)}), e.g. *.{next((d for d in owned if '.' in d), 'contoso.com')}: "
            "a certificate of another organization's name must not make a server the tenant's"
        )
    return replace(
        p,
        domains=tuple(normalize_domain(d) for d in p.domains),
        on_premises_host=_smart_host(p.on_premises_host, "--on-premises-host"),
        on_premises_ips=_networks(p.on_premises_ips, "--on-premises-ip"),
        on_premises_certificate_name=certificate,
        third_party_host=_host_name(p.third_party_host, "--third-party-host"),
        third_party_ips=_networks(p.third_party_ips, "--third-party-ip"),
        third_party_certificate_name=_certificate(
            p.third_party_certificate_name, "--third-party-certificate-name"
        ),
        device_ips=_networks(p.device_ips, "--device-ip"),
        spf_includes=tuple(_host_name(h, "--spf-include") for h in p.spf_includes),
    )


def _names_domain(certificate: str, domain: str) -> bool:
    """Whether a certificate name is (or is under, or is a wildcard over) `domain`."""
    bare = certificate.removeprefix("*.")
    return bare == domain or bare.endswith("." + domain)


def _networks(entries: tuple[str, ...], option: str) -> tuple[str, ...]:
    """Addresses or CIDR networks a connector takes and SPF can list (no `a-b` ranges)."""
    kept: list[str] = []
    for entry in entries:
        text = entry.strip()
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ScenarioError(
                f"{option} {entry!r} is not an address or a CIDR network (SPF lists no ranges)"
            ) from None
        try:
            entry_range(text)
        except IpListError as error:
            raise ScenarioError(f"{option} {error}") from None
        kept.append(str(network.network_address) if network.num_addresses == 1 else str(network))
    return tuple(dict.fromkeys(kept))


def _certificate(name: str, option: str) -> str:
    if not name:
        return ""
    wildcard = name.strip().startswith("*.")
    try:
        bare = normalize_domain(name.strip().removeprefix("*."))
    except AddressError as error:
        raise ScenarioError(f"{option} {name!r}: {error}; give a domain or *.domain") from None
    if "*" in bare or "." not in bare:
        raise ScenarioError(f"{option} {name!r}: give a domain or *.domain, e.g. *.contoso.com")
    return f"*.{bare}" if wildcard else bare


def _host_name(name: str, option: str) -> str:
    if not name:
        return ""
    try:
        host = normalize_domain(name)
    except AddressError as error:
        raise ScenarioError(f"{option} {name!r} is not a host name: {error}") from None
    if host.startswith("[") or "." not in host or _is_address(host):
        raise ScenarioError(f"{option} {name!r}: give a DNS host name, e.g. mail.contoso.com")
    return host


def _smart_host(text: str, option: str) -> str:
    """`host`, `host:port`, an IP, `[IPv6]:port`: normalized, the port kept."""
    text = text.strip()
    if not text:
        return ""
    host, port = split_host_port(text)
    if port is not None and not 0 < port < 65536:
        raise ScenarioError(f"{option} {text!r}: the port must be 1-65535")
    if _is_address(host):
        address = ipaddress.ip_address(host)
        shown = (
            f"[{address.compressed}]" if address.version == 6 else str(address)
        )  # as the directory keeps it
    else:
        try:
            shown = normalize_domain(host)
        except AddressError as error:
            raise ScenarioError(f"{option} {text!r} is not a host name or address: {error}") from None
        if shown.startswith("["):
            raise ScenarioError(f"{option} {text!r}: give a host name or an address, without brackets")
    return f"{shown}:{port}" if port is not None else shown


def split_host_port(text: str) -> tuple[str, int | None]:
    """`[v6]:25` → ("v6", 25); `host:25` → ("host", 25); `v6` or `host` → (it, None)."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, _port(rest.removeprefix(":")) if rest else None
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, _port(port)
    return text, None


def _port(text: str) -> int:
    if not text.isdigit():
        raise ScenarioError(f"{text!r} is not a port number")
    return int(text)


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _mx_host(smart_host: str, option: str) -> None:
    """An MX names a host, never an address: refuse a smart host given as an address."""
    host, _ = split_host_port(smart_host)
    if _is_address(host):
        raise ScenarioError(
            f"{option} {smart_host}: the domain's MX points at this server, and an MX names a host, not an "
            "address: give its DNS name"
        )


# --- the applied scenario ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AppliedScenario:
    """The scenario a tenant applied (`tenant_scenarios`), parsed: the row (None when the stored name is
    not one this version knows) and its parameters."""

    tenant_id: int
    name: str
    scenario: Scenario | None
    parameters: ScenarioParameters = field(default_factory=ScenarioParameters)
    applied_at: float = 0.0

    def plan(self, tenant_domains: Sequence[AcceptedDomain]) -> ScenarioPlan:
        """The plan it was applied with, as of the tenant's domains now (`ScenarioError` when they no
        longer allow it: a domain removed, a certificate name no longer the tenant's)."""
        if self.scenario is None:
            raise ScenarioError(
                f"the tenant's scenario {self.name!r} is not one this version knows; apply one of "
                f"{', '.join(SCENARIOS)}"
            )
        return plan_scenario(self.scenario, self.parameters, tenant_domains)


def find_applied_scenario(conn: Connection, tenant_id: int) -> AppliedScenario | None:
    """A tenant's applied scenario, or None when it applied none."""
    row = conn.execute(select(tenant_scenarios).where(tenant_scenarios.c.tenant_id == tenant_id)).first()
    if row is None:
        return None
    try:
        stored = json.loads(row.parameters or "{}")
    except ValueError:
        stored = {}
    parameters = ScenarioParameters.from_json(stored if isinstance(stored, dict) else {})
    name = str(row.scenario)
    return AppliedScenario(tenant_id, name, SCENARIOS.get(name), parameters, float(row.applied_at))


class AppliedScenarios(DirectoryBase):
    """The read side of a tenant's applied scenario (written by `Directory.set_scenario`)."""

    def applied_scenario(self, scope: Scope, tenant: str) -> AppliedScenario | None:
        with self._db.read() as conn:
            found = self._tenant(conn, scope, tenant)
            return find_applied_scenario(conn, found.id)
