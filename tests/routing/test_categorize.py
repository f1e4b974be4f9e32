"""categorize: aliases, groups (nested, looping, too deep), contacts and external members; one
route per final recipient, with Expand/Resolve/Fail events and trace statuses."""

from __future__ import annotations

import pytest
from sqlalchemy import insert

from postroom.directory import ConnectionView, Directory
from postroom.model import Address
from postroom.model.flow import EventKind, Route, RoutedRecipient, TraceEvent, TraceRecipient, TraceStatus
from postroom.model.scope import OPERATOR
from postroom.routing import MAX_GROUP_DEPTH, Categorized, categorize
from postroom.storage import Database
from postroom.storage.schema import group_members
from tests.support.records import MAX_RECIPIENTS, Org, accepted, populate

MESSAGE = "m-1"


@pytest.fixture
def org(directory: Directory) -> Org:
    return populate(directory)


def group_as_stored(database: Database, directory: Directory, address: str, members: list[str]) -> None:
    """A group whose members are stored as given: data from before the directory refused unknown,
    external and looping members (or written by another version); categorizing must still cope."""
    group = directory.add_group(OPERATOR, address, members=[])
    with database.write() as conn:
        for member in members:
            parsed = Address.parse(member)
            conn.execute(
                insert(group_members).values(
                    group_id=group.id, member_key=parsed.key, member_address=str(parsed)
                )
            )


def run(database: Database, *rcpts: str, max_recipients: int = MAX_RECIPIENTS) -> Categorized:
    with database.read() as conn:
        view = ConnectionView(conn)
        return categorize(view, MESSAGE, accepted(view, *rcpts), max_recipients=max_recipients)


def routes(result: Categorized) -> list[tuple[str, str, Route]]:
    return [(r.recipient, r.original_recipient, r.route) for r in result.routes]


def events(result: Categorized) -> list[tuple[EventKind, str, dict[str, object]]]:
    return [(e.event, e.recipient, e.detail) for e in result.events]


def statuses(result: Categorized) -> dict[str, TraceStatus]:
    return {s.recipient: s.status for s in result.statuses}


def test_mailbox(database: Database, org: Org) -> None:
    result = run(database, "alice@contoso.com")
    assert result.routes == [
        RoutedRecipient("alice@contoso.com", "alice@contoso.com", org.contoso, Route.LOCAL, org.alice)
    ]
    assert result.events == []
    assert result.statuses == [
        TraceRecipient(MESSAGE, org.contoso, "alice@contoso.com", TraceStatus.PENDING, "alice@contoso.com")
    ]


def test_alias_resolves_with_a_resolve_event(database: Database, org: Org) -> None:
    result = run(database, "AL@contoso.com")
    assert result.routes == [
        RoutedRecipient("alice@contoso.com", "AL@contoso.com", org.contoso, Route.LOCAL, org.alice)
    ]
    assert result.events == [
        TraceEvent(
            MESSAGE, EventKind.RESOLVE, org.contoso, "AL@contoso.com", {"resolved_to": "alice@contoso.com"}
        )
    ]
    assert statuses(result) == {"AL@contoso.com": TraceStatus.PENDING}


def test_group_expands_and_duplicates_are_removed(database: Database, org: Org) -> None:
    result = run(database, "team@contoso.com", "alice@contoso.com", "al@contoso.com")
    assert routes(result) == [
        ("alice@contoso.com", "alice@contoso.com", Route.LOCAL),
        ("bob@contoso.com", "bob@contoso.com", Route.LOCAL),
    ]
    assert (
        EventKind.EXPAND,
        "team@contoso.com",
        {"members": ["alice@contoso.com", "bob@contoso.com"]},
    ) in events(result)
    assert statuses(result) == {
        "alice@contoso.com": TraceStatus.PENDING,
        "al@contoso.com": TraceStatus.PENDING,  # its own RCPT row, settled by alice's one delivery
        "team@contoso.com": TraceStatus.EXPANDED,
        "bob@contoso.com": TraceStatus.PENDING,
    }
    assert result.routes[0].also_settles == ("al@contoso.com",)


def test_contact_routes_remote_to_its_external_address(database: Database, org: Org) -> None:
    result = run(database, "partner@contoso.com")
    assert result.routes == [
        RoutedRecipient("ext@partner.example", "partner@contoso.com", org.contoso, Route.REMOTE, None)
    ]
    assert statuses(result) == {"partner@contoso.com": TraceStatus.PENDING}


