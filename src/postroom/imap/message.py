"""One message's bytes as IMAP sees them: ENVELOPE, BODYSTRUCTURE, BODY[section], decoded headers.

`MessageView(raw)` reads a stored message (prefix + blob) lazily: `envelope()` reads only the header
section; `bodystructure(extended)`, `section(spec)` and `body_text()` read the MIME tree once and keep
it. Results are IMAP text (`envelope`, `bodystructure`) or octets of the message (`section`), always
exact slices of `raw`: nothing is re-encoded, so sizes and line counts are those of the stored bytes.

- ENVELOPE (RFC 3501 §7.4.2): date, subject, from, sender, reply-to, to, cc, bcc, in-reply-to,
  message-id; values unfolded and not decoded (RFC 2047 words stay as written), NIL when absent;
  sender and reply-to default to from; groups as `(NIL NIL "name" NIL) ... (NIL NIL NIL NIL)`.
- BODYSTRUCTURE / BODY (RFC 3501 §7.4.2, RFC 2045-2046): types and parameters as written, default
  `text/plain; charset=us-ascii` (message/rfc822 inside multipart/digest), sizes in octets and lines
  of the part's body, message/rfc822 parts with their envelope and structure; with `extended`, MD5,
  disposition, language and location (multiparts: parameters, disposition, language, location).
- `section("1.2.HEADER")` etc.: HEADER, HEADER.FIELDS (..), HEADER.FIELDS.NOT (..), TEXT, MIME and
  part numbers; a part that does not exist is b"" (as Dovecot answers).
- `header_value(name)` and `body_text()` for SEARCH: RFC 2047 words and transfer encodings decoded,
  text as UTF-8 (other charsets through Python's codecs; unknown ones as UTF-8 with U+FFFD).

Never raises on any input: garbled MIME reads as the nearest sensible structure (a multipart without a
boundary or without parts holds one empty text/plain part, as Dovecot shows it). Bounds, each named:
`MAX_DEPTH` levels of multipart/message nesting (deeper parts are leaves), `MAX_PARTS` parts per
message (later boundaries are body text), `MAX_FIELDS` header fields read per header, `MAX_ADDRESSES`
addresses per field, `MAX_PARAMETERS` parameters per field, `MAX_SEARCH_TEXT` characters of decoded
body searched.

Why by hand and not `email`: the stdlib parser copies and re-encodes the message (sizes and sections
must be the stored octets), raises or "fixes" on garbled input, has no IMAP ENVELOPE or BODYSTRUCTURE,
and costs far more than a FETCH 1:* ENVELOPE over 10,000 messages can pay (benchmarked in bench/).
The scanning here works on offsets into `raw` with bytes.find, never copying a body.

*Security:* the bytes are anyone's who can send mail; see the bounds above. Client-chosen text never
reaches a response unencoded: every string goes through `response.encode` (a quoted string or a
literal).
"""

from __future__ import annotations

import binascii
import re

from postroom.imap.response import encode, string

MAX_DEPTH = 16  # levels of multipart / message/rfc822 nesting read as structure
MAX_PARTS = 1000  # MIME parts per message
MAX_FIELDS = 1000  # header fields read per header section
MAX_ADDRESSES = 1000  # addresses per address field
MAX_PARAMETERS = 64  # parameters per Content-Type / Content-Disposition
MAX_SEARCH_TEXT = 4 * 1024 * 1024  # characters of decoded body text one search reads per message

_ENCODED_WORD = re.compile(rb"=\?([^?\s]{1,75})\?([QqBb])\?([^?\s]*)\?=")
_WORD_GAP = re.compile(rb"(\?=)[ \t\r\n]+(?==\?)")
_FOLD = re.compile(rb"\r?\n")
_FOLDING = b" \t\r"  # a line starting with one of these continues the field before
_WHITESPACE = b" \t\r\n"


