"""A tenant checked against the scenario it applied (spec §4): its domains' DNS, types and connectors.

`postroom scenario check` calls these with what the directory holds and what the scenario's plan
says (`directory.scenarios.ScenarioPlan`, seen here through the small protocols below, since the `dns`
room does not import the directory). Findings are the `domain check` kind (`Finding`: a code, a
severity, the name it is about, what was found, the fix), in this order:

- per domain (`check_scenario_domain`): the MX where the scenario puts it (the MX area of `domain
  check`, with the scenario's host: `mx.scenario-host` / `mx.scenario-mismatch`, or `mx.ok` when it is
  Postroom's), the SPF area of `domain check`, then `spf.scenario-senders`: every address the scenario
  sends from (on-premises, third party, devices) is listed by an `ip4:`/`ip6:` term of the one record
  (an error; a warning when the record has other includes, which this check does not follow and which
  may list it); then the domain's type (`domain-type.ok` / `domain-type.wrong`);
- per planned connector (`check_connectors`): it exists (`connector.missing`), has the planned type
  (`connector.wrong-type`), is enabled (`connector.disabled`), has the planned settings (a setting
  that identifies the source or the destination: `connector.mismatch`, an error; a recommended one, TLS
  or enhanced filtering: `connector.differs`, a warning), and, for an outbound connector, its last
  validation passed (`connector.validated`; `connector.never-validated` is a warning with the command
  to run; `connector.validation-failed` an error with the reply); and every connector of another
  scenario that is still enabled (`connector.previous-scenario`, a warning: a third party's lock-down
  left enabled refuses mail that no longer comes through it).

Nothing here writes; DNS is asked through the `Resolver` seam, fresh, like `domain check`.
*Security:* what DNS returns is parsed by the strict SPF parser and quoted back, never evaluated.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Mapping, Sequence
from typing import Protocol

from postroom.config.settings import ServiceSettings
from postroom.dns.diagnosis.common import Check, Finding, FindingCode, Severity, quote
from postroom.dns.diagnosis.mx import check_mx
from postroom.dns.diagnosis.spf import check_spf, merged_spf
from postroom.dns.records import DomainFacts, NotADomainName, domain_records
from postroom.dns.resolver import DnsTemporaryError, NxDomain, Resolver
from postroom.dns.spf import SpfSyntaxError, is_spf_record, parse_spf
from postroom.model.connectors import InboundConnector, OutboundConnector


class PlannedConnector(Protocol):
    """A connector a scenario needs (`directory.scenarios.ConnectorPlan`)."""

    @property
    def side(self) -> str: ...  # "inbound" | "outbound"

    @property
    def name(self) -> str: ...

    @property
    def type(self) -> str: ...  # a ConnectorType value

    @property
    def values(self) -> dict[str, object]: ...

    @property
    def recommended(self) -> frozenset[str]: ...


class Validation(Protocol):
    """One recipient's result of a connector validation run (`model.connectors.ValidationResult`)."""

    @property
    def run(self) -> str: ...

    @property
    def recipient(self) -> str: ...

    @property
    def ok(self) -> bool: ...

    @property
    def reply(self) -> str: ...

    @property
    def at(self) -> float: ...


async def check_scenario_domain(
    resolver: Resolver,
    service: ServiceSettings,
    facts: DomainFacts,
    *,
    scenario: str,
    domain_type: str,
    wanted_type: str | None,
    fix_type: str,
) -> list[Finding]:
    """The MX, SPF and type of one domain under the scenario (`facts` carry its MX and SPF senders:
    `app.scenarios.under_scenario`). `wanted_type` None: the scenario leaves the type alone."""
    name = facts.name
    try:
        expected = domain_records(service, facts)
    except NotADomainName as error:
        return [Finding(FindingCode.DOMAIN_NOT_A_DOMAIN, Severity.ERROR, name, str(error))]
    check = Check(resolver, service, facts, None, expected)
    await check_mx(check)
    await check_spf(check)
    await _check_senders(check, scenario)
    if wanted_type is not None and domain_type != wanted_type:
        check.add(
            FindingCode.DOMAIN_TYPE_WRONG,
            Severity.ERROR,
            name,
            f"{name} is {domain_type}, but scenario {scenario} needs {wanted_type}"
            + (
                ": recipients Postroom does not host are refused (DBEB) instead of relayed to on-premises"
                if wanted_type == "internal-relay"
                else ": unknown recipients are relayed instead of refused at the edge"
            ),
            found=(domain_type,),
            fix=fix_type,
        )
    elif wanted_type is not None:
        check.add(
            FindingCode.DOMAIN_TYPE_OK, Severity.OK, name, f"{name} is {domain_type}, as {scenario} needs"
        )
    return check.findings


