"""The MX endpoint driven by swaks, the SMTP test tool IT pros use: plain, pipelined and over TLS."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.conftest import Hosted, wait_for
from tests.support.node import RunningNode
from tests.support.records import exported, stored_messages

SWAKS = shutil.which("swaks")
if SWAKS is None and os.environ.get("CI"):
    raise RuntimeError("swaks is missing: .ci/run installs it with apt-get")
pytestmark = pytest.mark.skipif(SWAKS is None, reason="swaks is not installed (apt-get install swaks)")


def swaks(node: RunningNode, *args: str) -> subprocess.CompletedProcess[str]:
    host, port = node.mx
    assert SWAKS is not None
    return subprocess.run(
        [SWAKS, "--server", host, "--port", str(port), "--helo", "mta.partner.example", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("mode", [[], ["--pipeline"], ["--tls"]], ids=["plain", "pipelined", "starttls"])
def test_swaks_delivers_to_a_mailbox(hosted: Hosted, mx_node: RunningNode, mode: list[str]) -> None:
    result = swaks(
        mx_node,
        *mode,
        "--from",
        "sender@partner.example",
        "--to",
        "bob@contoso.com",
        "--header",
        "Subject: swaks test",
        "--body",
        "sent by swaks",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "250 2.6.0" in result.stdout
    wait_for(lambda: len(stored_messages(hosted.app.directory, hosted.app.mailstore, "bob@contoso.com")) == 1)
    [message] = stored_messages(hosted.app.directory, hosted.app.mailstore, "bob@contoso.com")
    assert message.subject == "swaks test"
    raw = exported(hosted.app.directory, hosted.app.mailstore, "bob@contoso.com", message.uid)
    assert b"sent by swaks" in raw
    assert (b"with ESMTPS" in raw) == (mode == ["--tls"])


def test_swaks_sees_dbeb_and_relay_refusals(mx_node: RunningNode) -> None:
    unknown = swaks(mx_node, "--from", "a@partner.example", "--to", "nobody@contoso.com")
    assert unknown.returncode != 0
    assert "550 5.4.1 Recipient address rejected: Access denied" in unknown.stdout
    relay = swaks(mx_node, "--from", "a@partner.example", "--to", "victim@elsewhere.example")
    assert relay.returncode != 0
    assert "550 5.7.1 Unable to relay" in relay.stdout
