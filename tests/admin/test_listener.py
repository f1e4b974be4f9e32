"""The admin listener: uvicorn inside the caller's event loop, on real sockets, stopped within its grace."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import ssl
import threading
import time
from pathlib import Path

import pytest
from starlette.types import ASGIApp

from postroom.admin import AdminListener, build_admin_app
from postroom.app.setup import write_self_signed
from postroom.config.settings import AdminLimits, ListenAddress
from tests.admin.client import Reply, request

POLICY = "version: STSv1\r\nmode: none\r\nmax_age: 60\r\n"
SERVED = Reply(200, "text/plain; charset=utf-8", POLICY.encode())
HOST = ["mta-sts.contoso.test"]
LOOPBACK = ListenAddress("127.0.0.1", 0)


def policies(domain: str) -> str | None:
    return POLICY if domain == "contoso.test" else None


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


async def test_serves_on_every_address_with_the_real_ports() -> None:
    addresses = (LOOPBACK, ListenAddress("::1", 0)) if ipv6_loopback() else (LOOPBACK, LOOPBACK)
    listener = AdminListener(build_admin_app(policies), addresses)
    bound = await listener.start()
    try:
        assert bound == listener.bound and len(bound) == 2 and all(address.port for address in bound)
        assert listener.protocol == "HTTP"
        for address in bound:
            assert await asyncio.to_thread(request, address.port, HOST, address=address.host) == SERVED
    finally:
        await listener.stop(1)
    with pytest.raises(ConnectionRefusedError):
        await asyncio.to_thread(request, bound[0].port, HOST)


async def test_serves_https_with_the_given_certificate(tmp_path: Path) -> None:
    certificate, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    write_self_signed(certificate, key, ["mta-sts.contoso.test"])  # with 127.0.0.1, as `init` writes it
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(certificate, key)
    listener = AdminListener(build_admin_app(policies), (LOOPBACK,), ssl_context=server)
    [address] = await listener.start()
    try:
        assert listener.protocol == "HTTPS"
        client = ssl.create_default_context(cafile=str(certificate))
        assert await asyncio.to_thread(request, address.port, HOST, context=client) == SERVED
        with pytest.raises((ConnectionError, OSError)):
            await asyncio.to_thread(request, address.port, HOST)  # plain HTTP is not spoken
    finally:
        await listener.stop(1)


class SlowLookup:
    """A `policy_for` that holds each request until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, domain: str) -> str | None:
        self.entered.set()
        self.release.wait(10)
        return policies(domain)


async def test_stop_lets_a_request_in_flight_finish_and_accepts_no_more() -> None:
    lookup = SlowLookup()
    listener = AdminListener(build_admin_app(lookup), (LOOPBACK,))
    [address] = await listener.start()
    in_flight = asyncio.ensure_future(asyncio.to_thread(request, address.port, HOST))
    await asyncio.to_thread(lookup.entered.wait, 5)
    stopping = asyncio.ensure_future(listener.stop(10))
    await asyncio.sleep(0.3)
    with pytest.raises(ConnectionRefusedError):
        await asyncio.to_thread(request, address.port, HOST)
    assert not stopping.done(), "stop waits for the request in flight"
    lookup.release.set()
    assert await in_flight == SERVED
    await asyncio.wait_for(stopping, 5)


async def test_stop_gives_up_on_a_request_after_the_grace() -> None:
    lookup = SlowLookup()
    listener = AdminListener(build_admin_app(lookup), (LOOPBACK,))
    [address] = await listener.start()
    in_flight = asyncio.ensure_future(asyncio.to_thread(request, address.port, HOST))
    await asyncio.to_thread(lookup.entered.wait, 5)
    started = time.monotonic()
    await listener.stop(0.5)
    assert time.monotonic() - started < 3
    assert (await in_flight).status == 500, "cancelled by the stop, answered before the connection closed"
    lookup.release.set()


async def test_leaves_signals_to_the_node_and_logs_nothing_at_info(caplog: pytest.LogCaptureFixture) -> None:
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    with caplog.at_level(logging.DEBUG):
        listener = AdminListener(build_admin_app(policies), (LOOPBACK,))
        [address] = await listener.start()
        during = {signum: signal.getsignal(signum) for signum in before}
        for hosts in (HOST, ["mta-sts.other.test"], ["bad host"]):
            await asyncio.to_thread(request, address.port, hosts)
        await listener.stop(1)
    assert during == before, "uvicorn must not take SIGINT or SIGTERM from the node"
    assert [record.getMessage() for record in caplog.records if record.name.startswith("uvicorn")] == []
    assert [record.name for record in caplog.records] == ["postroom.admin.listener"] * 2  # started, stopped


