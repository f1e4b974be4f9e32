"""resolve_recipient: the routing table at RCPT, one outcome per recipient."""

from __future__ import annotations

import pytest

from postroom.directory import ConnectionView, Directory, RecipientKind
from postroom.model import Address
from postroom.model.scope import OPERATOR
from postroom.routing import (
    Accepted,
    Rejected,
    RejectReason,
    Resolution,
    ServicePostmaster,
    resolve_recipient,
)
from postroom.storage import Database
from tests.support.records import Org, populate


@pytest.fixture
def org(directory: Directory) -> Org:
    return populate(directory)


@pytest.mark.parametrize(
    ("recipient", "kind", "primary"),
    [
        ("alice@contoso.com", RecipientKind.MAILBOX, "alice@contoso.com"),
        ("ALICE@Contoso.COM", RecipientKind.MAILBOX, "alice@contoso.com"),
        ("al@contoso.com", RecipientKind.MAILBOX, "alice@contoso.com"),
        ("team@contoso.com", RecipientKind.GROUP, "team@contoso.com"),
        ("partner@contoso.com", RecipientKind.CONTACT, "partner@contoso.com"),
        ("carol@fabrikam.com", RecipientKind.MAILBOX, "carol@fabrikam.com"),
    ],
)
def test_known_recipients_are_accepted(
    database: Database, org: Org, recipient: str, kind: RecipientKind, primary: str
) -> None:
    with database.read() as conn:
        # A sender inside contoso: its group takes the mail (restrictions are tested below).
        outcome = resolve_recipient(
            ConnectionView(conn), Address.parse(recipient), sender_internal_to=org.contoso
        )
    assert isinstance(outcome, Accepted)
    assert (outcome.owner.kind, outcome.owner.primary_address) == (kind, primary)
    assert outcome.recipient == Address.parse(recipient)


@pytest.mark.parametrize(
    ("recipient", "code", "enhanced", "reason", "tenant"),
    [
        ("nobody@contoso.com", 550, "5.4.1", RejectReason.UNKNOWN_RECIPIENT, "contoso"),
        ("nobody@contoso.postroom.test", 550, "5.4.1", RejectReason.UNKNOWN_RECIPIENT, "contoso"),
        ("nobody@relay.contoso.com", 550, "5.4.1", RejectReason.INTERNAL_RELAY_UNROUTED, "contoso"),
        ("someone@pending.example", 550, "5.7.1", RejectReason.UNVERIFIED_DOMAIN, "fabrikam"),
        ("someone@foreign.example", 550, "5.7.1", RejectReason.RELAY_DENIED, None),
        ("alice@contoso.com.evil.example", 550, "5.7.1", RejectReason.RELAY_DENIED, None),
        ("postmaster@[192.0.2.1]", 550, "5.7.1", RejectReason.RELAY_DENIED, None),
    ],
)
def test_rejections(
    database: Database,
    org: Org,
    recipient: str,
    code: int,
    enhanced: str,
    reason: RejectReason,
    tenant: str | None,
) -> None:
    with database.read() as conn:
        outcome = resolve_recipient(ConnectionView(conn), Address.parse(recipient))
    assert isinstance(outcome, Rejected)
    assert (outcome.reply.code, outcome.reply.enhanced, outcome.reason) == (code, enhanced, reason)
    expected_tenant = {"contoso": org.contoso, "fabrikam": org.fabrikam, None: None}[tenant]
    assert outcome.tenant_id == expected_tenant


def test_a_pending_domain_receives_once_verified(database: Database, directory: Directory, org: Org) -> None:
    directory.mark_verified(OPERATOR, "pending.example", "test")
    directory.add_mailbox(OPERATOR, "dan@pending.example")
    with database.read() as conn:
        assert isinstance(
            resolve_recipient(ConnectionView(conn), Address.parse("dan@pending.example")), Accepted
        )


def resolve(database: Database, recipient: str, **options: object) -> Resolution:
    with database.read() as conn:
        return resolve_recipient(ConnectionView(conn), Address.parse(recipient), **options)  # type: ignore[arg-type]


