"""BlobStore: content-addressed put/get, dedup, missing blobs, failed writes, leftovers of crashed ones."""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from postroom.storage import BlobMissingError, BlobStore


@pytest.mark.parametrize("content", [b"", b"hello\r\n", bytes(range(256)) * 4096])
def test_put_then_get_returns_the_same_bytes(tmp_path: Path, content: bytes) -> None:
    store = BlobStore(tmp_path / "blobs")
    blob_id = store.put(content)
    assert blob_id == hashlib.sha256(content).hexdigest()
    assert store.get(blob_id) == content
    assert store.path(blob_id) == tmp_path / "blobs" / blob_id[:2] / blob_id[2:]


def test_same_content_is_stored_once(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    first = store.put(b"same body")
    second = store.put(b"same body")
    other = store.put(b"other body")
    assert first == second != other
    files = sorted(p for p in (tmp_path / "blobs").rglob("*") if p.is_file())
    assert files == sorted([store.path(first), store.path(other)])  # no temporary files left


def test_a_blob_survives_a_new_store_on_the_same_directory(tmp_path: Path) -> None:
    blob_id = BlobStore(tmp_path).put(b"durable")
    assert BlobStore(tmp_path).get(blob_id) == b"durable"


@pytest.mark.parametrize("blob_id", [hashlib.sha256(b"never stored").hexdigest(), "00" * 32])
def test_missing_blob_raises(tmp_path: Path, blob_id: str) -> None:
    store = BlobStore(tmp_path)
    store.put(b"something else")
    with pytest.raises(BlobMissingError, match=blob_id):
        store.get(blob_id)


_PUT_UNDER_A_FILE_SIZE_LIMIT = """
import resource, sys
from pathlib import Path
from postroom.storage import BlobStore
store = BlobStore(Path(sys.argv[1]))
store.put(b"small")  # under the limit: stored
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
try:
    store.put(b"x" * 100_000)
except OSError as error:
    print(error.errno)
"""


def test_a_failed_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    # A real write failure: a child process whose file size limit (RLIMIT_FSIZE) stops the write
    # halfway, after the temporary file was created (the same path as a full disk's ENOSPC).
    root = tmp_path / "blobs"
    child = subprocess.run(
        [sys.executable, "-c", _PUT_UNDER_A_FILE_SIZE_LIMIT, str(root)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert child.stdout.split() == [str(errno.EFBIG)], child.stderr
    small = BlobStore(root).path(hashlib.sha256(b"small").hexdigest())
    left = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    assert left == [small.relative_to(root)]


def test_remove_leftovers_removes_only_stale_temporary_files(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    kept = store.put(b"a real blob")
    shard = store.path(kept).parent
    stale = shard / f".{kept[2:]}.4242.1.tmp"
    stale.write_bytes(b"half a mess")
    long_ago = time.time() - 2 * 3600
    os.utime(stale, (long_ago, long_ago))
    fresh = shard / ".0123.4243.1.tmp"  # another process may be writing it right now
    fresh.write_bytes(b"in progress")
    assert store.remove_leftovers() == 1
    assert not stale.exists()
    assert fresh.exists()
    assert store.get(kept) == b"a real blob"
