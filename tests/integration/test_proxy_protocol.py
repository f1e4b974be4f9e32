"""A node behind a TCP load balancer: PROXY protocol on the MX and submission listeners, on loopback.

127.0.0.1 is the trusted balancer; 127.0.0.2 is a stranger. Clients are smtplib's, with the balancer's
header written first on their socket (as haproxy's `send-proxy` / `send-proxy-v2` does), so what the
node makes of the header is seen where a user sees it: the Received header of the delivered message,
the trace, the replies.
"""

from __future__ import annotations

import base64
import dataclasses
import smtplib
import socket
import ssl
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from postroom.model.scope import OPERATOR
from postroom.storage.schema import trace_events, trace_messages
from postroom.trace import TraceQuery
from tests.conftest import Hosted, wait_for
from tests.integration.test_hosted_flow import inbox
from tests.support.haproxy import Haproxy
from tests.support.node import RunningNode, running
from tests.support.proxy import v1_header, v2_header

pytestmark = pytest.mark.integration

CLIENT = ("203.0.113.7", 40125)
CLAIMED = ("198.51.100.66", 40125)  # what a stranger claims: must appear nowhere
VIP = ("192.0.2.25", 25)
MESSAGE = (
    b"From: news@partner.example\r\nTo: alice@contoso.com\r\nSubject: via the balancer\r\n\r\nHello.\r\n"
)


class BalancedSMTP(smtplib.SMTP):
    """smtplib's client, with `header` (a balancer's PROXY header) written first on its socket."""

    header = b""

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = socket.create_connection((host, port), timeout, self.source_address)
        sock.sendall(self.header)
        return sock


class BalancedSMTPS(smtplib.SMTP_SSL):
    """The same over implicit TLS: the header in plaintext, then the TLS handshake."""

    header = b""
    context: ssl.SSLContext

    def _get_socket(self, host: str, port: int, timeout: float) -> Any:
        sock = socket.create_connection((host, port), timeout, self.source_address)
        sock.sendall(self.header)
        return self.context.wrap_socket(sock, server_hostname=host)


def balanced(
    kind: type[smtplib.SMTP], header: bytes, address: tuple[str, int], **options: Any
) -> smtplib.SMTP:
    client = type("Client", (kind,), {"header": header})
    return client(*address, timeout=15, **options)  # type: ignore[no-any-return]


@pytest.fixture
def node(hosted: Hosted) -> Iterator[RunningNode]:
    settings = hosted.settings
    behind = {"proxy_protocol": True, "trusted_proxies": ("127.0.0.1/32",), "proxy_header_timeout": 1.0}
    settings = dataclasses.replace(
        settings,
        mx=dataclasses.replace(settings.mx, **behind),  # type: ignore[arg-type]
        submission=dataclasses.replace(settings.submission, **behind),  # type: ignore[arg-type]
    )
    with running(settings) as running_node:
        yield running_node


def client_ips(node: RunningNode) -> tuple[list[str], str]:
    """Every client IP trace holds, and every event detail, as text."""
    with node.app.database.read() as conn:
        ips = [row.client_ip for row in conn.execute(select(trace_messages.c.client_ip))]
        details = " ".join(str(row.detail) for row in conn.execute(select(trace_events.c.detail)))
    return ips, details


@pytest.mark.parametrize("header", [v1_header(CLIENT, VIP), v2_header(CLIENT, VIP)], ids=["v1", "v2"])
def test_mail_through_a_trusted_balancer_is_from_the_client_it_names(
    hosted: Hosted, node: RunningNode, header: bytes
) -> None:
    with balanced(BalancedSMTP, header, node.mx, local_hostname="client.example") as client:
        assert client.sendmail("news@partner.example", ["alice@contoso.com"], MESSAGE) == {}
    wait_for(lambda: len(inbox(hosted, "alice@contoso.com")) == 1)
    [stored] = inbox(hosted, "alice@contoso.com")
    received = stored.split(b"\r\n\r\n", 1)[0].decode()
    assert "Received: from client.example ([203.0.113.7])" in received
    assert "127.0.0.1" not in received  # the balancer is not the client
    [row] = hosted.app.trace.search(TraceQuery(recipient="alice@contoso.com"), OPERATOR)
    detail = hosted.app.trace.detail(row.message_id, OPERATOR)
    assert detail is not None and detail.message.client_ip == "203.0.113.7"


