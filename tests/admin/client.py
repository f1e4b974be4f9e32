"""A real HTTP client for the admin listener tests: `http.client` on a socket, Host headers as given."""

from __future__ import annotations

import http.client
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field

from postroom.dns.mta_sts import POLICY_PATH


@dataclass(frozen=True)
class Reply:
    status: int
    content_type: str | None
    body: bytes
    headers: tuple[tuple[str, str], ...] = field(default=(), compare=False)


def request(
    port: int,
    hosts: Sequence[str],
    path: str = POLICY_PATH,
    *,
    method: str = "GET",
    context: ssl.SSLContext | None = None,
    address: str = "127.0.0.1",
    source: str | None = None,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes | None = None,
) -> Reply:
    """One request with exactly these Host headers (none, one or several), `headers` and `body` (sent
    with its Content-Length), on a new connection (from the local address `source` when given)."""
    bind = (source, 0) if source is not None else None
    connection = (
        http.client.HTTPSConnection(address, port, context=context, timeout=10, source_address=bind)
        if context is not None
        else http.client.HTTPConnection(address, port, timeout=10, source_address=bind)
    )
    try:
        connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for host in hosts:
            connection.putheader("Host", host)
        for field, value in headers:
            connection.putheader(field, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        answer = response.read()
        return Reply(
            response.status, response.getheader("content-type"), answer, tuple(response.getheaders())
        )
    finally:
        connection.close()