class _Entity:
    """A header section and its body, as offsets into the message: the message itself or a part."""

    __slots__ = (
        "body",
        "children",
        "end",
        "fields",
        "message",
        "params",
        "start",
        "subtype",
        "type",
    )

    def __init__(self, raw: bytes, start: int, end: int) -> None:
        self.start = start
        self.end = end
        self.body, self.fields = _scan_header(raw, start, end)
        self.type = b"text"
        self.subtype = b"plain"
        self.params: list[tuple[bytes, bytes]] = []
        self.children: list[_Entity] = []
        self.message: _Entity | None = None  # the message a message/rfc822 part holds

    def field(self, raw: bytes, name: bytes) -> bytes | None:
        """The first field of this name, unfolded and stripped; None when absent."""
        for field_name, start, end in self.fields:
            if field_name == name:
                return _unfold(raw[start + len(name) : end].lstrip(b" \t")[1:])
        return None


class MessageView:
    """A parsed view of one message's bytes (see the module docstring)."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self._root: _Entity | None = None
        self._tree_read = False
        self._parts = 0
        self._texts: dict[str, str] = {}  # decoded text for SEARCH, read once per message

    # --- header -----------------------------------------------------------------------------------
    @property
    def _header(self) -> _Entity:
        if self._root is None:
            self._root = _Entity(self.raw, 0, len(self.raw))
        return self._root

    def envelope(self) -> bytes:
        return _envelope(self.raw, self._header)

    def header_value(self, name: str) -> list[str]:
        """Every field of this name, unfolded and decoded (RFC 2047, UTF-8), in order."""
        wanted = name.lower().encode("ascii", "replace")
        raw = self.raw
        return [
            decode_words(_unfold(raw[start + len(wanted) : end].lstrip(b" \t")[1:]))
            for field_name, start, end in self._header.fields
            if field_name == wanted
        ]

    def header_text(self, *, folded: bool = False) -> str:
        """The whole header section decoded (for SEARCH TEXT); `folded`: case-folded. Kept once read."""
        key = "header folded" if folded else "header"
        if key not in self._texts:
            if folded:
                self._texts[key] = self.header_text().casefold()
            else:
                raw = self.raw
                fields = self._header.fields
                self._texts[key] = "\n".join(
                    decode_words(_unfold(raw[start:end])) for _, start, end in fields
                )
        return self._texts[key]

    # --- MIME tree --------------------------------------------------------------------------------
    @property
    def _tree(self) -> _Entity:
        root = self._header
        if not self._tree_read:
            self._tree_read = True
            self._parts = 1
            self._read_structure(root, 0, digest=False)
        return root

    def _read_structure(self, entity: _Entity, depth: int, *, digest: bool) -> None:
        raw = self.raw
        content_type = entity.field(raw, b"content-type")
        if content_type is not None:
            kind, params = _parameters(content_type)
            main, slash, sub = kind.partition(b"/")
            if slash and _is_token(main) and _is_token(sub):
                entity.type, entity.subtype, entity.params = main, sub, params
        elif digest:
            entity.type, entity.subtype = b"message", b"rfc822"
        lower_type, lower_subtype = entity.type.lower(), entity.subtype.lower()
        nested = lower_type == b"multipart" or (lower_type, lower_subtype) == (b"message", b"rfc822")
        if nested and depth >= MAX_DEPTH:
            # Too deep to read as structure: the part is shown as text (its bytes unchanged).
            entity.type, entity.subtype, entity.params = b"text", b"plain", []
            return
        if lower_type == b"multipart":
            boundary = _parameter(entity.params, b"boundary")
            spans = _split(raw, entity.body, entity.end, boundary) if boundary else []
            for start, end in spans:
                if self._parts >= MAX_PARTS:
                    break
                self._parts += 1
                child = _Entity(raw, start, end)
                entity.children.append(child)
                self._read_structure(child, depth + 1, digest=lower_subtype == b"digest")
        elif nested:
            # Always read, whatever the part count: the grammar needs a message/rfc822 part's envelope.
            self._parts += 1
            inner = _Entity(raw, entity.body, entity.end)
            entity.message = inner
            self._read_structure(inner, depth + 1, digest=False)

    def bodystructure(self, extended: bool) -> bytes:
        out = bytearray()
        _structure(self.raw, self._tree, extended, out)
        return bytes(out)

    def section(self, spec: str) -> bytes:
        """The octets of BODY[spec] (spec without brackets, upper or lower case); b"" for none."""
        raw = self.raw
        head, _, names = spec.partition(" ")
        pieces = head.upper().split(".") if head else []
        numbers: list[int] = []
        while pieces and pieces[0].isdigit():
            number = int(pieces.pop(0)) if len(pieces[0]) < 6 else 0
            if number < 1:
                return b""
            numbers.append(number)
        text = ".".join(pieces)
        entity = self._tree
        stayed = False
        for index, number in enumerate(numbers):
            found = _part(entity, number, top=index == 0)
            # A single-part body is its own part 1, once: `1.1` of a leaf is the leaf, `1.1.1` none.
            if found is None or (found is entity and stayed):
                return b""
            stayed, entity = found is entity, found
        if text == "MIME":
            return raw[entity.start : entity.body] if numbers else b""
        if numbers and text:
            # HEADER, TEXT and HEADER.FIELDS of a part are those of the message it holds (RFC 3501 §6.4.5)
            if entity.message is None:
                return b""
            entity = entity.message
        if text == "":
            return raw[entity.body : entity.end] if numbers else raw
        if text == "HEADER":
            return raw[entity.start : entity.body]
        if text == "TEXT":
            return raw[entity.body : entity.end]
        if text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            wanted = {name.lower().encode("ascii", "replace") for name in _field_names(names)}
            keep = text == "HEADER.FIELDS"
            chosen = b"".join(
                raw[start:end] for name, start, end in entity.fields if (name in wanted) == keep
            )
            return chosen + b"\r\n"
        return b""

    def body_text(self, *, folded: bool = False) -> str:
        """The decoded text of the message's text parts (for SEARCH BODY), bounded; `folded`:
        case-folded. Kept once read, so that many keys on one message decode it once."""
        key = "body folded" if folded else "body"
        if key not in self._texts:
            if folded:
                self._texts[key] = self.body_text().casefold()
            else:
                pieces: list[str] = []
                _collect_text(self.raw, self._tree, pieces, [MAX_SEARCH_TEXT])
                self._texts[key] = "\n".join(pieces)
        return self._texts[key]


# --- header scanning ----------------------------------------------------------------------------
def _scan_header(raw: bytes, start: int, end: int) -> tuple[int, list[tuple[bytes, int, int]]]:
    """The body's offset and the header fields (lower-case name, start, end) of [start, end)."""
    if raw.startswith(b"\r\n", start, end):
        return start + 2, []
    if raw.startswith(b"\n", start, end):
        return start + 1, []
    crlf = raw.find(b"\n\r\n", start, end)
    lf = raw.find(b"\n\n", start, crlf if crlf >= 0 else end)
    if lf >= 0:
        header_end, body = lf + 1, lf + 2
    elif crlf >= 0:
        header_end, body = crlf + 1, crlf + 3
    else:
        header_end = body = end
    # A field starts at a line that does not start with white space and holds a colon; it runs to the
    # next one (its folded lines, and a line without a colon, go with it).
    fields: list[tuple[bytes, int, int]] = []
    position = start
    for line in raw[start:header_end].split(b"\n"):
        colon = line.find(b":")
        if colon > 0 and line[0] not in _FOLDING:
            if fields:
                name, field_start, _ = fields[-1]
                fields[-1] = (name, field_start, position)
            if len(fields) == MAX_FIELDS:
                return body, fields
            fields.append((line[:colon].rstrip(b" \t").lower(), position, header_end))
        position += len(line) + 1
    return body, fields


