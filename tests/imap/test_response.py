"""IMAP responses: the bytes a client reads; no client text ever ends a response line early."""

from __future__ import annotations

import pytest

from postroom.imap.response import (
    MAX_QUOTED,
    Raw,
    Value,
    continuation,
    encode,
    flag_list,
    tagged,
    untagged,
    untagged_status,
)
from postroom.imap.syntax import Atom, Command, CommandReader, LiteralRequested, String


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        (None, b"NIL"),
        (0, b"0"),
        (4294967295, b"4294967295"),
        ("INBOX", b'"INBOX"'),
        ("", b'""'),
        ('say "hi" \\ there', b'"say \\"hi\\" \\\\ there"'),
        ("café", b"{5}\r\ncaf\xc3\xa9"),
        (b"a\r\nb", b"{4}\r\na\r\nb"),
        (b"nul\x00", b"{4}\r\nnul\x00"),
        (b"x" * MAX_QUOTED, b'"' + b"x" * MAX_QUOTED + b'"'),
        (b"x" * (MAX_QUOTED + 1), b"{1025}\r\n" + b"x" * (MAX_QUOTED + 1)),
        (Atom("\\Seen"), b"\\Seen"),
        (Atom("BODY[HEADER.FIELDS (FROM)]<0>"), b'"BODY[HEADER.FIELDS (FROM)]<0>"'),
        (Atom("BODY[]<0>"), b"BODY[]<0>"),
        (Atom("bad\r\n* BYE"), b"{10}\r\nbad\r\n* BYE"),
        (Atom("nil"), b'"nil"'),
        (Atom(""), b'""'),
        (Raw(b'("a" NIL)'), b'("a" NIL)'),
        ([], b"()"),
        ((1, None, ["x", (Atom("\\Seen"),)]), b'(1 NIL ("x" (\\Seen)))'),
    ],
)
def test_values_are_written_as_imap_text(value: Value, wire: bytes) -> None:
    assert encode(value) == wire


@pytest.mark.parametrize("value", [-1, True])
def test_values_imap_has_no_form_for_are_refused(value: Value) -> None:
    with pytest.raises((ValueError, TypeError)):
        encode(value)


def test_status_lines() -> None:
    assert tagged("a1", "OK", "LOGIN completed") == b"a1 OK LOGIN completed\r\n"
    assert tagged("a2", "NO", "No such folder", "NONEXISTENT") == b"a2 NO [NONEXISTENT] No such folder\r\n"
    assert tagged("a3", "OK", "", "READ-WRITE") == b"a3 OK [READ-WRITE] OK\r\n"
    assert untagged_status("OK", "Ready", "CAPABILITY IMAP4rev1") == b"* OK [CAPABILITY IMAP4rev1] Ready\r\n"
    assert untagged_status("BYE", "Logging out") == b"* BYE Logging out\r\n"
    assert continuation() == b"+ Ready\r\n"
    assert untagged(3, Atom("EXISTS")) == b"* 3 EXISTS\r\n"
    assert untagged(Atom("FLAGS"), flag_list({"$Junk", "\\Seen", "\\Answered"})) == (
        b"* FLAGS (\\Answered \\Seen $Junk)\r\n"
    )


@pytest.mark.parametrize(
    "hostile",
    ["x\r\n* OK [ALERT] pwned", "x\n* 1 EXISTS", "x\r* BYE", "nul\x00byte", "8bit caf\u00e9 \U0001f4e7"],
)
def test_client_text_in_response_text_cannot_inject_a_line(hostile: str) -> None:
    for line in (
        tagged("a1", "NO", f"No folder {hostile}"),
        tagged("a1", "NO", "x", hostile),
        untagged_status("OK", hostile, hostile),
        continuation(hostile),
    ):
        assert line.endswith(b"\r\n")
        body = line[:-2]
        assert b"\r" not in body and b"\n" not in body and b"\x00" not in body
        assert all(0x20 <= octet < 0x7F for octet in body)


def test_a_code_cannot_close_its_brackets_early() -> None:
    assert tagged("a", "NO", "t", "OVERQUOTA] [ALERT") == b"a NO [OVERQUOTA  [ALERT] t\r\n"


def test_a_tag_that_is_not_one_is_answered_untagged() -> None:
    assert tagged("a\r\nb", "BAD", "x") == b"* BAD x\r\n"
    assert tagged("", "BAD", "x") == b"* BAD x\r\n"


def test_a_hostile_name_in_a_list_response_reads_back_as_one_value() -> None:
    """A client-side reader parses the response as one string: the literal carries the CRLF."""
    name = "Evil\r\n* 1 EXISTS"
    line = untagged(Atom("LIST"), (), "/", name)
    assert line == b'* LIST () "/" {16}\r\nEvil\r\n* 1 EXISTS\r\n'
    # Read back with the command reader's grammar (the same for literals): one string, no extra line.
    reader = CommandReader()
    reader.receive_data(b"t " + line[2:])
    events = []
    while (event := reader.next_event()) is not None:
        events.append(event)
    assert events == [
        LiteralRequested("t", 16),
        Command("t", "LIST", ((), String(b"/"), String(name.encode(), literal=True))),
    ]
