"""The resolver seam: typed, cached, asynchronous DNS lookups for every room that asks the DNS.

`Resolver` is the protocol the rest of Postroom depends on; `DnsResolver` is its implementation on
dnspython's `dns.asyncresolver`, talking to the configured nameservers (`DnsSettings.nameservers`, any
port) or, when none are configured, to those of the system's resolv.conf. Truncated UDP answers are
retried over TCP by dnspython.

Outcomes of a lookup, the same for every method:

- records found: a list of typed values (`TxtRecord`, `MxRecord`, addresses, names), in answer order;
- the name exists but has no records of that type (NODATA): an *empty list* (`cname` returns `None`),
  never an exception, because for most checks "no record" is an ordinary answer;
- the name does not exist (NXDOMAIN): `NxDomain` is raised, because callers must tell it apart from
  NODATA (an MX lookup falls back to A only if the domain exists; SPF's void lookups count both);
- the answer could not be had (timeout, SERVFAIL, REFUSED, network error, malformed reply):
  `DnsTemporaryError` is raised: the caller defers, it never concludes anything.

Exceptions::

    DnsError                    any DNS failure (catch this to handle them all)
     +-- NxDomain               the name does not exist
     |    +-- InvalidName       the name cannot exist (empty or over-long label, over 255 octets)
     +-- DnsTemporaryError      no answer could be had now; try again later
          +-- DnsTimeout        no nameserver answered at all within the timeout (it names them)

TLSA (`tlsa`, for DANE, RFC 7672) is asked with the DO and AD bits set, on a resolver of its own, and
its `TlsaAnswer` says whether the response carried AD ("authenticated": the recursive nameserver validated
it with DNSSEC). This resolver does not validate; AD is only as good as the path to the nameserver, which
is why that must be a local or trusted validating resolver for DANE to mean anything. The cache keeps AD
with the records (a TLSA answer and a plain one for the same name are never mixed: the key has the type).

CNAME chains are followed by the nameserver and by dnspython; typed lookups return the records at the
end of the chain (`Answer.name` reports the canonical name).

Cache: answers are kept for their TTL (the smallest in the CNAME chain, capped at `MAX_POSITIVE_TTL`),
negative answers (NXDOMAIN, NODATA) for the SOA minimum of the authority section as RFC 2308 says (min of
the SOA's TTL and its MINIMUM field, capped at `MAX_NEGATIVE_TTL`; without an SOA they are not cached),
temporary errors never. It is keyed by the name as given, lower-cased (ASCII only: DNS names compare
case-insensitively in ASCII) and without a trailing dot, so a hit parses nothing (a hit costs a few
microseconds, where parsing and hashing a dnspython name cost tens): a name written two ways (an escape,
a Unicode form) is at worst kept twice, never confused with another; a name that cannot exist
(`InvalidName`) is refused before it is asked, and never cached. The cache is an LRU bounded by
`DnsSettings.cache_size` entries (0 disables it) and reads time from an injectable monotonic clock.
`fresh=True` on any lookup bypasses the cache (and refreshes it with the new answer); `flush()` empties
it. Typed values are immutable, so cached answers are shared safely. Every query sent (a cache miss) is
timed in `postroom_dns_query_seconds` by record type, whatever its outcome.

*Security:* everything here is read from the network and untrusted. dnspython parses the wire format
(bounded by the protocol: names of 255 octets at most, character-strings of 255 at most); this module
only types it. TXT strings are returned as raw bytes next to a lossy UTF-8 text, never evaluated. Names
given by callers (often from a remote SMTP client: HELO, MAIL FROM, a DKIM selector) are validated by
dnspython's name parser and a bad one raises `InvalidName`, never an internal error. Queries use a random
ID and source port (dnspython) but no DNSSEC validation: answers are only as trustworthy as the path to
the configured recursive nameservers, which should be local or reached over a trusted network.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Protocol

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.nameserver
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.CNAME
import dns.rdtypes.ANY.MX
import dns.rdtypes.ANY.PTR
import dns.rdtypes.ANY.SOA
import dns.rdtypes.ANY.TLSA
import dns.rdtypes.ANY.TXT
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.resolver

from postroom import metrics
from postroom.config.settings import DnsSettings

MAX_POSITIVE_TTL = 86_400  # seconds an answer is cached at most, whatever its TTL says
MAX_NEGATIVE_TTL = 3_600  # seconds an NXDOMAIN or NODATA is cached at most (RFC 2308 §5 suggests 1-3 h)

Clock = Callable[[], float]


class DnsError(Exception):
    """A DNS lookup failed; the subclass says how."""


class NxDomain(DnsError):
    """The name does not exist (NXDOMAIN)."""


class InvalidName(NxDomain):
    """The name cannot exist in the DNS (empty or over-long label, name over 255 octets)."""


class DnsTemporaryError(DnsError):
    """No answer could be had now (timeout, SERVFAIL, REFUSED, network error, malformed reply)."""


class DnsTimeout(DnsTemporaryError):
    """No nameserver answered within the timeout; the message names the nameservers asked. Every other
    question to them is likely to wait as long, which a caller asking many may use to stop early."""


@dataclass(frozen=True, slots=True)
class TxtRecord:
    """One TXT record: its character-strings exactly as received, in order (each 255 octets at most).

    Checks that care how a record was split (an SPF or DKIM record published as several strings, a
    string cut at 255 octets by a provider) read `strings`; the others read `text`.
    """

    strings: tuple[bytes, ...]

    @property
    def data(self) -> bytes:
        """The strings joined with nothing between them, as RFC 7208 §3.3 and RFC 6376 §3.6.2.2 do."""
        return b"".join(self.strings)

    @property
    def text(self) -> str:
        """`data` decoded as UTF-8, undecodable octets replaced by U+FFFD."""
        return self.data.decode("utf-8", errors="replace")


@dataclass(frozen=True, slots=True)
class MxRecord:
    """One MX record: `exchange` lower-case, without the trailing dot (`""` for the root)."""

    preference: int
    exchange: str

    @property
    def is_null(self) -> bool:
        """The null MX `0 .` of RFC 7505: the domain accepts no mail."""
        return self.exchange == ""


@dataclass(frozen=True, slots=True)
class Answer:
    """A generic answer: the canonical name (end of the CNAME chain), the type asked, the records in
    presentation format (empty for NODATA), and the TTL left (0 for NODATA without an SOA)."""

    name: str
    rdtype: str
    records: tuple[str, ...]
    ttl: int


@dataclass(frozen=True, slots=True)
class TlsaRecord:
    """One TLSA record (RFC 6698 §2.1): certificate usage, selector, matching type, and the data."""

    usage: int  # 0 PKIX-TA, 1 PKIX-EE, 2 DANE-TA, 3 DANE-EE
    selector: int  # 0 the whole certificate, 1 its SubjectPublicKeyInfo
    matching_type: int  # 0 exact, 1 SHA-256, 2 SHA-512
    data: bytes


@dataclass(frozen=True, slots=True)
class TlsaAnswer:
    """The TLSA records of a name (empty for NODATA) and whether the answer carried the AD flag."""

    records: tuple[TlsaRecord, ...]
    authenticated: bool


class Resolver(Protocol):
    """What Postroom asks the DNS. See the module docstring for outcomes and exceptions."""

    async def txt(self, name: str, *, fresh: bool = False) -> list[TxtRecord]: ...

    async def mx(self, name: str, *, fresh: bool = False) -> list[MxRecord]: ...

    async def a(self, name: str, *, fresh: bool = False) -> list[IPv4Address]: ...

    async def aaaa(self, name: str, *, fresh: bool = False) -> list[IPv6Address]: ...

    async def cname(self, name: str, *, fresh: bool = False) -> str | None: ...

    async def ptr(self, ip: str | IPv4Address | IPv6Address, *, fresh: bool = False) -> list[str]: ...

    async def query(self, name: str, rdtype: str, *, fresh: bool = False) -> Answer: ...

    async def tlsa(self, name: str, *, fresh: bool = False) -> TlsaAnswer: ...

    def flush(self) -> None: ...


@dataclass(frozen=True, slots=True)
class _Found:
    """What the cache keeps for a (name, type): the records (none for NODATA) and the canonical name."""

    canonical_name: dns.name.Name
    rdatas: tuple[dns.rdata.Rdata, ...]
    authenticated: bool = False  # the response carried AD (asked only for TLSA)


@dataclass(frozen=True, slots=True)
class _NotFound:
    """A cached NXDOMAIN."""


_Outcome = _Found | _NotFound


_Key = tuple[str, int]  # the name as given, normalized by _key_name(), and the type


def _key_name(name: str) -> str:
    return (name.lower() if name.isascii() else name).removesuffix(".")


class _Cache:
    """LRU of outcomes with an absolute expiry on the injected clock."""

    def __init__(self, size: int, clock: Clock) -> None:
        self._size = size
        self._clock = clock
        self._entries: OrderedDict[_Key, tuple[float, _Outcome]] = OrderedDict()

    def get(self, key: _Key) -> tuple[_Outcome, int] | None:
        """The outcome and its remaining TTL in whole seconds, or None when absent or expired."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, outcome = entry
        remaining = expires - self._clock()
        if remaining <= 0:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return outcome, int(remaining)

    def put(self, key: _Key, outcome: _Outcome, ttl: int) -> None:
        if self._size <= 0 or ttl <= 0:
            self._entries.pop(key, None)
            return
        self._entries[key] = (self._clock() + ttl, outcome)
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()


