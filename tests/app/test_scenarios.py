"""`scenario apply` and `scenario check` (app.scenarios), and `domain check` under a tenant's scenario.

Apply runs against the in-memory twin of the directory's connector service (tests/support/scenarios.py)
over a real directory (tenants, domains and their types); check asks a real DNS server on loopback.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from postroom.app import App
from postroom.app.domain_dns import check_domains_dns, domain_facts, mta_sts_policy_text
from postroom.app.scenarios import (
    ApplyInterrupted,
    ScenarioDiagnosis,
    apply_scenario,
    check_scenario,
)
from postroom.config.settings import ServiceSettings
from postroom.directory import Directory, DomainType, NotFoundError
from postroom.directory.scenarios import ScenarioError, ScenarioParameters, UnsupportedScenario
from postroom.dns import DnsRecord, DnsResolver, FindingCode, Severity, domain_records, service_records
from postroom.model.connectors import ConnectorType, OutboundTls
from postroom.model.scope import OPERATOR, TenantScope
from tests.support.dns_server import DnsTestServer
from tests.support.node import make_node
from tests.support.scenarios import ConnectorTwin, Validation, record_scenario

SERVICE = ServiceSettings(domain="postroom.test", hostname="mx.postroom.test", addresses=("127.0.0.1",))
MX_HOST = "contoso-com.mail.protection.postroom.test"
HYBRID = ScenarioParameters(
    on_premises_host="mail.contoso.com",
    on_premises_ips=("203.0.113.5",),
    on_premises_certificate_name="*.contoso.com",
)
SPF = "v=spf1 ip4:203.0.113.5 include:spf.protection.postroom.test -all"


@pytest.fixture
def twin(directory: Directory) -> ConnectorTwin:
    directory.add_tenant(OPERATOR, "contoso")
    directory.add_domain(OPERATOR, "contoso.com", "contoso", verified=True)
    directory.add_tenant(OPERATOR, "fabrikam")
    directory.add_domain(OPERATOR, "fabrikam.com", "fabrikam", verified=True)
    return ConnectorTwin(directory)


def apply(twin: ConnectorTwin, name: str, parameters: ScenarioParameters = HYBRID, **options: bool):  # type: ignore[no-untyped-def]
    return apply_scenario(twin, SERVICE, OPERATOR, "contoso", name, parameters, **options)


def test_apply_creates_the_connectors_then_the_domain_type_then_the_record(twin: ConnectorTwin) -> None:
    applied = apply(twin, "hybrid-1")
    assert [(c.what, c.name, c.action) for c in applied.changes] == [
        ("inbound connector", "hybrid-1-on-premises-inbound", "created"),
        ("outbound connector", "hybrid-1-on-premises-outbound", "created"),
        ("domain", "contoso.com", "internal-relay"),
        ("scenario", "hybrid-1", "recorded"),
    ]
    assert twin.writes == [
        "connector hybrid-1-on-premises-inbound",
        "connector hybrid-1-on-premises-outbound",
        "domain contoso.com",
        "scenario hybrid-1",
    ], "the domain relays to on-premises only once its connector exists"
    contoso = twin.directory.get_tenant(OPERATOR, "contoso").id
    outbound = twin.outbound[(contoso, "hybrid-1-on-premises-outbound")]
    assert (outbound.smart_hosts, outbound.recipient_domains, outbound.tls) == (
        ("mail.contoso.com",),
        ("contoso.com",),
        OutboundTls.DOMAIN_VALIDATION,
    )
    assert twin.directory.get_domain(OPERATOR, "contoso.com").type is DomainType.INTERNAL_RELAY
    [dns] = applied.dns
    assert [(r.type, r.value) for r in dns.records] == [("MX", MX_HOST), ("TXT", SPF)]
    assert twin.scenarios[contoso].parameters.domains == ("contoso.com",)

    again = apply(twin, "hybrid-1")
    assert [c.action for c in again.changes] == ["unchanged", "unchanged", "recorded"]


def test_another_scenario_disables_the_previous_ones_connectors(twin: ConnectorTwin) -> None:
    lockdown = ScenarioParameters(third_party_ips=("198.51.100.0/24",), third_party_host="mx.filter.example")
    apply(twin, "third-party-filtering", lockdown)
    switched = apply(twin, "hybrid-1")
    assert ("inbound connector", "third-party-filtering-partner-inbound", "disabled") in [
        (c.what, c.name, c.action) for c in switched.changes
    ], "a lock-down left enabled would refuse mail that no longer comes through the third party"
    hosted = apply(twin, "hosted", ScenarioParameters())
    assert {c.name for c in hosted.changes if c.action == "disabled"} == {
        "hybrid-1-on-premises-inbound",
        "hybrid-1-on-premises-outbound",
    }
    assert twin.directory.get_domain(OPERATOR, "contoso.com").type is DomainType.AUTHORITATIVE
    back = apply(twin, "third-party-filtering", lockdown)
    assert ("inbound connector", "third-party-filtering-partner-inbound", "updated", "was disabled") in [
        (c.what, c.name, c.action, c.detail) for c in back.changes
    ]


def test_a_previous_outbound_connector_for_the_same_domains_gives_way(twin: ConnectorTwin) -> None:
    apply(twin, "hybrid-1")
    switched = apply(twin, "hybrid-2")  # centralized mail transport: its own connector for contoso.com
    assert [(c.name, c.action) for c in switched.changes] == [
        ("hybrid-1-on-premises-outbound", "removed"),
        ("hybrid-1-on-premises-inbound", "disabled"),
        ("hybrid-2-on-premises-inbound", "created"),
        ("hybrid-2-on-premises-outbound", "created"),
        ("hybrid-2", "recorded"),
    ]
    contoso = twin.directory.get_tenant(OPERATOR, "contoso").id
    assert twin.outbound[(contoso, "hybrid-2-on-premises-outbound")].route_all_via_on_premises


def test_an_own_connector_routing_the_domain_stops_the_apply_before_any_write(twin: ConnectorTwin) -> None:
    twin.add_outbound_connector(
        OPERATOR, "contoso", "legacy", ConnectorType.ON_PREMISES, recipient_domains=("contoso.com",)
    )
    twin.writes.clear()
    with pytest.raises(ScenarioError, match=r"legacy already routes contoso\.com"):
        apply(twin, "filtering-only")
    assert twin.writes == []


def test_devices_join_the_scenario_and_stay(twin: ConnectorTwin) -> None:
    apply(twin, "hybrid-3")
    devices = apply(twin, "devices", ScenarioParameters(device_ips=("192.0.2.10",)))
    assert [(c.name, c.action) for c in devices.changes] == [
        ("devices-relay-inbound", "created"),
        ("hybrid-3", "recorded"),
    ], "the hybrid's connectors and domain types are left alone"
    [dns] = devices.dns
    assert [(r.type, r.value) for r in dns.records] == [
        ("MX", "mail.contoso.com"),
        ("TXT", "v=spf1 ip4:203.0.113.5 ip4:192.0.2.10 include:spf.protection.postroom.test -all"),
    ]
    again = apply(twin, "hybrid-3")  # no --device-ip: the devices' relay is kept
    assert ("devices-relay-inbound", "unchanged") in [(c.name, c.action) for c in again.changes]
    assert "ip4:192.0.2.10" in again.dns[0].records[1].value


def test_a_conflict_is_found_before_anything_is_written(twin: ConnectorTwin) -> None:
    twin.add_inbound_connector(OPERATOR, "contoso", "hybrid-1-on-premises-inbound", ConnectorType.PARTNER)
    twin.writes.clear()
    with pytest.raises(ScenarioError, match="partner inbound connector named hybrid-1-on-premises-inbound"):
        apply(twin, "hybrid-1")
    assert twin.writes == []


def test_a_refused_step_says_what_was_done_and_a_second_apply_completes_it(twin: ConnectorTwin) -> None:
    twin.refuse = "hybrid-1-on-premises-outbound"
    with pytest.raises(ApplyInterrupted) as interrupted:
        apply(twin, "hybrid-1")
    message = str(interrupted.value)
    assert "outbound connector hybrid-1-on-premises-outbound" in message
    assert (
        "inbound connector hybrid-1-on-premises-inbound created" in message
        and "run the same command" in message
    )
    assert twin.directory.get_domain(OPERATOR, "contoso.com").type is DomainType.AUTHORITATIVE
    assert twin.scenarios == {}
    twin.refuse = ""
    completed = apply(twin, "hybrid-1")
    assert [c.action for c in completed.changes] == ["unchanged", "created", "internal-relay", "recorded"]


def test_dry_run_and_refusals_write_nothing(twin: ConnectorTwin) -> None:
    dry = apply(twin, "hybrid-2", dry_run=True)
    assert dry.dry_run and twin.writes == []
    assert [c.action for c in dry.changes] == [
        "create or update",
        "create or update",
        "internal-relay",
        "record",
    ]
    with pytest.raises(UnsupportedScenario):
        apply(twin, "third-party-no-filtering")
    with pytest.raises(ScenarioError, match="no scenario named 'hybrid-9'"):
        apply(twin, "hybrid-9")
    fabrikam = TenantScope(twin.directory.get_tenant(OPERATOR, "fabrikam").id)
    with pytest.raises(NotFoundError):  # another tenant's admin: contoso does not exist for it
        apply_scenario(twin, SERVICE, fabrikam, "contoso", "hybrid-1", HYBRID)
    assert twin.writes == []


def test_an_spf_record_past_ten_lookups_is_called_out(twin: ConnectorTwin) -> None:
    includes = tuple(f"spf{i}.vendor.example" for i in range(10))
    applied = apply(twin, "hosted", ScenarioParameters(spf_includes=includes), dry_run=True)
    assert "11 terms that cost DNS lookups" in " ".join(applied.dns[0].notes)


# --- check -------------------------------------------------------------------------------------------
def zone(*records: DnsRecord) -> str:
    return "\n".join(r.zone_line() for r in records) + "\n"


@pytest.fixture
def dns_server() -> Iterator[DnsTestServer]:
    service = zone(*service_records(SERVICE, []), DnsRecord("A", MX_HOST, "127.0.0.1"))
    contoso = zone(
        DnsRecord("MX", "contoso.com", "mail.contoso.com", priority=10),
        DnsRecord("A", "mail.contoso.com", "203.0.113.5"),
        DnsRecord("TXT", "contoso.com", SPF),
    )
    with DnsTestServer({"postroom.test": service, "contoso.com": contoso}) as server:
        yield server


async def check(twin: ConnectorTwin, server: DnsTestServer) -> ScenarioDiagnosis:
    return await check_scenario(twin, DnsResolver(server.settings()), SERVICE, OPERATOR, "contoso")


def severity(diagnosis: ScenarioDiagnosis, code: FindingCode) -> list[tuple[str, Severity]]:
    return [(f.name, f.severity) for f in diagnosis.findings if f.code is code]


async def test_a_tenant_that_did_what_its_scenario_says_checks_clean(
    twin: ConnectorTwin, dns_server: DnsTestServer
) -> None:
    apply(twin, "hybrid-3")
    contoso = twin.directory.get_tenant(OPERATOR, "contoso").id
    twin.validations[(contoso, "hybrid-3-on-premises-outbound")] = [
        Validation("old", "onprem1@contoso.com", False, "450 4.4.316 refused", 1.0),
        Validation("new", "onprem1@contoso.com", True, "", 2.0),
    ]
    diagnosis = await check(twin, dns_server)
    assert diagnosis.errors == () and diagnosis.warnings == (), diagnosis.as_json()
    assert diagnosis.codes() == [
        "mx.scenario-host",
        "spf.ok",
        "spf.scenario-senders",
        "domain-type.ok",
        "connector.ok",
        "connector.ok",
        "connector.validated",
    ]
    assert FindingCode.MX_WRONG_HOST.value not in diagnosis.codes()


async def test_each_departure_from_the_scenario_is_found(
    twin: ConnectorTwin, dns_server: DnsTestServer
) -> None:
    apply(twin, "third-party-filtering", ScenarioParameters(third_party_ips=("198.51.100.7",)))
    apply(twin, "hybrid-3")
    contoso = twin.directory.get_tenant(OPERATOR, "contoso").id
    twin.set_inbound_connector(OPERATOR, "contoso", "third-party-filtering-partner-inbound", enabled=True)
    twin.set_inbound_connector(
        OPERATOR, "contoso", "hybrid-3-on-premises-inbound", sender_ips=("203.0.113.99",)
    )
    twin.set_outbound_connector(
        OPERATOR, "contoso", "hybrid-3-on-premises-outbound", tls=OutboundTls.OPPORTUNISTIC
    )
    twin.directory.set_domain_type(OPERATOR, "contoso.com", DomainType.AUTHORITATIVE)
    # The MX was moved back to Postroom, and the on-premises address left out of SPF.
    dns_server.remove_records("contoso.com", "MX")
    dns_server.add_records("contoso.com", "MX", f"0 {MX_HOST}.")
    dns_server.remove_records("contoso.com", "TXT")
    dns_server.add_txt("contoso.com", "v=spf1 include:spf.protection.postroom.test -all")
    twin.validations[(contoso, "hybrid-3-on-premises-outbound")] = [
        Validation("r1", "onprem1@contoso.com", False, "450 4.4.316 Connection refused", 3.0)
    ]
    diagnosis = await check(twin, dns_server)
    codes = diagnosis.codes()
    assert "mx.wrong-host" not in codes
    [mismatch] = [f for f in diagnosis.findings if f.code is FindingCode.MX_NOT_AT_SCENARIO_HOST]
    assert mismatch.severity is Severity.ERROR and "bypasses" in mismatch.message
    assert [r.value for r in mismatch.publish] == ["mail.contoso.com"]
    [senders] = [f for f in diagnosis.findings if f.code is FindingCode.SPF_SCENARIO_SENDERS]
    assert senders.severity is Severity.ERROR and "203.0.113.5" in senders.message
    assert senders.publish[0].value == SPF
    assert severity(diagnosis, FindingCode.DOMAIN_TYPE_WRONG) == [("contoso.com", Severity.ERROR)]
    assert severity(diagnosis, FindingCode.CONNECTOR_MISMATCH) == [
        ("hybrid-3-on-premises-inbound", Severity.ERROR)
    ]
    assert severity(diagnosis, FindingCode.CONNECTOR_DIFFERS) == [
        ("hybrid-3-on-premises-outbound", Severity.WARNING)
    ]
    assert severity(diagnosis, FindingCode.CONNECTOR_VALIDATION_FAILED) == [
        ("hybrid-3-on-premises-outbound", Severity.ERROR)
    ]
    assert severity(diagnosis, FindingCode.CONNECTOR_PREVIOUS_SCENARIO) == [
        ("third-party-filtering-partner-inbound", Severity.WARNING)
    ]
    fix = next(f.fix for f in diagnosis.findings if f.code is FindingCode.CONNECTOR_MISMATCH)
    assert (
        "postroom scenario apply hybrid-3 --tenant contoso" in fix and "--on-premises-ip 203.0.113.5" in fix
    )


async def test_missing_disabled_and_never_validated_connectors(
    twin: ConnectorTwin, dns_server: DnsTestServer
) -> None:
    apply(twin, "hybrid-3")
    contoso = twin.directory.get_tenant(OPERATOR, "contoso").id
    del twin.inbound[(contoso, "hybrid-3-on-premises-inbound")]
    twin.set_outbound_connector(OPERATOR, "contoso", "hybrid-3-on-premises-outbound", enabled=False)
    diagnosis = await check(twin, dns_server)
    assert severity(diagnosis, FindingCode.CONNECTOR_MISSING) == [
        ("hybrid-3-on-premises-inbound", Severity.ERROR)
    ]
    assert severity(diagnosis, FindingCode.CONNECTOR_DISABLED) == [
        ("hybrid-3-on-premises-outbound", Severity.ERROR)
    ]
    [never] = [f for f in diagnosis.findings if f.code is FindingCode.CONNECTOR_NEVER_VALIDATED]
    assert never.severity is Severity.WARNING
    assert "postroom connector validate hybrid-3-on-premises-outbound --tenant contoso --to" in never.fix


async def test_a_tenant_without_a_scenario(twin: ConnectorTwin, dns_server: DnsTestServer) -> None:
    diagnosis = await check(twin, dns_server)
    assert [(f.code, f.severity) for f in diagnosis.findings] == [
        (FindingCode.SCENARIO_NONE, Severity.WARNING)
    ]


# --- domain check under a scenario -------------------------------------------------------------------
def test_domain_check_judges_the_mx_by_the_tenants_scenario(tmp_path: Path) -> None:
    with DnsTestServer() as server:
        settings = make_node(tmp_path / "node", nameservers=(str(server.address),))
        app = App.open(settings)
        try:
            d = app.directory
            contoso = d.add_tenant(OPERATOR, "contoso")
            d.add_domain(OPERATOR, "contoso.com", "contoso", verified=True)
            d.add_tenant(OPERATOR, "fabrikam")
            d.add_domain(OPERATOR, "fabrikam.com", "fabrikam", verified=True)
            facts = domain_facts(d, "contoso.com")
            assert facts.mx_elsewhere is None
            parameters = dataclasses.replace(HYBRID, domains=("contoso.com",))
            record_scenario(app.database, contoso.id, "hybrid-4", parameters.as_json())
            facts = domain_facts(d, "contoso.com")
            assert facts.mx_elsewhere is not None and facts.mx_elsewhere.host == "mail.contoso.com"
            assert facts.spf_senders == ("203.0.113.5",)
            # What `domain records` prints is what the scenario puts: MX at on-premises, its address in SPF.
            records = domain_records(settings.service, facts)
            server.set_zone("contoso.com", zone(*records, DnsRecord("A", "mail.contoso.com", "203.0.113.5")))
            server.set_zone("postroom.test", zone(*service_records(settings.service, [])))
            server.set_zone("fabrikam.com", "")
            policy = mta_sts_policy_text(d, settings, "contoso.com")
            assert policy is not None and "mx: mail.contoso.com" in policy
            assert "mx: mail.contoso.com" not in (mta_sts_policy_text(d, settings, "fabrikam.com") or "")

            [checked, other] = asyncio.run(
                check_domains_dns(
                    d, settings, DnsResolver(server.settings()), ["contoso.com", "fabrikam.com"]
                )
            )
            mx = [f for f in checked.findings if f.code.value.startswith("mx.")]
            assert [(f.code, f.severity) for f in mx] == [(FindingCode.MX_AT_SCENARIO_HOST, Severity.OK)]
            assert "scenario hybrid-4" in mx[0].message
            # fabrikam has no scenario: its missing MX is still the hosted finding.
            assert FindingCode.MX_MISSING.value in other.codes()

            server.remove_records("contoso.com", "MX")
            server.add_records("contoso.com", "MX", f"0 {settings.service.mx_host(facts.domain_key)}.")
            [moved] = asyncio.run(
                check_domains_dns(d, settings, DnsResolver(server.settings()), ["contoso.com"])
            )
            assert FindingCode.MX_WRONG_HOST.value not in moved.codes()
            assert moved.find(FindingCode.MX_NOT_AT_SCENARIO_HOST).severity is Severity.ERROR
        finally:
            app.close()