def _unfold(value: bytes) -> bytes:
    return _FOLD.sub(b"", value).strip(_WHITESPACE)


# --- ENVELOPE -----------------------------------------------------------------------------------
_ENVELOPE_FIELDS = frozenset(
    (
        b"date",
        b"subject",
        b"from",
        b"sender",
        b"reply-to",
        b"to",
        b"cc",
        b"bcc",
        b"in-reply-to",
        b"message-id",
    )
)


def _envelope(raw: bytes, entity: _Entity) -> bytes:
    values: dict[bytes, bytes] = {}
    for name, start, end in entity.fields:
        if name in _ENVELOPE_FIELDS and name not in values:
            values[name] = _unfold(raw[start + len(name) : end].lstrip(b" \t")[1:])

    def nstring(name: bytes) -> bytes:
        value = values.get(name)
        return b"NIL" if value is None else _nstring(value)

    def addresses(name: bytes) -> bytes:
        value = values.get(name)
        found = parse_addresses(value) if value else []
        if not found:
            return b"NIL"
        return b"(" + b"".join(b"(%s %s %s %s)" % tuple(map(_nstring, address)) for address in found) + b")"

    from_ = addresses(b"from")
    # Sender and Reply-To absent or empty are From (RFC 3501 §7.4.2).
    sender = addresses(b"sender") if b"sender" in values else from_
    reply_to = addresses(b"reply-to") if b"reply-to" in values else from_
    return b"(%s)" % b" ".join(
        [
            nstring(b"date"),
            nstring(b"subject"),
            from_,
            from_ if sender == b"NIL" else sender,
            from_ if reply_to == b"NIL" else reply_to,
            addresses(b"to"),
            addresses(b"cc"),
            addresses(b"bcc"),
            nstring(b"in-reply-to"),
            nstring(b"message-id"),
        ]
    )


