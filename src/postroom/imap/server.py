"""The IMAP listener: an asyncio protocol around `imap.session`, one task and one session per connection.

`ImapListener` serves one role on its addresses (or on the listening sockets a supervisor bound for
it, see `app.workers`): the port 143 role (`implicit_tls=False`: plaintext, STARTTLS offered) or the
port 993 role (`implicit_tls=True`: TLS from the first octet, handshake bounded by
`HANDSHAKE_TIMEOUT`). Each connection reads into its session, lets it act, writes what it answers,
and waits for the next input, the session's wake-up (a notification during IDLE) or its timeout
(`ImapSession.timeout`: before login, after it, or the IDLE limit), whichever comes first; on a
timeout the session says `* BYE` and the connection closes. STARTTLS upgrades the transport in place
(`loop.start_tls`): reading stops before the tagged OK goes out (else the client's ClientHello could
be read as plaintext), and whatever the client sent in plaintext after the command is dropped, never
read as commands after the handshake (the command injection of CVE-2011-0411).

Bounds: at most `max_connections` connections on the listener and `max_connections_per_ip` from one
client address; past either a new connection gets `* BYE Too many connections` and is closed before
any session exists. A client that stops reading gets `WRITE_TIMEOUT` seconds for its socket buffer
to drain, then the connection closes (a slow reader cannot pin a session's responses in memory).
`stop(grace)` stops accepting, tells sessions `* BYE` at once (IMAP has no transaction to wait for
beyond the command in progress) and cancels what is still running after `grace`.

*Security:* everything read goes to the session's `CommandReader`, which bounds it; the listener
reads at most `READ_CHUNK` octets at a time and only when the reader has used what it held.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, cast

from postroom.config import ListenAddress
from postroom.imap.session import ImapSession

READ_CHUNK = 65_536
WRITE_TIMEOUT = 60.0  # seconds a client may take to read what was written to it
HANDSHAKE_TIMEOUT = 30.0  # seconds an implicit-TLS (or STARTTLS) handshake may take

TIMER_SLACK = 0.005  # seconds a loop timer may fire early (uvloop: its clock is read once an iteration)

log = logging.getLogger(__name__)

# (client IP, TLS active now, STARTTLS offered, the connection's write) -> its session
SessionFactory = Callable[[str, bool, bool, Callable[[bytes], Awaitable[None]]], ImapSession]


class ImapListener:
    """One IMAP listener on one or more addresses (see the module docstring)."""

    def __init__(
        self,
        name: str,
        addresses: tuple[ListenAddress, ...],
        factory: SessionFactory,
        ssl_context: ssl.SSLContext,
        *,
        implicit_tls: bool,
        max_connections: int,
        max_connections_per_ip: int,
        sockets: tuple[socket.socket, ...] = (),
    ) -> None:
        self.name = name
        self.addresses = addresses
        self.factory = factory
        self.ssl_context = ssl_context
        self.implicit_tls = implicit_tls
        self.max_connections = max_connections
        self.max_connections_per_ip = max_connections_per_ip
        self.sockets = sockets  # listening sockets bound by a supervisor (`app.workers`): used, not bound
        self._servers: list[asyncio.Server] = []
        self._bound: tuple[ListenAddress, ...] = ()
        self._tasks: set[asyncio.Task[None]] = set()  # one per connection served
        self._sessions: set[ImapSession] = set()
        self._per_ip: dict[str, int] = {}

    @property
    def bound(self) -> tuple[ListenAddress, ...]:
        return self._bound

    @property
    def connection_count(self) -> int:
        return len(self._tasks)

    async def start(self) -> tuple[ListenAddress, ...]:
        """Bind every address (or take the given sockets) and accept; OSError when one cannot bind."""
        tls = self.ssl_context if self.implicit_tls else None
        timeout = HANDSHAKE_TIMEOUT if tls else None
        backlog = min(self.max_connections, 4096)
        loop = asyncio.get_running_loop()
        try:
            for sock in self.sockets:
                self._servers.append(
                    await loop.create_server(
                        self._connection, sock=sock, ssl=tls, ssl_handshake_timeout=timeout, backlog=backlog
                    )
                )
            for address in () if self.sockets else self.addresses:
                self._servers.append(
                    await loop.create_server(
                        self._connection,
                        address.host,
                        address.port,
                        ssl=tls,
                        ssl_handshake_timeout=timeout,
                        reuse_address=True,
                        backlog=backlog,
                    )
                )
        except BaseException:
            for server in self._servers:
                server.close()
            self._servers.clear()
            raise
        self._bound = tuple(
            ListenAddress(str(sock.getsockname()[0]), int(sock.getsockname()[1]))
            for server in self._servers
            for sock in server.sockets
        )
        log.info("IMAP listener %s accepting on %s", self.name, ", ".join(map(str, self._bound)))
        return self._bound

    async def stop(self, grace: float) -> None:
        for server in self._servers:
            server.close()
        for session in list(self._sessions):
            session.shutdown.set()  # said at its next pause: now, or after the command in progress
        if self._tasks:
            _, late = await asyncio.wait(list(self._tasks), timeout=grace)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        log.info("IMAP listener %s stopped", self.name)

    def _connection(self) -> _Connection:
        return _Connection(self)

    async def _serve(self, connection: _Connection, client: str) -> None:
        session = self.factory(client, self.implicit_tls, not self.implicit_tls, connection.write)
        self._sessions.add(session)
        try:
            await connection.write(session.greeting())
            while not session.closed:
                await session.process()
                if session.closed:
                    break
                if session.wants_starttls:
                    await connection.start_tls(session, self.ssl_context)
                    session.tls_started()
                    continue
                if session.shutdown.is_set():
                    await session.shut_down()
                    break
                data = connection.take()
                if data:
                    session.receive_data(data)
                    continue
                if connection.eof:
                    break
                await self._wait(connection, session)
        finally:
            session.close()
            self._sessions.discard(session)

    async def _wait(self, connection: _Connection, session: ImapSession) -> None:
        """Wait for input, the node's stop, the session's wake-up or its timeout; act on the last two."""
        waits: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(connection.data_ready.wait()),
            asyncio.ensure_future(session.shutdown.wait()),
        ]
        timeout = session.timeout()
        idling = session.idling is not None
        if idling:
            waits.append(asyncio.ensure_future(session.woken.wait()))
            timeout = min(timeout, session.poll_due())
        try:
            done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
        if waits[0] in done or waits[1] in done:
            return
        if idling:
            # The loop's timer may fire a hair before the session's clock says the time has come
            # (uvloop reads its clock once per iteration): what is due within TIMER_SLACK is due;
            # otherwise wait again for the rest. A poll is never taken for the end of the IDLE.
            if session.timeout() <= TIMER_SLACK:
                await session.timed_out()
            elif waits[2] in done or session.poll_due() <= TIMER_SLACK:
                await session.wake()
            return
        await session.timed_out()


class _Connection(asyncio.Protocol):
    """One client connection: what it sent, and writes with flow control (see the module docstring)."""

    def __init__(self, listener: ImapListener) -> None:
        self._listener = listener
        self.transport: asyncio.Transport | None = None
        self.received = bytearray()
        self.data_ready = asyncio.Event()  # something was received (or the connection ended)
        self.eof = False
        self._writable = asyncio.Event()
        self._writable.set()
        self._task: asyncio.Task[None] | None = None

    # --- asyncio.Protocol ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is not None:
            return  # the TLS transport of a STARTTLS upgrade: the session goes on
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        listener = self._listener
        peer = transport.get_extra_info("peername")
        client = str(peer[0]) if peer else ""
        over = len(listener._tasks) >= listener.max_connections
        if over or listener._per_ip.get(client, 0) >= listener.max_connections_per_ip:
            transport.write(b"* BYE Too many connections; try again later\r\n")
            transport.close()
            return
        listener._per_ip[client] = listener._per_ip.get(client, 0) + 1
        self._task = asyncio.get_running_loop().create_task(self._run(client))
        listener._tasks.add(self._task)

    def data_received(self, data: bytes) -> None:
        self.received += data
        self.data_ready.set()
        if len(self.received) >= READ_CHUNK and self.transport is not None:
            self.transport.pause_reading()  # the session takes it first

    def eof_received(self) -> bool | None:
        self.eof = True
        self.data_ready.set()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.data_ready.set()
        self._writable.set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # --- the session's side ----------------------------------------------------------------------
    async def _run(self, client: str) -> None:
        listener = self._listener
        task = self._task
        try:
            await listener._serve(self, client)
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError):
            pass  # the client went away, stopped reading, or failed its handshake
        except Exception:
            log.exception("IMAP session from %s failed", client)
        finally:
            if task is not None:
                listener._tasks.discard(task)
            left = listener._per_ip.get(client, 1) - 1
            if left:
                listener._per_ip[client] = left
            else:
                listener._per_ip.pop(client, None)
            if self.transport is not None:
                self.transport.close()

    async def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            raise ConnectionError("the connection is closed")
        transport.write(data)
        await asyncio.wait_for(self._writable.wait(), WRITE_TIMEOUT)

    def take(self) -> bytes:
        """What was received so far (and reading goes on)."""
        data = bytes(self.received)
        self.received.clear()
        if not self.eof:
            self.data_ready.clear()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()
        return data

    async def start_tls(self, session: ImapSession, context: ssl.SSLContext) -> None:
        """STARTTLS: stop reading before the OK goes out, drop what was received in plaintext after
        the command, and upgrade the transport in place."""
        transport = self.transport
        assert transport is not None
        transport.pause_reading()
        await session.flush()  # the tagged OK: the client starts its handshake on reading it
        self.received.clear()  # sent before the handshake: never read as commands (CVE-2011-0411)
        self.data_ready.clear()
        loop = asyncio.get_running_loop()
        upgraded = await loop.start_tls(
            transport, self, context, server_side=True, ssl_handshake_timeout=HANDSHAKE_TIMEOUT
        )
        if upgraded is None:
            raise ConnectionError("the connection closed during the TLS handshake")
        self.transport = upgraded