def _negative_ttl(response: dns.message.Message | None) -> int:
    """RFC 2308 §5: the SOA in the authority section gives min(SOA TTL, MINIMUM); no SOA, no caching."""
    if response is None:
        return 0
    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset) > 0:
            soa = rrset[0]
            assert isinstance(soa, dns.rdtypes.ANY.SOA.SOA)
            return max(0, min(rrset.ttl, soa.minimum, MAX_NEGATIVE_TTL))
    return 0


def _parse_name(name: str) -> dns.name.Name:
    try:
        return dns.name.from_text(name)
    except (dns.exception.DNSException, UnicodeError, ValueError) as exc:
        raise InvalidName(f"{name!r} is not a valid domain name: {exc}") from exc


def _host(name: dns.name.Name) -> str:
    """A name as Postroom writes host names: lower-case, no trailing dot, the root as ""."""
    return name.to_text(omit_final_dot=True).lower() if name != dns.name.root else ""


class DnsResolver:
    """`Resolver` on dnspython's asyncresolver, with the cache described in the module docstring.

    `clock` returns seconds on a monotonic scale; tests inject their own to move time.
    """

    def __init__(self, settings: DnsSettings, *, clock: Clock = time.monotonic) -> None:
        if settings.nameservers:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = [
                dns.nameserver.Do53Nameserver(server.host, server.port) for server in settings.nameservers
            ]
        else:
            try:
                resolver = dns.asyncresolver.Resolver(configure=True)
            except dns.exception.DNSException as exc:
                raise DnsError(
                    f"no nameservers: none configured in [dns] and the system's are unusable ({exc})"
                ) from exc
        # The whole lookup never takes longer than the budget; each nameserver gets its share of it,
        # so a dead first one leaves time to ask the next.
        resolver.lifetime = settings.timeout
        resolver.timeout = settings.timeout / max(1, len(resolver.nameservers))
        resolver.cache = None  # ours honours negative TTLs and the injected clock
        self._resolver = resolver
        # DANE needs to know whether the nameserver validated the TLSA answer: ask with DO and AD
        # (RFC 6840 §5.7), on a resolver of its own so other questions do not pull in RRSIGs.
        validating = dns.asyncresolver.Resolver(configure=False)
        validating.nameservers = resolver.nameservers
        validating.lifetime, validating.timeout, validating.cache = resolver.lifetime, resolver.timeout, None
        validating.use_edns(0, dns.flags.DO, 1232)
        validating.flags = dns.flags.RD | dns.flags.AD
        self._validating = validating
        self._timeout = settings.timeout
        self._servers = ", ".join(
            f"{server.address} port {server.port}"
            if isinstance(server, dns.nameserver.AddressAndPortNameserver)
            else str(server)
            for server in resolver.nameservers
        )
        self._cache = _Cache(settings.cache_size, clock)

    def flush(self) -> None:
        """Forget every cached answer; the next lookup of each name asks the nameservers."""
        self._cache.clear()

    async def txt(self, name: str, *, fresh: bool = False) -> list[TxtRecord]:
        found, _ = await self._lookup(name, dns.rdatatype.TXT, fresh)
        records: list[TxtRecord] = []
        for rdata in found.rdatas:
            assert isinstance(rdata, dns.rdtypes.ANY.TXT.TXT)
            records.append(TxtRecord(tuple(rdata.strings)))
        return records

    async def mx(self, name: str, *, fresh: bool = False) -> list[MxRecord]:
        found, _ = await self._lookup(name, dns.rdatatype.MX, fresh)
        records: list[MxRecord] = []
        for rdata in found.rdatas:
            assert isinstance(rdata, dns.rdtypes.ANY.MX.MX)
            records.append(MxRecord(rdata.preference, _host(rdata.exchange)))
        return records

    async def a(self, name: str, *, fresh: bool = False) -> list[IPv4Address]:
        found, _ = await self._lookup(name, dns.rdatatype.A, fresh)
        addresses: list[IPv4Address] = []
        for rdata in found.rdatas:
            assert isinstance(rdata, dns.rdtypes.IN.A.A)
            addresses.append(IPv4Address(rdata.address))
        return addresses

    async def aaaa(self, name: str, *, fresh: bool = False) -> list[IPv6Address]:
        found, _ = await self._lookup(name, dns.rdatatype.AAAA, fresh)
        addresses: list[IPv6Address] = []
        for rdata in found.rdatas:
            assert isinstance(rdata, dns.rdtypes.IN.AAAA.AAAA)
            addresses.append(IPv6Address(rdata.address))
        return addresses

    async def cname(self, name: str, *, fresh: bool = False) -> str | None:
        """The target of the CNAME at `name` itself (not followed), or None when it has none."""
        found, _ = await self._lookup(name, dns.rdatatype.CNAME, fresh)
        for rdata in found.rdatas:
            assert isinstance(rdata, dns.rdtypes.ANY.CNAME.CNAME)
            return _host(rdata.target)
        return None

    async def ptr(self, ip: str | IPv4Address | IPv6Address, *, fresh: bool = False) -> list[str]:
        """The names of an address. Raises ValueError when `ip` is not an IP address."""
        found, _ = await self._lookup(ipaddress.ip_address(ip).reverse_pointer, dns.rdatatype.PTR, fresh)
        names: list[str] = []
        for rdata in found.rdatas:
            assert isinstance(rdata, dns.rdtypes.ANY.PTR.PTR)
            names.append(_host(rdata.target))
        return names

    async def query(self, name: str, rdtype: str, *, fresh: bool = False) -> Answer:
        """Any type by its mnemonic (`"SRV"`, `"CAA"`, ...); ValueError for an unknown mnemonic."""
        try:
            type_code = dns.rdatatype.from_text(rdtype)
        except dns.exception.DNSException as exc:
            raise ValueError(f"unknown DNS record type {rdtype!r}") from exc
        found, ttl = await self._lookup(name, type_code, fresh)
        return Answer(
            name=_host(found.canonical_name),
            rdtype=dns.rdatatype.to_text(type_code),
            records=tuple(rdata.to_text() for rdata in found.rdatas),
            ttl=ttl,
        )

    async def tlsa(self, name: str, *, fresh: bool = False) -> TlsaAnswer:
        """The TLSA records at `name` (e.g. `_25._tcp.mx.example.com`) and whether AD was set."""
        found, _ = await self._lookup(name, dns.rdatatype.TLSA, fresh)
        records: list[TlsaRecord] = []
        for rdata in found.rdatas:
            assert isinstance(rdata, dns.rdtypes.ANY.TLSA.TLSA)
            records.append(TlsaRecord(rdata.usage, rdata.selector, rdata.mtype, bytes(rdata.cert)))
        return TlsaAnswer(tuple(records), found.authenticated)

    async def _lookup(self, name: str, rdtype: int, fresh: bool) -> tuple[_Found, int]:
        """The records of (name, rdtype) from the cache or the nameservers, with their remaining TTL."""
        key = (_key_name(name), rdtype)
        cached = None if fresh else self._cache.get(key)
        if cached is not None:
            outcome, ttl = cached
        else:
            qname = _parse_name(name)
            with metrics.DNS_QUERY_SECONDS.labels(
                dns.rdatatype.to_text(dns.rdatatype.RdataType.make(rdtype))
            ).time():
                outcome, ttl = await self._ask(qname, rdtype)
            self._cache.put(key, outcome, ttl)
        if isinstance(outcome, _NotFound):
            raise NxDomain(f"{key[0]} does not exist")
        return outcome, ttl

    async def _ask(self, qname: dns.name.Name, rdtype: int) -> tuple[_Outcome, int]:
        what = f"{dns.rdatatype.to_text(dns.rdatatype.RdataType.make(rdtype))} {_host(qname)}"
        resolver = self._validating if rdtype == dns.rdatatype.TLSA else self._resolver
        try:
            answer = await resolver.resolve(
                qname, dns.rdatatype.RdataType.make(rdtype), raise_on_no_answer=False, search=False
            )
        except dns.resolver.NXDOMAIN as exc:
            # NXDOMAIN.responses() is untyped; it reads this same mapping of qname to response.
            responses: dict[dns.name.Name, dns.message.Message] = exc.kwargs.get("responses", {})
            return _NotFound(), _negative_ttl(next(iter(responses.values()), None))
        except dns.resolver.LifetimeTimeout as exc:
            raise DnsTimeout(f"{what}: no answer from {self._servers} within {self._timeout:g} s") from exc
        except dns.resolver.NoNameservers as exc:
            raise DnsTemporaryError(f"{what}: every nameserver failed ({exc})") from exc
        except dns.resolver.YXDOMAIN as exc:
            raise NxDomain(f"{what}: the name is too long after DNAME substitution") from exc
        except (dns.exception.DNSException, OSError) as exc:
            raise DnsTemporaryError(f"{what}: {exc}") from exc
        authenticated = bool(answer.response.flags & dns.flags.AD)
        if answer.rrset is None:
            return _Found(answer.canonical_name, (), authenticated), _negative_ttl(answer.response)
        ttl = max(0, min(answer.chaining_result.minimum_ttl, MAX_POSITIVE_TTL))
        return _Found(answer.canonical_name, tuple(answer.rrset), authenticated), ttl


async def verified_ptr(resolver: Resolver, client_ip: str) -> str:
    """The client's forward-confirmed reverse name (FCrDNS), or "" when it has none or DNS failed."""
    try:
        names = await resolver.ptr(client_ip)
        for name in names[:3]:
            kind = ipaddress.ip_address(client_ip)
            found = await (resolver.aaaa(name) if kind.version == 6 else resolver.a(name))
            if any(address == kind for address in found):
                return name.rstrip(".")
    except (DnsError, ValueError):
        pass
    return ""
