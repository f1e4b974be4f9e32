"""The blob store: message content, content-addressed and immutable, in files or in the database.

A blob's id is the SHA-256 of its bytes. `BlobStore` is the one interface every caller uses; two
stores implement it (`[node] blob_store`, built by `open_blob_store`):

- `FileBlobStore` ("files", the default): `<root>/<id[:2]>/<id[2:]>` under `[node] blob_dir`. `put`
  writes a temporary file, fsyncs it, renames it into place and fsyncs the directory. Nodes that share
  one database must share the directory (a mount every node sees).
- `DatabaseBlobStore` ("database"): a `blobs` row and its `blob_chunks` rows (at most
  `CHUNK_OCTETS` each), written in one transaction of their own, so nodes that share PostgreSQL and
  nothing else read every blob. Written by hand over the schema's two tables: no library stores
  chunked content-addressed values in SQLAlchemy, and large objects (`lo_*`) are PostgreSQL only,
  outside `pg_dump`'s default and never removed with their row.

Small blobs ride in the commit that points at them (`[node] blob_inline_limit`, `open_blob_store`):
content of at most `inline_limit` octets that a caller has in memory is written with `put_in`, as
`blobs`/`blob_chunks` rows inside the caller's own transaction (the MX's group commit), so one durable
write holds both the message and its spool rows. With the files store this is `TieredBlobStore`: the
small ones in the database, the rest in files; a read looks in the files first (a missing file costs
one failed open), then in the database. Measured (bench/README.md, "Where the time goes"): a file per
message cost two fsyncs and a thread hand-off each, a third of a process's CPU at 4 KB; in the group
commit, a 4 KB row adds nothing a batch does not already pay.

Guarantees, both stores. A blob id handed out names bytes that are durable (the file is fsynced; the
database transaction is committed, with `synchronous_commit = on` on PostgreSQL). A blob is written
before, and apart from, the database rows that point at it: a crash between the two leaves an
unreferenced blob, which wastes space until the sweep and loses nothing. Writing the same content
twice stores it once; the second put marks it stored again (the file's mtime, the row's
`stored_at`), which is what keeps the sweep (`discard_unused`) off a blob a message is just being
committed with. `put_file` takes a file the caller wrote while receiving (with the id it computed):
the files store fsyncs and renames it into place; the database store streams it in chunks, never
reading it whole, and checks its SHA-256 on the way. Either way the caller's file is gone afterwards.
`get` returns the whole content; `head` at most its first octets without reading the rest.
`get_many` and `head_many` read many blobs in one call (IMAP FETCH and SEARCH over a folder): the
database store reads `MANY_BATCH` small blobs (at most `MANY_OCTETS`) per query, where a `get` each
cost about 300 µs (one query per blob); a blob missing from the store is left out of the result.

Failure. A `put` that fails (ENOSPC, EIO, the database refusing) leaves nothing behind and raises.
A crash mid-`put` leaves, in the files store, a `.<id>.<pid>.<thread>.tmp` file that
`remove_leftovers` (run when a node starts serving) deletes once nobody has written to it for an
hour; in the database store nothing (the transaction never committed). `get` or `head` of an
unknown id raises `BlobMissingError` (a corrupt store, reported, never guessed).

Garbage: a blob that no stored or spooled message points at any more is removed by
`discard_unused`, which the caller (tenant removal, `postroom blobs sweep`) runs with the ids it
found unreferenced after its own commit; a blob put after `stored_before` is kept whatever the
caller found, because a message may be on its way to commit with it (`app.blob_sweep`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from postroom.storage.database import Database
from postroom.storage.prepared import PreparedInsert
from postroom.storage.schema import blob_chunks, blobs

LEFTOVER_SECONDS = 3600.0  # a temporary file untouched this long belongs to a write that died
CHUNK_OCTETS = 1_048_576  # content per database row: one chunk for most messages, 30 for a 30 MiB one
LIST_BATCH = 500  # ids per batch of `stored_before`, by default
_DISCARD_BATCH = 500  # ids per DELETE
_CHUNKS_PER_READ = 4  # chunks fetched by one query of `get`
_PUT_ATTEMPTS = 3  # a database put that lost a race with the same content (or the sweep) is retried
MANY_BATCH = 200  # blob ids per query of `get_many` / `head_many` in the database
MANY_OCTETS = 262_144  # a database blob up to this size (one chunk) is read in a batch; a larger alone


class BlobMissingError(LookupError):
    """A blob id that the store does not hold."""


class BlobStore(Protocol):
    """Content-addressed, immutable message content (see the module docstring for the guarantees)."""

    @property
    def location(self) -> str:
        """Where the blobs are, for the operator's log lines."""
        ...

    @property
    def inline_limit(self) -> int:
        """The largest content `put_in` takes (0: none; every put is its own durable write)."""
        ...

    def put(self, content: bytes) -> str:
        """Store `content` durably; returns its id (its SHA-256, hex)."""
        ...

    def put_in(self, conn: Connection, content: bytes, blob_id: str | None = None) -> str:
        """Store `content` (at most `inline_limit` octets) in the caller's open transaction: durable
        when, and only if, the caller's transaction commits. Returns its id; a caller that hashed the
        content already (the MX, on its event loop) passes it as `blob_id`, which is trusted."""
        ...

    def put_file(self, path: Path, blob_id: str) -> str:
        """Store the file at `path`, whose SHA-256 is `blob_id`, and remove the file."""
        ...

    def get(self, blob_id: str) -> bytes:
        """The whole content; `BlobMissingError` if the store does not hold it."""
        ...

    def head(self, blob_id: str, limit: int) -> bytes:
        """At most the first `limit` octets, without reading the rest; `BlobMissingError` if missing."""
        ...

    def get_many(self, blob_ids: Sequence[str]) -> dict[str, bytes]:
        """The whole content of each of these blobs that the store holds (missing ones left out)."""
        ...

    def head_many(self, blob_ids: Sequence[str], limit: int) -> dict[str, bytes]:
        """At most the first `limit` octets of each of these blobs that the store holds."""
        ...

    def stored_before(self, cutoff: float, *, batch: int = LIST_BATCH) -> Iterator[list[str]]:
        """The ids of blobs last stored before `cutoff` (a UNIX time), about `batch` at a time."""
        ...

    def discard_unused(self, blob_ids: Iterable[str], *, stored_before: float) -> int:
        """Delete these blobs, which the caller found no row points at after its commit, except those
        stored again since `stored_before`; gone already is fine. Returns how many were deleted."""
        ...

    def remove_leftovers(self, *, older_than: float = LEFTOVER_SECONDS) -> int:
        """Remove what writes that never finished left behind; returns how many."""
        ...


