"""Trace search filters and detail, with tenant isolation."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from sqlalchemy import func, select

from postroom.model.flow import EventKind, TraceEvent, TraceRecipient, TraceStatus
from postroom.model.scope import OPERATOR, Scope, TenantScope
from postroom.storage import Database
from postroom.storage.schema import trace_events
from postroom.trace import TraceMessage, TraceQuery, TraceService, record_events, record_message, set_statuses

CONTOSO, FABRIKAM = 1, 2


@dataclass(frozen=True)
class Sent:
    id: str
    at: float
    sender: str
    message_id_header: str
    recipients: tuple[tuple[str, int | None, TraceStatus], ...]


MESSAGES = (
    Sent(
        "m1",
        1000.0,
        "alice@contoso.com",
        "<one@contoso.com>",
        (
            ("bob@contoso.com", CONTOSO, TraceStatus.DELIVERED),
            ("carol@fabrikam.com", FABRIKAM, TraceStatus.PENDING),
        ),
    ),
    Sent(
        "m2",
        2000.0,
        "Ext@Partner.example",
        "<two@partner.example>",
        (
            ("team@contoso.com", CONTOSO, TraceStatus.EXPANDED),
            ("alice@contoso.com", CONTOSO, TraceStatus.DELIVERED),
            ("bob@contoso.com", CONTOSO, TraceStatus.FAILED),
        ),
    ),
    Sent("m3", 3000.0, "spam@evil.example", "", (("victim@foreign.example", None, TraceStatus.FAILED),)),
    Sent(
        "m4",
        4000.0,
        "a_b@fabrikam.com",
        "<four@fabrikam.com>",
        (("carol@fabrikam.com", FABRIKAM, TraceStatus.DELIVERED),),
    ),
    Sent(
        "m5",
        5000.0,
        "axb@fabrikam.com",
        "<five%@fabrikam.com>",
        (("dave@fabrikam.com", FABRIKAM, TraceStatus.QUARANTINED),),
    ),
)


@pytest.fixture
def trace(database: Database) -> TraceService:
    with database.write() as conn:
        for sent in MESSAGES:
            record_message(
                conn,
                TraceMessage(
                    sent.id,
                    sent.message_id_header,
                    sent.sender,
                    f"subject {sent.id}",
                    10,
                    "192.0.2.7",
                    sent.at,
                ),
            )
            tenants = sorted({tenant for _, tenant, _ in sent.recipients}, key=str)
            record_events(
                conn, [TraceEvent(sent.id, EventKind.RECEIVE, t, "", {"size": 10}) for t in tenants], sent.at
            )
            record_events(
                conn,
                [
                    TraceEvent(sent.id, EventKind.DELIVER, t, r, {"folder": "Inbox"}, at=sent.at + 1)
                    for r, t, s in sent.recipients
                    if s is TraceStatus.DELIVERED
                ],
            )
            set_statuses(conn, [TraceRecipient(sent.id, t, r, s) for r, t, s in sent.recipients], sent.at)
    return TraceService(database)


@pytest.mark.parametrize(
    ("query", "scope", "rows"),
    [
        (
            TraceQuery(),
            OPERATOR,
            [
                ("m5", "dave@fabrikam.com"),
                ("m4", "carol@fabrikam.com"),
                ("m3", "victim@foreign.example"),
                ("m2", "team@contoso.com"),
                ("m2", "alice@contoso.com"),
                ("m2", "bob@contoso.com"),
                ("m1", "bob@contoso.com"),
                ("m1", "carol@fabrikam.com"),
            ],
        ),
        (
            TraceQuery(),
            TenantScope(CONTOSO),
            [
                ("m2", "team@contoso.com"),
                ("m2", "alice@contoso.com"),
                ("m2", "bob@contoso.com"),
                ("m1", "bob@contoso.com"),
            ],
        ),
        (
            TraceQuery(),
            TenantScope(FABRIKAM),
            [("m5", "dave@fabrikam.com"), ("m4", "carol@fabrikam.com"), ("m1", "carol@fabrikam.com")],
        ),
        (TraceQuery(), TenantScope(99), []),
        (
            TraceQuery(sender="*@contoso.com"),
            OPERATOR,
            [("m1", "bob@contoso.com"), ("m1", "carol@fabrikam.com")],
        ),
        (TraceQuery(sender="*@CONTOSO.COM"), TenantScope(FABRIKAM), [("m1", "carol@fabrikam.com")]),
        (
            TraceQuery(sender="ext@partner.example", status=TraceStatus.FAILED),
            OPERATOR,
            [("m2", "bob@contoso.com")],
        ),
        (TraceQuery(sender="*@contoso"), OPERATOR, []),
        (
            TraceQuery(sender="a_b@fabrikam.com"),
            OPERATOR,
            [("m4", "carol@fabrikam.com")],
        ),  # "_" is not a wildcard
        (TraceQuery(sender="a%b@fabrikam.com"), OPERATOR, []),  # nor is "%"
        (
            TraceQuery(recipient="bob@contoso.com"),
            OPERATOR,
            [("m2", "bob@contoso.com"), ("m1", "bob@contoso.com")],
        ),
        (TraceQuery(recipient="CAROL@fabrikam.com", since=2000.0), OPERATOR, [("m4", "carol@fabrikam.com")]),
        (TraceQuery(recipient="*@fabrikam.com"), TenantScope(CONTOSO), []),
        (
            TraceQuery(recipient="*@FABRIKAM.com"),
            TenantScope(FABRIKAM),
            [("m5", "dave@fabrikam.com"), ("m4", "carol@fabrikam.com"), ("m1", "carol@fabrikam.com")],
        ),
        # An address without a wildcard: the whole address, in any case, never a part of it.
        (
            TraceQuery(recipient="BOB@Contoso.COM"),
            TenantScope(CONTOSO),
            [("m2", "bob@contoso.com"), ("m1", "bob@contoso.com")],
        ),
        (TraceQuery(recipient="bob@contoso.com"), TenantScope(FABRIKAM), []),
        (TraceQuery(recipient="ob@contoso.com"), OPERATOR, []),
        (TraceQuery(recipient="b_b@contoso.com"), OPERATOR, []),  # "_" is not a wildcard here either
        (TraceQuery(recipient="%@contoso.com"), OPERATOR, []),
        # A suffix (one leading wildcard; on PostgreSQL the reversed-address index): any case, no other
        # wildcard, only the tenant's rows.
        (
            TraceQuery(recipient="*B@CONTOSO.com"),
            OPERATOR,
            [("m2", "bob@contoso.com"), ("m1", "bob@contoso.com")],
        ),
        (TraceQuery(recipient="*@contoso.com"), TenantScope(FABRIKAM), []),
        (TraceQuery(recipient="*%@contoso.com"), OPERATOR, []),
        (TraceQuery(recipient="*_ob@contoso.com"), OPERATOR, []),
        (TraceQuery(recipient="*\\ob@contoso.com"), OPERATOR, []),
        (
            TraceQuery(recipient="*"),
            TenantScope(FABRIKAM),
            [("m5", "dave@fabrikam.com"), ("m4", "carol@fabrikam.com"), ("m1", "carol@fabrikam.com")],
        ),
        (
            TraceQuery(message_id_header="<two@partner.example>", status=TraceStatus.EXPANDED),
            TenantScope(CONTOSO),
            [("m2", "team@contoso.com")],
        ),
        (
            TraceQuery(message_id_header="two@partner.example", status=TraceStatus.EXPANDED),
            OPERATOR,
            [("m2", "team@contoso.com")],
        ),
        (TraceQuery(message_id_header=" four@fabrikam.com "), OPERATOR, [("m4", "carol@fabrikam.com")]),
        (TraceQuery(message_id_header="<five%@fabrikam.com>"), OPERATOR, [("m5", "dave@fabrikam.com")]),
        (TraceQuery(message_id_header="four"), OPERATOR, []),
        (
            TraceQuery(since=3000.0, until=4000.0),
            OPERATOR,
            [("m4", "carol@fabrikam.com"), ("m3", "victim@foreign.example")],
        ),
        (TraceQuery(until=999.0), OPERATOR, []),
        (
            TraceQuery(status=TraceStatus.DELIVERED),
            OPERATOR,
            [("m4", "carol@fabrikam.com"), ("m2", "alice@contoso.com"), ("m1", "bob@contoso.com")],
        ),
        (TraceQuery(status=TraceStatus.QUARANTINED), TenantScope(CONTOSO), []),
        (TraceQuery(limit=2), OPERATOR, [("m5", "dave@fabrikam.com"), ("m4", "carol@fabrikam.com")]),
    ],
)
def test_search(trace: TraceService, query: TraceQuery, scope: Scope, rows: list[tuple[str, str]]) -> None:
    assert [(row.message_id, row.recipient) for row in trace.search(query, scope)] == rows


def test_a_tenant_that_took_over_removed_names_sees_only_its_own_rows(
    database: Database, trace: TraceService
) -> None:
    """Contoso (tenant 1) was removed and a new tenant (3: ids are never reused) took its domain and
    mailbox names: a search for the same address, exact or by pattern, shows each tenant its own."""
    reborn = 3
    with database.write() as conn:
        record_message(
            conn,
            TraceMessage("m6", "<six@partner.example>", "ext@partner.example", "s", 10, "192.0.2.7", 6000.0),
        )
        set_statuses(conn, [TraceRecipient("m6", reborn, "bob@contoso.com", TraceStatus.DELIVERED)], 6000.0)
    for recipient in ("bob@contoso.com", "*@contoso.com", "BOB@*"):
        found = trace.search(TraceQuery(recipient=recipient), TenantScope(reborn))
        assert [(row.message_id, row.recipient) for row in found] == [("m6", "bob@contoso.com")]
        earlier = trace.search(TraceQuery(recipient=recipient), TenantScope(CONTOSO))
        assert "m6" not in {row.message_id for row in earlier} and earlier
    found = trace.search(TraceQuery(message_id_header="six@partner.example"), TenantScope(CONTOSO))
    assert found == []


def test_search_rows_carry_the_message_facts(trace: TraceService) -> None:
    [row] = trace.search(TraceQuery(recipient="victim@foreign.example"), OPERATOR)
    assert (row.sender, row.subject, row.received_at, row.status, row.tenant_id, row.message_id_header) == (
        "spam@evil.example",
        "subject m3",
        3000.0,
        TraceStatus.FAILED,
        None,
        "",
    )


def test_detail_for_the_administrator_has_every_row_and_event(trace: TraceService) -> None:
    detail = trace.detail("m1", OPERATOR)
    assert detail is not None
    assert (detail.message.sender, detail.message.client_ip, detail.message.size) == (
        "alice@contoso.com",
        "192.0.2.7",
        10,
    )
    assert [(r.recipient, r.status) for r in detail.recipients] == [
        ("bob@contoso.com", TraceStatus.DELIVERED),
        ("carol@fabrikam.com", TraceStatus.PENDING),
    ]
    assert [(e.event, e.recipient, e.detail) for e in detail.events] == [
        ("Receive", "", {"size": 10}),
        ("Receive", "", {"size": 10}),
        ("Deliver", "bob@contoso.com", {"folder": "Inbox"}),
    ]
    assert [e.at for e in detail.events] == [1000.0, 1000.0, 1001.0]


def test_detail_is_scoped_to_the_tenant(trace: TraceService) -> None:
    contoso = trace.detail("m1", TenantScope(CONTOSO))
    assert contoso is not None
    assert [r.recipient for r in contoso.recipients] == ["bob@contoso.com"]
    assert [(e.event, e.recipient) for e in contoso.events] == [
        ("Receive", ""),
        ("Deliver", "bob@contoso.com"),
    ]
    fabrikam = trace.detail("m1", TenantScope(FABRIKAM))
    assert fabrikam is not None
    assert [r.recipient for r in fabrikam.recipients] == ["carol@fabrikam.com"]
    assert [e.event for e in fabrikam.events] == ["Receive"]


@pytest.mark.parametrize(
    ("message_id", "scope"),
    [
        ("m2", TenantScope(FABRIKAM)),
        ("m4", TenantScope(CONTOSO)),
        ("m3", TenantScope(CONTOSO)),
        ("m3", TenantScope(FABRIKAM)),
        ("absent", OPERATOR),
        ("absent", TenantScope(CONTOSO)),
    ],
)
def test_detail_of_another_tenants_message_is_none(
    trace: TraceService, message_id: str, scope: Scope
) -> None:
    assert trace.detail(message_id, scope) is None


def test_set_statuses_updates_the_one_row_per_recipient(database: Database, trace: TraceService) -> None:
    with database.write() as conn:
        set_statuses(
            conn, [TraceRecipient("m1", FABRIKAM, "carol@fabrikam.com", TraceStatus.DELIVERED)], 1500.0
        )
    rows = trace.search(TraceQuery(recipient="carol@fabrikam.com", until=1000.0), OPERATOR)
    assert [(r.message_id, r.status) for r in rows] == [("m1", TraceStatus.DELIVERED)]


def test_a_mailbox_is_found_by_any_of_its_addresses(database: Database, trace: TraceService) -> None:
    with database.write() as conn:
        record_message(conn, TraceMessage("m6", "", "ext@partner.example", "to an alias", 10, "", 6000.0))
        set_statuses(
            conn,
            [
                TraceRecipient("m6", CONTOSO, "AL@contoso.com", TraceStatus.DELIVERED, "alice@contoso.com"),
                TraceRecipient("m6", CONTOSO, "team@contoso.com", TraceStatus.EXPANDED, "team@contoso.com"),
            ],
            6000.0,
        )
    alice = ("alice@contoso.com", "al@contoso.com")
    rows = trace.search(TraceQuery(addresses=alice), OPERATOR)
    assert [(r.message_id, r.recipient, r.resolved) for r in rows] == [
        ("m6", "AL@contoso.com", "alice@contoso.com"),  # sent to the alias, resolved to the mailbox
        ("m2", "alice@contoso.com", ""),
    ]
    by_resolved = trace.search(TraceQuery(recipient="alice@contoso.com", since=6000.0), TenantScope(CONTOSO))
    assert [(r.recipient, r.resolved) for r in by_resolved] == [("AL@contoso.com", "alice@contoso.com")]
    assert trace.search(TraceQuery(addresses=alice), TenantScope(FABRIKAM)) == []
    detail = trace.detail("m6", TenantScope(CONTOSO))
    assert detail is not None
    assert [(r.recipient, r.resolved) for r in detail.recipients] == [
        ("AL@contoso.com", "alice@contoso.com"),
        ("team@contoso.com", "team@contoso.com"),
    ]


def test_purge_removes_old_messages_with_their_rows_and_events(
    database: Database, trace: TraceService
) -> None:
    assert trace.purge(2500.0, batch=1) == 2 + 5 + 5  # m1, m2: messages, recipient rows, events
    assert {r.message_id for r in trace.search(TraceQuery(), OPERATOR)} == {"m3", "m4", "m5"}
    assert trace.detail("m1", OPERATOR) is None
    assert trace.purge(2500.0) == 0
    with database.read() as conn:
        assert conn.execute(select(func.count()).select_from(trace_events)).scalar() == 4  # m3..m5
