"""A node killed with -9 while it holds leases: the other node delivers those recipients once the
leases expire, each exactly once, and `postroom node list` shows the killed node as gone.

Node a is a real `postroom serve` child process; the remote domains' MX (found through the test DNS
server) accepts connections and never greets, so a's deliveries are in flight (leased, unsettled)
when it is killed. Node b, started after the kill, delivers to a recording agent. `[queue]
lease_seconds` is 2 s in both configs.
"""

from __future__ import annotations

import json
import smtplib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from postroom.app import App
from postroom.config import Settings, load_settings
from postroom.model.scope import OPERATOR
from tests.cli.test_commands import postroom
from tests.conftest import populate, wait_for
from tests.postgres.test_cluster import MESSAGE, RecordingAgent, node_config, start
from tests.support.dns_server import DnsTestServer
from tests.support.process import ServeProcess

LEASE_SECONDS = 2.0
MESSAGES = 3
STALL_HOST = "127.0.0.9"


@pytest.fixture
def stalled_mx() -> Iterator[int]:
    """An MX that accepts every connection and never says a word; yields its port."""
    server = socket.create_server((STALL_HOST, 0))
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1]
    server.close()
    for connection in held:
        connection.close()


def configure(settings: Settings, dns: DnsTestServer, smtp_port: int) -> Settings:
    text = settings.source.read_text()
    for old, new in (
        ("\nlease_seconds = 300.0", f"\nlease_seconds = {LEASE_SECONDS}"),
        ("\nnameservers = []", f'\nnameservers = ["{dns.host}:{dns.port}"]'),
        ("\nsmtp_port = 25", f"\nsmtp_port = {smtp_port}"),
    ):
        assert old in text, old
        text = text.replace(old, new, 1)
    settings.source.write_text(text)
    return load_settings(settings.source)


def listed(settings: Settings) -> dict[str, dict[str, object]]:
    result = postroom("node", "list", "--json", config=settings.source)
    assert result.returncode == 0, result.stderr
    return {str(row["node"]): row for row in json.loads(result.stdout)}


def test_a_killed_nodes_leases_expire_and_the_other_node_delivers_each_recipient_once(
    tmp_path: Path, postgres_url: str, stalled_mx: int
) -> None:
    blobs = tmp_path / "shared-blobs"
    blobs.mkdir()
    with DnsTestServer() as dns:
        for domain in ("remote.example", "vendor.example"):
            dns.set_zone(domain, f"@ MX 10 mx\nmx A {STALL_HOST}\n")
        settings_a = configure(node_config(tmp_path / "a", postgres_url, blobs, "node-a"), dns, stalled_mx)
        settings_b = configure(node_config(tmp_path / "b", postgres_url, blobs, "node-b"), dns, stalled_mx)
        setup = App.open(settings_a)
        populate(setup)
        setup.directory.add_contact(
            OPERATOR, "partner@contoso.com", external_address="someone@remote.example"
        )
        setup.directory.add_contact(OPERATOR, "vendor@contoso.com", external_address="sales@vendor.example")
        setup.close()

        node_a = ServeProcess(settings_a.source).start()
        try:
            for number in range(MESSAGES):
                with smtplib.SMTP(*node_a.mx, timeout=10) as client:
                    recipients = ["partner@contoso.com", "vendor@contoso.com"]
                    client.sendmail("news@partner.example", recipients, MESSAGE + b"%d" % number)
            # Every recipient is leased by a, whose deliveries wait for a greeting that never comes.
            wait_for(lambda: listed(settings_a)["node-a"]["leases"] == 2 * MESSAGES, timeout=15, interval=0.2)
            assert listed(settings_a)["node-a"]["state"] == "serving"
        finally:
            node_a.kill()
        killed = time.monotonic()

        delivered: list[tuple[str, str]] = []
        node_b = start(settings_b, RecordingAgent("b", delivered))
        try:
            wait_for(lambda: len(delivered) == 2 * MESSAGES, timeout=LEASE_SECONDS + 10)
            assert time.monotonic() - killed >= LEASE_SECONDS - 0.5, "taken only once the leases expired"
            assert sorted(to for _, to in delivered) == (
                ["sales@vendor.example"] * MESSAGES + ["someone@remote.example"] * MESSAGES
            )
            wait_for(lambda: node_b.app.queue_summary().messages == 0, timeout=5)
            time.sleep(LEASE_SECONDS + 0.5)  # nothing comes back: each was settled once
            assert len(delivered) == 2 * MESSAGES
            nodes = listed(settings_b)
            assert (nodes["node-a"]["state"], nodes["node-a"]["leases"]) == ("gone", 0)
            assert nodes["node-b"]["state"] == "serving"
        finally:
            node_b.stop()
