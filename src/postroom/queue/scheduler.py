"""The scheduler: leases due recipients, hands them to the remote agent, settles what it answers.

One loop per node. Each turn it:

1. runs the DSN rounds (`queue.bounce`) in one writer job: a DSN for every `failed` recipient, a
   `delayed` DSN for recipients still deferred `delay_notification` after receipt;
2. leases due recipients in a short write transaction (`queue.leases.lease_due`; a group commit job
   on SQLite, a READ COMMITTED transaction of its own on PostgreSQL: `lease_with`), at most
   `delivery_batch_max` and never more than `max_deliveries_in_flight` held unsettled in all;
3. groups them into `DeliveryAttempt`s (one message, one envelope sender, one destination domain,
   one tenant, one outbound connector) and starts one delivery per route, a destination by MX or
   over one connector: the agent is given that route's attempts together (so it can reuse a
   connection; it bounds connections per route itself);
4. when a delivery answers, settles each recipient in a writer job (`queue.leases.settle_results`:
   2xx delivered, 4xx deferred on the retry schedule until expiry, 5xx failed) with its trace, and
   once that job committed counts each in `postroom.metrics` (delivered, deferred or failed by reason).

No network I/O ever runs inside a writer job, and no SQL on the event loop: leasing, renewing and
settling are jobs of the group committer. A delivery that runs past a third of the lease renews the
lease, so a slow server never lets another node take the same recipients. Deliveries run
concurrently with the next turns; a finished one wakes the loop to lease more.

The loop sleeps until woken (`wake`: the MX after a commit that queued remote recipients, the `queue`
notification of another process or node, a finished delivery) or until the next row comes due, and
at least every `idle_interval` seconds (a notification that was lost costs no more than that).

Failure: an exception in a round is logged and the loop goes on; it never loses a queue row. A
leasing job that failed leased nothing (its transaction rolled back); an agent that raised, or gave
no result for a recipient, defers it (`451 4.3.0`); a settling job that failed leaves its rows
leased until the lease expires, when they are due again. A process that dies mid-delivery leaves
leases that expire the same way (at-least-once: the remote may see a message twice, never zero
times; a 250 once committed is never delivered again). At `stop` deliveries in flight may finish
within `drain_seconds`; those still running then are cancelled and their rows come back when their
lease expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from sqlalchemy import Connection

from postroom import metrics
from postroom.model import Reply, replies
from postroom.model.flow import EventKind
from postroom.model.outbound import DeliveryAttempt, OutboundMessage, OutboundRecipient, RecipientResult
from postroom.queue.bounce import Reporter, report_delays, report_failures
from postroom.queue.leases import (
    Lease,
    LeasedRecipient,
    LeaseTokens,
    RetryPolicy,
    TraceRows,
    lease_due,
    renew,
    settle_results,
)
from postroom.storage import GroupCommitter


class RemoteAgent(Protocol):
    """What delivers leased recipients to other servers (`delivery.remote` implements it).

    `deliver` is given attempts that all go to one destination domain (so it may reuse one
    connection for all of them) and answers one `RecipientResult` per recipient of every attempt.
    It never raises for a delivery problem: a failure it cannot attribute to the remote server (no
    MX, a TLS policy, a timeout) is a reply it makes itself, 4xx when retrying may help."""

    async def deliver(self, attempts: Sequence[DeliveryAttempt]) -> list[RecipientResult]: ...


# Writes the trace rows a queue step produced, in the step's transaction (the app passes trace's).
TraceWriter = Callable[[Connection, TraceRows, float], None]
# Runs a leasing job in a short write transaction and returns its lease. Default: the group committer
# (SQLite's single writer). On PostgreSQL the app passes one that runs it READ COMMITTED in its own
# transaction: SKIP LOCKED is a READ COMMITTED pattern; under SERIALIZABLE concurrent leasers abort.
LeaseRunner = Callable[[Callable[[Connection], Lease]], Awaitable[Lease]]

NO_RESULT = replies.LOCAL_ERROR  # what a recipient the agent gave no answer for gets: deferred
RENEW_FRACTION = 1 / 3  # a delivery renews its leases each time this part of the lease has passed

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """The queue settings the scheduler runs by (`[queue]`)."""

    retry: RetryPolicy
    batch_max: int = 256  # recipients one lease takes at most
    max_in_flight: int = 1000  # recipients held leased and unsettled at most
    lease_seconds: float = 300.0
    delay_notification: float = 14_400.0


RouteKey = tuple[str, int | None]
"""Where a group of recipients goes: (destination domain, outbound connector id or None for MX)."""


def attempts_for(leased: Sequence[LeasedRecipient]) -> dict[RouteKey, list[DeliveryAttempt]]:
    """Group leased recipients into attempts (message, sender, destination, tenant, connector), by
    route: one destination over one connector (or by MX)."""
    grouped: dict[tuple[str, int | None, str, str, int | None], list[LeasedRecipient]] = {}
    for item in leased:
        key = (item.destination, item.connector_id, item.message_id, item.sender, item.tenant_id)
        grouped.setdefault(key, []).append(item)
    by_route: dict[RouteKey, list[DeliveryAttempt]] = {}
    for (destination, connector_id, _, sender, tenant_id), items in grouped.items():
        first = items[0]
        message = OutboundMessage(
            first.message_id, first.blob_id, first.prefix, first.size, first.received_at, tenant_id
        )
        recipients = tuple(
            OutboundRecipient(i.queue_id, i.recipient, i.original_recipient, i.attempts) for i in items
        )
        by_route.setdefault((destination, connector_id), []).append(
            DeliveryAttempt(destination, sender, message, recipients, connector_id)
        )
    return by_route


class Scheduler:
    def __init__(
        self,
        committer: GroupCommitter,
        agent: RemoteAgent | None,
        policy: DeliveryPolicy,
        *,
        write_trace: TraceWriter,
        reporter: Reporter | None = None,
        tokens: LeaseTokens | None = None,
        lease_with: LeaseRunner | None = None,
        idle_interval: float = 5.0,
        drain_seconds: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._committer = committer
        self._agent = agent
        self._policy = policy
        self._write_trace = write_trace
        self._reporter = reporter
        self.tokens = tokens or LeaseTokens()
        self._lease_with: LeaseRunner = lease_with or committer.run
        self._idle_interval = idle_interval
        self._drain_seconds = drain_seconds
        self._clock = clock
        self._wake = asyncio.Event()
        self._stopping = False
        self._in_flight = 0  # recipients leased and not settled
        self._deliveries: set[asyncio.Task[int]] = set()
        self.settled = 0  # recipients settled (delivered, deferred or failed) since start
        self.reported = 0  # trace rows the DSN rounds reported on since start

    def wake(self, _payload: str | None = None) -> None:
        """Run a turn now (work was queued here, or a `queue` notification came from elsewhere)."""
        self._wake.set()

    @property
    def in_flight(self) -> int:
        """Recipients leased and not yet settled."""
        return self._in_flight

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Run turns until `stop`; then let deliveries in flight finish (bounded by `drain_seconds`)."""
        while not self._stopping:
            self._wake.clear()
            reported = await self._report_round()
            lease = await self._lease_round()
            if lease is not None:
                self._start(lease)
            if self._stopping:
                break
            full = lease is not None and len(lease.recipients) >= self._policy.batch_max
            if reported or (full and self._in_flight < self._policy.max_in_flight):
                continue  # more may be waiting: take it at once
            timeout = self._idle_interval
            if lease is not None and lease.next_due is not None:
                timeout = min(timeout, max(lease.next_due - self._clock(), 0.05))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
        if self._deliveries:
            _, running = await asyncio.wait(self._deliveries, timeout=self._drain_seconds)
            for task in running:
                task.cancel()
            if running:
                await asyncio.wait(running)

    async def round(self) -> int:
        """One turn run to its end: the DSN rounds, one lease, its deliveries settled. Returns the
        recipients settled (for tests and tools that drive the queue step by step)."""
        await self._report_round()
        lease = await self._lease_round()
        if lease is None:
            return 0
        tasks = self._start(lease)
        return sum(await asyncio.gather(*tasks))

    async def _report_round(self) -> int:
        reporter = self._reporter
        if reporter is None:
            return 0
        job = partial(self._report_job, reporter, self._clock())
        try:
            handled = await self._committer.run(job)
        except Exception:
            log.exception("the DSN round failed; retrying on the next turn")
            return 0
        self.reported += handled
        return handled

    def _report_job(self, reporter: Reporter, now: float, conn: Connection) -> int:
        rows = report_failures(conn, now, reporter)
        rows.extend(report_delays(conn, now, reporter, self._policy.delay_notification))
        self._write_trace(conn, rows, now)
        return len(rows.events)  # one DSN event per reported trace row: 0 when nothing was due

    async def _lease_round(self) -> Lease | None:
        if self._agent is None:
            return None
        free = min(self._policy.batch_max, self._policy.max_in_flight - self._in_flight)
        if free <= 0:
            return None
        job = partial(
            lease_due,
            token=self.tokens.next(),
            now=self._clock(),
            lease_seconds=self._policy.lease_seconds,
            limit=free,
        )
        try:
            return await self._lease_with(job)
        except Exception:
            log.exception("leasing due recipients failed; retrying on the next turn")
            return None

    def _start(self, lease: Lease) -> list[asyncio.Task[int]]:
        """Start one delivery per route of the lease: a destination, by MX or over one connector."""
        tasks = []
        by_route: dict[RouteKey, list[LeasedRecipient]] = {}
        for item in lease.recipients:
            by_route.setdefault((item.destination, item.connector_id), []).append(item)
        for (destination, connector_id), items in by_route.items():
            self._in_flight += len(items)
            via = "" if connector_id is None else f"-connector-{connector_id}"
            task = asyncio.create_task(
                self._deliver(lease.token, items), name=f"postroom-deliver-{destination}{via}"
            )
            self._deliveries.add(task)
            task.add_done_callback(self._deliveries.discard)
            tasks.append(task)
        return tasks

    async def _deliver(self, token: str, items: list[LeasedRecipient]) -> int:
        """Deliver one destination's leased recipients, renewing the lease while it runs; settle."""
        agent = self._agent
        assert agent is not None
        ids = [item.queue_id for item in items]
        try:
            attempts = [a for group in attempts_for(items).values() for a in group]
            results: list[RecipientResult] = []
            call = asyncio.ensure_future(agent.deliver(attempts))
            try:
                renew_every = self._policy.lease_seconds * RENEW_FRACTION
                while not call.done():
                    await asyncio.wait({call}, timeout=renew_every)
                    if not call.done():
                        until = self._clock() + self._policy.lease_seconds
                        await self._committer.run(partial(renew, token=token, queue_ids=ids, until=until))
                results = call.result()
            except asyncio.CancelledError:
                call.cancel()
                raise
            except Exception:
                log.exception("the remote agent failed; its recipients are deferred")
            answered = {r.queue_id: r for r in results}
            outcomes = [
                (item, answered.get(item.queue_id) or RecipientResult(item.queue_id, NO_RESULT))
                for item in items
            ]
            try:
                settled = await self._committer.run(partial(self._settle_job, token, outcomes, self._clock()))
            except Exception:
                log.exception("settling a delivery failed; its recipients come back when their lease expires")
                return 0
            _count_settled(settled)
            self.settled += len(outcomes)
            return len(outcomes)
        finally:
            self._in_flight -= len(items)
            self._wake.set()

    def _settle_job(
        self,
        token: str,
        outcomes: list[tuple[LeasedRecipient, RecipientResult]],
        now: float,
        conn: Connection,
    ) -> list[tuple[EventKind, Reply]]:
        rows = settle_results(conn, token, outcomes, now, self._policy.retry)
        self._write_trace(conn, rows, now)
        return rows.settled


def _count_settled(settled: list[tuple[EventKind, Reply]]) -> None:
    """Count what a committed settling job settled: delivered (remote), deferred and failed by reason."""
    for kind, reply in settled:
        if kind is EventKind.SEND:
            metrics.RECIPIENTS_DELIVERED.labels("remote").inc()
        elif kind is EventKind.DEFER:
            metrics.RECIPIENTS_DEFERRED.labels(metrics.reason(reply.enhanced)).inc()
        else:
            metrics.RECIPIENTS_FAILED.labels(metrics.reason(reply.enhanced)).inc()
