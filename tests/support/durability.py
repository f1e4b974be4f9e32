"""The kill -9 check, shared by every store: stream mail at a real `postroom serve`, SIGKILL it while
transactions are in flight, restart it, and require every acknowledged message in its mailbox once.
`acknowledged_before_kill_9` is the load-and-kill half, for any protocol (SMTP here, IMAP APPEND in
tests/imap/test_durability.py).
"""

from __future__ import annotations

import smtplib
import threading
from collections.abc import Callable

from postroom.app import App
from postroom.config import Settings
from tests.conftest import populate, wait_for
from tests.support.process import ServeProcess
from tests.support.records import stored_messages

CLIENTS = 6
ACKNOWLEDGED_BEFORE_KILL = 150


Client = Callable[[ServeProcess, int, Callable[[], bool], Callable[[str], None]], None]


def acknowledged_before_kill_9(
    settings: Settings, client: Client, *, clients: int, before_kill: int
) -> list[str]:
    """Start `postroom serve`, run `clients` threads of `client(server, number, stopping, acknowledge)`
    (each calls `acknowledge(name)` for every message the server acknowledged, and returns when the
    server dies under it or `stopping()`), SIGKILL the server once `before_kill` were acknowledged;
    the names acknowledged."""
    server = ServeProcess(settings.source).start()
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def acknowledge(name: str) -> None:
        with lock:
            acknowledged.append(name)

    threads = [
        threading.Thread(target=client, args=(server, number, stop.is_set, acknowledge))
        for number in range(clients)
    ]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: len(acknowledged) >= before_kill, timeout=60)
    finally:
        server.kill()
        stop.set()
        for thread in threads:
            thread.join(15)
    with lock:
        survivors = list(acknowledged)
    assert survivors, "the load ran before the kill"
    return survivors


def _smtp_client(
    server: ServeProcess, number: int, stopping: Callable[[], bool], acknowledge: Callable[[str], None]
) -> None:
    sequence = 0
    try:
        with smtplib.SMTP(*server.mx, timeout=10) as smtp:
            while not stopping():
                sequence += 1
                message_id = f"<durable-{number}-{sequence}@partner.example>"
                body = f"Message-ID: {message_id}\r\nSubject: durable\r\n\r\n{'x' * 2000}\r\n"
                smtp.sendmail("load@partner.example", ["alice@contoso.com"], body.encode())
                acknowledge(message_id)
    except (OSError, smtplib.SMTPException):
        return  # the server died under us: this transaction was not acknowledged


def assert_acknowledged_mail_survives_kill_9(settings: Settings) -> None:
    setup = App.open(settings)
    populate(setup)
    setup.close()
    survivors = acknowledged_before_kill_9(
        settings, _smtp_client, clients=CLIENTS, before_kill=ACKNOWLEDGED_BEFORE_KILL
    )

    restarted = ServeProcess(settings.source).start()
    try:
        reader = App.open(settings)
        try:
            wait_for(lambda: reader.queue_summary().pending == 0, timeout=60)
            delivered = [
                m.message_id for m in stored_messages(reader.directory, reader.mailstore, "alice@contoso.com")
            ]
        finally:
            reader.close()
    finally:
        assert restarted.terminate() == 0, "a SIGTERM drains and exits cleanly"
    missing = set(survivors) - set(delivered)
    assert not missing, f"{len(missing)} acknowledged message(s) lost, e.g. {sorted(missing)[:3]}"
    assert len(delivered) == len(set(delivered)), "a message was delivered twice"