async def _check_senders(check: Check, scenario: str) -> None:
    """Every scenario sender in the one SPF record (the SPF area reported a missing, double or broken
    record already: nothing more is said then)."""
    wanted = check.facts.spf_senders
    if not wanted:
        return
    name = check.facts.name
    try:
        records = await check.resolver.txt(name, fresh=True)
    except NxDomain:
        return
    except DnsTemporaryError:
        return  # the SPF area reported it
    spf = [r.text for r in records if is_spf_record(r.text)]
    if len(spf) != 1:
        return
    try:
        parsed = parse_spf(spf[0])
    except SpfSyntaxError:
        return
    listed = [
        term.network for term in parsed.terms if term.name in ("ip4", "ip6") and term.qualifier in ("", "+")
    ]
    missing = []
    for sender in wanted:
        network = ipaddress.ip_network(sender, strict=False)
        if not any(
            network.version == term.version and network.subnet_of(term)  # type: ignore[arg-type]
            for term in listed
        ):
            missing.append(sender)
    if not missing:
        check.add(
            FindingCode.SPF_SCENARIO_SENDERS,
            Severity.OK,
            name,
            f"the SPF record lists every address {scenario} sends from ({', '.join(wanted)})",
            found=(quote(spf[0]),),
        )
        return
    others = [i for i in parsed.includes if i.lower() != check.service.spf_include.lower()]
    maybe = f"; it may be listed by {', '.join(others)}, which this check does not follow" if others else ""
    check.add(
        FindingCode.SPF_SCENARIO_SENDERS,
        Severity.WARNING if others else Severity.ERROR,
        name,
        f"the SPF record does not list {', '.join(missing)}, from which {scenario} sends the domain's mail: "
        f"receivers fail SPF for it{maybe}",
        found=(quote(spf[0]),),
        fix="add the addresses before the all term (below)",
        publish=(merged_spf(check, spf),),
    )


