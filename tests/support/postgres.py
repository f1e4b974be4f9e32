"""A fresh PostgreSQL database per test, on the server of this machine or of CI.

The server is 127.0.0.1:5432 with trust authentication (override the whole maintenance URL with
`POSTROOM_TEST_POSTGRES`, e.g. `postgresql+psycopg://me@db:5432/postgres`). Each test gets its own
database `postroom_<random>`, created from the maintenance database (`test`, else `postgres`) and
dropped with `WITH (FORCE)` afterwards, so a test that leaks a connection cannot block the drop.

When no server answers the test is skipped with the reason; when the environment variable `CI` is
set it fails instead: CI must run these tests, a missing server there is a broken pipeline.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

HOST = "127.0.0.1:5432"
USERS = ("postgres", "root")
MAINTENANCE_DATABASES = ("test", "postgres")


def _candidates() -> list[str]:
    configured = os.environ.get("POSTROOM_TEST_POSTGRES")
    if configured:
        return [configured]
    return [f"postgresql+psycopg://{user}@{HOST}/{db}" for user in USERS for db in MAINTENANCE_DATABASES]


def _maintenance_engine() -> Engine:
    """An AUTOCOMMIT engine on the first maintenance database that answers; skip or fail if none."""
    errors = []
    for url in _candidates():
        engine = create_engine(
            url, isolation_level="AUTOCOMMIT", poolclass=NullPool, connect_args={"connect_timeout": 3}
        )
        try:
            with engine.connect() as conn:
                conn.execute(text("select 1"))
            return engine
        except OperationalError as error:
            engine.dispose()
            errors.append(f"{make_url(url).render_as_string(hide_password=True)}: {error.orig}")
    reason = "PostgreSQL is not reachable: " + "; ".join(errors)
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: the PostgreSQL tests must run)", pytrace=False)
    pytest.skip(reason)


@contextmanager
def fresh_database() -> Iterator[str]:
    """Create `postroom_<random>`, yield its SQLAlchemy URL, drop it afterwards."""
    engine = _maintenance_engine()
    name = f"postroom_{secrets.token_hex(6)}"
    url = engine.url.set(database=name).render_as_string(hide_password=False)
    try:
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield url
        finally:
            with engine.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The SQLAlchemy URL of a fresh, empty PostgreSQL database for this test."""
    with fresh_database() as url:
        yield url
