"""BlobStore: content-addressed put/get, dedup, missing blobs."""

from __future__ import annotations

import hashlib
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
