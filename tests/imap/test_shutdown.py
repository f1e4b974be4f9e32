"""An IDLE session through many polls, then the node's stop: the polls say nothing (nothing changed)
and never end the session, and the stop ends it with `* BYE Server shutting down`, not the text of
the IDLE limit."""

from __future__ import annotations

import dataclasses
import socket
import ssl
import time
from pathlib import Path

from postroom.app import App
from postroom.model.scope import OPERATOR
from tests.conftest import populate
from tests.support.node import RunningNode, make_node

PASSWORD = "idle-password-1"


def test_polls_during_idle_say_nothing_and_the_stop_says_shutting_down(tmp_path: Path) -> None:
    settings = make_node(tmp_path / "node")
    settings = dataclasses.replace(settings, imap=dataclasses.replace(settings.imap, poll_seconds=0.1))
    app = App.open(settings)
    populate(app)
    app.directory.add_mailbox(OPERATOR, "idler@contoso.com", password=PASSWORD)
    app.close()
    node = RunningNode(settings).start()
    stopped = False
    try:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the node's own certificate; TLS is checked in test_server
        host, port = node.address("imaps")
        with context.wrap_socket(
            socket.create_connection((host, port), timeout=15), server_hostname=host
        ) as tls:
            tls.sendall(f"a LOGIN idler@contoso.com {PASSWORD}\r\nb SELECT INBOX\r\nc IDLE\r\n".encode())
            answer = b""
            while not answer.endswith(b"+ idling\r\n"):
                answer += tls.recv(65536)
            tls.settimeout(2.0)  # about twenty polls
            started = time.monotonic()
            try:
                said = tls.recv(65536)
            except TimeoutError:
                said = b""
            assert said == b"", f"after {time.monotonic() - started:.2f} s of IDLE the server said {said!r}"
            node.stop()
            stopped = True
            tls.settimeout(15)
            ending = b""
            while chunk := tls.recv(65536):
                ending += chunk
            assert ending == b"* BYE Server shutting down\r\n"
    finally:
        if not stopped:
            node.stop()
