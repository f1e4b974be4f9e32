"""What a mailbox owner sees while the migration runs: an IMAP session of the target mailbox, idling
on a serving node, is told of the copies as they commit (the mailstore announces `mailbox:<id>`
after each commit; the CLI process's notification reaches the serving process), and then fetches
the very bytes, flags and internal dates of the source."""

from __future__ import annotations

import dataclasses
import imaplib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from postroom.cli import app
from postroom.cli.context import state
from postroom.config import load_settings
from tests.support import dovecot
from tests.support.dovecot import Dovecot, Fixture
from tests.support.node import RunningNode, make_node, running

PASSWORD = "zoe-postroom-pw"
RAW = b"From: a@example.org\r\nSubject: migrated %d\r\nMessage-ID: <m%d@example.org>\r\n\r\nbody %d\r\n"


@pytest.fixture(scope="module")
def source() -> Iterator[Dovecot]:
    with dovecot.running() as server:
        server.add_user("zoe", "zoe-pw")
        server.fill(
            "zoe", "INBOX", [Fixture(RAW % (n, n, n), ("\\Seen",), 1_600_000_000.0 + n) for n in range(3)]
        )
        yield server


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    settings = make_node(tmp_path_factory.mktemp("migration-imap") / "node")
    for command in (
        ["tenant", "add", "contoso"],
        ["domain", "add", "contoso.test", "--tenant", "contoso", "--verified"],
    ):
        assert cli(settings.source, *command).exit_code == 0
    result = CliRunner().invoke(
        app,
        ["-c", str(settings.source), "mailbox", "add", "zoe@contoso.test", "--password-stdin"],
        input=PASSWORD + "\n",
    )
    assert result.exit_code == 0, result.output
    settings = load_settings(settings.source)
    settings = dataclasses.replace(
        settings, imap=dataclasses.replace(settings.imap, allow_plaintext_login=True)
    )
    with running(settings) as serving:
        yield serving
    if state.node is not None:
        state.node.close()
        state.node = None


def cli(config: Path, *args: str) -> object:
    return CliRunner().invoke(app, ["-c", str(config), *args], env={"COLUMNS": "200"})


def read_until(sock: socket.socket, wanted: bytes, timeout: float = 10.0) -> bytes:
    sock.settimeout(0.2)
    seen = b""
    deadline = time.monotonic() + timeout
    while wanted not in seen:
        if time.monotonic() > deadline:
            raise AssertionError(f"no {wanted!r} within {timeout} s; got {seen!r}")
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            raise AssertionError(f"the server closed the connection; got {seen!r}")
        seen += chunk
    return seen


def test_an_idling_session_sees_the_copies_and_fetches_them_intact(
    node: RunningNode, source: Dovecot, tmp_path: Path
) -> None:
    host, port = node.address("imap")
    with socket.create_connection((host, port), timeout=10) as sock:
        read_until(sock, b"* OK")
        sock.sendall(f"a LOGIN zoe@contoso.test {PASSWORD}\r\n".encode())
        read_until(sock, b"a OK")
        sock.sendall(b"b SELECT INBOX\r\n")
        assert b"* 0 EXISTS" in read_until(sock, b"b OK")
        sock.sendall(b"c IDLE\r\n")
        read_until(sock, b"+ ")

        csv = tmp_path / "batch.csv"
        csv.write_text("EmailAddress,UserName,Password\nzoe@contoso.test,zoe,zoe-pw\n")
        result = CliRunner().invoke(
            app,
            [
                "-c",
                str(node.settings.source),
                "migrate",
                "imap",
                "--csv",
                str(csv),
                "--host",
                source.host,
                "--port",
                str(source.tls_port),
                "--ca-file",
                str(source.ca),
                "--json",
            ],
        )
        assert result.exit_code == 0, result.output

        assert b"* 3 EXISTS" in read_until(sock, b"* 3 EXISTS")
        sock.sendall(b"DONE\r\n")
        read_until(sock, b"c OK")
        sock.sendall(b"d LOGOUT\r\n")

    client = imaplib.IMAP4(host, port, timeout=10)
    client.login("zoe@contoso.test", PASSWORD)
    client.select("INBOX", readonly=True)
    _, answer = client.uid("FETCH", "1:*", "(FLAGS INTERNALDATE BODY.PEEK[])")
    client.logout()
    bodies = sorted(item[1] for item in answer if isinstance(item, tuple))
    assert bodies == sorted(RAW % (n, n, n) for n in range(3))
    heads = [item[0] for item in answer if isinstance(item, tuple)]
    assert all(b"\\Seen" in head for head in heads)
    assert sorted(imaplib.Internaldate2tuple(head)[:6] for head in heads) == [
        time.localtime(1_600_000_000 + n)[:6] for n in range(3)
    ]
