"""IMAP FETCH, sans-IO: the request's attributes read and checked, and one message's FETCH response.

`parse_fetch(arguments)` reads what follows the sequence set of FETCH / UID FETCH (RFC 3501 §6.4.5):
one attribute or a parenthesised list of them; the macros ALL, FAST and FULL (alone); FLAGS,
INTERNALDATE, RFC822, RFC822.HEADER, RFC822.SIZE, RFC822.TEXT, ENVELOPE, BODY, BODYSTRUCTURE, UID,
MODSEQ (RFC 7162), `BODY[section]<start.count>` and `BODY.PEEK[...]`; then the CONDSTORE modifier
`(CHANGEDSINCE n)`, which also asks for MODSEQ. Anything else is a `FetchError` whose message is the
BAD text. `FetchRequest.needs` says what of the message the session must load ("none", "header",
"full"; `needs_for(record)` knows a cached ENVELOPE spares the read) and `sets_seen` whether the
request reads the message (a non-PEEK BODY[...], RFC822, RFC822.TEXT: the session sets \\Seen when
the folder is read-write).

`render_fetch(request, seq, record, view)` writes `* <seq> FETCH (...)\\r\\n`: items in the order
asked (UID first for UID FETCH), an ENVELOPE or BODYSTRUCTURE from the record's cache when it holds
one, sections and RFC822 items always as literals (as Dovecot does, whatever their content),
`<start.count>` applied to the section's octets and answered as `BODY[...]<start>`.

*Security:* attributes are a logged-in client's text; every one is checked against the grammar
(section part numbers, header-field names as atoms or strings, partial numbers within 32 bits) before
anything is read, and the response echoes only what was parsed, through `response.encode`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from postroom.imap.message import MessageView
from postroom.imap.response import encode, flag_list
from postroom.imap.sequence import MAX_NUMBER
from postroom.imap.syntax import Argument, Atom

Needs = Literal["none", "header", "full"]

MAX_ITEMS = 64  # attributes in one FETCH
MAX_PART_DEPTH = 32  # numbers in one section part ("1.2.3...")
MAX_FIELD_NAMES = 256  # header-field names in one HEADER.FIELDS list
MAX_MODSEQ = 9223372036854775807  # mod-sequence-value (RFC 7162 §7)

_MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
_SIMPLE = frozenset(
    ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY", "BODYSTRUCTURE", "UID", "MODSEQ")
)
_RFC822 = {"RFC822": "", "RFC822.HEADER": "HEADER", "RFC822.TEXT": "TEXT"}
_SECTION_ITEM = re.compile(r"(BODY|BODY\.PEEK)\[([^\]]*)\](?:<(\d{1,10})\.(\d{1,10})>)?", re.IGNORECASE)
_PART = re.compile(r"[1-9]\d{0,9}(?:\.[1-9]\d{0,9})*")
_FIELD_NAME = re.compile(r'[^\x00-\x20\x7f-\uffff:(){%*"\\\]]+')  # ftext that an atom may hold
_FIELD_NAMES = re.compile(r'"((?:[^"\\]|\\.)*)"|([^\s"()]+)')
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class FetchError(ValueError):
    """The FETCH attributes are not valid; the message is the BAD reply."""


class FetchRecord(Protocol):
    """What the session knows of a message without its bytes (mailstore `MessageRecord` has it)."""

    @property
    def uid(self) -> int: ...
    @property
    def flags(self) -> frozenset[str]: ...
    @property
    def internal_date(self) -> float: ...
    @property
    def size(self) -> int: ...
    @property
    def modseq(self) -> int: ...
    @property
    def envelope(self) -> bytes | None: ...
    @property
    def bodystructure(self) -> bytes | None: ...


@dataclass(frozen=True, slots=True)
class FetchItem:
    name: str  # FLAGS, UID, ..., RFC822.HEADER, or "BODY[]" for a section
    section: str = ""  # for BODY[...] and RFC822*: the section spec, keywords upper-cased
    peek: bool = True  # False: reading it sets \Seen
    partial: tuple[int, int] | None = None  # (start, count)

    @property
    def is_section(self) -> bool:
        return self.name == "BODY[]"

    @property
    def needs(self) -> Needs:
        if self.name in ("ENVELOPE", "RFC822.HEADER"):
            return "header"
        if self.name in ("BODY", "BODYSTRUCTURE", "RFC822", "RFC822.TEXT"):
            return "full"
        if self.is_section:
            return "header" if self.section.startswith("HEADER") else "full"
        return "none"


@dataclass(frozen=True, slots=True)
class FetchRequest:
    items: tuple[FetchItem, ...]
    changed_since: int | None = None  # CONDSTORE: only messages whose modseq is greater

    @property
    def needs(self) -> Needs:
        """What the session must load for every message, cache or not."""
        return _most(item.needs for item in self.items)

    def needs_for(self, record: FetchRecord) -> Needs:
        """What the session must load for this message: a cached ENVELOPE or BODYSTRUCTURE spares it."""
        return _most(
            "none"
            if (item.name == "ENVELOPE" and record.envelope is not None)
            or (item.name == "BODYSTRUCTURE" and record.bodystructure is not None)
            else item.needs
            for item in self.items
        )

    @property
    def sets_seen(self) -> bool:
        return any(not item.peek for item in self.items)

    @property
    def uses_modseq(self) -> bool:
        """MODSEQ or CHANGEDSINCE: the client uses CONDSTORE (RFC 7162 §3.1 enables it)."""
        return FetchItem("MODSEQ") in self.items


def _most(needs: Iterable[Needs]) -> Needs:
    found = set(needs)
    return "full" if "full" in found else "header" if "header" in found else "none"


def parse_fetch(arguments: Sequence[Argument], *, uid: bool = False) -> FetchRequest:
    """The request from FETCH's arguments after the sequence set (UID FETCH: `uid=True`)."""
    if not arguments:
        raise FetchError("FETCH needs attributes after the sequence set")
    if len(arguments) > 2:
        raise FetchError("FETCH takes one attribute or a parenthesised list, then modifiers")
    wanted = arguments[0]
    names: list[Argument]
    if isinstance(wanted, tuple):
        if not wanted:
            raise FetchError("FETCH needs at least one attribute")
        names = list(wanted)
    elif isinstance(wanted, Atom) and wanted.text.upper() in _MACROS:
        names = [Atom(name) for name in _MACROS[wanted.text.upper()]]
    else:
        names = [wanted]
    if len(names) > MAX_ITEMS:
        raise FetchError(f"FETCH takes at most {MAX_ITEMS} attributes")
    items = [_item(name) for name in names]
    changed_since = _modifiers(arguments[1]) if len(arguments) == 2 else None
    if changed_since is not None:
        items.append(FetchItem("MODSEQ"))
    if uid:
        items.insert(0, FetchItem("UID"))
    unique: list[FetchItem] = []
    for item in items:
        if item not in unique:
            unique.append(item)
    return FetchRequest(tuple(unique), changed_since)


