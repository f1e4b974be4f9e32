"""The node registry: which serving processes exist, what they hold, and whether they are alive.

Each serving process (a worker of a node, or a node of one process) keeps one row of `nodes`, keyed
by its lease-token owner (`queue.leases.LeaseTokens.owner`, `<host>:<pid>:<random>`), so the leases
it holds are the queue rows whose `lease_owner` starts with `<id>/`. `NodeRegistry` makes the jobs
the process runs through its group committer (never on the event loop, never a transaction of its
own): `register` at start (node name, worker number, host, pid, version, listeners, heartbeat
interval), `heartbeat` every `[node] heartbeat_seconds` with its load (a small JSON object of
counts), which also prunes rows without a heartbeat for `PRUNE_SECONDS`, and `stopped` at a clean
stop.

`node_list` reads the rows for `postroom node list`: each with its state, `serving`, `stopped` (it
stopped cleanly) or `gone` (no heartbeat for `GONE_AFTER` of its own intervals: killed, hung or cut
off), and the leases it holds now (unexpired).

Failure: a heartbeat job that fails is logged and retried at the next interval; a process that
cannot write its heartbeat for three intervals is shown as gone, which is what it looks like to
everyone else. Nothing here decides who may deliver what: leases expire on their own
(`queue.leases`); the registry only shows it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from functools import partial
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from postroom.storage import GroupCommitter
from postroom.storage.schema import nodes, queue_recipients

HEARTBEAT_SECONDS = 5.0  # the default of `[node] heartbeat_seconds`
GONE_AFTER = 3  # heartbeat intervals missed before a process is shown as gone
PRUNE_SECONDS = 86_400.0  # rows without a heartbeat for this long are removed

NodeLoad = Mapping[str, int]  # e.g. connections, memory_in_use, deliveries_in_flight

log = logging.getLogger(__name__)


class NodeState(Enum):
    SERVING = "serving"
    STOPPED = "stopped"
    GONE = "gone"


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """One process as `postroom node list` shows it."""

    id: str
    node: str
    worker: int
    pid: int
    host: str
    version: str
    listeners: list[dict[str, str]]
    load: dict[str, int]
    leases: int  # queue rows it holds leased now
    started_at: float
    heartbeat_at: float
    stopped_at: float | None
    state: NodeState


class NodeRegistry:
    """The jobs that keep this process's row (see the module docstring)."""

    def __init__(
        self,
        *,
        id: str,
        node: str,
        worker: int,
        host: str,
        pid: int,
        version: str,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.id = id
        self.node = node
        self.worker = worker
        self.host = host
        self.pid = pid
        self.version = version
        self.heartbeat_seconds = heartbeat_seconds
        self._clock = clock
        self._listeners: list[dict[str, str]] = []

    def register(self, conn: Connection, listeners: list[dict[str, str]]) -> None:
        self._listeners = listeners
        now = self._clock()
        conn.execute(delete(nodes).where(nodes.c.id == self.id))
        conn.execute(
            insert(nodes).values(
                id=self.id,
                node=self.node[:120],
                worker=self.worker,
                host=self.host[:255],
                pid=self.pid,
                version=self.version[:40],
                listeners=json.dumps(listeners),
                load="{}",
                heartbeat_seconds=self.heartbeat_seconds,
                started_at=now,
                heartbeat_at=now,
            )
        )

    def heartbeat(self, conn: Connection, load: NodeLoad) -> None:
        """Write the heartbeat and load; the row is written again if it is missing (registering failed,
        or an operator deleted it)."""
        now = self._clock()
        beat = update(nodes).where(nodes.c.id == self.id)
        if not conn.execute(
            beat.values(heartbeat_at=now, load=json.dumps(dict(load)), stopped_at=None)
        ).rowcount:
            self.register(conn, self._listeners)
            conn.execute(beat.values(load=json.dumps(dict(load))))
        conn.execute(delete(nodes).where(nodes.c.heartbeat_at < now - PRUNE_SECONDS))

    def stopped(self, conn: Connection) -> None:
        now = self._clock()
        conn.execute(update(nodes).where(nodes.c.id == self.id).values(stopped_at=now, heartbeat_at=now))

    async def keep_beating(self, committer: GroupCommitter, load: Callable[[], NodeLoad]) -> None:
        """Write a heartbeat every interval until cancelled (the load is read on the event loop)."""
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            try:
                await committer.run(partial(self.heartbeat, load=load()))
            except Exception as error:
                log.warning("could not write this process's heartbeat (retrying): %s", error)


def node_list(conn: Connection, now: float | None = None) -> list[NodeRecord]:
    """Every registered process, by node name, worker and start (see the module docstring)."""
    now = time.time() if now is None else now
    q = queue_recipients
    rows = conn.execute(select(nodes).order_by(nodes.c.node, nodes.c.worker, nodes.c.started_at)).all()
    records = []
    for row in rows:
        prefix = f"{row.id}/"
        leases = conn.execute(
            select(func.count())
            .select_from(q)
            .where(func.substr(q.c.lease_owner, 1, len(prefix)) == prefix)
            .where(q.c.lease_until > now)
        ).scalar_one()
        if row.stopped_at is not None:
            state = NodeState.STOPPED
        elif now - row.heartbeat_at > GONE_AFTER * row.heartbeat_seconds:
            state = NodeState.GONE
        else:
            state = NodeState.SERVING
        records.append(
            NodeRecord(
                id=row.id,
                node=row.node,
                worker=row.worker,
                pid=row.pid,
                host=row.host,
                version=row.version,
                listeners=listeners if isinstance(listeners := _json(row.listeners), list) else [],
                load=load if isinstance(load := _json(row.load), dict) else {},
                leases=int(leases),
                started_at=row.started_at,
                heartbeat_at=row.heartbeat_at,
                stopped_at=row.stopped_at,
                state=state,
            )
        )
    return records


def _json(text: str) -> Any:
    """A JSON column's value; None when it is not JSON (a row written by hand, or cut short)."""
    try:
        return json.loads(text or "null")
    except ValueError:
        return None
