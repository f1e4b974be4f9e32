"""Mailbox forwarding at categorize (inside the tenant, to another tenant, to the internet; the
auto-forwarding policy and remote domains; SRS; loops), and SRS bounces at RCPT."""

from __future__ import annotations

import itertools

import pytest

from postroom.directory import ConnectionView, Directory, RemoteDomainChange
from postroom.model import Address, replies
from postroom.model.flow import EventKind, Route, RoutedRecipient, TraceStatus
from postroom.model.scope import OPERATOR
from postroom.routing import (
    MAX_FORWARD_HOPS,
    Accepted,
    Categorized,
    Rejected,
    RejectReason,
    Relayed,
    Srs,
    categorize,
    resolve_recipient,
)
from postroom.storage import Database
from tests.support.records import MAX_RECIPIENTS, Org, accepted, populate

NOW = 1_700_000_000.0
SRS = Srs("postroom.test", b"test key", clock=lambda: NOW)
SENDER = "sender@origin.example"


@pytest.fixture
def org(directory: Directory) -> Org:
    return populate(directory)


def run(database: Database, *rcpts: str, sender: str = SENDER) -> Categorized:
    with database.read() as conn:
        view = ConnectionView(conn)
        return categorize(
            view, "m-1", accepted(view, *rcpts), max_recipients=MAX_RECIPIENTS, sender=sender, srs=SRS
        )


def routes(result: Categorized) -> list[tuple[str, str, Route]]:
    return [(r.recipient, r.original_recipient, r.route) for r in result.routes]


def statuses(result: Categorized) -> dict[str, TraceStatus]:
    return {s.recipient: s.status for s in result.statuses}


def redirects(result: Categorized) -> list[tuple[str, dict[str, object]]]:
    return [(e.recipient, e.detail) for e in result.events if e.event is EventKind.REDIRECT]


def test_forward_inside_the_tenant_routes_like_a_recipient_of_it(
    database: Database, directory: Directory, org: Org
) -> None:
    directory.set_forwarding(OPERATOR, "alice@contoso.com", "team@contoso.com")  # a group of the tenant
    result = run(database, "alice@contoso.com")
    # Each mailbox forwards once per message: alice, a member of team, gets the group's copy.
    assert routes(result) == [
        ("alice@contoso.com", "alice@contoso.com", Route.LOCAL),
        ("bob@contoso.com", "bob@contoso.com", Route.LOCAL),
    ]
    assert redirects(result) == [("alice@contoso.com", {"to": "team@contoso.com", "keep_copy": False})]
    assert statuses(result)["team@contoso.com"] is TraceStatus.EXPANDED
    assert all(r.envelope_sender is None and not r.failure for r in result.routes)
    directory.set_forwarding(OPERATOR, "alice@contoso.com", "bob@contoso.com")
    result = run(database, "alice@contoso.com")
    assert routes(result) == [("bob@contoso.com", "bob@contoso.com", Route.LOCAL)]
    assert statuses(result)["alice@contoso.com"] is TraceStatus.FORWARDED


def test_keep_copy_delivers_to_the_mailbox_too(database: Database, directory: Directory, org: Org) -> None:
    directory.set_forwarding(OPERATOR, "alice@contoso.com", "bob@contoso.com", keep_copy=True)
    result = run(database, "al@contoso.com")
    assert routes(result) == [
        ("alice@contoso.com", "al@contoso.com", Route.LOCAL),
        ("bob@contoso.com", "bob@contoso.com", Route.LOCAL),
    ]
    assert statuses(result) == {"al@contoso.com": TraceStatus.PENDING, "bob@contoso.com": TraceStatus.PENDING}


