"""PROXY protocol headers as a load balancer writes them (haproxy's `send-proxy` and `send-proxy-v2`)."""

from __future__ import annotations

import ipaddress
import struct

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_LOCAL = V2_SIGNATURE + b"\x20\x00\x00\x00"  # the balancer's own connection: a health check


def v1_header(source: tuple[str, int], destination: tuple[str, int]) -> bytes:
    family = "TCP6" if ":" in source[0] else "TCP4"
    return f"PROXY {family} {source[0]} {destination[0]} {source[1]} {destination[1]}\r\n".encode()


def v2_header(source: tuple[str, int], destination: tuple[str, int], tlvs: bytes = b"") -> bytes:
    """A v2 PROXY command over TCP, with `tlvs` (already encoded) after the addresses."""
    client, local = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
    family = 0x11 if client.version == 4 else 0x21
    payload = client.packed + local.packed + struct.pack("!HH", source[1], destination[1]) + tlvs
    return V2_SIGNATURE + bytes([0x21, family]) + struct.pack("!H", len(payload)) + payload


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack("!H", len(value)) + value
