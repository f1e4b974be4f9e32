"""The scheduler: runs its delivery rounds until they settle nothing, survives a failing round, and
settles through the queue (`queue.settle`) in the round's transaction."""

from __future__ import annotations

import asyncio

from sqlalchemy import Connection, select

from postroom.model.flow import Route, RoutedRecipient
from postroom.model.message import HeaderSummary
from postroom.queue import DeliveryRound, Scheduler, SpoolEntry, queue_summary, settle, write_spool
from postroom.storage import Database, GroupCommitter
from postroom.storage.schema import queue_recipients

SUMMARY = HeaderSummary("a@example.net", "Hello", "", "<1@example.net>")


def remote_round(batch_max: int) -> DeliveryRound:
    """A delivery round as remote delivery will run one: take due recipients, settle them."""

    def run(conn: Connection, now: float) -> int:
        q = queue_recipients
        due = set(
            conn.execute(
                select(q.c.id)
                .where((q.c.route == Route.REMOTE.value) & (q.c.next_attempt_at <= now))
                .limit(batch_max)
            ).scalars()
        )
        settle(conn, due)
        return len(due)

    return run


async def test_scheduler_runs_rounds_until_the_queue_is_empty(database: Database) -> None:
    with database.write() as conn:
        for n in range(5):
            entry = SpoolEntry(f"m{n}", "a@example.net", "ab" * 32, b"", 10, 1000.0 + n, SUMMARY)
            write_spool(
                conn,
                entry,
                [
                    RoutedRecipient(f"x{k}@partner.example", f"x{k}@partner.example", 1, Route.REMOTE)
                    for k in (1, 2)
                ],
            )
    committer = GroupCommitter(database)
    committer.start()
    failures: list[float] = []

    def flaky(conn: Connection, now: float) -> int:
        if not failures:
            failures.append(now)
            raise RuntimeError("transient")
        return 0

    scheduler = Scheduler(committer, [flaky, remote_round(3)], idle_interval=0.05)
    task = asyncio.ensure_future(scheduler.run())
    try:
        for _ in range(500):
            if scheduler.delivered >= 10:
                break
            await asyncio.sleep(0.01)
    finally:
        scheduler.stop()
        await asyncio.wait_for(task, 5)
        await asyncio.to_thread(committer.stop)
    assert scheduler.delivered == 10
    assert len(failures) == 1  # the failing round did not stop the scheduler
    with database.read() as conn:
        summary = queue_summary(conn)
    assert (summary.pending, summary.messages) == (0, 0)