Address = tuple[bytes | None, bytes | None, bytes | None, bytes | None]  # name, adl, mailbox, host
# A host of NIL means a group (RFC 3501 §7.4.2): an address without its mailbox or domain names the
# missing piece instead, with Dovecot's words, so that clients never read it as a group.
MISSING_MAILBOX = b"MISSING_MAILBOX"
MISSING_DOMAIN = b"MISSING_DOMAIN"
SYNTAX_ERROR = b"SYNTAX_ERROR"


_TOKEN = re.compile(
    rb'[ \t]+|"((?:[^"\\]|\\.)*)"?|(\[[^\]]*\]?)|([()<>@,;:\\\[\]])|([^()<>@,;:\\"\[\] \t]+)', re.DOTALL
)
_QUOTED_PAIR = re.compile(rb"\\(.)", re.DOTALL)


def _tokens(value: bytes) -> list[tuple[str, bytes]]:
    """RFC 5322 lexical tokens: ("atom"|"quoted"|"comment"|"special", text); dots stay in atoms."""
    found: list[tuple[str, bytes]] = []
    position, length = 0, len(value)
    while position < length:
        if value[position] == 0x28:  # a comment, nested: counted by hand
            depth, start = 1, position + 1
            position += 1
            while position < length and depth:
                octet = value[position]
                if octet == 0x5C:
                    position += 1
                elif octet == 0x28:
                    depth += 1
                elif octet == 0x29:
                    depth -= 1
                position += 1
            found.append(("comment", value[start : position - 1 if not depth else position].strip()))
            continue
        match = _TOKEN.match(value, position)
        if match is None:  # not reached: the alternatives cover every octet
            break
        position = match.end()
        quoted, literal, special, atom = match.groups()
        if atom is not None:
            found.append(("atom", atom))
        elif quoted is not None:
            found.append(("quoted", _QUOTED_PAIR.sub(rb"\1", quoted) if b"\\" in quoted else quoted))
        elif literal is not None:
            found.append(("atom", literal))
        elif special is not None:
            found.append(("special", special))
    return found


