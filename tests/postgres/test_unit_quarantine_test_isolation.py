"""tests/quarantine/test_isolation.py's id guessing, unchanged, on PostgreSQL."""

from __future__ import annotations

import pytest

from postroom.storage import Database
from tests.quarantine.test_isolation import (  # the test and its fixture, collected here
    blobs,
    test_another_tenant_guessing_ids_sees_and_changes_nothing,
)

__all__ = ["blobs", "test_another_tenant_guessing_ids_sees_and_changes_nothing"]


@pytest.fixture
def database(shared_pg_database: Database) -> Database:
    return shared_pg_database
