"""The PROXY protocol parser, fed bytes: v1 and v2, complete, incomplete, malformed and too long."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from postroom.smtp.proxy_protocol import (
    MAX_HEADER_OCTETS,
    MAX_V1_OCTETS,
    MAX_V2_PAYLOAD,
    ProxyHeader,
    ProxyHeaderError,
    TrustedProxies,
    looks_like_header,
    parse_header,
)

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
SMTP = b"EHLO client.example\r\n"


def v2(command: int = 0x1, family: int = 0x11, payload: bytes = b"", *, length: int | None = None) -> bytes:
    """A v2 header: version 2 with `command`, `family` (high nibble) and transport (low nibble)."""
    size = len(payload) if length is None else length
    return SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", size) + payload


def inet(source: str, destination: str, sport: int, dport: int) -> bytes:
    return (
        ipaddress.ip_address(source).packed
        + ipaddress.ip_address(destination).packed
        + struct.pack("!HH", sport, dport)
    )


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack("!H", len(value)) + value


V1_TCP4 = b"PROXY TCP4 203.0.113.7 192.0.2.25 40000 25\r\n"
V1_TCP6 = b"PROXY TCP6 2001:db8::7 2001:db8::25 40000 25\r\n"
V1_UNKNOWN = b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n"
V2_TCP4 = v2(payload=inet("203.0.113.7", "192.0.2.25", 40000, 25))
V2_TCP6 = v2(family=0x21, payload=inet("2001:db8::7", "2001:db8::25", 40000, 25))
V2_TLVS = v2(payload=inet("203.0.113.7", "192.0.2.25", 40000, 25) + tlv(0x04, b"") + tlv(0x20, b"\x01" * 40))
V2_LOCAL = v2(command=0x0, family=0x00)
V2_LOCAL_WITH_ADDRESSES = v2(command=0x0, payload=inet("203.0.113.7", "192.0.2.25", 40000, 25))
V2_UNSPEC = v2(family=0x00)
V2_UNIX = v2(family=0x31, payload=b"/run/a".ljust(108, b"\0") + b"/run/b".ljust(108, b"\0"))

V4 = ("203.0.113.7", 40000), ("192.0.2.25", 25)
V6 = ("2001:db8::7", 40000), ("2001:db8::25", 25)

VALID = [
    ("v1 TCP4", V1_TCP4, 1, *V4),
    ("v1 TCP6", V1_TCP6, 1, *V6),
    ("v1 UNKNOWN", V1_UNKNOWN, 1, None, None),
    ("v1 UNKNOWN alone", b"PROXY UNKNOWN\r\n", 1, None, None),
    ("v1 TCP6 mapped IPv4", b"PROXY TCP6 ::ffff:203.0.113.7 ::1 40000 25\r\n", 1, V4[0], ("::1", 25)),
    (
        "v1 ports 0 and 65535",
        b"PROXY TCP4 203.0.113.7 192.0.2.25 0 65535\r\n",
        1,
        (V4[0][0], 0),
        (V4[1][0], 65535),
    ),
    ("v2 IPv4", V2_TCP4, 2, *V4),
    ("v2 IPv6", V2_TCP6, 2, *V6),
    ("v2 IPv4 with TLVs", V2_TLVS, 2, *V4),
    ("v2 LOCAL", V2_LOCAL, 2, None, None),
    ("v2 LOCAL with addresses", V2_LOCAL_WITH_ADDRESSES, 2, None, None),
    ("v2 unspecified family", V2_UNSPEC, 2, None, None),
    ("v2 AF_UNIX", V2_UNIX, 2, None, None),
]


@pytest.mark.parametrize(
    ("header", "version", "source", "destination"), [case[1:] for case in VALID], ids=[c[0] for c in VALID]
)
def test_a_complete_header_names_the_client_and_its_own_length(
    header: bytes, version: int, source: tuple[str, int] | None, destination: tuple[str, int] | None
) -> None:
    assert parse_header(header + SMTP) == ProxyHeader(version, source, destination, len(header))


@pytest.mark.parametrize("header", [case[1] for case in VALID], ids=[c[0] for c in VALID])
def test_fed_byte_by_byte_it_is_incomplete_until_its_last_octet(header: bytes) -> None:
    for end in range(len(header)):
        assert parse_header(header[:end]) is None, end
    complete = parse_header(header)
    assert complete is not None and complete.length == len(header)


MALFORMED = [
    ("SMTP instead", SMTP),
    ("TLS instead", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
    ("lower case", b"proxy TCP4 203.0.113.7 192.0.2.25 40000 25\r\n"),
    ("v1 without its space", b"PROXYTCP4 203.0.113.7 192.0.2.25 40000 25\r\n"),
    ("v1 unknown protocol", b"PROXY UDP4 203.0.113.7 192.0.2.25 40000 25\r\n"),
    ("v1 missing a port", b"PROXY TCP4 203.0.113.7 192.0.2.25 40000\r\n"),
    ("v1 extra field", b"PROXY TCP4 203.0.113.7 192.0.2.25 40000 25 1\r\n"),
    ("v1 two spaces", b"PROXY TCP4  203.0.113.7 192.0.2.25 40000 25\r\n"),
    ("v1 IPv6 in TCP4", b"PROXY TCP4 2001:db8::7 192.0.2.25 40000 25\r\n"),
    ("v1 IPv4 in TCP6", b"PROXY TCP6 203.0.113.7 2001:db8::25 40000 25\r\n"),
    ("v1 host name", b"PROXY TCP4 client.example 192.0.2.25 40000 25\r\n"),
    ("v1 octet over 255", b"PROXY TCP4 203.0.113.256 192.0.2.25 40000 25\r\n"),
    ("v1 port over 65535", b"PROXY TCP4 203.0.113.7 192.0.2.25 65536 25\r\n"),
    ("v1 port with a sign", b"PROXY TCP4 203.0.113.7 192.0.2.25 +4000 25\r\n"),
    ("v1 port with a leading zero", b"PROXY TCP4 203.0.113.7 192.0.2.25 040000 25\r\n"),
    ("v1 non-ASCII", "PROXY TCP4 203.0.113.７ 192.0.2.25 40000 25\r\n".encode()),
    ("v2 signature off by one octet", SIGNATURE[:-1] + b"X" + V2_TCP4[12:]),
    ("v2 version 1", SIGNATURE + b"\x11\x11\x00\x0c" + inet("203.0.113.7", "192.0.2.25", 1, 25)),
    ("v2 command 2", v2(command=0x2, payload=inet("203.0.113.7", "192.0.2.25", 1, 25))),
    ("v2 family 4", v2(family=0x41, payload=b"\0" * 12)),
    ("v2 datagram", v2(family=0x12, payload=inet("203.0.113.7", "192.0.2.25", 1, 25))),
    ("v2 IPv4 block too short", v2(payload=b"\0" * 11)),
    ("v2 IPv6 block too short", v2(family=0x21, payload=b"\0" * 35)),
]


@pytest.mark.parametrize("data", [case[1] for case in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_a_malformed_header_is_an_error(data: bytes) -> None:
    with pytest.raises(ProxyHeaderError):
        parse_header(data)


def test_a_v1_line_without_crlf_is_an_error_at_its_bound() -> None:
    line = b"PROXY TCP6 " + b"f" * 200
    assert parse_header(line[: MAX_V1_OCTETS - 1]) is None
    with pytest.raises(ProxyHeaderError, match="longer"):
        parse_header(line[:MAX_V1_OCTETS])


def test_a_v1_line_ended_by_a_bare_lf_is_an_error_at_its_bound() -> None:
    line = V1_TCP4.replace(b"\r\n", b"\n") + SMTP * 5
    with pytest.raises(ProxyHeaderError):
        parse_header(line)


def test_the_longest_v1_lines_are_taken() -> None:
    full = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    unknown = f"PROXY UNKNOWN {full} {full} 65535 65535\r\n".encode()
    assert len(unknown) == MAX_V1_OCTETS
    assert parse_header(unknown) == ProxyHeader(1, None, None, MAX_V1_OCTETS)
    tcp6 = f"PROXY TCP6 {full} {full} 65535 65535\r\n".encode()
    header = parse_header(tcp6)
    assert header is not None and header.source == (full, 65535)


def test_a_v2_length_past_the_bound_is_an_error_before_its_payload_arrives() -> None:
    fixed = v2(length=MAX_V2_PAYLOAD + 1)
    assert len(fixed) == 16
    with pytest.raises(ProxyHeaderError, match="length"):
        parse_header(fixed)
    longest = v2(payload=inet("203.0.113.7", "192.0.2.25", 1, 25) + tlv(0xE0, b"x" * (MAX_V2_PAYLOAD - 15)))
    assert len(longest) == MAX_HEADER_OCTETS
    header = parse_header(longest)
    assert header is not None and header.length == MAX_HEADER_OCTETS


@pytest.mark.parametrize(
    ("first", "expected"),
    [
        (b"PROXY TCP4 203.0.113.7 ", True),
        (b"P", True),
        (b"PROX", True),
        (SIGNATURE[:3], True),
        (V2_TCP4, True),
        (b"EHLO client.example\r\n", False),
        (b"PROXIMITY\r\n", False),
        (b"\r\nEHLO", False),
        (b"\x16\x03\x01", False),
        (b"", False),
    ],
)
def test_the_screen_for_peers_that_may_not_send_a_header(first: bytes, expected: bool) -> None:
    assert looks_like_header(first) is expected


@pytest.mark.parametrize(
    ("peer", "trusted"),
    [
        ("10.1.2.3", True),
        ("127.0.0.1", True),
        ("::ffff:10.1.2.3", True),
        ("2001:db8:1::5", True),
        ("127.0.0.2", False),
        ("11.0.0.1", False),
        ("2001:db8:2::5", False),
        ("", False),
    ],
)
def test_trusted_proxies_by_address_and_network(peer: str, trusted: bool) -> None:
    proxies = TrustedProxies.of(["10.0.0.0/8", "127.0.0.1", "2001:db8:1::/48"])
    assert proxies.trusts(peer) is trusted
