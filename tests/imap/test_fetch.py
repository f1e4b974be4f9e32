"""FETCH: attributes read as RFC 3501 writes them (anything else a BAD), and the FETCH line a client
reads for one message."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from postroom.imap.fetch import (
    MAX_ITEMS,
    FetchError,
    FetchItem,
    FetchRequest,
    internal_date,
    parse_fetch,
    render_fetch,
)
from postroom.imap.message import MessageView
from postroom.imap.syntax import NIL, Argument, Atom, Command, CommandReader, String
from tests.imap.imap_values import read_value, read_values

FORWARDED = (Path(__file__).parent / "messages" / "forwarded.eml").read_bytes()


@dataclass(frozen=True, slots=True)
class Record:
    uid: int = 7
    flags: frozenset[str] = frozenset({"\\Seen", "$Work"})
    internal_date: float = 837571465.0  # 17-Jul-1996 02:44:25 UTC
    size: int = len(FORWARDED)
    modseq: int = 42
    envelope: bytes | None = None
    bodystructure: bytes | None = None


def arguments(text: bytes) -> tuple[Argument, ...]:
    """FETCH's arguments after the sequence set, as the command reader gives them."""
    reader = CommandReader()
    reader.receive_data(b"t FETCH 1 " + text + b"\r\n")
    command = reader.next_event()
    assert isinstance(command, Command), command
    return command.arguments[1:]


def fetch(text: bytes, *, uid: bool = False) -> FetchRequest:
    return parse_fetch(arguments(text), uid=uid)


def names(request: FetchRequest) -> list[str]:
    return [item.name + (f"[{item.section}]" if item.is_section else "") for item in request.items]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"FLAGS", ["FLAGS"]),
        (b"all", ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"]),
        (b"FAST", ["FLAGS", "INTERNALDATE", "RFC822.SIZE"]),
        (b"FULL", ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"]),
        (b"(uid flags Flags)", ["UID", "FLAGS"]),
        (b"BODY[]", ["BODY[][]"]),
        (b"body.peek[header.fields (From To)]", ["BODY[][HEADER.FIELDS (From To)]"]),
        (
            b'BODY.PEEK[HEADER.FIELDS.NOT ("X-Spam" Received)]',
            ["BODY[][HEADER.FIELDS.NOT (X-Spam Received)]"],
        ),
        (b"BODY[1.2.mime]", ["BODY[][1.2.MIME]"]),
        (b"BODY[2.HEADER]", ["BODY[][2.HEADER]"]),
        (b"BODY[3]", ["BODY[][3]"]),
        (
            b"(RFC822 RFC822.HEADER RFC822.TEXT RFC822.SIZE)",
            ["RFC822", "RFC822.HEADER", "RFC822.TEXT", "RFC822.SIZE"],
        ),
        (b"(BODYSTRUCTURE MODSEQ)", ["BODYSTRUCTURE", "MODSEQ"]),
        (b"FLAGS (CHANGEDSINCE 12345)", ["FLAGS", "MODSEQ"]),
    ],
)
def test_attributes(text: bytes, expected: list[str]) -> None:
    assert names(fetch(text)) == expected


def test_uid_fetch_answers_uid_first_and_changedsince_is_kept() -> None:
    request = fetch(b"(FLAGS) (CHANGEDSINCE 9)", uid=True)
    assert names(request) == ["UID", "FLAGS", "MODSEQ"]
    assert request.changed_since == 9
    assert fetch(b"FLAGS").changed_since is None


@pytest.mark.parametrize(
    ("text", "needs", "sets_seen"),
    [
        (b"(FLAGS UID RFC822.SIZE INTERNALDATE MODSEQ)", "none", False),
        (b"ENVELOPE", "header", False),
        (b"BODY.PEEK[HEADER]", "header", False),
        (b"RFC822.HEADER", "header", False),
        (b"BODY[HEADER.FIELDS (SUBJECT)]", "header", True),
        (b"BODY.PEEK[]", "full", False),
        (b"BODY.PEEK[1.HEADER]", "full", False),
        (b"(FLAGS BODY[])", "full", True),
        (b"RFC822", "full", True),
        (b"RFC822.TEXT", "full", True),
        (b"BODYSTRUCTURE", "full", False),
    ],
)
def test_what_a_request_needs_and_whether_it_reads_the_message(
    text: bytes, needs: str, sets_seen: bool
) -> None:
    request = fetch(text)
    assert (request.needs, request.sets_seen) == (needs, sets_seen)


