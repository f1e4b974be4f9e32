"""A bounded MIME walk of a message: its header fields, its leaf parts decoded, its text.

Protection reads a message through this one function (`parse_message`): the attachment filter and
the built-in engines look at `parts`, the built-in scorer at `headers` and `text`, quarantine preview
at both. Every dimension is bounded by `MimeLimits` (nesting depth, entities, header octets, line
length, parameter octets, decoded octets, text); past a bound the walk stops descending or collecting,
says so in `problems` and, where parts or part bodies were left out, sets `truncated`. The parts it
did see are still returned.

Guarantees: `parse_message` never raises on any input (a message that cannot be parsed at all comes
back with `problems` and `truncated`; the pipeline's policy decides what happens to it, it is never
dropped); it never executes or renders anything; its memory is bounded by the limits, not by the
input's structure (the message is read in place, by offsets; only decoded bodies are copies, within
`max_decoded_octets`); its time is linear in the message for every shape of input: each nesting level
scans its own region once with `bytes.find` and regular expressions that cannot backtrack, so the
whole walk reads the message at most `max_depth + 1` times.

What it reads, and how leniently (the permissive readings of mail clients, so that what a client
would show as an attachment is also what protection sees): header blocks end at the first empty line
or at the first line that is not a field; CRLF, LF and bare CR line ends; boundaries matched as RFC
2046 says (at a line start, transport padding allowed, near-misses skipped); a multipart whose
boundary never occurs is read as one text leaf, one without its close delimiter ends at its parent's
end; RFC 2231 parameter continuations and charsets, RFC 2047 encoded words in file names; base64
decoded past junk characters and across padding, quoted-printable, uuencode (also a "begin 644 name"
block inside a text body, which some clients show as an attachment); message/rfc822 parts are walked
as messages, even when (against RFC 2046) they are base64-encoded; an epilogue that starts with a
Content-* field is read as one more part. Where clients disagree (duplicate Content-* fields or
parameters, a nested multipart that reuses its parent's boundary, delimiters after the close
delimiter), the reading that shows the most wins: a multipart type with a boundary that occurs, an
attachment over inline, a decoding over none, every declared file name, every part. Each of these
is recorded in `problems`.

Security: the input is a stranger's message. Nothing in it is trusted: header values are decoded as
UTF-8 with errors replaced, charsets that interpret their input (punycode, idna, the escape codecs)
are refused, transfer encodings are decoded leniently and within the budget, file names are only
compared, never used as paths.
"""

from __future__ import annotations

import binascii
import codecs
import collections
import contextlib
import functools
import html
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = ["MimeLimits", "MimePart", "ParsedMessage", "parse_message"]


@dataclass(frozen=True, slots=True)
class MimeLimits:
    max_depth: int = 20  # multipart and message/rfc822 nesting
    max_parts: int = 500  # entities the walk visits: leaf parts and multipart/message containers
    max_header_octets: int = 262_144  # of the message's header fields that are kept (`headers`)
    max_line_octets: int = 16_384  # of one physical header line; a longer one is cut
    max_parameter_octets: int = 16_384  # of a Content-Type or Content-Disposition value read for parameters
    max_decoded_octets: int = 52_428_800  # all decoded part bodies together
    max_text_chars: int = 200_000  # of `ParsedMessage.text`


