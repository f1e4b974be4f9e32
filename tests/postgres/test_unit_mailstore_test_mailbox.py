"""tests/mailstore/test_mailbox.py, unchanged, on PostgreSQL: the same rules hold on the scale-out store."""

from __future__ import annotations

import pytest

from postroom.storage import Database
from tests.mailstore.test_mailbox import *  # noqa: F403  (the tests and fixtures of that module, collected here)


@pytest.fixture
def database(shared_pg_database: Database) -> Database:
    return shared_pg_database