def test_a_group_refuses_senders_outside_its_organization_by_default(
    database: Database, org: Org, directory: Directory
) -> None:
    outcome = resolve(database, "team@contoso.com")  # the MX endpoint: the sender is outside
    assert isinstance(outcome, Rejected)
    assert (outcome.reply.code, outcome.reply.enhanced) == (550, "5.7.133")
    assert (outcome.reason, outcome.tenant_id) == (RejectReason.SENDER_NOT_AUTHENTICATED, org.contoso)
    inside_other = resolve(database, "team@contoso.com", sender_internal_to=org.fabrikam)
    assert isinstance(inside_other, Rejected), "another tenant is outside the organization"
    assert isinstance(resolve(database, "team@contoso.com", sender_internal_to=org.contoso), Accepted)
    directory.set_external_senders(OPERATOR, "team@contoso.com", True)
    assert isinstance(resolve(database, "team@contoso.com"), Accepted)
    directory.set_external_senders(OPERATOR, "team@contoso.com", False)
    assert isinstance(resolve(database, "team@contoso.com"), Rejected)


def test_postmaster_of_a_tenant_domain_goes_to_its_first_mailbox_then_the_chosen_one(
    database: Database, org: Org, directory: Directory
) -> None:
    for domain in ("contoso.com", "relay.contoso.com", "contoso.postroom.test"):
        outcome = resolve(database, f"Postmaster@{domain}")
        assert isinstance(outcome, Accepted), domain
        assert (outcome.owner.primary_address, str(outcome.recipient)) == (
            "alice@contoso.com",
            f"Postmaster@{domain}",
        )
    directory.set_postmaster(
        OPERATOR, "contoso", "team@contoso.com"
    )  # a group, internal-only: still takes it
    outcome = resolve(database, "postmaster@contoso.com")
    assert isinstance(outcome, Accepted) and outcome.owner.primary_address == "team@contoso.com"
    fabrikam = resolve(database, "postmaster@fabrikam.com")
    assert isinstance(fabrikam, Accepted) and fabrikam.owner.primary_address == "carol@fabrikam.com"
    directory.add_mailbox(OPERATOR, "postmaster@fabrikam.com")  # an explicit postmaster mailbox wins
    explicit = resolve(database, "postmaster@fabrikam.com")
    assert isinstance(explicit, Accepted) and explicit.owner.primary_address == "postmaster@fabrikam.com"
    unverified = resolve(database, "postmaster@pending.example")
    assert isinstance(unverified, Rejected) and unverified.reason is RejectReason.UNVERIFIED_DOMAIN


def test_postmaster_of_a_tenant_with_no_mailbox_is_refused_like_any_unknown_address(
    database: Database, org: Org, directory: Directory
) -> None:
    directory.add_tenant(OPERATOR, "empty")
    outcome = resolve(database, "postmaster@empty.postroom.test")
    assert isinstance(outcome, Rejected) and outcome.reason is RejectReason.UNKNOWN_RECIPIENT


@pytest.mark.parametrize(
    ("configured", "expected"),
    [
        ("postmaster@contoso.com", "alice@contoso.com"),
        ("team@contoso.com", "team@contoso.com"),
        ("bob@contoso.com", "bob@contoso.com"),
        ("postmaster@postroom.test", None),  # the default, not hosted here: 451 4.3.5
        ("nobody@contoso.com", None),
        (None, None),
    ],
)
def test_the_bare_postmaster_goes_to_the_service_postmaster(
    database: Database, org: Org, configured: str | None, expected: str | None
) -> None:
    service = ServicePostmaster(
        frozenset({"mx.postroom.test", "postroom.test"}), Address.parse(configured) if configured else None
    )
    outcome = resolve(database, "postmaster@mx.postroom.test", service_postmaster=service)
    if expected is None:
        assert isinstance(outcome, Rejected)
        assert (outcome.reply.code, outcome.reply.enhanced, outcome.tenant_id) == (451, "4.3.5", None)
    else:
        assert isinstance(outcome, Accepted) and outcome.owner.primary_address == expected
