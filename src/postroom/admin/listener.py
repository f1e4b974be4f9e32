"""The admin listener: uvicorn serving the admin ASGI app inside the node's own event loop.

`AdminListener.start()` binds every configured address itself (port 0 picks a free one; `bound` says
which; or it takes the listening `sockets` a supervisor bound for it, see `app.workers`), hands the
listening sockets to a uvicorn server running as a task on the current loop, and returns once
uvicorn serves them. `stop(grace)` asks uvicorn to exit: it stops accepting, closes idle keep-alive
connections, and lets requests in flight finish; after `grace` seconds (rounded up to a
whole second) it cancels those still running, whose clients get `500`, and closes their connections.
Should uvicorn itself hang, its task is cancelled shortly after. Nothing outlives `stop`.

The node owns the process: uvicorn installs no signal handlers here (`capture_signals` is a no-op), does
not configure logging (`log_config=None`), logs no access lines, and its own loggers are set to
warning, so only problems reach the node's log. No lifespan protocol: the app has no startup work.

*Security:* this serves the network. uvicorn (h11) parses requests and bounds the request head's size
(h11's 16 KiB). The `[admin.limits]` (`AdminLimits`) bound what a client can hold, so that idle or slow
sockets from one host cannot starve everyone else: a request head must arrive complete within
`header_timeout` (from the connection, or from the end of the previous response) or the connection is
closed; an idle keep-alive connection is closed after `keep_alive_timeout`; one client address holds at
most `max_connections_per_ip` connections (the next gets `503` and is closed at once, before any of its
bytes are read), and all clients together `max_connections` (then uvicorn's `503`). `uvicorn` has
the keep-alive timeout and the total; the head timeout and the per-address count are `_BoundedH11`,
uvicorn's h11 protocol with that accounting around it. With TLS the limits apply from the end of the
handshake (asyncio's 60 s handshake timeout bounds the handshake itself). `Server` headers are not sent.
With an SSL context it serves HTTPS only; without one, plain HTTP, meant for a reverse proxy in front
that terminates TLS. Forwarded headers are not trusted; the client address is the socket's peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import ssl
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import h11
import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

from postroom.config.settings import AdminLimits, ListenAddress

_TOO_MANY_BODY = b"too many connections from your address\n"
_TOO_MANY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(_TOO_MANY_BODY), _TOO_MANY_BODY)
)
_SHUTDOWN_SLACK = 2.0  # seconds past the grace for uvicorn to notice the stop and end what it cancelled
_STARTUP_POLL = 0.005  # seconds between checks that uvicorn is serving (it offers no event for it)

log = logging.getLogger(__name__)


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handlers: SIGTERM and SIGINT belong to the node (`App.serve`)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _bounded_protocol(limits: AdminLimits) -> type[H11Protocol]:
    """uvicorn's h11 protocol with the head timeout and the per-address count of `limits` (a class per
    listener: uvicorn builds each connection's protocol from the class alone)."""
    per_address: Counter[str] = Counter()

    class _BoundedH11(H11Protocol):
        _address: str | None = None
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            peer: Any = transport.get_extra_info("peername")
            address = str(peer[0]) if isinstance(peer, tuple) else ""
            if per_address[address] >= limits.max_connections_per_ip:
                transport.write(_TOO_MANY)
                transport.close()
                return  # never counted, never read: connection_lost below knows it by `_address`
            self._address = address
            per_address[address] += 1
            super().connection_made(transport)
            self._await_head()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._address is None:
                return
            per_address[self._address] -= 1
            if not per_address[self._address]:
                del per_address[self._address]
            self._address = None
            self._stop_head_timer()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._await_head()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._await_head()

        def _await_head(self) -> None:
            """Time the next request head while one is due (h11 waits for a request), else stop."""
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                if self._head_timer is None:
                    self._head_timer = self.loop.call_later(limits.header_timeout, self._head_too_slow)
            else:
                self._stop_head_timer()

        def _stop_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_too_slow(self) -> None:
            self._head_timer = None
            if self.conn.their_state is h11.IDLE:
                self.transport.close()

    return _BoundedH11


class AdminListener:
    """The admin HTTP(S) listener on one or more addresses."""

    def __init__(
        self,
        app: ASGIApp,
        addresses: tuple[ListenAddress, ...],
        ssl_context: ssl.SSLContext | None = None,
        limits: AdminLimits | None = None,
        sockets: tuple[socket.socket, ...] = (),
    ) -> None:
        self.app = app
        self.sockets = sockets  # listening sockets bound by a supervisor (`app.workers`): used, not bound
        self.addresses = addresses
        self.ssl_context = ssl_context
        self.limits = limits or AdminLimits()
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._bound: tuple[ListenAddress, ...] = ()

    @property
    def protocol(self) -> str:
        return "HTTPS" if self.ssl_context is not None else "HTTP"

    @property
    def bound(self) -> tuple[ListenAddress, ...]:
        """The addresses actually listened on (with the real port when 0 was asked for)."""
        return self._bound

    async def start(self) -> tuple[ListenAddress, ...]:
        """Bind every address and serve; returns `bound`. Raises OSError when one cannot bind."""
        if not self.addresses:
            return ()
        limits = self.limits
        sockets = list(self.sockets) or _bind(self.addresses, backlog=limits.max_connections)
        context = self.ssl_context
        ssl_factory: Callable[[uvicorn.Config, Callable[[], ssl.SSLContext]], ssl.SSLContext] | None = (
            (lambda _config, _default: context) if context is not None else None
        )
        config = uvicorn.Config(
            self.app,
            http=_bounded_protocol(limits),
            ws="none",
            lifespan="off",
            log_config=None,
            log_level="warning",
            access_log=False,
            server_header=False,
            proxy_headers=False,
            limit_concurrency=limits.max_connections,
            timeout_keep_alive=limits.keep_alive_timeout,  # type: ignore[arg-type]  # a float works
            ssl_context_factory=ssl_factory,
        )
        server = _EmbeddedServer(config)
        task = asyncio.create_task(server.serve(sockets=sockets), name="postroom-admin")
        while not server.started:
            if task.done():
                for sock in sockets:
                    sock.close()
                await task  # raises what stopped uvicorn from starting
                raise RuntimeError("the admin listener stopped while starting")
            await asyncio.sleep(_STARTUP_POLL)
        self._server, self._task = server, task
        self._bound = tuple(_address(sock) for sock in sockets)
        log.debug("admin listener accepting %s on %s", self.protocol, ", ".join(map(str, self._bound)))
        return self._bound

    async def stop(self, grace: float) -> None:
        """Stop accepting, let requests in flight finish for up to `grace` seconds, then end the rest."""
        server, task = self._server, self._task
        if server is None or task is None:
            return
        # uvicorn counts its grace in whole seconds; past it, it cancels the requests still running
        # (their clients get 500) and closes their connections.
        server.config.timeout_graceful_shutdown = max(1, math.ceil(grace))
        server.should_exit = True
        _, late = await asyncio.wait({task}, timeout=grace + _SHUTDOWN_SLACK)
        if late:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self._server = self._task = None
        log.debug("admin listener stopped")


def _bind(addresses: tuple[ListenAddress, ...], *, backlog: int) -> list[socket.socket]:
    sockets: list[socket.socket] = []
    try:
        for address in addresses:
            family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
            sockets.append(socket.create_server((address.host, address.port), family=family, backlog=backlog))
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _address(sock: socket.socket) -> ListenAddress:
    host, port = sock.getsockname()[:2]
    return ListenAddress(str(host), int(port))
