"""Connectors in the directory: as an admin adds and changes them (every rule of spec §3.1/§3.2 with
its refusal), as mail flow reads them (straight and through the node's cache), their validation
history and the tenant's scenario, and never across tenants: another tenant's admin, a tenant that
claims another's certificate name, and a new tenant that reuses a removed one's names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from postroom.app import remove_tenant
from postroom.directory import (
    MAX_VALIDATIONS,
    CachedDirectory,
    ConflictError,
    ConnectionView,
    Directory,
    InvalidInputError,
    NotFoundError,
)
from postroom.model.connectors import (
    ConnectorType,
    OutboundTls,
    ValidationResult,
    ValidationStep,
    attribute,
    parse_smart_host,
)
from postroom.model.scope import OPERATOR, TenantScope
from postroom.storage import Database, FileBlobStore
from postroom.storage.schema import connector_validations, inbound_connectors, outbound_connectors
from tests.support.records import Org, populate

PARTNER, ON_PREMISES = ConnectorType.PARTNER, ConnectorType.ON_PREMISES


@pytest.fixture
def org(directory: Directory) -> Org:
    return populate(directory)


def table_of(database: Database) -> list[tuple[int, str]]:
    with database.read() as conn:
        return [(c.tenant_id, c.name) for c in ConnectionView(conn).inbound_connectors().connectors]


def result(connector_id: int, recipient: str, ok: bool, at: float, run: str = "r1") -> ValidationResult:
    steps = (
        ValidationStep("dns", True, "192.0.2.25"),
        ValidationStep("tcp", ok, "connected" if ok else "refused", "" if ok else "450 4.4.316 refused"),
    )
    return ValidationResult(connector_id, run, recipient, ok, "" if ok else "450 4.4.316 refused", steps, at)


# --- inbound: what is stored -------------------------------------------------------------------------
def test_an_inbound_connector_is_stored_in_its_normal_form_and_attributes_mail(
    database: Database, directory: Directory, org: Org
) -> None:
    added = directory.add_inbound_connector(
        OPERATOR,
        "contoso",
        "From on-premises",
        "OnPremises",
        sender_domains=["Contoso.COM", "*.contoso.com", "contoso.com"],
        sender_ips=[" 192.0.2.0/24 ", "198.51.100.7"],
        tls_certificate_name="*.CONTOSO.com",
        treat_messages_as_internal=True,
        ef_users=["Alice@Contoso.com"],
        associated_accepted_domains=["Relay.Contoso.com."],
        comment="  Exchange 2019  ",
    )
    assert (added.tenant_id, added.name, added.type, added.enabled) == (
        org.contoso,
        "From on-premises",
        ON_PREMISES,
        True,
    )
    assert added.sender_domains == ("contoso.com", "*.contoso.com"), "lower case, each once"
    assert added.sender_ips == ("192.0.2.0/24", "198.51.100.7")
    assert added.tls_certificate_name == "*.contoso.com"
    assert added.require_tls, "TLS is required unless said otherwise (spec §3.1 default)"
    assert (added.ef_users, added.comment) == (("alice@contoso.com",), "Exchange 2019")
    assert added.associated_accepted_domains == ("relay.contoso.com",)
    assert directory.inbound_connector(OPERATOR, "contoso", "FROM ON-PREMISES") == added
    assert directory.inbound_connectors(OPERATOR, "contoso") == [added]
    assert table_of(database) == [(org.contoso, "From on-premises")]

    with database.read() as conn:
        table = ConnectionView(conn).inbound_connectors()
    found = attribute(table, "192.0.2.77", (), "contoso.com")
    assert found.connector == added and not found.by_certificate
    by_cert = attribute(table, "203.0.113.9", ("mail.contoso.com",), "example.org")
    assert by_cert.connector == added and by_cert.by_certificate


def test_set_changes_only_what_is_given_and_enable_turns_it_off_in_the_table(
    database: Database, directory: Directory, org: Org
) -> None:
    directory.add_inbound_connector(
        OPERATOR, "contoso", "partner", PARTNER, sender_domains=["fabrikam.com"], sender_ips=["203.0.113.5"]
    )
    changed = directory.set_inbound_connector(
        OPERATOR, "contoso", "Partner", sender_ips=["203.0.113.6", "203.0.113.7"], require_tls=False
    )
    assert changed.sender_domains == ("fabrikam.com",), "untouched"
    assert changed.sender_ips == ("203.0.113.6", "203.0.113.7"), "a list replaces the list"
    assert not changed.require_tls
    assert table_of(database) == [(org.contoso, "partner")]
    directory.set_inbound_connector(OPERATOR, "contoso", "partner", enabled=False)
    assert table_of(database) == [], "a disabled connector attributes nothing"
    assert not directory.inbound_connector(OPERATOR, "contoso", "partner").enabled
    directory.remove_inbound_connector(OPERATOR, "contoso", "partner")
    assert directory.inbound_connectors(OPERATOR, "contoso") == []
    with pytest.raises(NotFoundError, match="tenant contoso has no inbound connector 'partner'"):
        directory.inbound_connector(OPERATOR, "contoso", "partner")


def test_a_change_that_breaks_a_rule_writes_nothing(directory: Directory, org: Org) -> None:
    before = directory.add_inbound_connector(
        OPERATOR, "contoso", "onprem", ON_PREMISES, sender_ips=["192.0.2.1"], treat_messages_as_internal=True
    )
    with pytest.raises(InvalidInputError, match="treating messages as internal is for on-premises"):
        directory.set_inbound_connector(
            OPERATOR, "contoso", "onprem", type="partner", sender_ips=["192.0.2.2"]
        )
    assert directory.inbound_connector(OPERATOR, "contoso", "onprem") == before


INBOUND_REFUSALS: list[tuple[str, dict[str, Any], str]] = [
    ("partner", {"sender_domains": []}, "covers some sender domains"),
    ("partner", {"sender_domains": ["a.*.com"]}, "a wildcard stands only as the whole first label"),
    ("partner", {"sender_domains": ["*contoso.com"]}, "a wildcard stands only as the whole first label"),
    ("partner", {"sender_domains": ["contoso"]}, "'contoso' is not a sender domain"),
    ("partner", {"sender_domains": ["192.0.2.1"]}, "'192.0.2.1' is not a sender domain"),
    ("partner", {"sender_ips": ["10.0.0.0/8", "192.0.2.300"]}, r"'10\.0\.0\.0/8' is wider.*'192\.0\.2\.300'"),
    (
        "partner",
        {"sender_ips": ["192.0.2.1/24"]},
        r"has host bits set; write the network, \"192\.0\.2\.0/24\"",
    ),
    ("partner", {"tls_certificate_name": "*"}, "`\\*` is not a certificate name"),
    ("partner", {"tls_certificate_name": "mail.*.contoso.com"}, "whole first label"),
    ("on-premises", {}, "give sender IPs or a certificate name"),
    ("on-premises", {"sender_ips": ["192.0.2.1"], "restrict_domains_to_ips": True}, "for Partner connectors"),
    (
        "on-premises",
        {"sender_ips": ["192.0.2.1"], "restrict_domains_to_certificate": True},
        "for Partner connectors",
    ),
    ("partner", {"restrict_domains_to_ips": True}, "needs the sender IPs"),
    (
        "partner",
        {"sender_ips": ["192.0.2.1"], "restrict_domains_to_certificate": True},
        "needs the certificate",
    ),
    ("partner", {"treat_messages_as_internal": True}, "for on-premises connectors"),
    ("partner", {"ef_skip_last_ip": True, "ef_skip_ips": ["192.0.2.9"]}, "not both; choose one"),
    ("partner", {"ef_skip_ips": ["nonsense"]}, "enhanced filtering IPs to skip: 'nonsense' is not an IP"),
    ("partner", {"ef_users": ["not an address"]}, "'not an address' is not a valid address"),
    ("partner", {"associated_accepted_domains": ["fabrikam.com"]}, "not an accepted domain of the tenant"),
    ("partner", {"comment": "two\nlines"}, "printable characters on one line"),
    ("partner", {"recipient_domains": ["x.com"]}, "'recipient_domains' is not a setting of an inbound"),
    ("partner", {"require_tls": "yes"}, "require_tls is true or false"),
    ("partner", {"sender_ips": "192.0.2.1"}, "sender_ips is a list"),
    ("nonsense", {}, "'nonsense' is not a connector type"),
]


@pytest.mark.parametrize(("kind", "settings", "message"), INBOUND_REFUSALS)
def test_inbound_rules_are_refused_with_the_fix(
    directory: Directory, org: Org, kind: str, settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        directory.add_inbound_connector(OPERATOR, "contoso", "c", kind, **settings)
    assert directory.inbound_connectors(OPERATOR, "contoso") == []


def test_a_partner_connector_may_match_by_sender_domain_alone(directory: Directory, org: Org) -> None:
    added = directory.add_inbound_connector(
        OPERATOR, "contoso", "any partner", "partner", sender_domains=["*"]
    )
    assert (added.sender_domains, added.sender_ips, added.tls_certificate_name) == (("*",), (), "")


def test_names_are_unique_per_tenant_and_direction_whatever_their_case(
    directory: Directory, org: Org
) -> None:
    directory.add_inbound_connector(OPERATOR, "contoso", "Hybrid", PARTNER)
    with pytest.raises(ConflictError, match="already has an inbound connector named Hybrid"):
        directory.add_inbound_connector(OPERATOR, "contoso", " hybrid ", PARTNER)
    directory.add_outbound_connector(OPERATOR, "contoso", "hybrid", PARTNER, recipient_domains=["x.example"])
    directory.add_inbound_connector(OPERATOR, "fabrikam", "hybrid", PARTNER)
    for bad in ("", " ", "x" * 65, "tab\there"):
        with pytest.raises(InvalidInputError, match="1 to 64 printable characters"):
            directory.add_inbound_connector(OPERATOR, "contoso", bad, PARTNER)
    directory.add_inbound_connector(OPERATOR, "contoso", "x" * 64, PARTNER)


# --- the certificate name of an on-premises connector (spec §3.4) ------------------------------------
@pytest.mark.parametrize(
    "name",
    [
        "*.contoso.com",
        "contoso.com",
        "mail.contoso.com",
        "*.relay.contoso.com",
        "*.co.uk",
        "*.pending.example",
    ],
)
def test_a_tenant_cannot_claim_another_organizations_certificate_name(
    directory: Directory, org: Org, name: str
) -> None:
    """fabrikam's admin names contoso's certificate (or a name fabrikam has not proved it owns): were it
    taken, any server holding contoso's certificate would be attributed to fabrikam as its own."""
    fabrikam = TenantScope(org.fabrikam)
    with pytest.raises(InvalidInputError, match="is not under a verified accepted domain of the tenant"):
        directory.add_inbound_connector(
            fabrikam, "fabrikam", "onprem", "on-premises", tls_certificate_name=name
        )
    directory.add_inbound_connector(fabrikam, "fabrikam", "onprem", "on-premises", sender_ips=["192.0.2.1"])
    with pytest.raises(InvalidInputError, match="is not under a verified accepted domain of the tenant"):
        directory.set_inbound_connector(fabrikam, "fabrikam", "onprem", tls_certificate_name=name)
    assert directory.inbound_connector(fabrikam, "fabrikam", "onprem").tls_certificate_name == ""


