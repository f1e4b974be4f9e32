"""IMAP command syntax, sans-IO: bytes in, commands out (RFC 3501 §9, RFC 7888 literals).

`CommandReader` is one connection's command reader, the first piece of the IMAP room (issue 12): the
session driver feeds it what the socket read (`receive_data`) and takes events one at a time
(`next_event`) until it answers None. Parsing is lazy: `next_event` reads only as far as the next
event, so the session can switch the reader to a raw line (`expect_line`) between two events and the
client's next line is read as that, not as a command:

- `Command(tag, name, arguments)`: one complete command. `name` is upper-cased; `arguments` are
  `Atom` (an atom, a number, a sequence set, a flag, a fetch attribute such as
  `BODY.PEEK[HEADER.FIELDS (FROM)]<0.100>`: brackets keep their spaces and parentheses), `String`
  (quoted or literal, as octets), `NIL`, and tuples for parenthesised lists.
- `LiteralRequested(tag, size)`: the client announced a synchronizing literal `{n}` within the limit;
  the driver writes the continuation request (`+ Ready`) and the reader then takes its octets.
- `Line(octets)`: after `expect_line()`, the next line as it came (without its CRLF): a SASL response
  to an AUTHENTICATE continuation, or the DONE that ends IDLE (RFC 2177). A line over `max_line` is
  a `CommandRefused` instead.
- `CommandRefused(tag, reply, too_big)`: the command was malformed or over a limit (`too_big`: a
  literal over `max_literal`, which APPEND answers `NO [TOOBIG]`, RFC 7889); the driver writes
  `<tag> BAD <reply>` (tag `*` when none could be read) and counts the error. The reader has already
  skipped what belongs to the refused command: the rest of its line, and the octets of a non-synchronizing
  literal `{n+}` it announced (RFC 7888 §4: the client sends them regardless; they are read and dropped,
  never parsed as commands). A synchronizing literal over the limit is refused before the client sends
  it, so nothing is skipped.

Limits (`SyntaxLimits`, each named): a command line (without its literals) at most `max_line` octets
(RFC 7162 §4 asks servers to take at least 8192), a literal at most `max_literal` octets, at most
`max_literals` literals and `max_nesting` levels of parentheses per command, and `max_command` octets
in all. Held input is bounded by them: the reader never buffers more than one line or one literal
beyond what it has parsed.

*Security:* every octet here is an unauthenticated client's. Lines end only at CRLF (a bare CR or LF
inside a command is refused); a literal's octets are taken by count, never scanned for line ends, so
no literal content can be read as a command; NUL is refused outside literals (RFC 3501 §4.3 CHAR8
allows it only there). Input never raises: every fault is a `CommandRefused`.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from enum import Enum

MAX_LINE = 8192  # octets of a command line without its literals (RFC 7162 §4 floor)
MAX_LITERAL = 64 * 1024 * 1024  # octets of one literal: an APPEND of the largest message the node takes
MAX_LITERALS = 64  # literals in one command
MAX_NESTING = 16  # levels of parentheses in one command
MAX_COMMAND = MAX_LITERAL + 1024 * 1024  # octets of one command in all
MAX_TAG = 64  # octets of a tag the reader repeats in a refusal; a longer one is answered as "*"


@dataclass(frozen=True, slots=True)
class SyntaxLimits:
    max_line: int = MAX_LINE
    max_literal: int = MAX_LITERAL
    max_literals: int = MAX_LITERALS
    max_nesting: int = MAX_NESTING
    max_command: int = MAX_COMMAND


class _Nil(Enum):
    NIL = "NIL"


NIL = _Nil.NIL


@dataclass(frozen=True, slots=True)
class Atom:
    text: str


@dataclass(frozen=True, slots=True)
class String:
    """A quoted string or a literal, as octets (`literal` says which the client sent)."""

    octets: bytes
    literal: bool = False


Argument = Atom | String | _Nil | tuple["Argument", ...]


@dataclass(frozen=True, slots=True)
class Command:
    tag: str
    name: str
    arguments: tuple[Argument, ...]


@dataclass(frozen=True, slots=True)
class LiteralRequested:
    tag: str
    size: int


@dataclass(frozen=True, slots=True)
class CommandRefused:
    tag: str  # "*" when the tag itself could not be read
    reply: str
    too_big: bool = False  # the refusal is of a literal over `max_literal`


@dataclass(frozen=True, slots=True)
class Line:
    octets: bytes


Event = Command | LiteralRequested | CommandRefused | Line

_TAG_CHAR = rb"[\x21\x23\x24\x26\x27\x2c-\x5b\x5d-\x7a\x7c-\x7e]"  # ASTRING-CHAR but "+" (RFC 3501 tag)
_TAG = re.compile(_TAG_CHAR + rb"+")
_HEAD = re.compile(_TAG_CHAR + b"{1,%d} [A-Za-z]+ " % MAX_TAG)  # a command's tag SP name SP
_LITERAL_END = re.compile(rb"\{(\d{1,20})(\+?)\}$")
_ATOM_SPECIALS = frozenset(b'(){ "\\%*]')  # RFC 3501 atom-specials without CTL (checked apart)
_QUOTED_SPECIALS = frozenset(b'"\\')


class _Refused(Exception):
    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


class CommandReader:
    """One connection's command reader (see the module docstring)."""

    def __init__(self, limits: SyntaxLimits | None = None) -> None:
        self.limits = limits or SyntaxLimits()
        self._buffer = bytearray()
        self._events: deque[Event] = deque()
        self._line_parts: list[bytes] = []  # the command's line pieces so far (a literal between each)
        self._literals: list[bytes] = []
        self._literal_wanted = 0  # octets of the literal being read; 0: reading a line
        self._discard = 0  # octets of a refused non-synchronizing literal still to drop
        self._skip_line = False  # a refused command's line continues: drop up to its CRLF
        self._octets = 0  # octets of the command so far
        self._raw_line = False  # the next line is a `Line`, not a command

    def receive_data(self, data: bytes) -> None:
        self._buffer += data

    def next_event(self) -> Event | None:
        if not self._events:
            self._advance()
        return self._events.popleft() if self._events else None

    def expect_line(self) -> None:
        """Read the next line as a `Line` (a SASL response, IDLE's DONE), not as a command."""
        self._raw_line = True

    @property
    def pending(self) -> int:
        """Octets received and not yet read as events (the driver reads more only when this is low)."""
        return len(self._buffer)

    # --- reading ---------------------------------------------------------------------------------
    def _advance(self) -> None:
        while not self._events:
            if self._discard:
                dropped = min(self._discard, len(self._buffer))
                del self._buffer[:dropped]
                self._discard -= dropped
                if self._discard:
                    return
                self._skip_line = True  # the rest of the refused command's line goes too
                continue
            if self._literal_wanted:
                if len(self._buffer) < self._literal_wanted:
                    return
                self._literals.append(bytes(self._buffer[: self._literal_wanted]))
                del self._buffer[: self._literal_wanted]
                self._literal_wanted = 0
                continue
            end = self._buffer.find(b"\r\n")
            if end < 0:
                if self._skip_line:
                    # A refused line still streaming in: drop it (keeping a CR that may start its CRLF).
                    keep = 1 if self._buffer.endswith(b"\r") else 0
                    del self._buffer[: len(self._buffer) - keep]
                elif len(self._buffer) > self.limits.max_line:
                    self._refuse_long_line()
                return
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 2]
            if self._skip_line:
                self._skip_line = False
                continue
            if self._raw_line and not self._line_parts:
                self._raw_line = False
                if len(line) > self.limits.max_line:
                    self._events.append(CommandRefused("*", "Command line too long"))
                else:
                    self._events.append(Line(line))
                continue
            self._line(line)

    def _refuse_long_line(self) -> None:
        tag = self._tag_of(b"".join(self._line_parts) or bytes(self._buffer))
        self._buffer.clear()
        self._reset()
        self._skip_line = True
        self._raw_line = False
        self._events.append(CommandRefused(tag, "Command line too long"))

    def _line(self, line: bytes) -> None:
        self._octets += len(line) + 2
        if len(line) > self.limits.max_line:
            self._refuse(line, "Command line too long")
            return
        announced = _LITERAL_END.search(line)
        if announced is None:
            self._line_parts.append(line)
            self._complete()
            return
        size, non_synchronizing = int(announced.group(1)), bool(announced.group(2))
        self._line_parts.append(line[: announced.start()])
        tag = self._tag_of(self._line_parts[0])
        problem, too_big = "", False
        if len(self._line_parts) == 1 and not _HEAD.match(self._line_parts[0]):
            problem = "A literal needs a tag and a command before it"
        elif size > self.limits.max_literal:
            problem, too_big = "Literal too large", True
        elif len(self._literals) >= self.limits.max_literals:
            problem = "Too many literals in one command"
        elif self._octets + size > self.limits.max_command:
            problem = "Command too large"
        if problem:
            self._reset()
            if non_synchronizing:
                self._discard = size  # the client sends it anyway (RFC 7888 §4): read and dropped
            self._events.append(CommandRefused(tag, problem, too_big))
            return
        self._octets += size
        self._literal_wanted = size
        if size == 0:
            self._literals.append(b"")
            self._literal_wanted = 0
        if not non_synchronizing:
            self._events.append(LiteralRequested(tag, size))

    def _refuse(self, line: bytes, reply: str) -> None:
        tag = self._tag_of(self._line_parts[0] if self._line_parts else line)
        self._reset()
        self._events.append(CommandRefused(tag, reply))

    def _reset(self) -> None:
        self._line_parts = []
        self._literals = []
        self._octets = 0
        self._literal_wanted = 0

    def _complete(self) -> None:
        parts, literals = self._line_parts, self._literals
        self._reset()
        tag = self._tag_of(parts[0])
        try:
            self._events.append(_parse(parts, literals, self.limits.max_nesting))
        except _Refused as refused:
            self._events.append(CommandRefused(tag, refused.reply))

    @staticmethod
    def _tag_of(line: bytes) -> str:
        tag, _, _ = line[: MAX_TAG + 1].partition(b" ")
        return tag.decode("ascii") if len(tag) <= MAX_TAG and _TAG.fullmatch(tag) else "*"


