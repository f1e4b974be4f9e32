"""The scheduler: runs delivery rounds until the queue is empty, then sleeps until woken.

A delivery round is a function of a connection and the time that settles due recipients of one
route and returns how many it took. Rounds run as jobs of the group committer, so a delivery and
its settling (`queue.settle`, the trace event) are one atomic step: after a crash a recipient is
either settled or still queued, never both and never neither. Local recipients are delivered at
commit and never queued; the node's rounds are the remote ones (none until outbound sending
arrives: until then remote recipients wait in the queue).

The spool wakes the scheduler after each commit; a timer also wakes it so deferred recipients come
back when due. An exception in a round is logged and retried on the next wake; it never stops the
scheduler, and it never loses a queue row (the round's transaction rolled back).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from sqlalchemy import Connection

from postroom.model.outbound import DeliveryAttempt, RecipientResult
from postroom.storage import GroupCommitter

DeliveryRound = Callable[[Connection, float], int]


class RemoteAgent(Protocol):
    """What delivers leased recipients to other servers (`delivery.remote` implements it).

    `deliver` is given attempts that all go to one destination domain (so it may reuse one
    connection for all of them) and answers one `RecipientResult` per recipient of every attempt.
    It never raises for a delivery problem: a failure it cannot attribute to the remote server (no
    MX, a TLS policy, a timeout) is a reply it makes itself, 4xx when retrying may help."""

    async def deliver(self, attempts: Sequence[DeliveryAttempt]) -> list[RecipientResult]: ...


log = logging.getLogger(__name__)


class Scheduler:
    def __init__(
        self,
        committer: GroupCommitter,
        rounds: Sequence[DeliveryRound],
        *,
        idle_interval: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._committer = committer
        self._rounds = tuple(rounds)
        self._idle_interval = idle_interval
        self._clock = clock
        self._wake = asyncio.Event()
        self._stopping = False
        self.delivered = 0

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            settled = 0
            for delivery_round in self._rounds:
                try:
                    settled += await self._committer.run(self._bind(delivery_round))
                except Exception:
                    log.exception("delivery round failed; retrying on the next wake")
            self.delivered += settled
            if settled:
                continue  # more may be due; run again at once
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._idle_interval)

    def _bind(self, delivery_round: DeliveryRound) -> Callable[[Connection], int]:
        now = self._clock()
        return lambda conn: delivery_round(conn, now)
