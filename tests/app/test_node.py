"""The node's start: what `serve` cleans up before it takes mail."""

from __future__ import annotations

import logging
import os
import time

import pytest

from postroom.config import Settings
from postroom.storage import FileBlobStore
from tests.support.node import running


def test_serve_removes_leftovers_of_unfinished_blob_writes(
    node_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    blobs = FileBlobStore(node_settings.blob_dir)
    kept = blobs.put(b"a message body")
    leftovers = [blobs.path(kept).parent / f".{n:062x}.999.1.tmp" for n in range(3)]
    long_ago = time.time() - 2 * 3600
    for leftover in leftovers:
        leftover.write_bytes(b"half written")  # a node killed mid-write
        os.utime(leftover, (long_ago, long_ago))
    with caplog.at_level(logging.WARNING, logger="postroom.app.node"), running(node_settings):
        pass
    assert [path for path in leftovers if path.exists()] == []
    assert blobs.get(kept) == b"a message body"
    assert "removed 3 temporary file(s) of unfinished blob writes" in caplog.text
