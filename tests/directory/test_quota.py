"""Mailbox quotas: set and read in scope, bounded, carried by the cached address owner, and never
inherited by a tenant made later with a removed tenant's names."""

from __future__ import annotations

import pytest

from postroom.directory import (
    MAX_QUOTA,
    CachedDirectory,
    Directory,
    InvalidInputError,
    NotFoundError,
    find_address,
)
from postroom.model.scope import OPERATOR, TenantScope
from postroom.storage import Database
from tests.support.records import populate


def test_a_tenant_sets_and_reads_its_own_mailboxes_quota_only(directory: Directory) -> None:
    org = populate(directory)
    contoso, fabrikam = TenantScope(org.contoso), TenantScope(org.fabrikam)
    assert directory.mailbox_quota(contoso, "alice@contoso.com") is None
    assert directory.set_mailbox_quota(contoso, "al@contoso.com", 50_000) == 50_000  # by an alias
    assert directory.mailbox_quota(OPERATOR, "alice@contoso.com") == 50_000
    # Another tenant's mailbox is one that does not exist, to read and to change.
    with pytest.raises(NotFoundError, match="no recipient"):
        directory.mailbox_quota(fabrikam, "alice@contoso.com")
    with pytest.raises(NotFoundError, match="no recipient"):
        directory.set_mailbox_quota(fabrikam, "alice@contoso.com", 0)
    assert directory.mailbox_quota(contoso, "alice@contoso.com") == 50_000
    assert directory.set_mailbox_quota(contoso, "alice@contoso.com", 0) is None  # 0 clears it
    assert directory.mailbox_quota(contoso, "alice@contoso.com") is None


@pytest.mark.parametrize(
    ("address", "quota", "error"),
    [
        ("alice@contoso.com", -1, "from 1 to 1099511627776 octets"),
        ("alice@contoso.com", MAX_QUOTA + 1, "or 0 for no limit"),
        ("team@contoso.com", 1000, "is a group; only a mailbox has a quota"),
        ("partner@contoso.com", 1000, "is a contact; only a mailbox has a quota"),
        ("nobody@contoso.com", 1000, "no recipient has the address"),
    ],
)
def test_a_quota_is_a_mailbox_size_up_to_one_tebibyte(
    directory: Directory, address: str, quota: int, error: str
) -> None:
    populate(directory)
    with pytest.raises((InvalidInputError, NotFoundError), match=error):
        directory.set_mailbox_quota(OPERATOR, address, quota)
    assert directory.mailbox_quota(OPERATOR, "alice@contoso.com") is None


def test_the_cached_owner_carries_the_quota_and_hears_of_a_change(
    directory: Directory, database: Database
) -> None:
    populate(directory)
    cache = CachedDirectory(database)
    cache.refresh()
    assert cache.address("al@contoso.com") is not None
    held = cache.in_memory().address("al@contoso.com")  # now answered from memory
    assert held is not None and held.quota_bytes is None
    directory.set_mailbox_quota(OPERATOR, "alice@contoso.com", MAX_QUOTA)
    assert cache.refresh()
    owner = cache.address("al@contoso.com")
    assert owner is not None and owner.quota_bytes == MAX_QUOTA
    directory.set_mailbox_quota(OPERATOR, "alice@contoso.com", 0)
    assert cache.refresh()
    owner = cache.address("alice@contoso.com")
    assert owner is not None and owner.quota_bytes is None


def test_a_new_tenant_with_old_names_has_no_quota(directory: Directory, database: Database) -> None:
    populate(directory)
    directory.set_mailbox_quota(OPERATOR, "bob@contoso.com", 1000)
    with database.write() as conn:
        directory.delete_tenant(conn, OPERATOR, "contoso")
    again = directory.add_tenant(OPERATOR, "contoso")
    directory.add_domain(OPERATOR, "contoso.com", "contoso", verified=True)
    directory.add_mailbox(OPERATOR, "bob@contoso.com")
    assert directory.mailbox_quota(TenantScope(again.id), "bob@contoso.com") is None
    with database.read() as conn:
        owner = find_address(conn, "bob@contoso.com")
    assert owner is not None and owner.quota_bytes is None
