"""Monitoring a running node as an operator does: scrape /metrics after mail went through it (local
delivery, and a remote delivery that is delivered, deferred and failed by a Postroom-run sink found by
MX), and watch /readyz turn 503 the moment the node starts draining while /healthz still answers."""

from __future__ import annotations

import asyncio
import ipaddress
import smtplib
import time
from dataclasses import replace

from prometheus_client.parser import text_string_to_metric_families

from postroom.model.replies import Reply
from postroom.model.scope import OPERATOR
from postroom.queue import QueueState, queue_depth
from tests.admin.client import request
from tests.conftest import Hosted
from tests.support.dns_server import DnsTestServer
from tests.support.node import RunningNode, running
from tests.support.sink import SmtpSink, free_port

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
MESSAGE = b"From: news@partner.example\r\nSubject: Quarterly\r\n\r\nNumbers.\r\n"


def scrape(node: RunningNode) -> Samples:
    host, port = node.address("admin")
    reply = request(port, ["node.postroom.test"], "/metrics", address=host)
    assert reply.status == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(reply.body.decode())
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def poll(condition: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(condition):  # type: ignore[arg-type]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_a_scrape_shows_the_mail_that_went_through(hosted: Hosted) -> None:
    directory = hosted.app.directory
    for name in ("taken", "busy", "gone"):
        directory.add_contact(
            OPERATOR, f"{name}.partner@contoso.com", external_address=f"{name}@partner.example"
        )
    port = free_port()
    with DnsTestServer({"partner.example": "@ MX 10 mx\nmx A 127.0.0.31\n"}) as dns:
        settings = replace(
            hosted.settings, dns=dns.settings(), delivery=replace(hosted.settings.delivery, smtp_port=port)
        )
        async with SmtpSink("127.0.0.31", port, hostname="mx.partner.example") as sink:
            sink.behaviour.recipients = {
                "busy@partner.example": Reply(451, "4.2.1", "Mailbox busy, try later"),
                "gone@partner.example": Reply(550, "5.1.1", "No such user"),
            }
            node = await asyncio.to_thread(RunningNode(settings).start)
            try:
                before = await asyncio.to_thread(scrape, node)
                await asyncio.to_thread(send, node)
                app = node.app

                def settled() -> bool:
                    with app.database.read() as conn:
                        depth = queue_depth(conn)
                    return depth.recipients[QueueState.DEFERRED] == 1 and sum(depth.recipients.values()) == 1

                await poll(settled)

                def gauges_caught_up() -> bool:  # the queue is read at most once a second
                    return value(scrape(node), "postroom_queue_recipients", state="deferred") == 1

                await poll(gauges_caught_up)
                after = await asyncio.to_thread(scrape, node)
            finally:
                await asyncio.to_thread(node.stop)
    assert [m.recipients for m in sink.messages] == [("taken@partner.example",)]
    assert moved(before, after, "postroom_messages_received_total", listener="mx") == 4
    assert moved(before, after, "postroom_smtp_connections_total", listener="mx") == 2
    assert value(after, "postroom_smtp_connections_open", listener="mx") == 0
    assert moved(before, after, "postroom_recipients_delivered_total", route="local") == 3
    assert moved(before, after, "postroom_recipients_delivered_total", route="remote") == 1
    assert moved(before, after, "postroom_recipients_deferred_total", reason="4.2.1") == 1
    assert moved(before, after, "postroom_recipients_failed_total", reason="5.1.1") == 1
    assert moved(before, after, "postroom_commit_batch_jobs_count") > 0
    assert moved(before, after, "postroom_commit_seconds_count") > 0
    assert moved(before, after, "postroom_dns_query_seconds_count", rdtype="MX") >= 1
    assert {state: value(after, "postroom_queue_recipients", state=state) for state in QueueState} == {
        "pending": 0,
        "deferred": 1,
        "held": 0,
        "failed": 0,
    }
    assert 0 <= value(after, "postroom_queue_oldest_seconds") < 60


def send(node: RunningNode) -> None:
    with smtplib.SMTP(*node.mx) as client:
        for _ in range(3):
            assert client.sendmail("news@partner.example", ["alice@contoso.com"], MESSAGE) == {}
    with smtplib.SMTP(*node.mx) as client:  # the null sender: the failure sends no DSN to count
        recipients = [f"{name}.partner@contoso.com" for name in ("taken", "busy", "gone")]
        assert client.sendmail("<>", recipients, MESSAGE) == {}


def test_readyz_turns_503_at_once_when_the_node_drains_while_healthz_answers(hosted: Hosted) -> None:
    settings = replace(hosted.settings, drain_seconds=10.0)
    with running(settings) as node:
        host, port = node.address("admin")

        def get(path: str) -> tuple[int, bytes]:
            reply = request(port, ["node.postroom.test"], path, address=host)
            return reply.status, reply.body

        assert get("/readyz") == (200, b"ready\n")
        client = smtplib.SMTP(*node.mx)
        try:
            client.ehlo("mta.partner.example")
            assert client.mail("news@partner.example")[0] == 250  # a transaction in flight holds the drain
            node.app.stop()
            deadline = time.monotonic() + 5
            while (found := get("/readyz"))[0] == 200:
                assert time.monotonic() < deadline, "still ready 5 s after the stop"
                time.sleep(0.02)
            assert found == (503, b"not ready: draining: the node is stopping\n")
            assert get("/healthz") == (200, b"ok\n")
            assert client.rcpt("alice@contoso.com")[0] == 250
            assert client.data(MESSAGE)[0] == 250  # the transaction in flight still finishes
        finally:
            client.close()  # no QUIT: the draining node answers the next command with 421 and closes


def test_the_status_page_draws_the_queue_and_the_processes_for_the_allowed_only(hosted: Hosted) -> None:
    only_127_0_0_1 = (ipaddress.ip_network("127.0.0.1/32"),)
    settings = replace(hosted.settings, admin=replace(hosted.settings.admin, metrics_allow=only_127_0_0_1))
    with running(settings) as node:
        host, port = node.address("admin")
        client = smtplib.SMTP(*node.mx)  # an open connection, drawn on the page once a heartbeat says so
        try:
            client.ehlo("mta.partner.example")

            def page() -> str:
                reply = request(port, ["node.postroom.test"], "/status", address=host)
                assert reply.status == 200 and reply.content_type.startswith("text/html")
                return reply.body.decode()

            body = page()
            assert body.count("<svg") == 2  # the queue and the processes, drawn
            for state in ("pending", "deferred", "held", "failed"):
                assert f">{state}</text>" in body
            assert "the queue is empty" in body
            assert "<td>serving</td>" in body and f"<td>{hosted.settings.node_name}</td>" in body
            refused = request(port, ["node.postroom.test"], "/status", address=host, source="127.0.0.2")
            assert refused.status == 403 and b"<svg" not in refused.body
        finally:
            client.close()
