"""The SMTP listener on loopback, driven by `smtplib` and by raw sockets, against the in-memory twin."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from contextlib import suppress
from dataclasses import replace
from pathlib import Path

import pytest

from postroom.config.settings import ListenAddress, SmtpLimits
from postroom.model import replies
from postroom.smtp import ConnectionInfo, MemoryBudget, SmtpListener

from .harness import HOSTNAME, RawClient, serving
from .twin import MemoryPostOffice, MemorySession

pytestmark = pytest.mark.integration

LIMITS = SmtpLimits()
MESSAGE = "Subject: hello\r\nFrom: alice@sender.example\r\n\r\nHi Bob.\r\n.leading dot\r\n"


def smtplib_send(
    port: int, *, starttls: ssl.SSLContext | None = None, implicit: ssl.SSLContext | None = None
) -> dict[str, tuple[int, bytes]]:
    """Send MESSAGE with smtplib (blocking: run it in a thread); returns smtplib's refused recipients."""
    if implicit is not None:
        client: smtplib.SMTP = smtplib.SMTP_SSL("127.0.0.1", port, context=implicit, timeout=5)
    else:
        client = smtplib.SMTP("127.0.0.1", port, timeout=5)
    with client:
        client.ehlo("client.example")
        if starttls is not None:
            client.starttls(context=starttls)
            client.ehlo("client.example")
        return client.sendmail(
            "alice@sender.example", ["bob@postroom.test", "unknown@postroom.test"], MESSAGE.encode()
        )


async def test_smtplib_sends_a_message(office: MemoryPostOffice) -> None:
    async with serving(office) as listener:
        refused = await asyncio.to_thread(smtplib_send, listener.bound[0].port)
    assert refused == {"unknown@postroom.test": (550, b"5.1.10 Recipient not found")}
    [stored] = office.messages
    assert stored.content == MESSAGE.encode()
    assert [str(r) for r in stored.recipients] == ["bob@postroom.test"]
    assert stored.helo == "client.example" and stored.tls is None
    [session] = office.sessions
    assert session.calls == ["connect", "ehlo", "mail", "rcpt", "rcpt", "data", "reset", "close"]
    assert session.info.peer_ip == "127.0.0.1" and session.info.listener_name == "mx"


