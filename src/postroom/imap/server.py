"""The IMAP listener: asyncio streams around `imap.session`, one task and one session per connection.

`ImapListener` serves one role on its addresses (or on the listening sockets a supervisor bound for
it, see `app.workers`): the port 143 role (`implicit_tls=False`: plaintext, STARTTLS offered) or the
port 993 role (`implicit_tls=True`: TLS from the first octet, handshake bounded by
`HANDSHAKE_TIMEOUT`). Each connection reads into its session, lets it act, writes what it answers,
and waits for the next input, the session's wake-up (a notification during IDLE) or its timeout
(`ImapSession.timeout`: before login, after it, or the IDLE limit), whichever comes first; on a
timeout the session says `* BYE` and the connection closes. STARTTLS upgrades the stream in place
(`StreamWriter.start_tls`); what the client sent after the STARTTLS command in plaintext is dropped
by the session (RFC 3501 §6.2.1, the command-injection attack of CVE-2011-0411).

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
import contextlib
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from postroom.config import ListenAddress
from postroom.imap.session import ImapSession

READ_CHUNK = 65_536
WRITE_TIMEOUT = 60.0  # seconds a client may take to read what was written to it
HANDSHAKE_TIMEOUT = 30.0  # seconds an implicit-TLS (or STARTTLS) handshake may take

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
        self._tasks: set[asyncio.Task[None]] = set()
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
        try:
            for sock in self.sockets:
                self._servers.append(
                    await asyncio.start_server(
                        self._accept, sock=sock, ssl=tls, ssl_handshake_timeout=timeout, backlog=backlog
                    )
                )
            for address in () if self.sockets else self.addresses:
                self._servers.append(
                    await asyncio.start_server(
                        self._accept,
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

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        peer = writer.get_extra_info("peername")
        client = str(peer[0]) if peer else ""
        if (
            len(self._tasks) >= self.max_connections
            or self._per_ip.get(client, 0) >= self.max_connections_per_ip
        ):
            with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
                writer.write(b"* BYE Too many connections; try again later\r\n")
                await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)
            writer.close()
            return
        self._tasks.add(task)
        self._per_ip[client] = self._per_ip.get(client, 0) + 1
        try:
            await self._serve(reader, writer, client)
        except (OSError, ssl.SSLError, TimeoutError, asyncio.IncompleteReadError):
            pass  # the client went away or stopped reading
        except Exception:
            log.exception("IMAP session from %s failed", client)
        finally:
            self._tasks.discard(task)
            left = self._per_ip.get(client, 1) - 1
            if left:
                self._per_ip[client] = left
            else:
                self._per_ip.pop(client, None)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 5.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client: str) -> None:
        async def write(data: bytes) -> None:
            writer.write(data)
            await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)

        session = self.factory(client, self.implicit_tls, not self.implicit_tls, write)
        self._sessions.add(session)
        reading: asyncio.Task[bytes] | None = None
        try:
            await write(session.greeting())
            while not session.closed:
                await session.process()
                if session.closed:
                    break
                if session.wants_starttls:
                    await writer.start_tls(self.ssl_context, ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
                    session.tls_started()
                    continue
                if session.shutdown.is_set():
                    await session.shut_down()
                    break
                if reading is None:
                    reading = asyncio.ensure_future(reader.read(READ_CHUNK))
                shutdown = asyncio.ensure_future(session.shutdown.wait())
                waiting: set[asyncio.Future[Any]] = {reading, shutdown}
                timeout = session.timeout()
                woken: asyncio.Future[Any] | None = None
                if session.idling is not None:
                    woken = asyncio.ensure_future(session.woken.wait())
                    waiting.add(woken)
                    timeout = min(timeout, session.poll_due())
                done, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                for pending in (shutdown, woken):
                    if pending is not None and pending not in done:
                        pending.cancel()
                if reading in done:
                    data = reading.result()
                    reading = None
                    if not data:
                        break
                    session.receive_data(data)
                elif shutdown in done:
                    continue
                elif session.idling is not None and (woken in done or session.poll_due() <= 0):
                    if session.timeout() <= 0:
                        await session.timed_out()
                    else:
                        await session.wake()
                else:
                    await session.timed_out()
        finally:
            if reading is not None:
                reading.cancel()
            session.close()
            self._sessions.discard(session)
