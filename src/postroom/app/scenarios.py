"""Scenario templates (spec §4): apply a row of the table to a tenant, the DNS it must publish, check it.

`apply_scenario` plans the scenario (`directory.scenarios.plan_scenario`), then makes it true through
the directory service: the connectors it needs are created, or updated to the plan's settings and
enabled (`<scenario>-<role>` names); the previous scenario's connectors that this one does not reuse
are disabled (their settings stay for a way back), except an outbound one that routes the same
domains, which is removed (the directory keeps one connector per recipient domain, spec §3.3, and
applying that scenario again makes it anew); the domains get the scenario's type;
the scenario and its parameters are recorded for the tenant (so `scenario check` and `domain check`
judge its DNS by it). It returns what changed and, per domain, the DNS records to publish: the MX (the
service's per-domain host, or the on-premises or third-party host the scenario puts first) and the ONE
SPF record with the scenario's senders (`dns.records`). With `dry_run` nothing is written and the
directory is only read for the tenant's domains and scenario.

Order and failure: every parameter is checked and every conflict found (a connector of the planned
name but another type, another connector routing a planned domain) before the first write. The
writes then go: the previous scenario's connectors, the planned ones, domain types (a domain turns
internal-relay only once its on-premises connector exists), the record last;
each is one directory transaction. A write the directory refuses stops the apply with
`ApplyInterrupted`, which names the refused step and the changes made before it; the apply is
idempotent, so running the same command again after the fix completes it.

`check_scenario` compares the tenant with the scenario it applied (`dns.diagnosis.scenario`): the
MX and SPF of each of its domains in DNS, the domains' types, the connectors and their last
validation. `under_scenario` gives `domain check` and the MTA-STS policy the MX and SPF senders the
tenant's scenario expects.

The directory is seen through `ScenarioDirectory`: `Directory` with its connector and scenario
service (issue 11, part A).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from postroom.config.settings import ServiceSettings
from postroom.directory import AcceptedDomain, DirectoryError, DomainStatus, DomainType, Tenant
from postroom.directory.scenarios import (
    DEVICE_CONNECTOR,
    MX_AT_WORDS,
    OPTIONS,
    AppliedScenario,
    ConnectorPlan,
    ConnectorSide,
    MxAt,
    ScenarioError,
    ScenarioParameters,
    ScenarioPlan,
    UnsupportedScenario,
    choose_domains,
    plan_scenario,
    planned_connector_names,
    scenario_mx,
    scenario_named,
    scenario_spf_senders,
)
from postroom.dns import DnsRecord, DomainFacts, Finding, FindingCode, Resolver, Severity
from postroom.dns.diagnosis.scenario import Validation, check_connectors, check_scenario_domain, same_setting
from postroom.dns.records import MxElsewhere, mx_record, spf_record
from postroom.dns.spf import parse_spf
from postroom.model.connectors import ConnectorType, InboundConnector, OutboundConnector
from postroom.model.scope import Scope

SPF_LOOKUP_LIMIT = 10  # RFC 7208 §4.6.4
_LOOKUP_TERMS = frozenset({"include", "a", "mx", "exists", "ptr", "redirect"})


class ScenarioDirectory(Protocol):
    """What applying and checking a scenario asks of the directory service."""

    def get_tenant(self, scope: Scope, name: str) -> Tenant: ...

    def list_domains(self, scope: Scope, tenant: str | None = None) -> list[AcceptedDomain]: ...

    def set_domain_type(self, scope: Scope, name: str, domain_type: DomainType) -> AcceptedDomain: ...

    def applied_scenario(self, scope: Scope, tenant: str) -> AppliedScenario | None: ...

    def set_scenario(
        self, scope: Scope, tenant: str, scenario: str, parameters: Mapping[str, object]
    ) -> None: ...

    def inbound_connectors(self, scope: Scope, tenant: str) -> Sequence[InboundConnector]: ...

    def outbound_connectors(self, scope: Scope, tenant: str) -> Sequence[OutboundConnector]: ...

    def add_inbound_connector(
        self, scope: Scope, tenant: str, name: str, type: ConnectorType, **settings: object
    ) -> InboundConnector: ...

    def set_inbound_connector(
        self, scope: Scope, tenant: str, name: str, **settings: object
    ) -> InboundConnector: ...

    def add_outbound_connector(
        self, scope: Scope, tenant: str, name: str, type: ConnectorType, **settings: object
    ) -> OutboundConnector: ...

    def set_outbound_connector(
        self, scope: Scope, tenant: str, name: str, **settings: object
    ) -> OutboundConnector: ...

    def remove_outbound_connector(self, scope: Scope, tenant: str, name: str) -> None: ...

    def connector_validations(
        self, scope: Scope, tenant: str, name: str, limit: int = 20
    ) -> Sequence[Validation]: ...


class ApplyInterrupted(DirectoryError):
    """The directory refused a step of an apply; `changes` were made before it."""

    def __init__(self, message: str, changes: Sequence[Change]) -> None:
        super().__init__(message)
        self.changes = tuple(changes)


@dataclass(frozen=True, slots=True)
class Change:
    """One thing an apply changed (or, dry, would change)."""

    what: str  # "inbound connector", "outbound connector", "domain", "scenario"
    name: str
    action: str  # created, updated, unchanged, enabled, disabled, internal-relay, recorded, ...
    detail: str = ""


@dataclass(frozen=True, slots=True)
class DomainDns:
    """What one domain publishes under the scenario: its MX (when known) and its one SPF record."""

    domain: str
    records: tuple[DnsRecord, ...]
    notes: tuple[str, ...] = ()

    def as_json(self) -> dict[str, object]:
        return {
            "domain": self.domain,
            "records": [r.as_json() for r in self.records],
            "notes": list(self.notes),
        }


@dataclass(frozen=True, slots=True)
class Applied:
    tenant: str
    plan: ScenarioPlan
    changes: tuple[Change, ...]
    dns: tuple[DomainDns, ...]
    dry_run: bool

    def as_json(self) -> dict[str, object]:
        return {
            "tenant": self.tenant,
            "dry_run": self.dry_run,
            "plan": self.plan.as_json(),
            "changes": [
                {"what": c.what, "name": c.name, "action": c.action, "detail": c.detail} for c in self.changes
            ],
            "dns": [d.as_json() for d in self.dns],
        }


def apply_scenario(
    directory: ScenarioDirectory,
    service: ServiceSettings,
    scope: Scope,
    tenant: str,
    name: str,
    parameters: ScenarioParameters,
    *,
    dry_run: bool = False,
) -> Applied:
    """Apply the scenario `name` to `tenant` (see the module docstring); `parameters.domains` empty:
    every verified custom domain of the tenant."""
    scenario = scenario_named(name)
    if not scenario.supported:
        raise UnsupportedScenario(f"{scenario.name} is not supported: {scenario.why_unsupported}")
    found = directory.get_tenant(scope, tenant)
    tenant_domains = directory.list_domains(scope, found.name)
    previous = directory.applied_scenario(scope, found.name)
    base = None
    if previous is not None and not parameters.device_ips:
        parameters = replace(parameters, device_ips=previous.parameters.device_ips)  # devices stay
    if (
        scenario.additive
        and previous is not None
        and previous.scenario is not None
        and not previous.scenario.additive
    ):
        base = previous.scenario
        parameters = replace(previous.parameters, device_ips=parameters.device_ips)
    domains = choose_domains(tenant_domains, parameters.domains)
    parameters = replace(parameters, domains=tuple(d.name for d in domains))
    plan = plan_scenario(scenario, parameters, tenant_domains, base=base)
    dns = tuple(scenario_dns(service, plan, domain) for domain in domains)
    if dry_run:
        return Applied(found.name, plan, _dry_changes(plan, domains), dns, dry_run=True)
    changes = _write(directory, scope, found.name, plan, domains)
    return Applied(found.name, plan, tuple(changes), dns, dry_run=False)


def _dry_changes(plan: ScenarioPlan, domains: Sequence[AcceptedDomain]) -> tuple[Change, ...]:
    changes = [
        Change(f"{c.side.value} connector", c.name, "create or update", c.purpose) for c in plan.connectors
    ]
    changes += [
        Change("domain", d.name, plan.domain_type.value, f"from {d.type.value}")
        for d in domains
        if plan.domain_type is not None and d.type is not plan.domain_type
    ]
    changes.append(Change("scenario", plan.recorded_name, "record"))
    return tuple(changes)


def _write(
    directory: ScenarioDirectory,
    scope: Scope,
    tenant: str,
    plan: ScenarioPlan,
    domains: Sequence[AcceptedDomain],
) -> list[Change]:
    inbound = {c.name.lower(): c for c in directory.inbound_connectors(scope, tenant)}
    outbound = {c.name.lower(): c for c in directory.outbound_connectors(scope, tenant)}
    planned_names = {c.name.lower() for c in plan.connectors}
    # A previous scenario's connectors give way when another replaces it; devices replace nothing.
    previous = (
        frozenset() if plan.additive else planned_connector_names() - {DEVICE_CONNECTOR} - planned_names
    )
    routed = {d for c in plan.connectors if c.side is ConnectorSide.OUTBOUND for d in _domains(c)}
    # One connector per recipient domain (spec §3.3): a previous scenario's that routes the same
    # domains is removed (applying that scenario again makes it anew), not only disabled.
    removed = [c for k, c in outbound.items() if k in previous and routed & set(c.recipient_domains)]
    _conflicts(plan, inbound, outbound, routed, removed)
    changes: list[Change] = []
    current = ""  # the step being written, for the message when the directory refuses it
    try:
        for gone in removed:
            current = f"outbound connector {gone.name}"
            directory.remove_outbound_connector(scope, tenant, gone.name)
            changes.append(
                Change("outbound connector", gone.name, "removed", "a previous scenario's, same domains")
            )
        for key, inbound_one in inbound.items():
            if key in previous and inbound_one.enabled:
                current = f"inbound connector {inbound_one.name}"
                directory.set_inbound_connector(scope, tenant, inbound_one.name, enabled=False)
                changes.append(
                    Change("inbound connector", inbound_one.name, "disabled", "a previous scenario's")
                )
        for key, outbound_one in outbound.items():
            if key in previous and outbound_one.enabled and outbound_one not in removed:
                current = f"outbound connector {outbound_one.name}"
                directory.set_outbound_connector(scope, tenant, outbound_one.name, enabled=False)
                changes.append(
                    Change("outbound connector", outbound_one.name, "disabled", "a previous scenario's")
                )
        for planned in plan.connectors:
            what = f"{planned.side.value} connector"
            current = f"{what} {planned.name}"
            existing: InboundConnector | OutboundConnector | None = (
                inbound if planned.side is ConnectorSide.INBOUND else outbound
            ).get(planned.name.lower())
            values = planned.values
            if existing is None:
                comment = f"created by `postroom scenario apply {plan.recorded_name}`"
                if planned.side is ConnectorSide.INBOUND:
                    directory.add_inbound_connector(
                        scope, tenant, planned.name, planned.type, **values, comment=comment
                    )
                else:
                    directory.add_outbound_connector(
                        scope, tenant, planned.name, planned.type, **values, comment=comment
                    )
                changes.append(Change(what, planned.name, "created", planned.purpose))
                continue
            differing = [k for k, v in values.items() if not same_setting(k, getattr(existing, k, None), v)]
            if not differing and existing.enabled:
                changes.append(Change(what, planned.name, "unchanged"))
                continue
            if planned.side is ConnectorSide.INBOUND:
                directory.set_inbound_connector(scope, tenant, planned.name, enabled=True, **values)
            else:
                directory.set_outbound_connector(scope, tenant, planned.name, enabled=True, **values)
            detail = ", ".join(differing) if differing else "was disabled"
            changes.append(Change(what, planned.name, "updated", detail))
        if plan.domain_type is not None:
            for domain in domains:
                if domain.type is not plan.domain_type:
                    current = f"domain {domain.name}"
                    directory.set_domain_type(scope, domain.name, plan.domain_type)
                    changes.append(
                        Change("domain", domain.name, plan.domain_type.value, f"was {domain.type.value}")
                    )
        current = f"scenario {plan.recorded_name}"
        directory.set_scenario(scope, tenant, plan.recorded_name, plan.parameters.as_json())
        changes.append(Change("scenario", plan.recorded_name, "recorded"))
    except DirectoryError as error:
        done = "; ".join(f"{c.what} {c.name} {c.action}" for c in changes) or "nothing"
        raise ApplyInterrupted(
            f"the directory refused the {current}: {error}. Done before it: {done}. Fix it and run the "
            "same command again (an apply that is repeated completes what is missing)",
            changes,
        ) from error
    return changes


def _domains(planned: ConnectorPlan) -> set[str]:
    value = planned.values.get("recipient_domains", ())
    return {str(d) for d in value} if isinstance(value, tuple) else set()


def _conflicts(
    plan: ScenarioPlan,
    inbound: Mapping[str, InboundConnector],
    outbound: Mapping[str, OutboundConnector],
    routed: set[str],
    removed: Sequence[OutboundConnector],
) -> None:
    """`ScenarioError` for what the plan cannot do around the tenant's own connectors, before any write:
    a connector of a planned name but another type, another connector routing a planned domain."""
    for planned in plan.connectors:
        existing = (inbound if planned.side is ConnectorSide.INBOUND else outbound).get(planned.name.lower())
        if existing is not None and existing.type is not planned.type:
            raise ScenarioError(
                f"the tenant has a {existing.type.value} {planned.side.value} connector named "
                f"{existing.name}; {plan.recorded_name} needs one of type {planned.type.value} by that "
                f"name: remove or rename it (`postroom connector {planned.side.value} remove "
                f"{existing.name}`), then apply again"
            )
    planned_names = {c.name.lower() for c in plan.connectors}
    for key, connector in outbound.items():
        shared = sorted(routed & set(connector.recipient_domains))
        if shared and key not in planned_names and connector not in removed and not connector.rule_scoped:
            raise ScenarioError(
                f"the outbound connector {connector.name} already routes {shared[0]}, which "
                f"{plan.recorded_name}'s on-premises connector must route (one connector per recipient "
                f"domain): remove it (`postroom connector outbound remove {connector.name}`) or change its "
                "recipient domains, then apply again"
            )


def scenario_dns(service: ServiceSettings, plan: ScenarioPlan, domain: AcceptedDomain) -> DomainDns:
    """The MX and the one SPF record `domain` publishes under `plan`."""
    facts = _plan_facts(DomainFacts(domain.name, domain.domain_key, None), plan)
    records: list[DnsRecord] = []
    notes: list[str] = []
    mx = mx_record(service, facts)
    if mx is not None:
        records.append(mx)
    else:
        notes.append(
            f"MX: keep the MX record the third-party filtering service gave you for {domain.name}; no MX "
            "may point at Postroom (mail must come through the third party, whose connector is locked down)"
        )
    spf = spf_record(service, facts)
    records.append(spf)
    lookups = spf_lookup_terms(spf.value)
    if lookups > SPF_LOOKUP_LIMIT:
        notes.append(
            f"SPF: the record has {lookups} terms that cost DNS lookups, more than the {SPF_LOOKUP_LIMIT} "
            "receivers allow (permerror): list senders by ip4:/ip6: instead of include"
        )
    else:
        notes.append(
            f"SPF: merge any other sender you already list into this one record ({lookups} of "
            f"{SPF_LOOKUP_LIMIT} lookups here, each include counting what it includes too; "
            "`postroom scenario check` counts them all)"
        )
    if domain.status is not DomainStatus.VERIFIED:
        notes.append(f"{domain.name} is not verified yet: it receives no mail until `postroom domain verify`")
    return DomainDns(domain.name, tuple(records), tuple(notes))


def spf_lookup_terms(value: str) -> int:
    """The terms of an SPF record that each cost a DNS lookup (not counting what includes include)."""
    return sum(1 for term in parse_spf(value).terms if term.name in _LOOKUP_TERMS)


def _plan_facts(facts: DomainFacts, plan: ScenarioPlan) -> DomainFacts:
    elsewhere = None
    if plan.mx_at is not MxAt.SERVICE:
        elsewhere = MxElsewhere(plan.recorded_name, MX_AT_WORDS[plan.mx_at], plan.mx_host)
    return replace(
        facts, spf_senders=plan.spf_senders, spf_includes=plan.spf_includes, mx_elsewhere=elsewhere
    )


def under_scenario(facts: DomainFacts, applied: AppliedScenario | None) -> DomainFacts:
    """`facts` with the MX and SPF senders of the tenant's scenario, when it covers the domain (as
    stored: a scenario whose parameters no longer plan, a domain since removed, still says where the
    MX is; `scenario check` reports what no longer holds)."""
    if applied is None or applied.scenario is None or facts.name not in applied.parameters.domains:
        return facts
    row, parameters = applied.scenario, applied.parameters
    mx_at, host = scenario_mx(row, parameters)
    elsewhere = MxElsewhere(applied.name, MX_AT_WORDS[mx_at], host) if mx_at is not MxAt.SERVICE else None
    return replace(
        facts,
        spf_senders=scenario_spf_senders(row, parameters),
        spf_includes=parameters.spf_includes,
        mx_elsewhere=elsewhere,
    )


def apply_command(scenario: str, tenant: str, parameters: ScenarioParameters) -> str:
    """The `postroom scenario apply` command line that applies `scenario` with `parameters`."""
    words = ["postroom", "scenario", "apply", scenario, "--tenant", tenant]
    for key, value in parameters.as_json().items():
        option = OPTIONS[key]
        for item in value if isinstance(value, list) else [value] if value else []:
            words += [option, str(item)]
    return "`" + " ".join(words) + "`"


# --- check ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ScenarioDiagnosis:
    """A tenant checked against its scenario: the findings, domain by domain, then the connectors."""

    tenant: str
    scenario: str  # "" when the tenant applied none
    findings: tuple[Finding, ...]

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity is Severity.ERROR)

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity is Severity.WARNING)

    def codes(self) -> list[str]:
        return [f.code.value for f in self.findings]

    def as_json(self) -> dict[str, object]:
        return {
            "tenant": self.tenant,
            "scenario": self.scenario,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "findings": [f.as_json() for f in self.findings],
        }


async def check_scenario(
    directory: ScenarioDirectory, resolver: Resolver, service: ServiceSettings, scope: Scope, tenant: str
) -> ScenarioDiagnosis:
    """Check `tenant` against the scenario it applied (see `dns.diagnosis.scenario`)."""
    found = directory.get_tenant(scope, tenant)
    applied = directory.applied_scenario(scope, found.name)
    if applied is None:
        finding = Finding(
            FindingCode.SCENARIO_NONE,
            Severity.WARNING,
            found.name,
            f"tenant {found.name} applied no scenario: `postroom domain check` checks its domains as hosted",
            fix="apply the scenario its mail flow follows: "
            f"`postroom scenario apply NAME --tenant {found.name}` (`postroom scenario list`)",
        )
        return ScenarioDiagnosis(found.name, "", (finding,))
    tenant_domains = directory.list_domains(scope, found.name)
    try:
        plan = applied.plan(tenant_domains)
    except DirectoryError as error:
        finding = Finding(
            FindingCode.SCENARIO_INVALID,
            Severity.ERROR,
            found.name,
            f"the scenario {applied.name} the tenant applied no longer fits its directory: {error}",
            fix=f"apply it again with parameters that fit (`postroom scenario apply {applied.name} "
            f"--tenant {found.name} ...`)",
        )
        return ScenarioDiagnosis(found.name, applied.name, (finding,))
    fix_apply = apply_command(plan.recorded_name, found.name, plan.parameters)
    by_name = {d.name: d for d in tenant_domains}
    findings: list[Finding] = []
    for name in plan.parameters.domains:
        domain = by_name[name]  # the plan checked that each is the tenant's
        if domain.status is not DomainStatus.VERIFIED:
            findings.append(
                Finding(
                    FindingCode.DOMAIN_PENDING,
                    Severity.WARNING,
                    name,
                    f"{name} is not verified: it receives no mail",
                    fix=f"`postroom domain verify {name}`",
                )
            )
        facts = _plan_facts(DomainFacts(domain.name, domain.domain_key, None), plan)
        wanted = plan.domain_type.value if plan.domain_type is not None else None
        findings += await check_scenario_domain(
            resolver,
            service,
            facts,
            scenario=plan.recorded_name,
            domain_type=domain.type.value,
            wanted_type=wanted,
            fix_type=f"`postroom domain set {name} --type {wanted}`, or {fix_apply}",
        )
    inbound = directory.inbound_connectors(scope, found.name)
    outbound = directory.outbound_connectors(scope, found.name)
    existing = {c.name.lower() for c in outbound}
    validations: dict[str, Sequence[Validation]] = {}
    for planned in plan.connectors:
        if planned.side is ConnectorSide.OUTBOUND and planned.name.lower() in existing:
            history = directory.connector_validations(scope, found.name, planned.name)
            validations[planned.name] = sorted(history, key=lambda v: v.at, reverse=True)
    findings += check_connectors(
        plan.connectors,
        inbound,
        outbound,
        validations,
        scenario=plan.recorded_name,
        previous=planned_connector_names() - {DEVICE_CONNECTOR},
        fix_apply=fix_apply,
        fix_validate=f"`postroom connector validate {{name}} --tenant {found.name} --to ADDRESS` (an address "
        "the destination hosts)",
    )
    return ScenarioDiagnosis(found.name, plan.recorded_name, tuple(findings))