def _parse(parts: list[bytes], literals: list[bytes], max_nesting: int) -> Command:
    """One command from its line pieces, literal i standing between piece i and piece i+1."""
    head = parts[0]
    for part in parts:
        if b"\r" in part or b"\n" in part or b"\x00" in part:
            raise _Refused("Invalid characters in command")
    tag, space, rest = head.partition(b" ")
    if len(tag) > MAX_TAG or not _TAG.fullmatch(tag):
        raise _Refused("Invalid tag")
    if not space:
        raise _Refused("Missing command")
    name, space, arguments_text = rest.partition(b" ")
    if not re.fullmatch(rb"[A-Za-z]+", name):
        raise _Refused("Invalid command name")
    pieces = [arguments_text if space else b"", *parts[1:]]
    if not space and len(parts) > 1:
        raise _Refused("A literal needs a command before it")
    tokens = _Tokens(pieces, literals, max_nesting)
    arguments = tokens.arguments()
    return Command(tag.decode("ascii"), name.decode("ascii").upper(), arguments)


class _Tokens:
    """Arguments from line pieces with literals between them."""

    def __init__(self, pieces: list[bytes], literals: list[bytes], max_nesting: int) -> None:
        self._pieces = pieces
        self._literals = literals
        self._index = 0  # the piece being read
        self._position = 0
        self._max_nesting = max_nesting

    @property
    def _text(self) -> bytes:
        return self._pieces[self._index]

    def arguments(self) -> tuple[Argument, ...]:
        found = self._sequence(0)
        if self._index != len(self._pieces) - 1 or self._position != len(self._text):
            raise _Refused("Unexpected ')'")
        return tuple(found)

    def _sequence(self, depth: int) -> list[Argument]:
        found: list[Argument] = []
        first = True
        while True:
            at_end = self._position >= len(self._text)
            if at_end and self._index < len(self._pieces) - 1:
                found.append(String(self._literals[self._index], literal=True))
                self._index += 1
                self._position = 0
                first = False
                continue
            if at_end:
                if depth:
                    raise _Refused("Missing ')'")
                return found
            octet = self._text[self._position]
            if octet == ord(")"):
                if not depth:
                    raise _Refused("Unexpected ')'")
                self._position += 1
                return found
            if not first:
                if octet != ord(" "):
                    raise _Refused("Missing space between arguments")
                self._position += 1
                if self._position >= len(self._text) and self._index == len(self._pieces) - 1:
                    raise _Refused("Trailing space")
                octet_after = self._text[self._position] if self._position < len(self._text) else None
                if octet_after in (ord(" "), ord(")")):
                    raise _Refused("Unexpected space")
                if octet_after is None:
                    continue  # a literal follows the space
                octet = octet_after
            first = False
            if octet == ord("("):
                if depth + 1 > self._max_nesting:
                    raise _Refused("Parentheses nested too deep")
                self._position += 1
                inner = self._sequence(depth + 1)
                found.append(tuple(inner))
                # `_sequence` consumed the ')'
            elif octet == ord('"'):
                found.append(self._quoted())
            else:
                found.append(self._atom())

    def _quoted(self) -> String:
        text, position = self._text, self._position + 1
        octets = bytearray()
        while position < len(text):
            octet = text[position]
            if octet == ord("\\"):
                if position + 1 >= len(text) or text[position + 1] not in _QUOTED_SPECIALS:
                    raise _Refused("Invalid escape in quoted string")
                octets.append(text[position + 1])
                position += 2
                continue
            if octet == ord('"'):
                self._position = position + 1
                return String(bytes(octets))
            octets.append(octet)
            position += 1
        raise _Refused("Unterminated quoted string")

    def _atom(self) -> Atom | _Nil:
        text, start = self._text, self._position
        position, brackets = start, 0
        while position < len(text):
            octet = text[position]
            if octet == ord("["):
                brackets += 1
            elif octet == ord("]") and brackets:
                brackets -= 1
            elif not brackets and (octet in _ATOM_SPECIALS or octet < 0x20 or octet == 0x7F):
                if octet in (ord("%"), ord("*"), ord("\\"), ord("]")):
                    position += 1  # list wildcards, flag backslash, ']' end the atom only as specials
                    continue
                break
            elif octet < 0x20 or octet == 0x7F or octet > 0x7E:
                raise _Refused("Invalid characters in command")
            position += 1
        if brackets:
            raise _Refused("Missing ']'")
        atom = text[start:position]
        if not atom:
            raise _Refused("Expected an argument")
        self._position = position
        if atom.upper() == b"NIL":
            return NIL
        return Atom(atom.decode("ascii"))
