"""Content conversion for a remote domain (spec §7): body format, line wrap and character set, at send.

`convert_for_remote_domain(octets, settings)` returns the message to send to a domain with these
`RemoteDomainSettings`:

- `content_type` MIME_TEXT: each `multipart/alternative` keeps only its `text/plain` part (or, when it has
  none, its HTML converted to text); an HTML-only body becomes `text/plain` converted from the HTML.
  MIME_HTML: each alternative keeps only its `text/html` part (or the text converted to HTML); a text-only
  body becomes `text/html`. MIME_HTML_TEXT: bodies as sent. Body parts are the text and HTML parts that are
  not attachments (`Content-Disposition: attachment`); attachments and attached messages (`message/rfc822`,
  never entered) are left alone.
- `line_wrap` 1..132: the lines of `text/plain` body parts longer than that many characters are
  re-wrapped at spaces (a word longer than the width stays whole). In a `format=flowed` part (RFC 3676)
  a break is a soft line break (the line ends with a space, doubled for `delsp=yes`), quoted lines keep
  their quote marks, and continuation lines are space-stuffed where needed, so a flowed reader joins them
  back; elsewhere a break replaces the space with a line end (no trailing space a reader could take for
  a flowed break). 0 leaves lines alone.
- `charset`: a text body part that declares no charset gets this one (a message without MIME headers
  gets `Content-Type: text/plain; charset=<it>` and `MIME-Version: 1.0`).

Guarantees. When nothing applies the very octets given are returned (identical: a signature over a message
that passes through unchanged still verifies). When something applies, only the parts that change are
rewritten (as UTF-8, quoted-printable: 7-bit safe, readable); the other header fields and parts are
written back as they were parsed (header fields are never refolded; the space after the colon of each
field is normalized to one). The message is parsed with the stdlib `email` package; a message over
`MAX_PARTS` parts or `MAX_DEPTH` levels of nesting (spec §8: 250 parts, depth 30), or one it cannot
parse or write back, is returned unchanged.

Conversion is CPU work over the whole message: call it from a worker thread, not the event loop.

*Security:* the message came from a client: the parse is bounded by the part and depth limits (checked
before anything is converted, and a parse that recurses too deep is caught), HTML is only tokenized by
`html.parser` (never rendered, fetched or evaluated; script and style contents are dropped), and text
becomes HTML only through `html.escape`.
"""

from __future__ import annotations

import email.policy
import html
import re
from email.generator import BytesGenerator
from email.message import EmailMessage, Message
from email.parser import BytesParser
from html.parser import HTMLParser
from io import BytesIO

from postroom.model.outbound import ContentType, RemoteDomainSettings

MAX_PARTS = 250  # spec §8: MIME parts of a message
MAX_DEPTH = 30  # spec §8: embedded depth
MAX_LINE_WRAP = 132

# Source header fields are written back as parsed, never refolded; CRLF line ends; 8-bit kept.
_POLICY = email.policy.SMTP.clone(refold_source="none")


def convert_for_remote_domain(octets: bytes, settings: RemoteDomainSettings) -> bytes:
    """The message as it goes to a remote domain with `settings`; see the module docstring."""
    wrap = settings.line_wrap if 0 < settings.line_wrap <= MAX_LINE_WRAP else 0
    if settings.content_type is ContentType.MIME_HTML_TEXT and not wrap and not settings.charset:
        return octets
    try:
        message = BytesParser(policy=_POLICY).parsebytes(octets)
        assert isinstance(message, EmailMessage)
        if not _within_limits(message):
            return octets
        converter = _Converter(settings, wrap)
        converter.convert(message, top=True)
        if not converter.changed:
            return octets
        out = BytesIO()
        BytesGenerator(out, mangle_from_=False, policy=_POLICY).flatten(message)
    except (RecursionError, LookupError, ValueError, TypeError, UnicodeError):
        return octets  # a message this parser cannot take apart and put back goes as it came
    converted = out.getvalue()
    return converted if converted.endswith(b"\r\n") else converted + b"\r\n"


def _within_limits(message: Message) -> bool:
    parts = 0
    stack: list[tuple[Message, int]] = [(message, 0)]
    while stack:
        part, depth = stack.pop()
        parts += 1
        if parts > MAX_PARTS or depth > MAX_DEPTH:
            return False
        payload = part.get_payload()
        if isinstance(payload, list):
            stack.extend((child, depth + 1) for child in payload if isinstance(child, Message))
    return True


