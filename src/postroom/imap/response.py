"""IMAP server responses, sans-IO: values in, response bytes out (RFC 3501 §7, §9).

`encode(value)` writes one value of a server response: None as NIL, an int as digits, a str (as
UTF-8) or bytes as a quoted string when it can be one (short, 7-bit, no CR, LF, NUL) and otherwise as
a literal `{n}\\r\\n...`, a list or tuple as a parenthesised list, an `Atom` as its text (a flag, a
keyword, a fetch item name) and `Raw` octets as they are (text the server built, such as a cached
ENVELOPE). `tagged`, `untagged`, `untagged_status` and `continuation` make whole response lines.

*Security:* client text reaches responses (folder names, flags, a command's tag, search strings);
none of it can end a response line early and inject another: a string with CR, LF or NUL is always a
literal (its octets counted, so the client reads them as data), an atom with a character atoms may
not hold is written as a string instead, and free response text (`text`, `code`) has every control
and 8-bit character replaced by a space or "?". Only `Raw` is written unchecked: it is for text this
room built itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from postroom.imap.syntax import Atom

MAX_QUOTED = 1024  # octets of the longest string written quoted; longer strings go as literals

_ATOM_OCTETS = frozenset(range(0x21, 0x7F)) - frozenset(b'(){ "%*')  # atoms here: \flags, BODY[..]<..>
_NOT_QUOTABLE = re.compile(rb"[^\x01-\x09\x0b\x0c\x0e-\x7f]")  # NUL, CR, LF, 8-bit
_TEXT_TABLE = bytes(
    (octet if 0x20 <= octet < 0x7F else 0x20 if octet < 0x80 else 0x3F) for octet in range(256)
)


@dataclass(frozen=True, slots=True)
class Raw:
    """Octets this room built, written as they are (never client text)."""

    octets: bytes


Value = None | int | str | bytes | Atom | Raw | list["Value"] | tuple["Value", ...]


def encode(value: Value) -> bytes:
    """One response value as IMAP text (see the module docstring)."""
    out = bytearray()
    _encode(value, out)
    return bytes(out)


def _encode(value: Value, out: bytearray) -> None:
    if isinstance(value, bytes):
        _string(value, out)
    elif value is None:
        out += b"NIL"
    elif isinstance(value, bool):
        raise TypeError("a bool is not an IMAP value")
    elif isinstance(value, int):
        if value < 0:
            raise ValueError("IMAP numbers are unsigned")
        out += b"%d" % value
    elif isinstance(value, str):
        _string(value.encode("utf-8"), out)
    elif isinstance(value, Atom):
        octets = value.text.encode("utf-8")
        if octets and _ATOM_OCTETS.issuperset(octets) and octets.upper() != b"NIL":
            out += octets
        else:
            _string(octets, out)
    elif isinstance(value, Raw):
        out += value.octets
    else:
        out += b"("
        for index, item in enumerate(value):
            if index:
                out += b" "
            _encode(item, out)
        out += b")"


def _string(octets: bytes, out: bytearray) -> None:
    out += string(octets)


def string(octets: bytes) -> bytes:
    """A string value: quoted when it can be, else a literal (`encode` for bytes, without the walk)."""
    if len(octets) > MAX_QUOTED or _NOT_QUOTABLE.search(octets):
        return b"{%d}\r\n" % len(octets) + octets
    if b'"' in octets or b"\\" in octets:
        octets = octets.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
    return b'"' + octets + b'"'


def text(value: str) -> bytes:
    """Free response text (resp-text): one line of 7-bit printable characters."""
    return value.encode("utf-8", "replace").translate(_TEXT_TABLE)


def _status_line(prefix: bytes, status: str, value: str, code: str | None) -> bytes:
    line = bytearray(prefix + text(status))
    if code:
        line += b" [" + text(code).replace(b"]", b" ") + b"]"
    line += b" " + text(value or status)  # resp-text needs text after the code (RFC 3501 §9)
    return bytes(line) + b"\r\n"


def tagged(tag: str, status: str, value: str, code: str | None = None) -> bytes:
    """`<tag> OK|NO|BAD [code] text` (a tag that is not one is written as `*`)."""
    tag_octets = text(tag)
    if not tag_octets or not _ATOM_OCTETS.issuperset(tag_octets) or b"+" in tag_octets:
        tag_octets = b"*"
    return _status_line(tag_octets + b" ", status, value, code)


def untagged_status(status: str, value: str, code: str | None = None) -> bytes:
    """`* OK|NO|BAD|BYE|PREAUTH [code] text`."""
    return _status_line(b"* ", status, value, code)


def untagged(*values: Value) -> bytes:
    """`* v1 v2 ...`: e.g. `untagged(3, Atom("EXISTS"))`, `untagged(Atom("FLAGS"), (Atom("\\\\Seen"),))`."""
    return b"* " + b" ".join(encode(value) for value in values) + b"\r\n"


def continuation(value: str = "Ready") -> bytes:
    """`+ text`: the continuation request (a literal may follow, IDLE runs, AUTHENTICATE goes on)."""
    return b"+ " + text(value) + b"\r\n"


def flag_list(flags: Iterable[str]) -> tuple[Atom, ...]:
    """Flags as a list value, in a stable order (system flags first, as stored)."""
    return tuple(Atom(flag) for flag in sorted(flags, key=lambda flag: (not flag.startswith("\\"), flag)))
