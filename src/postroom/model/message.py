"""Facts read from a message's header section: the summary that trace and mailstore list.

Only the header section is parsed (up to the first empty line, bounded by `MAX_HEADER_SCAN`), with
the standard library's parser; encoded words (RFC 2047) are decoded for display. A message with a
malformed header still yields a summary (empty fields), never an exception.

Security: the input is untrusted message content; parsing is bounded and the results are plain
strings cut to the lengths the stores keep.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.header import decode_header, make_header
from email.parser import HeaderParser
from email.policy import compat32

MAX_HEADER_SCAN = 256 * 1024
_RECEIVED = re.compile(rb"^Received:", re.IGNORECASE | re.MULTILINE)
_PARSER = HeaderParser(policy=compat32)


@dataclass(frozen=True, slots=True)
class HeaderSummary:
    from_header: str
    subject: str
    date: str
    message_id: str


def header_section(content: bytes) -> bytes:
    end = content.find(b"\r\n\r\n", 0, MAX_HEADER_SCAN)
    return content[: end + 2] if end >= 0 else content[:MAX_HEADER_SCAN]


def _decoded(value: str | None, limit: int) -> str:
    if not value:
        return ""
    try:
        text = str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeError):
        text = value
    return " ".join(text.split())[:limit]


def summarize(content: bytes) -> HeaderSummary:
    # RFC 6532 allows UTF-8 in header values; other 8-bit octets are shown as U+FFFD.
    headers = _PARSER.parsestr(header_section(content).decode("utf-8", errors="replace"))
    return HeaderSummary(
        from_header=_decoded(headers.get("From"), 512),
        subject=_decoded(headers.get("Subject"), 256),
        date=_decoded(headers.get("Date"), 100),
        message_id=" ".join(str(headers.get("Message-ID", "")).split())[:512],
    )


def count_received(content: bytes) -> int:
    """How many Received headers the message has: its hop count, for loop detection."""
    return len(_RECEIVED.findall(header_section(content)))
