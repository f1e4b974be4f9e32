"""Facts read from a message's header section: the summary that trace and mailstore list.

Only the header section is read (up to the first empty line, bounded by `MAX_HEADER_SCAN`), with one
compiled pattern over it rather than the standard library's full parser, which costs more than the
rest of a transaction; folded lines are unfolded, the first occurrence of each field wins, and
encoded words (RFC 2047) are decoded with the standard library. A message with a malformed header
still yields a summary (empty fields), never an exception.

Security: the input is untrusted message content; parsing is bounded and the results are plain
strings cut to the lengths the stores keep.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.header import decode_header, make_header

MAX_HEADER_SCAN = 256 * 1024
_RECEIVED = re.compile(rb"^Received:", re.IGNORECASE | re.MULTILINE)
_FIELD = re.compile(
    rb"^(from|subject|date|message-id)[ \t]*:[ \t]*(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE
)
_FOLD = re.compile(rb"\r?\n(?=[ \t])")


@dataclass(frozen=True, slots=True)
class HeaderSummary:
    from_header: str
    subject: str
    date: str
    message_id: str


def header_section(content: bytes) -> bytes:
    if content.startswith(b"\r\n"):
        return b""  # an empty header section: everything is body
    end = content.find(b"\r\n\r\n", 0, MAX_HEADER_SCAN)
    return content[: end + 2] if end >= 0 else content[:MAX_HEADER_SCAN]


def _decoded(value: str | None, limit: int) -> str:
    if not value:
        return ""
    text = value
    if "=?" in value:
        try:
            text = str(make_header(decode_header(value)))
        except (ValueError, LookupError, UnicodeError):
            text = value
    return " ".join(text.split())[:limit]


def summarize(content: bytes) -> HeaderSummary:
    found: dict[bytes, str] = {}
    for match in _FIELD.finditer(header_section(content)):
        name = match.group(1).lower()
        if name not in found:
            # RFC 6532 allows UTF-8 in header values; other 8-bit octets are shown as U+FFFD.
            found[name] = _FOLD.sub(b"", match.group(2)).decode("utf-8", "replace")
    return HeaderSummary(
        from_header=_decoded(found.get(b"from"), 512),
        subject=_decoded(found.get(b"subject"), 256),
        date=_decoded(found.get(b"date"), 100),
        message_id=" ".join(found.get(b"message-id", "").split())[:512],
    )


def count_received(content: bytes) -> int:
    """How many Received headers the message has: its hop count, for loop detection."""
    return len(_RECEIVED.findall(header_section(content)))
