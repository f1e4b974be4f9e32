"""The source server is a stranger's: what a hostile IMAP server can make the migration hold is
bounded (a literal it announces, a line without end), and each bound fails that mailbox with a
message instead of filling memory. A scripted server on loopback (127.0.51.2) plays the stranger."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable, Iterator

import pytest

from postroom.migration import Security, SourceError, SourceServer, target_flags

HOST = "127.0.51.2"
Answer = Callable[[str, str], bytes]  # (tag, command line) -> what the server sends back


def _serve(listener: socket.socket, answer: Answer) -> None:
    connection, _ = listener.accept()
    with connection:
        connection.sendall(b"* OK [CAPABILITY IMAP4rev1] a stranger's server\r\n")
        buffer = b""
        while True:
            data = connection.recv(65536)
            if not data:
                return
            buffer += data
            while b"\r\n" in buffer:
                line, buffer = buffer.split(b"\r\n", 1)
                tag, _, command = line.decode().partition(" ")
                try:
                    connection.sendall(answer(tag, command))
                except OSError:
                    return


def _ordinary(tag: str, command: str) -> bytes:
    verb = command.split(" ", 1)[0].upper()
    if verb == "CAPABILITY":
        return f"* CAPABILITY IMAP4rev1\r\n{tag} OK done\r\n".encode()
    if verb == "EXAMINE":
        return f"* 1 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n{tag} OK [READ-ONLY] done\r\n".encode()
    if verb == "LOGOUT":
        return f"* BYE bye\r\n{tag} OK done\r\n".encode()
    return f"{tag} OK done\r\n".encode()


@pytest.fixture
def stranger() -> Iterator[Callable[[Answer], SourceServer]]:
    listeners: list[socket.socket] = []

    def start(answer: Answer) -> SourceServer:
        listener = socket.create_server((HOST, 0))
        listeners.append(listener)
        threading.Thread(target=_serve, args=(listener, answer), daemon=True).start()
        port = listener.getsockname()[1]
        return SourceServer(HOST, port, Security.PLAIN, ssl.create_default_context())

    yield start
    for listener in listeners:
        listener.close()


def test_an_announced_literal_over_the_limit_is_refused_before_it_is_read(
    stranger: Callable[[Answer], SourceServer],
) -> None:
    def answer(tag: str, command: str) -> bytes:
        if command.upper().startswith("UID FETCH"):
            return b"* 1 FETCH (UID 1 BODY[] {99999999999}\r\n"  # and nothing after: never sent
        return _ordinary(tag, command)

    with stranger(answer).open("user", "password", max_literal=100_000) as mailbox:
        assert mailbox.select("INBOX") == 7
        with pytest.raises(SourceError, match="literal of 99999999999 octets"):
            mailbox.bodies([1])


def test_a_line_without_end_is_refused(stranger: Callable[[Answer], SourceServer]) -> None:
    def answer(tag: str, command: str) -> bytes:
        if command.upper().startswith("LIST"):
            return b'* LIST () "." "' + b"a" * 1_100_000 + b'"\r\n' + f"{tag} OK done\r\n".encode()
        return _ordinary(tag, command)

    with (
        stranger(answer).open("user", "password", max_literal=100_000) as mailbox,
        pytest.raises(SourceError, match="failed LIST"),
    ):
        mailbox.folders()


def test_a_refused_login_names_the_user_and_the_fix_but_never_the_password(
    stranger: Callable[[Answer], SourceServer],
) -> None:
    def answer(tag: str, command: str) -> bytes:
        if command.upper().startswith("LOGIN"):
            return f"{tag} NO [AUTHENTICATIONFAILED] no\r\n".encode()
        return _ordinary(tag, command)

    with pytest.raises(SourceError) as refused:
        stranger(answer).open("someone", "hunter2", max_literal=100_000)
    assert "refused the login of 'someone'" in str(refused.value)
    assert "hunter2" not in str(refused.value)


@pytest.mark.parametrize(
    ("flags", "kept", "dropped"),
    [
        (
            ("\\SEEN", "\\answered", "\\Recent", "\\Deleted", "$Label1"),
            ["\\Seen", "\\Answered", "$Label1"],
            "",
        ),
        (("\\Flagged", "bad word", "x]y"), ["\\Flagged"], "'bad word', 'x]y'"),
        (tuple(f"k{n:03}" for n in range(60)), None, "not copied"),
    ],
)
def test_flags_of_a_copy(flags: tuple[str, ...], kept: list[str] | None, dropped: str) -> None:
    copied, note = target_flags(flags)
    if kept is not None:
        assert copied == kept
    assert len(" ".join(copied)) <= 200
    assert (dropped in note) if dropped else note == ""
