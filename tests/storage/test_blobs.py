"""The blob store contract, run against every store (files; the database on SQLite and on
PostgreSQL): put/get, dedupe, put_file, missing blobs, large streamed blobs, the sweep's grace; then
what only the files store has (failed writes, leftovers of crashed ones)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import func, select

from postroom.storage import (
    BlobMissingError,
    BlobStore,
    Database,
    DatabaseBlobStore,
    FileBlobStore,
    open_blob_store,
)
from postroom.storage.blobs import CHUNK_OCTETS
from postroom.storage.schema import blob_chunks, blobs
from tests.support.postgres import fresh_database

LARGE = bytes(range(251)) * (3 * CHUNK_OCTETS // 251 + 17)  # three chunks and a short fourth


@contextmanager
def migrated(kind: str, tmp_path: Path) -> Iterator[Database]:
    """A migrated database: SQLite in `tmp_path`, or a fresh PostgreSQL database."""
    with contextlib.ExitStack() as stack:
        if kind == "postgresql":
            url = stack.enter_context(fresh_database())
        else:
            url = f"sqlite:///{tmp_path / 'postroom.db'}"
        database = Database(url)
        stack.callback(database.dispose)
        database.migrate()
        yield database


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    with migrated(request.param, tmp_path) as database:
        yield database


@pytest.fixture(params=["files", "database-sqlite", "database-postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    """A fresh store of each kind: files, and the database's on SQLite and on PostgreSQL."""
    if request.param == "files":
        yield FileBlobStore(tmp_path / "blobs")
        return
    with migrated(request.param.removeprefix("database-"), tmp_path) as database:
        yield DatabaseBlobStore(database)


def stored_ids(store: BlobStore) -> set[str]:
    return {blob_id for batch in store.stored_before(time.time() + 60) for blob_id in batch}


def spooled(tmp_path: Path, content: bytes) -> tuple[Path, str]:
    """A message file as the SMTP listener spools it, and the SHA-256 it computed on the way."""
    tmp_path.joinpath("incoming").mkdir(exist_ok=True)
    path = tmp_path / "incoming" / f"{len(list(tmp_path.joinpath('incoming').iterdir()))}.msg"
    path.write_bytes(content)
    return path, hashlib.sha256(content).hexdigest()


@pytest.mark.parametrize("content", [b"", b"hello\r\n", bytes(range(256)) * 4096, LARGE], ids=len)
def test_put_then_get_returns_the_same_bytes(store: BlobStore, content: bytes) -> None:
    blob_id = store.put(content)
    assert blob_id == hashlib.sha256(content).hexdigest()
    assert store.get(blob_id) == content
    assert store.head(blob_id, 10) == content[:10]
    assert store.head(blob_id, CHUNK_OCTETS + 5) == content[: CHUNK_OCTETS + 5]


def test_same_content_is_stored_once(store: BlobStore) -> None:
    first = store.put(b"same body")
    second = store.put(b"same body")
    other = store.put(b"other body")
    assert first == second != other
    assert stored_ids(store) == {first, other}


def test_put_file_stores_the_spooled_file_and_removes_it(store: BlobStore, tmp_path: Path) -> None:
    path, sha256 = spooled(tmp_path, LARGE)
    assert store.put_file(path, sha256) == sha256
    assert not path.exists()
    again, _ = spooled(tmp_path, LARGE)  # the same message received twice: stored once
    assert store.put_file(again, sha256) == sha256
    assert not again.exists()
    assert store.get(sha256) == LARGE
    assert stored_ids(store) == {sha256}


@pytest.mark.parametrize("blob_id", [hashlib.sha256(b"never stored").hexdigest(), "00" * 32])
def test_missing_blob_raises(store: BlobStore, blob_id: str) -> None:
    store.put(b"something else")
    with pytest.raises(BlobMissingError, match=blob_id):
        store.get(blob_id)
    with pytest.raises(BlobMissingError, match=blob_id):
        store.head(blob_id, 100)


def test_get_many_and_head_many_read_many_blobs_and_leave_out_the_missing(store: BlobStore) -> None:
    contents = [b"", b"one\r\n", bytes(range(256)) * 40, LARGE, *(b"message %d\r\n" % n for n in range(450))]
    ids = [store.put(content) for content in contents]
    missing = hashlib.sha256(b"never stored").hexdigest()
    asked = [missing, *reversed(ids), ids[1]]  # more than one query's batch, a repeat, a missing one
    assert store.get_many(asked) == dict(zip(ids, contents, strict=True))
    heads = store.head_many(asked, 5)
    assert heads == {blob_id: content[:5] for blob_id, content in zip(ids, contents, strict=True)}
    assert store.head_many([ids[3]], CHUNK_OCTETS + 3) == {ids[3]: LARGE[: CHUNK_OCTETS + 3]}
    assert store.get_many([]) == {} and store.get_many([missing]) == {}


def test_the_tiered_store_reads_many_from_files_and_rows(database: Database, tmp_path: Path) -> None:
    store = open_blob_store("files", tmp_path / "blobs", database, inline_limit=1024)
    with database.write() as conn:
        rows = [store.put_in(conn, b"small %d" % n) for n in range(300)]
    large = store.put(LARGE)
    missing = "ab" * 32
    found = store.get_many([large, *rows, missing])
    assert found == {large: LARGE, **{blob_id: b"small %d" % n for n, blob_id in enumerate(rows)}}
    assert store.head_many([rows[7], large, missing], 4) == {rows[7]: b"smal", large: LARGE[:4]}


