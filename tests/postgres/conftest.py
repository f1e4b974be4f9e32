"""Fixtures of the PostgreSQL layer: fresh databases (skipped without a server, failed on CI).

`pg_database` is a migrated database of its own per test. `shared_pg_database` is one migrated
database per module, emptied before each test (DELETE and a sequence reset take milliseconds, CREATE
DATABASE and TRUNCATE some hundreds): modules that re-run a room's whole unit suite on PostgreSQL use it
as their `database`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import delete, func, insert, select

from postroom.storage import Database
from postroom.storage.schema import directory_generation, metadata, schema_version
from tests.support.postgres import fresh_database, postgres_url

__all__ = ["pg_database", "postgres_url", "shared_pg_database"]


@pytest.fixture
def pg_database(postgres_url: str) -> Iterator[Database]:
    """A migrated Database on a fresh PostgreSQL database."""
    database = Database(postgres_url)
    database.migrate()
    yield database
    database.dispose()


@pytest.fixture(scope="module")
def _module_pg_database() -> Iterator[Database]:
    with fresh_database() as url:
        database = Database(url)
        database.migrate()
        yield database
        database.dispose()


@pytest.fixture
def shared_pg_database(_module_pg_database: Database) -> Database:
    """The module's PostgreSQL database, as fresh as after `migrate()`."""
    with _module_pg_database.write() as conn:
        for table in reversed(metadata.sorted_tables):  # children first
            if table is not schema_version:
                conn.execute(delete(table))
        for table in metadata.sorted_tables:
            if "id" in table.c and table.c.id.autoincrement is True:
                sequence = conn.execute(select(func.pg_get_serial_sequence(table.name, "id"))).scalar_one()
                if sequence is not None:
                    conn.execute(select(func.setval(sequence, 1, False)))
        conn.execute(insert(directory_generation).values(id=1, generation=0))
    return _module_pg_database
