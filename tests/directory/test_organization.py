"""Organization settings: a tenant's postmaster and a group's external senders, as the CLI sets them
and as routing reads them (straight and through the node's cache)."""

from __future__ import annotations

import pytest

from postroom.directory import (
    CachedDirectory,
    ConnectionView,
    Directory,
    InvalidInputError,
    NotCached,
    NotFoundError,
    Postmaster,
)
from postroom.model.scope import OPERATOR
from postroom.storage import Database


@pytest.fixture
def organization(database: Database, directory: Directory) -> Directory:
    directory.add_tenant(OPERATOR, "contoso")
    directory.add_domain(OPERATOR, "contoso.com", "contoso", verified=True)
    directory.add_tenant(OPERATOR, "fabrikam")
    directory.add_domain(OPERATOR, "fabrikam.com", "fabrikam", verified=True)
    directory.add_mailbox(OPERATOR, "carol@fabrikam.com")
    return directory


def test_the_first_mailbox_stands_in_until_a_postmaster_is_chosen(
    database: Database, directory: Directory, organization: Directory
) -> None:
    assert organization.postmaster(OPERATOR, "contoso") == Postmaster(None, None)  # no mailbox yet
    directory.add_mailbox(OPERATOR, "zed@contoso.com")
    directory.add_mailbox(OPERATOR, "amy@contoso.com")
    directory.add_group(OPERATOR, "it@contoso.com", members=["amy@contoso.com"])
    assert organization.postmaster(OPERATOR, "contoso") == Postmaster("zed@contoso.com", None)  # lowest id
    assert organization.set_postmaster(OPERATOR, "contoso", "IT@contoso.com") == Postmaster(
        "it@contoso.com", "it@contoso.com"
    )
    with database.read() as conn:
        owner = ConnectionView(conn).postmaster(directory.get_tenant(OPERATOR, "contoso").id)
    assert owner is not None and owner.primary_address == "it@contoso.com"
    directory.remove_recipient(OPERATOR, "it@contoso.com")  # the chosen one is gone: the first mailbox again
    assert organization.postmaster(OPERATOR, "contoso") == Postmaster("zed@contoso.com", "it@contoso.com")
    assert organization.set_postmaster(OPERATOR, "contoso", None) == Postmaster("zed@contoso.com", None)
    assert organization.postmaster(OPERATOR, "fabrikam") == Postmaster("carol@fabrikam.com", None)


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
    organization: Directory, tenant: str, address: str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        organization.set_postmaster(OPERATOR, tenant, address)


def test_external_senders_default_to_refused_and_the_cache_follows_changes(
    database: Database, directory: Directory, organization: Directory
) -> None:
    group = directory.add_group(OPERATOR, "team@contoso.com", members=["x@contoso.com"], allow_unknown=True)
    cache = CachedDirectory(database)
    cache.refresh()
    assert organization.allows_external_senders(OPERATOR, "team@contoso.com") is False
    assert cache.allows_external_senders(group.id) is False
    organization.set_external_senders(OPERATOR, "team@contoso.com", True)
    assert cache.allows_external_senders(group.id) is False  # stale until refreshed
    assert cache.refresh() is True
    assert cache.allows_external_senders(group.id) is True
    assert organization.allows_external_senders(OPERATOR, "team@contoso.com") is True
    with pytest.raises(InvalidInputError):
        organization.set_external_senders(OPERATOR, "carol@fabrikam.com", True)  # not a group


def test_the_event_loop_view_answers_a_restriction_and_a_postmaster_only_once_loaded(
    database: Database, directory: Directory, organization: Directory
) -> None:
    """RCPT on the event loop asks the in-memory view; what it does not hold goes to a worker thread."""
    group = directory.add_group(OPERATOR, "team@contoso.com", members=["x@contoso.com"], allow_unknown=True)
    cache = CachedDirectory(database)
    cache.refresh()
    memory = cache.in_memory()
    with pytest.raises(NotCached):
        memory.allows_external_senders(group.id)
    assert cache.allows_external_senders(group.id) is False
    assert memory.allows_external_senders(group.id) is False
    with pytest.raises(NotCached):
        memory.postmaster(group.tenant_id)
    assert cache.postmaster(group.tenant_id) is None  # contoso has no mailbox yet
    assert memory.postmaster(group.tenant_id) is None
    organization.set_external_senders(OPERATOR, "team@contoso.com", True)
    cache.refresh()  # the change is logged under the group: only its answer goes
    with pytest.raises(NotCached):
        memory.allows_external_senders(group.id)
    assert memory.postmaster(group.tenant_id) is None