# The common field, `Name <a@b>, "Last, First" <c@d>, e@f`, read by one pattern; anything else
# (comments, groups, routes, escapes, missing parts) by the tokenizer below, which gives the same.
_PART = rb'[^<>@\s",;:()\[\]\\]+'
_SIMPLE_ADDRESS = re.compile(
    rb'[ \t]*(?:(?:"([^"\\]*)"|([A-Za-z0-9!#$%&\'*+/=?^_`{|}~.\- \t]*?))[ \t]*<('
    + _PART
    + rb")@("
    + _PART
    + rb")>|("
    + _PART
    + rb")@("
    + _PART
    + rb"))[ \t]*(?:,|$)"
)


def _simple_addresses(value: bytes) -> list[Address] | None:
    found: list[Address] = []
    position, length = 0, len(value)
    while position < length:
        match = _SIMPLE_ADDRESS.match(value, position)
        if match is None or match.end() == position:
            return None
        quoted, phrase, local, domain, bare_local, bare_domain = match.groups()
        if local is not None:
            name = quoted if quoted is not None else b" ".join(phrase.split())
            found.append((name or None, None, local, domain))
        else:
            found.append((None, None, bare_local, bare_domain))
        position = match.end()
        if value.endswith(b",", 0, position) and not value[position:].strip(b" \t"):
            return None  # a trailing comma: the general reader decides
    return found if len(found) <= MAX_ADDRESSES else None


def parse_addresses(value: bytes) -> list[Address]:
    """An address-list field value as IMAP ENVELOPE addresses (groups as start and end markers)."""
    simple = _simple_addresses(value)
    return simple if simple is not None else _addresses_by_tokens(value)


def _addresses_by_tokens(value: bytes) -> list[Address]:
    tokens = _tokens(value)
    found: list[Address] = []
    position, count = 0, len(tokens)
    in_group = False
    while position < count and len(found) < MAX_ADDRESSES:
        kind, text = tokens[position]
        if kind == "special" and text == b",":
            position += 1
            continue
        if kind == "special" and text == b";":
            if in_group:
                found.append((None, None, None, None))
                in_group = False
            position += 1
            continue
        words: list[bytes] = []
        comment: bytes | None = None
        while position < count:
            kind, text = tokens[position]
            if kind == "special" and text in (b"<", b":", b",", b";", b"@"):
                break
            if kind == "comment":
                comment = text or comment
            elif kind != "special":
                words.append(text)
            position += 1
        stop = tokens[position][1] if position < count else b""
        if stop == b":" and not in_group:
            found.append((None, None, b" ".join(words), None))
            in_group = True
            position += 1
            continue
        if stop == b"<":
            position += 1
            route: list[bytes] = []
            local: list[bytes] = []
            domain: list[bytes] = []
            target = local
            closed = False
            while position < count:
                kind, text = tokens[position]
                if kind == "special" and text in (b",", b";") and target is not route:
                    break  # an unclosed <: the next address starts here
                position += 1
                if kind == "special" and text == b">":
                    closed = True
                    break
                if kind == "special" and text == b"@":
                    if not local and target is not domain:
                        target = route
                        route.append(b"@")
                    else:
                        target = domain
                elif kind == "special" and text == b":" and target is route:
                    target = local
                elif kind == "special" and text == b"," and target is route:
                    route.append(b",")
                elif kind in ("atom", "quoted"):
                    target.append(text)
            # a trailing comment names nobody: the display name is the phrase
            while position < count and tokens[position][0] == "comment":
                position += 1
            name = b" ".join(words) or None
            host = (b"".join(domain) or MISSING_DOMAIN) if closed else SYNTAX_ERROR
            found.append((name, b"".join(route) or None, b"".join(local) or MISSING_MAILBOX, host))
            continue
        local_part = b"".join(words)
        host = b""
        if stop == b"@":
            position += 1
            domain_words: list[bytes] = []
            while position < count:
                kind, text = tokens[position]
                if kind == "special" and text in (b",", b";"):
                    break
                if kind == "comment":
                    comment = text or comment
                elif kind == "atom":
                    domain_words.append(text)
                position += 1
            host = b"".join(domain_words)
        elif stop not in (b",", b";", b""):
            position += 1  # a stray special: skip it
        if local_part or host:
            found.append((comment, None, local_part or MISSING_MAILBOX, host or MISSING_DOMAIN))
    if in_group and len(found) < MAX_ADDRESSES:
        found.append((None, None, None, None))
    return found


