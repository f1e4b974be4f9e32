"""DnsResolver against the real test server on loopback: typed lookups, outcomes, cache, transports."""

from __future__ import annotations

import time
from ipaddress import IPv4Address, IPv6Address

import pytest

from postroom.config.settings import DnsSettings
from postroom.dns import (
    MAX_NEGATIVE_TTL,
    Answer,
    DnsResolver,
    DnsTemporaryError,
    InvalidName,
    MxRecord,
    NxDomain,
    TxtRecord,
)
from support.dns_server import DnsTestServer, silent_nameserver


class ManualClock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def resolver(dns_server: DnsTestServer, clock: ManualClock) -> DnsResolver:
    return DnsResolver(dns_server.settings(), clock=clock)


# -- typed lookups


async def test_txt_keeps_every_record_and_its_strings(resolver: DnsResolver) -> None:
    records = await resolver.txt("example.com")
    assert sorted(record.text for record in records) == [
        "postroom-verification=abc123",
        "v=spf1 include:spf.postroom.test -all",
    ]
    assert all(len(record.strings) == 1 for record in records)


async def test_txt_of_several_strings_joins_them_without_separator(resolver: DnsResolver) -> None:
    [record] = await resolver.txt("selector._domainkey.example.com")
    assert record == TxtRecord((b"v=DKIM1; k=rsa; ", b"p=MIIBIjANBg"))
    assert record.data == b"v=DKIM1; k=rsa; p=MIIBIjANBg"
    assert record.text == "v=DKIM1; k=rsa; p=MIIBIjANBg"


async def test_txt_text_replaces_octets_that_are_not_utf8(
    dns_server: DnsTestServer, resolver: DnsResolver
) -> None:
    dns_server.add_txt("bin.example.com", b"ok\xff")
    [record] = await resolver.txt("bin.example.com")
    assert record.strings == (b"ok\xff",)
    assert record.text == "ok\ufffd"


async def test_mx_exchanges_are_lower_case_without_final_dot(resolver: DnsResolver) -> None:
    records = sorted(await resolver.mx("Example.COM."), key=lambda mx: mx.preference)
    assert records == [MxRecord(10, "mx1.example.com"), MxRecord(20, "mx2.example.com")]
    assert not any(record.is_null for record in records)


async def test_null_mx_is_recognisable(resolver: DnsResolver) -> None:
    assert await resolver.mx("nullmx.test") == [MxRecord(0, "")]
    assert (await resolver.mx("nullmx.test"))[0].is_null


async def test_addresses(resolver: DnsResolver) -> None:
    assert await resolver.a("example.com") == [IPv4Address("192.0.2.10")]
    assert await resolver.aaaa("example.com") == [IPv6Address("2001:db8::10")]
    assert sorted(await resolver.a("mx1.example.com")) == [
        IPv4Address("192.0.2.25"),
        IPv4Address("192.0.2.26"),
    ]


async def test_addresses_follow_cname_chains(resolver: DnsResolver) -> None:
    assert await resolver.a("www.example.com") == [IPv4Address("192.0.2.10")]
    assert len(await resolver.a("mail.example.com")) == 2


@pytest.mark.parametrize(
    ("name", "target"),
    [("www.example.com", "example.com"), ("mail.example.com", "mx1.example.com"), ("example.com", None)],
)
async def test_cname_reports_the_target_at_the_name(
    resolver: DnsResolver, name: str, target: str | None
) -> None:
    assert await resolver.cname(name) == target


@pytest.mark.parametrize(
    ("ip", "names"),
    [
        ("192.0.2.25", ["mx1.example.com"]),
        (IPv6Address("2001:db8::10"), ["example.com"]),
        ("192.0.2.77", None),  # no PTR: NXDOMAIN
    ],
)
async def test_ptr(resolver: DnsResolver, ip: str | IPv6Address, names: list[str] | None) -> None:
    if names is None:
        with pytest.raises(NxDomain):
            await resolver.ptr(ip)
    else:
        assert await resolver.ptr(ip) == names


