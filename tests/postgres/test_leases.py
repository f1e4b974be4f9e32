"""Leases on PostgreSQL, where several nodes lease from one queue: concurrent leasers take disjoint
rows (`FOR UPDATE SKIP LOCKED`), never block on each other, and every due row is taken once."""

from __future__ import annotations

import asyncio
import threading

from sqlalchemy import Connection, select

from postroom.app.outbound import lease_in_own_transaction, lease_runner
from postroom.model.flow import Route, RoutedRecipient
from postroom.model.message import HeaderSummary
from postroom.queue import Lease, SpoolEntry, lease_due, write_spool
from postroom.storage import Database, GroupCommitter
from postroom.storage.schema import queue_recipients

SUMMARY = HeaderSummary("a@example.net", "Hello", "", "<1@example.net>")
NOW = 5000.0


def queue_rows(database: Database, count: int) -> None:
    with database.write() as conn:
        for n in range(count):
            entry = SpoolEntry(f"m{n:04d}", "a@example.net", "ab" * 32, b"", 10, 1000.0, SUMMARY)
            recipients = [
                RoutedRecipient(
                    f"x{n}@partner{n % 7}.example", f"x{n}@partner{n % 7}.example", 1, Route.REMOTE
                )
            ]
            write_spool(conn, entry, recipients)


def test_two_open_leasing_transactions_take_disjoint_rows(pg_database: Database) -> None:
    queue_rows(pg_database, 30)

    def second_leaser(conn: Connection) -> Lease:
        # The first transaction still holds its rows locked: this one skips them, it does not wait.
        return lease_due(conn, token="node-b/1", now=NOW, lease_seconds=60.0, limit=10)

    def first_leaser(conn: Connection) -> Lease:
        lease = lease_due(conn, token="node-a/1", now=NOW, lease_seconds=60.0, limit=10)
        seconds.append(lease_in_own_transaction(pg_database, second_leaser))
        return lease

    seconds: list[Lease] = []
    taken_first = lease_in_own_transaction(pg_database, first_leaser)
    [taken_second] = seconds
    a = {r.queue_id for r in taken_first.recipients}
    b = {r.queue_id for r in taken_second.recipients}
    assert len(a) == 10 and len(b) == 10 and not a & b
    with pg_database.read() as conn:
        owners = dict(conn.execute(select(queue_recipients.c.id, queue_recipients.c.lease_owner)).all())
    assert {owners[i] for i in a} == {"node-a/1"} and {owners[i] for i in b} == {"node-b/1"}
    assert sum(1 for owner in owners.values() if owner is None) == 10


def test_concurrent_nodes_lease_every_row_exactly_once(pg_database: Database) -> None:
    """Four nodes, each leasing as a serving node does, in small batches at once until none is left."""
    queue_rows(pg_database, 200)
    taken: dict[str, list[int]] = {}
    start = threading.Barrier(4)

    def node(name: str) -> None:
        async def lease_all() -> None:
            database = Database(pg_database.url)
            committer = GroupCommitter(database)
            committer.start()
            run = lease_runner(database, committer)
            try:
                start.wait()
                mine: list[int] = []
                for n in range(1, 100):
                    job = lambda conn, token=f"{name}/{n}": lease_due(  # noqa: E731
                        conn, token=token, now=NOW, lease_seconds=60.0, limit=7
                    )
                    lease = await run(job)
                    if not lease.recipients:
                        break
                    mine += [r.queue_id for r in lease.recipients]
                taken[name] = mine
            finally:
                await asyncio.to_thread(committer.stop)
                database.dispose()

        asyncio.run(lease_all())

    threads = [threading.Thread(target=node, args=(f"node-{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    every = [queue_id for ids in taken.values() for queue_id in ids]
    assert len(taken) == 4
    assert len(every) == 200 and len(set(every)) == 200  # each row leased once, none left behind
    assert sum(1 for ids in taken.values() if ids) >= 2  # they really ran side by side
