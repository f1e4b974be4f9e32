"""The OpenSPF RFC 7208 test suite, every test of it, against `check_spf` over the real resolver.

`data/rfc7208-tests.yml` (vendored from pyspf's source distribution; its header names origin and
licence) holds scenarios: zone data, and tests that each give a client address, MAIL FROM, HELO, the
results allowed (one, or a list of acceptable ones) and sometimes the explanation of a fail. Each
scenario's zone data is served by a loopback `DnsTestServer` holding the root zone (so a name the data
does not hold is NXDOMAIN, as on the Internet), started once per scenario for the module; every test
gets a fresh `DnsResolver` on it, with a short timeout for the names the data marks TIMEOUT (the server
never answers those). The suite's explanations assume a default explanation of "DEFAULT", which
`check_spf` takes as a parameter.

How the zone data is read, as the suite's own driver (pyspf's testspf.py) reads it:

- `SPF: text` (or a list of strings) is a record of type SPF; at a name without any `TXT:` entry it is
  served as a TXT record too (RFC 4408 publishers published both; RFC 7208 checkers ask only for TXT);
- `TXT: NONE` means no TXT record (and none made from the SPF ones);
- `TIMEOUT` makes every question for a type the name has no records of go unanswered;
- `MX: [preference, host]`, with host "" for the null MX.

One deviation, which no result depends on: `null.example.com` has a TXT record of *no* strings, which
the wire format allows but dnspython refuses to build; it is served as one empty string (the suite's
point is that a receiver ignores it and does not crash, and an empty string is not an SPF record either).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from postroom.dns.resolver import DnsResolver
from postroom.model.verdicts import SpfResult
from postroom.protection.spf import check_spf
from tests.support.dns_server import DnsTestServer

SUITE = Path(__file__).parent / "data" / "rfc7208-tests.yml"
RESOLVER_TIMEOUT = 0.5  # seconds before a TIMEOUT name gives temperror; loopback answers take milliseconds


@dataclass(frozen=True)
class Scenario:
    slug: str
    zonedata: dict[str, list[Any]]


@dataclass(frozen=True)
class SuiteTest:
    scenario: int
    name: str
    host: str
    mailfrom: str
    helo: str
    results: tuple[str, ...]
    explanation: str | None
    receiver: str


def load() -> tuple[list[Scenario], list[SuiteTest]]:
    scenarios: list[Scenario] = []
    tests: list[SuiteTest] = []
    for index, document in enumerate(yaml.safe_load_all(SUITE.read_text(encoding="utf-8"))):
        slug = re.sub(r"[^a-z0-9]+", "-", document["description"].lower()).strip("-")
        scenarios.append(Scenario(slug, document.get("zonedata") or {}))
        for name, test in document["tests"].items():
            result = test["result"]
            tests.append(
                SuiteTest(
                    scenario=index,
                    name=name,
                    host=test["host"],
                    mailfrom=test["mailfrom"],
                    helo=test["helo"],
                    results=tuple(result) if isinstance(result, list) else (result,),
                    explanation=test.get("explanation"),
                    receiver=test.get("receiver", "receiver.test"),
                )
            )
    return scenarios, tests


SCENARIOS, TESTS = load()


def serve(server: DnsTestServer, zonedata: dict[str, list[Any]]) -> None:
    """Load one scenario's zone data into `server`, as described in the module docstring."""
    server.set_zone(".")
    for name, entries in zonedata.items():
        has_txt = any(isinstance(entry, dict) and "TXT" in entry for entry in entries)
        for entry in entries:
            if entry == "TIMEOUT":
                server.set_unanswered(name)
                continue
            ((rdtype, value),) = entry.items()
            if rdtype in ("SPF", "TXT"):
                strings = [value] if isinstance(value, str) else list(value)
                if strings == ["NONE"]:
                    continue
                strings = strings or [""]  # see the module docstring: no strings cannot be served
                server.add_txt(name, *strings, rdtype=rdtype)
                if rdtype == "SPF" and not has_txt:
                    server.add_txt(name, *strings)
            elif rdtype == "MX":
                preference, host = value
                server.add_records(name, "MX", f"{preference} {host or '.'}")
            else:
                server.add_records(name, rdtype, value)


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[int, DnsTestServer]]:
    """One running server per scenario, started when its first test needs it."""
    started: dict[int, DnsTestServer] = {}
    yield started
    for server in started.values():
        server.stop()


@pytest.mark.parametrize(
    "test", [pytest.param(test, id=f"{SCENARIOS[test.scenario].slug}/{test.name}") for test in TESTS]
)
async def test_rfc7208_suite(test: SuiteTest, servers: dict[int, DnsTestServer]) -> None:
    server = servers.get(test.scenario)
    if server is None:
        server = DnsTestServer().start()
        serve(server, SCENARIOS[test.scenario].zonedata)
        servers[test.scenario] = server
    resolver = DnsResolver(server.settings(timeout=RESOLVER_TIMEOUT))

    verdict = await check_spf(
        resolver, test.host, test.mailfrom, test.helo, receiver=test.receiver, default_explanation="DEFAULT"
    )

    assert verdict.result in {SpfResult(result) for result in test.results}, verdict
    if test.explanation is not None:
        assert verdict.explanation == test.explanation


def test_the_whole_suite_is_here() -> None:
    """Every scenario and test of the vendored file is a case above (the 2014.04 release with the
    2019.08 additions has 203)."""
    assert len(SCENARIOS) == 16
    assert len(TESTS) == 203
    assert len({(test.scenario, test.name) for test in TESTS}) == len(TESTS)
