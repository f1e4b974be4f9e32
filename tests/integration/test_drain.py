"""A stop whose drain grace expires while sessions wait on a commit leaves a node that still works.

The SQLite write lock is held from outside (`BEGIN IMMEDIATE` on another connection), so the
node's writer blocks in the middle of the sessions' commits; the node's scheduler queues a delivery
round behind them. The node is stopped with a short `[node] drain_seconds`: the sessions are cut
with 421. Then the lock is released: the node must finish its stop and exit 0 (the writer is still
alive to commit the scheduler's round), and after a restart mail flows.
"""

from __future__ import annotations

import smtplib
import sqlite3
import subprocess
import threading
import time

import pytest

from postroom.app import App
from postroom.config import Settings
from tests.conftest import populate
from tests.support.process import ServeProcess

SCHEDULER_IDLE = 5.0  # the scheduler runs a round at least this often: one lands behind the stuck commits


def send(address: tuple[str, int], number: int) -> int | str:
    """One message to alice; the final reply code, or how the connection ended."""
    body = f"Message-ID: <drain-{number}@partner.example>\r\nSubject: drain\r\n\r\nhello\r\n"
    try:
        with smtplib.SMTP(*address, timeout=60) as smtp:
            smtp.sendmail("sender@partner.example", ["alice@contoso.com"], body.encode())
            return 250
    except smtplib.SMTPResponseException as error:
        return error.smtp_code
    except (OSError, smtplib.SMTPException) as error:
        return type(error).__name__


@pytest.mark.slow
def test_a_stop_that_cuts_sessions_mid_commit_leaves_a_working_writer(node_settings: Settings) -> None:
    config = node_settings.source
    config.write_text(config.read_text().replace("drain_seconds = 30.0", "drain_seconds = 0.5"))
    setup = App.open(node_settings)
    populate(setup)
    setup.close()
    server = ServeProcess(config).start()
    lock = sqlite3.connect(node_settings.data_dir / "postroom.db", isolation_level=None)
    try:
        lock.execute("BEGIN IMMEDIATE")  # the node's writer now waits on every commit
        replies: dict[int, int | str] = {}
        clients = [
            threading.Thread(target=lambda n=n: replies.__setitem__(n, send(server.mx, n))) for n in range(2)
        ]
        for client in clients:
            client.start()
        time.sleep(SCHEDULER_IDLE + 1.0)
        assert server.process is not None
        server.process.terminate()
        for client in clients:
            client.join(30)
        assert replies == {0: 421, 1: 421}, "the drain grace expired: both sessions were cut"
        lock.execute("ROLLBACK")
        assert server.process.wait(30) == 0, "the node finishes its stop once the lock is released"
    except subprocess.TimeoutExpired:
        pytest.fail("the node hung on stop: its writer died under a cut session")
    finally:
        lock.close()
        if server.process is not None and server.process.poll() is None:
            server.kill()

    restarted = ServeProcess(config).start()
    try:
        assert send(restarted.mx, 99) == 250
    finally:
        assert restarted.terminate() == 0
    reader = App.open(node_settings)
    try:
        delivered = [m.message_id for m in reader.mailstore.list_messages("alice@contoso.com")]
    finally:
        reader.close()
    assert "<drain-99@partner.example>" in delivered
