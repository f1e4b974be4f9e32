"""The admin listener: uvicorn serving the admin ASGI app inside the node's own event loop.

`AdminListener.start()` binds every configured address itself (port 0 picks a free one; `bound` says
which), hands the listening sockets to a uvicorn server running as a task on the current loop, and
returns once uvicorn serves them. `stop(grace)` asks uvicorn to exit: it stops accepting, closes idle
keep-alive connections, and lets requests in flight finish; after `grace` seconds (rounded up to a
whole second) it cancels those still running, whose clients get `500`, and closes their connections.
Should uvicorn itself hang, its task is cancelled shortly after. Nothing outlives `stop`.

The node owns the process: uvicorn installs no signal handlers here (`capture_signals` is a no-op), does
not configure logging (`log_config=None`), logs no access lines, and its own loggers are set to
warning, so only problems reach the node's log. No lifespan protocol: the app has no startup work.

*Security:* this serves the network. uvicorn (h11) parses requests and bounds them: the request head
(h11's 16 KiB), idle keep-alive connections (5 s), and concurrent connections (`MAX_CONNECTIONS`, then
503). `Server` headers are not sent. With an SSL context it serves HTTPS only; without one, plain HTTP,
meant for a reverse proxy in front that terminates TLS. Forwarded headers are not trusted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import ssl
from collections.abc import Callable, Iterator

import uvicorn
from starlette.types import ASGIApp

from postroom.config.settings import ListenAddress

MAX_CONNECTIONS = 1000  # concurrent HTTP connections; above it uvicorn answers 503
_SHUTDOWN_SLACK = 2.0  # seconds past the grace for uvicorn to notice the stop and end what it cancelled
_STARTUP_POLL = 0.005  # seconds between checks that uvicorn is serving (it offers no event for it)

log = logging.getLogger(__name__)


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handlers: SIGTERM and SIGINT belong to the node (`App.serve`)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class AdminListener:
    """The admin HTTP(S) listener on one or more addresses."""

    def __init__(
        self, app: ASGIApp, addresses: tuple[ListenAddress, ...], ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.app = app
        self.addresses = addresses
        self.ssl_context = ssl_context
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
        sockets = _bind(self.addresses)
        context = self.ssl_context
        ssl_factory: Callable[[uvicorn.Config, Callable[[], ssl.SSLContext]], ssl.SSLContext] | None = (
            (lambda _config, _default: context) if context is not None else None
        )
        config = uvicorn.Config(
            self.app,
            http="h11",
            ws="none",
            lifespan="off",
            log_config=None,
            log_level="warning",
            access_log=False,
            server_header=False,
            proxy_headers=False,
            limit_concurrency=MAX_CONNECTIONS,
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
        log.info("admin listener accepting %s on %s", self.protocol, ", ".join(map(str, self._bound)))
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
        log.info("admin listener stopped")


def _bind(addresses: tuple[ListenAddress, ...]) -> list[socket.socket]:
    sockets: list[socket.socket] = []
    try:
        for address in addresses:
            family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
            sockets.append(
                socket.create_server((address.host, address.port), family=family, backlog=MAX_CONNECTIONS)
            )
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _address(sock: socket.socket) -> ListenAddress:
    host, port = sock.getsockname()[:2]
    return ListenAddress(str(host), int(port))
