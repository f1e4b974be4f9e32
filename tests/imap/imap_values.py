"""A reader of IMAP response values for tests: what a client's parser makes of the server's bytes.

Quoted strings and literals both read as bytes, so two servers that choose differently between them
(Dovecot writes a folded subject as a literal) compare equal when a client would see the same value.
"""

from __future__ import annotations

IMAPValue = bytes | int | None | list["IMAPValue"]


def read_value(text: bytes) -> IMAPValue:
    value, position = _value(text, 0)
    assert position == len(text), f"trailing text: {text[position:]!r}"
    return value


def read_values(text: bytes) -> list[IMAPValue]:
    """Space-separated values (e.g. a FETCH response's inside)."""
    found: list[IMAPValue] = []
    position = 0
    while position < len(text):
        value, position = _value(text, position)
        found.append(value)
        if position < len(text):
            assert text[position : position + 1] == b" ", text[position:]
            position += 1
    return found


def _value(text: bytes, position: int) -> tuple[IMAPValue, int]:
    octet = text[position : position + 1]
    if octet == b"(":
        items: list[IMAPValue] = []
        position += 1
        while text[position : position + 1] != b")":
            if items and text[position : position + 1] == b" ":
                position += 1
            item, position = _value(text, position)
            items.append(item)
        return items, position + 1
    if octet == b'"':
        out = bytearray()
        position += 1
        while text[position : position + 1] != b'"':
            if text[position : position + 1] == b"\\":
                position += 1
            out += text[position : position + 1]
            position += 1
        return bytes(out), position + 1
    if octet == b"{":
        close = text.index(b"}", position)
        size = int(text[position + 1 : close])
        assert text[close + 1 : close + 3] == b"\r\n"
        start = close + 3
        return text[start : start + size], start + size
    end, brackets = position, 0
    while end < len(text) and (brackets or text[end : end + 1] not in (b" ", b")", b"(")):
        brackets += {b"[": 1, b"]": -1}.get(text[end : end + 1], 0)
        end += 1
    atom = text[position:end]
    if atom.upper() == b"NIL":
        return None, end
    if atom.isdigit():
        return int(atom), end
    return atom, end