def test_discard_unused_spares_a_blob_stored_again_since(store: BlobStore) -> None:
    old = store.put(b"nobody points at me")
    reused = store.put(b"a new message has these bytes too")
    cutoff = time.time()
    time.sleep(0.01)  # the mtime / stored_at of the put below must be past `cutoff`
    assert store.put(b"a new message has these bytes too") == reused
    assert store.discard_unused([old, reused, "ab" * 32], stored_before=cutoff) == 1
    with pytest.raises(BlobMissingError):
        store.get(old)
    assert store.get(reused) == b"a new message has these bytes too"
    assert store.put(b"nobody points at me") == old  # stored anew after its removal
    assert store.get(old) == b"nobody points at me"


def test_a_database_blob_is_read_by_another_node(database: Database) -> None:
    blob_id = open_blob_store("database", Path("/nonexistent"), database).put(LARGE)
    other_node = Database(database.url)
    try:
        assert open_blob_store("database", Path("/nonexistent"), other_node).get(blob_id) == LARGE
    finally:
        other_node.dispose()
    with database.read() as conn:  # chunked: no row holds more than CHUNK_OCTETS
        sizes = conn.execute(select(func.length(blob_chunks.c.data)).order_by(blob_chunks.c.seq)).scalars()
        assert list(sizes) == [CHUNK_OCTETS] * 3 + [len(LARGE) - 3 * CHUNK_OCTETS]


def test_concurrent_puts_of_the_same_content_store_it_once(database: Database) -> None:
    store = DatabaseBlobStore(database)
    content = b"one message, several nodes\r\n" * 40_000
    results: list[str] = []
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def put() -> None:
        start.wait()
        try:
            results.append(store.put(content))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=put) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert results == [hashlib.sha256(content).hexdigest()] * 6
    with database.read() as conn:
        assert conn.execute(select(func.count()).select_from(blobs)).scalar_one() == 1
    assert store.get(results[0]) == content


def test_a_spooled_file_that_does_not_match_its_id_is_refused(database: Database, tmp_path: Path) -> None:
    store = DatabaseBlobStore(database)
    path, _ = spooled(tmp_path, LARGE)
    claimed = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(ValueError, match="does not hash"):
        store.put_file(path, claimed)
    assert path.exists()  # nothing was stored, the caller still has its file
    assert stored_ids(store) == set()
    with database.read() as conn:
        assert conn.execute(select(func.count()).select_from(blob_chunks)).scalar_one() == 0


def test_a_file_blob_survives_a_new_store_on_the_same_directory(tmp_path: Path) -> None:
    blob_id = FileBlobStore(tmp_path).put(b"durable")
    assert FileBlobStore(tmp_path).get(blob_id) == b"durable"
    assert FileBlobStore(tmp_path).path(blob_id) == tmp_path / blob_id[:2] / blob_id[2:]


_PUT_UNDER_A_FILE_SIZE_LIMIT = """
import resource, sys
from pathlib import Path
from postroom.storage import FileBlobStore
store = FileBlobStore(Path(sys.argv[1]))
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
    small = FileBlobStore(root).path(hashlib.sha256(b"small").hexdigest())
    left = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    assert left == [small.relative_to(root)]


def test_remove_leftovers_removes_only_stale_temporary_files(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
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


# --- small blobs in the commit (`[node] blob_inline_limit`) ------------------------------------------
def test_a_small_blob_is_durable_only_with_the_transaction_that_puts_it(
    database: Database, tmp_path: Path
) -> None:
    store = open_blob_store("files", tmp_path / "blobs", database, inline_limit=1024)
    body = b"a small message body"
    with database.write_engine.connect() as conn:
        transaction = conn.begin()
        blob_id = store.put_in(conn, body)
        transaction.rollback()  # the commit that would have pointed at it never happened
    with pytest.raises(BlobMissingError):
        store.get(blob_id)
    with database.write() as conn:
        assert store.put_in(conn, body) == blob_id == hashlib.sha256(body).hexdigest()
    assert store.get(blob_id) == body and store.head(blob_id, 7) == b"a small"
    assert not list((tmp_path / "blobs").rglob("*")), "no file for a small blob"
    with database.write() as conn:
        store.put_in(conn, body)  # the same content again: stored once
    assert stored_ids(store) == {blob_id}


def test_the_tiered_store_reads_files_and_rows_and_sweeps_both(database: Database, tmp_path: Path) -> None:
    store = open_blob_store("files", tmp_path / "blobs", database, inline_limit=1024)
    with database.write() as conn:
        small = store.put_in(conn, b"small")
    large = store.put(LARGE)  # a put is a file, whatever its size
    assert (tmp_path / "blobs" / large[:2] / large[2:]).exists()
    assert store.get(small) == b"small" and store.get(large) == LARGE
    assert stored_ids(store) == {small, large}
    assert store.discard_unused([small, large], stored_before=time.time() + 60) == 2
    for blob_id in (small, large):
        with pytest.raises(BlobMissingError):
            store.get(blob_id)


def test_over_the_inline_limit_is_refused_in_a_transaction(database: Database, tmp_path: Path) -> None:
    store = open_blob_store("database", tmp_path / "blobs", database, inline_limit=4)
    with database.write() as conn, pytest.raises(ValueError, match="inline limit"):
        store.put_in(conn, b"too long")
    assert open_blob_store("files", tmp_path / "blobs", database).inline_limit == 0