def test_a_cached_envelope_spares_the_read() -> None:
    request = fetch(b"(FLAGS ENVELOPE BODYSTRUCTURE)")
    assert request.needs_for(Record()) == "full"
    cached = Record(envelope=b"(NIL)", bodystructure=b'("text")')
    assert request.needs_for(cached) == "none"
    assert fetch(b"(ENVELOPE BODY)").needs_for(cached) == "full"  # BODY is not cached


@pytest.mark.parametrize(
    "text",
    [
        b"BOGUS",
        b"(FLAGS ALL)",
        b"()",
        b"BODY[4.0]",
        b"BODY[0]",
        b"BODY[1.]",
        b"BODY[MIME]",
        b"BODY[HEADER.FIELDS]",
        b"BODY[HEADER.FIELDS ()]",
        b"BODY[HEADER.FIELDS (a:b)]",
        b"BODY[HEADER.FIELDS FROM]",
        b"BODY[TEXT (FROM)]",
        b"BODY[TEXTS]",
        b"BODY[]<1>",
        b"BODY[]<1.0>",
        b"BODY[]<-1.5>",
        b"BODY[]<99999999999.1>",
        b"BODY.PEEK",
        b"BINARY[]",
        b"FLAGS (CHANGEDSINCE 0)",
        b"FLAGS (CHANGEDSINCE 99999999999999999999)",
        b"FLAGS (CHANGEDSINCE " + b"9" * 5000 + b")",
        b"FLAGS (VANISHED)",
        b"FLAGS (CHANGEDSINCE)",
        b"FLAGS (CHANGEDSINCE 1) x",
        b'"FLAGS"',
        b"BODY[" + b".".join([b"1"] * 40) + b"]",
    ],
)
def test_invalid_requests_are_bad(text: bytes) -> None:
    with pytest.raises(FetchError):
        fetch(text)


def test_empty_and_too_many_attributes_are_bad() -> None:
    with pytest.raises(FetchError):
        parse_fetch(())
    with pytest.raises(FetchError):
        parse_fetch((NIL,))
    with pytest.raises(FetchError, match="at most"):
        parse_fetch((tuple(Atom("FLAGS") for _ in range(MAX_ITEMS + 1)),))
    with pytest.raises(FetchError):
        parse_fetch((String(b"FLAGS"),))


def test_internal_date() -> None:
    assert internal_date(837571465) == "17-Jul-1996 02:44:25 +0000"
    assert internal_date(0) == "01-Jan-1970 00:00:00 +0000"


def fetched(
    text: bytes, record: Record | None = None, *, uid: bool = False, **keywords: bool
) -> list[object]:
    line = render_fetch(fetch(text, uid=uid), 3, record or Record(), MessageView(FORWARDED), **keywords)
    assert line.startswith(b"* 3 FETCH (") and line.endswith(b")\r\n")
    value = read_value(line[len(b"* 3 FETCH ") : -2])
    assert isinstance(value, list)
    return value


def test_render_simple_items() -> None:
    assert fetched(b"(UID FLAGS INTERNALDATE RFC822.SIZE MODSEQ)") == [
        b"UID",
        7,
        b"FLAGS",
        [b"\\Seen", b"$Work"],
        b"INTERNALDATE",
        b"17-Jul-1996 02:44:25 +0000",
        b"RFC822.SIZE",
        len(FORWARDED),
        b"MODSEQ",
        [42],
    ]