@dataclass(frozen=True, slots=True)
class MimePart:
    content_type: str  # lower case, e.g. "application/zip"; "text/plain" when absent or invalid
    filename: str  # from Content-Disposition filename= or Content-Type name=, "" when none
    disposition: str  # "attachment", "inline" or ""
    payload: bytes  # the decoded body (base64 / quoted-printable / uuencode undone)
    depth: int  # nesting depth of the part (0: the message itself)
    charset: str = ""  # the charset parameter, lower case, "" when none
    # Every distinct name the part declares (filename*, filename, name*, name): clients disagree on
    # which one wins, so the attachment filter checks them all. `filename` is the first.
    filenames: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    headers: tuple[tuple[str, str], ...]  # the top-level header fields, in order, values unfolded
    parts: tuple[MimePart, ...]
    text: str  # the text/plain parts, then the text/html parts with tags removed, bounded
    problems: tuple[str, ...] = field(default=())  # what was malformed or cut at a limit
    truncated: bool = False  # a limit left parts, or part of a body, out of `parts`

    def header(self, name: str) -> str | None:
        """The first header field `name` (any case), or None."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)

    def header_all(self, name: str) -> list[str]:
        wanted = name.lower()
        return [value for key, value in self.headers if key.lower() == wanted]


def parse_message(message: bytes, limits: MimeLimits | None = None) -> ParsedMessage:
    """Walk `message` within `limits`; never raises."""
    try:
        return _Walk(message, limits or _DEFAULT).run()
    except Exception as error:  # a last guard: a fault here must never drop or wave through mail
        return ParsedMessage((), (), "", (f"unparseable: {type(error).__name__}",), truncated=True)


_DEFAULT = MimeLimits()
_MAX_PROBLEMS = 32  # distinct problems recorded; a hostile message can make thousands of one kind
_MAX_CONTENT_FIELDS = 16  # Content-* fields read from one entity's header before the rest is ignored
_MAX_SECTIONS = 1000  # RFC 2231 continuation sections of one parameter
_MAX_MARKUP_OCTETS = 4 * 1024 * 1024  # of one text/html part read for `text`
_MAX_BOUNDARIES = 4  # distinct boundaries tried on one multipart body (each reads it once)
_UU_BEGIN = re.compile(rb"^begin [0-7]{3,4} ([^\r\n]{1,255})\r?$", re.M)
_SHORT_BOUNDARY = 200  # octets; RFC 2046 allows 70, some senders use more, a few thousands
_LINE_SPACE = frozenset(b" \t\r\n")
_MAX_BASE64_RUNS = 10_000  # padded runs of one base64 body decoded each on its own

# A run of header fields: a name (no colon, space or control; 8-bit octets are let through, as lenient
# clients do) and its continuation lines. The possessive loops never backtrack: linear in the run.
_FIELDS = re.compile(rb"(?:[!-9;-~\x80-\xff]++[ \t]*+:[^\n]*+(?:\n|\Z)(?:[ \t][^\n]*+(?:\n|\Z))*+)*+")
_CONTINUATIONS = re.compile(rb"(?:[ \t][^\n]*+(?:\n|\Z))*+")
_BLANK_LINE = re.compile(rb"\n\r?\n")
_BARE_CR = re.compile(rb"\r(?!\n)")
_CONTENT_FIELD = re.compile(
    rb"^content-(type|disposition|transfer-encoding)[ \t]*+:([^\n]*+(?:\n[ \t][^\n]*+)*+)", re.I | re.M
)
_LINE_BREAK = re.compile(r"\r?\n")
_FIELD_NAMES = {
    "type": "Content-Type",
    "disposition": "Content-Disposition",
    "transfer-encoding": "Content-Transfer-Encoding",
}
_PARAMETER = re.compile(r'([^\s=;"]++)\s*+(?:=\s*+("(?:[^"\\]|\\.)*+"?|[^;]*+))?')
_SECTION = re.compile(r"([^*]+)\*(\d{1,9})?(\*)?")
_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+")
_ENCODED_WORD = re.compile(r"=\?([^?\s]{1,64})\?([bBqQ])\?([^?\s]*)\?=(?:\s+(?==\?))?")
_QUOTED_PAIR = re.compile(r"\\(.)", re.S)
_B64_KEEP = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/= \t\r\n"
_B64_JUNK = bytes(sorted(set(range(256)) - set(_B64_KEEP)))
# (an opening, its end, the whole construct) of what HTML text leaves out, in the order they are removed
_MARKUP_BLOCKS = (
    (re.compile("<!--"), re.compile("-->"), re.compile("<!--.*?-->", re.S)),
    (
        re.compile(r"<(?:script|style)\b", re.I),
        re.compile(r"</(?:script|style)[^>]*>", re.I),
        re.compile(r"<(?:script|style)\b.*?</(?:script|style)[^>]*>", re.I | re.S),
    ),
    (re.compile("<"), re.compile(">"), re.compile("<[^>]*>")),
)
_DISPOSITION_NAMES = ("filename*", "filename", "name*", "name")
_TYPE_NAMES = ("name*", "name", "filename*", "filename")
_MESSAGE_TYPES = frozenset({"message/rfc822", "message/global"})


@dataclass(slots=True)
class _Entity:
    """One entity to visit: a region of a buffer (the message, or a decoded message/rfc822 body)."""

    data: bytes
    start: int
    end: int
    depth: int
    default_type: str = "text/plain"
    top: bool = False


@dataclass(slots=True)
class _Content:
    """The Content-* fields of one entity, read for every interpretation a client might choose."""

    type: str = "text/plain"
    boundaries: tuple[str, ...] = ()  # every boundary declared, the chosen Content-Type's first
    charset: str = ""
    disposition: str = ""
    names: tuple[str, ...] = ()
    encoding: str = ""


class _Walk:
    """The walk of one message: an explicit stack of entities (no recursion), shared budgets."""

    def __init__(self, message: bytes, limits: MimeLimits) -> None:
        self.limits = limits
        self.problems: dict[str, None] = {}
        self.truncated = False
        self.visited = 0
        self.budget = limits.max_decoded_octets
        self.parts: list[MimePart] = []
        self.headers: tuple[tuple[str, str], ...] = ()
        self.message = self._line_ends(message)

    def problem(self, text: str, *, cut: bool = False) -> None:
        if len(self.problems) < _MAX_PROBLEMS:
            self.problems.setdefault(text, None)
        self.truncated = self.truncated or cut

    def _line_ends(self, message: bytes) -> bytes:
        # Bare CR line ends (old Mac mail, or smuggling): read as CRLF, as lenient clients do.
        if b"\r" in message and _BARE_CR.search(message):
            self.problem("bare CR line ends")
            return _BARE_CR.sub(b"\r\n", message)
        return message

    def run(self) -> ParsedMessage:
        data = self.message
        start = 0
        if data.startswith(b"From "):  # an mbox separator line, not a field
            newline = data.find(b"\n")
            start = len(data) if newline < 0 else newline + 1
        stack = [_Entity(data, start, len(data), 0, top=True)]
        while stack:
            entity = stack.pop()
            if self.visited >= self.limits.max_parts:
                self.problem(f"more than {self.limits.max_parts} parts", cut=True)
                break
            self.visited += 1
            stack.extend(reversed(self._visit(entity)))
        return ParsedMessage(
            self.headers, tuple(self.parts), self._text(), tuple(self.problems), self.truncated
        )

    # -- one entity

    def _visit(self, entity: _Entity) -> list[_Entity]:
        """Read an entity's header; collect it as a part, or return its children."""
        data, end = entity.data, entity.end
        fields_start, fields_end, body = self._header_end(data, entity.start, end)
        if entity.top:
            self.headers = self._top_fields(data, fields_start, fields_end)
        content = self._content(data, fields_start, fields_end, entity.default_type)
        children_depth = entity.depth + 1
        if content.type.startswith("multipart/"):
            if not content.boundaries:
                self.problem("multipart without a boundary")
            # Duplicate boundary parameters or Content-Type fields: the first boundary that occurs wins.
            for boundary in content.boundaries[:_MAX_BOUNDARIES]:
                regions = self._split(data, body, end, boundary.encode("utf-8", "replace"))
                if regions is not None:
                    if children_depth > self.limits.max_depth:
                        self.problem(f"nesting deeper than {self.limits.max_depth}", cut=bool(regions))
                        return []
                    child_type = "message/rfc822" if content.type == "multipart/digest" else "text/plain"
                    return [_Entity(data, s, e, children_depth, child_type) for s, e in regions]
            if content.boundaries:
                self.problem("multipart without parts")
            content.type = "text/plain"  # read what is there as text, so that it is still scanned
        elif content.type in _MESSAGE_TYPES:
            if children_depth > self.limits.max_depth:
                self.problem(f"nesting deeper than {self.limits.max_depth}", cut=True)
                return []
            if content.encoding in ("", "7bit", "8bit", "binary"):
                return [_Entity(data, body, end, children_depth)]
            self.problem("message/rfc822 with a transfer encoding")  # not allowed (RFC 2046), but seen
            inner = self._decode(data, body, end, content.encoding)
            return [_Entity(inner, 0, len(inner), children_depth)]
        payload = self._decode(data, body, end, content.encoding)
        filename = content.names[0] if content.names else ""
        self.parts.append(
            MimePart(
                content.type,
                filename,
                content.disposition,
                payload,
                entity.depth,
                content.charset,
                content.names,
            )
        )
        if content.type == "text/plain" and b"begin " in payload:
            self._uuencoded(payload, entity.depth)
        return []

    def _uuencoded(self, text: bytes, depth: int) -> None:
        """uuencoded files inside a text body ("begin 644 name" ... "end"): some clients show them as
        attachments, so they are parts too (each counts against `max_parts`)."""
        for match in _UU_BEGIN.finditer(text):
            if self.visited >= self.limits.max_parts:
                self.problem(f"more than {self.limits.max_parts} parts", cut=True)
                return
            self.visited += 1
            close = text.find(b"\nend", match.end())
            block = text[match.end() : close if close >= 0 else len(text)]
            payload = _uudecode(block, self.budget)
            if len(payload) > self.budget:
                self.problem("decoded parts over the limit", cut=True)
                payload = payload[: self.budget]
            self.budget -= len(payload)
            name = match.group(1).decode("utf-8", "replace").strip()
            self.parts.append(
                MimePart("application/octet-stream", name, "attachment", payload, depth, "", (name,))
            )

    def _header_end(self, data: bytes, start: int, end: int) -> tuple[int, int, int]:
        """Where the entity's fields start and end, and where its body starts. Fields are read within
        `max_header_octets`; a longer header block is cut (its body starts after the next empty line)."""
        leading = _CONTINUATIONS.match(data, start, min(end, start + self.limits.max_header_octets))
        if leading and leading.end() > start:
            self.problem("first header line is a continuation")
            start = leading.end()
        cap = min(end, start + self.limits.max_header_octets)
        match = _FIELDS.match(data, start, cap)
        fields_end = match.end() if match else start
        if (
            cap < end
            and data[fields_end : fields_end + 1] not in (b"\r", b"\n")
            and data.find(b"\n", fields_end, cap) < 0
        ):
            # The line at `fields_end` runs past the limit: fields past it are not read (a Content-Type
            # among them would be missed).
            self.problem("header block over the limit", cut=True)
            fields_end = data.rfind(b"\n", start, fields_end) + 1 or start
            blank = _BLANK_LINE.search(data, max(fields_end - 1, start), end)
            return start, fields_end, blank.end() if blank else end
        if fields_end < end and data[fields_end] not in (0x0D, 0x0A):
            self.problem("header block ended by a line that is not a field")
        return start, fields_end, _after_line(data, fields_end, end)

    def _top_fields(self, data: bytes, start: int, end: int) -> tuple[tuple[str, str], ...]:
        fields: list[tuple[str, str]] = []
        name = ""
        lines: list[str] = []
        for raw in data[start:end].split(b"\n"):
            if len(raw) > self.limits.max_line_octets:
                self.problem("header line over the limit")
                raw = raw[: self.limits.max_line_octets]
            line = raw.decode("utf-8", "replace").rstrip("\r")
            if line[:1] in (" ", "\t"):
                lines.append(line)
                continue
            if name:
                fields.append((name, "".join(lines)))
            if not line:
                name = ""
                continue
            name, _, first = line.partition(":")
            name = name.rstrip(" \t")
            lines = [first.lstrip(" \t")]
        if name:
            fields.append((name, "".join(lines)))
        return tuple(fields)

    def _content(self, data: bytes, start: int, end: int, default_type: str) -> _Content:
        """The entity's Content-Type, Content-Disposition and Content-Transfer-Encoding. A field given
        twice is a problem, and is read the way that shows the most: a multipart type with a boundary
        over another type, an attachment over inline, a decoding over none, and every name."""
        fields: dict[str, list[str]] = {"type": [], "disposition": [], "transfer-encoding": []}
        for count, match in enumerate(_CONTENT_FIELD.finditer(data, start, end)):
            if count >= _MAX_CONTENT_FIELDS:
                self.problem("too many Content-* fields")
                break
            kind = match.group(1).decode("ascii").lower()
            if fields[kind]:
                self.problem(f"duplicate {_FIELD_NAMES[kind]}")
            raw = match.group(2)
            if len(raw) > self.limits.max_parameter_octets:
                # Its parameters (a file name) are cut: what the part is called is not fully known.
                self.problem(f"{_FIELD_NAMES[kind]} over the limit", cut=True)
                raw = raw[: self.limits.max_parameter_octets]
            fields[kind].append(_LINE_BREAK.sub("", raw.decode("utf-8", "replace")).strip())
        content = _Content(type=default_type)
        types = [self._parameters(value) for value in fields["type"]]
        valid = [(value.lower(), params) for value, params in types if _TYPE.fullmatch(value.lower())]
        if len(valid) < len(types):
            self.problem("invalid Content-Type")
        chosen = next(
            (
                (value, params)
                for value, params in valid
                if value.startswith("multipart/") and _boundaries(params)
            ),
            valid[0] if valid else None,
        )
        if chosen is not None:
            content.type = chosen[0]
            content.charset = _first(chosen[1], "charset")[:64].lower()
            others = [params for _, params in valid if params is not chosen[1]]
            content.boundaries = tuple(
                dict.fromkeys(b for params in (chosen[1], *others) for b in _boundaries(params))
            )
        dispositions = [self._parameters(value) for value in fields["disposition"]]
        kinds = {value.lower() for value, _ in dispositions}
        if kinds:
            # RFC 2183: an unknown disposition is treated as an attachment.
            content.disposition = "inline" if kinds == {"inline"} else "attachment"
        # filename= belongs to Content-Disposition and name= to Content-Type, but clients read either in both.
        names = [v for _, params in dispositions for k, v in params if k in _DISPOSITION_NAMES]
        names += [v for _, params in types for k, v in params if k in _TYPE_NAMES]
        content.names = tuple(dict.fromkeys(name for name in names if name))
        encodings = [value.lower() for value in fields["transfer-encoding"]]
        content.encoding = next((e for e in encodings if _decodes(e)), encodings[0] if encodings else "")
        return content

    def _parameters(self, value: str) -> tuple[str, list[tuple[str, str]]]:
        """`type; name=value; ...` as the value and its parameters in order, duplicates kept (names
        lower case, RFC 2231 sections joined under `name*`, plain values with RFC 2047 words decoded)."""
        head, _, rest = value.partition(";")
        plain: list[tuple[str, str]] = []
        sections: dict[str, dict[int, tuple[bool, str]]] = {}
        for match in _PARAMETER.finditer(rest):
            name = match.group(1).lower()
            raw = match.group(2) or ""
            if raw.startswith('"'):
                raw = _QUOTED_PAIR.sub(r"\1", raw[1:-1] if raw.endswith('"') and len(raw) > 1 else raw[1:])
            else:
                raw = raw.strip()
            section = _SECTION.fullmatch(name)
            if section is None:
                plain.append((name, _decode_words(raw) if "=?" in raw else raw))
                continue
            base, index, star = section.group(1), section.group(2), section.group(3)
            number = int(index) if index is not None else 0
            if number >= _MAX_SECTIONS:
                self.problem("parameter continuation out of range")
                continue
            parts = sections.setdefault(base, {})
            if number in parts:
                self.problem("duplicate parameter")
                continue
            parts[number] = (index is None or star is not None, raw)
        if len({name for name, _ in plain}) < len(plain):
            self.problem("duplicate parameter")
        joined = [(base + "*", _join_sections(parts)) for base, parts in sections.items()]
        return head.strip(), joined + plain

    # -- multipart bodies

    def _split(self, data: bytes, start: int, end: int, boundary: bytes) -> list[tuple[int, int]] | None:
        """The regions of a multipart body's parts, or None when it has none: no delimiter occurs, or
        the first is the close delimiter (the body is then read as text, so that it is still scanned)."""
        room = self.limits.max_parts - self.visited
        delimiters = _delimiters(data, start, end, boundary)
        opening = next(delimiters, None)
        if opening is None or opening[2]:
            return None
        regions: list[tuple[int, int]] = []
        part_start = _next_line(data, opening[1], end)
        closed = False
        for found, after, close in delimiters:
            if closed:
                # Delimiters after the close delimiter: a nested multipart that reused its parent's
                # boundary (clients read it as nested). Read on, so that no part is left unscanned.
                self.problem("delimiter after the close delimiter")
            part_end = found
            if part_end > part_start and data[part_end - 1] == 0x0D:
                part_end -= 1
            # A part may be empty: its delimiter line then follows the previous one directly.
            regions.append((part_start, max(part_start, part_end)))
            if len(regions) > room:
                self.problem(f"more than {self.limits.max_parts} parts", cut=True)
                return regions[: max(room, 0)]
            closed = close
            part_start = _next_line(data, after, end)
        if not closed:
            self.problem("multipart without its close delimiter")
            regions.append((part_start, end))
        elif _CONTENT_FIELD.match(data, part_start, min(end, part_start + 1024)):
            # An epilogue that starts like a part: RFC 2046 says to ignore it, a lax client may show it.
            self.problem("an epilogue that looks like a part")
            regions.append((part_start, end))
        return regions[: max(room, 0)]

    # -- bodies

    def _decode(self, data: bytes, start: int, end: int, encoding: str) -> bytes:
        """A body decoded by its transfer encoding, within the decoded-octets budget."""
        budget = self.budget
        if "base64" in encoding:
            encoded = data[start:end]
            raw = encoded.translate(None, _B64_JUNK)
            if len(raw) != len(encoded):
                self.problem("base64 with invalid characters")
            payload = self._base64(raw, budget)
        elif "quoted-printable" in encoding:
            payload = binascii.a2b_qp(data[start : min(end, start + budget + 1)])
        elif "uu" in encoding:
            payload = _uudecode(data[start:end], budget + 1)
        else:
            if encoding not in ("", "7bit", "8bit", "binary"):
                self.problem("unknown transfer encoding")
            payload = data[start : min(end, start + budget + 1)]
        if len(payload) > budget:
            self.problem("decoded parts over the limit", cut=True)
            payload = payload[:budget]
        self.budget -= len(payload)
        return payload

    def _base64(self, raw: bytes, budget: int) -> bytes:
        """Base64 without junk, line breaks still in: binascii reads it directly unless padding sits
        in the middle (two encoded runs joined) or the end is ragged; then run by run."""
        if len(raw) <= budget // 3 * 4 + 4 and b"=" not in raw.rstrip(b" \t\r\n="):
            with contextlib.suppress(binascii.Error):
                return binascii.a2b_base64(raw)
        raw = raw.translate(None, b" \t\r\n")
        if b"=" in raw.rstrip(b"="):
            self.problem("base64 padding inside the body")
        return _base64(raw[: budget // 3 * 4 + 4])

    def _text(self) -> str:
        limit = self.limits.max_text_chars
        chunks: list[str] = []
        size = 0
        for kind in ("text/plain", "text/html"):
            for part in self.parts:
                if part.content_type != kind or part.disposition == "attachment" or size >= limit:
                    continue
                codec = _codec(part.charset)
                if kind == "text/plain":
                    text = part.payload[: (limit - size) * 4].decode(codec, "replace")
                else:
                    markup = part.payload[:_MAX_MARKUP_OCTETS].decode(codec, "replace")
                    text = _markup_text(markup, limit - size)
                chunks.append(text)
                size += len(text) + 1
        return "\n".join(chunks)[:limit]


def _delimiters(data: bytes, start: int, end: int, boundary: bytes) -> Iterator[tuple[int, int, bool]]:
    """The delimiter lines of `boundary` in a body: (where the line's preceding LF is, or `start`; the
    end of `--boundary` or `--boundary--`; whether it is the close delimiter), in order.

    RFC 2046 §5.1.1 says "it is sufficient that the boundary appear in its entirety following the
    CRLF", but senders nest boundaries that extend their parent's (`b` and `b-1`), so the boundary
    must be followed by `--` (the close delimiter), white space or the line end; the rest of the line
    is not part of a body. Short boundaries are found by a compiled pattern (near-misses cost nothing
    in Python); a long one by `find` (a near-miss then costs at least the boundary's length)."""
    if len(boundary) <= _SHORT_BOUNDARY:
        first, later = _delimiter_patterns(boundary)
        opening = first.match(data, start, end)
        if opening is not None:
            yield start, opening.end(), opening.group(1) is not None
        for match in later.finditer(data, start, end):
            yield match.start(), match.end(), match.group(1) is not None
        return
    line = b"--" + boundary
    at = start
    while (found := data.find(line, at, end)) >= 0:
        # The boundary holds no line break, so the next delimiter cannot start inside this match.
        at = found + len(line)
        close = data.startswith(b"--", at, end)
        after = at + 2 if close else at
        if (found == start or data[found - 1] == 0x0A) and (after >= end or data[after] in _LINE_SPACE):
            yield max(found - 1, start), after, close


@functools.lru_cache(maxsize=128)
def _delimiter_patterns(boundary: bytes) -> tuple[re.Pattern[bytes], re.Pattern[bytes]]:
    line = b"--" + re.escape(boundary) + rb"(--)?(?=[ \t\r\n]|\Z)"
    return re.compile(line), re.compile(b"\n" + line)


def _first(params: list[tuple[str, str]], name: str) -> str:
    """A parameter's value: its RFC 2231 form (`name*`) when present, else the first plain one."""
    return next((v for k, v in params if k == name + "*"), None) or next(
        (v for k, v in params if k == name), ""
    )


def _boundaries(params: list[tuple[str, str]]) -> list[str]:
    return [v for k, v in params if k in ("boundary*", "boundary") and v]


def _decodes(encoding: str) -> bool:
    return "base64" in encoding or "quoted-printable" in encoding or "uu" in encoding


def _next_line(data: bytes, at: int, end: int) -> int:
    """The start of the line after the one `at` is in (or `end`)."""
    newline = data.find(b"\n", at, end)
    return end if newline < 0 else newline + 1


def _after_line(data: bytes, at: int, end: int) -> int:
    """The offset after the line end at `at` (CRLF or LF), or `at` when there is none."""
    if data.startswith(b"\r\n", at, end):
        return at + 2
    if data.startswith(b"\n", at, end):
        return at + 1
    return at


def _base64(raw: bytes) -> bytes:
    """Decode base64 past padding in the middle (each padded run on its own, as lenient clients do;
    binascii alone stops at the first) and past a ragged end."""
    if b"=" not in raw.rstrip(b"="):
        return _base64_run(raw.rstrip(b"="))
    out = []
    at = 0
    for _ in range(_MAX_BASE64_RUNS):
        padding = raw.find(b"=", at)
        out.append(_base64_run(raw[at:] if padding < 0 else raw[at:padding]))
        if padding < 0:
            return b"".join(out)
        at = padding + 1
    out.append(_base64_run(raw[at:].replace(b"=", b"")))  # hostile: the rest as one run
    return b"".join(out)


def _base64_run(run: bytes) -> bytes:
    """One run of base64 characters without padding; a last lone character carries no octet."""
    usable = len(run) - len(run) % 4
    tail = run[usable:]
    if len(tail) >= 2:
        return binascii.a2b_base64(run[:usable] + tail + b"=" * (4 - len(tail)))
    return binascii.a2b_base64(run[:usable]) if usable else b""


def _uudecode(body: bytes, budget: int) -> bytes:
    """uuencode: the lines after `begin` (or all of them when there is none) up to `end`."""
    lines = body.splitlines()
    begin = next((i for i, line in enumerate(lines) if line.startswith(b"begin ")), -1)
    out = bytearray()
    for line in lines[begin + 1 :]:
        stripped = line.strip()
        if stripped == b"end" or len(out) > budget:
            break
        if stripped in (b"", b"`"):
            continue
        try:
            out += binascii.a2b_uu(line)
        except binascii.Error:
            # Some encoders pad badly: decode by the length character only (as Python's uu module does).
            try:
                out += binascii.a2b_uu(line[: (((line[0] - 32) & 63) * 4 + 5) // 3])
            except binascii.Error:
                continue
    return bytes(out)


def _join_sections(parts: dict[int, tuple[bool, str]]) -> str:
    """RFC 2231: sections in order; the encoded ones percent-decoded in the first one's charset."""
    charset = "utf-8"
    octets = bytearray()
    for position, number in enumerate(sorted(parts)):
        encoded, text = parts[number]
        if encoded and position == 0 and text.count("'") >= 2:
            charset, _language, text = text.split("'", 2)
        octets += urllib.parse.unquote_to_bytes(text) if encoded else text.encode("utf-8", "replace")
    return octets.decode(_codec(charset), "replace")


def _decode_words(text: str) -> str:
    """RFC 2047 encoded words in a parameter value (mail clients write file names so)."""

    def word(match: re.Match[str]) -> str:
        charset, kind, encoded = match.group(1), match.group(2).upper(), match.group(3)
        try:
            if kind == "B":
                raw = _base64(encoded.encode("ascii", "replace"))
            else:
                raw = binascii.a2b_qp(encoded.replace("_", " ").encode("ascii", "replace"))
        except (binascii.Error, ValueError):
            return match.group(0)
        return raw.decode(_codec(charset.partition("*")[0]), "replace")

    return _ENCODED_WORD.sub(word, text)


def _codec(charset: str) -> str:
    """A text codec for a declared charset: UTF-8 when unknown, or one that interprets its input."""
    return _lookup(charset.strip().strip('"').lower()[:64] or "utf-8")


@functools.lru_cache(maxsize=256)
def _lookup(charset: str) -> str:
    try:
        info = codecs.lookup(charset)
    except (LookupError, ValueError):
        return "utf-8"
    name = info.name
    if not getattr(info, "_is_text_encoding", True) or name in ("punycode", "idna") or "escape" in name:
        return "utf-8"
    return name


def _markup_text(markup: str, limit: int) -> str:
    """The text of HTML: comments, script and style blocks and tags dropped, entities decoded.

    Regular expressions in C, kept linear: a lazy match that finds no end scans to the end of the
    text, and many such starts would make it quadratic, so the text is first cut where the first
    construct opens that has no end after it (all that follows is inside it)."""
    for opening, closing, pattern in _MARKUP_BLOCKS:
        last_close = collections.deque(closing.finditer(markup), maxlen=1)
        unclosed = opening.search(markup, last_close[0].end() if last_close else 0)
        if unclosed is not None:
            markup = markup[: unclosed.start()]
        markup = pattern.sub(" ", markup)
    return html.unescape(markup)[:limit]
