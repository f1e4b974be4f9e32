"""IMAP command syntax: bytes in, commands out; every malformed or oversized command refused, and
nothing of a refused command (its line, its literal) ever read as a command."""

from __future__ import annotations

import random

import pytest

from postroom.imap import (
    NIL,
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

PASS = String(b'p a"ss')
FLAGS = (Atom("\\Seen"), Atom("\\Deleted"))
UTF8_SEARCH = (Atom("CHARSET"), Atom("UTF-8"), Atom("SUBJECT"), String("café".encode()))
NOOP = Command("z", "NOOP", ())


def events(data: bytes, limits: SyntaxLimits | None = None, *, chunk: int = 0) -> list[Event]:
    reader = CommandReader(limits)
    found: list[Event] = []
    pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)] if chunk else [data]
    for piece in pieces:
        reader.receive_data(piece)
        while (event := reader.next_event()) is not None:
            found.append(event)
    return found


@pytest.mark.parametrize(
    ("line", "command"),
    [
        (b"a1 NOOP", Command("a1", "NOOP", ())),
        (
            b'a2 login ann@contoso.test "p a\\"ss"',
            Command("a2", "LOGIN", (Atom("ann@contoso.test"), String(b'p a"ss'))),
        ),
        (b"a3 SELECT INBOX", Command("a3", "SELECT", (Atom("INBOX"),))),
        (b'a4 LIST "" *', Command("a4", "LIST", (String(b""), Atom("*")))),
        (b'a5 LIST "" %/Sub%', Command("a5", "LIST", (String(b""), Atom("%/Sub%")))),
        (
            b"a6 UID FETCH 1:*,7 (FLAGS BODY.PEEK[HEADER.FIELDS (FROM TO)]<0.100> ENVELOPE)",
            Command(
                "a6",
                "UID",
                (
                    Atom("FETCH"),
                    Atom("1:*,7"),
                    (Atom("FLAGS"), Atom("BODY.PEEK[HEADER.FIELDS (FROM TO)]<0.100>"), Atom("ENVELOPE")),
                ),
            ),
        ),
        (
            b"a7 STORE 1 +FLAGS (\\Seen \\Deleted)",
            Command("a7", "STORE", (Atom("1"), Atom("+FLAGS"), (Atom("\\Seen"), Atom("\\Deleted")))),
        ),
        (b"a8 ID NIL", Command("a8", "ID", (NIL,))),
        (b'a9 ID (("name" "x"))', Command("a9", "ID", (((String(b"name"), String(b"x")),),))),
        (
            b'b1 SEARCH CHARSET UTF-8 SUBJECT "caf\xc3\xa9"',
            Command(
                "b1", "SEARCH", (Atom("CHARSET"), Atom("UTF-8"), Atom("SUBJECT"), String("café".encode()))
            ),
        ),
    ],
)
def test_a_command_line_is_read_into_its_arguments(line: bytes, command: Command) -> None:
    assert events(line + b"\r\n") == [command]


def test_a_synchronizing_literal_is_asked_for_then_read_by_count() -> None:
    reader = CommandReader()
    reader.receive_data(b"a1 APPEND INBOX (\\Seen) {12}\r\n")
    assert reader.next_event() == LiteralRequested("a1", 12)
    assert reader.next_event() is None
    reader.receive_data(b"x\r\na2 NOOP\r\n")  # a command inside the literal is only octets
    assert reader.next_event() is None
    reader.receive_data(b"\r\n")
    assert reader.next_event() == Command(
        "a1", "APPEND", (Atom("INBOX"), (Atom("\\Seen"),), String(b"x\r\na2 NOOP\r\n", literal=True))
    )


def test_non_synchronizing_literals_and_several_in_one_command() -> None:
    data = b"a1 LOGIN {3+}\r\nann {4+}\r\np\x00ss\r\n"
    assert events(data) == [
        Command("a1", "LOGIN", (String(b"ann", literal=True), String(b"p\x00ss", literal=True)))
    ]


@pytest.mark.parametrize("chunk", [1, 2, 7])
def test_input_split_anywhere_reads_the_same(chunk: int) -> None:
    data = b"a1 LOGIN {3+}\r\nann pass\r\na2 FETCH 1 (BODY[])\r\na3 LOGOUT\r\n"
    assert events(data, chunk=chunk) == events(data)
    assert [e.name for e in events(data) if isinstance(e, Command)] == ["LOGIN", "FETCH", "LOGOUT"]


def test_pipelined_commands_come_out_in_order() -> None:
    found = events(b"a NOOP\r\nb CAPABILITY\r\nc LOGOUT\r\n")
    assert [(e.tag, e.name) for e in found if isinstance(e, Command)] == [
        ("a", "NOOP"),
        ("b", "CAPABILITY"),
        ("c", "LOGOUT"),
    ]


