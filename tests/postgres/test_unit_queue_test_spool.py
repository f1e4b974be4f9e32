"""tests/queue/test_spool.py, unchanged, on PostgreSQL: the same rules hold on the scale-out store."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from postroom.queue import queue_summary, write_spool
from postroom.storage import Database
from postroom.storage.schema import spool_messages
from tests.queue.test_spool import *  # noqa: F403  (the tests and fixtures of that module, collected here)
from tests.queue.test_spool import ROUTES, entry


@pytest.fixture
def database(shared_pg_database: Database) -> Database:
    return shared_pg_database


def test_write_spool_is_all_or_nothing(database: Database) -> None:
    """As in tests/queue, but PostgreSQL words the unique violation differently from SQLite (and
    PreparedInsert raises the driver's own exception, unwrapped, on both)."""
    with database.write() as conn:
        write_spool(conn, entry("m1", 1000.0), ROUTES)
    with (
        pytest.raises(Exception, match="duplicate key value violates unique constraint"),
        database.write() as conn,
    ):
        write_spool(conn, entry("m2", 2000.0), ROUTES)
        write_spool(conn, entry("m1", 3000.0), ROUTES)  # the same id again: the whole job fails
    with database.read() as conn:
        assert conn.execute(select(spool_messages.c.id)).scalars().all() == ["m1"]
        assert queue_summary(conn).pending == 2
