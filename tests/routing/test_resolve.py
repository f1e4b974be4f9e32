"""resolve_recipient: the routing table at RCPT, one outcome per recipient."""

from __future__ import annotations

import pytest

from postroom.directory import ConnectionView, Directory, RecipientKind
from postroom.model import Address
from postroom.model.scope import OPERATOR
from postroom.routing import Accepted, Rejected, RejectReason, resolve_recipient
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
        outcome = resolve_recipient(ConnectionView(conn), Address.parse(recipient))
    assert isinstance(outcome, Accepted)
    assert (outcome.owner.kind, outcome.owner.primary_address) == (kind, primary)
    assert outcome.recipient == Address.parse(recipient)


@pytest.mark.parametrize(
    ("recipient", "code", "enhanced", "reason", "tenant"),
    [
        ("nobody@contoso.com", 550, "5.4.1", RejectReason.UNKNOWN_RECIPIENT, "contoso"),
        ("nobody@contoso.postroom.test", 550, "5.4.1", RejectReason.UNKNOWN_RECIPIENT, "contoso"),
        ("nobody@relay.contoso.com", 550, "5.4.1", RejectReason.UNKNOWN_RECIPIENT, "contoso"),
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
