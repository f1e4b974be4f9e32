"""A raw SMTP server for client tests: it records how the commands arrived (which commands came in
which read of the socket) and answers from a script, including what a well-behaved server never does.

`ScriptedSmtp(host, port)` serves plaintext SMTP on loopback. Each connection's reads are recorded in
`connections[i].reads`, each read as the list of command verbs it held (message content is not
recorded as commands), so a test sees whether MAIL, RCPT and DATA came together (pipelined) or one per
read. It advertises `keywords` in EHLO, refuses the recipients in `refused` (lower-case address ->
reply line), answers DATA with 354 only when a recipient was accepted (else 554, RFC 2920), and with
`break_tls` answers STARTTLS with 220 and then sends octets that are not TLS and closes: a handshake
that fails. `messages` holds (sender, recipients, content) of each message taken.

*Security:* test code only, on loopback.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import TracebackType


@dataclass
class ScriptedConnection:
    reads: list[list[str]] = field(default_factory=list)  # the command verbs of each read, in order
    starttls: bool = False  # the client asked for STARTTLS on this connection


class ScriptedSmtp:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        keywords: tuple[str, ...] = ("PIPELINING", "8BITMIME", "SIZE 1000000"),
        refused: dict[str, str] | None = None,
        break_tls: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.keywords = keywords
        self.refused = refused or {}
        self.break_tls = break_tls
        self.connections: list[ScriptedConnection] = []
        self.messages: list[tuple[str, tuple[str, ...], bytes]] = []
        self._server: asyncio.Server | None = None

    def reset(self) -> None:
        self.connections.clear()
        self.messages.clear()

    async def __aenter__(self) -> ScriptedSmtp:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        record = ScriptedConnection()
        self.connections.append(record)
        writer.write(b"220 scripted.remote.test ESMTP\r\n")
        buffer = b""
        sender, recipients = "", list[str]()
        content: bytes | None = None  # not None: reading a message
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    return
                buffer += chunk
                verbs: list[str] = []
                out: list[bytes] = []
                while True:
                    if content is not None:
                        probe = b"\r\n" + buffer  # the lone "." of an empty message ends it too
                        end = probe.find(b"\r\n.\r\n")
                        if end < 0:
                            break
                        content, buffer = probe[2 : end + 2], probe[end + 5 :]
                        self.messages.append(
                            (sender, tuple(recipients), content.replace(b"\r\n..", b"\r\n."))
                        )
                        content = None
                        out.append(b"250 2.0.0 taken\r\n")
                        continue
                    line, found, rest = buffer.partition(b"\r\n")
                    if not found:
                        break
                    buffer = rest
                    verb, _, argument = line.decode().partition(" ")
                    verb = verb.upper()
                    verbs.append(verb)
                    if verb == "EHLO":
                        lines = ["scripted.remote.test", *self.keywords, "STARTTLS"]
                        if not self.break_tls:
                            lines.pop()
                        out.append(
                            "".join(
                                f"250{'-' if i < len(lines) - 1 else ' '}{text}\r\n"
                                for i, text in enumerate(lines)
                            ).encode()
                        )
                    elif verb == "STARTTLS":
                        record.starttls = True
                        record.reads.append(verbs)
                        writer.write(b"".join(out) + b"220 2.0.0 go ahead\r\n")
                        await writer.drain()
                        await reader.read(65536)  # the client's hello, answered with what is not TLS
                        writer.write(b"this is not a TLS server hello\r\n" * 4)
                        await writer.drain()
                        writer.close()
                        return
                    elif verb == "MAIL":
                        sender, recipients = argument.partition("<")[2].partition(">")[0], []
                        out.append(b"250 2.1.0 ok\r\n")
                    elif verb == "RCPT":
                        address = argument.partition("<")[2].partition(">")[0]
                        refusal = self.refused.get(address.lower())
                        if refusal:
                            out.append(refusal.encode() + b"\r\n")
                        else:
                            recipients.append(address)
                            out.append(b"250 2.1.5 ok\r\n")
                    elif verb == "DATA":
                        if recipients:
                            content = b""
                            out.append(b"354 go ahead\r\n")
                        else:
                            out.append(b"554 5.5.1 no valid recipients\r\n")
                    elif verb == "RSET":
                        sender, recipients = "", []
                        out.append(b"250 2.0.0 ok\r\n")
                    elif verb == "QUIT":
                        record.reads.append(verbs)
                        writer.write(b"".join(out) + b"221 2.0.0 bye\r\n")
                        await writer.drain()
                        writer.close()
                        return
                    else:
                        out.append(b"502 5.5.2 not implemented\r\n")
                if verbs:
                    record.reads.append(verbs)
                if out:
                    writer.write(b"".join(out))
                    await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()
