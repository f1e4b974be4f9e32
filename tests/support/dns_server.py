"""An authoritative DNS server on loopback for tests and labs: real UDP and TCP, zones from BIND text.

`DnsTestServer` binds UDP and TCP on the same port of 127.0.0.1 (port 0: an ephemeral one, reported as
`port` and `address`) and answers from a thread in the background, so asyncio code under test talks to
it over real sockets. It serves several zones at once, given as BIND zone text (relative names are
relative to the zone's origin; an SOA and NS are made up at the apex when the text has none), and
its data can change while it runs: zones replaced or removed, records added or removed, answers forced
to fail (SERVFAIL, REFUSED) for one name, or never given (`set_unanswered`: the resolver times out, as
behind a nameserver that drops some questions). The root zone (`"."`) may be served too: every name is
then answered, and one that was not added is NXDOMAIN rather than REFUSED, as on the Internet.

What it answers, as an authoritative server does (AA set, RA clear):

- the records of the asked type; a CNAME at the name when there are none, followed to its target when
  that is in a served zone (as BIND does for in-zone targets), at most 8 links;
- NXDOMAIN (name absent and no names below it) or NODATA (name, or an empty non-terminal, without
  records of that type), both with the zone's SOA in authority, its TTL lowered to the SOA MINIMUM as
  RFC 2308 §3 asks, so resolvers cache negative answers for that long;
- REFUSED for a name in none of its zones, NOTIMP for an opcode other than QUERY, FORMERR for a message
  that does not parse (when at least its header does; otherwise nothing);
- over UDP, an answer larger than 512 octets (or the EDNS payload size the query offers) is replaced by
  an empty one with TC set, so clients retry over TCP; TCP answers are never truncated.

Wildcards (`*.<name>`) synthesize the records of names that do not exist below their closest encloser
(RFC 4592), with the name asked as the owner. Not served: delegations below the apex, DNSSEC, zone
transfers, dynamic update.

TXT strings over 255 octets: a DNS character-string carries its length in one octet, so no wire format
can hold a 300-octet string "unsplit"; what a DNS provider does with an over-long value typed by a tenant
is either split it into several strings of 255 at most (the common case) or cut it at 255 (a broken
record). dnspython's zone parser refuses a quoted string over 255 octets, so zone text only holds
conforming strings (`"aaa" "bbb"` is one record of two strings). `add_txt(name, value, oversize=...)`
takes strings of any length and serves them split (`"split"`, the default), cut (`"truncate"`) or refuses
them (`"reject"`); the resolver then sees exactly the strings a real provider would have served. It adds
records of the SPF type (99, RFC 4408; obsolete since RFC 7208) the same way, for tests that check they are
never asked for.

Authenticated answers: the server serves no DNSSEC, but a validating recursive resolver in front of
signed zones sets AD on the answers it validated; `set_authenticated(name)` makes this server do the same
for questions about `name` (any type), so DANE code sees what it would behind such a resolver. As a
validating resolver does (RFC 6840 §5.7, RFC 4035 §3.2.3), AD is set only when the query asked for it
(AD or DO set): a client that does not ask never gets it.

Every query received is logged (`queries`, `count`), for tests that assert on caching.

*Security:* test code only; listens on loopback, parses queries with dnspython and answers only from
the zones it was given. Never expose it on a network.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import struct
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.node
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.CNAME
import dns.rdtypes.ANY.SOA
import dns.rdtypes.ANY.SPF
import dns.rdtypes.ANY.TXT
import dns.rrset
import dns.zone

from postroom.config.settings import DnsSettings, ListenAddress

MAX_CNAME_CHAIN = 8  # links followed in one answer; longer chains are answered as far as they go
UDP_PAYLOAD_DEFAULT = 512  # RFC 1035 §4.2.1: UDP messages without EDNS
UDP_PAYLOAD_MAX = 4096  # largest EDNS payload honoured
DEFAULT_SOA_MINIMUM = 300  # negative-caching TTL of made-up SOAs
DEFAULT_TTL = 300
TXT_STRING_MAX = 255  # octets in one character-string (RFC 1035 §3.3)

Transport = Literal["udp", "tcp"]
Oversize = Literal["split", "truncate", "reject"]


@dataclass(frozen=True, slots=True)
class Query:
    """One question received: name lower-case without the trailing dot, type mnemonic, transport."""

    name: str
    rdtype: str
    transport: Transport


def _name(text: str) -> dns.name.Name:
    """A name given by a test: absolute whether or not it ends with a dot."""
    return dns.name.from_text(text).canonicalize()


def _host(name: dns.name.Name) -> str:
    return name.canonicalize().to_text(omit_final_dot=True)


class DnsTestServer:
    """The server; see the module docstring. Use as a context manager or call start() and stop()."""

    def __init__(self, zones: Mapping[str, str] | None = None, *, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self._lock = threading.Lock()
        self._zones: dict[dns.name.Name, dns.zone.Zone] = {}
        self._failures: dict[dns.name.Name, dns.rcode.Rcode] = {}
        self._unanswered: set[dns.name.Name] = set()
        self._authenticated: set[dns.name.Name] = set()
        self._queries: list[Query] = []
        self._udp: socketserver.ThreadingUDPServer | None = None
        self._tcp: socketserver.ThreadingTCPServer | None = None
        self._threads: list[threading.Thread] = []
        for origin, text in (zones or {}).items():
            self.set_zone(origin, text)

    # -- life cycle

    @property
    def address(self) -> ListenAddress:
        return ListenAddress(self.host, self.port)

    def settings(self, *, timeout: float = 2.0, cache_size: int = 1_000) -> DnsSettings:
        """`DnsSettings` pointing at this server alone."""
        return DnsSettings(nameservers=(self.address,), timeout=timeout, cache_size=cache_size)

    def start(self) -> DnsTestServer:
        if self._udp is not None:
            raise RuntimeError("the DNS test server is already running")
        self._udp, self._tcp = self._bind()
        self.port = self._udp.server_address[1]
        for server in (self._udp, self._tcp):
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="dns-test-server",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        for server in (self._udp, self._tcp):
            if server is not None:
                server.shutdown()
                server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._udp = self._tcp = None
        self._threads.clear()

    def __enter__(self) -> DnsTestServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _bind(self) -> tuple[socketserver.ThreadingUDPServer, socketserver.ThreadingTCPServer]:
        """UDP on an ephemeral port, then TCP on the same one; another UDP port if that one is taken."""
        last_error: OSError | None = None
        for _ in range(20):
            udp = _UdpServer((self.host, self.port), self)
            try:
                return udp, _TcpServer((self.host, udp.server_address[1]), self)
            except OSError as exc:
                udp.server_close()
                last_error = exc
                if self.port:
                    break
        raise OSError(f"cannot bind UDP and TCP on one port of {self.host}: {last_error}")

    # -- data

    def set_zone(self, origin: str, text: str = "", *, soa_minimum: int = DEFAULT_SOA_MINIMUM) -> None:
        """Serve `origin` from BIND zone text, replacing any zone of that origin.

        Names in `text` are relative to `origin` unless they end with a dot; records without a TTL get
        `DEFAULT_TTL` unless the text sets its own `$TTL`. Without an SOA (or NS) at the apex one is made
        up, with `soa_minimum` as the negative-caching TTL.
        Raises dns.exception.SyntaxError for text dnspython cannot parse.
        """
        apex = _name(origin)
        # A default $TTL first, so that records without one need no ceremony; the text's own $TTL wins.
        zone = dns.zone.from_text(
            f"$TTL {DEFAULT_TTL}\n{text}", origin=apex, relativize=False, check_origin=False
        )
        if zone.get_rdataset(apex, dns.rdatatype.SOA) is None:
            ns, hostmaster = dns.name.from_text("ns", apex), dns.name.from_text("hostmaster", apex)
            soa = f"{ns} {hostmaster} 1 3600 600 86400 {soa_minimum}"
            zone.find_rdataset(apex, dns.rdatatype.SOA, create=True).add(
                dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.SOA, soa), 3600
            )
        if zone.get_rdataset(apex, dns.rdatatype.NS) is None:
            zone.find_rdataset(apex, dns.rdatatype.NS, create=True).add(
                dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.NS, str(dns.name.from_text("ns", apex))),
                3600,
            )
        with self._lock:
            self._zones[apex] = zone

    def remove_zone(self, origin: str) -> None:
        """Stop serving `origin`: its names are REFUSED from now on."""
        with self._lock:
            self._zones.pop(_name(origin), None)

    def add_records(self, name: str, rdtype: str, *values: str, ttl: int = DEFAULT_TTL) -> None:
        """Add records in presentation format (`add_records("example.com", "MX", "10 mx.example.com.")`).

        Names inside `values` without a final dot are relative to the root. The name must be in a zone
        already served (ValueError otherwise); the set's TTL becomes the smallest given.
        """
        qname = _name(name)
        type_code = dns.rdatatype.from_text(rdtype)
        rdatas = [
            dns.rdata.from_text(dns.rdataclass.IN, type_code, value, origin=dns.name.root, relativize=False)
            for value in values
        ]
        self._add(qname, type_code, rdatas, ttl)

    def add_txt(
        self,
        name: str,
        *strings: str | bytes,
        ttl: int = DEFAULT_TTL,
        oversize: Oversize = "split",
        rdtype: Literal["TXT", "SPF"] = "TXT",
    ) -> None:
        """Add one TXT record made of `strings` (str as UTF-8), each of any length; see the module
        docstring for `oversize`. `add_txt(n, "a", "b")` is one record of two strings; call it again
        for a second record. `rdtype="SPF"` adds a record of the SPF type instead."""
        chunks: list[bytes] = []
        for string in strings:
            data = string.encode() if isinstance(string, str) else string
            if len(data) <= TXT_STRING_MAX:
                chunks.append(data)
            elif oversize == "split":
                chunks.extend(data[i : i + TXT_STRING_MAX] for i in range(0, len(data), TXT_STRING_MAX))
            elif oversize == "truncate":
                chunks.append(data[:TXT_STRING_MAX])
            else:
                raise ValueError(f"a TXT string of {len(data)} octets is over {TXT_STRING_MAX}")
        type_code = dns.rdatatype.from_text(rdtype)
        rdata: dns.rdata.Rdata
        if rdtype == "SPF":
            rdata = dns.rdtypes.ANY.SPF.SPF(dns.rdataclass.IN, type_code, chunks)
        else:
            rdata = dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, type_code, chunks)
        self._add(_name(name), type_code, [rdata], ttl)

    def remove_records(self, name: str, rdtype: str | None = None) -> None:
        """Remove the records of one type at `name`, or all of them (the name then no longer exists,
        unless names below it do)."""
        qname = _name(name)
        with self._lock:
            zone = self._zone_for(qname)
            if zone is None:
                return
            if rdtype is None:
                zone.delete_node(qname)
            else:
                zone.delete_rdataset(qname, dns.rdatatype.from_text(rdtype))

    def set_failure(self, name: str, rcode: str | None = "SERVFAIL") -> None:
        """Answer every question for `name` with `rcode` (e.g. SERVFAIL, REFUSED); None restores it."""
        with self._lock:
            if rcode is None:
                self._failures.pop(_name(name), None)
            else:
                self._failures[_name(name)] = dns.rcode.from_text(rcode)

    def set_unanswered(self, name: str, unanswered: bool = True) -> None:
        """Send no answer at all to questions about `name` for a type it has no records of (all of them
        when it has none), so the resolver times out on those; False restores normal answers."""
        with self._lock:
            if unanswered:
                self._unanswered.add(_name(name))
            else:
                self._unanswered.discard(_name(name))

    def set_authenticated(self, name: str, authenticated: bool = True) -> None:
        """Set AD on answers to questions about `name` that ask for it (see the module docstring)."""
        with self._lock:
            if authenticated:
                self._authenticated.add(_name(name))
            else:
                self._authenticated.discard(_name(name))

    def _add(self, qname: dns.name.Name, rdtype: int, rdatas: list[dns.rdata.Rdata], ttl: int) -> None:
        with self._lock:
            zone = self._zone_for(qname)
            if zone is None:
                raise ValueError(f"{_host(qname)} is in no zone served; set_zone() its zone first")
            rdataset = zone.find_rdataset(qname, dns.rdatatype.RdataType.make(rdtype), create=True)
            for rdata in rdatas:
                rdataset.add(rdata, ttl)

    def _zone_for(self, name: dns.name.Name) -> dns.zone.Zone | None:
        """The zone of the longest origin `name` is at or below (called with the lock held)."""
        best: tuple[int, dns.zone.Zone] | None = None
        for origin, zone in self._zones.items():
            if name.is_subdomain(origin) and (best is None or len(origin) > best[0]):
                best = (len(origin), zone)
        return best[1] if best else None

    # -- query log

    @property
    def queries(self) -> list[Query]:
        """Every question received since start or `clear_queries()`, oldest first."""
        with self._lock:
            return list(self._queries)

    def count(self, name: str | None = None, rdtype: str | None = None) -> int:
        """How many questions were received, for one name and/or type (case-insensitive)."""
        host = _host(_name(name)) if name is not None else None
        return sum(
            1
            for query in self.queries
            if (host is None or query.name == host) and (rdtype is None or query.rdtype == rdtype.upper())
        )

    def clear_queries(self) -> None:
        with self._lock:
            self._queries.clear()

    # -- answering

    def respond(self, wire: bytes, transport: Transport) -> bytes | None:
        """The wire answer to one wire query, or None for a message too broken to answer or a question
        `set_unanswered` covers."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            if len(wire) < 12:
                return None
            (query_id,) = struct.unpack("!H", wire[:2])
            return struct.pack("!HHHHHH", query_id, 0x8000 | dns.rcode.FORMERR, 0, 0, 0, 0)
        response = dns.message.make_response(query)
        if query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
        elif len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
        else:
            question = query.question[0]
            with self._lock:
                self._queries.append(
                    Query(_host(question.name), dns.rdatatype.to_text(question.rdtype), transport)
                )
                if self._unanswered_question(question.name.canonicalize(), question.rdtype):
                    return None
                self._answer(response, question.name.canonicalize(), question.rdtype)
                asked = bool(query.flags & dns.flags.AD) or bool(query.ednsflags & dns.flags.DO)
                if asked and question.name.canonicalize() in self._authenticated:
                    response.flags |= dns.flags.AD
        limit = 65535
        if transport == "udp":
            offered = query.payload if query.edns >= 0 else UDP_PAYLOAD_DEFAULT
            limit = min(max(offered, UDP_PAYLOAD_DEFAULT), UDP_PAYLOAD_MAX)
        try:
            return response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            truncated = dns.message.make_response(query)
            truncated.flags |= dns.flags.AA | dns.flags.TC
            truncated.set_rcode(response.rcode())
            return truncated.to_wire(max_size=limit)

    def _unanswered_question(self, qname: dns.name.Name, rdtype: int) -> bool:
        """Whether `set_unanswered` covers this question (called with the lock held)."""
        if qname not in self._unanswered:
            return False
        zone = self._zone_for(qname)
        node = zone.get_node(qname) if zone is not None else None
        held = dns.rdatatype.RdataType.make(rdtype)
        return node is None or node.get_rdataset(dns.rdataclass.IN, held) is None

    def _answer(self, response: dns.message.Message, qname: dns.name.Name, rdtype: int) -> None:
        """Fill `response` for one question (called with the lock held)."""
        if qname in self._failures:
            response.set_rcode(self._failures[qname])
            return
        zone = self._zone_for(qname)
        if zone is None:
            response.set_rcode(dns.rcode.REFUSED)
            return
        response.flags |= dns.flags.AA
        name = qname
        for _ in range(MAX_CNAME_CHAIN):
            node = zone.get_node(name)
            if node is None or len(node.rdatasets) == 0:
                below = any(other != name and other.is_subdomain(name) for other in zone.nodes)
                node = None if below else self._wildcard(zone, name)
            if node is None or len(node.rdatasets) == 0:
                if not below:
                    response.set_rcode(dns.rcode.NXDOMAIN)
                self._add_soa(response, zone)
                return
            if rdtype == dns.rdatatype.ANY:
                for rdataset in node.rdatasets:
                    response.answer.append(dns.rrset.from_rdata_list(name, rdataset.ttl, list(rdataset)))
                return
            rdataset = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.RdataType.make(rdtype))
            if rdataset is not None:
                response.answer.append(dns.rrset.from_rdata_list(name, rdataset.ttl, list(rdataset)))
                return
            cname = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.CNAME)
            if cname is None:
                self._add_soa(response, zone)
                return
            response.answer.append(dns.rrset.from_rdata_list(name, cname.ttl, list(cname)))
            link = next(iter(cname))
            assert isinstance(link, dns.rdtypes.ANY.CNAME.CNAME)
            target = link.target
            next_zone = self._zone_for(target)
            if next_zone is None:
                return  # the resolver follows an out-of-zone target itself
            name, zone = target.canonicalize(), next_zone

    @staticmethod
    def _wildcard(zone: dns.zone.Zone, name: dns.name.Name) -> dns.node.Node | None:
        """The wildcard that synthesizes records for a name that does not exist (RFC 4592 §3.3.1): `*.`
        the closest encloser, the nearest ancestor that exists (with records or names below it)."""
        assert zone.origin is not None
        encloser = name.parent()
        while encloser != zone.origin and not any(other.is_subdomain(encloser) for other in zone.nodes):
            encloser = encloser.parent()
        return zone.get_node(dns.name.Name((b"*", *encloser.labels)))

    @staticmethod
    def _add_soa(response: dns.message.Message, zone: dns.zone.Zone) -> None:
        assert zone.origin is not None
        soa_set = zone.get_rdataset(zone.origin, dns.rdatatype.SOA)
        if soa_set is None:
            return
        soa = next(iter(soa_set))
        assert isinstance(soa, dns.rdtypes.ANY.SOA.SOA)
        ttl = min(soa_set.ttl, soa.minimum)
        response.authority.append(dns.rrset.from_rdata_list(zone.origin, ttl, [soa]))