async def test_ptr_refuses_what_is_not_an_address(resolver: DnsResolver) -> None:
    with pytest.raises(ValueError):
        await resolver.ptr("example.com")


async def test_generic_query_reports_canonical_name_records_and_ttl(resolver: DnsResolver) -> None:
    assert await resolver.query("_autodiscover._tcp.example.com", "SRV") == Answer(
        name="_autodiscover._tcp.example.com",
        rdtype="SRV",
        records=("0 0 443 autodiscover.postroom.test.",),
        ttl=300,
    )
    answer = await resolver.query("www.example.com", "a")
    assert (answer.name, answer.records) == ("example.com", ("192.0.2.10",))


async def test_generic_query_refuses_an_unknown_type(resolver: DnsResolver) -> None:
    with pytest.raises(ValueError):
        await resolver.query("example.com", "NOSUCHTYPE")


# -- outcomes: NXDOMAIN, NODATA, invalid names, failures


async def _outcome(resolver: DnsResolver, name: str, rdtype: str) -> str | tuple[str, ...]:
    """The records of an answer, or "NXDOMAIN"."""
    try:
        return (await resolver.query(name, rdtype)).records
    except NxDomain:
        return "NXDOMAIN"


@pytest.mark.parametrize(
    ("name", "rdtype", "outcome"),
    [
        ("missing.example.com", "MX", "NXDOMAIN"),
        ("mx1.example.com", "MX", ()),  # NODATA: the name has only A records
        ("deep.example.com", "MX", ()),  # empty non-terminal: exists, no records
        ("b.deep.example.com", "TXT", ()),
        ("outside.example.com", "A", ()),  # CNAME out of the server's zones: nothing more from it
        ("outside.example.com", "CNAME", ("target.elsewhere.test.",)),
    ],
)
async def test_nxdomain_raises_and_nodata_is_empty(
    resolver: DnsResolver, name: str, rdtype: str, outcome: str | tuple[str, ...]
) -> None:
    assert await _outcome(resolver, name, rdtype) == outcome


async def test_typed_lookups_return_empty_for_nodata(resolver: DnsResolver) -> None:
    assert await resolver.mx("mx1.example.com") == []
    assert await resolver.txt("deep.example.com") == []
    assert await resolver.cname("mx1.example.com") is None
    with pytest.raises(NxDomain):
        await resolver.cname("missing.example.com")


@pytest.mark.parametrize("name", ["a..example.com", "x" * 64 + ".example.com", ("y" * 60 + ".") * 5 + "com"])
async def test_invalid_names_are_nxdomain(resolver: DnsResolver, name: str) -> None:
    with pytest.raises(InvalidName):
        await resolver.txt(name)


@pytest.mark.parametrize("rcode", ["SERVFAIL", "REFUSED"])
async def test_failures_are_temporary_and_never_cached(dns_server: DnsTestServer, rcode: str) -> None:
    resolver = DnsResolver(dns_server.settings(timeout=1.0))
    dns_server.set_failure("example.com", rcode)
    for expected in (1, 2):
        with pytest.raises(DnsTemporaryError):
            await resolver.txt("example.com")
        assert dns_server.count("example.com", "TXT") >= expected
    dns_server.set_failure("example.com", None)
    assert len(await resolver.txt("example.com")) == 2


async def test_names_outside_the_servers_zones_are_temporary_errors(resolver: DnsResolver) -> None:
    with pytest.raises(DnsTemporaryError):
        await resolver.a("example.org")


async def test_timeout_from_a_silent_nameserver(clock: ManualClock) -> None:
    with silent_nameserver() as address:
        resolver = DnsResolver(DnsSettings(nameservers=(address,), timeout=0.5), clock=clock)
        started = time.monotonic()
        with pytest.raises(DnsTemporaryError):
            await resolver.txt("example.com")
        assert time.monotonic() - started < 1.5


