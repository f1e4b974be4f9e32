"""`postroom queue ...` as an operator runs it: list, show, hold, release, retry, delete (--bounce),
summary, on a node's database; a tenant's `--tenant` view holds only its rows; mistakes say what to do."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from postroom.app import App
from postroom.config import Settings
from postroom.model.scope import OPERATOR
from postroom.storage.schema import queue_recipients
from tests.cli.test_commands import postroom
from tests.conftest import populate
from tests.support.records import receive

CONTENT = b"From: a@example.net\r\nSubject: Invoice 7\r\nMessage-ID: <i7@example.net>\r\n\r\nHi\r\n"


@pytest.fixture
def queued(node_settings: Settings) -> Iterator[tuple[App, str, str]]:
    app = App.open(node_settings)
    populate(app)
    app.directory.add_contact(OPERATOR, "partner@contoso.com", external_address="ext@partner.example")
    app.directory.add_contact(OPERATOR, "vendor@fabrikam.com", external_address="v@vendor.example")
    now = time.time()
    contoso = receive(app.database, app.blobs, "a@example.net", ["partner@contoso.com"], CONTENT, at=now - 30)
    fabrikam = receive(app.database, app.blobs, "a@example.net", ["vendor@fabrikam.com"], CONTENT, at=now)
    yield app, contoso, fabrikam
    app.close()


def state(app: App, message_id: str) -> tuple[str, float]:
    q = queue_recipients
    with app.database.read() as conn:
        row = conn.execute(select(q.c.state, q.c.next_attempt_at).where(q.c.message_id == message_id)).one()
    return row.state, row.next_attempt_at


def test_queue_commands_round_trip(node_settings: Settings, queued: tuple[App, str, str]) -> None:
    app, contoso, fabrikam = queued
    config = node_settings.source
    listed = json.loads(postroom("queue", "list", "--json", config=config).stdout)
    assert [m["id"] for m in listed] == [contoso, fabrikam]
    assert listed[0]["destinations"] == ["partner.example"] and listed[0]["states"] == {"pending": 1}
    tenant_view = json.loads(
        postroom("queue", "list", "--tenant", "fabrikam", "--json", config=config).stdout
    )
    assert [m["id"] for m in tenant_view] == [fabrikam]
    table = postroom("queue", "list", "--destination", "partner.example", config=config)
    assert table.returncode == 0 and contoso in table.stdout and fabrikam not in table.stdout

    held = postroom("queue", "hold", contoso, config=config)
    assert held.returncode == 0 and "1 recipient(s) held" in held.stdout
    assert state(app, contoso)[0] == "held"
    assert [
        m["id"]
        for m in json.loads(postroom("queue", "list", "--status", "held", "--json", config=config).stdout)
    ] == [contoso]
    shown = postroom("queue", "show", contoso, config=config)
    assert shown.returncode == 0
    assert "ext@partner.example (partner@contoso.com)" in shown.stdout and "held" in shown.stdout
    assert "Invoice 7" in shown.stdout
    assert postroom("queue", "release", contoso, config=config).returncode == 0
    assert state(app, contoso)[0] == "pending"

    with app.database.write() as conn:
        conn.execute(
            queue_recipients.update().values(state="deferred", attempts=1, next_attempt_at=time.time() + 3600)
        )
    retried = postroom("queue", "retry", "--destination", "vendor.example", config=config)
    assert "1 recipient(s) due now" in retried.stdout
    assert state(app, fabrikam)[1] <= time.time() < state(app, contoso)[1]
    assert postroom("queue", "retry", contoso, config=config).returncode == 0
    assert state(app, contoso)[1] <= time.time()

    summary = json.loads(postroom("queue", "summary", "--json", config=config).stdout)
    assert (
        summary["pending"],
        summary["deferred"],
        summary["held"],
        summary["failed"],
        summary["messages"],
    ) == (
        0,
        2,
        0,
        0,
        2,
    )
    assert summary["by_destination"] == {
        "partner.example": {"deferred": 1},
        "vendor.example": {"deferred": 1},
    }
    assert summary["by_age"]["< 5 min"] == 2
    assert "partner.example" in postroom("queue", "summary", config=config).stdout

    bounced = postroom("queue", "delete", contoso, "--bounce", config=config)
    assert bounced.returncode == 0 and "non-delivery report" in bounced.stdout
    assert state(app, contoso)[0] == "failed"
    deleted = postroom("queue", "delete", fabrikam, config=config)
    assert deleted.returncode == 0 and "1 recipient(s) deleted" in deleted.stdout
    assert json.loads(postroom("queue", "list", "--tenant", "fabrikam", "--json", config=config).stdout) == []


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["queue", "show", "nope"], "queue list", 1),
        (["queue", "hold", "nope"], "no queued message 'nope'", 1),
        (["queue", "retry"], "give a message id or --destination", 2),
        (["queue", "list", "--status", "stuck"], "use one of pending, deferred, held, failed", 2),
        (["queue", "list", "--tenant", "nobody"], "no tenant named 'nobody'", 1),
    ],
)
def test_queue_mistakes_say_what_to_do(
    node_settings: Settings, args: list[str], message: str, code: int
) -> None:
    App.open(node_settings).close()
    result = postroom(*args, config=node_settings.source)
    assert result.returncode == code, result.stderr
    assert message in result.stderr


def test_a_tenant_cannot_touch_another_tenants_message(
    node_settings: Settings, queued: tuple[App, str, str]
) -> None:
    app, contoso, _ = queued
    refused = postroom("queue", "delete", contoso, "--tenant", "fabrikam", config=node_settings.source)
    assert refused.returncode == 1 and "no queued message" in refused.stderr
    assert state(app, contoso)[0] == "pending"