@pytest.mark.parametrize(
    "name",
    ["*.fabrikam.com", "fabrikam.com", "mail.fabrikam.com", "*.eu.fabrikam.com", "*.fabrikam.postroom.test"],
)
def test_a_tenant_names_certificates_of_its_own_verified_domains(
    directory: Directory, org: Org, name: str
) -> None:
    fabrikam = TenantScope(org.fabrikam)
    added = directory.add_inbound_connector(
        fabrikam, "fabrikam", "onprem", "on-premises", tls_certificate_name=name
    )
    assert added.tls_certificate_name == name
    assert directory.inbound_connector_warnings(fabrikam, "fabrikam", "onprem") == []


def test_a_partner_connector_names_the_partners_certificate(directory: Directory, org: Org) -> None:
    """A Partner connector attributes no tenant: its certificate is the partner's (a third-party filter)."""
    added = directory.add_inbound_connector(
        OPERATOR,
        "fabrikam",
        "third party",
        PARTNER,
        tls_certificate_name="*.contoso.com",
        restrict_domains_to_certificate=True,
    )
    assert added.restrict_domains_to_certificate


def test_a_certificate_name_whose_domain_went_away_is_warned_about(directory: Directory, org: Org) -> None:
    directory.add_domain(OPERATOR, "eu.example", "fabrikam", verified=True)
    directory.add_inbound_connector(
        OPERATOR, "fabrikam", "eu", ON_PREMISES, tls_certificate_name="*.eu.example"
    )
    directory.remove_domain(OPERATOR, "eu.example")
    [warning] = directory.inbound_connector_warnings(TenantScope(org.fabrikam), "fabrikam", "eu")
    assert "*.eu.example is no longer under a verified accepted domain of fabrikam" in warning
    assert not directory.set_inbound_connector(OPERATOR, "fabrikam", "eu", enabled=False).enabled, (
        "an admin can always turn a connector off"
    )
    with pytest.raises(InvalidInputError, match="is not under a verified accepted domain"):
        directory.set_inbound_connector(OPERATOR, "fabrikam", "eu", enabled=True)


