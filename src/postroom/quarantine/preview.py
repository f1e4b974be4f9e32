"""A safe text rendering of a quarantined message: its header fields, its text, its attachments' names.

What an administrator (or a recipient, where the quarantine policy lets them) reads before deciding
to release: the top-level header fields (RFC 2047 words decoded), then the first text/plain part, or
when there is none the first text/html part reduced to text (`html_to_text`), then the attachments by
name, type and size.

Guarantees: nothing of the message is executed or fetched. HTML is read by the standard library's
tokenizer only to drop markup: scripts, styles and the head are left out, links are shown as their
text followed by the target in angle brackets (so a phishing link shows where it goes), images as
`[image: alt]`; nothing is loaded. Every character that could act on a terminal or hide text is
shown as an escape (`inert`): C0 and C1 controls and DEL (ANSI sequences start with ESC), Unicode
format characters (bidirectional overrides, zero-width characters), line and paragraph separators
and lone surrogates; only the line feed stays. Everything is bounded: `PREVIEW_CHARS` of text,
`PREVIEW_HEADERS` fields of `PREVIEW_HEADER_CHARS` each, `PREVIEW_HTML_OCTETS` of HTML tokenized,
and the MIME walk's own limits (`protection.mime`); a cut says so (`truncated`).

Security: the input is a stranger's message, possibly built to attack whoever previews it; the
result is plain text meant to be printed as is.
"""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass
from email.header import decode_header, make_header

from postroom.protection.mime import MimePart, parse_message

PREVIEW_CHARS = 32_768  # of the rendered text
PREVIEW_HEADERS = 200  # header fields shown
PREVIEW_HEADER_CHARS = 2_000  # of one header field's value
PREVIEW_HTML_OCTETS = 262_144  # of an HTML part tokenized (a second at worst, on a busy core)
PREVIEW_ATTACHMENTS = 100  # attachments listed
_LINK_CHARS = 500  # of a link target shown after its text

_DANGEROUS = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
_NAMED = {"\t": "\\t", "\r": "\\r", "\n": "\\n"}
_PLAIN = re.compile(r"[\x20-\x7e\n]*")  # nothing to escape (with the line feed kept)


@dataclass(frozen=True, slots=True)
class PreviewAttachment:
    filename: str  # inert
    content_type: str
    size: int  # decoded octets


@dataclass(frozen=True, slots=True)
class Rendering:
    headers: tuple[tuple[str, str], ...]  # inert names and values
    text: str  # inert; line feeds kept
    source: str  # "text/plain", "text/html" (reduced to text) or "" (no text part)
    attachments: tuple[PreviewAttachment, ...]
    truncated: bool  # a bound cut the text, the header fields or the list of attachments
    problems: tuple[str, ...]  # what the MIME walk found malformed or cut


def inert(text: str, *, newlines: bool = True) -> str:
    """`text` with every character that could act on a terminal or hide text shown as an escape."""
    if newlines and _PLAIN.fullmatch(text):
        return text
    out: list[str] = []
    for char in text:
        if char == "\n" and newlines:
            out.append(char)
        elif unicodedata.category(char) in _DANGEROUS:
            code = ord(char)
            if char in _NAMED:
                out.append(_NAMED[char])
            elif code < 0x100:
                out.append(f"\\x{code:02x}")
            elif code < 0x10000:
                out.append(f"\\u{code:04x}")
            else:
                out.append(f"\\U{code:08x}")
        else:
            out.append(char)
    return "".join(out)


def render(message: bytes) -> Rendering:
    """Render `message` (prefix and body) safely; never raises on any input."""
    parsed = parse_message(message)
    truncated = len(parsed.headers) > PREVIEW_HEADERS
    headers = []
    for name, value in parsed.headers[:PREVIEW_HEADERS]:
        shown = _decoded(value)
        if len(shown) > PREVIEW_HEADER_CHARS:
            shown, truncated = shown[:PREVIEW_HEADER_CHARS], True
        headers.append((inert(name, newlines=False), inert(shown, newlines=False)))
    text, source, cut = _body_text(parsed.parts)
    attachments = [
        PreviewAttachment(
            inert(p.filename, newlines=False), inert(p.content_type, newlines=False), len(p.payload)
        )
        for p in parsed.parts
        if p.filename or p.disposition == "attachment"
    ]
    if len(attachments) > PREVIEW_ATTACHMENTS:
        attachments, truncated = attachments[:PREVIEW_ATTACHMENTS], True
    return Rendering(
        headers=tuple(headers),
        text=text,
        source=source,
        attachments=tuple(attachments),
        truncated=truncated or cut,
        problems=tuple(inert(p, newlines=False) for p in parsed.problems),
    )


def _decoded(value: str) -> str:
    """A header value with its RFC 2047 encoded words decoded (as written when they are broken)."""
    if "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(value)))
    except Exception:  # a hostile or broken encoded word: shown as written
        return value


