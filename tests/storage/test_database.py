"""Database.migrate and the GroupCommitter: batching, per-job failure, visibility after commit."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, func, insert, select

from postroom.storage import Database, GroupCommitter, SchemaTooNewError, WriterStoppedError
from postroom.storage.schema import SCHEMA_VERSION, schema_version, tenants


def test_migrate_twice_is_idempotent(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path}/t.db")
    assert database.migrate() == SCHEMA_VERSION
    with database.write() as conn:
        conn.execute(insert(tenants).values(name="kept", created_at=1.0))
    assert database.migrate() == SCHEMA_VERSION
    with database.read() as conn:
        assert conn.execute(select(schema_version.c.version)).scalars().all() == [SCHEMA_VERSION]
        assert conn.execute(select(tenants.c.name)).scalars().all() == ["kept"]
    database.dispose()


def test_schema_newer_than_the_code_is_refused(database: Database) -> None:
    with database.write() as conn:
        conn.execute(insert(schema_version).values(version=SCHEMA_VERSION + 1, applied_at=1.0))
    with pytest.raises(SchemaTooNewError, match=f"schema version {SCHEMA_VERSION + 1}"):
        database.migrate()
    with database.read() as conn:
        versions = conn.execute(select(schema_version.c.version)).scalars().all()
    assert sorted(versions) == [SCHEMA_VERSION, SCHEMA_VERSION + 1]  # untouched


def test_write_rolls_back_on_error(database: Database) -> None:
    with pytest.raises(RuntimeError), database.write() as conn:
        conn.execute(insert(tenants).values(name="lost", created_at=1.0))
        raise RuntimeError("boom")
    with database.read() as conn:
        assert conn.execute(select(func.count()).select_from(tenants)).scalar_one() == 0


def add_tenant(name: str) -> Callable[[Connection], int]:
    def job(conn: Connection) -> int:
        created = conn.execute(insert(tenants).values(name=name, created_at=1.0))
        return int(created.inserted_primary_key[0])  # type: ignore[index]

    return job


def tenant_names(database: Database) -> list[str]:
    with database.read() as conn:
        return sorted(conn.execute(select(tenants.c.name)).scalars().all())


@pytest.fixture
def committer(database: Database) -> Iterator[GroupCommitter]:
    writer = GroupCommitter(database, batch_max=256)
    writer.start()
    yield writer
    writer.stop()


async def test_concurrent_jobs_share_commits(database: Database, committer: GroupCommitter) -> None:
    jobs = 200
    ids = await asyncio.gather(*(committer.run(add_tenant(f"t{n:03}")) for n in range(jobs)))
    assert sorted(ids) == list(range(1, jobs + 1))
    assert committer.jobs == jobs
    assert 1 <= committer.commits < jobs
    assert tenant_names(database) == [f"t{n:03}" for n in range(jobs)]


async def test_a_failing_job_fails_only_its_own_future(database: Database, committer: GroupCommitter) -> None:
    def failing(conn: Connection) -> int:
        conn.execute(insert(tenants).values(name="from-the-failing-job", created_at=1.0))
        raise ValueError("this job is broken")

    runs = [committer.run(add_tenant(f"ok{n}")) for n in range(10)]
    runs.insert(5, committer.run(failing))
    runs.append(committer.run(add_tenant("ok0")))  # unique constraint: fails too
    results = await asyncio.gather(*runs, return_exceptions=True)
    assert isinstance(results[5], ValueError)
    assert type(results[-1]).__name__ == "IntegrityError"
    assert all(isinstance(r, int) for i, r in enumerate(results) if i not in (5, len(results) - 1))
    assert tenant_names(database) == sorted(f"ok{n}" for n in range(10))


async def test_results_are_visible_only_after_the_commit(
    database: Database, committer: GroupCommitter
) -> None:
    inserted = threading.Event()
    release = threading.Event()

    def slow(conn: Connection) -> str:
        conn.execute(insert(tenants).values(name="slow", created_at=1.0))
        inserted.set()
        assert release.wait(10)
        return "done"

    task = asyncio.ensure_future(committer.run(slow))
    assert await asyncio.to_thread(inserted.wait, 10)
    assert tenant_names(database) == []  # written, not committed: a reader does not see it
    assert not task.done()
    release.set()
    assert await task == "done"
    assert tenant_names(database) == ["slow"]


async def test_stop_finishes_submitted_jobs(database: Database) -> None:
    writer = GroupCommitter(database)
    writer.start()
    pending = [asyncio.ensure_future(writer.run(add_tenant(f"s{n}"))) for n in range(5)]
    await asyncio.sleep(0)  # let every run() enqueue its job
    await asyncio.to_thread(writer.stop)
    assert len(await asyncio.gather(*pending)) == 5
    assert tenant_names(database) == [f"s{n}" for n in range(5)]


async def test_a_waiter_that_gives_up_does_not_stop_the_writer(
    database: Database, committer: GroupCommitter
) -> None:
    inserted = threading.Event()
    release = threading.Event()

    def slow(conn: Connection) -> None:
        conn.execute(insert(tenants).values(name="taken", created_at=1.0))
        inserted.set()
        assert release.wait(10)

    taken = asyncio.ensure_future(committer.run(slow))
    assert await asyncio.to_thread(inserted.wait, 10)
    queued = asyncio.ensure_future(committer.run(add_tenant("dropped")))
    await asyncio.sleep(0)  # the queued job is submitted behind the slow one
    taken.cancel()  # both waiters give up (a session cut at the end of the drain grace)
    queued.cancel()
    release.set()
    assert await asyncio.wait_for(committer.run(add_tenant("later")), 10) > 0
    # A job already in a batch commits; one still queued when its waiter left is dropped.
    assert tenant_names(database) == ["later", "taken"]
    assert committer.alive


class WriterKilled(BaseException):
    """Something no job handles: it escapes the writer thread."""


async def test_a_dead_writer_fails_waiting_and_later_jobs_at_once(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    writer = GroupCommitter(database)
    writer.start()
    started = threading.Event()
    release = threading.Event()

    def fatal(conn: Connection) -> None:
        started.set()
        assert release.wait(10)
        raise WriterKilled("out of everything")

    doomed = asyncio.ensure_future(writer.run(fatal))
    assert await asyncio.to_thread(started.wait, 10)
    waiting = asyncio.ensure_future(writer.run(add_tenant("never")))
    await asyncio.sleep(0)
    with caplog.at_level(logging.CRITICAL, logger="postroom.storage.database"):
        release.set()
        for future in (doomed, waiting):
            with pytest.raises(WriterStoppedError, match="out of everything"):
                await asyncio.wait_for(future, 10)
    assert not writer.alive
    with pytest.raises(WriterStoppedError):
        await asyncio.wait_for(writer.run(add_tenant("later")), 1)
    assert [r.levelno for r in caplog.records] == [logging.CRITICAL]
    assert "WriterKilled: out of everything" in caplog.text
    await asyncio.to_thread(writer.stop)
    assert tenant_names(database) == []
