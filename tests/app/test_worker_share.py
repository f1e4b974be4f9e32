"""A worker's share of the node-wide bounds: N workers hold no more than one process did."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from postroom.app.workers import worker_share
from postroom.config import Settings


def test_each_worker_gets_its_share_of_memory_and_connections() -> None:
    node = Settings(source=Path("postroom.toml"))
    node = replace(node, mx=replace(node.mx, limits=replace(node.mx.limits, max_connections=1001)))
    share = worker_share(node, 2)
    assert share.memory_budget * 2 <= node.memory_budget
    assert share.mx.limits.max_connections == 500
    assert share.submission.limits.max_connections * 2 <= node.submission.limits.max_connections
    assert share.admin.limits.max_connections * 2 <= node.admin.limits.max_connections
    # What a single client may hold stays per worker (the kernel picks the worker, not the client).
    assert share.mx.limits.max_connections_per_ip == node.mx.limits.max_connections_per_ip
    assert worker_share(node, 1) == node


def test_a_share_is_never_zero() -> None:
    node = Settings(source=Path("postroom.toml"))
    tiny = replace(
        node, memory_budget=3, mx=replace(node.mx, limits=replace(node.mx.limits, max_connections=3))
    )
    share = worker_share(tiny, 8)
    assert share.memory_budget == 1 and share.mx.limits.max_connections == 1
