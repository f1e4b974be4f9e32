"""The IMAP room (issue 12): Postroom's IMAP server over the mailstore (docs/imap.md).

Sans-IO: `syntax` (the command reader), `response` (response encoding), `sequence`, `folder_names`,
`message` (ENVELOPE, BODYSTRUCTURE, sections), `fetch`, `search`, and `session` (one connection's
states and commands, asking the node through a `MailAccess`). I/O: `server` (the asyncio listener).
The node's side (login, storage, notifications, junk reports) is `app.imap`.
"""

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
