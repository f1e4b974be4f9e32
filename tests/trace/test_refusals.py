"""RefusalLedger: refused recipients traced one by one up to the per-session and per-client limits,
then aggregated per client and window; the aggregate is written as one message, row and event."""

from __future__ import annotations

from postroom.model.scope import OPERATOR, TenantScope
from postroom.storage import Database
from postroom.trace import TraceQuery, TraceService
from postroom.trace.refusals import SAMPLE, RefusalLedger, RefusalLimits, record_aggregates

REPLY = "550 5.4.1 Recipient address rejected: Access denied"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def refuse(ledger: RefusalLedger, ip: str, count: int, session: list[int]) -> int:
    """Refuse `count` recipients in one session (its traced counter in `session[0]`); returns how
    many the ledger let the session trace alone."""
    alone = 0
    for n in range(count):
        if ledger.refused(ip, session[0], f"u{n}@contoso.com", "spam@evil.example", REPLY):
            session[0] += 1
            alone += 1
    return alone


def test_each_session_traces_up_to_its_limit_and_the_client_up_to_its_own() -> None:
    clock = Clock()
    ledger = RefusalLedger(RefusalLimits(per_session=3, per_client=7, window=60.0), clock)
    traced = [refuse(ledger, "192.0.2.1", 10, [0]) for _ in range(4)]
    assert traced == [3, 3, 1, 0]  # 3 + 3 + 1 = the client's 7
    assert refuse(ledger, "192.0.2.2", 2, [0]) == 2  # another client has its own count
    assert ledger.take_due() == []  # the window is still open
    clock.now += 60.0
    [aggregate] = ledger.take_due()
    assert (aggregate.client, aggregate.count) == ("192.0.2.1", 40 - 7)
    assert len(aggregate.recipients) == SAMPLE and aggregate.senders == ["spam@evil.example"]
    assert aggregate.replies == {REPLY: 33}
    assert aggregate.limits == {"trace.refusals_per_session", "trace.refusals_per_client"}
    assert refuse(ledger, "192.0.2.1", 5, [0]) == 3  # a new window: traced alone again


def test_everything_is_due_when_the_node_stops() -> None:
    ledger = RefusalLedger(RefusalLimits(per_session=1, per_client=1, window=3600.0), Clock())
    refuse(ledger, "192.0.2.1", 3, [0])
    assert [a.count for a in ledger.take_due(everything=True)] == [2]
    assert ledger.take_due(everything=True) == []


def test_an_aggregate_is_one_operator_row(database: Database) -> None:
    ledger = RefusalLedger(RefusalLimits(per_session=1, per_client=1, window=3600.0), Clock())
    refuse(ledger, "192.0.2.1", 500, [0])
    [aggregate] = ledger.take_due(everything=True)
    with database.write() as conn:
        record_aggregates([("agg-1", aggregate)], conn)
    trace = TraceService(database)
    [row] = trace.search(TraceQuery(), OPERATOR)
    assert (row.recipient, row.sender, row.tenant_id) == (
        "(499 refused recipients)",
        "spam@evil.example",
        None,
    )
    assert trace.search(TraceQuery(), TenantScope(1)) == []
    detail = trace.detail("agg-1", OPERATOR)
    assert detail is not None and detail.message.client_ip == "192.0.2.1"
    [event] = detail.events
    assert event.detail["aggregated"] == 499 and event.detail["replies"] == {REPLY: 499}
