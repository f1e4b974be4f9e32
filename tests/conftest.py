"""Fixtures shared by every layer: a fresh node directory, a node with one hosted tenant, a DNS server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from postroom.app import App
from postroom.config import Settings
from postroom.directory import Directory
from postroom.model.scope import OPERATOR
from postroom.storage import Database
from tests.support.dns_server import DnsTestServer
from tests.support.node import RunningNode, make_node, running
from tests.support.records import new_directory, open_database


@dataclass
class Hosted:
    """A node with tenant contoso: contoso.com verified, alice (alias al@), bob, a group, a contact."""

    settings: Settings
    app: App


@pytest.fixture
def node_settings(tmp_path: Path) -> Settings:
    return make_node(tmp_path / "node")


def populate(app: App) -> None:
    d = app.directory
    d.add_tenant(OPERATOR, "contoso")
    d.add_domain(OPERATOR, "contoso.com", "contoso", verified=True)
    d.add_mailbox(
        OPERATOR, "alice@contoso.com", display_name="Alice", password="alice-pw", aliases=["al@contoso.com"]
    )
    d.add_mailbox(OPERATOR, "bob@contoso.com", display_name="Bob")
    d.add_group(OPERATOR, "team@contoso.com", members=["alice@contoso.com", "bob@contoso.com"])
    # The tests that use it send from outside, about something else than its delivery restriction.
    d.set_external_senders(OPERATOR, "team@contoso.com", True)
    d.add_tenant(OPERATOR, "fabrikam")
    d.add_domain(OPERATOR, "fabrikam.com", "fabrikam", verified=True)
    d.add_mailbox(OPERATOR, "carol@fabrikam.com")
    d.add_domain(OPERATOR, "pending.example", "fabrikam")  # not verified: receives no mail


@pytest.fixture
def hosted(node_settings: Settings) -> Iterator[Hosted]:
    app = App.open(node_settings)
    populate(app)
    yield Hosted(node_settings, app)
    app.close()


@pytest.fixture
def mx_node(hosted: Hosted) -> Iterator[RunningNode]:
    with running(hosted.settings) as node:
        yield node


@pytest.fixture
def dns_server() -> Iterator[DnsTestServer]:
    with DnsTestServer() as server:
        yield server


def wait_for(condition: object, timeout: float = 10.0, interval: float = 0.05) -> None:
    """Poll `condition()` until true; fail the test when it stays false past `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    """A migrated SQLite database in the test's temp directory (the unit layer's store)."""
    db = open_database(tmp_path)
    yield db
    db.dispose()


@pytest.fixture
def directory(database: Database) -> Directory:
    return new_directory(database)
