"""categorize with outbound connectors: which connector each remote route leaves by (spec §3.3: exact,
all accepted domains, wildcard; never rule-scoped, disabled or another tenant's), centralized mail
transport (and its way back from on-premises), sender rewriting, and mail of no tenant."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from postroom.directory import ConnectionView, Directory
from postroom.model import Address
from postroom.model.connectors import Attribution, ConnectorType, InboundConnector, Source
from postroom.model.flow import EventKind, Route
from postroom.model.scope import OPERATOR
from postroom.routing import Accepted, Categorized, Relayed, Srs, categorize
from postroom.storage import Database
from postroom.storage.schema import outbound_connectors
from tests.support.outbound_connectors import add_outbound_connector
from tests.support.records import MAX_RECIPIENTS, Org, accepted, populate

MESSAGE = "m-1"
SRS = Srs("srs.postroom.test", b"a secret of the node")
PARTNER = ConnectorType.PARTNER
ON_PREMISES = ConnectorType.ON_PREMISES


@pytest.fixture
def org(directory: Directory) -> Org:
    return populate(directory)


def relayed(tenant_id: int | None, *addresses: str) -> list[Accepted | Relayed]:
    return [Relayed(Address.parse(a), Address.parse(a), tenant_id) for a in addresses]


def run(
    database: Database,
    items: list[Accepted | Relayed],
    *,
    sender: str = "alice@contoso.com",
    source: Source | None = None,
) -> Categorized:
    with database.read() as conn:
        return categorize(
            ConnectionView(conn),
            MESSAGE,
            items,
            max_recipients=MAX_RECIPIENTS,
            sender=sender,
            srs=SRS,
            source=source,
        )


def names(database: Database) -> dict[int, str]:
    with database.read() as conn:
        return {
            r.id: r.name for r in conn.execute(select(outbound_connectors.c.id, outbound_connectors.c.name))
        }


def chosen(database: Database, result: Categorized) -> dict[str, str | None]:
    known = names(database)
    return {r.recipient: None if r.connector_id is None else known[r.connector_id] for r in result.routes}


def from_on_premises(tenant_id: int) -> Source:
    inbound = InboundConnector(1, tenant_id, "on-premises-in", ON_PREMISES, sender_ips=("192.0.2.25",))
    return Source("192.0.2.25", "contoso.com", attribution=Attribution(inbound, False, (inbound,)))


def test_the_choice_order_of_spec_3_3(database: Database, org: Org) -> None:
    add = add_outbound_connector
    add(
        database,
        org.contoso,
        "all",
        ON_PREMISES,
        all_accepted_domains=True,
        smart_hosts=["onprem.contoso.com"],
    )
    add(database, org.contoso, "partner", PARTNER, recipient_domains=["partner.example"])
    add(database, org.contoso, "wild", PARTNER, recipient_domains=["*.partner.example"])
    add(database, org.contoso, "wider", PARTNER, recipient_domains=["*.example"])
    add(database, org.contoso, "wild-contoso", PARTNER, recipient_domains=["*.contoso.com"])
    add(database, org.contoso, "rule", PARTNER, recipient_domains=["rule.test"], rule_scoped=True)
    add(database, org.contoso, "off", PARTNER, recipient_domains=["off.test"], enabled=False)
    add(database, org.fabrikam, "fabrikam-only", PARTNER, recipient_domains=["elsewhere.test"])
    cases = {
        "ext@partner.example": "partner",  # 1. exact
        "ext@PARTNER.example": "partner",
        "x@relay.contoso.com": "all",  # 2. an accepted domain: all-accepted beats the wildcard
        "x@sales.partner.example": "wild",  # 3. the longest wildcard
        "x@other.example": "wider",
        "x@sales.contoso.com": "wild-contoso",  # not an accepted domain of contoso
        "x@rule.test": None,  # rule-scoped: only a mail flow rule names it
        "x@off.test": None,  # disabled
        "x@elsewhere.test": None,  # another tenant's connector is never contoso's
    }
    result = run(database, relayed(org.contoso, *cases))
    assert chosen(database, result) == {str(Address.parse(a)): c for a, c in cases.items()}
    assert all(r.route is Route.REMOTE and r.tenant_id == org.contoso for r in result.routes)
    # fabrikam's own mail takes fabrikam's connector, and none of contoso's.
    result = run(database, relayed(org.fabrikam, "x@elsewhere.test", "ext@partner.example"))
    assert chosen(database, result) == {"x@elsewhere.test": "fabrikam-only", "ext@partner.example": None}


def test_a_contact_and_a_group_member_leave_by_the_tenants_connector(
    database: Database, directory: Directory, org: Org
) -> None:
    partner = add_outbound_connector(
        database, org.contoso, "partner", PARTNER, recipient_domains=["partner.example"]
    )
    # Another tenant's recipient is a remote organization's: a contact of contoso names it.
    directory.add_contact(OPERATOR, "carol.fab@contoso.com", external_address="carol@fabrikam.com")
    directory.add_group(
        OPERATOR, "outside@contoso.com", members=["partner@contoso.com", "carol.fab@contoso.com"]
    )
    add_outbound_connector(database, org.contoso, "fabrikam", PARTNER, recipient_domains=["fabrikam.com"])
    with database.read() as conn:
        items: list[Accepted | Relayed] = list(accepted(ConnectionView(conn), "outside@contoso.com"))
    result = run(database, items)
    assert chosen(database, result) == {"ext@partner.example": "partner", "carol@fabrikam.com": "fabrikam"}
    contact = next(r for r in result.routes if r.recipient == "ext@partner.example")
    assert contact.connector_id == partner and contact.original_recipient == "partner@contoso.com"
    resolve = [e for e in result.events if e.event is EventKind.RESOLVE and "connector" in e.detail]
    assert {(e.recipient, e.detail["connector"]) for e in resolve} == {
        ("partner@contoso.com", "partner"),
        ("carol.fab@contoso.com", "fabrikam"),
    }


def test_mail_of_no_tenant_never_uses_a_connector(database: Database, org: Org) -> None:
    add_outbound_connector(database, org.contoso, "partner", PARTNER, recipient_domains=["partner.example"])
    result = run(database, relayed(None, "ext@partner.example"), sender="")
    assert [(r.recipient, r.connector_id) for r in result.routes] == [("ext@partner.example", None)]


def test_no_connector_leaves_routes_as_they_were(database: Database, org: Org) -> None:
    with database.read() as conn:
        items: list[Accepted | Relayed] = list(accepted(ConnectionView(conn), "alice@contoso.com"))
    items += relayed(org.contoso, "ext@partner.example")
    result = run(database, items)
    assert [(r.route, r.connector_id, r.mailbox_id) for r in result.routes] == [
        (Route.REMOTE, None, None),
        (Route.LOCAL, None, org.alice),
    ]
    assert result.events == []


def test_centralized_mail_transport_sends_every_route_to_on_premises(database: Database, org: Org) -> None:
    cmt = add_outbound_connector(
        database,
        org.contoso,
        "on-premises",
        ON_PREMISES,
        all_accepted_domains=True,
        smart_hosts=["onprem.contoso.com"],
        route_all_via_on_premises=True,
    )
    add_outbound_connector(database, org.contoso, "partner", PARTNER, recipient_domains=["partner.example"])
    with database.read() as conn:
        items: list[Accepted | Relayed] = list(
            accepted(ConnectionView(conn), "al@contoso.com", "team@contoso.com")
        )
    items += relayed(org.contoso, "ext@partner.example")
    result = run(database, items, sender="dana@outside.example")
    assert sorted((r.recipient, r.route, r.connector_id, r.mailbox_id) for r in result.routes) == [
        ("alice@contoso.com", Route.REMOTE, cmt, None),  # its primary address, over the connector
        ("bob@contoso.com", Route.REMOTE, cmt, None),
        ("ext@partner.example", Route.REMOTE, cmt, None),  # CMT outranks the partner connector
    ]
    redirects = [e for e in result.events if e.event is EventKind.REDIRECT]
    assert {e.recipient for e in redirects} == {"al@contoso.com", "bob@contoso.com", "ext@partner.example"}
    assert all(
        e.detail["connector"] == "on-premises" and e.detail["centralized_mail_transport"] for e in redirects
    )
    assert all(r.envelope_sender is None for r in result.routes)  # no sender rewriting asked


def test_mail_back_from_on_premises_is_delivered_not_sent_round_again(database: Database, org: Org) -> None:
    add_outbound_connector(
        database,
        org.contoso,
        "on-premises",
        ON_PREMISES,
        all_accepted_domains=True,
        smart_hosts=["onprem.contoso.com"],
        route_all_via_on_premises=True,
    )
    with database.read() as conn:
        items: list[Accepted | Relayed] = list(accepted(ConnectionView(conn), "alice@contoso.com"))
    items += relayed(org.contoso, "ext@outside.example")
    result = run(database, items, source=from_on_premises(org.contoso))
    assert sorted((r.recipient, r.route, r.connector_id) for r in result.routes) == [
        ("alice@contoso.com", Route.LOCAL, None),
        ("ext@outside.example", Route.REMOTE, None),  # to the internet by MX
    ]
    # Attributed to another tenant's on-premises: contoso's mail still goes round its own.
    other = run(database, items, source=from_on_premises(org.fabrikam))
    assert {r.route for r in other.routes} == {Route.REMOTE} and all(r.connector_id for r in other.routes)


def test_an_internal_relay_recipient_takes_the_on_premises_connector_with_sender_rewriting(
    database: Database, org: Org
) -> None:
    onprem = add_outbound_connector(
        database,
        org.contoso,
        "on-premises",
        ON_PREMISES,
        recipient_domains=["relay.contoso.com"],
        smart_hosts=["onprem.contoso.com"],
        sender_rewriting=True,
    )
    items = relayed(org.contoso, "legacy@relay.contoso.com")
    outside = run(database, items, sender="dana@outside.example")
    [route] = outside.routes
    assert route.connector_id == onprem and route.envelope_sender is not None
    assert route.envelope_sender.startswith("SRS0=") and route.envelope_sender.endswith("@srs.postroom.test")
    assert SRS.reverse(Address.parse(route.envelope_sender)) == Address.parse("dana@outside.example")
    # The tenant's own sender, the null sender, and an SRS sender of ours are kept.
    for sender in ("alice@contoso.com", "", route.envelope_sender):
        [kept] = run(database, items, sender=sender).routes
        assert kept.connector_id == onprem and kept.envelope_sender is None, sender


def test_a_tenant_reusing_a_removed_tenants_name_has_none_of_its_connectors(
    database: Database, directory: Directory, org: Org
) -> None:
    directory.add_tenant(OPERATOR, "northwind")
    directory.add_domain(OPERATOR, "northwind.example", "northwind", verified=True)
    old = directory.get_tenant(OPERATOR, "northwind").id
    add_outbound_connector(database, old, "partner", PARTNER, recipient_domains=["partner.example"])
    with database.write() as conn:
        directory.delete_tenant(conn, OPERATOR, "northwind")
    directory.add_tenant(OPERATOR, "northwind")
    new = directory.get_tenant(OPERATOR, "northwind").id
    assert new != old
    result = run(database, relayed(new, "ext@partner.example"))
    assert [(r.tenant_id, r.connector_id) for r in result.routes] == [(new, None)]
    assert names(database) == {}  # removed with its tenant


def test_an_external_forward_leaves_by_the_connector_and_a_refused_one_takes_none(
    database: Database, directory: Directory, org: Org
) -> None:
    partner = add_outbound_connector(
        database, org.contoso, "partner", PARTNER, recipient_domains=["partner.example"]
    )
    directory.set_forwarding(OPERATOR, "bob@contoso.com", "bob.home@partner.example")
    with database.read() as conn:
        items: list[Accepted | Relayed] = list(accepted(ConnectionView(conn), "bob@contoso.com"))
    refused = run(database, items, sender="dana@outside.example")  # automatic forwarding is off
    forward = next(r for r in refused.routes if r.recipient == "bob.home@partner.example")
    assert forward.failure and forward.connector_id is None
    directory.set_auto_forward(OPERATOR, "contoso", "on")
    allowed = run(database, items, sender="dana@outside.example")
    [forward] = allowed.routes
    assert (forward.recipient, forward.connector_id) == ("bob.home@partner.example", partner)
    assert forward.envelope_sender is not None and forward.envelope_sender.startswith("SRS0=")
