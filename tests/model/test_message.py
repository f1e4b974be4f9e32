"""message.summarize (RFC 2047, RFC 6532 UTF-8, malformed headers, bounds) and count_received."""

from __future__ import annotations

import pytest

from postroom.model.message import MAX_HEADER_SCAN, HeaderSummary, count_received, summarize


def message(*headers: str, body: str = "body\r\n") -> bytes:
    return ("".join(h + "\r\n" for h in headers) + "\r\n" + body).encode("utf-8")


@pytest.mark.parametrize(
    ("subject_header", "subject"),
    [
        ("Subject: plain", "plain"),
        ("Subject: =?utf-8?q?caf=C3=A9?=", "café"),
        ("Subject: =?UTF-8?B?Y2Fmw6k=?=", "café"),
        (
            "Subject: =?ISO-8859-1?B?SWYgeW91IGNhbiByZWFkIHRoaXMgeW8=?=\r\n"
            " =?ISO-8859-2?B?dSB1bmRlcnN0YW5kIHRoZSBleGFtcGxlLg==?=",
            "If you can read this you understand the example.",
        ),
        ("Subject: Re: =?utf-8?q?Gr=C3=BC=C3=9Fe?= aus Berlin", "Re: Grüße aus Berlin"),
        ("Subject: folded\r\n   over\r\n\tlines", "folded over lines"),
        ("Subject: café raw UTF-8", "café raw UTF-8"),  # RFC 6532
        ("Subject: =?x-unknown?q?hi?=", "=?x-unknown?q?hi?="),  # kept as written
        ("Subject: =?utf-8?q?caf=E9?=", "=?utf-8?q?caf=E9?="),  # not UTF-8 inside: kept
        ("Subject: " + "x" * 300, "x" * 256),
        ("X-Other: no subject", ""),
    ],
)
def test_subject(subject_header: str, subject: str) -> None:
    assert summarize(message("From: a@example.com", subject_header)).subject == subject


def test_all_fields() -> None:
    content = message(
        "From: =?utf-8?q?J=C3=B6rg?= <jorg@example.com>",
        "Subject: Hello",
        "Date: Mon, 1 Jan 2024 10:00:00 +0000",
        "Message-ID:\r\n <abc.123@example.com>",
    )
    assert summarize(content) == HeaderSummary(
        from_header="Jörg <jorg@example.com>",
        subject="Hello",
        date="Mon, 1 Jan 2024 10:00:00 +0000",
        message_id="<abc.123@example.com>",
    )


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\r\n\r\n",
        b"no header at all, just text\r\n\r\n",
        b"\r\nSubject: in the body\r\n",
        b"\x00\x01\x02\xff\xfe\r\n\r\n",
        b": empty name\r\n\r\n",
        b"Subject",  # no colon, no end of header
    ],
)
def test_malformed_header_yields_an_empty_summary(content: bytes) -> None:
    assert summarize(content) == HeaderSummary("", "", "", "")


def test_a_header_line_without_colon_does_not_raise() -> None:
    summary = summarize(b"Subject: kept\r\nthis is not a header\r\nFrom: x@example.com\r\n\r\nbody")
    assert summary.subject == "kept"


def test_non_utf8_octets_are_replaced_not_raised() -> None:
    summary = summarize(b"Subject: caf\xe9\r\n\r\n")
    assert summary.subject == "caf\ufffd"
    summary.subject.encode("utf-8")  # storable


def test_headers_in_the_body_are_not_read() -> None:
    assert summarize(b"From: a@example.com\r\n\r\nSubject: not a header\r\n").subject == ""


def test_header_scan_is_bounded() -> None:
    content = b"X-Pad: " + b"a" * MAX_HEADER_SCAN + b"\r\nSubject: too far\r\n\r\n"
    assert summarize(content).subject == ""


@pytest.mark.parametrize(
    ("content", "count"),
    [
        (message("From: a@example.com"), 0),
        (message("Received: from a", "Received: from b", "Subject: x", "Received: from c"), 3),
        (message("RECEIVED: from a", "received: from b"), 2),
        (message("X-Received: from a", "Received-SPF: pass"), 0),
        (message("Received: from a", body="Received: from b\r\nReceived: from c\r\n"), 1),
    ],
)
def test_count_received(content: bytes, count: int) -> None:
    assert count_received(content) == count
