"""Organization settings: a tenant's postmaster and a group's external senders, as the CLI sets them
and as routing reads them (straight and through the node's cache)."""

from __future__ import annotations

import pytest

from postroom.directory import (
    CachedDirectory,
    ConnectionView,
    Directory,
    InvalidInputError,
    NotFoundError,
    Organization,
    Postmaster,
)
from postroom.storage import Database


@pytest.fixture
def organization(database: Database, directory: Directory) -> Organization:
    directory.add_tenant("contoso")
    directory.add_domain("contoso.com", "contoso", verified=True)
    directory.add_tenant("fabrikam")
    directory.add_domain("fabrikam.com", "fabrikam", verified=True)
    directory.add_mailbox("carol@fabrikam.com")
    return Organization(database)


def test_the_first_mailbox_stands_in_until_a_postmaster_is_chosen(
    database: Database, directory: Directory, organization: Organization
) -> None:
    assert organization.postmaster("contoso") == Postmaster(None, None)  # no mailbox yet
    directory.add_mailbox("zed@contoso.com")
    directory.add_mailbox("amy@contoso.com")
    directory.add_group("it@contoso.com", members=["amy@contoso.com"])
    assert organization.postmaster("contoso") == Postmaster("zed@contoso.com", None)  # lowest id
    assert organization.set_postmaster("contoso", "IT@contoso.com") == Postmaster(
        "it@contoso.com", "it@contoso.com"
    )
    with database.read() as conn:
        owner = ConnectionView(conn).postmaster(directory.get_tenant("contoso").id)
    assert owner is not None and owner.primary_address == "it@contoso.com"
    directory.remove_recipient("it@contoso.com")  # the chosen one is gone: the first mailbox again
    assert organization.postmaster("contoso") == Postmaster("zed@contoso.com", "it@contoso.com")
    assert organization.set_postmaster("contoso", None) == Postmaster("zed@contoso.com", None)
    assert organization.postmaster("fabrikam") == Postmaster("carol@fabrikam.com", None)


@pytest.mark.parametrize(
    ("tenant", "address", "error"),
    [
        ("contoso", "carol@fabrikam.com", InvalidInputError),  # another tenant's mailbox
        ("contoso", "nobody@contoso.com", NotFoundError),
        ("contoso", "not an address", InvalidInputError),
        ("nobody", "carol@fabrikam.com", NotFoundError),
    ],
)
def test_a_postmaster_must_be_a_recipient_of_the_tenant(
    organization: Organization, tenant: str, address: str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        organization.set_postmaster(tenant, address)


def test_external_senders_default_to_refused_and_the_cache_follows_changes(
    database: Database, directory: Directory, organization: Organization
) -> None:
    group = directory.add_group("team@contoso.com", members=["x@contoso.com"])
    cache = CachedDirectory(database)
    cache.refresh()
    assert organization.allows_external_senders("team@contoso.com") is False
    assert cache.allows_external_senders(group.id) is False
    organization.set_external_senders("team@contoso.com", True)
    assert cache.allows_external_senders(group.id) is False  # stale until refreshed
    assert cache.refresh() is True
    assert cache.allows_external_senders(group.id) is True
    assert organization.allows_external_senders("team@contoso.com") is True
    with pytest.raises(InvalidInputError):
        organization.set_external_senders("carol@fabrikam.com", True)  # not a group


def test_the_cache_knows_a_group_only_with_its_restriction(
    database: Database, directory: Directory, organization: Organization
) -> None:
    group = directory.add_group("team@contoso.com", members=["x@contoso.com"])
    cache = CachedDirectory(database)
    cache.refresh()
    cache.domain("contoso.com")
    cache.address("team@contoso.com")
    assert cache.knows("contoso.com", "team@contoso.com") is False
    cache.allows_external_senders(group.id)
    assert cache.knows("contoso.com", "team@contoso.com") is True
    cache.address("postmaster@contoso.com")
    assert cache.knows("contoso.com", "postmaster@contoso.com") is False
    cache.postmaster(group.tenant_id)
    assert cache.knows("contoso.com", "postmaster@contoso.com") is True
