"""The commit path syncs: a real commit, traced by strace, flushes the WAL and the blob to disk.

The kill -9 test cannot see a missing fsync (the page cache outlives the process). So a child
process makes one real commit the way the MX endpoint does (`BlobStore.put`, then a job through the
`GroupCommitter`) under `strace -f -y`, between two marker syscalls, and the test reads which files
were fsynced or fdatasynced before `run()` returned: the SQLite WAL (`synchronous=FULL`; with NORMAL
a WAL commit is not synced), the blob's file, its shard directory (the rename) and the store's root
(the new shard). strace comes from Debian (`.ci/run` installs it); without it the test is skipped,
and fails on CI.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

_ONE_COMMIT = """
import asyncio, os, sys
from pathlib import Path
from sqlalchemy import insert
from postroom.storage import BlobStore, Database, FileBlobStore, GroupCommitter
from postroom.storage.schema import tenants

root = Path(sys.argv[1])
database = Database(f"sqlite:///{root / 'postroom.db'}")
database.migrate()
blobs = FileBlobStore(root / "blobs")
committer = GroupCommitter(database)
committer.start()

async def receive() -> None:
    blob_id = blobs.put(b"Subject: synced\\r\\n\\r\\nbody\\r\\n")
    await committer.run(lambda conn: conn.execute(insert(tenants).values(name=blob_id[:20], created_at=1.0)))

os.access("/postroom-mark-begin", os.F_OK)
asyncio.run(receive())
os.access("/postroom-mark-end", os.F_OK)
committer.stop()
database.dispose()
"""

_SYNC = re.compile(r"\b(?:fsync|fdatasync)\(\d+<(?P<path>[^>]*)>\)\s*=\s*0")


def _synced_during_the_commit(tmp_path: Path) -> list[str]:
    """The paths synced between the markers, in order."""
    if shutil.which("strace") is None:
        if os.environ.get("CI"):
            pytest.fail("strace is missing (CI is set: .ci/run installs it)", pytrace=False)
        pytest.skip("strace is not installed")
    log = tmp_path / "strace.log"
    trace = [
        "strace",
        "-f",
        "-y",
        "-qq",
        "-o",
        str(log),
        "-e",
        "trace=fsync,fdatasync,access,faccessat,faccessat2",
    ]
    subprocess.run(
        [*trace, sys.executable, "-c", _ONE_COMMIT, str(tmp_path)],
        check=True,
        timeout=120,
    )
    text = log.read_text()
    begin, end = text.index("/postroom-mark-begin"), text.index("/postroom-mark-end")
    return [match["path"] for match in _SYNC.finditer(text[begin:end])]


def test_a_commit_syncs_the_wal_and_the_blob_before_it_returns(tmp_path: Path) -> None:
    synced = _synced_during_the_commit(tmp_path)
    blobs = tmp_path / "blobs"
    (shard,) = (path for path in blobs.iterdir() if path.is_dir())
    assert any(
        re.fullmatch(rf"{re.escape(str(shard))}/\.[0-9a-f]{{62}}\..+\.tmp", path) for path in synced
    ), f"the blob's content was not fsynced: {synced}"
    assert str(shard) in synced, f"the blob's directory (its rename) was not fsynced: {synced}"
    assert str(blobs) in synced, f"the store's root (the new shard) was not fsynced: {synced}"
    assert str(tmp_path / "postroom.db-wal") in synced, f"the commit did not sync the WAL: {synced}"
    blob_syncs = [i for i, path in enumerate(synced) if path.startswith(str(blobs))]
    wal_syncs = [i for i, path in enumerate(synced) if path.endswith("-wal")]
    assert max(blob_syncs) < min(wal_syncs), "the blob is on disk before the rows that point at it"