# --- BODYSTRUCTURE ------------------------------------------------------------------------------
def _split_parameters(value: bytes) -> list[bytes]:
    """A field's `;`-separated pieces, with quoted strings unescaped (kept in quotes) and comments
    dropped."""
    pieces: list[bytes] = []
    current = bytearray()
    position, length = 0, len(value)
    while position < length and len(pieces) <= MAX_PARAMETERS:
        octet = value[position]
        if octet == 0x22:
            close = position + 1
            quoted = bytearray()
            while close < length and value[close] != 0x22:
                if value[close] == 0x5C and close + 1 < length:
                    close += 1
                quoted.append(value[close])
                close += 1
            current += b'"' + quoted + b'"'
            position = close + 1
            continue
        if octet == 0x28:
            depth = 1
            position += 1
            while position < length and depth:
                depth += {0x28: 1, 0x29: -1}.get(value[position], 0)
                position += 1
            continue
        if octet == 0x3B:
            pieces.append(bytes(current))
            current = bytearray()
        else:
            current.append(octet)
        position += 1
    pieces.append(bytes(current))
    return pieces


def _parameters(value: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """`type/subtype; a=b; c="d"` as (b"type/subtype", [(b"a", b"b"), (b"c", b"d")])."""
    if b'"' in value or b"(" in value:
        pieces = _split_parameters(value)
    else:  # the common field: no quoted string, no comment
        pieces = value.split(b";", MAX_PARAMETERS + 1)[: MAX_PARAMETERS + 1]
    kind = pieces[0].strip(_WHITESPACE).replace(b" ", b"").replace(b"\t", b"")
    params: list[tuple[bytes, bytes]] = []
    for piece in pieces[1 : MAX_PARAMETERS + 1]:
        name, equals, text = piece.partition(b"=")
        name = name.strip(_WHITESPACE)
        if not equals or not name or b'"' in name:
            continue
        text = text.strip(_WHITESPACE)
        if text.startswith(b'"') and text.endswith(b'"') and len(text) >= 2:
            text = text[1:-1]
        params.append((name, text))
    return kind, _continued(params)


_SEGMENT = re.compile(rb"(.+?)\*(\d{1,3})(\*?)")


def _continued(params: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """RFC 2231 continuations (`name*0*=...; name*1*=...`) joined into one `name*` (or `name`) value,
    at the first segment's place, as Dovecot shows them; the value stays encoded."""
    if not any(b"*" in name for name, _ in params):
        return params
    segments: dict[bytes, list[tuple[int, bool, bytes]]] = {}
    order: list[tuple[bytes, bytes] | bytes] = []  # a parameter, or the base name of a continued one
    for name, value in params:
        match = _SEGMENT.fullmatch(name)
        if match is None:
            order.append((name, value))
            continue
        base = match.group(1)
        if base.lower() not in segments:
            segments[base.lower()] = []
            order.append(base)
        segments[base.lower()].append((int(match.group(2)), bool(match.group(3)), value))
    result: list[tuple[bytes, bytes]] = []
    for entry in order:
        if isinstance(entry, tuple):
            result.append(entry)
            continue
        pieces = sorted(segments[entry.lower()], key=lambda piece: piece[0])
        extended = any(piece[1] for piece in pieces)
        result.append((entry + b"*" if extended else entry, b"".join(piece[2] for piece in pieces)))
    return result


def _parameter(params: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in params:
        if key.lower() == name:
            return value
    return None


_MIME_TOKEN = re.compile(rb"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")  # RFC 2045 token


def _is_token(text: bytes) -> bool:
    return _MIME_TOKEN.fullmatch(text) is not None


def _split(raw: bytes, start: int, end: int, boundary: bytes) -> list[tuple[int, int]]:
    """The parts of a multipart body [start, end): (start, end) of each, delimiters excluded."""
    delimiter = b"--" + boundary
    spans: list[tuple[int, int]] = []
    part_start = -1
    search = start
    while True:
        if search == start and raw.startswith(delimiter, start, end):
            found = start
        else:
            at = raw.find(b"\n" + delimiter, max(search - 1, start), end)
            if at < 0:
                break
            found = at + 1
        after = found + len(delimiter)
        newline = raw.find(b"\n", after, end)
        line_end = end if newline < 0 else newline + 1
        rest = raw[after:line_end]
        closing = rest.startswith(b"--")
        if not closing and rest.strip(_WHITESPACE):
            search = line_end
            continue  # a longer boundary that starts with this one: not a delimiter
        if part_start >= 0:
            part_end = found - 1 if found > start and raw[found - 1] == 0x0A else found
            if part_end > part_start and raw[part_end - 1] == 0x0D:
                part_end -= 1
            spans.append((part_start, max(part_end, part_start)))
            if len(spans) >= MAX_PARTS:
                return spans
        if closing:
            return spans
        part_start = line_end
        search = line_end
    if part_start >= 0:
        spans.append((part_start, end))
    return spans


def _part(entity: _Entity, number: int, *, top: bool) -> _Entity | None:
    """Part `number` inside `entity` (the message when `top`, else a part), per RFC 3501 §6.4.5;
    part 1 of a single-part body is that body."""
    container = entity.message if not top and entity.message is not None else entity
    if container.type.lower() == b"multipart":
        return container.children[number - 1] if number <= len(container.children) else None
    return container if number == 1 else None  # a single-part body is part 1


def _field_names(names: str) -> list[str]:
    return names.strip().strip("()").split()


def _structure(raw: bytes, entity: _Entity, extended: bool, out: bytearray) -> None:
    if entity.type.lower() == b"multipart":
        out += b"("
        if entity.children:
            for child in entity.children:
                _structure(raw, child, extended, out)
        else:
            out += b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0'
            out += b" NIL NIL NIL NIL)" if extended else b")"
        out += b" " + encode(entity.subtype)
        if extended:
            out += b" " + _params(entity.params)
            out += b" " + _disposition(raw, entity)
            out += b" " + _language(raw, entity)
            out += b" " + _nstring(entity.field(raw, b"content-location"))
        out += b")"
        return
    params = entity.params
    if entity.type.lower() == b"text" and _parameter(params, b"charset") is None and not params:
        params = [(b"charset", b"us-ascii")]
    encoding = entity.field(raw, b"content-transfer-encoding")
    size = entity.end - entity.body
    out += b"(" + encode(entity.type) + b" " + encode(entity.subtype)
    out += b" " + _params(params)
    out += b" " + _nstring(entity.field(raw, b"content-id"))
    out += b" " + _nstring(entity.field(raw, b"content-description"))
    out += b" " + encode(encoding if encoding else b"7bit")
    out += b" %d" % size
    if entity.message is not None:
        out += b" " + _envelope(raw, entity.message) + b" "
        _structure(raw, entity.message, extended, out)
        out += b" %d" % _lines(raw, entity.body, entity.end)
    elif entity.type.lower() == b"text":
        out += b" %d" % _lines(raw, entity.body, entity.end)
    if extended:
        out += b" " + _nstring(entity.field(raw, b"content-md5"))
        out += b" " + _disposition(raw, entity)
        out += b" " + _language(raw, entity)
        out += b" " + _nstring(entity.field(raw, b"content-location"))
    out += b")"


def _lines(raw: bytes, start: int, end: int) -> int:
    """Line ends in the body (an unterminated last line is not counted, as Dovecot counts)."""
    return raw.count(b"\n", start, end)


def _nstring(value: bytes | None) -> bytes:
    return b"NIL" if value is None else string(value)


def _params(params: list[tuple[bytes, bytes]]) -> bytes:
    if not params:
        return b"NIL"
    return encode([item for pair in params for item in pair])


def _disposition(raw: bytes, entity: _Entity) -> bytes:
    value = entity.field(raw, b"content-disposition")
    if not value:
        return b"NIL"
    kind, params = _parameters(value)
    if not kind:
        return b"NIL"
    return b"(" + encode(kind) + b" " + _params(params) + b")"


def _language(raw: bytes, entity: _Entity) -> bytes:
    value = entity.field(raw, b"content-language")
    if value is None:
        return b"NIL"
    tags = tuple(tag for tag in re.split(rb"[\s,]+", value) if tag)[:MAX_PARAMETERS]
    return encode(tags) if tags else b"NIL"


# --- text for SEARCH ----------------------------------------------------------------------------
def decode_words(value: bytes) -> str:
    """A header value as text: RFC 2047 encoded words decoded, other octets read as UTF-8."""
    if b"=?" not in value:
        return value.decode("utf-8", "replace")
    value = _WORD_GAP.sub(rb"\1", value)  # whitespace between two encoded words is not text
    out: list[str] = []
    position = 0
    for match in _ENCODED_WORD.finditer(value):
        out.append(value[position : match.start()].decode("utf-8", "replace"))
        charset, encoding, text = match.group(1), match.group(2), match.group(3)
        try:
            if encoding in (b"B", b"b"):
                octets = binascii.a2b_base64(text + b"=" * (-len(text) % 4), strict_mode=True)
            else:
                octets = binascii.a2b_qp(text.replace(b"_", b" "))
        except binascii.Error:
            out.append(match.group(0).decode("ascii", "replace"))
        else:
            out.append(_decode_text(octets, charset.split(b"*")[0]))
        position = match.end()
    out.append(value[position:].decode("utf-8", "replace"))
    return "".join(out)


def _decode_text(octets: bytes, charset: bytes) -> str:
    """Octets in a declared charset as text; bytes.decode takes only text encodings (not "hex")."""
    try:
        return octets.decode(charset.decode("ascii", "replace").strip(), "replace")
    except (LookupError, ValueError):
        return octets.decode("utf-8", "replace")


def _collect_text(raw: bytes, entity: _Entity, pieces: list[str], budget: list[int]) -> None:
    if budget[0] <= 0:
        return
    if entity.children:
        for child in entity.children:
            _collect_text(raw, child, pieces, budget)
        return
    if entity.message is not None:
        inner = entity.message
        pieces.append("\n".join(decode_words(_unfold(raw[s:e])) for _, s, e in inner.fields))
        _collect_text(raw, inner, pieces, budget)
        return
    if entity.type.lower() not in (b"text", b"message"):
        return
    body = raw[entity.body : min(entity.end, entity.body + 4 * budget[0])]  # at most 4 octets a character
    encoding = (entity.field(raw, b"content-transfer-encoding") or b"").lower()
    try:
        if encoding == b"base64":
            body = binascii.a2b_base64(body)
        elif encoding == b"quoted-printable":
            body = binascii.a2b_qp(body)
    except binascii.Error:
        pass
    text = _decode_text(body, _parameter(entity.params, b"charset") or b"utf-8")[: budget[0]]
    budget[0] -= len(text)
    pieces.append(text)
