"""From the attacker's side: a client pipelining MAIL, many refused RCPTs and RSET over many
connections cannot make the node write trace without bound, and legitimate mail still flows."""

from __future__ import annotations

import smtplib
import socket
import time
from dataclasses import replace

from sqlalchemy import func, select

from postroom.model.scope import OPERATOR
from postroom.storage.schema import trace_events, trace_messages, trace_recipients
from postroom.trace import TraceMessage, TraceQuery, record_message
from tests.conftest import Hosted, wait_for
from tests.integration.test_hosted_flow import inbox
from tests.support.node import running, with_limits

CONNECTIONS = 40  # the SMTP core cuts a session after its hard error limit; the client comes back
TRANSACTIONS = 3
RCPTS = 30
PER_SESSION, PER_CLIENT = 5, 20


SOURCES = 4  # the flood comes from 127.0.0.1-4: four addresses of one client network (a /24)


def flood(address: tuple[str, int], connection: int) -> int:
    """One connection: EHLO, then MAIL + RCPTS refused RCPTs + RSET, TRANSACTIONS times, pipelined.
    Returns how many 550 replies it got."""
    commands = [b"EHLO flood.example\r\n"]
    for transaction in range(TRANSACTIONS):
        commands.append(b"MAIL FROM:<spam%d@evil.example>\r\n" % transaction)
        commands += [b"RCPT TO:<guess%d-%d@contoso.com>\r\n" % (connection, n) for n in range(RCPTS)]
        commands.append(b"RSET\r\n")
    commands.append(b"QUIT\r\n")
    refused = 0
    source = (f"127.0.0.{1 + connection % SOURCES}", 0)
    with socket.create_connection(address, timeout=30, source_address=source) as raw:
        raw.sendall(b"".join(commands))
        reader = raw.makefile("rb")
        for line in reader:
            refused += line.startswith(b"550 ")
            if line.startswith((b"221 ", b"421 ")):
                break
    return refused


def trace_rows(hosted: Hosted) -> int:
    with hosted.app.database.read() as conn:
        return sum(
            conn.execute(select(func.count()).select_from(table)).scalar_one()
            for table in (trace_messages, trace_recipients, trace_events)
        )


def test_refused_recipients_are_aggregated_past_the_limits(hosted: Hosted) -> None:
    trace = replace(hosted.settings.trace, refusals_per_session=PER_SESSION, refusals_per_client=PER_CLIENT)
    # The core's slowdown (a second per refusal past 10) would only make the test slow; its hard
    # limit (20 refusals, then 421) stays: the client then comes back on a new connection.
    settings = with_limits(replace(hosted.settings, trace=trace), refusal_delay=0.001)
    with running(settings) as node:
        refused = sum(flood(node.mx, n) for n in range(CONNECTIONS))
        assert refused > PER_CLIENT * 20, "the flood was refused recipient by recipient"
        with smtplib.SMTP(*node.mx) as client:
            client.ehlo("mta.partner.example")
            assert client.mail("news@partner.example")[0] == 250
            assert client.rcpt("alice@contoso.com")[0] == 250
            code, reply = client.data(b"Subject: still here\r\n\r\nhello\r\n")
            assert code == 250, reply
    assert len(inbox(hosted, "alice@contoso.com")) == 1
    # Each refusal traced alone writes a Fail event and a row (and its transaction a message row);
    # past the limits one aggregate (message, row, event) per window; the good message: 4 rows.
    assert trace_rows(hosted) <= PER_CLIENT * 3 + 3 + 4
    aggregates = [
        r
        for r in hosted.app.trace.search(TraceQuery(), OPERATOR)
        if r.recipient.endswith("refused recipients)")
    ]
    assert [r.recipient for r in aggregates] == [f"({refused - PER_CLIENT} refused recipients)"]
    detail = hosted.app.trace.detail(aggregates[0].message_id, OPERATOR)
    assert detail is not None and detail.message.client_ip == "127.0.0.0/24"
    [event] = detail.events
    assert set(event.detail["limits"]) == {"trace.refusals_per_session", "trace.refusals_per_client"}  # type: ignore[arg-type]


def test_the_node_purges_trace_past_its_retention_by_itself(hosted: Hosted) -> None:
    old = time.time() - 91 * 86_400.0
    with hosted.app.database.write() as conn:
        for n in range(7):
            record_message(conn, TraceMessage(f"old{n}", "", "x@partner.example", "", 1, "192.0.2.1", old))
    trace = replace(hosted.settings.trace, purge_batch=2)
    with running(replace(hosted.settings, trace=trace)):
        wait_for(lambda: trace_rows(hosted) == 0)