def test_nested_groups_with_external_and_unknown_members(
    database: Database, directory: Directory, org: Org
) -> None:
    group_as_stored(
        database,
        directory,
        "all@contoso.com",
        ["team@contoso.com", "partner@contoso.com", "friend@outside.example", "ghost@contoso.com"],
    )
    result = run(database, "all@contoso.com")
    assert sorted((r.recipient, r.route, r.tenant_id) for r in result.routes) == [
        ("alice@contoso.com", Route.LOCAL, org.contoso),
        ("bob@contoso.com", Route.LOCAL, org.contoso),
        ("ext@partner.example", Route.REMOTE, org.contoso),
        ("friend@outside.example", Route.REMOTE, org.contoso),
    ]
    kinds = [(kind, recipient) for kind, recipient, _ in events(result)]
    assert kinds == [
        (EventKind.EXPAND, "all@contoso.com"),
        (EventKind.FAIL, "ghost@contoso.com"),
        (EventKind.EXPAND, "team@contoso.com"),
    ]
    fail = next(e for e in result.events if e.event is EventKind.FAIL)
    assert fail.tenant_id == org.contoso
    assert str(fail.detail["reply"]).startswith("550 5.1.1")
    assert statuses(result) == {
        "all@contoso.com": TraceStatus.EXPANDED,
        "team@contoso.com": TraceStatus.EXPANDED,
        "alice@contoso.com": TraceStatus.PENDING,
        "bob@contoso.com": TraceStatus.PENDING,
        "partner@contoso.com": TraceStatus.PENDING,
        "friend@outside.example": TraceStatus.PENDING,
        "ghost@contoso.com": TraceStatus.FAILED,
    }


def test_group_loop_terminates_and_routes_each_mailbox_once(
    database: Database, directory: Directory, org: Org
) -> None:
    group_as_stored(database, directory, "a@contoso.com", ["b@contoso.com", "alice@contoso.com"])
    group_as_stored(
        database, directory, "b@contoso.com", ["a@contoso.com", "bob@contoso.com", "alice@contoso.com"]
    )
    result = run(database, "a@contoso.com")
    assert sorted(r.recipient for r in result.routes) == ["alice@contoso.com", "bob@contoso.com"]
    assert events(result) == [
        (EventKind.EXPAND, "a@contoso.com", {"members": ["alice@contoso.com", "b@contoso.com"]}),
        (
            EventKind.EXPAND,
            "b@contoso.com",
            {"members": ["a@contoso.com", "alice@contoso.com", "bob@contoso.com"]},
        ),
        (EventKind.EXPAND, "a@contoso.com", {"skipped": "group loop"}),
    ]


def test_group_containing_itself(database: Database, directory: Directory, org: Org) -> None:
    group_as_stored(database, directory, "self@contoso.com", ["self@contoso.com", "bob@contoso.com"])
    result = run(database, "self@contoso.com")
    assert routes(result) == [("bob@contoso.com", "bob@contoso.com", Route.LOCAL)]
    assert events(result)[-1] == (EventKind.EXPAND, "self@contoso.com", {"skipped": "group loop"})


def test_nesting_depth_is_bounded(database: Database, directory: Directory, org: Org) -> None:
    chain = [f"level{n}@contoso.com" for n in range(MAX_GROUP_DEPTH + 2)]
    group_as_stored(database, directory, chain[-1], ["alice@contoso.com"])
    for outer, inner in zip(reversed(chain[:-1]), reversed(chain[1:]), strict=True):
        group_as_stored(database, directory, outer, [inner, "bob@contoso.com"])
    result = run(database, chain[0])
    expanded = [recipient for kind, recipient, detail in events(result) if "members" in detail]
    assert expanded == chain[:MAX_GROUP_DEPTH]
    assert events(result)[-1] == (EventKind.EXPAND, chain[MAX_GROUP_DEPTH], {"skipped": "nesting too deep"})
    assert routes(result) == [("bob@contoso.com", "bob@contoso.com", Route.LOCAL)]  # alice is too deep


def test_a_member_in_another_tenant_is_remote_mail_of_the_groups_tenant(
    database: Database, directory: Directory, org: Org
) -> None:
    group_as_stored(
        database,
        directory,
        "crew@fabrikam.com",
        ["carol@fabrikam.com", "alice@contoso.com", "team@contoso.com", "ghost@contoso.com"],
    )
    result = run(database, "crew@fabrikam.com")
    assert sorted((r.recipient, r.route, r.tenant_id, r.mailbox_id) for r in result.routes) == [
        ("alice@contoso.com", Route.REMOTE, org.fabrikam, None),  # as an outside sender would reach it
        ("carol@fabrikam.com", Route.LOCAL, org.fabrikam, org.carol),
        ("ghost@contoso.com", Route.REMOTE, org.fabrikam, None),  # contoso's DBEB will answer for it
        ("team@contoso.com", Route.REMOTE, org.fabrikam, None),  # not expanded: contoso's group
    ]
    assert {s.tenant_id for s in result.statuses} == {org.fabrikam}
    assert {e.tenant_id for e in result.events} == {org.fabrikam}
    assert [e.recipient for e in result.events] == ["crew@fabrikam.com"]


