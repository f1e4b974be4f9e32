"""APPEND is durable before its OK: append over IMAP to a real `postroom serve`, kill -9 it while
appends are in flight, restart it, and find every acknowledged message in the folder, once."""

from __future__ import annotations

import imaplib
import ssl
from collections.abc import Callable
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

from postroom.app import App
from tests.conftest import populate
from tests.support.durability import acknowledged_before_kill_9
from tests.support.node import make_node
from tests.support.process import ServeProcess

CLIENTS = 3
ACKNOWLEDGED_BEFORE_KILL = 40


def imaps(server: ServeProcess) -> imaplib.IMAP4_SSL:
    host, port = server.listeners["imaps"]
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the node's own certificate; TLS is checked in test_server
    imap = imaplib.IMAP4_SSL(host, port, ssl_context=context, timeout=10)
    imap.login("alice@contoso.com", "alice-pw")
    return imap


def message(number: int, sequence: int) -> bytes:
    mail = EmailMessage()
    mail["From"] = "alice@contoso.com"
    mail["Subject"] = f"draft {number}-{sequence}"
    mail["Message-ID"] = f"<append-{number}-{sequence}@contoso.com>"
    mail.set_content("x" * 2000)
    return mail.as_bytes(policy=SMTP)


def _append_client(
    server: ServeProcess, number: int, stopping: Callable[[], bool], acknowledge: Callable[[str], None]
) -> None:
    sequence = 0
    try:
        imap = imaps(server)
        while not stopping():
            sequence += 1
            typ, _ = imap.append("Drafts", None, None, message(number, sequence))
            if typ == "OK":
                acknowledge(f"draft {number}-{sequence}")
    except (OSError, imaplib.IMAP4.abort, imaplib.IMAP4.error):
        return  # the server died under us: this append was not acknowledged


def test_appended_messages_survive_kill_9(tmp_path: Path) -> None:
    settings = make_node(tmp_path / "node")
    setup = App.open(settings)
    populate(setup)
    setup.close()
    survivors = acknowledged_before_kill_9(
        settings, _append_client, clients=CLIENTS, before_kill=ACKNOWLEDGED_BEFORE_KILL
    )

    restarted = ServeProcess(settings.source).start()
    try:
        imap = imaps(restarted)
        typ, data = imap.select("Drafts", readonly=True)
        assert typ == "OK"
        typ, data = imap.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK"
        subjects = [item[1].decode().partition(":")[2].strip() for item in data if isinstance(item, tuple)]
        imap.logout()
    finally:
        assert restarted.terminate() == 0, "a SIGTERM drains and exits cleanly"
    missing = set(survivors) - set(subjects)
    assert not missing, f"{len(missing)} acknowledged append(s) lost, e.g. {sorted(missing)[:3]}"
    assert len(subjects) == len(set(subjects)), "a message was stored twice"
