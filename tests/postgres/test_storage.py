"""The storage layer on PostgreSQL: migration, the group commit, prepared statements, column types."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator

import psycopg
import pytest
from sqlalchemy import Connection, bindparam, insert, select, text, update

from postroom.storage import Database, GroupCommitter, SchemaTooNewError
from postroom.storage.prepared import PreparedInsert, PreparedStatement
from postroom.storage.schema import (
    SCHEMA_VERSION,
    addresses,
    directory_generation,
    domains,
    folders,
    recipients,
    schema_version,
    spool_messages,
    tenants,
    trace_recipients,
)


@pytest.fixture
def pg_database(shared_pg_database: Database) -> Database:
    """The module's database, emptied: a CREATE DATABASE per test would cost half a second each."""
    return shared_pg_database


def test_migrate_twice_is_idempotent(postgres_url: str) -> None:
    database = Database(postgres_url)
    try:
        assert database.write_engine.dialect.name == "postgresql"
        assert database.migrate() == SCHEMA_VERSION
        with database.write() as conn:
            conn.execute(insert(tenants).values(name="kept", created_at=1.0))
            conn.execute(
                update(directory_generation).values(generation=directory_generation.c.generation + 1)
            )
        assert database.migrate() == SCHEMA_VERSION
        with database.read() as conn:
            assert conn.execute(select(schema_version.c.version)).scalars().all() == [SCHEMA_VERSION]
            assert conn.execute(select(tenants.c.name)).scalars().all() == ["kept"]
            assert conn.execute(select(directory_generation)).all() == [(1, 1)]
    finally:
        database.dispose()


def test_schema_newer_than_the_code_is_refused(pg_database: Database) -> None:
    with pg_database.write() as conn:
        conn.execute(insert(schema_version).values(version=SCHEMA_VERSION + 1, applied_at=1.0))
    with pytest.raises(SchemaTooNewError, match=f"schema version {SCHEMA_VERSION + 1}"):
        pg_database.migrate()


def test_write_is_serializable_and_read_is_read_committed(pg_database: Database) -> None:
    with pg_database.write() as conn:
        assert conn.exec_driver_sql("show transaction_isolation").scalar_one() == "serializable"
    with pg_database.read() as conn:
        assert conn.exec_driver_sql("show transaction_isolation").scalar_one() == "read committed"


def add_tenant(name: str) -> Callable[[Connection], int]:
    def job(conn: Connection) -> int:
        created = conn.execute(insert(tenants).values(name=name, created_at=1.0))
        return int(created.inserted_primary_key[0])  # type: ignore[index]

    return job


def tenant_names(database: Database) -> list[str]:
    with database.read() as conn:
        return sorted(conn.execute(select(tenants.c.name)).scalars().all())


@pytest.fixture
def committer(pg_database: Database) -> Iterator[GroupCommitter]:
    writer = GroupCommitter(pg_database, batch_max=256)
    writer.start()
    yield writer
    writer.stop()


async def test_concurrent_jobs_share_commits(pg_database: Database, committer: GroupCommitter) -> None:
    jobs = 300
    ids = await asyncio.gather(*(committer.run(add_tenant(f"t{n:03}")) for n in range(jobs)))
    assert sorted(ids) == list(range(1, jobs + 1))
    assert committer.jobs == jobs
    assert 1 <= committer.commits < jobs / 10, "many jobs per durable commit"
    assert tenant_names(pg_database) == [f"t{n:03}" for n in range(jobs)]


async def test_a_failing_job_fails_only_its_own_future(
    pg_database: Database, committer: GroupCommitter
) -> None:
    def failing(conn: Connection) -> int:
        conn.execute(insert(tenants).values(name="from-the-failing-job", created_at=1.0))
        raise ValueError("this job is broken")

    runs = [committer.run(add_tenant(f"ok{n}")) for n in range(10)]
    runs.insert(5, committer.run(failing))
    # A unique violation aborts the whole PostgreSQL transaction: the batch is replayed job by job.
    runs.append(committer.run(add_tenant("ok0")))
    results = await asyncio.gather(*runs, return_exceptions=True)
    assert isinstance(results[5], ValueError)
    assert type(results[-1]).__name__ == "IntegrityError"
    assert all(isinstance(r, int) for i, r in enumerate(results) if i not in (5, len(results) - 1))
    assert tenant_names(pg_database) == sorted(f"ok{n}" for n in range(10))
    assert [await committer.run(add_tenant("after"))] != [], "the writer's connection is still usable"
    assert "after" in tenant_names(pg_database)


