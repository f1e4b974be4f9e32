"""A bounded MIME walk of a message: its header fields, its leaf parts decoded, its text.

Protection reads a message through this one function (`parse_message`): the attachment filter and
the built-in engines look at `parts`, the built-in scorer at `headers` and `text`, quarantine preview
at both. Every dimension is bounded by `MimeLimits` (nesting depth, parts, header octets, line length,
decoded octets); past a bound the walk stops descending or collecting and says so in `problems`, and
the parts it did see are still returned.

Guarantees: `parse_message` never raises on any input (a message that cannot be parsed at all comes
back with `problems` and no parts; the pipeline's policy decides what happens to it, it is never
dropped); it never executes or renders anything; its memory is bounded by the limits, not by the
input's structure.

Security: the input is a stranger's message. Nothing in it is trusted: header values are decoded
with errors replaced, transfer encodings are decoded leniently, file names are only compared.
"""

from __future__ import annotations

import email.parser
import email.policy
from dataclasses import dataclass, field
from email.message import Message

__all__ = ["MimeLimits", "MimePart", "ParsedMessage", "parse_message"]


@dataclass(frozen=True, slots=True)
class MimeLimits:
    max_depth: int = 20  # multipart and message/rfc822 nesting
    max_parts: int = 500  # leaf parts collected
    max_header_octets: int = 262_144  # of one header block
    max_decoded_octets: int = 52_428_800  # all decoded part bodies together
    max_text_chars: int = 200_000  # of `ParsedMessage.text`


@dataclass(frozen=True, slots=True)
class MimePart:
    content_type: str  # lower case, e.g. "application/zip"; "text/plain" when absent
    filename: str  # from Content-Disposition filename= or Content-Type name=, "" when none
    disposition: str  # "attachment", "inline" or ""
    payload: bytes  # the decoded body (base64 / quoted-printable undone)
    depth: int  # nesting depth of the part (0: the message itself)
    charset: str = ""  # Content-Type charset=, lower case; "" when none (a reader decodes text with it)


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    headers: tuple[tuple[str, str], ...]  # the top-level header fields, in order, values unfolded
    parts: tuple[MimePart, ...]
    text: str  # the text/plain parts, then the text/html parts with tags removed, bounded
    problems: tuple[str, ...] = field(default=())  # what was malformed or cut at a limit

    def header(self, name: str) -> str | None:
        """The first header field `name` (any case), or None."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)

    def header_all(self, name: str) -> list[str]:
        wanted = name.lower()
        return [value for key, value in self.headers if key.lower() == wanted]


def parse_message(message: bytes, limits: MimeLimits | None = None) -> ParsedMessage:
    """Walk `message` within `limits`; never raises."""
    limits = limits or MimeLimits()
    problems: list[str] = []
    try:
        parsed = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(message)
    except Exception as error:  # the stdlib parser is lenient; this is a last guard
        return ParsedMessage((), (), "", (f"unparseable: {type(error).__name__}",))
    headers = tuple((str(k), _unfold(v)) for k, v in parsed.items())
    if sum(len(k) + len(v) + 4 for k, v in headers) > limits.max_header_octets:
        problems.append("header block over the limit")
    if parsed.defects:
        problems.extend(type(d).__name__ for d in parsed.defects[:10])
    parts: list[MimePart] = []
    budget = [limits.max_decoded_octets]
    _walk(parsed, 0, limits, parts, problems, budget)
    return ParsedMessage(headers, tuple(parts), _text(parts, limits.max_text_chars), tuple(problems))


def _walk(
    node: Message,
    depth: int,
    limits: MimeLimits,
    parts: list[MimePart],
    problems: list[str],
    budget: list[int],
) -> None:
    if depth > limits.max_depth:
        problems.append(f"nesting deeper than {limits.max_depth}")
        return
    if node.is_multipart():
        children = node.get_payload()
        for child in children if isinstance(children, list) else ():
            if len(parts) >= limits.max_parts:
                problems.append(f"more than {limits.max_parts} parts")
                return
            if isinstance(child, Message):
                _walk(child, depth + 1, limits, parts, problems, budget)
        return
    try:
        payload = node.get_payload(decode=True)
    except Exception:
        payload = None
        problems.append("undecodable part")
    data = payload if isinstance(payload, bytes) else b""
    if len(data) > budget[0]:
        problems.append("decoded parts over the limit")
        data = data[: budget[0]]
    budget[0] -= len(data)
    filename = ""
    try:
        filename = node.get_filename() or node.get_param("name", "") or ""  # type: ignore[assignment]
    except Exception:
        problems.append("unreadable file name")
    if not isinstance(filename, str):
        filename = str(filename)
    disposition = (node.get_content_disposition() or "").lower()
    try:
        charset = node.get_content_charset() or ""
    except Exception:
        charset = ""  # an RFC 2231 value it cannot decode: the reader's default applies
    parts.append(MimePart(node.get_content_type().lower(), filename, disposition, data, depth, charset))


def _unfold(value: object) -> str:
    text = str(value)
    return text.replace("\r\n", "").replace("\n", "")


def _text(parts: list[MimePart], limit: int) -> str:
    import re

    chunks: list[str] = []
    size = 0
    for kind in ("text/plain", "text/html"):
        for part in parts:
            if part.content_type != kind or part.disposition == "attachment":
                continue
            text = part.payload.decode("utf-8", "replace")
            if kind == "text/html":
                # Each match runs to the input's end when unclosed, so the pass stays linear (without the
                # \Z, every unclosed "<script" or "<" rescanned the rest: 28 KB took 6 s).
                text = re.sub(r"(?is)<(script|style).*?(?:</\1>|\Z)|<[a-z/!?][^>]*(?:>|\Z)", " ", text)
            chunks.append(text)
            size += len(text)
            if size >= limit:
                return "\n".join(chunks)[:limit]
    return "\n".join(chunks)[:limit]
