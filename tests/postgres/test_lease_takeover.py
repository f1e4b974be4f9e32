"""A node killed with -9 while it holds leases: the other node delivers those recipients once the
leases expire, each exactly once, and `postroom node list` shows the killed node as gone.

Node a is a real child process serving (`App.run`, as `postroom serve` does) with a remote agent that
stalls, so its deliveries are in flight (leased, unsettled) when it is killed. `[queue] lease_seconds`
is 2 s in both configs.
"""

from __future__ import annotations

import json
import signal
import smtplib
import subprocess
import sys
import time
from pathlib import Path

from postroom.app import App
from postroom.config import Settings, load_settings
from postroom.model.scope import OPERATOR
from tests.cli.test_commands import postroom
from tests.conftest import populate, wait_for
from tests.postgres.test_cluster import MESSAGE, RecordingAgent, node_config, start

LEASE_SECONDS = 2.0
MESSAGES = 3

# Node a: the production serve path in a process of its own, with a remote agent that never answers.
STALLED_NODE = """
import asyncio, sys
from pathlib import Path
from postroom.app import App
from postroom.config import load_settings

class Stalled:
    async def deliver(self, attempts):
        print("delivering", sum(len(a.recipients) for a in attempts), flush=True)
        await asyncio.Event().wait()

app = App.open(load_settings(Path(sys.argv[1])))
app.remote_agent = Stalled()
app.run(lambda listening: print("ready", *[f"{i.name}={i.address}" for i in listening], flush=True))
"""


def short_leases(settings: Settings) -> Settings:
    text = settings.source.read_text()
    assert "\nlease_seconds = 300.0" in text
    settings.source.write_text(
        text.replace("\nlease_seconds = 300.0", f"\nlease_seconds = {LEASE_SECONDS}", 1)
    )
    return load_settings(settings.source)


def listed(settings: Settings) -> dict[str, dict[str, object]]:
    result = postroom("node", "list", "--json", config=settings.source)
    assert result.returncode == 0, result.stderr
    return {str(row["node"]): row for row in json.loads(result.stdout)}


def test_a_killed_nodes_leases_expire_and_the_other_node_delivers_each_recipient_once(
    tmp_path: Path, postgres_url: str
) -> None:
    blobs = tmp_path / "shared-blobs"
    blobs.mkdir()
    settings_a = short_leases(node_config(tmp_path / "a", postgres_url, blobs, "node-a"))
    settings_b = short_leases(node_config(tmp_path / "b", postgres_url, blobs, "node-b"))
    setup = App.open(settings_a)
    populate(setup)
    setup.directory.add_contact(OPERATOR, "partner@contoso.com", external_address="someone@remote.example")
    setup.directory.add_contact(OPERATOR, "vendor@contoso.com", external_address="sales@vendor.example")
    setup.close()

    node_a = subprocess.Popen(
        [sys.executable, "-c", STALLED_NODE, str(settings_a.source)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert node_a.stdout is not None
        ready = node_a.stdout.readline().split()
        assert ready[0] == "ready", ready
        mx_host, _, mx_port = dict(item.split("=", 1) for item in ready[1:])["mx"].rpartition(":")
        for number in range(MESSAGES):
            with smtplib.SMTP(mx_host, int(mx_port), timeout=10) as client:
                client.sendmail(
                    "news@partner.example",
                    ["partner@contoso.com", "vendor@contoso.com"],
                    MESSAGE + b"%d" % number,
                )
        leased = 0
        deadline = time.monotonic() + 10
        while leased < 2 * MESSAGES and time.monotonic() < deadline:
            line = node_a.stdout.readline().split()
            assert line[0] == "delivering", line
            leased += int(line[1])
        assert leased == 2 * MESSAGES
        row = listed(settings_a)["node-a"]
        assert (row["state"], row["leases"]) == ("serving", 2 * MESSAGES)
        node_a.send_signal(signal.SIGKILL)
        node_a.wait(10)
        killed = time.monotonic()
    finally:
        if node_a.poll() is None:
            node_a.kill()
            node_a.wait(10)

    delivered: list[tuple[str, str]] = []
    node_b = start(settings_b, RecordingAgent("b", delivered))
    try:
        wait_for(lambda: len(delivered) == 2 * MESSAGES, timeout=LEASE_SECONDS + 10)
        assert time.monotonic() - killed >= LEASE_SECONDS - 0.5, "taken only once the leases expired"
        assert (
            sorted(to for _, to in delivered)
            == ["sales@vendor.example"] * MESSAGES + ["someone@remote.example"] * MESSAGES
        )
        wait_for(lambda: node_b.app.queue_summary().messages == 0, timeout=5)
        time.sleep(LEASE_SECONDS + 0.5)  # nothing comes back: each settled once
        assert len(delivered) == 2 * MESSAGES
        nodes = listed(settings_b)
        assert (nodes["node-a"]["state"], nodes["node-a"]["leases"]) == ("gone", 0)
        assert nodes["node-b"]["state"] == "serving"
    finally:
        node_b.stop()