async def test_a_serialization_failure_is_retried(pg_database: Database, committer: GroupCommitter) -> None:
    attempts: list[int] = []

    def conflicting(conn: Connection) -> int:
        conn.execute(insert(tenants).values(name=f"try{len(attempts)}", created_at=1.0))
        attempts.append(1)
        if len(attempts) < 3:  # raised by the driver itself, as PreparedInsert lets it through
            raise psycopg.errors.SerializationFailure("could not serialize access")
        return len(attempts)

    assert await committer.run(conflicting) == 3
    assert tenant_names(pg_database) == ["try2"], "the failed attempts were rolled back"

    def never(conn: Connection) -> int:
        raise psycopg.errors.DeadlockDetected("deadlock detected")

    with pytest.raises(psycopg.errors.DeadlockDetected):
        await committer.run(never)


async def test_results_are_visible_only_after_the_commit(
    pg_database: Database, committer: GroupCommitter
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
    assert tenant_names(pg_database) == []
    release.set()
    assert await task == "done"
    assert tenant_names(pg_database) == ["slow"]


async def test_stop_finishes_submitted_jobs(pg_database: Database) -> None:
    writer = GroupCommitter(pg_database)
    writer.start()
    pending = [asyncio.ensure_future(writer.run(add_tenant(f"s{n}"))) for n in range(5)]
    await asyncio.sleep(0)
    await asyncio.to_thread(writer.stop)
    assert len(await asyncio.gather(*pending)) == 5
    assert tenant_names(pg_database) == [f"s{n}" for n in range(5)]


def increment(conn: Connection) -> int:
    """Read, then write: loses updates unless the writer's isolation forbids it."""
    current = conn.execute(select(directory_generation.c.generation)).scalar_one()
    conn.execute(update(directory_generation).values(generation=current + 1))
    return int(current) + 1


async def test_two_nodes_writing_the_same_row_lose_no_update(postgres_url: str) -> None:
    nodes = [Database(postgres_url) for _ in range(2)]
    nodes[0].migrate()
    writers = [GroupCommitter(node) for node in nodes]
    for writer in writers:
        writer.start()
    try:
        jobs = 100
        results = await asyncio.gather(*(writers[n % 2].run(increment) for n in range(jobs)))
    finally:
        for writer in writers:
            await asyncio.to_thread(writer.stop)
    with nodes[0].read() as conn:
        assert conn.execute(select(directory_generation.c.generation)).scalar_one() == jobs
    assert sorted(results) == list(range(1, jobs + 1)), "every job saw a serial order"
    for node in nodes:
        node.dispose()


_UPSERT = PreparedInsert(
    trace_recipients,
    ["message_id", "tenant_id", "recipient", "status", "updated_at"],
    on_conflict=(["message_id", "recipient"], ["status", "updated_at"]),
)


def test_prepared_upsert_inserts_many_dict_rows_then_updates(pg_database: Database) -> None:
    rows = [
        {
            "message_id": "m1",
            "tenant_id": 1,
            "recipient": f"r{n}@x.example",
            "status": "pending",
            "updated_at": 1.0,
        }
        for n in range(50)
    ]
    with pg_database.write() as conn:
        _UPSERT.run(conn, rows)
    with pg_database.write() as conn:
        _UPSERT.run(
            conn,
            [
                {
                    "message_id": "m1",
                    "tenant_id": 1,
                    "recipient": "r7@x.example",
                    "status": "delivered",
                    "updated_at": 2.0,
                },
                {
                    "message_id": "m2",
                    "tenant_id": None,
                    "recipient": "r7@x.example",
                    "status": "failed",
                    "updated_at": 2.0,
                },
            ],
        )
    with pg_database.read() as conn:
        found = conn.execute(
            select(
                trace_recipients.c.message_id,
                trace_recipients.c.recipient,
                trace_recipients.c.status,
                trace_recipients.c.tenant_id,
                trace_recipients.c.updated_at,
            )
            .where(trace_recipients.c.status != "pending")
            .order_by(trace_recipients.c.message_id)
        ).all()
        count = len(conn.execute(select(trace_recipients.c.id)).all())
    assert [tuple(r) for r in found] == [
        ("m1", "r7@x.example", "delivered", 1, 2.0),
        ("m2", "r7@x.example", "failed", None, 2.0),
    ]
    assert count == 51


def test_prepared_statement_fetch_and_update(pg_database: Database) -> None:
    find = PreparedStatement(
        select(folders.c.id, folders.c.uidnext).where(
            (folders.c.mailbox_id == bindparam("mailbox_id")) & (folders.c.name == bindparam("name"))
        )
    )
    advance = PreparedStatement(
        update(folders).where(folders.c.id == bindparam("folder_id")).values(uidnext=bindparam("uidnext"))
    )
    with pg_database.write() as conn:
        tenant = conn.execute(insert(tenants).values(name="t", created_at=1.0)).inserted_primary_key[0]
        mailbox = conn.execute(
            insert(recipients).values(tenant_id=tenant, kind="mailbox", created_at=1.0)
        ).inserted_primary_key[0]
        big = 2**40  # BigInteger: beyond a 32-bit integer
        conn.execute(insert(folders).values(mailbox_id=mailbox, name="Inbox", uidvalidity=big, uidnext=1))
        [(folder_id, uidnext)] = find.fetch(conn, {"mailbox_id": mailbox, "name": "Inbox"})
        assert uidnext == 1
        advance.run(conn, [{"folder_id": folder_id, "uidnext": big + 1}])
    with pg_database.read() as conn:
        assert find.fetch(conn, {"mailbox_id": mailbox, "name": "Inbox"}) == [(folder_id, big + 1)]
        assert conn.execute(select(folders.c.uidvalidity)).scalar_one() == big


def test_booleans_and_binary_round_trip(pg_database: Database) -> None:
    prefix = b"Received: from x\r\n\x00\xff binary-safe"
    columns = ["id", "sender", "blob_id", "prefix", "size", "received_at", "from_header", "subject"]
    columns += ["date_header", "message_id_header"]  # every column: PreparedInsert fills no defaults
    spool = PreparedInsert(spool_messages, columns)
    with pg_database.write() as conn:
        spool.run(
            conn,
            [
                {
                    "id": "q1",
                    "sender": "",
                    "blob_id": "b" * 64,
                    "prefix": prefix,
                    "size": 1,
                    "received_at": 1.0,
                    **dict.fromkeys(columns[6:], ""),
                }
            ],
        )
        tenant = conn.execute(insert(tenants).values(name="t", created_at=1.0)).inserted_primary_key[0]
        domain = conn.execute(
            insert(domains).values(
                tenant_id=tenant,
                name="t.example",
                type="authoritative",
                status="verified",
                is_default=True,
                verification_token="v",
                domain_key="t-example",
                created_at=1.0,
            )
        ).inserted_primary_key[0]
        recipient = conn.execute(
            insert(recipients).values(tenant_id=tenant, kind="mailbox", created_at=1.0)
        ).inserted_primary_key[0]
        conn.execute(
            insert(addresses).values(
                key="a@t.example",
                address="a@t.example",
                recipient_id=recipient,
                domain_id=domain,
                is_primary=False,
            )
        )
    with pg_database.read() as conn:
        stored = conn.execute(select(spool_messages.c.prefix)).scalar_one()
        assert bytes(stored) == prefix
        assert conn.execute(select(domains.c.is_default)).scalar_one() is True
        assert conn.execute(select(addresses.c.is_primary)).scalar_one() is False
        assert conn.execute(select(addresses.c.key).where(addresses.c.is_primary.is_(False))).all() == [
            ("a@t.example",)
        ]


async def test_the_writer_commits_synchronously_whatever_the_database_default(postgres_url: str) -> None:
    database = Database(postgres_url)
    try:
        with database.read() as conn:
            name = conn.execute(text("SELECT current_database()")).scalar_one()
            conn.execute(text(f'ALTER DATABASE "{name}" SET synchronous_commit = off'))
            conn.commit()
        database.dispose()  # new sessions get the database's default: off
        database.migrate()
        writer = GroupCommitter(database)
        writer.start()
        try:
            setting = await writer.run(
                lambda conn: conn.execute(text("SHOW synchronous_commit")).scalar_one()
            )
        finally:
            writer.stop()
        with database.write() as conn:
            assert conn.execute(text("SHOW synchronous_commit")).scalar_one() == "on"
        assert setting == "on"
    finally:
        database.dispose()
