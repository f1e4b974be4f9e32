"""The outbound SMTP client's bounds, from the outside: a hostile or broken server on loopback sends
what it likes, and the client refuses it with the documented exception instead of reading on."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from postroom.smtp.client import (
    MAX_REPLY_LINE,
    MAX_REPLY_LINES,
    ClientTimeouts,
    ProtocolViolation,
    ReplyTimeout,
    ServerDisconnected,
    SmtpClient,
    SmtpClientError,
    stuffed,
)

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
TIMEOUTS = ClientTimeouts(connect=2.0, command=0.5, data=0.5)


@asynccontextmanager
async def server(script: Script) -> AsyncIterator[SmtpClient]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await script(reader, writer)
        except ConnectionError:
            pass
        finally:
            writer.close()

    listener = await asyncio.start_server(serve, "127.0.0.31", 0)
    port = listener.sockets[0].getsockname()[1]
    client = await SmtpClient.connect("127.0.0.31", port, TIMEOUTS)
    try:
        yield client
    finally:
        client.close()
        listener.close()
        await listener.wait_closed()


def sends(data: bytes, *, then_wait: bool = True) -> Script:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        await writer.drain()
        if then_wait:
            await reader.read(1)

    return script


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"220 " + b"x" * MAX_REPLY_LINE + b"\r\n", ProtocolViolation),  # one endless line
        (b"220-x\r\n" * (MAX_REPLY_LINES + 1) + b"220 x\r\n", ProtocolViolation),  # endless continuation
        (b"HTTP/1.1 400 Bad Request\r\n", ProtocolViolation),  # not SMTP
        (b"220-one\r\n250 two\r\n", ProtocolViolation),  # codes change inside one reply
        (b"22", ServerDisconnected),  # closed mid-reply
        (b"", ReplyTimeout),  # silence
    ],
)
async def test_a_bad_greeting_is_refused(data: bytes, error: type[SmtpClientError]) -> None:
    async with server(sends(data, then_wait=data != b"22")) as client:
        with pytest.raises(error):
            await client.read_reply()


async def test_a_multiline_reply_is_one_reply() -> None:
    async with server(sends(b"220-first\r\n220-second\r\n220 third\r\n")) as client:
        reply = await client.read_reply()
    assert (reply.code, reply.text) == (220, "first\nsecond\nthird")


async def test_plaintext_injected_after_starttls_is_refused() -> None:
    # CVE-2011-0411 from the client's side: a "reply" sent in plaintext with the 220 to STARTTLS
    # would otherwise be read as if it came over TLS.
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 ready\r\n")
        await reader.readline()
        writer.write(b"220 go ahead\r\n250 injected\r\n")
        await writer.drain()
        await reader.read(1)

    async with server(script) as client:
        await client.read_reply()
        await client.write_commands([b"STARTTLS"])
        reply = await client.read_reply()
        await asyncio.sleep(0.05)  # the injected octets arrive
        with pytest.raises(ProtocolViolation):
            await client.starttls(ssl.create_default_context(), "mx.test")
    assert reply.code == 220


async def test_a_reply_to_no_command_breaks_the_connection() -> None:
    async with server(sends(b"220 ready\r\n250 unasked\r\n")) as client:
        await client.read_reply()
        await asyncio.sleep(0.05)
        with pytest.raises(ProtocolViolation):
            await client.write_commands([b"MAIL FROM:<a@example.com>"])


async def test_control_characters_never_reach_the_wire() -> None:
    async with server(sends(b"220 ready\r\n")) as client:
        await client.read_reply()
        with pytest.raises(ValueError):
            await client.write_commands([b"RCPT TO:<a@example.com>\r\nDATA"])


def test_content_is_dot_stuffed_with_crlf_line_endings() -> None:
    assert stuffed(b".a\nb\r\n.c\rd") == b"..a\r\nb\r\n..c\r\nd\r\n.\r\n"
    assert stuffed(b"") == b".\r\n"  # RFC 2920: the lone "." after an unwanted 354
