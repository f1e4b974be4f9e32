"""Schema upgrades on PostgreSQL: a version-2 node's data, with mail, upgrades to exactly today's schema."""

from __future__ import annotations

from dataclasses import replace

import pytest

from postroom.app import App
from postroom.config import Settings
from postroom.config.settings import DatabaseSettings
from postroom.model.scope import OPERATOR
from postroom.storage import Database
from tests.support.postgres import fresh_database
from tests.support.records import exported, stored_messages
from tests.support.upgrade import load_schema_2, shape


@pytest.mark.parametrize("version", [2, 1])
def test_an_older_node_with_mail_upgrades_to_the_current_schema(
    node_settings: Settings, postgres_url: str, version: int
) -> None:
    settings = replace(node_settings, database=DatabaseSettings(url=postgres_url))
    load_schema_2(postgres_url, settings.blob_dir, as_version_1=version == 1)
    app = App.open(settings)
    try:
        (message,) = stored_messages(app.directory, app.mailstore, "alice@contoso.com")
        assert message.message_id == "<upgrade-1@partner.example>"
        content = exported(app.directory, app.mailstore, "alice@contoso.com", message.uid)
        assert content.endswith(b"This message was delivered by schema version 2.\r\n")
        app.directory.add_mailbox(OPERATOR, "new@contoso.com")  # the sequences carry on after the loaded rows
    finally:
        app.close()
    with fresh_database() as url:
        database = Database(url)
        database.migrate()
        database.dispose()
        fresh = shape(url)
    assert shape(postgres_url) == fresh


def test_the_shapes_compared_are_the_schema(postgres_url: str) -> None:
    database = Database(postgres_url)
    database.migrate()
    database.dispose()
    tables = shape(postgres_url)
    assert "dkim_keys" in tables
    assert ("ix_queue_due", ("state", "next_attempt_at"), False) in tables["queue_recipients"]["indexes"]
    assert ("folder_id", "uid") in tables["messages"]["unique"]
