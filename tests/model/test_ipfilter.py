"""IP lists and DNS blocklist entries: what an operator or a tenant admin may write, and what matches."""

from __future__ import annotations

import ipaddress
import random

import pytest

from postroom.model.ipfilter import MAX_ENTRIES, Blocklist, IpList, IpListError, client_address


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


@pytest.mark.parametrize(
    ("entries", "address", "match"),
    [
        (["192.0.2.7"], "192.0.2.7", "192.0.2.7"),
        (["192.0.2.7"], "192.0.2.8", None),
        (["192.0.2.0/24"], "192.0.2.255", "192.0.2.0/24"),
        (["192.0.2.0/24"], "192.0.3.0", None),
        (["192.0.2.10-192.0.2.50"], "192.0.2.10", "192.0.2.10-192.0.2.50"),
        (["192.0.2.10-192.0.2.50"], "192.0.2.50", "192.0.2.10-192.0.2.50"),
        (["192.0.2.10-192.0.2.50"], "192.0.2.51", None),
        (["192.0.2.10-192.0.2.50"], "192.0.2.9", None),
        ([" 198.51.100.1 "], "198.51.100.1", "198.51.100.1"),
        (["2001:db8:1::/48"], "2001:db8:1:ffff::1", "2001:db8:1::/48"),
        (["2001:db8:1::/48"], "2001:db8:2::1", None),
        (["2001:db8::7"], "2001:db8::7", "2001:db8::7"),
        (["2001:db8::1-2001:db8::ff"], "2001:db8::80", "2001:db8::1-2001:db8::ff"),
        (["192.0.2.7"], "::ffff:192.0.2.7", "192.0.2.7"),  # a mapped address is its IPv4 address
        # Overlapping entries: the one named covers the address.
        (["192.0.2.0-192.0.2.10", "192.0.2.5-192.0.2.20"], "192.0.2.15", "192.0.2.5-192.0.2.20"),
        (["192.0.2.0-192.0.2.10", "192.0.2.5-192.0.2.20"], "192.0.2.3", "192.0.2.0-192.0.2.10"),
        (["192.0.2.0/24", "192.0.2.9"], "192.0.2.9", "192.0.2.0/24"),
        (["192.0.2.0/24"], "2001:db8::1", None),  # families never mix
    ],
)
def test_membership(entries: list[str], address: str, match: str | None) -> None:
    found = client_address(address)
    assert found is not None
    assert IpList.parse(entries).match(found) == match


def test_membership_agrees_with_a_plain_scan_on_random_lists() -> None:
    rng = random.Random(7)
    base = int(ipaddress.IPv4Address("10.0.0.0"))
    for _ in range(50):
        ranges = []
        for _ in range(rng.randint(1, 40)):
            first = base + rng.randint(0, 2000)
            ranges.append((first, first + rng.randint(0, 255)))
        entries = [f"{ipaddress.IPv4Address(a)}-{ipaddress.IPv4Address(b)}" for a, b in ranges]
        listed = IpList.parse(entries)
        for _ in range(200):
            value = base + rng.randint(-10, 2300)
            match = listed.match(ipaddress.IPv4Address(value))
            covering = [e for e, (a, b) in zip(entries, ranges, strict=True) if a <= value <= b]
            if covering:
                assert match in covering
            else:
                assert match is None


@pytest.mark.parametrize(
    ("entry", "complaint", "fix"),
    [
        ("10.0.0.0/8", "is wider than a list takes (/24 to /32)", "mail flow rule"),
        ("2001:db8::/32", "is wider than a list takes (/48 to /128)", "mail flow rule"),
        ("192.0.2.5/24", "has host bits set", '"192.0.2.0/24"'),
        ("192.0.2.0/33", "is not an IP network", "192.0.2.0/24"),
        ("192.0.2.300", "is not an IP address", "192.0.2.0/24"),
        ("mail.example.com", "is not an IP address", "a-b"),
        ("192.0.2.50-192.0.2.10", "ends before it starts", '"192.0.2.10-192.0.2.50"'),
        ("192.0.2.0-192.0.3.0", "spans more than a /24 (256 addresses)", "mail flow rule"),
        ("192.0.2.1-2001:db8::1", "mixes IPv4 and IPv6", "one family"),
        ("fe80::1%eth0", "has a zone index", "address alone"),
        ("", "is empty", "remove it"),
    ],
)
def test_a_bad_entry_is_named_with_its_fix(entry: str, complaint: str, fix: str) -> None:
    with pytest.raises(IpListError) as caught:
        IpList.parse(["192.0.2.1", entry])
    [problem] = caught.value.problems
    assert problem.entry == entry
    assert problem.problem == complaint
    assert fix in problem.fix


