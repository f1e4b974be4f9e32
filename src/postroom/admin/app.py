"""The admin HTTP application: the hosted domains' MTA-STS policies, and the node's health and metrics.

A sending MTA fetches `https://mta-sts.<domain>/.well-known/mta-sts.txt` (RFC 8461 §3.3). All those
host names point at the service, so the request's Host header says which domain is asked for; the
app asks `policy_for(domain)` (the domain as an A-label, lower-case) and serves the text it returns
with `200 text/plain; charset=utf-8`, or `404` when it returns None or the host is not `mta-sts.*`.
Any other path is `404` (never a redirect).

With a `directory` (the node passes its own), the tenant admin API and the admin center's connectors
page are served beside it: `admin.api` (each request acts for the tenant of the API token it presents).
With a `client_setup`, mail clients set themselves up from an address: Thunderbird autoconfig and
Outlook Autodiscover (`admin.clients`).

Monitoring (with a `Monitor`; `GET` only, `text/plain`):

- `/healthz`: `200 ok` while the event loop answers; touches nothing else (no database). Anyone may ask.
- `/readyz`: `200 ready` when `Monitor.unready()` finds nothing wrong, else `503 not ready: <reason>`
  (one line: draining, the writer stopped, the database did not answer). A load balancer probes it.
- `/metrics`: the Prometheus text exposition `Monitor.exposition()` gives.
- `/status`: the queue and the node's processes drawn as bars (`admin.status`), `text/html`.

`/readyz`, `/metrics` and `/status` say how the node is doing inside (its queue, its database), so they answer
only clients whose address is in `monitor_allow` (`[admin] metrics_allow`, by default loopback only);
anyone else gets `403`. The admin listener also serves the MTA-STS policies to the whole internet,
and a stranger has no business reading the queue depth or learning that the database is down.

`policy_for` is synchronous and reads the directory, which is a database read (a network round trip
with PostgreSQL); it runs in a worker thread (`asyncio.to_thread`) so the node's SMTP sessions on the
same event loop never wait for it.

*Security:* every request is untrusted network input, parsed and bounded by uvicorn (h11). The Host
header chooses what is served, so it is checked before routing: a request without exactly one Host
header, or whose host is not a syntactically valid host name or IP literal (with an optional port),
gets `400` and reaches no route; no header value is echoed in a response. A domain is served only when
`policy_for` has a policy for it, so a forged Host can only ask for a policy that is public anyway.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections.abc import Callable
from typing import Protocol

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from postroom.admin.api import ConnectorDirectory, connector_routes
from postroom.admin.clients import ClientSetup, client_setup_routes
from postroom.admin.status import NodeStatus, render_status
from postroom.config.settings import AdminSettings, Network
from postroom.dns.mta_sts import POLICY_PATH

PolicyLookup = Callable[[str], str | None]
LOOPBACK: tuple[Network, ...] = AdminSettings().metrics_allow


class Monitor(Protocol):
    """What the monitoring routes ask the node. Both run on the event loop and must not block it."""

    async def unready(self) -> str | None:
        """None when the node should be sent traffic, else why not (one line, no internals)."""
        ...

    async def exposition(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type."""
        ...

    async def status(self) -> NodeStatus:
        """The queue and the node's processes, for the status page."""
        ...


MTA_STS_PREFIX = "mta-sts."

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_HOST_NAME = re.compile(rf"(?:{_LABEL}\.)*{_LABEL}\.?", re.ASCII | re.IGNORECASE)
_PORT = re.compile(r"[0-9]{1,5}", re.ASCII)


def request_host(value: str) -> str | None:
    """The host of a Host header value, lower-case, without port or final dot; None when not valid."""
    if value.startswith("["):
        literal, bracket, port = value[1:].partition("]")
        if not bracket or (port and not (port.startswith(":") and _PORT.fullmatch(port[1:]))):
            return None
        try:
            return f"[{ipaddress.IPv6Address(literal).compressed}]"
        except ValueError:
            return None
    host, colon, port = value.partition(":")
    if colon and not _PORT.fullmatch(port):
        return None
    if len(host) > 254 or not _HOST_NAME.fullmatch(host):
        return None
    return host.lower().removesuffix(".")


class _RequireValidHost:
    """400 for a request whose Host header is missing, repeated or not a host name (see Security)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            hosts = Headers(scope=scope).getlist("host")
            if len(hosts) != 1 or request_host(hosts[0]) is None:
                await PlainTextResponse("bad Host header\n", status_code=400)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _allowed(request: Request, networks: tuple[Network, ...]) -> bool:
    """Whether the request's client (the socket's peer: forwarded headers are not trusted) is inside one
    of `networks`; an IPv4 client on an IPv6 socket is taken by its IPv4 address."""
    if request.client is None:
        return False
    try:
        address = ipaddress.ip_address(request.client.host.partition("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


def _monitoring_routes(monitor: Monitor, allow: tuple[Network, ...]) -> list[Route]:
    def forbidden() -> Response:
        return PlainTextResponse("forbidden: your address is not in [admin] metrics_allow\n", status_code=403)

    async def healthz(_request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(request: Request) -> Response:
        if not _allowed(request, allow):
            return forbidden()
        reason = await monitor.unready()
        if reason is not None:
            return PlainTextResponse(f"not ready: {reason}\n", status_code=503)
        return PlainTextResponse("ready\n")

    async def metrics(request: Request) -> Response:
        if not _allowed(request, allow):
            return forbidden()
        body, content_type = await monitor.exposition()
        return Response(body, media_type=content_type)

    async def status(request: Request) -> Response:
        if not _allowed(request, allow):
            return forbidden()
        return HTMLResponse(render_status(await monitor.status()))

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/status", status, methods=["GET"]),
    ]


def build_admin_app(
    policy_for: PolicyLookup,
    monitor: Monitor | None = None,
    monitor_allow: tuple[Network, ...] = LOOPBACK,
    directory: ConnectorDirectory | None = None,
    client_setup: ClientSetup | None = None,
) -> Starlette:
    """The ASGI app of the admin listener; `policy_for(domain)` gives a domain's MTA-STS policy text,
    `monitor` (when given) answers `/readyz` and `/metrics` for the clients in `monitor_allow`,
    `directory` (when given) the tenant admin API (`admin.api`), `client_setup` (when given) mail
    clients' autoconfig and Autodiscover (`admin.clients`)."""

    async def mta_sts_policy(request: Request) -> Response:
        host = request_host(request.headers["host"]) or ""
        domain = host.removeprefix(MTA_STS_PREFIX) if host.startswith(MTA_STS_PREFIX) else ""
        text = await asyncio.to_thread(policy_for, domain) if domain else None
        if text is None:
            return PlainTextResponse("no MTA-STS policy here\n", status_code=404)
        return PlainTextResponse(text)

    routes = [Route(POLICY_PATH, mta_sts_policy, methods=["GET"])]
    if monitor is not None:
        routes += _monitoring_routes(monitor, monitor_allow)
    if directory is not None:
        routes += connector_routes(directory)
    if client_setup is not None:
        routes += client_setup_routes(client_setup)
    app = Starlette(
        routes=routes,
        middleware=[Middleware(_RequireValidHost)],
    )
    # A path with a trailing slash is a 404, not a redirect built from the Host header.
    app.router.redirect_slashes = False
    return app
