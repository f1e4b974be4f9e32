"""CachedDirectory: answers from memory, negative answers included, dropped on a directory change."""

from __future__ import annotations

from postroom.directory import CachedDirectory, ConnectionView, Directory, RecipientKind
from postroom.storage import Database


def test_cache_follows_the_directory_generation(database: Database, directory: Directory) -> None:
    directory.add_tenant("contoso")
    directory.add_domain("contoso.com", "contoso", verified=True)
    directory.add_group("team@contoso.com", members=["alice@contoso.com"])
    cache = CachedDirectory(database)
    assert cache.refresh() is True
    assert cache.refresh() is False  # nothing changed

    assert cache.address("alice@contoso.com") is None  # negative answer, cached
    group = cache.address("team@contoso.com")
    assert group is not None and group.kind is RecipientKind.GROUP
    assert cache.members(group.recipient_id) == ["alice@contoso.com"]
    assert cache.knows("contoso.com", "alice@contoso.com") is False
    assert cache.domain("contoso.com") is not None
    assert cache.knows("contoso.com", "alice@contoso.com") is True

    directory.add_mailbox("alice@contoso.com")
    directory.set_recipient("team@contoso.com", add_members=["bob@contoso.com"])
    assert cache.address("alice@contoso.com") is None  # stale until refreshed
    assert cache.refresh() is True
    alice = cache.address("alice@contoso.com")
    assert alice is not None and alice.kind is RecipientKind.MAILBOX
    assert cache.members(group.recipient_id) == ["alice@contoso.com", "bob@contoso.com"]
    with database.read() as conn:
        assert ConnectionView(conn).address("alice@contoso.com") == alice
