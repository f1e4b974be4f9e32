"""A quarantined message's body outlives the sweep while it is held and goes after it is deleted or its
tenant removed; a serving node purges expired quarantine by itself."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import select

from postroom.app import App, remove_tenant, sweep_blobs
from postroom.model.scope import OPERATOR
from postroom.storage import BlobMissingError
from postroom.storage.schema import quarantine
from tests.conftest import wait_for
from tests.support.node import make_node, running
from tests.support.quarantine import SPAM, held
from tests.support.records import populate

DAY = 86_400.0


def later() -> float:
    """Two hours from now: past the sweep's grace for everything stored so far."""
    return time.time() + 7200


def blob_of(app: App, quarantine_id: int) -> str:
    with app.database.read() as conn:
        found: str = conn.execute(
            select(quarantine.c.blob_id).where(quarantine.c.id == quarantine_id)
        ).scalar_one()
    return found


@pytest.mark.parametrize("kind", ["files", "database"])
async def test_the_sweep_keeps_a_held_blob_and_frees_it_once_deleted(tmp_path: Path, kind: str) -> None:
    app = App.open(replace(make_node(tmp_path / "node"), blob_store=kind))
    try:
        org = populate(app.directory)
        deleted = held(app.database, app.blobs, org.contoso, [("alice@contoso.com", org.alice)])
        released = held(
            app.database, app.blobs, org.contoso, [("bob@contoso.com", org.bob)], content=SPAM + b"bob\r\n"
        )
        assert sweep_blobs(app.database, app.blobs, apply=True, clock=later).removed == 0
        assert app.blobs.get(blob_of(app, deleted)) == SPAM

        gone = blob_of(app, deleted)
        kept = blob_of(app, released)
        await app.quarantine.release(OPERATOR, released)
        app.quarantine.delete(OPERATOR, deleted)
        app.quarantine.delete(OPERATOR, released)  # its copy in Bob's Inbox keeps the blob
        assert sweep_blobs(app.database, app.blobs, apply=True, clock=later).removed == 1
        with pytest.raises(BlobMissingError):
            app.blobs.get(gone)
        assert app.blobs.get(kept) == SPAM + b"bob\r\n"
    finally:
        app.close()


def test_removing_a_tenant_frees_the_blobs_only_its_quarantine_used(tmp_path: Path) -> None:
    app = App.open(make_node(tmp_path / "node"))
    try:
        org = populate(app.directory)
        own = held(
            app.database, app.blobs, org.contoso, [("alice@contoso.com", org.alice)], content=SPAM + b"1"
        )
        shared = held(app.database, app.blobs, org.contoso, [("bob@contoso.com", org.bob)])
        other = held(app.database, app.blobs, org.fabrikam, [("carol@fabrikam.com", org.carol)])
        own_blob, shared_blob = blob_of(app, own), blob_of(app, shared)
        assert shared_blob == blob_of(app, other)  # the same bytes held for fabrikam too
        removal = remove_tenant(app.database, app.blobs, app.directory, OPERATOR, "contoso", apply=True)
        assert (removal.quarantined, removal.blobs) == (2, 1)
        with pytest.raises(BlobMissingError):
            app.blobs.get(own_blob)
        assert app.blobs.get(shared_blob) == SPAM
        assert [m.id for m in app.quarantine.list_messages(OPERATOR)] == [other]
    finally:
        app.close()


def test_a_serving_node_purges_expired_quarantine(tmp_path: Path) -> None:
    settings = make_node(tmp_path / "node")
    settings = replace(settings, protection=replace(settings.protection, quarantine_purge_interval=0.2))
    app = App.open(settings)
    try:
        org = populate(app.directory)
        now = time.time()
        expired = held(
            app.database,
            app.blobs,
            org.contoso,
            [("alice@contoso.com", org.alice)],
            at=now - 2 * DAY,
            retention_days=1,
        )
        kept = held(app.database, app.blobs, org.contoso, [("bob@contoso.com", org.bob)], at=now - 2 * DAY)
        with running(settings):
            wait_for(lambda: [m.id for m in app.quarantine.list_messages(OPERATOR)] == [kept])
        assert expired != kept
    finally:
        app.close()
