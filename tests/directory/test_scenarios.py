"""The scenario table as data and the plans it makes (directory.scenarios), the domain type setter, and
the applied scenario's read side, tenant by tenant.

Refusals are asserted from the attacker's side too: a tenant naming another organization's certificate
for its on-premises server, another tenant's domain, the service's own zone.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from postroom.app import remove_tenant
from postroom.directory import (
    CachedDirectory,
    Directory,
    DomainType,
    InvalidInputError,
    NotFoundError,
)
from postroom.directory.scenarios import (
    DEVICE_CONNECTOR,
    SCENARIOS,
    ConnectorSide,
    MxAt,
    ScenarioError,
    ScenarioParameters,
    UnsupportedScenario,
    choose_domains,
    plan_scenario,
    planned_connector_names,
)
from postroom.model.connectors import ConnectorType, OutboundTls
from postroom.model.scope import OPERATOR, TenantScope
from postroom.storage import Database, FileBlobStore
from tests.support.scenarios import record_scenario

ON_PREMISES = ScenarioParameters(
    domains=("contoso.com",),
    on_premises_host="mail.contoso.com",
    on_premises_ips=("203.0.113.5",),
    on_premises_certificate_name="*.contoso.com",
)
THIRD_PARTY = ScenarioParameters(
    domains=("contoso.com",),
    third_party_host="mx.filter.example",
    third_party_ips=("198.51.100.0/24",),
)


@pytest.fixture
def org(directory: Directory) -> Directory:
    directory.add_tenant(OPERATOR, "contoso")
    directory.add_domain(OPERATOR, "contoso.com", "contoso", verified=True)
    directory.add_domain(OPERATOR, "sales.contoso.com", "contoso", verified=True)
    directory.add_domain(OPERATOR, "pending.contoso.net", "contoso")
    directory.add_tenant(OPERATOR, "fabrikam")
    directory.add_domain(OPERATOR, "fabrikam.com", "fabrikam", verified=True)
    return directory


def plan(org: Directory, name: str, parameters: ScenarioParameters, tenant: str = "contoso"):  # type: ignore[no-untyped-def]
    return plan_scenario(SCENARIOS[name], parameters, org.list_domains(OPERATOR, tenant))


def test_every_row_of_the_spec_table_is_there() -> None:
    assert list(SCENARIOS) == [
        "hosted",
        "third-party-filtering",
        "third-party-no-filtering",
        "hybrid-1",
        "hybrid-2",
        "hybrid-3",
        "hybrid-4",
        "third-party-hybrid",
        "devices",
        "filtering-only",
    ]
    assert [s.name for s in SCENARIOS.values() if not s.supported] == ["third-party-no-filtering"]
    internal_relay = {s.name for s in SCENARIOS.values() if s.domain_type is DomainType.INTERNAL_RELAY}
    assert internal_relay == {
        "hybrid-1",
        "hybrid-2",
        "hybrid-3",
        "hybrid-4",
        "third-party-hybrid",
        "filtering-only",
    }


# (scenario, parameters, MX at, MX host, SPF senders, [(side, name, type)])
PLANS = [
    ("hosted", ScenarioParameters(domains=("contoso.com",)), MxAt.SERVICE, "", (), []),
    (
        "third-party-filtering",
        THIRD_PARTY,
        MxAt.THIRD_PARTY,
        "mx.filter.example",
        (),
        [("inbound", "third-party-filtering-partner-inbound", "partner")],
    ),
    (
        "hybrid-1",
        ON_PREMISES,
        MxAt.SERVICE,
        "",
        ("203.0.113.5",),
        [
            ("inbound", "hybrid-1-on-premises-inbound", "on-premises"),
            ("outbound", "hybrid-1-on-premises-outbound", "on-premises"),
        ],
    ),
    (
        "hybrid-3",
        ON_PREMISES,
        MxAt.ON_PREMISES,
        "mail.contoso.com",
        ("203.0.113.5",),
        [
            ("inbound", "hybrid-3-on-premises-inbound", "partner"),
            ("outbound", "hybrid-3-on-premises-outbound", "on-premises"),
        ],
    ),
    (
        "third-party-hybrid",
        ScenarioParameters(
            domains=("contoso.com",),
            on_premises_host="mail.contoso.com:2525",
            on_premises_ips=("203.0.113.5",),
            third_party_ips=("198.51.100.7",),
        ),
        MxAt.THIRD_PARTY,
        "",
        ("198.51.100.7", "203.0.113.5"),
        [
            ("inbound", "third-party-hybrid-partner-inbound", "partner"),
            ("inbound", "third-party-hybrid-on-premises-inbound", "on-premises"),
            ("outbound", "third-party-hybrid-on-premises-outbound", "on-premises"),
        ],
    ),
    (
        "devices",
        ScenarioParameters(domains=("contoso.com",), device_ips=("192.0.2.10",)),
        MxAt.SERVICE,
        "",
        ("192.0.2.10",),
        [("inbound", DEVICE_CONNECTOR, "on-premises")],
    ),
    (
        "filtering-only",
        ScenarioParameters(
            domains=("contoso.com",), on_premises_host="10.1.2.3", on_premises_ips=("10.1.2.3",)
        ),
        MxAt.SERVICE,
        "",
        ("10.1.2.3",),
        [
            ("inbound", "filtering-only-on-premises-inbound", "on-premises"),
            ("outbound", "filtering-only-on-premises-outbound", "on-premises"),
        ],
    ),
]


@pytest.mark.parametrize(
    ("name", "parameters", "mx_at", "mx_host", "senders", "connectors"), PLANS, ids=[p[0] for p in PLANS]
)
def test_plans(  # type: ignore[no-untyped-def]
    org: Directory, name, parameters, mx_at, mx_host, senders, connectors
) -> None:
    planned = plan(org, name, parameters)
    assert (planned.mx_at, planned.mx_host, planned.spf_senders) == (mx_at, mx_host, senders)
    assert [(c.side.value, c.name, c.type.value) for c in planned.connectors] == connectors
    assert planned.domain_type is SCENARIOS[name].domain_type
    assert {c.name for c in planned.connectors} <= planned_connector_names()


def test_the_settings_of_a_hybrid_pair_and_of_a_lock_down(org: Directory) -> None:
    inbound, outbound = plan(org, "hybrid-2", ON_PREMISES).connectors
    assert inbound.values == {
        "sender_domains": ("*",),
        "sender_ips": ("203.0.113.5",),
        "tls_certificate_name": "*.contoso.com",
        "require_tls": True,
        "treat_messages_as_internal": True,
    }
    assert outbound.values == {
        "recipient_domains": ("contoso.com",),
        "smart_hosts": ("mail.contoso.com",),
        "tls": OutboundTls.DOMAIN_VALIDATION,
        "tls_domain": "*.contoso.com",
        "route_all_via_on_premises": True,  # hybrid 2 is centralized mail transport
    }
    by_ip_only = plan(
        org,
        "filtering-only",
        ScenarioParameters(
            domains=("contoso.com",),
            on_premises_host="[2001:db8::25]:2525",
            on_premises_ips=("2001:db8::25",),
        ),
    )
    assert by_ip_only.connectors[1].values["smart_hosts"] == ("[2001:db8::25]:2525",)
    assert by_ip_only.connectors[1].values["tls"] is OutboundTls.OPPORTUNISTIC
    assert by_ip_only.connectors[0].values["treat_messages_as_internal"] is False

    [lockdown] = plan(org, "third-party-filtering", THIRD_PARTY).connectors
    assert lockdown.type is ConnectorType.PARTNER and lockdown.side is ConnectorSide.INBOUND
    assert lockdown.values["restrict_domains_to_ips"] is True
    assert lockdown.values["ef_skip_ips"] == ("198.51.100.0/24",)  # enhanced filtering skips the third party
    by_certificate = ScenarioParameters(
        domains=("contoso.com",), third_party_certificate_name="*.filter.example"
    )
    [cert_lockdown] = plan(org, "third-party-filtering", by_certificate).connectors
    assert cert_lockdown.values["restrict_domains_to_certificate"] is True
    assert cert_lockdown.values["require_tls"] is True
    assert cert_lockdown.values["ef_skip_last_ip"] is True


@pytest.mark.parametrize(
    ("name", "parameters", "option"),
    [
        (
            "hybrid-1",
            ScenarioParameters(domains=("contoso.com",), on_premises_ips=("203.0.113.5",)),
            "--on-premises-host",
        ),
        (
            "hybrid-4",
            ScenarioParameters(domains=("contoso.com",), on_premises_host="mail.contoso.com"),
            "--on-premises-certificate-name",
        ),
        ("third-party-filtering", ScenarioParameters(domains=("contoso.com",)), "--third-party-ip"),
        ("devices", ScenarioParameters(domains=("contoso.com",)), "--device-ip"),
        (
            "hybrid-3",
            ScenarioParameters(
                domains=("contoso.com",), on_premises_host="203.0.113.5", on_premises_ips=("203.0.113.5",)
            ),
            "an MX names a host",
        ),
        (
            "hybrid-1",
            ScenarioParameters(
                domains=("contoso.com",),
                on_premises_host="mail.contoso.com",
                on_premises_ips=("10.0.0.1-10.0.0.9",),
            ),
            "SPF lists no ranges",
        ),
        (
            "hybrid-1",
            ScenarioParameters(
                domains=("contoso.com",), on_premises_host="mail.contoso.com", on_premises_ips=("10.0.0.0/8",)
            ),
            "--on-premises-ip",
        ),
        (
            "hybrid-1",
            ScenarioParameters(
                domains=("contoso.com",),
                on_premises_host="mail.contoso.com:99999",
                on_premises_ips=("10.0.0.1",),
            ),
            "1-65535",
        ),
        (
            "third-party-filtering",
            ScenarioParameters(
                domains=("contoso.com",), third_party_ips=("198.51.100.7",), third_party_host="198.51.100.7"
            ),
            "--third-party-host",
        ),
    ],
)
def test_a_missing_or_bad_parameter_names_its_option(
    org: Directory, name: str, parameters: ScenarioParameters, option: str
) -> None:
    with pytest.raises(ScenarioError, match=option):
        plan(org, name, parameters)


def test_the_unsupported_row_is_refused_with_why_and_what_instead(org: Directory) -> None:
    with pytest.raises(UnsupportedScenario) as refused:
        plan(org, "third-party-no-filtering", THIRD_PARTY)
    message = str(refused.value)
    assert "judge the third party's address" in message
    assert "third-party-filtering" in message and "hosted" in message


@pytest.mark.parametrize(
    "certificate",
    [
        "*.fabrikam.com",  # another tenant's verified domain
        "mail.fabrikam.com",
        "*.com",  # a wildcard over everybody
        "*.postroom.test",  # the service's own zone, over every tenant's default domain
        "*.pending.contoso.net",  # its own, but not verified
    ],
)
def test_a_tenant_cannot_claim_another_organizations_certificate(org: Directory, certificate: str) -> None:
    parameters = ScenarioParameters(
        domains=("contoso.com",),
        on_premises_host="mail.contoso.com",
        on_premises_certificate_name=certificate,
    )
    with pytest.raises(ScenarioError):
        plan(org, "hybrid-4", parameters)


def test_a_certificate_under_the_tenants_own_domain_is_its_own(org: Directory) -> None:
    for certificate in ("*.contoso.com", "mail.contoso.com", "MAIL.Sales.Contoso.com", "*.sales.contoso.com"):
        parameters = ScenarioParameters(
            domains=("contoso.com",),
            on_premises_host="mail.contoso.com",
            on_premises_certificate_name=certificate,
        )
        assert (
            plan(org, "hybrid-4", parameters).connectors[0].values["tls_certificate_name"]
            == certificate.lower()
        )


def test_which_domains_a_scenario_applies_to(org: Directory) -> None:
    contoso = org.list_domains(OPERATOR, "contoso")
    assert [d.name for d in choose_domains(contoso, [])] == ["contoso.com", "sales.contoso.com"]
    assert [d.name for d in choose_domains(contoso, ["Sales.Contoso.com"])] == ["sales.contoso.com"]
    assert [d.name for d in choose_domains(contoso, ["pending.contoso.net"])] == ["pending.contoso.net"]
    with pytest.raises(ScenarioError, match="default domain"):
        choose_domains(contoso, ["contoso.postroom.test"])
    with pytest.raises(ScenarioError, match="not an accepted domain of the tenant"):
        choose_domains(contoso, ["fabrikam.com"])  # another tenant's: as if it did not exist
    fabrikam_only_default = [d for d in org.list_domains(OPERATOR, "fabrikam") if d.is_default]
    with pytest.raises(ScenarioError, match="no verified custom domain"):
        choose_domains(fabrikam_only_default, [])


def test_devices_add_to_the_tenants_scenario(org: Directory) -> None:
    merged = ScenarioParameters(**{**ON_PREMISES.as_json(), "device_ips": ["192.0.2.10"]})  # type: ignore[arg-type]
    merged = ScenarioParameters.from_json(merged.as_json())
    planned = plan_scenario(
        SCENARIOS["devices"], merged, org.list_domains(OPERATOR, "contoso"), base=SCENARIOS["hybrid-3"]
    )
    assert planned.recorded_name == "hybrid-3"
    assert [c.name for c in planned.connectors] == [DEVICE_CONNECTOR]  # the hybrid's are left alone
    assert (planned.mx_at, planned.mx_host) == (MxAt.ON_PREMISES, "mail.contoso.com")
    assert planned.spf_senders == ("203.0.113.5", "192.0.2.10")
    again = plan(org, "hybrid-3", merged)  # a scenario applied with devices keeps their relay
    assert [c.name for c in again.connectors][-1] == DEVICE_CONNECTOR


def test_parameters_round_trip_and_ignore_what_they_do_not_know() -> None:
    assert ScenarioParameters.from_json(ON_PREMISES.as_json()) == ON_PREMISES
    odd = ScenarioParameters.from_json({"on_premises_host": 7, "domains": "x", "future_option": True})
    assert odd == ScenarioParameters()


def test_domain_types_change_and_caches_see_it(org: Directory, database: Database) -> None:
    cache = CachedDirectory(database)
    assert cache.domain("contoso.com").type is DomainType.AUTHORITATIVE  # type: ignore[union-attr]
    changed = org.set_domain_type(OPERATOR, "Contoso.com", DomainType.INTERNAL_RELAY)
    assert changed.type is DomainType.INTERNAL_RELAY
    cache.refresh()
    assert cache.domain("contoso.com").type is DomainType.INTERNAL_RELAY  # type: ignore[union-attr]
    assert org.domain_history(OPERATOR, "contoso.com")[-1].detail == "authoritative -> internal-relay"
    with pytest.raises(InvalidInputError, match="stays authoritative"):
        org.set_domain_type(OPERATOR, "contoso.postroom.test", DomainType.INTERNAL_RELAY)


def test_a_tenant_cannot_change_another_tenants_domain_type(org: Directory) -> None:
    fabrikam = TenantScope(org.get_tenant(OPERATOR, "fabrikam").id)
    with pytest.raises(NotFoundError):
        org.set_domain_type(fabrikam, "contoso.com", DomainType.INTERNAL_RELAY)
    assert org.get_domain(OPERATOR, "contoso.com").type is DomainType.AUTHORITATIVE


def test_the_applied_scenario_is_the_tenants_own(org: Directory, database: Database, tmp_path: Path) -> None:
    contoso = org.get_tenant(OPERATOR, "contoso")
    fabrikam = org.get_tenant(OPERATOR, "fabrikam")
    assert org.applied_scenario(OPERATOR, "contoso") is None
    record_scenario(database, fabrikam.id, "hybrid-3", {**ON_PREMISES.as_json(), "domains": ["fabrikam.com"]})
    record_scenario(database, contoso.id, "no-such-row", {})
    applied = org.applied_scenario(TenantScope(fabrikam.id), "fabrikam")
    assert applied is not None and applied.scenario is SCENARIOS["hybrid-3"]
    assert applied.parameters.on_premises_host == "mail.contoso.com"
    unknown = org.applied_scenario(OPERATOR, "contoso")
    assert unknown is not None and unknown.scenario is None  # a newer version's row: known by name only
    with pytest.raises(ScenarioError, match="not one this version knows"):
        unknown.plan(org.list_domains(OPERATOR, "contoso"))
    with pytest.raises(NotFoundError):  # contoso asking for fabrikam's: as if there were no fabrikam
        org.applied_scenario(TenantScope(contoso.id), "fabrikam")

    remove_tenant(database, FileBlobStore(tmp_path / "blobs"), org, OPERATOR, "fabrikam", apply=True)
    reborn = org.add_tenant(OPERATOR, "fabrikam")
    assert org.applied_scenario(TenantScope(reborn.id), "fabrikam") is None, (
        "a removed tenant's scenario is gone"
    )
