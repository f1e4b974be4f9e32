"""Refused recipients in trace: one by one up to a limit, then aggregated, so what an unauthenticated
client can make the node write is bounded.

Every refused recipient (at RCPT, or at the end of DATA) is counted per session and per client: the
client's network as the SMTP listener counts it (IPv4 /24, IPv6 /64 by default), so a client cannot
multiply the limit by using many addresses of its own network. The first `refusals_per_session` of a
session, and at most `refusals_per_client` of one client in a window of `refusal_window` seconds (across
all its sessions), are traced one by one as before (a Fail row each, with the reply). Past either limit
they are aggregated: the client's `RefusalAggregate` counts them and keeps a small sample (recipients,
senders, replies), and is written as **one** trace message, row and event when its window ends (the node
flushes due aggregates every `FLUSH_SECONDS`, and all of them when it stops). A client therefore makes
the node write at most `refusals_per_client` refusal rows plus one aggregate per window, however many
connections, transactions and RSETs it uses.

`RefusalLedger` does no I/O and is safe to use from one event loop (it is not locked). It holds at
most `MAX_CLIENTS` clients; past that, every open tally is closed at once (its aggregate becomes due)
so memory stays bounded. Aggregates carry no tenant: they mix tenants and the operator reads them.

Security: the recipient and sender strings come from the network; they were parsed and bounded by
the SMTP core, and only `SAMPLE` of each are kept.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Connection

from postroom.model.flow import EventKind, TraceEvent, TraceRecipient, TraceStatus
from postroom.trace.service import TraceMessage, record_events, record_message, set_statuses

SAMPLE = 5  # recipients and senders an aggregate names
MAX_CLIENTS = 100_000
FLUSH_SECONDS = 60.0
PER_SESSION_LIMIT = "trace.refusals_per_session"
PER_CLIENT_LIMIT = "trace.refusals_per_client"


@dataclass(frozen=True, slots=True)
class RefusalLimits:
    per_session: int
    per_client: int
    window: float  # seconds


@dataclass(slots=True)
class RefusalAggregate:
    """The refusals of one client past the limits, in one window."""

    client: str
    since: float
    until: float
    count: int = 0
    recipients: list[str] = field(default_factory=list)
    senders: list[str] = field(default_factory=list)
    replies: Counter[str] = field(default_factory=Counter)
    limits: set[str] = field(default_factory=set)

    def add(self, recipient: str, sender: str, reply: str, limit: str, now: float) -> None:
        self.count += 1
        self.until = now
        if len(self.recipients) < SAMPLE and recipient not in self.recipients:
            self.recipients.append(recipient)
        if len(self.senders) < SAMPLE and sender not in self.senders:
            self.senders.append(sender)
        if reply in self.replies or len(self.replies) < SAMPLE:
            self.replies[reply] += 1
        self.limits.add(limit)


@dataclass(slots=True)
class _Tally:
    since: float
    traced: int = 0
    aggregate: RefusalAggregate | None = None


class RefusalLedger:
    """Decides, for each refused recipient, whether it is traced alone or aggregated."""

    def __init__(self, limits: RefusalLimits, clock: Callable[[], float]) -> None:
        self.limits = limits
        self._clock = clock
        self._clients: dict[str, _Tally] = {}
        self._due: list[RefusalAggregate] = []

    def refused(self, client: str, session_traced: int, recipient: str, sender: str, reply: str) -> bool:
        """Count one refusal; True when the caller traces it alone (the session then counts it in
        `session_traced`), False when it went into the client's aggregate."""
        now = self._clock()
        tally = self._tally(client, now)
        if session_traced < self.limits.per_session and tally.traced < self.limits.per_client:
            tally.traced += 1
            return True
        if tally.aggregate is None:
            tally.aggregate = RefusalAggregate(client, now, now)
        limit = PER_SESSION_LIMIT if session_traced >= self.limits.per_session else PER_CLIENT_LIMIT
        tally.aggregate.add(recipient, sender, reply, limit, now)
        return False

    def take_due(self, *, everything: bool = False) -> list[RefusalAggregate]:
        """The aggregates whose window has ended (with `everything`, all of them: the node stops)."""
        now = self._clock()
        for client, tally in list(self._clients.items()):
            if everything or now - tally.since >= self.limits.window:
                self._close(client)
        due, self._due = self._due, []
        return due

    def _tally(self, client: str, now: float) -> _Tally:
        tally = self._clients.get(client)
        if tally is not None and now - tally.since >= self.limits.window:
            self._close(client)
            tally = None
        if tally is None:
            if len(self._clients) >= MAX_CLIENTS:
                for known in list(self._clients):
                    self._close(known)
            tally = self._clients[client] = _Tally(now)
        return tally

    def _close(self, client: str) -> None:
        tally = self._clients.pop(client)
        if tally.aggregate is not None:
            self._due.append(tally.aggregate)


def record_aggregates(aggregates: list[tuple[str, RefusalAggregate]], conn: Connection) -> None:
    """Write each (trace id, aggregate): one message, one failed row and one Fail event, no tenant."""
    for trace_id, aggregate in aggregates:
        record_message(
            conn,
            TraceMessage(
                id=trace_id,
                message_id_header="",
                sender=aggregate.senders[0] if aggregate.senders else "",
                subject="",
                size=0,
                client_ip=aggregate.client,
                received_at=aggregate.since,
            ),
        )
        row = f"({aggregate.count} refused recipients)"
        detail: dict[str, object] = {
            "aggregated": aggregate.count,
            "limits": sorted(aggregate.limits),
            "recipients": aggregate.recipients,
            "senders": aggregate.senders,
            "replies": dict(aggregate.replies),
            "since": aggregate.since,
            "until": aggregate.until,
        }
        record_events(conn, [TraceEvent(trace_id, EventKind.FAIL, None, row, detail)], aggregate.until)
        set_statuses(conn, [TraceRecipient(trace_id, None, row, TraceStatus.FAILED)], aggregate.until)
