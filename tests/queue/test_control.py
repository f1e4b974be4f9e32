"""Queue control as administrators use it: list, show, retry, hold, release, delete (with and without
a bounce), summary; a tenant scope sees and changes only its own rows."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from postroom.app.outbound import write_trace
from postroom.directory import Directory
from postroom.model.scope import OPERATOR, TenantScope
from postroom.queue import QueueControl, QueueRowNotFoundError, lease_due
from postroom.storage import BlobStore, Database, FileBlobStore
from postroom.storage.schema import queue_recipients
from postroom.trace import TraceService
from tests.support.records import Org, populate, receive

NOW = 50_000.0
CONTENT = b"From: a@example.net\r\nSubject: Invoice\r\n\r\nHi\r\n"


class Clock:
    now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def org(directory: Directory) -> Org:
    found = populate(directory)
    directory.add_contact(OPERATOR, "vendor@fabrikam.com", external_address="v@vendor.example")
    return found


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    return FileBlobStore(tmp_path / "blobs")


@pytest.fixture
def control(database: Database) -> QueueControl:
    return QueueControl(database, write_trace, Clock())


def states(database: Database) -> dict[str, tuple[str, float]]:
    q = queue_recipients
    with database.read() as conn:
        return {r.recipient: (r.state, r.next_attempt_at) for r in conn.execute(select(q))}


def test_a_tenant_sees_and_changes_only_its_own_rows(
    database: Database, org: Org, blobs: BlobStore, control: QueueControl
) -> None:
    contoso_mail = receive(database, blobs, "a@example.net", ["partner@contoso.com"], CONTENT, at=NOW - 7200)
    fabrikam_mail = receive(database, blobs, "a@example.net", ["vendor@fabrikam.com"], CONTENT, at=NOW - 60)
    contoso, fabrikam = TenantScope(org.contoso), TenantScope(org.fabrikam)
    assert [m.id for m in control.list_messages(OPERATOR)] == [contoso_mail, fabrikam_mail]
    assert [m.id for m in control.list_messages(contoso)] == [contoso_mail]
    assert [m.id for m in control.list_messages(fabrikam)] == [fabrikam_mail]
    for action in (control.show, control.hold, control.release, control.delete):
        with pytest.raises(QueueRowNotFoundError):
            action(fabrikam, contoso_mail)
    with pytest.raises(QueueRowNotFoundError):
        control.retry(fabrikam, contoso_mail)
    assert control.retry(fabrikam, destination="partner.example") == 0
    assert states(database)["ext@partner.example"][0] == "pending"
    shown = control.show(contoso, contoso_mail)
    assert [(r.recipient, r.original_recipient, r.destination, r.state) for r in shown.recipients] == [
        ("ext@partner.example", "partner@contoso.com", "partner.example", "pending")
    ]
    summary = control.overview(fabrikam)
    assert (summary.summary.pending, summary.summary.messages) == (1, 1)
    assert summary.by_destination == {"vendor.example": {"pending": 1}}
    assert {b.age: b.messages for b in summary.by_age}["< 5 min"] == 1
    everything = control.overview(OPERATOR)
    assert everything.by_destination == {"partner.example": {"pending": 1}, "vendor.example": {"pending": 1}}
    assert {b.age: b.messages for b in everything.by_age} == {
        "< 5 min": 1,
        "< 1 h": 0,
        "< 4 h": 1,
        "< 1 day": 0,
        ">= 1 day": 0,
    }


def test_hold_release_retry_and_filters(
    database: Database, org: Org, blobs: BlobStore, control: QueueControl
) -> None:
    message_id = receive(database, blobs, "a@example.net", ["partner@contoso.com"], CONTENT, at=NOW - 60)
    q = queue_recipients
    with database.write() as conn:
        conn.execute(q.update().values(state="deferred", attempts=2, next_attempt_at=NOW + 900))
    assert control.hold(OPERATOR, message_id) == 1
    with database.write() as conn:  # a held recipient is never leased, due or not
        assert lease_due(conn, token="t/1", now=NOW + 1000, lease_seconds=60, limit=10).recipients == ()
    assert [m.id for m in control.list_messages(OPERATOR, state="held")] == [message_id]
    assert control.list_messages(OPERATOR, state="deferred") == []
    assert control.retry(OPERATOR, message_id) == 0  # held stays held
    assert control.release(OPERATOR, message_id) == 1
    assert states(database)["ext@partner.example"] == ("deferred", NOW)  # tried before: deferred, due now
    with database.write() as conn:
        conn.execute(q.update().values(next_attempt_at=NOW + 900))
    assert [m.id for m in control.list_messages(OPERATOR, destination="Partner.Example.")] == [message_id]
    assert control.list_messages(OPERATOR, destination="vendor.example") == []
    assert control.retry(OPERATOR, destination="partner.example") == 1
    assert states(database)["ext@partner.example"] == ("deferred", NOW)


def test_delete_without_bounce_removes_and_traces_fail(
    database: Database, org: Org, blobs: BlobStore, control: QueueControl
) -> None:
    message_id = receive(database, blobs, "a@example.net", ["partner@contoso.com"], CONTENT, at=NOW - 60)
    assert control.delete(OPERATOR, message_id) == 1
    assert states(database) == {}
    detail = TraceService(database).detail(message_id, OPERATOR)
    assert detail is not None
    fail = [e for e in detail.events if e.event == "Fail"]
    assert fail and "deleted from the queue by an administrator" in str(fail[0].detail["reply"])
    assert [r.status.value for r in detail.recipients] == ["failed"]
    with pytest.raises(QueueRowNotFoundError):
        control.show(OPERATOR, message_id)


def test_delete_with_bounce_fails_the_rows_for_the_dsn_round(
    database: Database, org: Org, blobs: BlobStore, control: QueueControl
) -> None:
    message_id = receive(database, blobs, "a@example.net", ["partner@contoso.com"], CONTENT, at=NOW - 60)
    with database.write() as conn:
        lease_due(conn, token="node/1", now=NOW, lease_seconds=60, limit=10)
    assert control.delete(OPERATOR, message_id, bounce=True) == 1
    with database.read() as conn:
        row = conn.execute(select(queue_recipients)).one()
    assert (row.state, row.lease_owner) == ("failed", None)
    assert row.last_reply.startswith("550 5.3.0")