@pytest.mark.parametrize("app", [build_admin_app(policies)])
async def test_no_addresses_serve_nothing(app: ASGIApp) -> None:
    listener = AdminListener(app, ())
    assert await listener.start() == ()
    await listener.stop(1)


async def test_an_address_in_use_fails_start_and_frees_the_others() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            free = probe.getsockname()[1]
        listener = AdminListener(
            build_admin_app(policies), (ListenAddress("127.0.0.1", free), ListenAddress("127.0.0.1", taken))
        )
        with pytest.raises(OSError):
            await listener.start()
    with socket.socket() as again:
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", free))  # the first address was released


def open_idle(port: int, count: int, source: str = "127.0.0.1") -> list[socket.socket]:
    """`count` connections from `source` that send nothing."""
    held = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        held.append(sock)
    return held


def closed_within(sock: socket.socket, seconds: float) -> float:
    """Seconds until the server closed `sock` (reading what it sent until EOF); fails after `seconds`."""
    started = time.monotonic()
    sock.settimeout(seconds)
    while sock.recv(4096):
        pass
    return time.monotonic() - started


async def test_idle_sockets_from_one_address_do_not_starve_the_others() -> None:
    listener = AdminListener(build_admin_app(policies), (LOOPBACK,))  # the default limits
    [address] = await listener.start()
    idle = await asyncio.to_thread(open_idle, address.port, 1100)
    try:
        await asyncio.sleep(0.5)  # the listener has seen them all
        other = await asyncio.to_thread(request, address.port, HOST, source="127.0.0.2")
        same = await asyncio.to_thread(request, address.port, HOST)
    finally:
        for sock in idle:
            sock.close()
        await listener.stop(1)
    assert other == SERVED
    assert same.status == 503 and b"too many connections from your address" in same.body


async def test_slow_and_idle_connections_are_closed_and_their_address_served_again() -> None:
    limits = AdminLimits(header_timeout=1.5, keep_alive_timeout=1.0, max_connections_per_ip=4)
    listener = AdminListener(build_admin_app(policies), (LOOPBACK,), limits=limits)
    [address] = await listener.start()

    def half_a_head() -> float:
        with socket.create_connection(("127.0.0.1", address.port)) as sock:
            sock.sendall(b"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: mta")
            return closed_within(sock, 15)

    def drip() -> float:
        """One byte of a head every 0.3 s: data that keeps coming does not extend the head's time."""
        with socket.create_connection(("127.0.0.1", address.port)) as sock:
            started = time.monotonic()
            try:
                for byte in b"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: mta-sts.contoso.test\r\n":
                    sock.sendall(bytes([byte]))
                    time.sleep(0.3)
            except OSError:
                pass  # closed under us, as it should be
            return time.monotonic() - started + closed_within(sock, 15)

    def idle_after_a_request() -> tuple[bytes, float]:
        with socket.create_connection(("127.0.0.1", address.port)) as sock:
            sock.sendall(b"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: mta-sts.contoso.test\r\n\r\n")
            first = sock.recv(4096)
            return first, closed_within(sock, 15)

    try:
        idle = await asyncio.to_thread(open_idle, address.port, 10)
        await asyncio.sleep(0.3)
        assert (await asyncio.to_thread(request, address.port, HOST)).status == 503  # 4 per address
        waited = await asyncio.gather(*(asyncio.to_thread(closed_within, sock, 15) for sock in idle[:4]))
        assert all(1.0 < seconds < 8 for seconds in waited), waited
        for sock in idle:
            sock.close()
        await asyncio.sleep(0.3)
        assert await asyncio.to_thread(request, address.port, HOST) == SERVED
        half, dripped, (first, kept) = await asyncio.gather(
            asyncio.to_thread(half_a_head), asyncio.to_thread(drip), asyncio.to_thread(idle_after_a_request)
        )
    finally:
        await listener.stop(1)
    assert 1.0 < half < 8, half
    assert dripped < 8, dripped  # the whole head would take 21 s
    assert first.startswith(b"HTTP/1.1 200 ") and 0.5 < kept < 8, (first, kept)