def check_connectors(
    planned: Sequence[PlannedConnector],
    inbound: Sequence[InboundConnector],
    outbound: Sequence[OutboundConnector],
    validations: Mapping[str, Sequence[Validation]],
    *,
    scenario: str,
    previous: frozenset[str],
    fix_apply: str,
    fix_validate: str,
) -> list[Finding]:
    """The tenant's connectors against the plan. `validations`: each planned outbound connector's
    history, newest first; `previous`: names other scenarios create (reported when still enabled);
    `fix_apply` is the command that applies the scenario again; `fix_validate` a command with `{name}`."""
    findings: list[Finding] = []
    inbound_by = {c.name.lower(): c for c in inbound}
    outbound_by = {c.name.lower(): c for c in outbound}

    def add(
        code: FindingCode,
        severity: Severity,
        name: str,
        message: str,
        found: tuple[str, ...] = (),
        fix: str = "",
    ) -> None:
        findings.append(Finding(code, severity, name, message, found, fix))

    for plan in planned:
        existing: InboundConnector | OutboundConnector | None = (
            inbound_by if plan.side == "inbound" else outbound_by
        ).get(plan.name.lower())
        label = f"{plan.side} connector {plan.name}"
        if existing is None:
            add(
                FindingCode.CONNECTOR_MISSING,
                Severity.ERROR,
                plan.name,
                f"the {label} that {scenario} needs does not exist",
                fix=fix_apply,
            )
            continue
        if existing.type != plan.type:
            add(
                FindingCode.CONNECTOR_WRONG_TYPE,
                Severity.ERROR,
                plan.name,
                f"the {label} is a {existing.type} connector; {scenario} needs {plan.type}",
                found=(str(existing.type),),
                fix=f"remove it (`postroom connector {plan.side} remove {plan.name}`), then {fix_apply}",
            )
            continue
        if not existing.enabled:
            add(
                FindingCode.CONNECTOR_DISABLED,
                Severity.ERROR,
                plan.name,
                f"the {label} is disabled: {scenario}'s mail does not flow through it",
                fix=f"`postroom connector {plan.side} enable {plan.name}` (with --tenant)",
            )
        wrong: list[str] = []
        differs: list[str] = []
        for key, want in plan.values.items():
            have = getattr(existing, key, None)
            if not same_setting(key, have, want):
                line = f"{key} is {shown(have)}, the scenario sets {shown(want)}"
                (differs if key in plan.recommended else wrong).append(line)
        if wrong:
            add(
                FindingCode.CONNECTOR_MISMATCH,
                Severity.ERROR,
                plan.name,
                f"the {label} does not match the scenario's parameters: {'; '.join(wrong)}",
                found=tuple(wrong),
                fix=f"{fix_apply} (with the right parameters), or change the connector",
            )
        if differs:
            add(
                FindingCode.CONNECTOR_DIFFERS,
                Severity.WARNING,
                plan.name,
                f"the {label} differs from the scenario's recommended settings: {'; '.join(differs)}",
                found=tuple(differs),
                fix=f"{fix_apply} restores them; keep yours if you chose them",
            )
        if not wrong and not differs and existing.enabled:
            add(
                FindingCode.CONNECTOR_OK,
                Severity.OK,
                plan.name,
                f"the {label} exists, is enabled and matches the scenario",
            )
        if plan.side == "outbound":
            findings.append(_validation(plan.name, label, validations.get(plan.name, ()), fix_validate))
    planned_names = {p.name.lower() for p in planned}
    every: list[InboundConnector | OutboundConnector] = [*inbound, *outbound]
    for connector in every:
        key = connector.name.lower()
        if key in previous and key not in planned_names and connector.enabled:
            side = "inbound" if isinstance(connector, InboundConnector) else "outbound"
            add(
                FindingCode.CONNECTOR_PREVIOUS_SCENARIO,
                Severity.WARNING,
                connector.name,
                f"the {side} connector {connector.name} belongs to another scenario and is still enabled: "
                "it may refuse or divert mail this scenario routes otherwise",
                fix=f"`postroom connector {side} disable {connector.name}` (with --tenant), or remove it",
            )
    return findings


def _validation(name: str, label: str, history: Sequence[Validation], fix_validate: str) -> Finding:
    command = fix_validate.format(name=name)
    if not history:
        return Finding(
            FindingCode.CONNECTOR_NEVER_VALIDATED,
            Severity.WARNING,
            name,
            f"the {label} was never validated: nothing has shown that mail over it arrives",
            fix=command,
        )
    last = history[0].run
    run = [v for v in history if v.run == last]
    failed = [v for v in run if not v.ok]
    if failed:
        return Finding(
            FindingCode.CONNECTOR_VALIDATION_FAILED,
            Severity.ERROR,
            name,
            f"the last validation of the {label} failed for {', '.join(v.recipient for v in failed)}",
            found=tuple(quote(f"{v.recipient}: {v.reply}") for v in failed),
            fix=f"fix what the reply says (`postroom connector show {name}` has the steps), then {command}",
        )
    return Finding(
        FindingCode.CONNECTOR_VALIDATED,
        Severity.OK,
        name,
        f"the last validation of the {label} passed ({', '.join(v.recipient for v in run)})",
    )


def same_setting(key: str, have: object, want: object) -> bool:
    """Whether a connector's setting is what the plan wants: lists compared as sets (addresses as
    networks, names case-insensitively), enums by value."""
    if isinstance(want, tuple):
        if not isinstance(have, tuple | list):
            return False
        return _normal_set(key, have) == _normal_set(key, want)
    if isinstance(want, str):
        return str(have).lower() == want.lower()
    return have == want


def _normal_set(key: str, values: Sequence[object]) -> frozenset[str]:
    normal = set()
    for value in values:
        text = str(value).strip().lower().rstrip(".")
        if key in ("sender_ips", "ef_skip_ips"):
            with contextlib.suppress(ValueError):  # stored as written; compared as given then
                text = str(ipaddress.ip_network(text, strict=False))
        normal.add(text)
    return frozenset(normal)


def shown(value: object) -> str:
    if isinstance(value, tuple | list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    if isinstance(value, str):
        return repr(value) if value else "''"
    return str(value).lower() if isinstance(value, bool) else str(value)
