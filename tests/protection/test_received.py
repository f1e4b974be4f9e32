"""Received fields read back (protection.received): the client each hop took the message from, from
the shapes real servers write, and "not understood" for anything else (stranger input, bounded)."""

from __future__ import annotations

import ipaddress

import pytest

from postroom.protection.received import (
    MAX_FIELD_OCTETS,
    NOT_UNDERSTOOD,
    ReceivedHop,
    parse_received,
    received_hops,
)


def hop(ip: str, helo: str = "") -> ReceivedHop:
    return ReceivedHop(ipaddress.ip_address(ip), helo)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # Postfix
        (
            " from mail.origin.example (mail.origin.example [198.51.100.7])\r\n\tby mx.filter.example "
            "(Postfix) with ESMTPS id 4XyZ; Mon, 30 Nov 2026 06:00:00 +0000",
            hop("198.51.100.7", "mail.origin.example"),
        ),
        (
            " from helo.example (unknown [203.0.113.9]) by mx (Postfix); date",
            hop("203.0.113.9", "helo.example"),
        ),
        (
            " from mail6.origin.example (mail6.origin.example [IPv6:2001:db8::25])\r\n by mx; date",
            hop("2001:db8::25", "mail6.origin.example"),
        ),
        # Postroom's own
        (
            " from mta.partner.example ([192.0.2.10])\r\n\tby mx.postroom.test (Postroom)",
            hop("192.0.2.10", "mta.partner.example"),
        ),
        # sendmail, with its forgery note
        (
            " from helo.example (rdns.example [192.0.2.44] (may be forged)) by mx.example (8.17/8.17); date",
            hop("192.0.2.44", "helo.example"),
        ),
        # Exim
        (
            " from rdns.example ([192.0.2.45] helo=real-helo.example) by mx.example with esmtp; date",
            hop("192.0.2.45", "real-helo.example"),
        ),
        (" from [192.0.2.46] (helo=laptop.example) by mx.example; date", hop("192.0.2.46", "laptop.example")),
        # Exchange: a bare address in the comment
        (
            " from EX01.contoso.com (10.0.0.5) by EX02.contoso.com (10.0.0.6) with Microsoft SMTP Server",
            hop("10.0.0.5", "ex01.contoso.com"),
        ),
        # The RFC's address literal alone; an IPv4-mapped IPv6 literal is its IPv4 address
        (" from [192.0.2.47] by mx.example; date", hop("192.0.2.47")),
        (" from x.example ([IPv6:::ffff:192.0.2.48]) by mx; date", hop("192.0.2.48", "x.example")),
        # A HELO that is no domain is not kept
        (" from <script> ([192.0.2.49]) by mx; date", hop("192.0.2.49")),
    ],
)
def test_the_shapes_real_servers_write(value: str, expected: ReceivedHop) -> None:
    assert parse_received(value.encode()) == expected


@pytest.mark.parametrize(
    "value",
    [
        b" by mx.example with ESMTP id 1; date",  # no from clause (a local pickup)
        b" from helo.example by mx.example; date",  # no address anywhere
        b" from helo.example (rdns.example) by mx; date",  # a name, no address
        b" from helo.example ([999.1.2.3]) by mx; date",  # not an address
        b" from helo.example ((((((deep [192.0.2.1])))))) by mx",  # nested past the bound
        b" from helo.example ([192.0.2.1] by mx",  # unbalanced
        b" from helo.example [192.0.2.1]) by mx",  # unbalanced the other way
        " from h\u00e9lo.example ([192.0.2.1]) by mx".encode(),  # not ASCII
        b" from helo.example ([192.0.2.1]) " + b"x" * MAX_FIELD_OCTETS,  # too long
        b"",
    ],
)
def test_anything_else_is_not_understood(value: bytes) -> None:
    assert parse_received(value) == NOT_UNDERSTOOD


def test_hops_are_read_top_first_from_the_header_section_only_and_bounded() -> None:
    message = (
        b"Received: from gw.filter.example (gw.filter.example [10.1.2.3])\r\n\tby mx2.filter.example; d\r\n"
        b"X-Other: x\r\n"
        b"received: from mail.origin.example ([198.51.100.7]) by gw.filter.example; d\r\n"
        b"Received: nonsense\r\n"
        b"Subject: hi\r\n"
        b"\r\n"
        b"Received: from body.example ([192.0.2.99]) by nowhere; this is the body\r\n"
    )
    assert received_hops(message) == [
        hop("10.1.2.3", "gw.filter.example"),
        hop("198.51.100.7", "mail.origin.example"),
        NOT_UNDERSTOOD,
    ]
    assert received_hops(message, limit=1) == [hop("10.1.2.3", "gw.filter.example")]
    flood = b"".join(b"Received: from a.example ([192.0.2.%d]) by b; d\r\n" % (i % 250) for i in range(500))
    assert len(received_hops(flood + b"\r\nbody")) == 30
