"""The IMAP room (issue 12): today its command syntax (`syntax.CommandReader`, sans-IO)."""

from postroom.imap.syntax import (
    NIL,
    Argument,
    Atom,
    Command,
    CommandReader,
    CommandRefused,
    Event,
    Line,
    LiteralRequested,
    String,
    SyntaxLimits,
)

__all__ = [
    "NIL",
    "Argument",
    "Atom",
    "Command",
    "CommandReader",
    "CommandRefused",
    "Event",
    "Line",
    "LiteralRequested",
    "String",
    "SyntaxLimits",
]
