"""The blob sweep (`postroom blobs sweep`): the blobs no message points at go, on either store; a
blob a delivered message points at stays, and so does one stored within the grace period."""

from __future__ import annotations

import os
import smtplib
import time
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import select, update

from postroom.app import App, BlobSweep, sweep_blobs
from postroom.storage import BlobMissingError, FileBlobStore
from postroom.storage.schema import blobs, messages
from tests.cli.test_commands import postroom
from tests.conftest import populate, wait_for
from tests.support.node import make_node, running
from tests.support.records import exported, stored_messages

MESSAGE = b"From: dan@partner.example\r\nTo: alice@contoso.com\r\nSubject: kept\r\n\r\nhello\r\n"


def delivered(app: App) -> str:
    """Receive MESSAGE for alice through the MX endpoint; the blob id her stored message points at."""
    with running(app.settings) as node, smtplib.SMTP(*node.mx) as client:
        assert client.sendmail("dan@partner.example", ["alice@contoso.com"], MESSAGE) == {}
        wait_for(lambda: len(stored_messages(app.directory, app.mailstore, "alice@contoso.com")) == 1)
    with app.database.read() as conn:
        blob_id: str = conn.execute(select(messages.c.blob_id)).scalar_one()
    return blob_id


@pytest.mark.parametrize("kind", ["files", "database"])
def test_the_sweep_removes_only_old_blobs_no_message_points_at(tmp_path: Path, kind: str) -> None:
    app = App.open(replace(make_node(tmp_path / "node"), blob_store=kind))
    try:
        populate(app)
        kept = delivered(app)
        orphan = app.blobs.put(b"a body whose message never committed")
        cutoff = time.time()
        time.sleep(0.01)  # past the file system's clock tick: the put below is after `cutoff`
        recent = app.blobs.put(b"a body whose commit is on its way")

        later = lambda: cutoff + 3600  # noqa: E731 - the sweep an hour after `cutoff`
        counted = sweep_blobs(app.database, app.blobs, apply=False, clock=later)
        assert counted == BlobSweep(examined=2, unused=1, removed=0)
        assert app.blobs.get(orphan)  # a dry run removes nothing

        assert sweep_blobs(app.database, app.blobs, apply=True, clock=later) == BlobSweep(2, 1, 1)
        with pytest.raises(BlobMissingError):
            app.blobs.get(orphan)
        assert app.blobs.get(recent) == b"a body whose commit is on its way"
        assert app.blobs.get(kept) == MESSAGE
        [stored] = stored_messages(app.directory, app.mailstore, "alice@contoso.com")
        assert exported(app.directory, app.mailstore, "alice@contoso.com", stored.uid).endswith(MESSAGE)
    finally:
        app.close()


def test_postroom_blobs_sweep_asks_then_removes(tmp_path: Path) -> None:
    settings = make_node(tmp_path / "node")
    app = App.open(settings)
    try:
        populate(app)
        kept = delivered(app)  # a small message: its body is rows of the database (inline)
        store = FileBlobStore(settings.blob_dir)
        orphan = store.put(b"the body of a message delivered to a remote MX long ago")
        long_ago = time.time() - 2 * 3600
        os.utime(store.path(orphan), (long_ago, long_ago))
        with app.database.write() as conn:
            aged = conn.execute(update(blobs).where(blobs.c.id == kept).values(stored_at=long_ago))
            assert aged.rowcount == 1
    finally:
        app.close()

    asked = postroom("blobs", "sweep", config=settings.source)
    assert asked.returncode == 0, asked.stderr
    assert "1 of 2 blob(s)" in asked.stdout and "--yes" in asked.stdout
    assert store.path(orphan).exists()

    swept = postroom("blobs", "sweep", "--yes", config=settings.source)
    assert swept.returncode == 0, swept.stderr
    assert "removed 1" in swept.stdout
    assert not store.path(orphan).exists()
    app = App.open(settings)
    try:
        assert app.blobs.get(kept) == MESSAGE
    finally:
        app.close()


def test_a_small_body_is_committed_with_its_message_and_a_large_one_is_a_file(tmp_path: Path) -> None:
    settings = replace(make_node(tmp_path / "node"), blob_inline_limit=1024)
    app = App.open(settings)
    large = MESSAGE + b"x" * 2000 + b"\r\n"
    try:
        populate(app)
        with running(app.settings) as node, smtplib.SMTP(*node.mx) as client:
            assert client.sendmail("dan@partner.example", ["alice@contoso.com"], MESSAGE) == {}
            assert client.sendmail("dan@partner.example", ["alice@contoso.com"], large) == {}
            wait_for(lambda: len(stored_messages(app.directory, app.mailstore, "alice@contoso.com")) == 2)
        with app.database.read() as conn:
            in_rows = set(conn.execute(select(blobs.c.id)).scalars())
            pointed_at = list(conn.execute(select(messages.c.blob_id).order_by(messages.c.id)).scalars())
        files = {path.parent.name + path.name for path in settings.blob_dir.rglob("*") if path.is_file()}
        small_id, large_id = pointed_at
        assert in_rows == {small_id} and files == {large_id}
        first, second = stored_messages(app.directory, app.mailstore, "alice@contoso.com")
        assert exported(app.directory, app.mailstore, "alice@contoso.com", first.uid).endswith(MESSAGE)
        assert exported(app.directory, app.mailstore, "alice@contoso.com", second.uid).endswith(large)
    finally:
        app.close()