async def test_starttls_with_smtplib(
    office: MemoryPostOffice, server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    async with serving(office, ssl_context=server_tls) as listener:
        await asyncio.to_thread(smtplib_send, listener.bound[0].port, starttls=client_tls)
    [stored] = office.messages
    assert stored.tls is not None and stored.tls.version.startswith("TLS") and stored.tls.cipher
    calls = office.sessions[0].calls
    assert calls[:5] == ["connect", "ehlo", "reset", "tls_started", "ehlo"]


async def test_implicit_tls_with_smtplib(
    office: MemoryPostOffice, server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    async with serving(office, ssl_context=server_tls, implicit_tls=True) as listener:
        await asyncio.to_thread(smtplib_send, listener.bound[0].port, implicit=client_tls)
    [stored] = office.messages
    assert stored.tls is not None and stored.tls.version.startswith("TLS")
    assert office.sessions[0].calls[:3] == ["connect", "tls_started", "ehlo"]


async def test_pipelined_commands_in_one_packet(office: MemoryPostOffice) -> None:
    async with serving(office) as listener:
        client = await RawClient.connect(listener)
        assert await client.reply() == (220, None)
        await client.send(
            b"EHLO client.example\r\nMAIL FROM:<a@sender.example>\r\nRCPT TO:<b@postroom.test>\r\n"
            b"RCPT TO:<unknown@postroom.test>\r\nRCPT TO:<c@postroom.test>\r\nDATA\r\n"
        )
        assert await client.replies(6) == [
            (250, None),
            (250, "2.1.0"),
            (250, "2.1.5"),
            (550, "5.1.10"),
            (250, "2.1.5"),
            (354, None),
        ]
        await client.send(b"line\r\n.\r\nQUIT\r\n")
        assert await client.replies(2) == [(250, "2.6.0"), (221, "2.0.0")]
        assert await client.at_eof()
        await client.close()
    [stored] = office.messages
    assert stored.content == b"line\r\n" and len(stored.recipients) == 2


@pytest.mark.parametrize("fake_end", [b"\n.\n", b"\r\n.\n", b"\n.\r\n", b"\r.\r"], ids=repr)
async def test_smuggling_over_the_socket_is_refused(office: MemoryPostOffice, fake_end: bytes) -> None:
    async with serving(office) as listener:
        client = await RawClient.connect(listener)
        await client.reply()
        await client.send(
            b"EHLO c.example\r\nMAIL FROM:<a@sender.example>\r\nRCPT TO:<b@postroom.test>\r\nDATA\r\n"
        )
        await client.replies(4)
        await client.send(
            b"hello" + fake_end + b"MAIL FROM:<evil@attacker.example>\r\nRCPT TO:<victim@postroom.test>\r\n"
            b"DATA\r\nforged\r\n.\r\nNOOP\r\n"
        )
        assert await client.replies(2) == [(550, "5.6.11"), (250, "2.0.0")]
        await client.close()
    assert office.messages == []
    assert office.sessions[0].calls.count("mail") == 1


async def test_session_exception_is_451_and_the_session_goes_on(office: MemoryPostOffice) -> None:
    async with serving(office) as listener:
        client = await RawClient.connect(listener)
        await client.reply()
        await client.send(
            b"EHLO c.example\r\nMAIL FROM:<a@sender.example>\r\nRCPT TO:<boom@postroom.test>\r\n"
            b"RCPT TO:<b@postroom.test>\r\nDATA\r\nok\r\n.\r\n"
        )
        assert await client.replies(6) == [
            (250, None),
            (250, "2.1.0"),
            (451, "4.3.0"),
            (250, "2.1.5"),
            (354, None),
            (250, "2.6.0"),
        ]
        await client.send(b"MAIL FROM:<crash@sender.example>\r\nRCPT TO:<b@postroom.test>\r\nDATA\r\n")
        await client.replies(3)
        await client.send(b"x\r\n.\r\nNOOP\r\n")
        assert await client.replies(2) == [(451, "4.3.0"), (250, "2.0.0")]
        await client.close()


async def test_connect_refused_by_the_application(office: MemoryPostOffice) -> None:
    office.refuse_connect = replies.TOO_MANY_CONNECTIONS_FROM_IP
    async with serving(office) as listener:
        client = await RawClient.connect(listener)
        assert await client.reply() == (421, "4.7.0")
        assert await client.at_eof()
        await client.close()
    assert office.sessions[0].calls == ["connect", "close"]


async def test_command_timeout(office: MemoryPostOffice) -> None:
    async with serving(office, replace(LIMITS, command_timeout=0.2)) as listener:
        client = await RawClient.connect(listener)
        assert await client.reply() == (220, None)
        assert await client.reply() == (421, "4.4.2")
        assert await client.at_eof()
        await client.close()
    assert office.sessions[0].closed


async def test_data_timeout(office: MemoryPostOffice) -> None:
    async with serving(office, replace(LIMITS, command_timeout=5, data_timeout=0.2)) as listener:
        client = await RawClient.connect(listener)
        await client.reply()
        await client.send(
            b"EHLO c.example\r\nMAIL FROM:<>\r\nRCPT TO:<b@postroom.test>\r\nDATA\r\npart of a body"
        )
        assert await client.replies(5) == [
            (250, None),
            (250, "2.1.0"),
            (250, "2.1.5"),
            (354, None),
            (421, "4.4.2"),
        ]
        assert await client.at_eof()
        await client.close()
    assert office.messages == []


async def test_connection_limits(office: MemoryPostOffice) -> None:
    async with serving(office, replace(LIMITS, max_connections=2)) as listener:
        first, second = await RawClient.connect(listener), await RawClient.connect(listener)
        assert [await first.reply(), await second.reply()] == [(220, None), (220, None)]
        third = await RawClient.connect(listener)
        assert await third.reply() == (421, "4.7.0")
        assert await third.at_eof()
        await first.send(b"QUIT\r\n")
        assert await first.reply() == (221, "2.0.0")
        await first.at_eof()
        for _ in range(50):  # the first connection's task has to finish before its slot is free
            if listener.connection_count < 2:
                break
            await asyncio.sleep(0.01)
        fourth = await RawClient.connect(listener)
        assert await fourth.reply() == (220, None)
        for client in (first, second, third, fourth):
            await client.close()
    assert len(office.sessions) == 3  # no session for the refused connection


async def test_connection_limit_per_ip(office: MemoryPostOffice) -> None:
    async with serving(office, replace(LIMITS, max_connections_per_ip=1)) as listener:
        first = await RawClient.connect(listener)
        assert await first.reply() == (220, None)
        second = await RawClient.connect(listener)
        assert await second.reply() == (421, "4.7.0")
        for client in (first, second):
            await client.close()


async def test_stop_closes_idle_connections_and_lets_transactions_finish(office: MemoryPostOffice) -> None:
    office.data_delay = 0.3
    async with serving(office) as listener:
        idle = await RawClient.connect(listener)
        busy = await RawClient.connect(listener)
        await idle.reply()
        await busy.reply()
        await busy.send(
            b"EHLO c.example\r\nMAIL FROM:<a@sender.example>\r\nRCPT TO:<b@postroom.test>\r\nDATA\r\n"
        )
        await busy.replies(4)
        await busy.send(b"in flight\r\n.\r\n")
        await asyncio.sleep(0.05)  # the commit has started
        stopping = asyncio.create_task(listener.stop(grace=5))
        assert await idle.reply() == (421, "4.3.2")
        assert await busy.replies(2) == [(250, "2.6.0"), (421, "4.3.2")]
        await stopping
        assert await idle.at_eof() and await busy.at_eof()
        for client in (idle, busy):
            await client.close()
    assert [m.content for m in office.messages] == [b"in flight\r\n"]
    assert all(session.closed for session in office.sessions)


async def test_stop_grace_expires_for_a_stuck_transaction(office: MemoryPostOffice) -> None:
    async with serving(office) as listener:
        client = await RawClient.connect(listener)
        await client.reply()
        await client.send(b"EHLO c.example\r\nMAIL FROM:<a@sender.example>\r\n")
        await client.replies(2)
        await listener.stop(grace=0.2)
        assert await client.reply() == (421, "4.3.2")
        assert await client.at_eof()
        await client.close()
        with pytest.raises(OSError):
            await RawClient.connect(listener)


async def test_too_many_errors_disconnects(office: MemoryPostOffice) -> None:
    async with serving(office, replace(LIMITS, max_errors=2)) as listener:
        client = await RawClient.connect(listener)
        await client.reply()
        await client.send(b"FROB\r\nFROB\r\nNOOP\r\n")
        assert await client.replies(3) == [(500, "5.5.2"), (500, "5.5.2"), (421, "4.7.0")]
        assert await client.at_eof()
        await client.close()


async def test_many_messages_on_one_connection_and_many_connections(office: MemoryPostOffice) -> None:
    body = b"Subject: load\r\n\r\n" + b"x" * 4000 + b"\r\n"

    async def one_client(number: int) -> None:
        client = await RawClient.connect(listener)
        await client.reply()
        await client.send(b"EHLO c.example\r\n")
        await client.reply()
        for _ in range(20):
            await client.send(
                b"MAIL FROM:<a@sender.example>\r\nRCPT TO:<b%d@postroom.test>\r\nDATA\r\n" % number
            )
            assert await client.replies(3) == [(250, "2.1.0"), (250, "2.1.5"), (354, None)]
            await client.send(body + b".\r\n")
            assert await client.reply() == (250, "2.6.0")
        await client.send(b"QUIT\r\n")
        await client.reply()
        await client.close()

    async with serving(office) as listener:
        await asyncio.gather(*(one_client(n) for n in range(10)))
    assert len(office.messages) == 200
    assert all(message.content == body for message in office.messages)


async def test_large_message_with_flow_control(office: MemoryPostOffice) -> None:
    body = (b"y" * 998 + b"\r\n") * 5000  # 5 MB, read in many pieces
    async with serving(office) as listener:
        client = await RawClient.connect(listener)
        await client.reply()
        await client.send(b"EHLO c.example\r\nMAIL FROM:<>\r\nRCPT TO:<b@postroom.test>\r\nDATA\r\n")
        await client.replies(4)
        await client.send(body + b".\r\nQUIT\r\n")
        assert await client.replies(2) == [(250, "2.6.0"), (221, "2.0.0")]
        await client.close()
    assert office.messages[0].content == body


def test_implicit_tls_needs_a_context(office: MemoryPostOffice) -> None:
    with pytest.raises(ValueError, match="implicit TLS"):
        SmtpListener(
            "submission",
            (),
            LIMITS,
            HOSTNAME,
            office,
            implicit_tls=True,
            spool_dir=Path("."),
            memory=MemoryBudget(1),
        )


async def test_plaintext_pipelined_after_starttls_is_discarded(
    office: MemoryPostOffice, server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    async with serving(office, ssl_context=server_tls) as listener:
        client = await RawClient.connect(listener)
        await client.reply()
        await client.send(b"EHLO c.example\r\n")
        await client.reply()
        await client.send(b"STARTTLS\r\nMAIL FROM:<injected@attacker.example>\r\n")
        assert await client.reply() == (220, "2.0.0")
        await client.writer.start_tls(client_tls)
        await client.send(
            b"MAIL FROM:<a@sender.example>\r\nEHLO c.example\r\nMAIL FROM:<a@sender.example>\r\n"
        )
        assert await client.replies(3) == [(503, "5.5.1"), (250, None), (250, "2.1.0")]
        await client.close()
    assert office.sessions[0].calls.count("mail") == 1
    assert office.sessions[0].tls is not None


async def test_failed_tls_handshake_closes_quietly(
    office: MemoryPostOffice, server_tls: ssl.SSLContext
) -> None:
    async with serving(office, ssl_context=server_tls) as listener:
        client = await RawClient.connect(listener)
        await client.reply()
        await client.send(b"EHLO c.example\r\nSTARTTLS\r\n")
        assert await client.replies(2) == [(250, None), (220, "2.0.0")]
        await client.send(b"this is not a TLS client hello\r\n" * 4)
        assert await client.at_eof()
        await client.close()
        for _ in range(50):
            if listener.connection_count == 0:
                break
            await asyncio.sleep(0.01)
        assert listener.connection_count == 0
    assert office.sessions[0].closed


def smtplib_send_big(port: int) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
        client.sendmail("alice@sender.example", ["bob@postroom.test"], b"x" * 500)


async def test_size_limit_with_smtplib(office: MemoryPostOffice) -> None:
    async with serving(office, replace(LIMITS, max_message_size=100)) as listener:
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            await asyncio.to_thread(smtplib_send_big, listener.bound[0].port)
    assert refused.value.smtp_code == 552 and refused.value.smtp_error.startswith(b"5.3.4")


async def test_bdat_over_the_socket(office: MemoryPostOffice) -> None:
    async with serving(office) as listener:
        client = await RawClient.connect(listener)
        await client.reply()
        await client.send(
            b"EHLO c.example\r\nMAIL FROM:<a@sender.example> BODY=BINARYMIME\r\nRCPT TO:<b@postroom.test>\r\n"
            b"BDAT 6\r\n\x00\n.\n\r\nBDAT 3 LAST\r\nend"
        )
        assert await client.replies(5) == [
            (250, None),
            (250, "2.1.0"),
            (250, "2.1.5"),
            (250, "2.0.0"),
            (250, "2.6.0"),
        ]
        await client.close()
    assert office.messages[0].content == b"\x00\n.\n\r\nend"


async def test_a_failing_factory_is_421_not_a_crash(office: MemoryPostOffice, tmp_path: Path) -> None:
    def factory(info: ConnectionInfo) -> MemorySession:
        raise RuntimeError("no database")

    address = (ListenAddress("127.0.0.1", 0),)
    listener = SmtpListener(
        "mx", address, LIMITS, HOSTNAME, factory, spool_dir=tmp_path, memory=MemoryBudget(1 << 28)
    )
    await listener.start()
    try:
        client = await RawClient.connect(listener)
        assert await client.reply() == (421, "4.3.0")
        assert await client.at_eof()
        await client.close()
    finally:
        await listener.stop(1)


# --- bounds an unauthenticated client meets, over the socket --------------------------------------

ENVELOPE = b"EHLO c.example\r\nMAIL FROM:<a@sender.example>\r\nRCPT TO:<b@postroom.test>\r\n"


async def test_refusals_past_the_slowdown_are_delayed_then_the_session_ends(office: MemoryPostOffice) -> None:
    limits = replace(LIMITS, refusal_slowdown=2, refusal_delay=0.4, max_refused_recipients=5)
    loop = asyncio.get_running_loop()
    async with serving(office, limits) as listener:
        client = await RawClient.connect(listener)
        await client.reply()
        await client.send(b"EHLO c.example\r\nMAIL FROM:<a@sender.example>\r\n")
        await client.replies(2)
        for _ in range(2):  # within the slowdown: answered at once
            await client.send(b"RCPT TO:<unknown@postroom.test>\r\n")
            assert await client.reply() == (550, "5.1.10")
        started = loop.time()
        for _ in range(2):
            await client.send(b"RCPT TO:<unknown@postroom.test>\r\n")
            assert await client.reply() == (550, "5.1.10")
        assert loop.time() - started >= 0.8, "each refusal past the slowdown waits refusal_delay"
        await client.send(b"RCPT TO:<unknown@postroom.test>\r\n")
        assert await client.replies(2) == [(550, "5.1.10"), (421, "4.7.0")]
        assert await client.at_eof()
        await client.close()


async def trickle(client: RawClient, octets: bytes, pause: float) -> tuple[int, str | None]:
    """Send `octets` a few at a time, `pause` seconds apart, until the server answers; its reply."""
    answer = asyncio.ensure_future(client.reply(timeout=30))
    for start in range(0, len(octets), 10):
        if answer.done():
            break
        with suppress(ConnectionError):
            await client.send(octets[start : start + 10])
        await asyncio.sleep(pause)
    return await answer


async def test_a_client_trickling_commands_is_closed_at_the_session_time_limit(
    office: MemoryPostOffice,
) -> None:
    limits = replace(LIMITS, max_session_time=1.0)
    async with serving(office, limits) as listener:
        client = await RawClient.connect(listener)
        await client.reply()
        # Every read restarts the command timeout; only the session time limit ends this.
        assert await trickle(client, b"EHLO c.example" * 100, 0.1) == (421, "4.4.2")
        assert await client.at_eof()
        await client.close()


async def test_a_client_trickling_message_data_is_closed_for_its_data_rate(office: MemoryPostOffice) -> None:
    limits = replace(LIMITS, min_data_rate=1000, data_rate_window=0.5, data_rate_grace=0.5)
    async with serving(office, limits) as listener:
        client = await RawClient.connect(listener)
        await client.reply()
        await client.send(ENVELOPE + b"DATA\r\n")
        assert (await client.replies(4))[-1] == (354, None)
        # 10 octets every 0.1 s: 100 octets/s, under the minimum of 1000
        assert await trickle(client, b"x" * 9000, 0.1) == (421, "4.4.2")
        assert await client.at_eof()
        await client.close()
    assert office.messages == []


async def test_connections_are_limited_per_network(office: MemoryPostOffice) -> None:
    limits = replace(LIMITS, max_connections_per_prefix=2, max_connections_per_ip=10)
    async with serving(office, limits) as listener:
        first = await RawClient.connect(listener, "127.0.0.2")
        second = await RawClient.connect(listener, "127.0.0.3")
        assert [await first.reply(), await second.reply()] == [(220, None), (220, None)]
        third = await RawClient.connect(listener, "127.0.0.4")  # the same /24
        assert await third.reply() == (421, "4.7.0")
        assert await third.at_eof()
        for client in (first, second, third):
            await client.close()
    async with serving(office, replace(limits, ipv4_prefix=32)) as listener:
        clients = [await RawClient.connect(listener, f"127.0.0.{n}") for n in (2, 3, 4)]
        assert [await client.reply() for client in clients] == [(220, None)] * 3
        for client in clients:
            await client.close()


async def test_the_last_slots_are_kept_for_networks_holding_few(office: MemoryPostOffice) -> None:
    limits = replace(
        LIMITS, max_connections=4, reserved_connections=2, busy_prefix_connections=2, ipv4_prefix=32
    )
    async with serving(office, limits) as listener:
        crowd = [await RawClient.connect(listener, "127.0.0.2") for _ in range(3)]
        assert [await client.reply() for client in crowd] == [(220, None), (220, None), (421, "4.7.0")]
        others = [await RawClient.connect(listener, "127.0.0.3") for _ in range(2)]
        assert [await client.reply() for client in others] == [(220, None), (220, None)]
        for client in crowd + others:
            await client.close()


async def test_a_big_message_is_spooled_to_disk_and_the_spool_file_removed(office: MemoryPostOffice) -> None:
    limits = replace(LIMITS, spool_threshold=4096)
    body = b"Subject: big\r\n\r\n" + b"".join(b".%06d line of the message\r\n" % n for n in range(5000))
    async with serving(office, limits) as listener:
        client = await RawClient.connect(listener)
        await client.reply()
        await client.send(ENVELOPE + b"DATA\r\n")
        await client.replies(4)
        await client.send(body.replace(b"\r\n.", b"\r\n..") + b".\r\n")
        assert await client.reply() == (250, "2.6.0")
        await client.send(b"MAIL FROM:<a@sender.example>\r\nRCPT TO:<b@postroom.test>\r\nDATA\r\n")
        await client.replies(3)
        await client.send(body + b"bare\nLF\r\n.\r\n")  # refused at its end, after being spooled
        assert await client.reply() == (550, "5.6.11")
        spooled = sorted(listener.spool_dir.iterdir())
        await client.close()
    assert office.messages[0].content == body
    assert office.sessions[0].spooled == [True]
    assert spooled == []


async def test_new_messages_wait_while_the_memory_budget_is_spent(office: MemoryPostOffice) -> None:
    async with serving(office, LIMITS, memory_budget=1000) as listener:
        holder = await RawClient.connect(listener)
        await holder.reply()
        await holder.send(ENVELOPE + b"DATA\r\n")
        await holder.replies(4)
        await holder.send(b"Subject: held\r\n\r\n" + b"z" * 2000 + b"\r\n")  # in memory, not finished
        other = await RawClient.connect(listener)
        await other.reply()
        await other.send(ENVELOPE)
        await other.replies(3)
        for _ in range(50):
            if listener.memory.spent:
                break
            await asyncio.sleep(0.05)
        await other.send(b"DATA\r\n")
        assert await other.reply() == (452, "4.3.1")
        await other.send(b"BDAT 3 LAST\r\nabc")
        assert await other.reply() == (452, "4.3.1")
        await holder.send(b".\r\n")
        assert await holder.reply() == (250, "2.6.0")
        await other.send(b"DATA\r\n")
        assert await other.reply() == (354, None)
        await other.send(b"Subject: later\r\n\r\nok\r\n.\r\n")
        assert await other.reply() == (250, "2.6.0")
        for client in (holder, other):
            await client.close()
    assert len(office.messages) == 2