def _item(argument: Argument) -> FetchItem:
    if not isinstance(argument, Atom):
        raise FetchError("Invalid FETCH attribute: expected an attribute name")
    text = argument.text
    upper = text.upper()
    if upper in _SIMPLE:
        return FetchItem(upper)
    if upper in _RFC822:
        return FetchItem(upper, _RFC822[upper], peek=upper == "RFC822.HEADER")
    match = _SECTION_ITEM.fullmatch(text)
    if match is None:
        if upper in _MACROS:
            raise FetchError(f"{upper} is a macro: it cannot be in a list")
        raise FetchError(f"Unknown FETCH attribute {text[:40]!r}")
    partial = None
    if match.group(3) is not None:
        start, count = int(match.group(3)), int(match.group(4))
        if start > MAX_NUMBER or count > MAX_NUMBER or count == 0:
            raise FetchError("Invalid partial range in FETCH")
        partial = (start, count)
    return FetchItem(
        "BODY[]", _section(match.group(2)), peek=match.group(1).upper() == "BODY.PEEK", partial=partial
    )


def _section(spec: str) -> str:
    """A section spec checked against RFC 3501's grammar, keywords upper-cased."""
    head, space, names = spec.partition(" ")
    upper = head.upper()
    part = ""
    text = upper
    match = _PART.match(upper)
    if match:
        part, text = match.group(0), upper[match.end() :]
        if part.count(".") >= MAX_PART_DEPTH:
            raise FetchError("Section part nested too deep")
        if text and (not text.startswith(".") or text == "."):
            raise FetchError(f"Invalid section {spec[:60]!r}")
        text = text[1:]
    allowed = ("", "HEADER", "TEXT", "HEADER.FIELDS", "HEADER.FIELDS.NOT") + (("MIME",) if part else ())
    if text not in allowed:
        raise FetchError(f"Invalid section {spec[:60]!r}")
    if text.startswith("HEADER.FIELDS"):
        if not space:
            raise FetchError("HEADER.FIELDS needs a list of header names")
        fields = _field_list(names)
        return f"{part + '.' if part else ''}{text} ({' '.join(fields)})"
    if space:
        raise FetchError(f"Invalid section {spec[:60]!r}")
    return f"{part}.{text}" if part and text else part or text