def test_a_disabled_on_premises_connector_may_wait_for_its_domains_verification(
    directory: Directory, org: Org
) -> None:
    directory.add_domain(OPERATOR, "later.example", "fabrikam")
    fabrikam = TenantScope(org.fabrikam)
    directory.add_inbound_connector(
        fabrikam, "fabrikam", "later", ON_PREMISES, tls_certificate_name="*.later.example", enabled=False
    )
    with pytest.raises(InvalidInputError, match="is not under a verified accepted domain"):
        directory.set_inbound_connector(fabrikam, "fabrikam", "later", enabled=True)
    directory.mark_verified(OPERATOR, "later.example", "test")
    assert directory.set_inbound_connector(fabrikam, "fabrikam", "later", enabled=True).enabled


def test_tenants_sharing_an_on_premises_ip_are_told_to_the_operator_only(
    database: Database, directory: Directory, org: Org
) -> None:
    """Shared hosting: allowed, and attribution falls back on whose domain the sender is in."""
    contoso = directory.add_inbound_connector(
        OPERATOR, "contoso", "onprem", ON_PREMISES, sender_ips=["192.0.2.0/24"]
    )
    fabrikam = directory.add_inbound_connector(
        OPERATOR, "fabrikam", "onprem", ON_PREMISES, sender_ips=["192.0.2.10-192.0.2.20"]
    )
    directory.add_inbound_connector(OPERATOR, "fabrikam", "partner", PARTNER, sender_ips=["192.0.2.5"])
    [warning] = directory.inbound_connector_warnings(OPERATOR, "contoso", "onprem")
    assert (
        "192.0.2.0/24 overlaps 192.0.2.10-192.0.2.20 of on-premises connector onprem of tenant fabrikam"
        in (warning)
    )
    assert directory.inbound_connector_warnings(TenantScope(org.contoso), "contoso", "onprem") == [], (
        "a tenant learns nothing of another tenant's connectors"
    )
    with database.read() as conn:
        table = ConnectionView(conn).inbound_connectors()
    owners = {"contoso.com": org.contoso, "fabrikam.com": org.fabrikam}
    for domain, expected in (("contoso.com", contoso), ("fabrikam.com", fabrikam)):
        chosen = attribute(table, "192.0.2.15", (), domain, {domain: owners[domain]})
        assert chosen.connector == expected
    assert attribute(table, "192.0.2.15", (), "example.org", {}).ambiguous


