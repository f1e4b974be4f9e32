"""CachedDirectory: answers from memory, negative answers included, dropped on a directory change."""

from __future__ import annotations

import pytest

from postroom.directory import CachedDirectory, ConnectionView, Directory, NotCached, RecipientKind
from postroom.model.scope import OPERATOR
from postroom.storage import Database


def test_cache_follows_the_directory_generation(database: Database, directory: Directory) -> None:
    directory.add_tenant(OPERATOR, "contoso")
    directory.add_domain(OPERATOR, "contoso.com", "contoso", verified=True)
    directory.add_group(OPERATOR, "team@contoso.com", members=["alice@contoso.com"], allow_unknown=True)
    cache = CachedDirectory(database)
    assert cache.refresh() is True
    assert cache.refresh() is False  # nothing changed

    assert cache.address("alice@contoso.com") is None  # negative answer, cached
    group = cache.address("team@contoso.com")
    assert group is not None and group.kind is RecipientKind.GROUP
    assert cache.members(group.recipient_id) == ["alice@contoso.com"]
    with pytest.raises(NotCached):
        cache.in_memory().domain("contoso.com")
    assert cache.domain("contoso.com") is not None
    assert cache.in_memory().domain("contoso.com") is not None
    assert cache.in_memory().address("alice@contoso.com") is None

    directory.add_mailbox(OPERATOR, "alice@contoso.com")
    directory.set_recipient(OPERATOR, "team@contoso.com", add_members=["bob@contoso.com"], allow_unknown=True)
    assert cache.address("alice@contoso.com") is None  # stale until refreshed
    assert cache.refresh() is True
    alice = cache.address("alice@contoso.com")
    assert alice is not None and alice.kind is RecipientKind.MAILBOX
    assert cache.members(group.recipient_id) == ["alice@contoso.com", "bob@contoso.com"]
    with database.read() as conn:
        assert ConnectionView(conn).address("alice@contoso.com") == alice
