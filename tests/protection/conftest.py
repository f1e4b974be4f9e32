"""Authentication tests share one loopback DNS server per module holding the senders' zones; each test
publishes the keys and DMARC records it needs under names of its own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from postroom.dns import DnsResolver
from postroom.model.verdicts import SpfResult, SpfVerdict
from postroom.protection.authentication import Authenticator
from tests.support.dns_server import DnsTestServer

AUTHSERV_ID = "mx.postroom.test"
SENDER_ZONES = (
    "contoso.com",
    "fabrikam.com",
    "contoso.co.uk",
    "forwarder.example",
    "lists.example",
    "tailspin.example",
    "postroom.test",
)


@pytest.fixture(scope="module")
def dns() -> Iterator[DnsTestServer]:
    with DnsTestServer(dict.fromkeys(SENDER_ZONES, "")) as server:
        yield server


@pytest.fixture
def authenticator(dns: DnsTestServer) -> Authenticator:
    """A fresh resolver (and cache) per test: records published by a test are seen at once."""
    return Authenticator(DnsResolver(dns.settings(cache_size=0)), AUTHSERV_ID, sample=lambda: 0.5)


def spf(result: SpfResult = SpfResult.NONE, domain: str = "contoso.com", ip: str = "192.0.2.1") -> SpfVerdict:
    return SpfVerdict(result, domain, "mailfrom", ip)


def message(
    sender: str = "Ann <ann@contoso.com>", body: bytes = b"The figures are attached.\r\n", extra: bytes = b""
) -> bytes:
    return (
        f"From: {sender}\r\n".encode() + b"To: bob@tailspin.example\r\n"
        b"Subject: Quarterly figures\r\n"
        b"Date: Mon, 1 Jun 2026 10:00:00 +0000\r\n"
        b"Message-ID: <q1@contoso.com>\r\n" + extra + b"\r\n" + body
    )
