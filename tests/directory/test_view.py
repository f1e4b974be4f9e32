"""CachedDirectory: answers from memory, negative answers included, dropped on a directory change."""

from __future__ import annotations

import pytest
from sqlalchemy import event, update

from postroom.directory import CachedDirectory, ConnectionView, Directory, NotCached, RecipientKind
from postroom.model.scope import OPERATOR
from postroom.storage import Database
from postroom.storage.schema import directory_generation


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


class Reads:
    """The queries the database's read engine runs (what a cache miss costs)."""

    def __init__(self, database: Database) -> None:
        self.statements: list[str] = []
        event.listen(database.read_engine, "before_cursor_execute", self._seen)

    def _seen(self, conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            self.statements.append(statement)


def test_a_change_drops_only_what_it_changed(database: Database, directory: Directory) -> None:
    directory.add_tenant(OPERATOR, "contoso")
    directory.add_domain(OPERATOR, "contoso.com", "contoso", verified=True)
    alice = directory.add_mailbox(OPERATOR, "alice@contoso.com")
    directory.add_group(OPERATOR, "team@contoso.com", members=["alice@contoso.com"])
    cache = CachedDirectory(database)
    cache.refresh()
    team = cache.address("team@contoso.com")
    assert team is not None
    assert cache.address("alice@contoso.com") is not None
    assert cache.address("bob@contoso.com") is None
    assert cache.members(team.recipient_id) == ["alice@contoso.com"]
    assert cache.domain("contoso.com") is not None

    directory.add_mailbox(OPERATOR, "bob@contoso.com")  # unrelated to alice, the group, the domain
    assert cache.refresh() is True
    reads = Reads(database)
    assert cache.address("alice@contoso.com") is not None
    assert cache.members(team.recipient_id) == ["alice@contoso.com"]
    assert cache.domain("contoso.com") is not None
    assert reads.statements == [], "answers untouched by the change are served from memory"
    bob = cache.address("bob@contoso.com")  # the negative answer was dropped: bob exists now
    assert bob is not None and bob.kind is RecipientKind.MAILBOX
    assert len(reads.statements) == 1

    directory.set_recipient(OPERATOR, "alice@contoso.com", primary="al@contoso.com")
    directory.set_recipient(OPERATOR, "team@contoso.com", add_members=["bob@contoso.com"])
    cache.refresh()
    reads.statements.clear()
    assert cache.address("bob@contoso.com") == bob
    assert reads.statements == []
    moved = cache.address("alice@contoso.com")
    assert moved is not None and (moved.recipient_id, moved.primary_address) == (alice.id, "al@contoso.com")
    assert cache.members(team.recipient_id) == ["alice@contoso.com", "bob@contoso.com"]
    assert len(reads.statements) == 2


def test_a_cache_too_far_behind_the_log_drops_everything(database: Database, directory: Directory) -> None:
    directory.add_tenant(OPERATOR, "contoso")
    cache = CachedDirectory(database)
    cache.refresh()
    assert cache.domain("contoso.postroom.test") is not None
    with database.write() as conn:  # the log of the generations this cache missed was pruned
        conn.execute(update(directory_generation).values(generation=directory_generation.c.generation + 1))
    assert cache.refresh() is True
    reads = Reads(database)
    assert cache.domain("contoso.postroom.test") is not None
    assert len(reads.statements) == 1, "no log for the gap: the whole cache was dropped"
