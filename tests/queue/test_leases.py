"""When the next queue row comes due, as a lease round tells the scheduler (`Lease.next_due`): a free
row at its next attempt, a leased one when its lease ends if that is later; rows just taken, rows of
the local route and rows not waiting (held, failed) never count."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from postroom.model.flow import Route, RoutedRecipient
from postroom.model.message import HeaderSummary
from postroom.queue import SpoolEntry, lease_due, write_spool
from postroom.storage import Database
from postroom.storage.schema import queue_recipients

NOW = 5000.0
SUMMARY = HeaderSummary("a@example.net", "Hello", "", "<1@example.net>")

# (state, route, next_attempt_at, lease_until) per queued row; the expected next_due after one lease
# of at most one row (the row due now, if any, is the one taken)
CASES = [
    ([], None),
    ([("deferred", "remote", NOW + 100, None)], NOW + 100),
    ([("pending", "remote", NOW + 30, None), ("deferred", "remote", NOW + 100, None)], NOW + 30),
    # leased and due, its lease ends before the other row's next attempt: the lease end counts
    ([("deferred", "remote", NOW - 10, NOW + 50), ("deferred", "remote", NOW + 100, None)], NOW + 50),
    ([("deferred", "remote", NOW - 10, NOW + 200), ("deferred", "remote", NOW + 100, None)], NOW + 100),
    # an expired lease on a row due later: its next attempt counts
    ([("deferred", "remote", NOW + 70, NOW - 1), ("deferred", "remote", NOW + 100, None)], NOW + 70),
    ([("held", "remote", NOW + 5, None), ("failed", "remote", NOW + 6, None)], None),
    ([("deferred", "local", NOW + 5, None), ("deferred", "remote", NOW + 100, None)], NOW + 100),
    # the row due now is taken by this lease: it is not the next due, the one after is
    ([("deferred", "remote", NOW - 1, None), ("deferred", "remote", NOW + 100, None)], NOW + 100),
]


@pytest.mark.parametrize(("rows", "expected"), CASES)
def test_next_due(
    database: Database, rows: list[tuple[str, str, float, float | None]], expected: float | None
) -> None:
    with database.write() as conn:
        for n, (state, route, next_attempt_at, lease_until) in enumerate(rows):
            entry = SpoolEntry(f"m{n}", "a@example.net", "ab" * 32, b"", 10, 1000.0, SUMMARY)
            recipient = f"x{n}@partner.example"
            write_spool(conn, entry, [RoutedRecipient(recipient, recipient, 1, Route(route))])
            conn.execute(
                update(queue_recipients)
                .where(queue_recipients.c.message_id == entry.id)
                .values(state=state, next_attempt_at=next_attempt_at, lease_until=lease_until)
            )
    with database.write() as conn:
        lease = lease_due(conn, token="node/1", now=NOW, lease_seconds=300.0, limit=1)
    assert lease.next_due == expected
