"""Schema upgrades: a node made by an older schema, with mail in it, upgrades to exactly today's schema.

The fixture is a version-2 node's data (tests/storage/fixtures/schema_2: made by the code of that
version, see make_schema_2.py). After `App.open` (which migrates) the mail is still readable and the
schema equals a freshly created one: tables, columns with types and nullability, keys, indexes and
unique constraints. When `schema.py` changes without an upgrade step, this test fails.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from sqlalchemy import select

from postroom.app import App
from postroom.config import Settings
from postroom.mailstore import mailbox
from postroom.model.scope import OPERATOR
from postroom.storage import Database
from postroom.storage.migrations import STEPS, MigrationError, steps_from
from postroom.storage.schema import SCHEMA_VERSION, schema_version
from tests.support.records import exported, stored_messages
from tests.support.upgrade import load_schema_2, shape


def fresh_shape(tmp_path: Path) -> dict[str, object]:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    database = Database(url)
    database.migrate()
    database.dispose()
    return shape(url)


def versions(settings: Settings) -> list[int]:
    database = Database(settings.database_url)
    try:
        with database.read() as conn:
            return sorted(conn.execute(select(schema_version.c.version)).scalars())
    finally:
        database.dispose()


@pytest.mark.parametrize("version", [2, 1])
def test_an_older_node_with_mail_upgrades_to_the_current_schema(
    node_settings: Settings, tmp_path: Path, version: int, caplog: pytest.LogCaptureFixture
) -> None:
    for made_by_init in node_settings.data_dir.glob("postroom.db*"):
        made_by_init.unlink()  # the older node's database takes the place of the one init made
    load_schema_2(node_settings.database_url, node_settings.blob_dir, as_version_1=version == 1)
    with caplog.at_level(logging.INFO, logger="postroom.storage.database"):
        app = App.open(node_settings)
    try:
        (message,) = stored_messages(app.directory, app.mailstore, "alice@contoso.com")
        assert message.message_id == "<upgrade-1@partner.example>"
        assert message.subject == "kept across upgrades"
        content = exported(app.directory, app.mailstore, "alice@contoso.com", message.uid)
        assert content.endswith(b"This message was delivered by schema version 2.\r\n")
        assert app.directory.get_recipient(OPERATOR, "al@contoso.com").display_name == "Alice"
        # Step 9: the old standard folders carry their special use; the old message is at modseq 1.
        alice = app.directory.get_recipient(OPERATOR, "alice@contoso.com").id
        with app.database.read() as conn:
            uses = {folder.name: folder.special_use for folder in mailbox.list_folders(conn, alice)}
            inbox = mailbox.find_folder(conn, alice, mailbox.INBOX)
            assert inbox is not None
            assert [record.modseq for record in mailbox.folder_messages(conn, inbox.id)] == [1]
        assert uses["Sent"] == "\\Sent" and uses["Junk"] == "\\Junk" and uses["Inbox"] == ""
    finally:
        app.close()
    assert shape(node_settings.database_url) == fresh_shape(tmp_path)
    assert versions(node_settings) == list(range(version, SCHEMA_VERSION + 1))
    for step in range(version + 1, SCHEMA_VERSION + 1):
        assert f"upgrading the database schema to version {step}" in caplog.text


def test_every_version_has_its_upgrade_step() -> None:
    assert sorted(STEPS) == list(range(2, SCHEMA_VERSION + 1))


def test_a_missing_step_is_refused_before_any_runs() -> None:
    with pytest.raises(MigrationError, match=f"no upgrade step to schema version {SCHEMA_VERSION + 1}"):
        steps_from(1, SCHEMA_VERSION + 2)
