"""Sending settings, send-as grants and restricted senders: scoped, tenant-bound, and never inherited
by a tenant made later with a removed tenant's names."""

from __future__ import annotations

import time

import pytest

from postroom.directory import (
    Directory,
    InvalidInputError,
    NotFoundError,
    Switch,
    charge_recipients,
    find_receive_limit,
    find_submission_account,
)
from postroom.model import Address
from postroom.model.scope import OPERATOR, TenantScope
from postroom.storage import Database
from tests.support.records import populate

DAY = 86_400.0
TODAY = int(time.time() // DAY)  # the restrictions listed are those in force now
NOON = TODAY * DAY + DAY / 2


def account_senders(database: Database, address: str) -> frozenset[str]:
    with database.read() as conn:
        account = find_submission_account(conn, Address.parse(address).key)
    assert account is not None
    return account.senders


def test_send_as_is_granted_within_one_tenant_only(directory: Directory, database: Database) -> None:
    org = populate(directory)
    directory.grant_send_as(OPERATOR, "team@contoso.com", "bob@contoso.com")
    assert {"bob@contoso.com", "team@contoso.com"} <= account_senders(database, "bob@contoso.com")
    assert directory.send_as_grantees(OPERATOR, "team@contoso.com") == ["bob@contoso.com"]
    for identity, grantee in (
        ("carol@fabrikam.com", "bob@contoso.com"),
        ("alice@contoso.com", "carol@fabrikam.com"),
    ):
        with pytest.raises(InvalidInputError, match="different tenants"):
            directory.grant_send_as(OPERATOR, identity, grantee)
    # A tenant's admin cannot even name another tenant's recipient.
    with pytest.raises(NotFoundError):
        directory.grant_send_as(TenantScope(org.fabrikam), "alice@contoso.com", "carol@fabrikam.com")
    with pytest.raises(NotFoundError):
        directory.send_as_grantees(TenantScope(org.fabrikam), "team@contoso.com")
    directory.revoke_send_as(OPERATOR, "team@contoso.com", "bob@contoso.com")
    assert "team@contoso.com" not in account_senders(database, "bob@contoso.com")


def test_settings_inherit_from_mailbox_to_tenant(directory: Directory, database: Database) -> None:
    org = populate(directory)
    directory.set_tenant_sending(OPERATOR, "contoso", max_receive_size=5000, smtp_auth=False)
    directory.set_mailbox_sending(OPERATOR, "bob@contoso.com", max_receive_size=1000, smtp_auth=Switch.ON)
    with database.read() as conn:
        assert find_receive_limit(conn, org.alice) == 5000
        assert find_receive_limit(conn, org.bob) == 1000
        assert find_receive_limit(conn, org.carol) is None
        alice = find_submission_account(conn, "alice@contoso.com")
        bob = find_submission_account(conn, "bob@contoso.com")
    assert alice is not None and not alice.smtp_auth
    assert bob is not None and bob.smtp_auth
    with pytest.raises(InvalidInputError):
        directory.set_mailbox_sending(OPERATOR, "bob@contoso.com", max_recipients=1001)
    with pytest.raises(InvalidInputError):
        directory.set_mailbox_sending(OPERATOR, "team@contoso.com", max_recipients=10)


def test_daily_count_restricts_and_release_lifts(directory: Directory, database: Database) -> None:
    org = populate(directory)
    with database.write() as conn:
        assert charge_recipients(conn, org.bob, org.contoso, 6, NOON, 10)
        assert not charge_recipients(conn, org.bob, org.contoso, 5, NOON, 10)
    restricted = directory.restricted_senders(OPERATOR)
    assert [(r.address, r.until) for r in restricted] == [("bob@contoso.com", (TODAY + 1) * DAY)]
    assert directory.restricted_senders(TenantScope(org.fabrikam)) == []
    with pytest.raises(NotFoundError):
        directory.release_sender(TenantScope(org.fabrikam), "bob@contoso.com")
    directory.release_sender(TenantScope(org.contoso), "bob@contoso.com")
    assert directory.restricted_senders(OPERATOR) == []
    with database.write() as conn:  # the release starts the day's count again
        assert charge_recipients(conn, org.bob, org.contoso, 10, NOON, 10)


def test_a_new_tenant_with_old_names_inherits_nothing(directory: Directory, database: Database) -> None:
    org = populate(directory)
    directory.grant_send_as(OPERATOR, "alice@contoso.com", "bob@contoso.com")
    directory.set_mailbox_sending(OPERATOR, "bob@contoso.com", max_send_size=100, smtp_auth=Switch.OFF)
    with database.write() as conn:
        charge_recipients(conn, org.bob, org.contoso, 11, NOON, 10)
    with database.write() as conn:
        directory.delete_tenant(conn, OPERATOR, "contoso")
    directory.add_tenant(OPERATOR, "contoso")
    directory.add_domain(OPERATOR, "contoso.com", "contoso", verified=True)
    directory.add_mailbox(OPERATOR, "alice@contoso.com")
    directory.add_mailbox(OPERATOR, "bob@contoso.com")
    assert account_senders(database, "bob@contoso.com") == {"bob@contoso.com"}
    assert directory.restricted_senders(OPERATOR) == []
    assert directory.mailbox_sending(OPERATOR, "bob@contoso.com").max_send_size is None
    with database.read() as conn:
        bob = find_submission_account(conn, "bob@contoso.com")
    assert bob is not None and bob.smtp_auth