def test_a_direct_recipient_and_another_tenants_group_member_are_two_deliveries(
    database: Database, directory: Directory, org: Org
) -> None:
    group_as_stored(database, directory, "crew@fabrikam.com", ["alice@contoso.com"])
    result = run(database, "alice@contoso.com", "crew@fabrikam.com")
    assert [(r.recipient, r.route, r.tenant_id) for r in result.routes] == [
        ("alice@contoso.com", Route.LOCAL, org.contoso),
        ("alice@contoso.com", Route.REMOTE, org.fabrikam),
    ]


def test_every_event_carries_the_message_id(database: Database, org: Org) -> None:
    result = run(database, "team@contoso.com", "al@contoso.com", "partner@contoso.com")
    assert {e.message_id for e in result.events} == {MESSAGE}
    assert {s.message_id for s in result.statuses} == {MESSAGE}
    assert len({r.recipient for r in result.routes}) == len(result.routes)


@pytest.mark.parametrize(
    "member",
    ["ghost@unverified.contoso.com", "ghost@relay.contoso.com", "ghost@contoso.com"],
    ids=["unverified-own-domain", "internal-relay-own-domain", "authoritative-own-domain"],
)
def test_unknown_member_in_an_own_domain_fails_and_never_routes_out(
    database: Database, directory: Directory, org: Org, member: str
) -> None:
    directory.add_domain(OPERATOR, "unverified.contoso.com", "contoso")
    group_as_stored(database, directory, "odd@contoso.com", ["bob@contoso.com", member])
    result = run(database, "odd@contoso.com")
    assert routes(result) == [("bob@contoso.com", "bob@contoso.com", Route.LOCAL)]
    assert statuses(result)[member] is TraceStatus.FAILED
    assert (EventKind.FAIL, member, {"reply": "550 5.1.1 Recipient not found"}) in events(result)


def lattice(directory: Directory, layers: int, width: int) -> str:
    """Groups in `layers` layers of `width`, each a member of every group of the layer above; the
    last layer holds alice and bob. Paths from the top: width ** layers. Returns the top group."""
    for layer in reversed(range(layers)):
        below = (
            [f"g{layer + 1}-{n}@contoso.com" for n in range(width)]
            if layer + 1 < layers
            else ["alice@contoso.com", "bob@contoso.com"]
        )
        for n in range(width):
            directory.add_group(OPERATOR, f"g{layer}-{n}@contoso.com", members=below)
    directory.add_group(OPERATOR, "top@contoso.com", members=[f"g0-{n}@contoso.com" for n in range(width)])
    return "top@contoso.com"


def test_a_lattice_of_groups_expands_each_group_once(
    database: Database, directory: Directory, org: Org
) -> None:
    top = lattice(directory, layers=4, width=4)  # 256 paths to each mailbox
    result = run(database, top)
    assert routes(result) == [
        ("alice@contoso.com", "alice@contoso.com", Route.LOCAL),
        ("bob@contoso.com", "bob@contoso.com", Route.LOCAL),
    ]
    expanded = [e.recipient for e in result.events if e.event is EventKind.EXPAND]
    assert len(expanded) == len(set(expanded)) == 1 + 4 * 4  # the top group and each group once
    assert len(result.statuses) == 1 + 4 * 4 + 2


def test_recipients_past_the_limit_fail_with_one_event_naming_it(
    database: Database, directory: Directory, org: Org
) -> None:
    members = [f"m{n:02}@outside.example" for n in range(30)]
    group_as_stored(database, directory, "many@contoso.com", members)
    result = run(database, "bob@contoso.com", "many@contoso.com", max_recipients=10)
    assert [r.recipient for r in result.routes] == ["bob@contoso.com", *members[:9]]
    [fail] = [e for e in result.events if e.event is EventKind.FAIL]
    assert fail.tenant_id == org.contoso
    assert fail.detail == {
        "reply": "550 5.5.3 Too many recipients after group expansion",
        "limit": "routing.max_expanded_recipients",
        "max": 10,
        "count": 21,
        "sample": members[9:19],
    }
    assert len(result.statuses) == 1 + 1 + 9  # no row for each recipient past the limit
