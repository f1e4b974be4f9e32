"""tests/directory/test_quota.py, unchanged, on PostgreSQL: the same rules hold on the scale-out store."""

from __future__ import annotations

import pytest

from postroom.storage import Database
from tests.directory.test_quota import *  # noqa: F403  (the tests and fixtures of that module, collected here)


@pytest.fixture
def database(shared_pg_database: Database) -> Database:
    return shared_pg_database