# --- outbound ------------------------------------------------------------------------------------------
def test_an_outbound_connector_is_stored_in_its_normal_form(
    database: Database, directory: Directory, org: Org
) -> None:
    added = directory.add_outbound_connector(
        OPERATOR,
        "contoso",
        "To on-premises",
        ON_PREMISES,
        all_accepted_domains=True,
        recipient_domains=["Relay.Contoso.com", "*.eu.contoso.com"],
        smart_hosts=[
            "MAIL.Contoso.com",
            "192.0.2.7:2525",
            "2001:DB8::7",
            "[2001:db8::8]:25",
            "mail.contoso.com",
        ],
        tls="domain-validation",
        tls_domain="*.Contoso.com",
        route_all_via_on_premises=True,
        sender_rewriting=True,
        validation_recipients=["Alice@Contoso.com"],
    )
    assert added.recipient_domains == ("relay.contoso.com", "*.eu.contoso.com")
    assert added.smart_hosts == ("mail.contoso.com", "192.0.2.7:2525", "[2001:db8::7]", "[2001:db8::8]:25")
    assert [parse_smart_host(h) for h in added.smart_hosts] == [
        ("mail.contoso.com", None),
        ("192.0.2.7", 2525),
        ("2001:db8::7", None),
        ("2001:db8::8", 25),
    ]
    assert (added.tls, added.tls_domain) == (OutboundTls.DOMAIN_VALIDATION, "*.contoso.com")
    assert added.validation_recipients == ("alice@contoso.com",)
    assert directory.outbound_connector(OPERATOR, "contoso", "to ON-premises") == added
    assert directory.outbound_connector_by_id(added.id) == added
    with database.read() as conn:
        assert ConnectionView(conn).outbound_connectors(org.contoso) == (added,)
    changed = directory.set_outbound_connector(
        OPERATOR, "contoso", "to on-premises", tls="none", tls_domain=""
    )
    assert (changed.tls, changed.tls_domain, changed.smart_hosts) == (
        OutboundTls.OPPORTUNISTIC,
        "",
        added.smart_hosts,
    )
    directory.remove_outbound_connector(OPERATOR, "contoso", "To on-premises")
    assert directory.outbound_connector_by_id(added.id) is None


