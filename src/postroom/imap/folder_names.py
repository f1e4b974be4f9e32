"""IMAP folder names: modified UTF-7 (RFC 3501 §5.1.3) and LIST pattern matching (RFC 3501 §6.3.8).

`encode_name("Entwürfe")` gives the name as IMAP writes it ("Entw&APw-rfe"); `decode_name` reads a
client's name back to text and refuses what RFC 3501 does not allow (a ValueError whose message says
why): a character outside printable ASCII, an `&` without its `-`, base64 outside the modified
alphabet or with bits left over, a printable ASCII character or a lone surrogate encoded in base64,
and control characters in the decoded name (a name is shown to people and written in logs).

`list_matcher(reference, pattern)` returns a test over decoded names as IMAP shows them ("INBOX",
"Projects/2026"): `*` matches anything, `%` anything but the hierarchy separator "/", the reference
is joined in front of the pattern, and INBOX is matched in any case (RFC 3501 §5.1).

Why by hand: the stdlib's "utf-7" codec is RFC 2152's, which differs (`+` not `&`, `/` not `,`,
optional `-`, printable characters may be encoded); and a pattern turned into a regex backtracks
exponentially on `*%*%*%*x`. The matcher here simulates the pattern as a set of positions, one pass
over the name: O(len(pattern) * len(name)) whatever the pattern, and the pattern length is bounded.

*Security:* names and patterns are a logged-in client's text; every fault is a ValueError.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable

SEPARATOR = "/"
INBOX = "INBOX"
MAX_PATTERN = 1024  # characters of a LIST reference and pattern together

_BASE64 = re.compile(r"[A-Za-z0-9+,]*")


def encode_name(name: str) -> str:
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            octets = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(octets).decode("ascii").rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for char in name:
        if " " <= char <= "~":
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    return "".join(out)


def decode_name(name: str) -> str:
    out: list[str] = []
    position = 0
    while position < len(name):
        char = name[position]
        if not " " <= char <= "~":
            raise ValueError(
                "A folder name must be modified UTF-7: a character outside printable ASCII was sent as is"
            )
        if char != "&":
            out.append(char)
            position += 1
            continue
        end = name.find("-", position + 1)
        if end < 0:
            raise ValueError("A folder name's '&' must be closed by '-' (modified UTF-7)")
        out.append(_decode_base64(name[position + 1 : end]) if end > position + 1 else "&")
        position = end + 1
    decoded = "".join(out)
    if any(ord(char) < 0x20 or 0x7F <= ord(char) < 0xA0 for char in decoded):
        raise ValueError("A folder name cannot hold control characters")
    return decoded


def _decode_base64(text: str) -> str:
    if not _BASE64.fullmatch(text):
        raise ValueError("A folder name's modified UTF-7 holds a character outside its base64 alphabet")
    bits = len(text) * 6
    if bits % 16 >= 6:
        raise ValueError("A folder name's modified UTF-7 ends in the middle of a character")
    padded = text.replace(",", "/") + "=" * (-len(text) % 4)
    try:
        octets = base64.b64decode(padded, validate=True)
    except binascii.Error as error:
        raise ValueError("A folder name's modified UTF-7 is not valid base64") from error
    # Bits past the last whole character must be zero (RFC 2152, which modified UTF-7 follows).
    if bits % 16 and base64.b64encode(octets).rstrip(b"=").replace(b"/", b",") != text.encode():
        raise ValueError("A folder name's modified UTF-7 has bits left over")
    try:
        decoded = octets.decode("utf-16-be")
    except UnicodeDecodeError as error:
        raise ValueError("A folder name's modified UTF-7 holds a broken UTF-16 surrogate") from error
    if any(" " <= char <= "~" for char in decoded):
        raise ValueError("A folder name's modified UTF-7 encodes a printable ASCII character")
    return decoded


def list_matcher(reference: str, pattern: str) -> Callable[[str], bool]:
    """A test of decoded names against a LIST reference and pattern (both decoded)."""
    joined = reference + pattern
    if len(joined) > MAX_PATTERN:
        raise ValueError(f"A LIST reference and pattern may be at most {MAX_PATTERN} characters")
    tokens = _tokens(_inbox_upper(joined))

    def matches(name: str) -> bool:
        return _match(tokens, _inbox_upper(name))

    return matches


def _inbox_upper(name: str) -> str:
    """INBOX is one name in any case (RFC 3501 §5.1): its first level is compared as "INBOX"."""
    first, separator, rest = name.partition(SEPARATOR)
    return INBOX + separator + rest if first.upper() == INBOX else name


def _tokens(pattern: str) -> str:
    """The pattern with runs of wildcards collapsed: a run holding `*` is one `*`, else one `%`."""
    out: list[str] = []
    for char in pattern:
        if char in "*%" and out and out[-1] in "*%":
            if char == "*":
                out[-1] = "*"
            continue
        out.append(char)
    return "".join(out)


def _match(pattern: str, name: str) -> bool:
    """Whether `name` matches: the pattern run as a set of positions, one step per character."""
    positions = _closure({0}, pattern)
    for char in name:
        advanced: set[int] = set()
        for index in positions:
            if index == len(pattern):
                continue
            token = pattern[index]
            if token == "*" or (token == "%" and char != SEPARATOR):
                advanced.add(index)  # the wildcard takes the character and stays
            elif token == char:
                advanced.add(index + 1)
        if not advanced:
            return False
        positions = _closure(advanced, pattern)
    return len(pattern) in positions


def _closure(positions: set[int], pattern: str) -> set[int]:
    """Add the positions past wildcards, which may match nothing."""
    closed = set(positions)
    for index in sorted(positions):
        while index < len(pattern) and pattern[index] in "*%":
            index += 1
            closed.add(index)
    return closed