def test_a_stranger_s_header_is_refused_and_its_address_appears_nowhere(
    hosted: Hosted, node: RunningNode, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    transaction = (
        b"EHLO x.example\r\nMAIL FROM:<a@partner.example>\r\nRCPT TO:<alice@contoso.com>\r\nDATA\r\n"
    )
    with socket.create_connection(node.mx, timeout=10, source_address=("127.0.0.2", 0)) as sock:
        sock.sendall(v1_header(CLAIMED, VIP) + transaction + MESSAGE + b".\r\n")
        transcript = b""
        while chunk := sock.recv(65536):  # until the node closes
            transcript += chunk
    greeting, refusal, end = transcript.split(b"\r\n")
    assert greeting.startswith(b"220 ") and refusal.startswith(b"500 5.5.1 ") and end == b""
    # A stranger without a header is served directly, and the claim went nowhere.
    with smtplib.SMTP(*node.mx, timeout=15, source_address=("127.0.0.2", 0)) as client:
        assert client.sendmail("news@partner.example", ["bob@contoso.com"], MESSAGE) == {}
    wait_for(lambda: len(inbox(hosted, "bob@contoso.com")) == 1)
    assert inbox(hosted, "alice@contoso.com") == []
    ips, details = client_ips(node)
    assert ips == ["127.0.0.2"] and CLAIMED[0] not in details
    assert CLAIMED[0] not in caplog.text and "127.0.0.2" in caplog.text


@pytest.mark.parametrize(
    ("first", "reason"),
    [
        (b"EHLO balancer.example\r\n", "not a PROXY protocol header"),
        (b"PROXY TCP4 203.0.113.7 ", "none in time"),
    ],
    ids=["no header", "too slow"],
)
def test_a_balancer_connection_without_its_header_is_closed_without_a_greeting(
    node: RunningNode, first: bytes, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="postroom.smtp.server")
    started = time.monotonic()  # before the connection: the node's header timer starts after it
    with socket.create_connection(node.mx, timeout=10) as sock:
        sock.sendall(first)
        assert sock.recv(65536) == b""
    if reason == "none in time":
        assert time.monotonic() - started >= 1.0  # [mx] proxy_header_timeout = 1
    wait_for(lambda: f"PROXY header from the balancer 127.0.0.1 refused ({reason})" in caplog.text)


def test_submission_with_implicit_tls_behind_the_balancer(hosted: Hosted, node: RunningNode) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    token = base64.b64encode(b"\0alice@contoso.com\0alice-pw").decode()
    address = node.address("submissions")
    with balanced(
        BalancedSMTPS, v2_header(CLIENT, VIP), address, context=context, local_hostname="device.example"
    ) as client:
        client.ehlo()
        assert client.docmd("AUTH", f"PLAIN {token}")[0] == 235
        submitted = MESSAGE.replace(b"news@partner.example", b"alice@contoso.com")
        assert client.sendmail("alice@contoso.com", ["bob@contoso.com"], submitted) == {}
    wait_for(lambda: len(inbox(hosted, "bob@contoso.com")) == 1)
    [stored] = inbox(hosted, "bob@contoso.com")
    assert b"Received: from device.example ([203.0.113.7])" in stored and b"with ESMTPSA" in stored
    ips, details = client_ips(node)
    assert ips == ["203.0.113.7"] and '"client_ip": "203.0.113.7"' in details


@pytest.mark.parametrize("send_proxy", ["send-proxy", "send-proxy-v2"])
def test_through_a_real_haproxy(hosted: Hosted, node: RunningNode, send_proxy: str) -> None:
    # haproxy connects to the node from 127.0.0.1 (trusted); the client connects to it from 127.0.0.3.
    with (
        Haproxy(node.mx, source="127.0.0.1", send_proxy=send_proxy) as balancer,
        smtplib.SMTP(
            *balancer.address, timeout=15, local_hostname="client.example", source_address=("127.0.0.3", 0)
        ) as client,
    ):
        assert client.sendmail("news@partner.example", ["alice@contoso.com"], MESSAGE) == {}
    wait_for(lambda: len(inbox(hosted, "alice@contoso.com")) == 1)
    [stored] = inbox(hosted, "alice@contoso.com")
    assert b"Received: from client.example ([127.0.0.3])" in stored
    assert client_ips(node)[0] == ["127.0.0.3"]