def test_render_envelope_and_structure_from_the_bytes_or_the_cache() -> None:
    view = MessageView(FORWARDED)
    assert fetched(b"(ENVELOPE BODYSTRUCTURE BODY)") == [
        b"ENVELOPE",
        read_value(view.envelope()),
        b"BODYSTRUCTURE",
        read_value(view.bodystructure(True)),
        b"BODY",
        read_value(view.bodystructure(False)),
    ]
    cached = Record(envelope=b'(NIL "cached" NIL NIL NIL NIL NIL NIL NIL NIL)', bodystructure=b'("text" "x")')
    line = render_fetch(fetch(b"(ENVELOPE BODYSTRUCTURE)"), 1, cached, None)
    assert line == b"* 1 FETCH (ENVELOPE " + cached.envelope + b' BODYSTRUCTURE ("text" "x"))\r\n'
    with pytest.raises(ValueError, match="bytes"):
        render_fetch(fetch(b"BODY"), 1, cached, None)


def test_render_sections_as_literals_with_partial_ranges() -> None:
    line = render_fetch(
        fetch(b"(BODY.PEEK[2.1.1] BODY[1]<0.5> BODY[1]<100.5> RFC822.HEADER)"),
        1,
        Record(),
        MessageView(FORWARDED),
    )
    assert line == (
        b"* 1 FETCH (BODY[2.1.1] {13}\r\nSee attached. BODY[1]<0> {5}\r\nForwa BODY[1]<100> {0}\r\n"
        b" RFC822.HEADER {"
        + str(FORWARDED.index(b"\r\n\r\n") + 4).encode()
        + b"}\r\n"
        + FORWARDED[: FORWARDED.index(b"\r\n\r\n") + 4]
        + b")\r\n"
    )
    values = read_values(line[len(b"* 1 FETCH (") : -3])
    assert values[0] == b"BODY[2.1.1]" and values[1] == b"See attached."
    header = fetched(b'BODY[HEADER.FIELDS (subject "FROM")]')
    assert header == [
        b"BODY[HEADER.FIELDS (subject FROM)]",
        b"From: bob@contoso.test\r\nSubject: Fwd: Invoice\r\n\r\n",
    ]
    assert fetched(b"RFC822") == [b"RFC822", FORWARDED]
    assert fetched(b"BODY[9]") == [b"BODY[9]", b""]


def test_flags_are_added_when_reading_set_seen() -> None:
    assert fetched(b"BODY[1]", flags_changed=True) == [
        b"BODY[1]",
        b"Forwarding this.\r\n",
        b"FLAGS",
        [b"\\Seen", b"$Work"],
    ]
    assert fetched(b"(FLAGS BODY[1])", flags_changed=True)[::2] == [b"FLAGS", b"BODY[1]"]


def test_a_hostile_keyword_cannot_break_the_line() -> None:
    record = replace(Record(), flags=frozenset({"bad\r\n* BYE", "\\Seen"}))
    line = render_fetch(fetch(b"FLAGS"), 1, record, None)
    assert line == b"* 1 FETCH (FLAGS (\\Seen {10}\r\nbad\r\n* BYE))\r\n"  # a literal: read as data
    assert fetched(b"FLAGS", record) == [b"FLAGS", [b"\\Seen", b"bad\r\n* BYE"]]


def test_items_compare_by_value() -> None:
    assert FetchItem("FLAGS") == FetchItem("FLAGS")
    assert fetch(b"(FLAGS FLAGS)").items == (FetchItem("FLAGS"),)


def test_uid_fetch_answers_uid_first_when_rendering_too() -> None:
    line = render_fetch(fetch(b"FLAGS"), 2, Record(), None, uid=True)
    assert line == b"* 2 FETCH (UID 7 FLAGS (\\Seen $Work))\r\n"
    assert render_fetch(fetch(b"(FLAGS UID)"), 2, Record(), None, uid=True).count(b"UID") == 1


def test_condstore_use_is_reported() -> None:
    assert fetch(b"(FLAGS MODSEQ)").uses_modseq
    assert fetch(b"FLAGS (CHANGEDSINCE 3)").uses_modseq
    assert not fetch(b"FLAGS").uses_modseq
