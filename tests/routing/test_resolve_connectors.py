"""resolve_recipient with inbound connectors: the anti-relay rule of spec §3.6 from each kind of source,
Partner connector restrictions (§3.4), internal-relay unknown recipients (§1.2, §6) with the loop
guard, and a removed tenant's connectors gone for a new tenant with its names. The attacker's side
throughout: a stranger, another tenant's on-premises server, a certificate claimed by the wrong tenant.

Sources are built as the MX session builds them (`app.inbound.attribute_source`) over the real
directory (SQLite); connectors are rows (`tests.support.connectors`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import select

from postroom.app.inbound import attribute_source
from postroom.directory import CachedDirectory, ConnectionView, Directory, DirectoryView, DomainType
from postroom.model import Address
from postroom.model.connectors import ConnectorType, Source
from postroom.model.scope import OPERATOR
from postroom.routing import Accepted, Rejected, RejectReason, Relayed, Resolution, resolve_recipient
from postroom.storage import Database
from postroom.storage.schema import inbound_connectors
from tests.support.connectors import add_inbound, add_outbound, remove_outbound
from tests.support.records import Org, new_directory, open_database, populate

ON_PREM, ON_PREM_DRIFTED, FABRIKAM_ON_PREM, SHARED, STRANGER = (
    "192.0.2.10",
    "192.0.2.11",
    "192.0.2.20",
    "192.0.2.30",
    "192.0.2.99",
)
THIRD_PARTY = "198.51.100.5"
CONTOSO_CERT = ("mail.contoso.com",)


@dataclass(frozen=True)
class World:
    org: Org
    northwind: int


def build_world(database: Database, directory: Directory) -> World:
    org = populate(directory)
    northwind = directory.add_tenant(OPERATOR, "northwind").id
    directory.add_domain(OPERATOR, "northwind.example", "northwind", verified=True)
    directory.add_mailbox(OPERATOR, "dave@northwind.example")
    on_prem = ConnectorType.ON_PREMISES
    add_inbound(database, org.contoso, "contoso on-premises", on_prem, sender_ips=[ON_PREM, SHARED])
    add_inbound(
        database, org.contoso, "contoso by certificate", on_prem, tls_certificate_name="*.contoso.com"
    )
    add_inbound(
        database, org.fabrikam, "fabrikam on-premises", on_prem, sender_ips=[FABRIKAM_ON_PREM, SHARED]
    )
    # fabrikam claims contoso's certificate name: it must never get contoso's server.
    add_inbound(database, org.fabrikam, "fabrikam grab", on_prem, tls_certificate_name="*.contoso.com")
    # northwind locks its inbound mail to its third-party filter: by IP for everyone, by certificate
    # for special.example's mail.
    partner = ConnectorType.PARTNER
    add_inbound(
        database, northwind, "filter", partner, sender_ips=["198.51.100.0/24"], restrict_domains_to_ips=True
    )
    add_inbound(
        database,
        northwind,
        "special",
        partner,
        sender_domains=["special.example"],
        tls_certificate_name="*.filter.example",
        restrict_domains_to_certificate=True,
    )
    return World(org, northwind)


@pytest.fixture
def world(database: Database, directory: Directory) -> World:
    """A world of its own, for a test that changes it."""
    return build_world(database, directory)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Database, World]]:
    """One world for the tests that only read it."""
    database = open_database(tmp_path_factory.mktemp("world"))
    yield database, build_world(database, new_directory(database))
    database.dispose()


def source(
    view: DirectoryView, peer_ip: str, sender: str, *, tls: bool = True, certificate: tuple[str, ...] = ()
) -> Source:
    domain = Address.parse(sender).domain if sender else ""
    attributed = attribute_source(
        view, peer_ip=peer_ip, tls=tls, certificate=certificate, sender_domain=domain
    )
    return attributed.source


def decide(
    database: Database,
    peer_ip: str,
    sender: str,
    recipient: str,
    *,
    tls: bool = True,
    certificate: tuple[str, ...] = (),
    mx_elsewhere: frozenset[str] = frozenset(),
) -> Resolution:
    with database.read() as conn:
        view = ConnectionView(conn)
        return resolve_recipient(
            view,
            Address.parse(recipient),
            null_sender=not sender,
            source=source(view, peer_ip, sender, tls=tls, certificate=certificate),
            mx_elsewhere=mx_elsewhere,
        )


def outcome(found: Resolution) -> tuple[str, object]:
    if isinstance(found, Rejected):
        return f"{found.reply.code} {found.reply.enhanced}", found.reason
    return type(found).__name__, found.tenant_id


@pytest.mark.parametrize(
    ("peer", "certificate", "sender", "recipient", "expected", "tenant"),
    [
        # (a): on-premises by IP, sending from the tenant's own domain, relays out.
        (ON_PREM, (), "app@contoso.com", "x@elsewhere.example", ("Relayed", "contoso"), "contoso"),
        (ON_PREM, (), "app@relay.contoso.com", "X@ELSEWHERE.EXAMPLE", ("Relayed", "contoso"), "contoso"),
        # ... not for a sender domain it does not own, nor for the null sender.
        (
            ON_PREM,
            (),
            "x@elsewhere.example",
            "y@elsewhere.example",
            ("550 5.7.64", RejectReason.RELAY_ACCESS_DENIED),
            "contoso",
        ),
        (ON_PREM, (), "", "y@elsewhere.example", ("550 5.7.64", RejectReason.RELAY_ACCESS_DENIED), "contoso"),
        (
            ON_PREM,
            (),
            "x@pending.example",
            "y@elsewhere.example",
            ("550 5.7.64", RejectReason.RELAY_ACCESS_DENIED),
            "contoso",
        ),
        # (b): by certificate naming a tenant domain: NDRs and non-owned sender domains too.
        (STRANGER, CONTOSO_CERT, "", "y@elsewhere.example", ("Relayed", "contoso"), "contoso"),
        (
            STRANGER,
            CONTOSO_CERT,
            "x@elsewhere.example",
            "y@elsewhere.example",
            ("Relayed", "contoso"),
            "contoso",
        ),
        (STRANGER, ("smtp.relay.contoso.com",), "", "y@elsewhere.example", ("Relayed", "contoso"), "contoso"),
        # Drift: contoso relays through on-premises connectors, and this client matches none.
        (
            ON_PREM_DRIFTED,
            (),
            "app@contoso.com",
            "y@elsewhere.example",
            ("550 5.7.64", RejectReason.TENANT_ATTRIBUTION),
            "contoso",
        ),
        # A certificate naming no tenant domain attributes nothing.
        (
            STRANGER,
            ("mail.contoso.com.evil.example",),
            "",
            "y@elsewhere.example",
            ("550 5.7.1", RejectReason.RELAY_DENIED),
            None,
        ),
        # The stranger: never a relay.
        (
            STRANGER,
            (),
            "x@elsewhere.example",
            "y@elsewhere.example",
            ("550 5.7.1", RejectReason.RELAY_DENIED),
            None,
        ),
        (STRANGER, (), "", "y@elsewhere.example", ("550 5.7.1", RejectReason.RELAY_DENIED), None),
        # Tenant B's server cannot relay as tenant A.
        (
            FABRIKAM_ON_PREM,
            (),
            "ceo@contoso.com",
            "y@elsewhere.example",
            ("550 5.7.64", RejectReason.RELAY_ACCESS_DENIED),
            "fabrikam",
        ),
        (
            FABRIKAM_ON_PREM,
            (),
            "carol@fabrikam.com",
            "y@elsewhere.example",
            ("Relayed", "fabrikam"),
            "fabrikam",
        ),
        # One IP named by two tenants: the sender's domain tells them apart; a stranger's does not.
        (SHARED, (), "app@contoso.com", "y@elsewhere.example", ("Relayed", "contoso"), "contoso"),
        (SHARED, (), "carol@fabrikam.com", "y@elsewhere.example", ("Relayed", "fabrikam"), "fabrikam"),
        (
            SHARED,
            (),
            "x@elsewhere.example",
            "y@elsewhere.example",
            ("550 5.7.1", RejectReason.RELAY_DENIED),
            None,
        ),
        # Never an address literal, whoever asks.
        (
            ON_PREM,
            (),
            "app@contoso.com",
            "x@[192.0.2.1]",
            ("550 5.7.1", RejectReason.RELAY_DENIED),
            "contoso",
        ),
        (
            STRANGER,
            CONTOSO_CERT,
            "",
            "postmaster@[192.0.2.1]",
            ("550 5.7.1", RejectReason.RELAY_DENIED),
            "contoso",
        ),
        # The tenant's own recipients are its own mail, whatever the sender.
        (ON_PREM, (), "x@elsewhere.example", "alice@contoso.com", ("Accepted", "contoso"), "contoso"),
        (
            ON_PREM,
            (),
            "app@contoso.com",
            "nobody@contoso.com",
            ("550 5.4.1", RejectReason.UNKNOWN_RECIPIENT),
            "contoso",
        ),
        # Another tenant's recipient: relayed (out and back in through the MX) under the rule; else
        # that organization's inbound mail, as from anyone.
        (ON_PREM, (), "app@contoso.com", "carol@fabrikam.com", ("Relayed", "contoso"), "contoso"),
        (ON_PREM, (), "x@elsewhere.example", "carol@fabrikam.com", ("Accepted", "fabrikam"), "fabrikam"),
        # Another tenant's unverified domain is not anyone's yet: a relay like any other.
        (ON_PREM, (), "app@contoso.com", "x@pending.example", ("Relayed", "contoso"), "contoso"),
        (
            STRANGER,
            (),
            "app@contoso.com",
            "x@pending.example",
            ("550 5.7.64", RejectReason.TENANT_ATTRIBUTION),
            "contoso",
        ),
    ],
)
def test_the_anti_relay_rule(
    shared: tuple[Database, World],
    peer: str,
    certificate: tuple[str, ...],
    sender: str,
    recipient: str,
    expected: tuple[str, object],
    tenant: str | None,
) -> None:
    database, world = shared
    tenants = {"contoso": world.org.contoso, "fabrikam": world.org.fabrikam, None: None}
    if expected[0] in ("Relayed", "Accepted"):
        expected = (expected[0], tenants[str(expected[1])])
    found = decide(database, peer, sender, recipient, certificate=certificate)
    assert outcome(found) == expected
    assert found.tenant_id == tenants[tenant]
    if isinstance(found, Relayed):
        assert found.target == found.recipient == Address.parse(recipient)


def test_a_certificate_another_tenant_claims_still_attributes_to_its_owner(
    shared: tuple[Database, World],
) -> None:
    database, world = shared
    with database.read() as conn:
        view = ConnectionView(conn)
        found = source(view, STRANGER, "", certificate=CONTOSO_CERT)
    assert found.on_premises_tenant == world.org.contoso and found.attribution.by_certificate
    assert {c.name for c in found.attribution.candidates} >= {"contoso by certificate", "fabrikam grab"}


def test_the_tenant_plaintext_requirement_is_the_sessions_and_relaying_does_not_need_tls(
    shared: tuple[Database, World],
) -> None:
    database, _world = shared
    # require_tls is refused at MAIL by the session (tests/integration); routing decides on attribution.
    found = decide(database, ON_PREM, "app@contoso.com", "x@elsewhere.example", tls=False)
    assert isinstance(found, Relayed)


@pytest.mark.parametrize(
    ("peer", "tls", "certificate", "sender", "expected"),
    [
        (THIRD_PARTY, True, (), "x@internet.example", ("Accepted", None)),
        (THIRD_PARTY, True, (), "", ("Accepted", None)),
        (THIRD_PARTY, False, (), "x@internet.example", ("550 5.7.51", RejectReason.PARTNER_RESTRICTED)),
        (STRANGER, True, (), "x@internet.example", ("550 5.7.51", RejectReason.PARTNER_RESTRICTED)),
        (STRANGER, True, (), "", ("550 5.7.51", RejectReason.PARTNER_RESTRICTED)),
        # special.example's exact connector wins over `*`: its certificate, not the IP.
        (THIRD_PARTY, True, (), "x@special.example", ("550 5.7.51", RejectReason.PARTNER_RESTRICTED)),
        (STRANGER, True, ("mx1.filter.example",), "x@special.example", ("Accepted", None)),
        (
            STRANGER,
            True,
            ("mx1.filter.example",),
            "x@internet.example",
            ("550 5.7.51", RejectReason.PARTNER_RESTRICTED),
        ),
        # A tenant's on-premises server is not held to another tenant's Partner connector's IPs either.
        (ON_PREM, True, (), "app@contoso.com", ("Relayed", None)),
    ],
)
def test_partner_restrictions_hold_the_tenants_recipients_only(
    shared: tuple[Database, World],
    peer: str,
    tls: bool,
    certificate: tuple[str, ...],
    sender: str,
    expected: tuple[str, object],
) -> None:
    database, world = shared
    found = decide(database, peer, sender, "dave@northwind.example", tls=tls, certificate=certificate)
    if expected[0] == "Relayed":  # contoso's on-premises relays to northwind as to any organization
        assert outcome(found) == ("Relayed", world.org.contoso)
        return
    if expected[0] == "Accepted":
        expected = ("Accepted", world.northwind)
    assert outcome(found) == expected
    # contoso has no Partner connector: the same client reaches contoso's recipients.
    other = decide(database, peer, sender, "bob@contoso.com", tls=tls, certificate=certificate)
    assert outcome(other) == ("Accepted", world.org.contoso)


def test_without_a_source_nothing_is_relayed_and_no_partner_restriction_applies(
    shared: tuple[Database, World],
) -> None:
    database, _world = shared
    with database.read() as conn:
        view = ConnectionView(conn)
        assert isinstance(resolve_recipient(view, Address.parse("dave@northwind.example")), Accepted)
        refused = resolve_recipient(view, Address.parse("x@elsewhere.example"))
        assert isinstance(refused, Rejected) and refused.reason is RejectReason.RELAY_DENIED


def test_internal_relay_unknown_recipients(database: Database, directory: Directory, world: World) -> None:
    contoso = world.org.contoso
    unknown = "nobody@relay.contoso.com"
    found = decide(database, STRANGER, "x@internet.example", unknown)
    assert outcome(found) == ("550 5.4.1", RejectReason.INTERNAL_RELAY_UNROUTED)
    assert found.tenant_id == contoso
    # The caller found its MX elsewhere: relayed by MX.
    by_mx = decide(
        database, STRANGER, "x@internet.example", unknown, mx_elsewhere=frozenset({"relay.contoso.com"})
    )
    assert outcome(by_mx) == ("Relayed", contoso)
    # A Partner or a disabled outbound connector is no route to on-premises; an exact Partner one
    # is chosen before one for all accepted domains (spec §3.3), so it hides that one too.
    partner = add_outbound(
        database, contoso, "partner", ConnectorType.PARTNER, recipient_domains=["relay.contoso.com"]
    )
    add_outbound(
        database,
        contoso,
        "off",
        ConnectorType.ON_PREMISES,
        recipient_domains=["relay.contoso.com"],
        enabled=False,
    )
    add_outbound(database, contoso, "to on-premises", ConnectorType.ON_PREMISES, all_accepted_domains=True)
    found = decide(database, STRANGER, "x@internet.example", unknown)
    assert outcome(found) == ("550 5.4.1", RejectReason.INTERNAL_RELAY_UNROUTED)
    # Without the Partner one, the on-premises connector for every accepted domain is the route.
    remove_outbound(database, partner, contoso)
    found = decide(database, STRANGER, "x@internet.example", unknown)
    assert outcome(found) == ("Relayed", contoso)
    # ... unless on-premises itself sent it: it did not know the recipient either (loop guard).
    for peer, certificate in ((ON_PREM, ()), (STRANGER, CONTOSO_CERT)):
        looped = decide(database, peer, "app@contoso.com", unknown, certificate=certificate)
        assert outcome(looped) == ("550 5.4.1", RejectReason.INTERNAL_RELAY_LOOP), peer
        assert (
            str(looped.reply if isinstance(looped, Rejected) else "")
            == "550 5.4.1 Recipient address rejected: Access denied"
        )
    # Known recipients of the internal-relay domain are hosted here.
    directory.add_mailbox(OPERATOR, "eve@relay.contoso.com")
    assert outcome(decide(database, ON_PREM, "app@contoso.com", "eve@relay.contoso.com")) == (
        "Accepted",
        contoso,
    )
    # Another tenant's on-premises server is no loop for contoso.
    from_fabrikam = decide(database, FABRIKAM_ON_PREM, "carol@fabrikam.com", unknown)
    assert outcome(from_fabrikam) == ("Relayed", world.org.fabrikam)  # fabrikam relays it, out and in


def test_a_removed_tenants_connectors_are_gone_for_a_new_tenant_with_its_names(
    database: Database, directory: Directory, world: World
) -> None:
    ghost = directory.add_tenant(OPERATOR, "ghost").id
    directory.add_domain(OPERATOR, "ghost.example", "ghost", verified=True)
    add_inbound(database, ghost, "ghost on-premises", ConnectorType.ON_PREMISES, sender_ips=["192.0.2.40"])
    cache = CachedDirectory(database)
    cache.refresh()
    assert len(cache.inbound_connectors().of_tenant(ghost)) == 1
    assert outcome(decide(database, "192.0.2.40", "app@ghost.example", "x@elsewhere.example")) == (
        "Relayed",
        ghost,
    )
    with database.write() as conn:
        directory.delete_tenant(conn, OPERATOR, "ghost")
    reborn = directory.add_tenant(OPERATOR, "ghost").id
    directory.add_domain(OPERATOR, "ghost.example", "ghost", DomainType.AUTHORITATIVE, verified=True)
    assert reborn != ghost
    with database.read() as conn:
        left = conn.execute(
            select(inbound_connectors.c.id).where(inbound_connectors.c.tenant_id == ghost)
        ).all()
    assert left == []
    found = decide(database, "192.0.2.40", "app@ghost.example", "x@elsewhere.example")
    assert outcome(found) == ("550 5.7.1", RejectReason.RELAY_DENIED)
    # A node's cache drops the removed tenant's connectors too.
    assert cache.refresh()
    assert cache.inbound_connectors().of_tenant(ghost) == ()
    assert all(c.tenant_id != ghost for c in cache.inbound_connectors().connectors)
