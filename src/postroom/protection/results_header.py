"""The `Authentication-Results` header field (RFC 8601): written from verdicts, found in a header block.

`render(...)` writes the whole field, folded at `FOLD_AT` columns between tokens (never inside a
comment), CRLF-terminated, in the style of spec §10.7:

    Authentication-Results: mx.example.net; spf=pass (sender IP is 192.0.2.1)
     smtp.mailfrom=contoso.com; dkim=pass (signature was verified) header.d=contoso.com;
     dmarc=pass action=none header.from=contoso.com; compauth=pass reason=100

Order: spf, each dkim (header order), arc (only when the message came with ARC header fields), dmarc,
compauth. Every value written comes from a verdict; a domain or address that is not a plain DNS name
or IP address is left out rather than written, so nothing a sender chose can break the field's syntax
or add a field (no CR, LF, `;`, `(`, quotes).

The header-block helpers (`head_end`, `fields`, `without_fields`, `authserv_id`) read a message's
header section as octets: a field is its first line and the continuation lines (starting with SP or
HT) after it; the block ends at the first empty line (CRLF or bare LF). They never raise.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator, Sequence

from postroom.model.verdicts import (
    ArcResult,
    ArcVerdict,
    CompAuthResult,
    DkimResult,
    DkimVerdict,
    DmarcVerdict,
    SpfVerdict,
)
from postroom.protection.dkim import dns_name
from postroom.protection.headers import AUTHENTICATION_RESULTS

FOLD_AT = 78  # columns (RFC 5322 §2.1.1 SHOULD)
_TOKEN = re.compile(r"[A-Za-z0-9._@+-]+")


def render(
    authserv_id: str,
    spf: SpfVerdict,
    dkim: Sequence[DkimVerdict],
    arc: ArcVerdict,
    dmarc: DmarcVerdict,
    compauth: CompAuthResult,
    reason: int,
    *,
    arc_trusted: bool = False,
) -> str:
    """The whole header field (name, value, folded, CRLF)."""
    results: list[list[str]] = [_spf(spf)]
    results.extend(_dkim(v) for v in dkim)
    if arc.result is not ArcResult.NONE or arc.instances:
        results.append(_arc(arc, arc_trusted))
    results.append(_dmarc(dmarc))
    results.append([f"compauth={compauth.value}", f"reason={reason:03d}"])
    tokens = [f"{AUTHENTICATION_RESULTS}:", f"{authserv_id};"]
    for index, result in enumerate(results):
        last = index == len(results) - 1
        tokens.extend(result[:-1])
        tokens.append(result[-1] if last else result[-1] + ";")
    return fold(tokens)


def fold(tokens: Sequence[str]) -> str:
    """Tokens joined by spaces, a line broken before a token that would pass `FOLD_AT`."""
    lines: list[str] = []
    line = ""
    for token in tokens:
        if line and len(line) + 1 + len(token) > FOLD_AT:
            lines.append(line)
            line = " " + token
        else:
            line = f"{line} {token}" if line else token
    lines.append(line)
    return "\r\n".join(lines) + "\r\n"


def _spf(spf: SpfVerdict) -> list[str]:
    parts = [f"spf={spf.result.value}"]
    ip = _address(spf.client_ip)
    if ip:
        parts.append(f"(sender IP is {ip})")
    domain = dns_name(spf.domain)
    if domain:
        parts.append(f"smtp.{'helo' if spf.identity == 'helo' else 'mailfrom'}={domain}")
    return parts


def _dkim(verdict: DkimVerdict) -> list[str]:
    parts = [f"dkim={verdict.result.value}"]
    if verdict.reason and _TOKEN.fullmatch(verdict.reason.replace(" ", "")):
        parts.append(f"({verdict.reason})")
    domain = dns_name(verdict.domain) if verdict.result is not DkimResult.NONE else None
    if domain:
        parts.append(f"header.d={domain}")
    return parts


def _arc(arc: ArcVerdict, trusted: bool) -> list[str]:
    sealer = dns_name(arc.sealers[-1]) if arc.sealers else None
    if arc.result is ArcResult.PASS and sealer:
        comment = f"trusted sealer {sealer}" if trusted else f"sealer {sealer}"
    else:
        comment = arc.reason
    parts = [f"arc={arc.result.value}"]
    if comment and _TOKEN.fullmatch(comment.replace(" ", "")):
        parts.append(f"({comment})")
    return parts


def _dmarc(dmarc: DmarcVerdict) -> list[str]:
    parts = [f"dmarc={dmarc.result.value}", f"action={dmarc.action.value}"]
    domain = dns_name(dmarc.from_domain)
    if domain:
        parts.append(f"header.from={domain}")
    return parts


def _address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return ""


# --- the header block ---------------------------------------------------------------------------


def head_end(message: bytes) -> int:
    """The offset where the header block ends: the start of its empty line (or the end of the message)."""
    if message.startswith((b"\r\n", b"\n")):
        return 0
    ends = [i + 1 for i in (message.find(b"\n\r\n"), message.find(b"\n\n")) if i >= 0]
    return min(ends) if ends else len(message)


def fields(head: bytes) -> Iterator[tuple[int, int]]:
    """The (start, stop) offsets of each header field of `head`, continuation lines included."""
    start = position = 0
    while position < len(head):
        newline = head.find(b"\n", position)
        following = len(head) if newline < 0 else newline + 1
        if position > start and head[position : position + 1] not in (b" ", b"\t"):
            yield start, position
            start = position
        position = following
    if position > start:
        yield start, position


def field_name(field: bytes) -> bytes:
    """The lower-case name of a header field ("" when the line has no colon)."""
    name, colon, _ = field.partition(b":")
    return name.strip().lower() if colon else b""


def without_fields(message: bytes, unwanted: Callable[[bytes, bytes], bool]) -> bytes | None:
    """`message` without the header fields for which `unwanted(name, raw field)` holds; None when none
    was removed. The body is untouched."""
    end = head_end(message)
    head = message[:end]
    kept: list[bytes] = []
    removed = False
    for start, stop in fields(head):
        raw = head[start:stop]
        if unwanted(field_name(raw), raw):
            removed = True
        else:
            kept.append(raw)
    if not removed:
        return None
    return b"".join(kept) + message[end:]


_COMMENT = re.compile(r"\((?:[^()\\]|\\.)*\)")


def authserv_id(field: bytes) -> str:
    """The authserv-id of an Authentication-Results field (lower case; "" when it has none)."""
    value = field.partition(b":")[2].decode("utf-8", "replace")
    value = " ".join(value.split())
    for _ in range(8):  # comments nest; each pass removes the innermost
        stripped = _COMMENT.sub(" ", value)
        if stripped == value:
            break
        value = stripped
    value = value.strip()
    if value.startswith('"'):
        match = re.match(r'"((?:[^"\\]|\\.)*)"', value)
        return re.sub(r"\\(.)", r"\1", match.group(1)).lower() if match else ""
    match = re.match(r"[^;\s]*", value)
    return match.group(0).lower() if match else ""


def is_own_results(name: bytes, raw: bytes, own: str) -> bool:
    """Whether a header field is an Authentication-Results that claims authserv-id `own`."""
    return name == b"authentication-results" and authserv_id(raw) == own.lower()