class _Converter:
    def __init__(self, settings: RemoteDomainSettings, wrap: int) -> None:
        self.settings = settings
        self.wrap = wrap
        self.changed = False

    def convert(self, part: EmailMessage, *, top: bool = False) -> EmailMessage:
        """Convert `part` in place (or return the part that replaces it)."""
        if part.is_multipart():
            if part.get_content_type() == "multipart/alternative":
                chosen = self._choose_alternative(part)
                if chosen is not None:
                    self.changed = True
                    if top:
                        _become(part, chosen)
                        return self.convert(part, top=True)
                    return self.convert(chosen)
            children = part.get_payload()
            assert isinstance(children, list)
            for index, child in enumerate(children):
                if part.get_content_maintype() != "message":
                    children[index] = self.convert(child)
            return part
        if part.get_content_maintype() != "text" or part.is_attachment():
            return part
        subtype = part.get_content_subtype()
        wanted = self.settings.content_type
        if wanted is ContentType.MIME_TEXT and subtype == "html":
            self._set_text(part, html_to_text(_text_of(part, self.settings.charset)), "plain")
        elif wanted is ContentType.MIME_HTML and subtype == "plain":
            self._set_text(part, text_to_html(_text_of(part, self.settings.charset)), "html")
        if self.wrap and part.get_content_subtype() == "plain":
            text = _text_of(part, self.settings.charset)
            flowed = (part.get_param("format") or "").__str__().lower() == "flowed"
            delsp = str(part.get_param("delsp") or "").lower() == "yes"
            wrapped = wrap_text(text, self.wrap, flowed=flowed, delsp=delsp)
            if wrapped != text:
                params = {"format": "flowed"} if flowed else {}
                if delsp:
                    params["delsp"] = "yes"
                self._set_text(part, wrapped, "plain", params)
        if self.settings.charset and part.get_param("charset") is None:
            part.set_param("charset", self.settings.charset)
            if top and "MIME-Version" not in part:
                part["MIME-Version"] = "1.0"
            self.changed = True
        return part

    def _choose_alternative(self, part: EmailMessage) -> EmailMessage | None:
        """The one alternative to keep (None: keep them all): the wanted type, else the other one converted
        later by `convert`."""
        wanted = {ContentType.MIME_TEXT: "text/plain", ContentType.MIME_HTML: "text/html"}.get(
            self.settings.content_type
        )
        if wanted is None:
            return None
        children = [child for child in part.iter_parts() if isinstance(child, EmailMessage)]
        for child in children:
            if child.get_content_type() == wanted:
                return child
        other = "text/html" if wanted == "text/plain" else "text/plain"
        for child in children:
            if child.get_content_type() == other:
                return child
        return None

    def _set_text(
        self, part: EmailMessage, text: str, subtype: str, params: dict[str, str] | None = None
    ) -> None:
        disposition = part.get("Content-Disposition")
        content_id = part.get("Content-ID")
        part.set_content(
            text,
            subtype=subtype,
            charset="utf-8",
            cte="quoted-printable",
            params=params or {},
            cid=str(content_id) if content_id else None,
        )
        if disposition:
            part["Content-Disposition"] = str(disposition)
        self.changed = True


def _become(part: EmailMessage, child: EmailMessage) -> None:
    """Make `part` carry `child`'s content (its Content-* fields as written, its payload), keeping
    `part`'s other header fields: an alternative at the top of a message replaced by one of its parts."""
    for name in {name.lower() for name in part if name.lower().startswith("content-")}:
        del part[name]
    for name, value in child.raw_items():
        if name.lower().startswith("content-"):
            part.set_raw(name, value)
    # The payload as parsed: get_payload() would decode 8-bit text, which then could not be written back.
    part.set_payload(child._payload)  # type: ignore[attr-defined]
    part.preamble, part.epilogue = child.preamble, child.epilogue


def _text_of(part: EmailMessage, fallback_charset: str) -> str:
    """The decoded text of a text part: its charset, else the remote domain's, else UTF-8; undecodable
    octets replaced (a label no codec knows falls back to UTF-8)."""
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        return ""
    charset = part.get_content_charset() or fallback_charset or "utf-8"
    try:
        text = data.decode(charset, errors="replace")
    except LookupError:
        text = data.decode("utf-8", errors="replace")
    return text.replace("\r\n", "\n")


# -- HTML to text, text to HTML