def test_an_outbound_connector_without_smart_hosts_delivers_by_mx(directory: Directory, org: Org) -> None:
    added = directory.add_outbound_connector(
        OPERATOR,
        "contoso",
        "tls to partner",
        PARTNER,
        recipient_domains=["fabrikam.com"],
        tls="encryption-only",
    )
    assert added.use_mx and added.requires_tls


OUTBOUND_REFUSALS: list[tuple[str, dict[str, Any], str]] = [
    ("partner", {}, "give recipient domains"),
    ("partner", {"recipient_domains": ["*"]}, "`\\*` is not a recipient domain"),
    ("partner", {"recipient_domains": ["x.*.example"]}, "whole first label"),
    ("partner", {"recipient_domains": ["x.example"], "smart_hosts": ["192.0.2.0/24"]}, "is a network"),
    ("partner", {"recipient_domains": ["x.example"], "smart_hosts": ["mail:99999"]}, "port must be a number"),
    ("partner", {"recipient_domains": ["x.example"], "smart_hosts": ["[2001:db8::1"]}, r"\[2001:db8::7\]:25"),
    ("partner", {"recipient_domains": ["x.example"], "smart_hosts": ["exchange01"]}, "not a fully qualified"),
    (
        "partner",
        {"recipient_domains": ["x.example"], "smart_hosts": ["bad_host.example"]},
        "is not a host name",
    ),
    ("partner", {"recipient_domains": ["x.example"], "smart_hosts": ["fe80::1%eth0"]}, "zone index"),
    ("partner", {"recipient_domains": ["x.example"], "tls": "strict"}, "'strict' is not a TLS setting"),
    ("partner", {"recipient_domains": ["x.example"], "tls": "domain-validation"}, "give the TLS domain"),
    (
        "partner",
        {"recipient_domains": ["x.example"], "tls_domain": "x.example"},
        "only with domain validation",
    ),
    ("partner", {"all_accepted_domains": True}, "for on-premises connectors"),
    ("partner", {"recipient_domains": ["x.example"], "route_all_via_on_premises": True}, "on-premises"),
    ("partner", {"recipient_domains": ["x.example"], "sender_rewriting": True}, "for on-premises connectors"),
    (
        "partner",
        {"recipient_domains": ["x.example"], "validation_recipients": ["nobody"]},
        "not a valid address",
    ),
    ("partner", {"sender_ips": ["192.0.2.1"]}, "'sender_ips' is not a setting of an outbound"),
]


