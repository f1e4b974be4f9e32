"""No acknowledgement before durability: kill -9 the server mid-stream; every 250 survives.

Several clients stream messages at a real `postroom serve` process; the server is killed with
SIGKILL while transactions are in flight; after a restart, every message that got 250 is delivered
to its mailbox exactly once. Messages that were not acknowledged may or may not arrive (the client
would retry them), but nothing acknowledged is lost.
"""

from __future__ import annotations

import smtplib
import threading

from postroom.app import App
from postroom.config import Settings
from tests.conftest import populate, wait_for
from tests.support.process import ServeProcess

CLIENTS = 6


def test_every_acknowledged_message_survives_kill_9(node_settings: Settings) -> None:
    setup = App.open(node_settings)
    populate(setup)
    setup.close()
    server = ServeProcess(node_settings.source).start()
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(number: int) -> None:
        sequence = 0
        while not stop.is_set():
            try:
                with smtplib.SMTP(*server.mx, timeout=10) as smtp:
                    while not stop.is_set():
                        sequence += 1
                        message_id = f"<durable-{number}-{sequence}@partner.example>"
                        body = (
                            f"Message-ID: {message_id}\r\nSubject: durable\r\n\r\n{'x' * 2000}\r\n".encode()
                        )
                        smtp.sendmail("load@partner.example", ["alice@contoso.com"], body)
                        with lock:
                            acknowledged.append(message_id)
            except (OSError, smtplib.SMTPException):
                return  # the server died under us: this transaction was not acknowledged

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    wait_for(lambda: len(acknowledged) >= 150, timeout=60)
    server.kill()
    stop.set()
    for thread in threads:
        thread.join(15)
    with lock:
        survivors = list(acknowledged)
    assert survivors, "the load ran before the kill"

    restarted = ServeProcess(node_settings.source).start()
    try:
        reader = App.open(node_settings)
        try:
            wait_for(lambda: reader.queue_summary().pending == 0, timeout=60)
            delivered = [m.message_id for m in reader.mailstore.list_messages("alice@contoso.com")]
        finally:
            reader.close()
    finally:
        assert restarted.terminate() == 0
    missing = set(survivors) - set(delivered)
    assert not missing, f"{len(missing)} acknowledged message(s) lost, e.g. {sorted(missing)[:3]}"
    assert len(delivered) == len(set(delivered)), "a message was delivered twice"
