"""The node registry's states as `postroom node list` reads them: serving while the heartbeat is
fresh, gone after three missed intervals, stopped after a clean stop, pruned after a day."""

from __future__ import annotations

from postroom.cluster import NodeRegistry, NodeState, node_list
from postroom.cluster.registry import PRUNE_SECONDS
from postroom.storage import Database


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def registry(clock: Clock, pid: int, worker: int = 1, heartbeat: float = 5.0) -> NodeRegistry:
    return NodeRegistry(
        id=f"mx1:{pid}:abcdef",
        node="mx1",
        worker=worker,
        host="mx1.example",
        pid=pid,
        version="0.1.0",
        heartbeat_seconds=heartbeat,
        clock=clock,
    )


def states(database: Database, now: float) -> list[tuple[int, NodeState]]:
    with database.read() as conn:
        return [(record.pid, record.state) for record in node_list(conn, now)]


def test_serving_gone_stopped_and_pruned(database: Database) -> None:
    clock = Clock()
    first, second = registry(clock, 101, worker=1), registry(clock, 102, worker=2)
    listeners = [{"name": "mx", "address": "0.0.0.0:25", "protocol": "SMTP"}]
    with database.write() as conn:
        first.register(conn, listeners)
        second.register(conn, listeners)
    assert states(database, clock.now) == [(101, NodeState.SERVING), (102, NodeState.SERVING)]

    clock.now += 3 * 5.0 + 0.1  # the first keeps beating; the second went silent three intervals ago
    with database.write() as conn:
        first.heartbeat(conn, {"connections": 4, "memory_in_use": 4096, "deliveries_in_flight": 2})
    assert states(database, clock.now) == [(101, NodeState.SERVING), (102, NodeState.GONE)]
    with database.read() as conn:
        [shown, _] = node_list(conn, clock.now)
    assert shown.load == {"connections": 4, "memory_in_use": 4096, "deliveries_in_flight": 2}
    assert (shown.listeners, shown.leases, shown.id) == (listeners, 0, "mx1:101:abcdef")

    with database.write() as conn:
        first.stopped(conn)
    assert states(database, clock.now + 3600) == [(101, NodeState.STOPPED), (102, NodeState.GONE)]

    clock.now += PRUNE_SECONDS
    third = registry(clock, 103)
    with database.write() as conn:
        third.register(conn, [])
        third.heartbeat(conn, {})  # a heartbeat removes rows silent for a day
    assert states(database, clock.now) == [(103, NodeState.SERVING)]


def test_a_process_is_judged_by_its_own_heartbeat_interval(database: Database) -> None:
    clock = Clock()
    with database.write() as conn:
        registry(clock, 201, heartbeat=60.0).register(conn, [])
    assert states(database, clock.now + 170) == [(201, NodeState.SERVING)]
    assert states(database, clock.now + 181) == [(201, NodeState.GONE)]


def test_a_heartbeat_writes_the_row_again_when_it_is_missing(database: Database) -> None:
    clock = Clock()
    beating = registry(clock, 301)
    with database.write() as conn:
        beating.heartbeat(conn, {"connections": 1})  # registering had failed: no row yet
    with database.read() as conn:
        [record] = node_list(conn, clock.now)
    assert (record.pid, record.state, record.load) == (301, NodeState.SERVING, {"connections": 1})