def open_blob_store(kind: str, root: Path, database: Database, *, inline_limit: int = 0) -> BlobStore:
    """The store `[node] blob_store` names: "files" under `root`, or "database" in `database`; with
    `inline_limit` (`[node] blob_inline_limit`), content up to that size may be put in the caller's
    transaction (in the database either way)."""
    if kind == "database":
        return DatabaseBlobStore(database, inline_limit=inline_limit)
    files = FileBlobStore(root)
    if inline_limit <= 0:
        return files
    return TieredBlobStore(files, DatabaseBlobStore(database, inline_limit=inline_limit))


class FileBlobStore:
    """Content-addressed files under one directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._root = str(root)

    @property
    def location(self) -> str:
        return self._root

    @property
    def inline_limit(self) -> int:
        return 0

    def put_in(self, conn: Connection, content: bytes, blob_id: str | None = None) -> str:
        raise TypeError("the files store takes no content inside a transaction (its inline_limit is 0)")

    def path(self, blob_id: str) -> Path:
        return self.root / blob_id[:2] / blob_id[2:]

    def put(self, content: bytes) -> str:
        blob_id = hashlib.sha256(content).hexdigest()
        # Plain os calls: this runs for every message received.
        shard, target = self._place(blob_id)
        if _stored_again(target):
            return blob_id
        created = _make_shard(shard)
        temporary = os.path.join(shard, f".{blob_id[2:]}.{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            try:
                view = memoryview(content)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)  # a failed write leaves nothing behind
            raise
        self._sync_placed(shard, created)
        return blob_id

    def put_file(self, path: Path, blob_id: str) -> str:
        """Move the file at `path` into the store (the same file system: a rename)."""
        shard, target = self._place(blob_id)
        if _stored_again(target):
            os.unlink(path)
            return blob_id
        created = _make_shard(shard)
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(path, target)
        self._sync_placed(shard, created)
        return blob_id

    def _place(self, blob_id: str) -> tuple[str, str]:
        """The shard directory of `blob_id` and the path of its file."""
        shard = os.path.join(self._root, blob_id[:2])
        return shard, os.path.join(shard, blob_id[2:])

    def _sync_placed(self, shard: str, created: bool) -> None:
        """Make a rename into `shard` durable: its entry, and the shard's own when it was just made."""
        _fsync_directory(shard)
        if created:
            _fsync_directory(self._root)

    def remove_leftovers(self, *, older_than: float = LEFTOVER_SECONDS) -> int:
        """Remove temporary files of writes that never finished (a crash mid-`put`).

        Only files not written to for `older_than` seconds: another process (a second node on a shared
        store) may be writing one right now."""
        removed = 0
        cutoff = time.time() - older_than
        for temporary in self.root.glob("??/.*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                if temporary.stat().st_mtime < cutoff:
                    temporary.unlink()
                    removed += 1
        return removed

    def get(self, blob_id: str) -> bytes:
        try:
            return self.path(blob_id).read_bytes()
        except FileNotFoundError:
            raise BlobMissingError(f"blob {blob_id} is missing from {self.root}") from None

    def head(self, blob_id: str, limit: int) -> bytes:
        try:
            with self.path(blob_id).open("rb") as blob:
                return blob.read(limit)
        except FileNotFoundError:
            raise BlobMissingError(f"blob {blob_id} is missing from {self.root}") from None

    def get_many(self, blob_ids: Sequence[str]) -> dict[str, bytes]:
        return _each(self.get, blob_ids)

    def head_many(self, blob_ids: Sequence[str], limit: int) -> dict[str, bytes]:
        return _each(lambda blob_id: self.head(blob_id, limit), blob_ids)

    def stored_before(self, cutoff: float, *, batch: int = LIST_BATCH) -> Iterator[list[str]]:
        found: list[str] = []
        for shard in sorted(self.root.glob("??")):
            with os.scandir(shard) as entries:
                for entry in entries:
                    if entry.name.startswith("."):
                        continue  # a write in progress, or its leftover
                    with contextlib.suppress(FileNotFoundError):
                        if entry.stat().st_mtime < cutoff:
                            found.append(shard.name + entry.name)
            if len(found) >= batch:
                yield found
                found = []
        if found:
            yield found

    def discard_unused(self, blob_ids: Iterable[str], *, stored_before: float) -> int:
        # The file is first renamed aside: a put that stores the same content after the rename writes
        # a new file; one that came before it touched the mtime, and the file is put back.
        removed = 0
        for blob_id in blob_ids:
            shard, target = self._place(blob_id)
            aside = os.path.join(shard, f".{blob_id[2:]}.{os.getpid()}.{threading.get_ident()}.discard.tmp")
            try:
                os.rename(target, aside)
            except FileNotFoundError:
                continue
            if os.stat(aside).st_mtime >= stored_before:
                os.replace(aside, target)  # identical content if a put placed it meanwhile
                continue
            os.unlink(aside)
            removed += 1
        return removed


def _stored_again(target: str) -> bool:
    """True when `target` holds the content already; its mtime is then now (see `discard_unused`)."""
    try:
        os.utime(target)
    except FileNotFoundError:
        return False
    return True


def _make_shard(shard: str) -> bool:
    """Make the shard directory if it is missing; True when this call made it."""
    if os.path.isdir(shard):
        return False
    os.makedirs(shard, exist_ok=True)
    return True


def _fsync_directory(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DatabaseBlobStore:
    """Content-addressed blobs in the database, in chunks of at most `CHUNK_OCTETS`.

    A put is its own transaction on a pooled connection, never the group committer's: a 1 MiB
    insert in the writer's batch would hold every other session's commit behind it. On PostgreSQL it
    runs READ COMMITTED (the read engine): two nodes putting the same content meet on the `blobs`
    primary key, the second waits for the first, gets a unique violation once it commits, and
    returns the id. On SQLite it takes the write lock (`BEGIN IMMEDIATE`), like every writer there.
    """

    def __init__(self, database: Database, *, inline_limit: int = 0) -> None:
        self._database = database
        self._engine = database.write_engine if database.is_sqlite else database.read_engine
        self._inline_limit = inline_limit

    @property
    def location(self) -> str:
        return "the database"

    @property
    def inline_limit(self) -> int:
        return self._inline_limit

    def put_in(self, conn: Connection, content: bytes, blob_id: str | None = None) -> str:
        if len(content) > self._inline_limit:
            raise ValueError(f"{len(content)} octets is over the inline limit of {self._inline_limit}")
        blob_id = blob_id or hashlib.sha256(content).hexdigest()
        # Prepared upserts (`storage.prepared`): this runs in the writer for every small message, where
        # SQLAlchemy's execution layer cost 40% of the writer's time. The same content again only
        # marks the blob stored again (and rewrites its one chunk with the same octets).
        _BLOB_ROW.run(conn, [{"id": blob_id, "size": len(content), "stored_at": time.time()}])
        _CHUNK_ROW.run(conn, [{"blob_id": blob_id, "seq": 0, "data": content}])
        return blob_id

    def put(self, content: bytes) -> str:
        blob_id = hashlib.sha256(content).hexdigest()
        view = memoryview(content)

        def chunks() -> Iterator[memoryview]:
            # At least one chunk, empty for empty content: a blob always has a row in blob_chunks.
            for start in range(0, max(len(view), 1), CHUNK_OCTETS):
                yield view[start : start + CHUNK_OCTETS]

        return self._store(blob_id, len(content), chunks)

    def put_file(self, path: Path, blob_id: str) -> str:
        with path.open("rb") as spooled:
            size = os.fstat(spooled.fileno()).st_size

            def chunks() -> Iterator[bytes]:
                spooled.seek(0)
                digest = hashlib.sha256()
                while True:
                    chunk = spooled.read(CHUNK_OCTETS)
                    digest.update(chunk)
                    yield chunk
                    if len(chunk) < CHUNK_OCTETS:
                        break
                if digest.hexdigest() != blob_id:
                    # Raised inside the transaction: nothing of the file is committed.
                    raise ValueError(f"{path} does not hash to the blob id {blob_id} it was given")

            self._store(blob_id, size, chunks)
        path.unlink()
        return blob_id

    def _store(self, blob_id: str, size: int, chunks: _Chunks) -> str:
        for attempt in range(1, _PUT_ATTEMPTS + 1):
            with self._engine.connect() as conn:
                try:
                    with conn.begin():
                        _write_rows(conn, blob_id, size, chunks)
                    return blob_id
                except IntegrityError:
                    # Another process stored the same content between our UPDATE and INSERT (its
                    # transaction committed while ours waited on the key): look again.
                    if attempt == _PUT_ATTEMPTS:
                        raise
        raise AssertionError("unreachable")  # pragma: no cover

    def get(self, blob_id: str) -> bytes:
        content = bytearray()
        found = False
        with self._database.read() as conn:
            for data in _chunks(conn, blob_id):
                found = True
                content += data
        if not found:
            raise BlobMissingError(f"blob {blob_id} is missing from the database")
        return bytes(content)

    def head(self, blob_id: str, limit: int) -> bytes:
        content = bytearray()
        found = False
        with self._database.read() as conn:
            for data in _chunks(conn, blob_id):
                found = True
                content += data[: limit - len(content)]
                if len(content) >= limit:
                    break
        if not found:
            raise BlobMissingError(f"blob {blob_id} is missing from the database")
        return bytes(content)

    def get_many(self, blob_ids: Sequence[str]) -> dict[str, bytes]:
        return self._many(blob_ids, None)

    def head_many(self, blob_ids: Sequence[str], limit: int) -> dict[str, bytes]:
        return self._many(blob_ids, limit)

    def _many(self, blob_ids: Sequence[str], limit: int | None) -> dict[str, bytes]:
        """Small blobs (one chunk each) `MANY_BATCH` per query; the others, and the missing, one by one."""
        wanted = list(dict.fromkeys(blob_ids))
        found: dict[str, bytes] = {}
        with self._database.read() as conn:
            for start in range(0, len(wanted), MANY_BATCH):
                for blob_id, data in _small_chunks(conn, wanted[start : start + MANY_BATCH]):
                    found[blob_id] = data if limit is None else data[:limit]
        for blob_id in wanted:
            if blob_id not in found:  # larger than MANY_OCTETS, or missing
                with contextlib.suppress(BlobMissingError):
                    found[blob_id] = self.get(blob_id) if limit is None else self.head(blob_id, limit)
        return found

    def stored_before(self, cutoff: float, *, batch: int = LIST_BATCH) -> Iterator[list[str]]:
        after = ""
        while True:
            with self._database.read() as conn:
                found = list(
                    conn.execute(
                        select(blobs.c.id)
                        .where((blobs.c.stored_at < cutoff) & (blobs.c.id > after))
                        .order_by(blobs.c.id)
                        .limit(batch)
                    ).scalars()
                )
            if not found:
                return
            yield found
            after = found[-1]

    def discard_unused(self, blob_ids: Iterable[str], *, stored_before: float) -> int:
        # One statement per batch: a put of the same content updates `stored_at` first (and a put
        # that comes after the delete finds no row and writes the blob anew), so the condition on
        # `stored_at` is checked against the row as the put left it. The chunks go by cascade.
        removed = 0
        ids = list(blob_ids)
        for start in range(0, len(ids), _DISCARD_BATCH):
            with self._engine.connect() as conn, conn.begin():
                removed += conn.execute(
                    delete(blobs).where(
                        blobs.c.id.in_(ids[start : start + _DISCARD_BATCH])
                        & (blobs.c.stored_at < stored_before)
                    )
                ).rowcount
        return removed

    def remove_leftovers(self, *, older_than: float = LEFTOVER_SECONDS) -> int:
        """Nothing to remove: a put that died never committed."""
        return 0


class TieredBlobStore:
    """The files store with its small blobs in the database: `put_in` writes rows in the caller's
    transaction, `put` and `put_file` write files; reads try the files, then the database."""

    def __init__(self, files: FileBlobStore, rows: DatabaseBlobStore) -> None:
        self.files = files
        self.rows = rows

    @property
    def location(self) -> str:
        return f"{self.files.location} (and messages up to {self.rows.inline_limit} octets in the database)"

    @property
    def inline_limit(self) -> int:
        return self.rows.inline_limit

    def put(self, content: bytes) -> str:
        return self.files.put(content)

    def put_in(self, conn: Connection, content: bytes, blob_id: str | None = None) -> str:
        return self.rows.put_in(conn, content, blob_id)

    def put_file(self, path: Path, blob_id: str) -> str:
        return self.files.put_file(path, blob_id)

    def get(self, blob_id: str) -> bytes:
        try:
            return self.files.get(blob_id)
        except BlobMissingError:
            return self.rows.get(blob_id)

    def head(self, blob_id: str, limit: int) -> bytes:
        try:
            return self.files.head(blob_id, limit)
        except BlobMissingError:
            return self.rows.head(blob_id, limit)

    def get_many(self, blob_ids: Sequence[str]) -> dict[str, bytes]:
        found = self.files.get_many(blob_ids)
        found.update(self.rows.get_many([blob_id for blob_id in blob_ids if blob_id not in found]))
        return found

    def head_many(self, blob_ids: Sequence[str], limit: int) -> dict[str, bytes]:
        found = self.files.head_many(blob_ids, limit)
        found.update(self.rows.head_many([blob_id for blob_id in blob_ids if blob_id not in found], limit))
        return found

    def stored_before(self, cutoff: float, *, batch: int = LIST_BATCH) -> Iterator[list[str]]:
        yield from self.files.stored_before(cutoff, batch=batch)
        yield from self.rows.stored_before(cutoff, batch=batch)

    def discard_unused(self, blob_ids: Iterable[str], *, stored_before: float) -> int:
        ids = list(blob_ids)
        return self.files.discard_unused(ids, stored_before=stored_before) + self.rows.discard_unused(
            ids, stored_before=stored_before
        )

    def remove_leftovers(self, *, older_than: float = LEFTOVER_SECONDS) -> int:
        return self.files.remove_leftovers(older_than=older_than)


def _write_rows(conn: Connection, blob_id: str, size: int, chunks: _Chunks) -> None:
    """Store a blob's rows in `conn`'s open transaction, or mark it stored again if it is there."""
    stamped = conn.execute(update(blobs).where(blobs.c.id == blob_id).values(stored_at=time.time()))
    if stamped.rowcount:
        return  # stored already: marked stored again
    conn.execute(insert(blobs).values(id=blob_id, size=size, stored_at=time.time()))
    for seq, chunk in enumerate(chunks()):
        conn.execute(insert(blob_chunks).values(blob_id=blob_id, seq=seq, data=chunk))


_BLOB_ROW = PreparedInsert(blobs, ("id", "size", "stored_at"), on_conflict=(("id",), ("stored_at",)))
_CHUNK_ROW = PreparedInsert(
    blob_chunks, ("blob_id", "seq", "data"), on_conflict=(("blob_id", "seq"), ("data",))
)


class _Chunks(Protocol):
    def __call__(self) -> Iterable[bytes | memoryview]: ...


def _chunks(conn: Connection, blob_id: str) -> Iterator[bytes]:
    """The chunks of a blob in order, `_CHUNKS_PER_READ` rows per query: one query for most messages,
    and a large one never held twice over in the driver's buffers."""
    c = blob_chunks.c
    first = 0
    while True:
        rows: Iterable[bytes]
        if conn.dialect.name == "postgresql":
            rows = _binary_rows(conn, blob_id, first)
        else:
            rows = conn.execute(
                select(c.data)
                .where((c.blob_id == blob_id) & (c.seq >= first) & (c.seq < first + _CHUNKS_PER_READ))
                .order_by(c.seq)
            ).scalars()
        count = 0
        for data in rows:
            count += 1
            yield bytes(data)
        if count < _CHUNKS_PER_READ:
            return
        first += _CHUNKS_PER_READ


def _each(read: Callable[[str], bytes], blob_ids: Sequence[str]) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for blob_id in blob_ids:
        with contextlib.suppress(BlobMissingError):
            found[blob_id] = read(blob_id)
    return found


_SMALL_READ = (
    "SELECT c.blob_id, c.data FROM blob_chunks c JOIN blobs b ON b.id = c.blob_id"
    " WHERE c.blob_id = ANY(%s) AND c.seq = 0 AND b.size <= %s"
)


def _small_chunks(conn: Connection, blob_ids: list[str]) -> list[tuple[str, bytes]]:
    """(id, content) of those of `blob_ids` that are stored and at most `MANY_OCTETS` (one chunk each,
    as `MANY_OCTETS` <= `CHUNK_OCTETS`), in one query; binary rows on PostgreSQL (see `_binary_rows`)."""
    if conn.dialect.name == "postgresql":
        driver = conn.connection.driver_connection
        assert driver is not None
        with driver.cursor(binary=True) as cursor:
            cursor.execute(_SMALL_READ, (blob_ids, MANY_OCTETS))
            return [(str(row[0]), bytes(row[1])) for row in cursor.fetchall()]
    c = blob_chunks.c
    rows = conn.execute(
        select(c.blob_id, c.data)
        .join(blobs, blobs.c.id == c.blob_id)
        .where(c.blob_id.in_(blob_ids) & (c.seq == 0) & (blobs.c.size <= MANY_OCTETS))
    )
    return [(str(blob_id), bytes(data)) for blob_id, data in rows]


_BINARY_READ = "SELECT data FROM blob_chunks WHERE blob_id = %s AND seq >= %s AND seq < %s ORDER BY seq"


def _binary_rows(conn: Connection, blob_id: str, first: int) -> list[bytes]:
    """PostgreSQL: the rows in the binary result format. In the text format (what SQLAlchemy asks
    for) a bytea travels as hex, twice its size, and decoding it made a 1 MB `get` take 30 ms."""
    driver = conn.connection.driver_connection
    assert driver is not None
    with driver.cursor(binary=True) as cursor:
        cursor.execute(_BINARY_READ, (blob_id, first, first + _CHUNKS_PER_READ))
        return [row[0] for row in cursor.fetchall()]
