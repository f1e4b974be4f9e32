"""The blob store: message content as content-addressed, immutable files.

A blob's id is the SHA-256 of its bytes; it lives at `<root>/<id[:2]>/<id[2:]>`. `put` writes to a
temporary file, fsyncs it, renames it into place and fsyncs the directory, so a blob id handed out
names bytes that are on disk. Writing the same content twice stores it once. A blob is written
before the database rows that point at it; a crash between the two leaves an unreferenced blob,
which wastes space but loses nothing.

`put_file` takes a file the caller wrote (a message spooled while it was received) with the id it
computed while writing: the file is fsynced and renamed into place, never read into memory; the
caller's file is gone afterwards (moved, or removed when the store already held the content).

Failure: a `put` that fails (ENOSPC, EIO, anything between creating its temporary file and renaming
it) removes its temporary file and raises. A crash mid-`put` leaves a `.<id>.<pid>.<thread>.tmp` file;
`remove_leftovers` (run when a node starts serving) deletes those not written to for an hour. `get` of
an unknown id raises `BlobMissingError` (a corrupt store, reported, never guessed).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from pathlib import Path

LEFTOVER_SECONDS = 3600.0  # a temporary file untouched this long belongs to a write that died


class BlobMissingError(LookupError):
    """A blob id that the store does not hold."""


class BlobStore:
    """Content-addressed files under one directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._root = str(root)

    def path(self, blob_id: str) -> Path:
        return self.root / blob_id[:2] / blob_id[2:]

    def put(self, content: bytes) -> str:
        blob_id = hashlib.sha256(content).hexdigest()
        # Plain os calls: this runs for every message received.
        shard, target = self._place(blob_id)
        if os.path.exists(target):
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
        """Move the file at `path`, whose SHA-256 is `blob_id`, into the store (same file system)."""
        shard, target = self._place(blob_id)
        if os.path.exists(target):
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
        """Remove temporary files of writes that never finished (a crash mid-`put`); returns how many.

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

    def discard(self, blob_id: str) -> None:
        """Delete a blob no row points at any more (the caller checked, after its commit); gone is fine."""
        with contextlib.suppress(FileNotFoundError):
            self.path(blob_id).unlink()


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