def _body_text(parts: tuple[MimePart, ...]) -> tuple[str, str, bool]:
    """The first text/plain part's text, else the first text/html part's as text; (text, source, cut)."""
    for kind in ("text/plain", "text/html"):
        part = next((p for p in parts if p.content_type == kind and p.disposition != "attachment"), None)
        if part is None:
            continue
        payload = part.payload
        cut = False
        if kind == "text/html" and len(payload) > PREVIEW_HTML_OCTETS:
            payload, cut = payload[:PREVIEW_HTML_OCTETS], True
        text = _decode(payload, part.charset)
        if kind == "text/html":
            text = html_to_text(text)
        text = text.replace("\r\n", "\n").expandtabs(8)
        if len(text) > PREVIEW_CHARS:
            text, cut = text[:PREVIEW_CHARS], True
        return inert(text), kind, cut
    return "", "", False


def _decode(payload: bytes, charset: str) -> str:
    try:
        return payload.decode(charset or "utf-8", "replace")
    except (LookupError, ValueError, TypeError):  # an unknown or non-text codec named by the sender
        return payload.decode("utf-8", "replace")


# Elements whose content is not shown. Raw text ones (script, style, ...) end only at their end tag;
# the others hold markup, skipped while they are open.
_RAW_TEXT = frozenset({"script", "style", "iframe", "noembed", "noframes", "xmp", "plaintext"})
_HIDDEN = frozenset({"head", "template", "svg", "math", "object"})
_BLOCKS = frozenset(
    {
        "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "fieldset", "figcaption",
        "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav",
        "ol", "p", "pre", "section", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "ul",
    }
)  # fmt: skip
# One token at a time, each alternative linear in what it consumes (an unclosed comment, quote or tag
# runs to the end of the input), so the whole walk is linear: the standard library's HTMLParser is
# quadratic on unclosed comments and declarations (64 KB of "<!--" took 30 s).
_TOKEN = re.compile(
    r"(?P<comment><!--.*?(?:-->|\Z))"
    r"|<(?P<close>/?)(?P<name>[a-zA-Z][a-zA-Z0-9:-]*)"
    r"(?P<attrs>[^>\"']*(?:(?:\"[^\"]*(?:\"|\Z)|'[^']*(?:'|\Z))[^>\"']*)*)>?"
    r"|(?P<other><[!?/][^>]*>?)"
    r"|(?P<text>[^<]+|<)",
    re.DOTALL,
)
_ATTRIBUTE = re.compile(r"""([a-zA-Z_:][-a-zA-Z0-9_:.]*)\s*=\s*(?:"([^"]*)"?|'([^']*)'?|([^\s"'>]+))""")
_SPACES = re.compile(r"[ \t\f\v\r\n\xa0]+")  # HTML's white space, and &nbsp; read as a space
_BLANK_LINES = re.compile(r"\n[ \t]*(?:\n[ \t]*)+")


def _attribute(attrs: str, wanted: str) -> str:
    for match in _ATTRIBUTE.finditer(attrs):
        if match[1].lower() == wanted:
            value = next((v for v in match.groups()[1:] if v is not None), "")
            return " ".join(html.unescape(value).split())
    return ""


def html_to_text(document: str) -> str:
    """The text an HTML document shows, with line breaks where its blocks are; linear, never raises."""
    chunks: list[str] = []
    size = 0
    hidden: list[str] = []  # the open _HIDDEN elements
    links: list[str] = []  # the href of each open <a>, "" when none
    position, end = 0, len(document)
    while position < end and size <= PREVIEW_CHARS:
        token = _TOKEN.match(document, position)
        assert token is not None  # the last alternative matches any character
        position = token.end()
        shown = ""
        name = (token["name"] or "").lower()
        if token["text"] is not None:
            if not hidden:
                shown = _SPACES.sub(" ", html.unescape(token["text"][: PREVIEW_CHARS * 10]))
        elif not name:
            continue  # a comment, a declaration, CDATA, a processing instruction
        elif token["close"]:
            if name in _HIDDEN and name in hidden:
                del hidden[len(hidden) - 1 - hidden[::-1].index(name) :]
            elif hidden:
                continue
            elif name == "a" and links:
                href = links.pop()
                shown = f" <{href}>" if href else ""
            elif name in _BLOCKS:
                shown = "\n"
        elif name in _RAW_TEXT:
            closing = re.compile(rf"</{name}[\s/>]|</{name}\Z", re.IGNORECASE).search(document, position)
            position = closing.end() if closing else end
        elif name in _HIDDEN:
            if not token["attrs"].rstrip().endswith("/"):
                hidden.append(name)
        elif not hidden:
            if name in _BLOCKS:
                shown = "\n- " if name == "li" else "\n"
            if name == "a":
                links.append(_attribute(token["attrs"], "href")[:_LINK_CHARS])
            elif name == "img":
                alt = _attribute(token["attrs"], "alt")
                shown += f"[image: {alt}]" if alt else "[image]"
        if shown:
            chunks.append(shown)
            size += len(shown)
    lines = "\n".join(line.strip() for line in "".join(chunks).split("\n"))
    return _BLANK_LINES.sub("\n\n", lines).strip()