@pytest.mark.parametrize(("kind", "settings", "message"), OUTBOUND_REFUSALS)
def test_outbound_rules_are_refused_with_the_fix(
    directory: Directory, org: Org, kind: str, settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        directory.add_outbound_connector(OPERATOR, "contoso", "c", kind, **settings)
    assert directory.outbound_connectors(OPERATOR, "contoso") == []


def test_a_rule_scoped_connector_needs_no_recipient_domain(directory: Directory, org: Org) -> None:
    added = directory.add_outbound_connector(
        OPERATOR, "contoso", "by rule", PARTNER, rule_scoped=True, smart_hosts=["relay.example.net"]
    )
    assert added.rule_scoped and added.recipient_domains == ()


def test_one_recipient_domain_is_routed_by_one_connector(directory: Directory, org: Org) -> None:
    directory.add_outbound_connector(
        OPERATOR, "contoso", "one", PARTNER, recipient_domains=["x.example", "*.y.example"]
    )
    for domains in (["X.example"], ["*.y.example"]):
        with pytest.raises(ConflictError, match="outbound connector one of tenant contoso already routes"):
            directory.add_outbound_connector(OPERATOR, "contoso", "two", PARTNER, recipient_domains=domains)
    directory.add_outbound_connector(OPERATOR, "contoso", "two", PARTNER, recipient_domains=["y.example"])
    with pytest.raises(ConflictError, match=r"already routes x\.example"):
        directory.set_outbound_connector(
            OPERATOR, "contoso", "two", recipient_domains=["y.example", "x.example"]
        )
    directory.set_outbound_connector(OPERATOR, "contoso", "one", recipient_domains=["x.example"])
    directory.add_outbound_connector(
        OPERATOR, "contoso", "rule", PARTNER, rule_scoped=True, recipient_domains=["x.example"]
    )
    directory.add_outbound_connector(OPERATOR, "fabrikam", "one", PARTNER, recipient_domains=["x.example"])
    directory.add_outbound_connector(OPERATOR, "contoso", "all", ON_PREMISES, all_accepted_domains=True)
    with pytest.raises(ConflictError, match="already routes all accepted domains"):
        directory.add_outbound_connector(OPERATOR, "contoso", "all2", ON_PREMISES, all_accepted_domains=True)


# --- scope: another tenant's admin, and a tenant reusing a removed one's names ----------------------
def test_another_tenants_connectors_are_answered_as_ones_that_do_not_exist(
    directory: Directory, org: Org
) -> None:
    directory.add_inbound_connector(OPERATOR, "contoso", "onprem", ON_PREMISES, sender_ips=["192.0.2.1"])
    out = directory.add_outbound_connector(
        OPERATOR, "contoso", "out", PARTNER, recipient_domains=["x.example"]
    )
    directory.set_scenario(OPERATOR, "contoso", "hybrid-1", {"on_premises_ip": "192.0.2.1"})
    fabrikam = TenantScope(org.fabrikam)
    no_tenant = "no tenant named 'contoso'"
    attempts = [
        lambda: directory.inbound_connectors(fabrikam, "contoso"),
        lambda: directory.inbound_connector(fabrikam, "contoso", "onprem"),
        lambda: directory.set_inbound_connector(fabrikam, "contoso", "onprem", enabled=False),
        lambda: directory.remove_inbound_connector(fabrikam, "contoso", "onprem"),
        lambda: directory.inbound_connector_warnings(fabrikam, "contoso", "onprem"),
        lambda: directory.add_inbound_connector(fabrikam, "contoso", "mine", PARTNER),
        lambda: directory.outbound_connectors(fabrikam, "contoso"),
        lambda: directory.outbound_connector(fabrikam, "contoso", "out"),
        lambda: directory.set_outbound_connector(fabrikam, "contoso", "out", enabled=False),
        lambda: directory.remove_outbound_connector(fabrikam, "contoso", "out"),
        lambda: directory.record_validation(
            fabrikam, "contoso", "out", [result(out.id, "a@x.example", True, 1)]
        ),
        lambda: directory.connector_validations(fabrikam, "contoso", "out"),
        lambda: directory.scenario(fabrikam, "contoso"),
        lambda: directory.set_scenario(fabrikam, "contoso", "hosted", {}),
        lambda: directory.clear_scenario(fabrikam, "contoso"),
    ]
    for attempt in attempts:
        with pytest.raises(NotFoundError, match=no_tenant):
            attempt()
    # Its own tenant's view: the names are free, the other tenant's connectors unseen.
    assert directory.inbound_connectors(fabrikam, "fabrikam") == []
    with pytest.raises(NotFoundError, match="tenant fabrikam has no outbound connector 'out'"):
        directory.outbound_connector(fabrikam, "fabrikam", "out")
    assert directory.scenario(fabrikam, "fabrikam") is None
    assert directory.inbound_connector(OPERATOR, "contoso", "onprem").enabled, "nothing changed"
    assert directory.scenario(OPERATOR, "contoso") is not None


def test_a_tenant_reusing_a_removed_tenants_name_sees_none_of_its_connectors(
    database: Database, directory: Directory, org: Org, tmp_path: Path
) -> None:
    fabrikam = TenantScope(org.fabrikam)
    directory.add_inbound_connector(
        fabrikam, "fabrikam", "onprem", ON_PREMISES, tls_certificate_name="*.fabrikam.com"
    )
    out = directory.add_outbound_connector(
        fabrikam, "fabrikam", "out", ON_PREMISES, all_accepted_domains=True, smart_hosts=["192.0.2.9"]
    )
    directory.record_validation(fabrikam, "fabrikam", "out", [result(out.id, "carol@fabrikam.com", True, 5)])
    directory.set_scenario(fabrikam, "fabrikam", "hybrid-4", {})
    cache = CachedDirectory(database)
    cache.refresh()
    assert [c.name for c in cache.inbound_connectors().connectors] == ["onprem"]
    assert cache.outbound_connectors(org.fabrikam) == (out,)

    remove_tenant(database, FileBlobStore(tmp_path / "blobs"), directory, OPERATOR, "fabrikam", apply=True)
    with database.read() as conn:
        for table in (inbound_connectors, outbound_connectors, connector_validations):
            assert conn.execute(select(func.count()).select_from(table)).scalar_one() == 0
    cache.refresh()
    assert len(cache.inbound_connectors()) == 0, "the removal dropped every node's inbound table"
    new = directory.add_tenant(OPERATOR, "fabrikam")
    directory.add_domain(OPERATOR, "fabrikam.com", "fabrikam", verified=True)
    scope = TenantScope(new.id)
    assert directory.inbound_connectors(scope, "fabrikam") == []
    assert directory.outbound_connectors(scope, "fabrikam") == []
    assert directory.scenario(scope, "fabrikam") is None
    with pytest.raises(NotFoundError, match="tenant fabrikam has no outbound connector 'out'"):
        directory.connector_validations(scope, "fabrikam", "out")
    assert directory.outbound_connector_by_id(out.id) is None
    assert cache.outbound_connectors(new.id) == ()
    again = directory.add_outbound_connector(
        scope, "fabrikam", "out", PARTNER, recipient_domains=["x.example"]
    )
    assert again.id != out.id, "ids are never reused"
    assert directory.connector_validations(scope, "fabrikam", "out") == []


# --- the node's cache ------------------------------------------------------------------------------------
def test_the_cache_sees_every_connector_change_within_a_refresh(
    database: Database, directory: Directory, org: Org
) -> None:
    cache = CachedDirectory(database)
    cache.refresh()
    assert len(cache.inbound_connectors()) == 0 and cache.outbound_connectors(org.contoso) == ()
    directory.add_inbound_connector(OPERATOR, "contoso", "onprem", ON_PREMISES, sender_ips=["192.0.2.1"])
    out = directory.add_outbound_connector(
        OPERATOR, "contoso", "out", PARTNER, recipient_domains=["x.example"]
    )
    assert len(cache.inbound_connectors()) == 0, "held until the next refresh"
    assert cache.refresh()
    assert [c.name for c in cache.inbound_connectors().connectors] == ["onprem"]
    assert cache.outbound_connectors(org.contoso) == (out,)
    directory.set_inbound_connector(OPERATOR, "contoso", "onprem", enabled=False)
    changed = directory.set_outbound_connector(OPERATOR, "contoso", "out", smart_hosts=["192.0.2.50:2525"])
    cache.refresh()
    assert len(cache.inbound_connectors()) == 0
    assert cache.outbound_connectors(org.contoso) == (changed,)
    directory.remove_outbound_connector(OPERATOR, "contoso", "out")
    cache.refresh()
    assert cache.outbound_connectors(org.contoso) == ()


# --- validation history ----------------------------------------------------------------------------------
def test_validation_history_is_kept_newest_first_and_bounded(directory: Directory, org: Org) -> None:
    out = directory.add_outbound_connector(
        OPERATOR, "contoso", "out", ON_PREMISES, all_accepted_domains=True, smart_hosts=["192.0.2.9"]
    )
    assert directory.connector_validations(OPERATOR, "contoso", "out") == []
    first = [
        result(out.id, "alice@contoso.com", True, 10.0, "run-1"),
        result(out.id, "bob@contoso.com", False, 10.0, "run-1"),
    ]
    directory.record_validation(OPERATOR, "contoso", "out", first)
    second = [result(out.id, "alice@contoso.com", False, 20.0, "run-2")]
    directory.record_validation(TenantScope(org.contoso), "contoso", "OUT", second)
    history = directory.connector_validations(OPERATOR, "contoso", "out")
    assert history == [second[0], first[1], first[0]]
    assert history[0].steps[1] == ValidationStep("tcp", False, "refused", "450 4.4.316 refused")
    assert directory.connector_validations(OPERATOR, "contoso", "out", limit=1) == second

    many = [result(out.id, f"r{i}@contoso.com", True, 100.0 + i, "run-3") for i in range(MAX_VALIDATIONS + 5)]
    directory.record_validation(OPERATOR, "contoso", "out", many)
    kept = directory.connector_validations(OPERATOR, "contoso", "out", limit=10_000)
    assert len(kept) == MAX_VALIDATIONS and kept[0] == many[-1] and kept[-1] == many[5]

    other = directory.add_outbound_connector(
        OPERATOR, "contoso", "other", PARTNER, recipient_domains=["x.example"]
    )
    with pytest.raises(InvalidInputError, match="is not one of outbound connector out"):
        directory.record_validation(OPERATOR, "contoso", "out", [result(other.id, "a@x.example", True, 1.0)])
    directory.remove_outbound_connector(OPERATOR, "contoso", "out")
    directory.add_outbound_connector(OPERATOR, "contoso", "out", PARTNER, recipient_domains=["z.example"])
    assert directory.connector_validations(OPERATOR, "contoso", "out") == [], "the history went with it"


# --- the tenant's scenario --------------------------------------------------------------------------------
def test_the_scenario_is_kept_replaced_and_cleared(directory: Directory, org: Org) -> None:
    contoso = TenantScope(org.contoso)
    directory.set_scenario(contoso, "contoso", "Hybrid-1", {"on_premises_ip": "192.0.2.1", "ports": [25]})
    found = directory.scenario(contoso, "contoso")
    assert found is not None
    assert (found.tenant_id, found.scenario, found.parameters) == (
        org.contoso,
        "hybrid-1",
        {"on_premises_ip": "192.0.2.1", "ports": [25]},
    )
    directory.set_scenario(contoso, "contoso", "third-party-filtering", {})
    again = directory.scenario(contoso, "contoso")
    assert again is not None and (again.scenario, again.parameters) == ("third-party-filtering", {})
    directory.clear_scenario(contoso, "contoso")
    assert directory.scenario(contoso, "contoso") is None
    directory.clear_scenario(contoso, "contoso")
    with pytest.raises(InvalidInputError, match="is not a scenario name"):
        directory.set_scenario(contoso, "contoso", "hybrid 1", {})
    with pytest.raises(InvalidInputError, match="not plain values"):
        directory.set_scenario(contoso, "contoso", "hybrid-1", {"when": object()})
    with pytest.raises(InvalidInputError, match="octets; at most"):
        directory.set_scenario(contoso, "contoso", "hybrid-1", {"x": "y" * 20_000})
    assert directory.scenario(contoso, "contoso") is None
