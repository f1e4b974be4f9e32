"""The admin app's routing by Host header, through a real HTTP client against the running listener."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from postroom.admin import AdminListener, build_admin_app, request_host
from postroom.config.settings import ListenAddress
from postroom.dns.mta_sts import render_sts_policy
from tests.admin.client import Reply, request

POLICY = render_sts_policy("enforce", ["contoso-test.mail.protection.postroom.test"], 604800)
BAD_HOST = Reply(400, "text/plain; charset=utf-8", b"bad Host header\n")
NO_POLICY = Reply(404, "text/plain; charset=utf-8", b"no MTA-STS policy here\n")


@dataclass
class Lookups:
    """`policy_for`: contoso.test has a policy, fails.test breaks; records each call and its thread."""

    domains: list[str] = field(default_factory=list)
    threads: set[int] = field(default_factory=set)

    def __call__(self, domain: str) -> str | None:
        self.domains.append(domain)
        self.threads.add(threading.get_ident())
        if domain == "fails.test":
            raise RuntimeError("the directory is unreachable")
        return POLICY if domain == "contoso.test" else None


@dataclass
class Served:
    port: int
    lookups: Lookups

    async def request(
        self, hosts: list[str], path: str = "/.well-known/mta-sts.txt", method: str = "GET"
    ) -> Reply:
        return await asyncio.to_thread(request, self.port, hosts, path, method=method)


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    lookups = Lookups()
    listener = AdminListener(build_admin_app(lookups), (ListenAddress("127.0.0.1", 0),))
    await listener.start()
    yield Served(listener.bound[0].port, lookups)
    await listener.stop(1)


@pytest.mark.parametrize(
    ("host", "domain"),
    [
        ("mta-sts.contoso.test", "contoso.test"),
        ("MTA-STS.Contoso.TEST", "contoso.test"),
        ("mta-sts.contoso.test:8443", "contoso.test"),
        ("mta-sts.contoso.test.", "contoso.test"),
        ("mta-sts.contoso.test.:443", "contoso.test"),
    ],
)
async def test_policy_is_served_for_the_domain_of_the_host(served: Served, host: str, domain: str) -> None:
    assert await served.request([host]) == Reply(200, "text/plain; charset=utf-8", POLICY.encode())
    assert served.lookups.domains == [domain]


@pytest.mark.parametrize(
    ("host", "path", "asked"),
    [
        ("mta-sts.unknown.test", "/.well-known/mta-sts.txt", ["unknown.test"]),
        ("mta-sts.mta-sts.contoso.test", "/.well-known/mta-sts.txt", ["mta-sts.contoso.test"]),
        ("contoso.test", "/.well-known/mta-sts.txt", []),
        ("www.contoso.test", "/.well-known/mta-sts.txt", []),
        ("mta-sts", "/.well-known/mta-sts.txt", []),
        ("127.0.0.1:8080", "/.well-known/mta-sts.txt", []),
        ("[::1]:8080", "/.well-known/mta-sts.txt", []),
    ],
)
async def test_hosts_without_a_policy_get_404(served: Served, host: str, path: str, asked: list[str]) -> None:
    assert await served.request([host], path) == NO_POLICY
    assert served.lookups.domains == asked


@pytest.mark.parametrize(
    "path", ["/", "/.well-known/mta-sts.txt/", "/.well-known/mta-sts.txt/x", "/.well-known/", "/admin"]
)
async def test_other_paths_get_404(served: Served, path: str) -> None:
    reply = await served.request(["mta-sts.contoso.test"], path)
    assert (reply.status, reply.content_type) == (404, "text/plain; charset=utf-8")
    assert served.lookups.domains == []


@pytest.mark.parametrize(
    "host",
    [
        "",
        "bad host.test",
        "mta-sts.contoso.test/evil",
        "mta-sts.contoso.test@evil.test",
        "mta-sts_contoso.test",
        "-mta-sts.contoso.test",
        "mta-sts..contoso.test",
        "mta-sts.contoso.test:",
        "mta-sts.contoso.test:https",
        "mta-sts.contoso.test:123456",
        "mta-sts.contoso.test:443:443",
        "mta-sts." + "a" * 64 + ".test",
        "mta-sts." + ".".join(["abcdefghi"] * 25) + ".test",
        "mta-sts.contöso.test",
        "[::1",
        "[::1]x",
        "[zz::1]:80",
        "[127.0.0.1]",
    ],
)
async def test_a_host_that_is_not_a_host_name_gets_400(served: Served, host: str) -> None:
    assert await served.request([host]) == BAD_HOST
    assert await served.request([host], "/") == BAD_HOST, "checked before routing"
    assert served.lookups.domains == []


@pytest.mark.parametrize("hosts", [[], ["mta-sts.contoso.test", "mta-sts.contoso.test"]])
async def test_a_request_without_exactly_one_host_gets_400(served: Served, hosts: list[str]) -> None:
    assert (await served.request(hosts)).status == 400
    assert served.lookups.domains == []


@pytest.mark.parametrize(
    ("value", "host"),
    [
        ("Mta-Sts.Contoso.Test.", "mta-sts.contoso.test"),
        ("mta-sts.contoso.test:65535", "mta-sts.contoso.test"),
        ("localhost", "localhost"),
        ("[::1]:443", "[::1]"),
        ("[2001:DB8:0::1]", "[2001:db8::1]"),
        ("mta sts", None),
        ("a" * 64, None),
        (("a" * 63 + ".") * 4 + "a", None),
    ],
)
def test_request_host(value: str, host: str | None) -> None:
    assert request_host(value) == host


async def test_head_is_answered_and_other_methods_are_not_allowed(served: Served) -> None:
    head = await served.request(["mta-sts.contoso.test"], method="HEAD")
    assert (head.status, head.content_type, head.body) == (200, "text/plain; charset=utf-8", b"")
    assert (await served.request(["mta-sts.contoso.test"], method="POST")).status == 405


async def test_the_lookup_runs_off_the_event_loop(served: Served) -> None:
    await served.request(["mta-sts.contoso.test"])
    assert served.lookups.threads and threading.get_ident() not in served.lookups.threads


async def test_a_failing_lookup_is_a_500_and_the_listener_keeps_serving(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        reply = await served.request(["mta-sts.fails.test"])
    assert reply.status == 500 and b"unreachable" not in reply.body, "nothing internal reaches the client"
    assert any("the directory is unreachable" in str(record.exc_info) for record in caplog.records)
    assert (await served.request(["mta-sts.contoso.test"])).status == 200
