"""`postroom trace purge`: removes trace past the retention (or --older-than), says how many rows."""

from __future__ import annotations

import time

from postroom.app import App
from postroom.config import Settings
from postroom.model.flow import TraceRecipient, TraceStatus
from postroom.model.scope import OPERATOR
from postroom.trace import TraceMessage, TraceQuery, record_message, set_statuses
from tests.cli.test_commands import postroom

DAY = 86_400.0


def traced(app: App, message_id: str, days_ago: float) -> None:
    at = time.time() - days_ago * DAY
    with app.database.write() as conn:
        record_message(conn, TraceMessage(message_id, "", "x@partner.example", "", 10, "192.0.2.1", at))
        set_statuses(conn, [TraceRecipient(message_id, 1, "alice@contoso.com", TraceStatus.DELIVERED)], at)


def test_trace_purge_removes_what_is_past_the_retention(node_settings: Settings) -> None:
    app = App.open(node_settings)
    try:
        traced(app, "old", 100)
        traced(app, "recent", 10)
        traced(app, "new", 0)
        config = node_settings.source
        unconfirmed = postroom("trace", "purge", config=config)
        assert unconfirmed.returncode == 2 and "--yes" in unconfirmed.stderr + unconfirmed.stdout
        purged = postroom("trace", "purge", "--yes", config=config)
        assert purged.returncode == 0, purged.stderr
        assert "removed 2 trace rows older than 90 days" in purged.stdout
        assert {r.message_id for r in app.trace.search(TraceQuery(), OPERATOR)} == {"recent", "new"}
        purged = postroom("trace", "purge", "--older-than", "5", "--yes", config=config)
        assert "removed 2 trace rows older than 5 days" in purged.stdout
        assert {r.message_id for r in app.trace.search(TraceQuery(), OPERATOR)} == {"new"}
    finally:
        app.close()
