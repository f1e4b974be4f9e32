"""The PROXY protocol (haproxy's, versions 1 and 2): the header a TCP load balancer puts before a stream.

A balancer in front of the SMTP listeners connects to the node itself, so the socket's peer is the
balancer; the header it sends first says who the client is. `parse_header` is a sans-IO parser: given
the octets received so far it answers None (incomplete: read more), a `ProxyHeader` (complete, and how
many octets it took), or raises `ProxyHeaderError` (malformed, or longer than its bound). It never needs
octets past the header to decide, so a reader can consume exactly the header and leave the rest (the
TLS handshake of an implicit-TLS listener) on the socket. `TrustedProxies` says which peers must send
a header; `looks_like_header` tells a listener that a peer it does not trust sent one anyway.

Versions. v1 is a text line: `PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\\r\\n` or `PROXY UNKNOWN ...`,
at most 107 octets with the CRLF. v2 is binary: the 12-octet signature `\\r\\n\\r\\n\\0\\r\\nQUIT\\n`, a
version/command octet (0x20 LOCAL, 0x21 PROXY), a family/transport octet, a 16-bit length, the
addresses, then TLVs, which are skipped. LOCAL (the balancer's own health check), UNKNOWN, the
unspecified family and AF_UNIX carry no client address: `source` is None and the connection's own
endpoints stand. Written here rather than taken from a library: the format is small and fixed, the
listener must stop reading exactly at the header's end (which the PyPI parsers, built around stream
readers or whole buffers, do not offer), and the bounds are ours to name.

Security: the input comes from the network, but only from a peer the operator trusts (a peer it does
not trust is never parsed: its header is refused whole). Still every length is bounded before it is
used: a v1 line past `MAX_V1_OCTETS` without CRLF, or a v2 length past `MAX_V2_PAYLOAD`, is an error as
soon as it is known, so a reader never holds more than `MAX_HEADER_OCTETS`. Addresses must parse as
addresses of the family named and ports as 0-65535; anything else is an error, never a guess.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "MAX_HEADER_OCTETS",
    "MAX_V1_OCTETS",
    "MAX_V2_PAYLOAD",
    "ProxyHeader",
    "ProxyHeaderError",
    "TrustedProxies",
    "looks_like_header",
    "parse_header",
]

MAX_V1_OCTETS = 107  # the v1 line with its CRLF (the spec's worst case, TCP6 with 5-digit ports)
MAX_V2_PAYLOAD = 2048  # octets after the v2 fixed part: the addresses (216 at most) and TLVs
_V1_PREFIX = b"PROXY "
_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V2_FIXED = 16  # signature, version/command, family/transport, length
MAX_HEADER_OCTETS = _V2_FIXED + MAX_V2_PAYLOAD  # the most a reader ever holds

_LOCAL, _PROXY = 0x0, 0x1
_UNSPEC, _INET, _INET6, _UNIX = 0x0, 0x1, 0x2, 0x3
_STREAM = 0x1
_ADDRESS_OCTETS = {_INET: 12, _INET6: 36, _UNIX: 216}


class ProxyHeaderError(ValueError):
    """The octets are not a valid PROXY header (or not one at all); the connection must be closed."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A complete header: the client (`source`) and the address it connected to (`destination`), each
    (ip, port), or None when the header carries none (LOCAL, UNKNOWN, unspecified or AF_UNIX);
    `length` is the number of octets the header took."""

    version: int
    source: tuple[str, int] | None
    destination: tuple[str, int] | None
    length: int


@dataclass(frozen=True, slots=True)
class TrustedProxies:
    """The peers a listener takes PROXY headers from (addresses and networks), and how long a header
    may take to arrive (seconds)."""

    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    header_timeout: float = 5.0

    @classmethod
    def of(cls, networks: Iterable[str], header_timeout: float = 5.0) -> TrustedProxies:
        """From strings like "10.0.0.0/8" or "127.0.0.1"; raises ValueError for one that is neither."""
        return cls(tuple(ipaddress.ip_network(n.strip(), strict=False) for n in networks), header_timeout)

    def trusts(self, peer_ip: str) -> bool:
        try:
            address = _unmapped(ipaddress.ip_address(peer_ip))
        except ValueError:
            return False  # not an IP peer (a Unix socket): never a balancer
        return any(address in network for network in self.networks)


def looks_like_header(first_octets: bytes) -> bool:
    """True when the first octets a client sent begin a PROXY header (v1 or v2), as far as they go.

    No SMTP command begins with `P` or with CR, so a short first read that matches is refused as well."""
    if not first_octets:
        return False
    return _V1_PREFIX.startswith(first_octets[:6]) or _V2_SIGNATURE.startswith(first_octets[:12])


def parse_header(data: bytes) -> ProxyHeader | None:
    """The header at the start of `data`; None while it is incomplete. Raises `ProxyHeaderError`."""
    if data[:1] == _V1_PREFIX[:1]:
        return _parse_v1(data)
    if data[:1] == _V2_SIGNATURE[:1]:
        return _parse_v2(data)
    if not data:
        return None
    raise ProxyHeaderError("not a PROXY protocol header")


def _parse_v1(data: bytes) -> ProxyHeader | None:
    end = data.find(b"\r\n", 0, MAX_V1_OCTETS)
    if end < 0:
        if not (data[:6] == _V1_PREFIX or _V1_PREFIX.startswith(data)):
            raise ProxyHeaderError("not a PROXY protocol header")
        if len(data) >= MAX_V1_OCTETS:
            raise ProxyHeaderError(f"v1 line longer than {MAX_V1_OCTETS} octets")
        return None
    line = data[:end]
    if not line.startswith(_V1_PREFIX):
        raise ProxyHeaderError("not a PROXY protocol header")
    length = end + 2
    fields = line[len(_V1_PREFIX) :].split(b" ")
    if fields[0] == b"UNKNOWN":
        return ProxyHeader(1, None, None, length)  # the rest of the line is to be ignored
    if fields[0] not in (b"TCP4", b"TCP6") or len(fields) != 5:
        raise ProxyHeaderError("v1 line is not `PROXY TCP4|TCP6 src dst sport dport` or UNKNOWN")
    version = 4 if fields[0] == b"TCP4" else 6
    source_ip = _v1_address(fields[1], version)
    destination_ip = _v1_address(fields[2], version)
    return ProxyHeader(1, (source_ip, _v1_port(fields[3])), (destination_ip, _v1_port(fields[4])), length)


def _v1_address(text: bytes, version: int) -> str:
    try:
        address = ipaddress.ip_address(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ProxyHeaderError(f"v1 address {text[:45]!r} is not an IP address") from None
    if address.version != version:
        raise ProxyHeaderError(f"v1 address {text[:45]!r} is not of the family TCP{version}")
    return str(_unmapped(address))


def _v1_port(text: bytes) -> int:
    # Decimal without a sign or leading zeros (haproxy's grammar); int() alone would take "+25", "0x19".
    if not (text.isdigit() and len(text) <= 5 and (text == b"0" or text[:1] != b"0")) or int(text) > 65535:
        raise ProxyHeaderError(f"v1 port {text[:8]!r} is not a port number")
    return int(text)


def _parse_v2(data: bytes) -> ProxyHeader | None:
    if not _V2_SIGNATURE.startswith(data[:12]):
        raise ProxyHeaderError("not a PROXY protocol header")
    if len(data) < _V2_FIXED:
        return None
    version_command, family_transport = data[12], data[13]
    if version_command >> 4 != 2:
        raise ProxyHeaderError(f"v2 version {version_command >> 4} is not 2")
    command = version_command & 0x0F
    if command not in (_LOCAL, _PROXY):
        raise ProxyHeaderError(f"v2 command {command} is neither LOCAL nor PROXY")
    payload = int.from_bytes(data[14:16], "big")
    if payload > MAX_V2_PAYLOAD:
        raise ProxyHeaderError(f"v2 length {payload} is more than {MAX_V2_PAYLOAD} octets")
    length = _V2_FIXED + payload
    if len(data) < length:
        return None
    if command == _LOCAL:
        return ProxyHeader(2, None, None, length)  # the balancer's own connection (a health check)
    family, transport = family_transport >> 4, family_transport & 0x0F
    if family not in (_UNSPEC, _INET, _INET6, _UNIX):
        raise ProxyHeaderError(f"v2 address family {family} is unknown")
    if family == _UNSPEC:
        return ProxyHeader(2, None, None, length)
    if transport != _STREAM:
        raise ProxyHeaderError(f"v2 transport {transport} is not a stream (SMTP runs over TCP)")
    if payload < _ADDRESS_OCTETS[family]:
        raise ProxyHeaderError(f"v2 length {payload} is too short for its addresses")
    if family == _UNIX:
        return ProxyHeader(2, None, None, length)
    block = data[_V2_FIXED:length]
    size = 4 if family == _INET else 16
    source = _unmapped(ipaddress.ip_address(block[:size]))
    destination = _unmapped(ipaddress.ip_address(block[size : 2 * size]))
    ports = block[2 * size : 2 * size + 4]
    return ProxyHeader(
        2,
        (str(source), int.from_bytes(ports[:2], "big")),
        (str(destination), int.from_bytes(ports[2:], "big")),
        length,
    )


def _unmapped(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An IPv4-mapped IPv6 address as the IPv4 address it is (a dual-stack socket's view of v4 clients)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
