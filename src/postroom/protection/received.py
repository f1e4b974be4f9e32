"""Received header fields read back: which client each hop took the message from (RFC 5321 §4.4).

Enhanced filtering for connectors (spec §3.7, `protection.enhanced`) walks a message's Received
fields from the top (the newest, written by the server that handed the message to us) down, to find
the original internet sender behind a trusted gateway. `received_hops(head)` gives, for each of the
first `MAX_HOPS_READ` Received fields, the client's IP address and the HELO name the writing server
recorded in its `from` clause; `ip` is None for a field this parser does not understand, and the
walk must stop there (nothing below an unreadable hop can be trusted to be what it says).

The `from` clause shapes read (the RFC's, and what real servers write):

- Postfix, sendmail, Postroom: `from helo.example (rdns.example [192.0.2.1])`, `from helo ([192.0.2.1])`,
  `from helo (unknown [IPv6:2001:db8::1])`, with `(may be forged)` and other comments ignored;
- Exim: `from rdns.example ([192.0.2.1] helo=helo.example)`, `from [192.0.2.1] (helo=helo.example)`;
- Exchange: `from EX01.contoso.com (10.0.0.1)` (a bare address in the comment);
- the RFC's address literal alone: `from [192.0.2.1]`.

The HELO is the `helo=` value when the comment holds one, else the clause's first word when it is a
domain (an address literal is not a HELO name); "" when neither.

Security: every Received field above ours was written by whoever sent the message, so this parser
reads stranger input. It is strict and bounded: at most `MAX_HOPS_READ` fields, each cut at
`MAX_FIELD_OCTETS` (a longer one is not understood), comments nested at most `MAX_NESTING` deep,
only ASCII; anything else is "not understood" (ip None), never a guess. Which hops are trusted is
not decided here (`protection.enhanced`).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from postroom.model.ipfilter import IpAddress
from postroom.protection.results_header import field_name, fields, head_end

MAX_HOPS_READ = 30  # Received fields read from the top (the node's [routing] max_hops is the same default)
MAX_FIELD_OCTETS = 2048  # a longer Received field is not understood
MAX_NESTING = 4  # parentheses nested deeper: not understood

_DOMAIN = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_-]{1,63})*\.?$")
_LITERAL = re.compile(r"\[(?:IPv6:)?([0-9A-Fa-f:.]{2,45})\]")
_HELO = re.compile(r"\bhelo=(\S+)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ReceivedHop:
    """What one Received field says about the client its writer took the message from."""

    ip: IpAddress | None  # None: the field was not understood
    helo: str = ""  # the name the client gave in HELO/EHLO, when recorded; "" otherwise


NOT_UNDERSTOOD = ReceivedHop(None)


def received_hops(message: bytes, limit: int = MAX_HOPS_READ) -> list[ReceivedHop]:
    """The first `limit` Received fields of `message`'s header section, top (newest) first."""
    head = message[: head_end(message)]
    hops: list[ReceivedHop] = []
    for start, stop in fields(head):
        if len(hops) >= limit:
            break
        raw = head[start:stop]
        if field_name(raw) != b"received":
            continue
        hops.append(parse_received(raw.partition(b":")[2]))
    return hops


def parse_received(value: bytes) -> ReceivedHop:
    """One Received field's value (after the colon): the client's address and HELO, or NOT_UNDERSTOOD."""
    if len(value) > MAX_FIELD_OCTETS or not value.isascii():
        return NOT_UNDERSTOOD
    text = " ".join(value.decode("ascii").split())  # unfolded, runs of white space as one space
    if text[:5].lower() != "from ":
        return NOT_UNDERSTOOD
    clause = _from_clause(text[5:])
    if clause is None:
        return NOT_UNDERSTOOD
    name, comments = clause
    ip = _literal_ip(name) if name.startswith("[") else None
    helo = "" if name.startswith("[") or not _DOMAIN.match(name) else name.rstrip(".").lower()
    for comment in comments:
        found = _HELO.search(comment)
        if found is not None:
            given = found.group(1)
            helo = given.rstrip(".").lower() if _DOMAIN.match(given) else ""
        literals = _LITERAL.findall(comment)
        if literals:
            ip = _address(literals[-1])
        elif ip is None:
            words = comment.split()
            ip = _address(words[0]) if words else None
    if ip is None:
        return NOT_UNDERSTOOD
    return ReceivedHop(ip, helo)


def _from_clause(text: str) -> tuple[str, list[str]] | None:
    """The `from` clause's first word and its top-level comments (up to the `by` clause or `;`), or
    None when the parentheses do not balance or nest too deep."""
    name, _, rest = text.partition(" ")
    if not name or "(" in name or ")" in name:
        return None
    comments: list[str] = []
    depth = 0
    current: list[str] = []
    for char in rest:
        if char == "(":
            depth += 1
            if depth > MAX_NESTING:
                return None
            if depth == 1:
                current = []
                continue
        elif char == ")":
            if depth == 0:
                return None
            depth -= 1
            if depth == 0:
                comments.append("".join(current))
                continue
        elif depth == 0:
            if char == ";":
                break
            if char.isspace():
                continue
            # The first word outside a comment ends the `from` clause ("by", "with", "id", ...).
            break
        current.append(char)
    if depth != 0:
        return None
    return name, comments


def _literal_ip(text: str) -> IpAddress | None:
    found = _LITERAL.fullmatch(text)
    return _address(found.group(1)) if found is not None else None


def _address(text: str) -> IpAddress | None:
    try:
        address = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