@pytest.mark.parametrize(
    ("line", "tag", "reply"),
    [
        (b"NOOP", "NOOP", "Missing command"),
        (b"t" * 65 + b" NOOP", "*", "Invalid tag"),
        (b"a+b NOOP", "*", "Invalid tag"),
        (b"a1 N0OP", "a1", "Invalid command name"),
        (b'a1 LOGIN "ann', "a1", "Unterminated quoted string"),
        (b'a1 LOGIN "a\\nn" x', "a1", "Invalid escape in quoted string"),
        (b"a1 FETCH 1 (FLAGS", "a1", "Missing ')'"),
        (b"a1 FETCH 1 FLAGS)", "a1", "Unexpected ')'"),
        (b"a1 FETCH 1 BODY[HEADER", "a1", "Missing ']'"),
        (b"a1 FETCH 1  FLAGS", "a1", "Unexpected space"),
        (b"a1 FETCH 1(FLAGS)", "a1", "Missing space between arguments"),
        (b"a1 LOGIN a\x00b c", "a1", "Invalid characters in command"),
        (b"a1 LOGIN a\rb c", "a1", "Invalid characters in command"),
        (b"a1 LOGIN caf\xc3\xa9 c", "a1", "Invalid characters in command"),
    ],
)
def test_a_malformed_command_is_refused_and_the_next_one_read(line: bytes, tag: str, reply: str) -> None:
    assert events(line + b"\r\nz NOOP\r\n") == [CommandRefused(tag, reply), Command("z", "NOOP", ())]


def test_a_bare_lf_never_ends_a_command() -> None:
    assert events(b"a1 NOOP\nz2 LOGOUT\r\n") == [CommandRefused("a1", "Invalid characters in command")]


def test_nesting_past_the_limit_is_refused() -> None:
    limits = SyntaxLimits(max_nesting=3)
    assert events(b"a1 X (((1)))\r\n", limits) == [Command("a1", "X", ((((Atom("1"),),),),))]
    assert events(b"a1 X ((((1))))\r\n", limits) == [CommandRefused("a1", "Parentheses nested too deep")]


def test_a_long_line_is_refused_once_and_skipped_whole() -> None:
    limits = SyntaxLimits(max_line=64)
    data = b"a1 LOGIN " + b"x" * 500 + b"\r\nz NOOP\r\n"
    assert events(data, limits, chunk=50) == [
        CommandRefused("a1", "Command line too long"),
        Command("z", "NOOP", ()),
    ]


def test_a_synchronizing_literal_over_the_limit_is_refused_before_it_is_sent() -> None:
    limits = SyntaxLimits(max_literal=10)
    assert events(b"a1 APPEND INBOX {11}\r\nz NOOP\r\n", limits) == [
        CommandRefused("a1", "Literal too large", too_big=True),
        Command("z", "NOOP", ()),
    ]


def test_a_non_synchronizing_literal_over_the_limit_is_read_and_dropped() -> None:
    """RFC 7888 §4: the client sends it regardless; none of its octets may be read as commands."""
    limits = SyntaxLimits(max_literal=10)
    data = (
        b"a1 APPEND INBOX {30+}\r\n"
        + b"z2 DELETE INBOX\r\nz3 LOGOUT\r\n".ljust(30, b"x")
        + b" rest\r\nz NOOP\r\n"
    )
    assert events(data, limits, chunk=3) == [
        CommandRefused("a1", "Literal too large", too_big=True),
        Command("z", "NOOP", ()),
    ]


def test_too_many_literals_are_refused() -> None:
    limits = SyntaxLimits(max_literals=2)
    data = b"a1 X {1+}\r\na {1+}\r\nb {1+}\r\nc\r\nz NOOP\r\n"
    assert events(data, limits) == [
        CommandRefused("a1", "Too many literals in one command"),
        Command("z", "NOOP", ()),
    ]


def test_what_the_reader_holds_is_bounded() -> None:
    """A client that streams without CRLF makes the reader hold at most about one line (the driver
    takes the events after each read, as the session does)."""
    reader = CommandReader(SyntaxLimits(max_line=1024))
    refused: list[Event] = []
    for _ in range(200):
        reader.receive_data(b"y" * 1000)
        refused += iter(reader.next_event, None)
        assert reader.pending <= 2024
    assert refused == [CommandRefused("*", "Command line too long")]


@pytest.mark.parametrize("line", [b"{5}", b"a1 {5}", b"a1 LOGIN{5}"])
def test_a_literal_without_a_tag_and_command_before_it_is_refused_unasked(line: bytes) -> None:
    found = events(line + b"\r\nz NOOP\r\n")
    assert not any(isinstance(e, LiteralRequested) for e in found)
    assert isinstance(found[0], CommandRefused) and found[-1] == NOOP


def test_random_input_never_raises_and_stays_bounded() -> None:
    chaos = random.Random(11)
    alphabet = b'a1 NOOP LOGIN "\\(){}+*%[]<>\r\n\x00\xff0123456789'
    reader = CommandReader(SyntaxLimits(max_line=256, max_literal=512))
    for _ in range(2000):
        reader.receive_data(bytes(chaos.choice(alphabet) for _ in range(chaos.randint(1, 64))))
        while reader.next_event() is not None:
            pass
        assert len(reader._buffer) <= 256 + 512 + 64


def test_a_raw_line_is_read_only_when_asked_for_even_when_it_came_with_the_command() -> None:
    """IDLE's DONE and a SASL response arrive as lines; pipelined with the command, they are still
    read as lines because the reader parses no further than the event asked for."""
    reader = CommandReader()
    reader.receive_data(b"a1 IDLE\r\nDONE\r\na2 NOOP\r\n")
    assert reader.next_event() == Command("a1", "IDLE", ())
    reader.expect_line()
    assert reader.next_event() == Line(b"DONE")
    assert reader.next_event() == Command("a2", "NOOP", ())
    assert reader.next_event() is None


def test_a_raw_line_over_the_limit_is_refused() -> None:
    reader = CommandReader(SyntaxLimits(max_line=16))
    reader.expect_line()
    reader.receive_data(b"x" * 40 + b"\r\na NOOP\r\n")
    assert reader.next_event() == CommandRefused("*", "Command line too long")