def test_every_bad_entry_is_reported_at_once() -> None:
    with pytest.raises(IpListError) as caught:
        IpList.parse(["10.0.0.0/8", "192.0.2.1", "nonsense"])
    assert [p.entry for p in caught.value.problems] == ["10.0.0.0/8", "nonsense"]
    assert "'10.0.0.0/8' is wider" in str(caught.value)


def test_at_most_1273_entries() -> None:
    entries = [str(ipaddress.IPv4Address(int(ipaddress.IPv4Address("10.0.0.0")) + n)) for n in range(1274)]
    assert len(IpList.parse(entries[:MAX_ENTRIES])) == 1273
    with pytest.raises(IpListError) as caught:
        IpList.parse(entries)
    [problem] = caught.value.problems
    assert problem.complaint == "the list has 1274 entries, more than a list holds (1273)"


def test_a_list_read_back_from_storage_keeps_its_good_entries() -> None:
    listed = IpList.parse(["10.0.0.0/8", "192.0.2.1"], skip_invalid=True)
    assert listed.entries == ("192.0.2.1",)
    assert listed.match(ip("192.0.2.1")) == "192.0.2.1"


@pytest.mark.parametrize("text", ["", "unix:/run/socket", "192.0.2.300"])
def test_a_peer_that_is_not_an_address_is_none(text: str) -> None:
    assert client_address(text) is None


@pytest.mark.parametrize(
    ("text", "address", "name"),
    [
        ("zen.example.org", "192.0.2.7", "7.2.0.192.zen.example.org"),
        ("Zen.Example.ORG.", "127.0.0.2", "2.0.0.127.zen.example.org"),
        (
            "v6.example.org",
            "2001:db8::1",
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.v6.example.org",
        ),
    ],
)
def test_blocklist_query_names(text: str, address: str, name: str) -> None:
    assert Blocklist.parse(text).query_name(ip(address)) == name


@pytest.mark.parametrize(
    ("text", "listed", "not_listed"),
    [
        ("zen.example.org", ["127.0.0.2", "127.0.0.11", "127.1.2.3"], ["127.255.255.254", "192.0.2.1"]),
        ("zen.example.org=127.0.0.2", ["127.0.0.2"], ["127.0.0.3", "127.0.0.10"]),
        (
            "zen.example.org=127.0.0.2,127.0.0.4-127.0.0.11",
            ["127.0.0.2", "127.0.0.4", "127.0.0.7", "127.0.0.11"],
            ["127.0.0.3", "127.0.0.12", "127.255.255.254"],
        ),
    ],
)
def test_blocklist_return_codes(text: str, listed: list[str], not_listed: list[str]) -> None:
    zone = Blocklist.parse(text)
    assert [a for a in listed if zone.lists(ipaddress.IPv4Address(a))] == listed
    assert [a for a in not_listed if zone.lists(ipaddress.IPv4Address(a))] == []
    assert Blocklist.parse(str(zone)) == zone


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("zen", "does not start with a DNS zone"),
        ("zen example.org", "does not start with a DNS zone"),
        ("=127.0.0.2", "does not start with a DNS zone"),
        ("zen.example.org=127.0.0.x", "has '127.0.0.x', not an IPv4 address or a-b range"),
        ("zen.example.org=10.0.0.2", "has '10.0.0.2', not answers within 127.0.0.0/8"),
        ("zen.example.org=127.0.0.9-127.0.0.4", "has '127.0.0.9-127.0.0.4', which ends before it starts"),
    ],
)
def test_a_bad_blocklist_entry_is_named_with_its_fix(text: str, complaint: str) -> None:
    with pytest.raises(IpListError) as caught:
        Blocklist.parse(text)
    [problem] = caught.value.problems
    assert (problem.entry, problem.problem) == (text, complaint)
    assert "zen.example.org" in problem.fix