def test_a_forwarding_loop_stops_and_the_last_mailbox_keeps_the_message(
    database: Database, directory: Directory, org: Org
) -> None:
    directory.set_forwarding(OPERATOR, "alice@contoso.com", "bob@contoso.com")
    directory.set_forwarding(OPERATOR, "bob@contoso.com", "al@contoso.com")  # A -> B -> A
    result = run(database, "alice@contoso.com")
    assert routes(result) == [("bob@contoso.com", "bob@contoso.com", Route.LOCAL)]
    assert redirects(result)[-1] == (
        "bob@contoso.com",
        {"to": "al@contoso.com", "keep_copy": False, "skipped": "forwarding loop"},
    )
    # Both addressed: each mailbox forwards once, then takes what comes back; one delivery each.
    both = run(database, "alice@contoso.com", "bob@contoso.com")
    assert sorted((r.recipient, r.route) for r in both.routes) == [
        ("alice@contoso.com", Route.LOCAL),
        ("bob@contoso.com", Route.LOCAL),
    ]


def test_forwarding_chains_are_bounded(database: Database, directory: Directory, org: Org) -> None:
    names = [f"m{i}@contoso.com" for i in range(MAX_FORWARD_HOPS + 3)]
    for name in names:
        directory.add_mailbox(OPERATOR, name)
    for here, there in itertools.pairwise(names):
        directory.set_forwarding(OPERATOR, here, there)
    result = run(database, names[0])
    kept = names[MAX_FORWARD_HOPS]
    assert routes(result) == [(kept, kept, Route.LOCAL)]
    assert redirects(result)[-1][1]["skipped"] == "too many forwarding hops"


def test_a_forward_to_an_unknown_address_of_ours_keeps_the_message(
    database: Database, directory: Directory, org: Org
) -> None:
    directory.set_forwarding(OPERATOR, "alice@contoso.com", "nobody@contoso.com")
    result = run(database, "alice@contoso.com")
    assert routes(result) == [("alice@contoso.com", "alice@contoso.com", Route.LOCAL)]


@pytest.mark.parametrize("target", ["friend@internet.example", "carol@fabrikam.com"])
def test_an_external_forward_is_refused_by_default_and_the_mailbox_keeps_the_message(
    database: Database, directory: Directory, org: Org, target: str
) -> None:
    """Automatic (= off) by default; another tenant is a remote organization, so it counts."""
    directory.set_forwarding(OPERATOR, "alice@contoso.com", target)
    result = run(database, "alice@contoso.com")
    assert result.routes == [
        RoutedRecipient("alice@contoso.com", "alice@contoso.com", org.contoso, Route.LOCAL, org.alice),
        RoutedRecipient(
            target,
            target,
            org.contoso,
            Route.REMOTE,
            envelope_sender="alice@contoso.com",  # the NDR goes to who set the forwarding up
            failure=str(replies.FORWARDING_DENIED),
        ),
    ]
    assert str(replies.FORWARDING_DENIED).startswith("550 5.7.520")
    assert statuses(result) == {"alice@contoso.com": TraceStatus.PENDING, target: TraceStatus.FAILED}
    fail = [e for e in result.events if e.event is EventKind.FAIL]
    assert [(e.recipient, e.detail["reply"]) for e in fail] == [(target, str(replies.FORWARDING_DENIED))]


def test_an_external_forward_needs_the_policy_on_and_the_remote_domain_to_allow_it(
    database: Database, directory: Directory, org: Org
) -> None:
    directory.set_forwarding(OPERATOR, "alice@contoso.com", "friend@x.internet.example")
    directory.set_auto_forward(OPERATOR, "contoso", "off")
    assert run(database, "alice@contoso.com").routes[-1].failure
    directory.set_auto_forward(OPERATOR, "contoso", "on")
    allowed = run(database, "alice@contoso.com")
    [copy] = allowed.routes
    assert (copy.recipient, copy.route, copy.failure) == ("friend@x.internet.example", Route.REMOTE, "")
    assert copy.envelope_sender is not None and copy.envelope_sender.startswith("SRS0=")
    assert SRS.reverse(Address.parse(copy.envelope_sender)) == Address.parse(SENDER)
    assert statuses(allowed)["alice@contoso.com"] is TraceStatus.FORWARDED
    directory.add_remote_domain(
        OPERATOR, "contoso", "internet", "*.internet.example", RemoteDomainChange(auto_forward=False)
    )
    refused = run(database, "alice@contoso.com")
    assert [r.recipient for r in refused.routes] == ["alice@contoso.com", "friend@x.internet.example"]
    assert refused.routes[-1].failure == str(replies.FORWARDING_DENIED)
    # Another tenant's policy and remote domains are its own.
    directory.set_forwarding(OPERATOR, "carol@fabrikam.com", "friend@x.internet.example")
    assert run(database, "carol@fabrikam.com").routes[-1].failure == str(replies.FORWARDING_DENIED)


