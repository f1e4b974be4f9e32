"""IP Allow and Block lists and DNS blocklist zones as values: parsed once, asked per connection.

An **IP list** (spec §10.2: the connection filter's IP Allow and IP Block lists, service-wide in
`[protection]` and per tenant in `ConnectionPolicy`) holds at most `MAX_ENTRIES` entries, each one of:

- a single address: `192.0.2.7`, `2001:db8::7`;
- a range `a-b` of one family, `a` not above `b`, spanning at most as many addresses as the widest
  network allowed (256 for IPv4, a /48 for IPv6): `192.0.2.10-192.0.2.50`;
- a network in CIDR notation with its host bits zero, **/24 to /32** for IPv4, **/48 to /128** for
  IPv6. A wider network (/1 to /23) is refused: the spec sends those to a mail flow rule.

`IpList.parse` reports every bad entry at once (`IpListError.problems`, each naming the entry, what is
wrong and the fix); `IpList.match` answers in O(log n): the entries are cut into disjoint, sorted
segments at parse time (each labelled with an entry that covers it) and looked up by bisection. An
IPv4-mapped IPv6 address (`::ffff:192.0.2.7`) is looked up as the IPv4 address it carries.

A **DNS blocklist** entry (`[protection] dnsbl`) is `zone` or `zone=codes`, the codes a comma-separated
list of addresses and `a-b` ranges in 127.0.0.0/8 that count as a listing
(`zen.example.org=127.0.0.2,127.0.0.4-127.0.0.11`). Without codes any answer in 127.0.0.0/8 lists,
except 127.255.255.0/24, where lists put their error answers (Spamhaus answers 127.255.255.254 to a
query through a public resolver): those must never refuse mail. Answers outside 127.0.0.0/8 (a
resolver that rewrites NXDOMAIN) never list. `Blocklist.query_name` is the address reversed under the
zone: octets for IPv4 (RFC 5782 §2.1), nibbles for IPv6 (§2.4).

Nothing here does I/O; everything is a frozen value. Entries come from an operator's file or a tenant
admin's command and are parsed strictly: a mistake is reported, never guessed at.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

MAX_ENTRIES = 1_273  # entries in one IP Allow or Block list (spec §10.2)
WIDEST_IPV4 = 24  # the shortest IPv4 prefix a list takes
WIDEST_IPV6 = 48  # the shortest IPv6 prefix a list takes
_LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")
_ERROR_ANSWERS = ipaddress.IPv4Network("127.255.255.0/24")  # blocklists' "your query was refused"

IpAddress = IPv4Address | IPv6Address


@dataclass(frozen=True, slots=True)
class EntryProblem:
    """One bad entry: the entry as given ("" for the list as a whole), what is wrong with it, and
    what to write instead."""

    entry: str
    problem: str
    fix: str

    @property
    def complaint(self) -> str:
        """What is wrong, naming the entry: "'10.0.0.0/8' is wider than ..."."""
        return f"{self.entry!r} {self.problem}" if self.entry else f"the list {self.problem}"

    def __str__(self) -> str:
        return f"{self.complaint}; {self.fix}"


class IpListError(ValueError):
    """An IP list (or a DNS blocklist entry) that cannot be used; `problems` names every bad entry."""

    def __init__(self, problems: Iterable[EntryProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(str(problem) for problem in self.problems))


def client_address(text: str) -> IpAddress | None:
    """The address of a client as the filter sees it (an IPv4-mapped IPv6 address as its IPv4
    address), or None when `text` is not an address (a Unix socket peer, say)."""
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _address(text: str, entry: str) -> IpAddress:
    if "%" in text:
        raise _Bad(entry, "has a zone index", 'write the address alone, e.g. "2001:db8::7"')
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        raise _Bad(
            entry, "is not an IP address", 'write an address, "a-b", or a network, e.g. "192.0.2.0/24"'
        ) from None


class _Bad(Exception):
    def __init__(self, entry: str, problem: str, fix: str) -> None:
        self.problem = EntryProblem(entry, problem, fix)


def _widest(version: int) -> int:
    return WIDEST_IPV4 if version == 4 else WIDEST_IPV6


def entry_range(entry: str) -> tuple[int, int, int]:
    """(version, first, last) of one list entry as integers; raises `IpListError` naming the problem."""
    try:
        return _range(entry)
    except _Bad as bad:
        raise IpListError([bad.problem]) from None


def _range(entry: str) -> tuple[int, int, int]:
    """(version, first, last) of one entry as integers; raises _Bad."""
    text = entry.strip()
    if not text:
        raise _Bad(entry, "is empty", "remove it")
    if "/" in text:
        try:
            network = ipaddress.ip_network(text, strict=True)
        except ValueError:
            try:
                loose = ipaddress.ip_network(text, strict=False)
            except ValueError:
                raise _Bad(
                    entry, "is not an IP network", 'write it like "192.0.2.0/24" or "2001:db8:1::/48"'
                ) from None
            raise _Bad(entry, "has host bits set", f'write the network, "{loose}"') from None
        widest = _widest(network.version)
        if network.prefixlen < widest:
            raise _Bad(
                entry,
                f"is wider than a list takes (/{widest} to /{network.max_prefixlen})",
                f"use a mail flow rule for a /{network.prefixlen}, or list its /{widest} networks",
            )
        return network.version, int(network.network_address), int(network.broadcast_address)
    if "-" in text:
        low_text, _, high_text = text.partition("-")
        low, high = _address(low_text, entry), _address(high_text, entry)
        if low.version != high.version:
            raise _Bad(entry, "mixes IPv4 and IPv6", "write both ends in one family")
        if int(low) > int(high):
            raise _Bad(entry, "ends before it starts", f'write "{high}-{low}"')
        widest = _widest(low.version)
        span = 1 << (low.max_prefixlen - widest)
        if int(high) - int(low) >= span:
            raise _Bad(
                entry,
                f"spans more than a /{widest} ({span} addresses)",
                "use a mail flow rule for a wider range, or split it",
            )
        return low.version, int(low), int(high)
    address = _address(text, entry)
    return address.version, int(address), int(address)


@dataclass(frozen=True, slots=True)
class _Segments:
    """Disjoint, sorted [first, last] segments of one family, each with the entry that covers it."""

    firsts: tuple[int, ...]
    lasts: tuple[int, ...]
    entries: tuple[str, ...]

    @classmethod
    def of(cls, ranges: list[tuple[int, int, str]]) -> _Segments:
        firsts: list[int] = []
        lasts: list[int] = []
        entries: list[str] = []
        # By first address: each range adds only the part past what is covered already, and that
        # part is inside the range, so its label covers every address of its segment.
        for first, last, entry in sorted(ranges, key=lambda r: (r[0], -r[1])):
            if lasts and last <= lasts[-1]:
                continue
            start = first if not lasts or first > lasts[-1] else lasts[-1] + 1
            firsts.append(start)
            lasts.append(last)
            entries.append(entry)
        return cls(tuple(firsts), tuple(lasts), tuple(entries))

    def match(self, value: int) -> str | None:
        index = bisect.bisect_right(self.firsts, value) - 1
        if index >= 0 and value <= self.lasts[index]:
            return self.entries[index]
        return None


@dataclass(frozen=True, slots=True)
class IpList:
    """A parsed IP Allow or Block list (see the module docstring)."""

    entries: tuple[str, ...]  # as given, stripped
    _v4: _Segments
    _v6: _Segments

    @classmethod
    def parse(cls, entries: Iterable[str], *, skip_invalid: bool = False) -> IpList:
        """The list of `entries`; raises `IpListError` naming every bad entry and a list over
        `MAX_ENTRIES`. With `skip_invalid` (lists read back from storage, checked when written) bad
        entries are left out instead and the length is not checked."""
        given = tuple(entries)
        problems: list[EntryProblem] = []
        if len(given) > MAX_ENTRIES and not skip_invalid:
            problems.append(
                EntryProblem(
                    "",
                    f"has {len(given)} entries, more than a list holds ({MAX_ENTRIES})",
                    "use networks (CIDR) or ranges for neighbouring addresses, or a mail flow rule",
                )
            )
        ranges: dict[int, list[tuple[int, int, str]]] = {4: [], 6: []}
        kept = []
        for entry in given:
            try:
                version, first, last = _range(entry)
            except _Bad as bad:
                problems.append(bad.problem)
                continue
            ranges[version].append((first, last, entry.strip()))
            kept.append(entry.strip())
        if problems and not skip_invalid:
            raise IpListError(problems)
        return cls(tuple(kept), _Segments.of(ranges[4]), _Segments.of(ranges[6]))

    def match(self, address: IpAddress) -> str | None:
        """The entry that holds `address`, or None."""
        segments = self._v4 if address.version == 4 else self._v6
        return segments.match(int(address))

    def __bool__(self) -> bool:
        return bool(self.entries)

    def __len__(self) -> int:
        return len(self.entries)


EMPTY = IpList.parse(())


@dataclass(frozen=True, slots=True)
class Blocklist:
    """One DNS blocklist: its zone and the answers that count as a listing (see the module docstring)."""

    zone: str  # lower case, no trailing dot
    codes: tuple[tuple[int, int], ...] = ()  # [first, last] answers as integers; (): any but the errors

    @classmethod
    def parse(cls, text: str) -> Blocklist:
        """`zone` or `zone=codes`; raises `IpListError` naming the entry, what is wrong and the fix."""
        zone, has_codes, codes_text = text.strip().partition("=")
        zone = zone.strip().lower().rstrip(".")
        labels = zone.split(".")
        if (
            len(labels) < 2
            or len(zone) > 253
            or not zone.isascii()
            or not all(0 < len(label) <= 63 for label in labels)
            or not all(ch.isalnum() or ch in "-_" for ch in zone.replace(".", ""))
        ):
            raise IpListError(
                [EntryProblem(text, "does not start with a DNS zone", 'write it like "zen.example.org"')]
            )
        if not has_codes:
            return cls(zone)
        codes = []
        fix = 'write the answers that list, e.g. "zen.example.org=127.0.0.2,127.0.0.4-127.0.0.11"'
        for item in codes_text.split(","):
            low_text, _, high_text = item.partition("-")
            try:
                low = ipaddress.IPv4Address(low_text.strip())
                high = ipaddress.IPv4Address(high_text.strip()) if high_text else low
            except ValueError:
                raise IpListError(
                    [EntryProblem(text, f"has {item.strip()!r}, not an IPv4 address or a-b range", fix)]
                ) from None
            if low not in _LOOPBACK or high not in _LOOPBACK:
                raise IpListError(
                    [EntryProblem(text, f"has {item.strip()!r}, not answers within 127.0.0.0/8", fix)]
                )
            if low > high:
                raise IpListError(
                    [EntryProblem(text, f"has {item.strip()!r}, which ends before it starts", fix)]
                )
            codes.append((int(low), int(high)))
        return cls(zone, tuple(codes))

    def query_name(self, address: IpAddress) -> str:
        """The name to ask for `address`: reversed octets (IPv4) or nibbles (IPv6) under the zone."""
        reverse = address.reverse_pointer  # e.g. 7.2.0.192.in-addr.arpa
        return f"{reverse.rsplit('.', 2)[0]}.{self.zone}"

    def lists(self, answer: IPv4Address) -> bool:
        """Whether an A record in the zone's answer is a listing."""
        if self.codes:
            return any(first <= int(answer) <= last for first, last in self.codes)
        return answer in _LOOPBACK and answer not in _ERROR_ANSWERS

    def __str__(self) -> str:
        if not self.codes:
            return self.zone
        codes = ",".join(
            str(IPv4Address(first)) if first == last else f"{IPv4Address(first)}-{IPv4Address(last)}"
            for first, last in self.codes
        )
        return f"{self.zone}={codes}"
