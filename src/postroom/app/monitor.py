"""The node's readiness, its metrics scrape and its status page, as the admin listener's `/readyz`,
`/metrics` and `/status` ask them.

`NodeMonitor.unready()` says why a load balancer should not send this node traffic, or None: the node
is draining (set at SIGTERM, before any listener stops, so `/readyz` turns 503 at once while the admin
listener still answers), the group committer's writer is not alive (nothing could be acknowledged),
or the database did not answer a `SELECT 1` within `PROBE_TIMEOUT` seconds (or failed it; the error
goes to the log, never to the client). The probe runs in a worker thread, never on the event loop.

`NodeMonitor.exposition()` sets the queue gauges from the database (`queue.queue_depth`: a count by
state and the oldest queued message's age) and renders every metric (`metrics.exposition`), each in
a worker thread. The queue is read at most once per `QUEUE_READ_INTERVAL` seconds: scrapes in between
reuse the last reading. A read that fails or passes `PROBE_TIMEOUT` leaves the gauges as they were
(logged), so a database outage never makes `/metrics` itself fail.

`NodeMonitor.status()` reads the queue's depth and the node registry (`cluster.node_list`) in a
worker thread, bounded by `PROBE_TIMEOUT`, for the status page (`admin.status`); only the networks
of `[admin] metrics_allow` reach it.

The database probe and the queue read are single-flight: while one runs, another request waits for
the same one instead of starting its own, so however often a client asks, the node holds at most one
thread and one connection for each, even while the database hangs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from sqlalchemy import text

from postroom import metrics
from postroom.admin.status import NodeStatus, ProcessStatus
from postroom.cluster import node_list
from postroom.queue import queue_depth
from postroom.storage import Database, GroupCommitter

PROBE_TIMEOUT = 2.0  # seconds the database has to answer a readiness probe or a queue read
QUEUE_READ_INTERVAL = 1.0  # seconds a queue reading serves the scrapes that follow

log = logging.getLogger(__name__)


class NodeMonitor:
    """Readiness and the metrics scrape of one node (see the module docstring)."""

    def __init__(
        self, database: Database, committer: GroupCommitter, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._database = database
        self._committer = committer
        self._clock = clock
        self.draining = False
        self._probe = _SingleFlight(self._ping)
        self._queue_read = _SingleFlight(self._read_queue)
        self._queue_read_at = -QUEUE_READ_INTERVAL

    async def unready(self) -> str | None:
        if self.draining:
            return "draining: the node is stopping"
        if not self._committer.alive:
            return "the writer is not running: nothing can be committed"
        try:
            await self._probe.run()
        except TimeoutError:
            return f"the database did not answer within {PROBE_TIMEOUT:g} s"
        except Exception:
            log.warning("readiness: the database probe failed", exc_info=True)
            return "the database does not answer"
        return None

    async def exposition(self) -> tuple[bytes, str]:
        now = self._clock()
        if now - self._queue_read_at >= QUEUE_READ_INTERVAL:
            self._queue_read_at = now
            try:
                await self._queue_read.run()
            except Exception:
                log.warning(
                    "metrics: reading the queue failed; its gauges keep their last value", exc_info=True
                )
        return await asyncio.to_thread(metrics.exposition)

    async def status(self) -> NodeStatus:
        return await asyncio.wait_for(asyncio.to_thread(self._read_status), PROBE_TIMEOUT)

    def _read_status(self) -> NodeStatus:
        now = self._clock()
        with self._database.read() as conn:
            depth = queue_depth(conn)
            records = node_list(conn, now)
        oldest = depth.oldest_received_at
        return NodeStatus(
            queue={state.value: count for state, count in depth.recipients.items()},
            oldest_seconds=None if oldest is None else max(0.0, now - oldest),
            processes=[
                ProcessStatus(
                    node=record.node,
                    worker=record.worker,
                    pid=record.pid,
                    state=record.state.value,
                    connections=int(record.load.get("connections", 0)),
                    leases=record.leases,
                    heartbeat_age=max(0.0, now - record.heartbeat_at),
                )
                for record in records
            ],
        )

    def _ping(self) -> None:
        with self._database.read() as conn:
            conn.execute(text("SELECT 1"))

    def _read_queue(self) -> None:
        with self._database.read() as conn:
            depth = queue_depth(conn)
        for state, count in depth.recipients.items():
            metrics.QUEUE_DEPTH.labels(state.value).set(count)
        oldest = depth.oldest_received_at
        metrics.QUEUE_OLDEST_SECONDS.set(0.0 if oldest is None else max(0.0, self._clock() - oldest))


class _SingleFlight:
    """Runs a blocking function in a worker thread, one run at a time: a caller that comes while a run
    is in flight waits for that run. Every caller gives up after `PROBE_TIMEOUT` (TimeoutError); the
    thread then finishes on its own and the next caller starts a new run."""

    def __init__(self, work: Callable[[], None]) -> None:
        self._work = work
        self._flight: asyncio.Future[None] | None = None

    async def run(self) -> None:
        flight = self._flight
        if flight is None or flight.done():
            flight = self._flight = asyncio.ensure_future(asyncio.to_thread(self._work))
            flight.add_done_callback(_retrieve)  # a run every waiter gave up on raises into no one
        await asyncio.wait_for(asyncio.shield(flight), PROBE_TIMEOUT)


def _retrieve(flight: asyncio.Future[None]) -> None:
    if not flight.cancelled():
        flight.exception()