def test_an_allowed_forward_of_a_bounce_keeps_the_null_sender(
    database: Database, directory: Directory, org: Org
) -> None:
    directory.set_auto_forward(OPERATOR, "contoso", "on")
    directory.set_forwarding(OPERATOR, "alice@contoso.com", "friend@internet.example", keep_copy=True)
    result = run(database, "alice@contoso.com", sender="")
    assert [(r.recipient, r.envelope_sender) for r in result.routes] == [
        ("alice@contoso.com", None),
        ("friend@internet.example", None),
    ]


# --- SRS bounces at RCPT ----------------------------------------------------------------------
def resolve(database: Database, recipient: str, *, null_sender: bool = True) -> Accepted | Relayed | Rejected:
    with database.read() as conn:
        return resolve_recipient(
            ConnectionView(conn), Address.parse(recipient), srs=SRS, null_sender=null_sender
        )


def test_a_bounce_to_our_srs_address_goes_back_to_the_original_sender(database: Database, org: Org) -> None:
    srs_address = SRS.forward(SENDER)
    outcome = resolve(database, srs_address)
    assert outcome == Relayed(Address.parse(srs_address), Address.parse(SENDER), None)
    with database.read() as conn:
        result = categorize(ConnectionView(conn), "m-2", [outcome], max_recipients=MAX_RECIPIENTS)
    assert routes(result) == [(SENDER, srs_address, Route.REMOTE)]


def test_a_bounce_to_an_srs_address_of_a_local_sender_is_delivered_here(database: Database, org: Org) -> None:
    srs_address = SRS.forward("bob@contoso.com")
    outcome = resolve(database, srs_address)
    assert isinstance(outcome, Accepted) and outcome.owner.primary_address == "bob@contoso.com"
    gone = resolve(database, SRS.forward("nobody@contoso.com"))
    assert isinstance(gone, Rejected) and gone.reason is RejectReason.UNKNOWN_RECIPIENT


def test_only_a_bounce_may_use_an_srs_address(database: Database, org: Org) -> None:
    outcome = resolve(database, SRS.forward(SENDER), null_sender=False)
    assert isinstance(outcome, Rejected)
    assert (outcome.reply, outcome.reason) == (replies.SRS_BOUNCES_ONLY, RejectReason.SRS_NOT_A_BOUNCE)


@pytest.mark.parametrize(
    "forged",
    [
        "SRS0=AAAAAA=AB=victim.example=spam@postroom.test",
        Srs("postroom.test", b"another key", clock=lambda: NOW).forward("spam@victim.example"),
        Srs("postroom.test", b"test key", clock=lambda: NOW - 30 * 86_400).forward("spam@victim.example"),
        "SRS0=garbage@postroom.test",
    ],
)
def test_forged_expired_or_malformed_srs_addresses_are_refused(
    database: Database, org: Org, forged: str
) -> None:
    outcome = resolve(database, forged)
    assert isinstance(outcome, Rejected)
    assert (outcome.reply, outcome.reason) == (replies.SRS_INVALID, RejectReason.SRS_INVALID)
    assert str(outcome.reply).startswith("550 5.1.1")
