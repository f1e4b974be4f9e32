"""Fixtures for the DNS room: a real authoritative server on loopback serving the zones below.

`tests/dns` has no `__init__.py` on purpose: with `tests/` on sys.path, a `dns` package there would
shadow dnspython.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# `support` lives in tests/; the top-level conftest puts tests/ on sys.path once there is one.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from support.dns_server import DnsTestServer

EXAMPLE_COM = """\
$TTL 300
@         IN SOA  ns.example.com. hostmaster.example.com. 1 3600 600 86400 60
@         IN NS   ns.example.com.
@         IN MX   10 mx1.example.com.
@         IN MX   20 MX2.Example.COM.
@         IN TXT  "v=spf1 include:spf.postroom.test -all"
@         IN TXT  "postroom-verification=abc123"
@         IN A    192.0.2.10
@         IN AAAA 2001:db8::10
selector._domainkey IN TXT "v=DKIM1; k=rsa; " "p=MIIBIjANBg"
www       IN CNAME example.com.
mail      IN CNAME mx1
mx1       IN A    192.0.2.25
mx1       IN A    192.0.2.26
outside   IN CNAME target.elsewhere.test.
a.b.deep  IN A    192.0.2.99
_autodiscover._tcp IN SRV 0 0 443 autodiscover.postroom.test.
"""

ZONES = {
    "example.com": EXAMPLE_COM,
    "nullmx.test": "@ 3600 IN MX 0 .\n",
    "longneg.test": "@ 300 IN SOA ns.longneg.test. h.longneg.test. 1 3600 600 86400 86400\n",
    "2.0.192.in-addr.arpa": "25 300 IN PTR mx1.example.com.\n",
    "8.b.d.0.1.0.0.2.ip6.arpa": "0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0 300 IN PTR example.com.\n",
}


@pytest.fixture
def dns_server() -> Iterator[DnsTestServer]:
    """A started server with `ZONES`; stopped after the test."""
    with DnsTestServer(ZONES) as server:
        yield server