class _TextExtractor(HTMLParser):
    BLOCKS = frozenset(
        [
            "address",
            "article",
            "aside",
            "blockquote",
            "dd",
            "div",
            "dl",
            "dt",
            "fieldset",
            "figcaption",
            "figure",
            "footer",
            "form",
            "h1",
            "h2",
            "h3",
            "h4",
            "h5",
            "h6",
            "header",
            "hr",
            "li",
            "main",
            "nav",
            "ol",
            "p",
            "pre",
            "section",
            "table",
            "tbody",
            "thead",
            "tfoot",
            "tr",
            "ul",
        ]
    )
    SKIPPED = frozenset({"script", "style", "head", "title", "template"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = [""]
        self.skipping = 0
        self.pre = 0
        self.link: str | None = None
        self.link_text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIPPED:
            self.skipping += 1
        elif tag == "br":
            self.lines.append("")
        elif tag in self.BLOCKS:
            self._block()
            if tag == "li":
                self.lines[-1] = "- "
            if tag == "pre":
                self.pre += 1
        elif tag == "a":
            self.link = dict(attrs).get("href") or None
            self.link_text = ""
        elif tag in ("td", "th") and self.lines[-1].strip():
            self.lines[-1] += "\t"

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIPPED:
            self.skipping = max(0, self.skipping - 1)
        elif tag in self.BLOCKS:
            if tag == "pre":
                self.pre = max(0, self.pre - 1)
            self._block()
        elif tag == "a" and self.link:
            if self.link.startswith(("http:", "https:", "mailto:")) and self.link_text.strip() != self.link:
                self._add(f" <{self.link}>")
            self.link = None

    def handle_data(self, data: str) -> None:
        if self.skipping:
            return
        if self.pre:
            first, *rest = data.split("\n")
            self.lines[-1] += first
            self.lines.extend(rest)
            return
        text = re.sub(r"\s+", " ", data)
        if not self.lines[-1] or self.lines[-1].endswith((" ", "- ")):
            text = text.lstrip(" ")
        self._add(text)
        if self.link is not None:
            self.link_text += text

    def _add(self, text: str) -> None:
        self.lines[-1] += text

    def _block(self) -> None:
        if self.lines[-1].strip():
            self.lines.append("")

    def text(self) -> str:
        lines = [line.rstrip() for line in self.lines]
        out: list[str] = []
        for line in lines:
            if line or (out and out[-1]):
                out.append(line)
        return "\n".join(out).strip("\n") + "\n"


def html_to_text(markup: str) -> str:
    """Readable plain text of an HTML body: blocks and `<br>` as line ends, list items as `- `, link
    targets after their text, entities decoded, script and style dropped."""
    extractor = _TextExtractor()
    extractor.feed(markup)
    extractor.close()
    return extractor.text()


def text_to_html(text: str) -> str:
    """A plain text body as HTML: escaped, its line ends kept (`<br>`), in a fixed-layout-neutral page."""
    body = "<br>\n".join(html.escape(line, quote=False) for line in text.rstrip("\n").split("\n"))
    return f'<html><head><meta charset="utf-8"></head><body>\n{body}\n</body></html>\n'


# -- line wrap


def wrap_text(text: str, width: int, *, flowed: bool = False, delsp: bool = False) -> str:
    """Lines of `text` over `width` characters broken at spaces; see the module docstring for flowed."""
    out: list[str] = []
    for line in text.split("\n"):
        if len(line) <= width or line == "-- ":
            out.append(line)
            continue
        quotes = len(line) - len(line.lstrip(">"))
        prefix = line[:quotes]
        body = line[quotes:]
        if flowed:
            if body.startswith(" "):  # space-stuffing (or the space after quote marks) is not content
                prefix += " "
                body = body[1:]
            out.extend(_flowed_lines(prefix, body, width, delsp))
        else:
            if quotes and body.startswith(" "):
                prefix += " "
                body = body[1:]
            out.extend(_hard_lines(prefix, body, width))
    return "\n".join(out)


def _hard_lines(prefix: str, body: str, width: int) -> list[str]:
    room = max(1, width - len(prefix))
    lines: list[str] = []
    while len(body) > room:
        cut = body.rfind(" ", 0, room + 1)
        if cut <= 0:
            cut = body.find(" ", room)  # a word longer than the line: keep it whole
            if cut == -1:
                break
        lines.append(prefix + body[:cut].rstrip(" "))
        body = body[cut:].lstrip(" ")
    lines.append(prefix + body)
    return lines


def _flowed_lines(prefix: str, body: str, width: int, delsp: bool) -> list[str]:
    """Soft-broken lines (RFC 3676 §4.2): each but the last ends with the space a reader joins at."""
    room = max(1, width - len(prefix) - 1)  # one column for space-stuffing a continuation
    lines: list[str] = []
    first = True
    while len(body) > room:
        cut = body.rfind(" ", 0, room)
        if cut <= 0:
            cut = body.find(" ", room)
            if cut == -1:
                break
        chunk, body = body[: cut + 1], body[cut + 1 :]
        lines.append(_stuffed(prefix, chunk, first) + (" " if delsp else ""))
        first = False
    lines.append(_stuffed(prefix, body, first))
    return lines


def _stuffed(prefix: str, chunk: str, first: bool) -> str:
    """RFC 3676 §4.4: a line whose content starts with a space, `>` or `From ` is space-stuffed."""
    if not first and not prefix.endswith(" ") and chunk.startswith((" ", ">", "From ")):
        return f"{prefix} {chunk}"
    return prefix + chunk
