"""The SMTP listener behind a load balancer: PROXY headers from trusted and untrusted peers, on loopback.

127.0.0.1 is the balancer the listener trusts; 127.0.0.2 is any other peer.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import replace

import pytest

from postroom.config.settings import SmtpLimits
from postroom.smtp import TrustedProxies

from ..support.proxy import V2_LOCAL, tlv, v1_header, v2_header
from .harness import RawClient, serving
from .twin import MemoryPostOffice

pytestmark = pytest.mark.integration

BALANCER = TrustedProxies.of(["127.0.0.1"], header_timeout=0.5)
CLIENT = ("203.0.113.7", 40000)
VIP = ("192.0.2.25", 25)
EHLO = b"EHLO client.example\r\n"
HEADERS = {
    "v1": v1_header(CLIENT, VIP),
    "v2": v2_header(CLIENT, VIP),
    "v2 with TLVs": v2_header(CLIENT, VIP, tlv(0x01, b"smtp") + tlv(0xEE, b"\0" * 300)),
    "v1 IPv6": v1_header(("2001:db8::7", 40000), ("2001:db8::25", 25)),
}
CLIENT_IP = {"v1 IPv6": "2001:db8::7"}


async def closed_without_a_word(client: RawClient) -> bool:
    """True when the server closes the connection without sending anything."""
    return await asyncio.wait_for(client.reader.read(), 5) == b""


@pytest.mark.parametrize("name", list(HEADERS))
async def test_a_trusted_balancer_s_header_names_the_client(office: MemoryPostOffice, name: str) -> None:
    async with serving(office, proxies=BALANCER) as listener:
        client = await RawClient.connect(listener)
        await client.send(HEADERS[name] + EHLO)  # the first command right behind the header
        assert await client.replies(2) == [(220, None), (250, None)]
        await client.send(b"QUIT\r\n")
        assert await client.reply() == (221, "2.0.0")
        await client.close()
    [session] = office.sessions
    assert session.info.peer_ip == CLIENT_IP.get(name, "203.0.113.7")
    assert session.info.peer_port == 40000
    assert session.info.proxy_ip == "127.0.0.1"
    assert session.helo_name == "client.example"


async def test_a_header_trickled_octet_by_octet_is_read_whole(office: MemoryPostOffice) -> None:
    async with serving(office, proxies=replace(BALANCER, header_timeout=5.0)) as listener:
        client = await RawClient.connect(listener)
        for octet in v1_header(CLIENT, VIP):
            await client.send(bytes([octet]))
            await asyncio.sleep(0.001)
        assert await client.reply() == (220, None)
        await client.close()
    assert office.sessions[0].info.peer_ip == "203.0.113.7"


async def test_a_local_header_is_the_balancer_itself(office: MemoryPostOffice) -> None:
    async with serving(office, proxies=BALANCER) as listener:
        client = await RawClient.connect(listener)
        await client.send(V2_LOCAL)
        assert await client.reply() == (220, None)
        await client.close()
    [session] = office.sessions
    assert (session.info.peer_ip, session.info.proxy_ip) == ("127.0.0.1", "")


@pytest.mark.parametrize(
    "first",
    [
        EHLO,  # a client let through without a header
        b"PROXY TCP4 203.0.113.7 192.0.2.25 40000\r\n",  # malformed
        b"PROXY TCP4 " + b"1" * 200,  # too long
        b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\xff\xff",  # v2 longer than the bound
    ],
    ids=["no header", "malformed", "too long", "v2 too long"],
)
async def test_a_trusted_peer_without_a_valid_header_is_closed_without_a_greeting(
    office: MemoryPostOffice, first: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="postroom.smtp.server")
    async with serving(office, proxies=BALANCER) as listener:
        client = await RawClient.connect(listener)
        await client.send(first)
        assert await closed_without_a_word(client)
        await client.close()
    assert office.sessions == []
    assert "PROXY header from the balancer 127.0.0.1 refused" in caplog.text


async def test_a_header_that_does_not_come_in_time_closes_the_connection(office: MemoryPostOffice) -> None:
    async with serving(office, proxies=BALANCER) as listener:
        started = time.monotonic()  # before the connection: the listener's header timer starts after it
        client = await RawClient.connect(listener)
        await client.send(b"PROXY TCP4 203.0.113.7 ")  # and nothing more
        assert await closed_without_a_word(client)
        assert time.monotonic() - started >= 0.5
        await client.close()
    assert office.sessions == []


@pytest.mark.parametrize("header", [v1_header(CLIENT, VIP), v2_header(CLIENT, VIP)], ids=["v1", "v2"])
async def test_a_header_from_an_untrusted_peer_is_refused_and_its_address_never_used(
    office: MemoryPostOffice, header: bytes
) -> None:
    async with serving(office, proxies=BALANCER) as listener:
        client = await RawClient.connect(listener, source="127.0.0.2")
        await client.send(header + EHLO)
        assert await client.replies(2) == [(220, None), (500, "5.5.1")]
        assert await client.at_eof()
        await client.close()
    [session] = office.sessions
    assert session.info.peer_ip == "127.0.0.2" and session.info.proxy_ip == ""
    assert "ehlo" not in session.calls  # nothing after the header reached the session


async def test_an_untrusted_peer_speaking_smtp_is_served_as_a_direct_client(office: MemoryPostOffice) -> None:
    async with serving(office, proxies=BALANCER) as listener:
        client = await RawClient.connect(listener, source="127.0.0.2")
        await client.send(EHLO)
        assert await client.replies(2) == [(220, None), (250, None)]
        await client.close()
    assert office.sessions[0].info.peer_ip == "127.0.0.2"


async def test_a_listener_without_balancers_refuses_a_header_too(office: MemoryPostOffice) -> None:
    async with serving(office) as listener:
        client = await RawClient.connect(listener)
        await client.send(v1_header(CLIENT, VIP))
        assert await client.replies(2) == [(220, None), (500, "5.5.1")]
        assert await client.at_eof()
        await client.close()
    assert office.sessions[0].info.peer_ip == "127.0.0.1"


async def test_limits_per_ip_count_the_client_not_the_balancer(office: MemoryPostOffice) -> None:
    limits = replace(SmtpLimits(), max_connections_per_ip=1, ipv4_prefix=32)
    async with serving(office, limits, proxies=BALANCER) as listener:
        clients = []
        for source in ("203.0.113.7", "203.0.113.8", "203.0.113.7"):
            client = await RawClient.connect(listener)
            await client.send(v2_header((source, 40000), VIP))
            clients.append(client)
        assert [await client.reply() for client in clients] == [(220, None), (220, None), (421, "4.7.0")]
        for client in clients:
            await client.close()


async def test_stopping_closes_connections_still_owing_their_header(office: MemoryPostOffice) -> None:
    async with serving(office, proxies=replace(BALANCER, header_timeout=60.0)) as listener:
        client = await RawClient.connect(listener)
        await client.send(b"PROXY ")
        await asyncio.sleep(0.05)
        started = time.monotonic()
        await listener.stop(grace=5)
        assert time.monotonic() - started < 4.0  # neither the header timeout (60 s) nor the grace
        assert await closed_without_a_word(client)
        await client.close()


async def tls_client(
    listener_port: int, first: bytes, client_tls: ssl.SSLContext, source: str = "127.0.0.1"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Send `first` in plaintext, then speak TLS on the same connection (as a balancer relays it)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", listener_port, local_addr=(source, 0))
    writer.write(first)
    await writer.drain()
    await writer.start_tls(client_tls)
    return reader, writer


@pytest.mark.parametrize("header", [v1_header(CLIENT, VIP), v2_header(CLIENT, VIP)], ids=["v1", "v2"])
async def test_implicit_tls_behind_a_balancer(
    office: MemoryPostOffice,
    server_tls: ssl.SSLContext,
    client_tls: ssl.SSLContext,
    header: bytes,
) -> None:
    async with serving(office, ssl_context=server_tls, implicit_tls=True, proxies=BALANCER) as listener:
        reader, writer = await tls_client(listener.bound[0].port, header, client_tls)
        client = RawClient(reader, writer)
        assert await client.reply() == (220, None)
        await client.send(EHLO)
        assert await client.reply() == (250, None)
        await client.close()
    [session] = office.sessions
    assert session.info.peer_ip == "203.0.113.7" and session.tls is not None
    assert session.calls[:3] == ["connect", "tls_started", "ehlo"]


async def test_implicit_tls_from_an_untrusted_peer(
    office: MemoryPostOffice, server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    async with serving(office, ssl_context=server_tls, implicit_tls=True, proxies=BALANCER) as listener:
        port = listener.bound[0].port
        reader, writer = await tls_client(port, b"", client_tls, source="127.0.0.2")
        direct = RawClient(reader, writer)
        assert await direct.reply() == (220, None)
        await direct.close()
        # A header where TLS should begin: refused in plaintext, before any handshake.
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.2", 0))
        claimed = RawClient(reader, writer)
        await claimed.send(v2_header(CLIENT, VIP))
        assert await claimed.reply() == (500, "5.5.1")
        assert await claimed.at_eof()
        await claimed.close()
    assert [session.info.peer_ip for session in office.sessions] == ["127.0.0.2"]