async def test_a_silent_first_nameserver_leaves_time_for_the_next(
    dns_server: DnsTestServer, clock: ManualClock
) -> None:
    with silent_nameserver() as address:
        settings = DnsSettings(nameservers=(address, dns_server.address), timeout=1.0)
        resolver = DnsResolver(settings, clock=clock)
        assert await resolver.a("example.com") == [IPv4Address("192.0.2.10")]


async def test_truncated_udp_answer_is_retried_over_tcp(
    dns_server: DnsTestServer, resolver: DnsResolver
) -> None:
    for i in range(30):
        dns_server.add_txt("big.example.com", f"{i:03} " + "x" * 196)
    records = await resolver.txt("big.example.com")
    assert len(records) == 30
    assert [query.transport for query in dns_server.queries] == ["udp", "tcp"]


async def test_oversize_string_arrives_split_in_255_octet_strings(
    dns_server: DnsTestServer, resolver: DnsResolver
) -> None:
    value = "v=DKIM1; k=rsa; p=" + "A" * 282  # 300 octets, as a tenant would paste it
    dns_server.add_txt("long._domainkey.example.com", value)
    [record] = await resolver.txt("long._domainkey.example.com")
    assert [len(string) for string in record.strings] == [255, 45]
    assert record.text == value


# -- cache


async def test_answers_are_cached_until_their_ttl_expires(
    dns_server: DnsTestServer, resolver: DnsResolver, clock: ManualClock
) -> None:
    first = await resolver.mx("example.com")
    clock.advance(299)
    assert await resolver.mx("EXAMPLE.com") == first
    assert dns_server.count("example.com", "MX") == 1
    clock.advance(1)
    await resolver.mx("example.com")
    assert dns_server.count("example.com", "MX") == 2


async def test_generic_query_reports_the_ttl_left(resolver: DnsResolver, clock: ManualClock) -> None:
    await resolver.query("example.com", "MX")
    clock.advance(100)
    assert (await resolver.query("example.com", "MX")).ttl == 200


async def test_a_cname_chain_is_cached_for_its_smallest_ttl(
    dns_server: DnsTestServer, resolver: DnsResolver, clock: ManualClock
) -> None:
    dns_server.set_zone("short.test", "alias 30 IN CNAME example.com.\n")
    await resolver.a("alias.short.test")
    clock.advance(29)
    await resolver.a("alias.short.test")
    assert dns_server.count("alias.short.test", "A") == 1
    clock.advance(1)
    await resolver.a("alias.short.test")
    assert dns_server.count("alias.short.test", "A") == 2


@pytest.mark.parametrize(
    ("name", "outcome", "negative_ttl"),
    [
        ("missing.example.com", "NXDOMAIN", 60),  # SOA TTL 300, MINIMUM 60
        ("mx1.example.com", (), 60),  # NODATA
        ("missing.longneg.test", "NXDOMAIN", 300),  # SOA TTL 300, MINIMUM 86400
    ],
)
async def test_negative_answers_are_cached_for_the_soa_minimum(
    dns_server: DnsTestServer,
    resolver: DnsResolver,
    clock: ManualClock,
    name: str,
    outcome: str | tuple[str, ...],
    negative_ttl: int,
) -> None:
    for step, queries in [(0, 1), (negative_ttl - 1, 1), (1, 2)]:
        clock.advance(step)
        assert await _outcome(resolver, name, "TXT") == outcome
        assert dns_server.count(name, "TXT") == queries


