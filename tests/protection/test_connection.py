"""The connection filter on its own: service and tenant IP lists, DNS blocklists asked through the real
resolver against a DNS server on loopback, and the rate limits on a clock that moves when told."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from postroom.config import DnsSettings
from postroom.dns import DnsResolver
from postroom.model.ipfilter import Blocklist, IpList
from postroom.model.policy import ConnectionPolicy
from postroom.model.verdicts import ConnectionVerdict, IpListing
from postroom.protection import ConnectionFilter, RateLimits, parse_tenant_lists
from tests.support.dns_server import DnsTestServer, silent_nameserver

# A blocklist zone as the big lists publish them: the address reversed, an A record in 127.0.0.0/8.
BLOCKLIST = """\
2.0.0.127      IN A 127.0.0.2
3.0.0.127      IN A 127.0.0.3
3.0.0.127      IN A 127.0.0.10
7.2.0.192      IN A 127.0.0.4
9.2.0.192      IN A 127.255.255.254
1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2 IN A 127.0.0.2
"""
SECOND = "2.0.0.127 IN A 127.0.0.5\n5.0.0.127 IN A 127.0.0.5\n"


class ManualClock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="module")
def dns() -> Iterator[DnsTestServer]:
    with DnsTestServer({"bl.test": BLOCKLIST, "second.test": SECOND}) as server:
        yield server


def build(
    *,
    allow: tuple[str, ...] = (),
    block: tuple[str, ...] = (),
    zones: tuple[str, ...] = (),
    dns: DnsTestServer | None = None,
    resolver: DnsResolver | None = None,
    connections: int = 1000,
    messages: int = 1000,
    max_clients: int = 1000,
    clock: ManualClock | None = None,
) -> ConnectionFilter:
    if resolver is None and dns is not None:
        resolver = DnsResolver(dns.settings())
    return ConnectionFilter(
        allow=IpList.parse(allow),
        block=IpList.parse(block),
        blocklists=tuple(Blocklist.parse(zone) for zone in zones),
        resolver=resolver,
        rates=RateLimits(
            connections_per_minute=connections,
            messages_per_minute=messages,
            max_clients=max_clients,
            clock=clock or ManualClock(),
        ),
    )


def code(reply: object) -> tuple[int, str | None] | None:
    return None if reply is None else (reply.code, reply.enhanced)  # type: ignore[attr-defined]


# --- service lists ------------------------------------------------------------------------------


async def test_the_service_block_list_refuses_at_connect(dns: DnsTestServer) -> None:
    dns.clear_queries()
    check = build(block=("127.0.0.0/24",), zones=("bl.test",), dns=dns).check("127.0.0.2")
    reply = check.connect()
    assert reply is not None and (reply.code, reply.enhanced) == (554, "5.7.513")
    assert reply.text == "Service unavailable, Client host [127.0.0.2] blocked using the service block list"
    assert check.verdict == ConnectionVerdict(IpListing.BLOCKED, "service", "127.0.0.0/24")
    check.close()
    assert dns.count() == 0, "a refused client is not looked up"


async def test_the_service_allow_list_beats_its_block_list_and_skips_blocklists_and_rates(
    dns: DnsTestServer,
) -> None:
    dns.clear_queries()
    connection_filter = build(
        allow=("127.0.0.2",), block=("127.0.0.0/24",), zones=("bl.test",), dns=dns, connections=1, messages=1
    )
    for _ in range(3):
        check = connection_filter.check("127.0.0.2")
        assert check.connect() is None
        assert check.verdict == ConnectionVerdict(IpListing.ALLOWED, "service", "127.0.0.2")
        assert [check.mail(), check.mail()] == [None, None]
        outcome = await check.recipient(1, ConnectionPolicy())
        assert outcome.refusal is None and outcome.verdict.listing is IpListing.ALLOWED
        check.close()
    assert dns.count() == 0, "an allow-listed client is not looked up on the blocklists"
    assert len(connection_filter.rates) == 0, "nor counted"


# --- tenant lists -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "service_allow", "listing", "refused"),
    [
        (ConnectionPolicy(), (), IpListing.NOT_LISTED, None),
        (ConnectionPolicy(ip_allow=("127.0.0.0/24",)), (), IpListing.ALLOWED, None),
        (ConnectionPolicy(ip_block=("127.0.0.2",)), (), IpListing.BLOCKED, (550, "5.7.513")),
        (ConnectionPolicy(ip_allow=("127.0.0.2",), ip_block=("127.0.0.0/24",)), (), IpListing.ALLOWED, None),
        # A tenant decides about its own mail, whatever the service allows.
        (ConnectionPolicy(ip_block=("127.0.0.2",)), ("127.0.0.2",), IpListing.BLOCKED, (550, "5.7.513")),
    ],
)
async def test_a_tenants_lists_decide_for_its_recipients(
    policy: ConnectionPolicy,
    service_allow: tuple[str, ...],
    listing: IpListing,
    refused: tuple[int, str] | None,
) -> None:
    check = build(allow=service_allow).check("127.0.0.2")
    assert check.connect() is None
    outcome = await check.recipient(7, policy)
    assert outcome.verdict.listing is listing
    assert code(outcome.refusal) == refused
    if listing is not IpListing.NOT_LISTED and not service_allow:
        assert outcome.verdict.list_name == "tenant:7"
    if refused:
        assert outcome.refusal is not None
        assert outcome.refusal.text.endswith("Client host [127.0.0.2] blocked using Customer Block list")
    other = await check.recipient(8, ConnectionPolicy())
    assert other.refusal is None, "another tenant's recipients are not affected"


def test_a_tenants_lists_are_parsed_once_per_change() -> None:
    connection_filter = build()
    policy = ConnectionPolicy(ip_allow=("192.0.2.0/24",))
    one = connection_filter.tenant_lists(1, policy)
    assert connection_filter.tenant_lists(1, ConnectionPolicy(ip_allow=("192.0.2.0/24",))) is one
    changed = connection_filter.tenant_lists(1, ConnectionPolicy(ip_block=("192.0.2.0/24",)))
    assert changed.allow.entries == () and changed.block.entries == ("192.0.2.0/24",)
    assert connection_filter.tenant_lists(2, policy) is not one, "kept per tenant"


def test_a_stored_tenant_list_with_a_bad_entry_is_used_without_it(caplog: pytest.LogCaptureFixture) -> None:
    lists = parse_tenant_lists(ConnectionPolicy(ip_block=("10.0.0.0/8", "192.0.2.1")))
    assert lists.block.entries == ("192.0.2.1",)
    assert "'10.0.0.0/8' is wider" in caplog.text


# --- DNS blocklists -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zones", "client", "listing"),
    [
        (("bl.test",), "127.0.0.2", ("dnsbl:bl.test", "127.0.0.2")),
        (("bl.test",), "127.0.0.4", None),  # not in the zone
        (("bl.test",), "192.0.2.7", ("dnsbl:bl.test", "127.0.0.4")),
        (("bl.test",), "192.0.2.9", None),  # 127.255.255.254: the list's error answer
        (("bl.test=127.0.0.2",), "127.0.0.3", None),  # answers 127.0.0.3 and .10: neither counts
        (("bl.test=127.0.0.2,127.0.0.4-127.0.0.11",), "127.0.0.3", ("dnsbl:bl.test", "127.0.0.10")),
        (("second.test", "bl.test"), "127.0.0.2", ("dnsbl:second.test", "127.0.0.5")),  # the first zone
        (("second.test", "bl.test"), "192.0.2.7", ("dnsbl:bl.test", "127.0.0.4")),
        (("bl.test",), "2001:db8::1", ("dnsbl:bl.test", "127.0.0.2")),  # nibbles
    ],
)
async def test_blocklist_listings_and_return_codes(
    dns: DnsTestServer, zones: tuple[str, ...], client: str, listing: tuple[str, str] | None
) -> None:
    check = build(zones=zones, dns=dns).check(client)
    assert check.connect() is None
    outcome = await check.recipient(3, ConnectionPolicy())
    if listing is None:
        assert outcome.refusal is None and check.verdict.listing is IpListing.NOT_LISTED
        return
    zone = listing[0].removeprefix("dnsbl:")
    assert check.verdict == ConnectionVerdict(IpListing.BLOCKED, *listing)
    assert outcome.refusal is not None and code(outcome.refusal) == (550, "5.7.1")
    assert outcome.refusal.text == f"Service unavailable; client [{client}] blocked using {zone}"
    assert outcome.by_blocklist


async def test_a_tenant_that_allows_a_blocklisted_client_gets_its_mail(dns: DnsTestServer) -> None:
    check = build(zones=("bl.test",), dns=dns).check("127.0.0.2")
    assert check.connect() is None
    allowed = await check.recipient(3, ConnectionPolicy(ip_allow=("127.0.0.2",)))
    assert allowed.refusal is None
    assert allowed.verdict == ConnectionVerdict(IpListing.ALLOWED, "tenant:3", "127.0.0.2")
    refused = await check.recipient(4, ConnectionPolicy())
    assert code(refused.refusal) == (550, "5.7.1")
    assert code((await check.recipient(None, None)).refusal) == (550, "5.7.1"), "the service's own mail"


async def test_blocklists_are_asked_once_per_connection_all_at_once_and_cached(dns: DnsTestServer) -> None:
    resolver = DnsResolver(dns.settings())
    connection_filter = build(zones=("bl.test", "second.test"), resolver=resolver)
    dns.clear_queries()
    for _ in range(3):
        check = connection_filter.check("127.0.0.3")
        assert check.connect() is None
        for tenant in (1, 2):
            await check.recipient(tenant, ConnectionPolicy())
        check.close()
    assert dns.count("3.0.0.127.bl.test", "A") == 1
    assert dns.count("3.0.0.127.second.test", "A") == 1


async def test_a_failing_blocklist_never_refuses(
    dns: DnsTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    dns.set_failure("2.0.0.127.bl.test", "SERVFAIL")
    try:
        check = build(zones=("bl.test",), dns=dns).check("127.0.0.2")
        assert check.connect() is None
        outcome = await check.recipient(1, ConnectionPolicy())
    finally:
        dns.set_failure("2.0.0.127.bl.test", None)
    assert outcome.refusal is None and check.verdict.listing is IpListing.NOT_LISTED
    assert "DNS blocklist bl.test failed for 127.0.0.2 (treated as not listed)" in caplog.text


async def test_a_blocklist_that_times_out_never_refuses(caplog: pytest.LogCaptureFixture) -> None:
    with silent_nameserver() as address:
        resolver = DnsResolver(DnsSettings(nameservers=(address,), timeout=0.3))
        check = build(zones=("bl.test",), resolver=resolver).check("127.0.0.2")
        assert check.connect() is None
        outcome = await asyncio.wait_for(check.recipient(1, ConnectionPolicy()), 5)
    assert outcome.refusal is None and check.verdict.listing is IpListing.NOT_LISTED
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "no answer from 127.0.0.1" in warning.getMessage()


async def test_a_closed_connection_stops_asking() -> None:
    with silent_nameserver() as address:
        resolver = DnsResolver(DnsSettings(nameservers=(address,), timeout=30))
        check = build(zones=("bl.test",), resolver=resolver).check("127.0.0.2")
        assert check.connect() is None
        others = {task for task in asyncio.all_tasks() if task is not asyncio.current_task()}
        assert others, "the blocklists are being asked"
        check.close()
        await asyncio.sleep(0)
        assert all(task.cancelled() for task in others)


# --- rate limits --------------------------------------------------------------------------------


async def test_connections_per_minute_then_421_and_the_next_minute_passes() -> None:
    clock = ManualClock()
    connection_filter = build(connections=3, clock=clock)
    replies = [code(connection_filter.check("127.0.0.9").connect()) for _ in range(4)]
    assert replies == [None, None, None, (421, "4.7.0")]
    assert code(connection_filter.check("127.0.0.10").connect()) is None, "another client has its own"
    clock.advance(59.9)
    assert code(connection_filter.check("127.0.0.9").connect()) == (421, "4.7.0")
    clock.advance(0.1)
    assert code(connection_filter.check("127.0.0.9").connect()) is None


async def test_messages_per_minute_then_421_and_the_next_minute_passes() -> None:
    clock = ManualClock()
    check = build(messages=2, clock=clock).check("127.0.0.9")
    assert check.connect() is None
    assert [code(check.mail()) for _ in range(3)] == [None, None, (421, "4.7.0")]
    clock.advance(60)
    assert check.mail() is None


async def test_an_ipv6_client_is_counted_per_64() -> None:
    connection_filter = build(connections=2)
    same = ["2001:db8:1:2::1", "2001:db8:1:2::ffff", "2001:db8:1:2:abcd::9"]
    assert [code(connection_filter.check(a).connect()) for a in same] == [None, None, (421, "4.7.0")]
    assert code(connection_filter.check("2001:db8:1:3::1").connect()) is None


async def test_a_flood_from_many_addresses_keeps_the_table_within_its_bound() -> None:
    clock = ManualClock()
    connection_filter = build(connections=2, max_clients=64, clock=clock)
    abuser = "127.0.0.1"
    for _ in range(2):
        assert connection_filter.check(abuser).connect() is None
    base = int(ipaddress.IPv4Address("127.1.0.0"))
    for n in range(5_000):
        connection_filter.check(str(ipaddress.IPv4Address(base + n))).connect()
        assert len(connection_filter.rates) <= 64
    assert REGISTRY.get_sample_value("postroom_rate_limited_clients") == 64
    # Past the bound the client whose minute began first was forgotten: looser, never stricter.
    assert connection_filter.check(abuser).connect() is None
    clock.advance(60)
    assert connection_filter.check("127.2.0.1").connect() is None
    assert len(connection_filter.rates) == 1, "expired minutes are dropped as new ones come"


async def test_an_on_premises_connectors_client_is_not_counted_against_the_rates() -> None:
    connection_filter = build(connections=1, messages=1)
    exempt = [code(connection_filter.check("127.0.0.9").connect(exempt=True)) for _ in range(3)]
    assert exempt == [None, None, None]
    check = connection_filter.check("127.0.0.9")
    assert check.connect() is None, "the first counted connection"
    check.exempt()  # attributed at MAIL (by certificate, say)
    assert [check.mail(), check.mail()] == [None, None]
    assert code(connection_filter.check("127.0.0.9").connect()) == (421, "4.7.0")


# --- an original sender that did not connect (enhanced filtering) -----------------------------


@pytest.mark.parametrize(
    ("ip", "policy", "listing", "refused", "text"),
    [
        ("192.0.2.99", ConnectionPolicy(), IpListing.NOT_LISTED, None, ""),
        ("192.0.2.7", ConnectionPolicy(), IpListing.BLOCKED, (550, "5.7.1"), "blocked using bl.test"),
        ("192.0.2.7", ConnectionPolicy(ip_allow=("192.0.2.0/24",)), IpListing.ALLOWED, None, ""),
        (
            "192.0.2.8",
            ConnectionPolicy(ip_block=("192.0.2.8",)),
            IpListing.BLOCKED,
            (550, "5.7.513"),
            "Customer",
        ),
        ("198.51.100.1", ConnectionPolicy(), IpListing.BLOCKED, (554, "5.7.513"), "service block list"),
        ("198.51.100.2", ConnectionPolicy(), IpListing.ALLOWED, None, ""),
        ("not an address", ConnectionPolicy(), IpListing.NOT_LISTED, None, ""),
    ],
)
async def test_judging_an_address_that_did_not_connect(
    dns: DnsTestServer,
    ip: str,
    policy: ConnectionPolicy,
    listing: IpListing,
    refused: tuple[int, str] | None,
    text: str,
) -> None:
    connection_filter = build(
        allow=("198.51.100.2",), block=("198.51.100.0/24",), zones=("bl.test",), dns=dns, connections=1
    )
    for _ in range(3):  # the rates do not count it
        outcome = await connection_filter.judge(ip, 7, policy)
        assert outcome.verdict.listing is listing
        assert code(outcome.refusal) == refused
        if outcome.refusal is not None:
            assert text in outcome.refusal.text and ip in outcome.refusal.text
    assert len(connection_filter.rates) == 0