def _field_list(names: str) -> list[str]:
    names = names.strip()
    if not (names.startswith("(") and names.endswith(")")):
        raise FetchError("HEADER.FIELDS needs a parenthesised list of header names")
    inner = names[1:-1].strip()
    fields: list[str] = []
    position = 0
    while position < len(inner):
        match = _FIELD_NAMES.match(inner, position)
        if match is None:
            raise FetchError("Invalid header name in HEADER.FIELDS")
        name = match.group(2) if match.group(2) is not None else re.sub(r"\\(.)", r"\1", match.group(1))
        if not _FIELD_NAME.fullmatch(name):
            raise FetchError("Invalid header name in HEADER.FIELDS")
        fields.append(name)
        position = match.end()
        while position < len(inner) and inner[position] == " ":
            position += 1
    if not fields:
        raise FetchError("HEADER.FIELDS needs at least one header name")
    if len(fields) > MAX_FIELD_NAMES:
        raise FetchError(f"HEADER.FIELDS takes at most {MAX_FIELD_NAMES} names")
    return fields


def _modifiers(argument: Argument) -> int:
    if not isinstance(argument, tuple) or len(argument) != 2:
        raise FetchError("FETCH modifiers must be (CHANGEDSINCE <mod-sequence>)")
    name, value = argument
    if not isinstance(name, Atom) or name.text.upper() != "CHANGEDSINCE":
        raise FetchError("Unknown FETCH modifier: only CHANGEDSINCE is supported")
    if not isinstance(value, Atom) or not value.text.isascii() or not value.text.isdigit():
        raise FetchError("CHANGEDSINCE needs a mod-sequence number")
    if len(value.text) > 19 or not 0 < int(value.text) <= MAX_MODSEQ:
        raise FetchError("CHANGEDSINCE needs a mod-sequence number")
    return int(value.text)


def internal_date(epoch: float) -> str:
    """INTERNALDATE as IMAP writes it: "17-Jul-1996 02:44:25 +0000" (kept in UTC)."""
    moment = time.gmtime(epoch)
    return (
        f"{moment.tm_mday:02d}-{MONTHS[moment.tm_mon - 1]}-{moment.tm_year:04d} "
        f"{moment.tm_hour:02d}:{moment.tm_min:02d}:{moment.tm_sec:02d} +0000"
    )


def render_fetch(
    request: FetchRequest,
    seq: int,
    record: FetchRecord,
    view: MessageView | None,
    *,
    uid: bool = False,
    flags_changed: bool = False,
) -> bytes:
    """`* <seq> FETCH (...)`: `view` is needed when `request.needs_for(record)` is not "none";
    `uid` (UID FETCH) answers UID first whether asked or not (RFC 3501 §6.4.8); `flags_changed` adds
    FLAGS when reading set \\Seen and FLAGS was not asked (RFC 3501 §6.4.5)."""
    out = bytearray(b"* %d FETCH (" % seq)
    items = request.items
    if uid and FetchItem("UID") not in items:
        items = (FetchItem("UID"), *items)
    if flags_changed and FetchItem("FLAGS") not in items:
        items = (*items, FetchItem("FLAGS"))
    for index, item in enumerate(items):
        if index:
            out += b" "
        out += _render_item(item, record, view)
    out += b")\r\n"
    return bytes(out)


def _render_item(item: FetchItem, record: FetchRecord, view: MessageView | None) -> bytes:
    name = item.name
    if name == "UID":
        return b"UID %d" % record.uid
    if name == "FLAGS":
        return b"FLAGS " + encode(flag_list(record.flags))
    if name == "INTERNALDATE":
        return b"INTERNALDATE " + encode(internal_date(record.internal_date))
    if name == "RFC822.SIZE":
        return b"RFC822.SIZE %d" % record.size
    if name == "MODSEQ":
        return b"MODSEQ (%d)" % record.modseq
    if name == "ENVELOPE" and record.envelope is not None:
        return b"ENVELOPE " + record.envelope
    if name == "BODYSTRUCTURE" and record.bodystructure is not None:
        return b"BODYSTRUCTURE " + record.bodystructure
    if view is None:
        raise ValueError(f"FETCH {name} needs the message's bytes")
    if name == "ENVELOPE":
        return b"ENVELOPE " + view.envelope()
    if name == "BODYSTRUCTURE":
        return b"BODYSTRUCTURE " + view.bodystructure(True)
    if name == "BODY":
        return b"BODY " + view.bodystructure(False)
    octets = view.section(item.section)
    label = name.encode() if name != "BODY[]" else b"BODY[" + item.section.encode() + b"]"
    if item.partial is not None:
        start, count = item.partial
        octets = octets[start : start + count]
        label += b"<%d>" % start
    return label + b" {%d}\r\n" % len(octets) + octets