async def test_negative_caching_is_capped(
    dns_server: DnsTestServer, resolver: DnsResolver, clock: ManualClock
) -> None:
    dns_server.set_zone(
        "capped.test", "@ 86400 IN SOA ns.capped.test. h.capped.test. 1 3600 600 86400 86400\n"
    )
    for step, queries in [(0, 1), (MAX_NEGATIVE_TTL - 1, 1), (1, 2)]:
        clock.advance(step)
        assert await _outcome(resolver, "missing.capped.test", "TXT") == "NXDOMAIN"
        assert dns_server.count("missing.capped.test") == queries


async def test_fresh_lookup_bypasses_the_cache_and_refreshes_it(
    dns_server: DnsTestServer, resolver: DnsResolver
) -> None:
    with pytest.raises(NxDomain):
        await resolver.txt("verify.example.com")
    dns_server.add_txt("verify.example.com", "postroom-verification=xyz")
    with pytest.raises(NxDomain):
        await resolver.txt("verify.example.com")  # still the cached NXDOMAIN
    assert [r.text for r in await resolver.txt("verify.example.com", fresh=True)] == [
        "postroom-verification=xyz"
    ]
    assert [r.text for r in await resolver.txt("verify.example.com")] == ["postroom-verification=xyz"]
    assert dns_server.count("verify.example.com") == 2


async def test_flush_forgets_everything(dns_server: DnsTestServer, resolver: DnsResolver) -> None:
    await resolver.a("example.com")
    await resolver.mx("example.com")
    resolver.flush()
    await resolver.a("example.com")
    await resolver.mx("example.com")
    assert dns_server.count("example.com") == 4


async def test_cache_is_bounded_least_recently_used_first(
    dns_server: DnsTestServer, clock: ManualClock
) -> None:
    resolver = DnsResolver(dns_server.settings(cache_size=2), clock=clock)
    await resolver.a("example.com")
    await resolver.a("mx1.example.com")
    await resolver.a("example.com")  # now the most recently used
    await resolver.a("www.example.com")  # evicts mx1
    await resolver.a("example.com")
    await resolver.a("mx1.example.com")
    assert dns_server.count("example.com", "A") == 1
    assert dns_server.count("mx1.example.com", "A") == 2


async def test_cache_size_zero_disables_the_cache(dns_server: DnsTestServer) -> None:
    resolver = DnsResolver(dns_server.settings(cache_size=0))
    await resolver.a("example.com")
    await resolver.a("example.com")
    assert dns_server.count("example.com", "A") == 2


async def test_one_name_written_in_any_case_with_or_without_the_final_dot_is_asked_once(
    dns_server: DnsTestServer, resolver: DnsResolver
) -> None:
    for spelling in ("mx1.example.com", "MX1.Example.COM", "mx1.example.com."):
        assert set(await resolver.a(spelling)) == {IPv4Address("192.0.2.25"), IPv4Address("192.0.2.26")}
    for spelling in ("missing.example.com", "Missing.Example.Com."):
        with pytest.raises(NxDomain, match=r"^missing\.example\.com does not exist$"):
            await resolver.a(spelling)
    assert dns_server.count("mx1.example.com", "A") == 1
    assert dns_server.count("missing.example.com", "A") == 1


async def test_names_that_differ_are_never_one_cache_entry(
    dns_server: DnsTestServer, resolver: DnsResolver
) -> None:
    dns_server.add_records("a\\.b.example.com", "A", "192.0.2.77")  # one label "a.b", escaped
    assert await resolver.a("a\\.b.example.com") == [IPv4Address("192.0.2.77")]
    with pytest.raises(NxDomain):
        await resolver.a("a.b.example.com")  # two labels: another name, which does not exist
    assert await resolver.a("a\\.b.example.com") == [IPv4Address("192.0.2.77")]
    assert dns_server.count() == 2


async def test_an_invalid_name_is_refused_every_time_and_never_asked(
    dns_server: DnsTestServer, resolver: DnsResolver
) -> None:
    for _ in range(2):
        with pytest.raises(InvalidName):
            await resolver.a("x" * 64 + ".example.com")
    assert dns_server.count() == 0