class _UdpHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        wire, sock = self.request
        assert isinstance(self.server, _UdpServer)
        reply = self.server.dns.respond(wire, "udp")
        if reply is not None:
            sock.sendto(reply, self.client_address)


class _TcpHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        assert isinstance(self.server, _TcpServer)
        conn: socket.socket = self.request
        conn.settimeout(10)
        with contextlib.suppress(OSError):
            while True:
                header = _recv_exactly(conn, 2)
                if header is None:
                    return
                (length,) = struct.unpack("!H", header)
                wire = _recv_exactly(conn, length)
                if wire is None:
                    return
                reply = self.server.dns.respond(wire, "tcp")
                if reply is None:
                    return
                conn.sendall(struct.pack("!H", len(reply)) + reply)


def _recv_exactly(conn: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


class _UdpServer(socketserver.ThreadingUDPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], dns_server: DnsTestServer) -> None:
        self.dns = dns_server
        super().__init__(address, _UdpHandler)


class _TcpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], dns_server: DnsTestServer) -> None:
        self.dns = dns_server
        super().__init__(address, _TcpHandler)


@contextlib.contextmanager
def silent_nameserver(host: str = "127.0.0.1") -> Iterator[ListenAddress]:
    """A UDP port that receives queries and never answers, for timeout tests (no TCP listener: a
    connection there is refused)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((host, 0))
        yield ListenAddress(host, sock.getsockname()[1])
    finally:
        sock.close()
