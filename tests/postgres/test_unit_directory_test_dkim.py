"""tests/directory/test_dkim.py, unchanged, on PostgreSQL: DKIM keys made and rotated there too."""

from __future__ import annotations

import pytest

from postroom.storage import Database
from tests.directory.test_dkim import *  # noqa: F403  (the tests and fixtures of that module, collected here)


@pytest.fixture
def database(shared_pg_database: Database) -> Database:
    return shared_pg_database
