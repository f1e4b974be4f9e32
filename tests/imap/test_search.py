"""SEARCH: which messages of a small folder a search finds, what it needs to read, and the replies to
searches that are not valid."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from postroom.imap.message import MessageView
from postroom.imap.search import (
    BADCHARSET,
    MAX_DEPTH,
    MAX_KEYS,
    MAX_TEXT_KEYS,
    SearchError,
    SearchProgram,
    parse_search,
)
from postroom.imap.syntax import Argument, Atom, Command, CommandReader, String

MESSAGES = Path(__file__).parent / "messages"
DAY = 86400.0
NOV_30 = datetime.datetime(2026, 11, 30, 12, tzinfo=datetime.UTC).timestamp()


@dataclass
class Message:
    seq: int
    uid: int
    flags: frozenset[str]
    internal_date: float
    name: str
    modseq: int
    views: list[int] = field(default_factory=list)  # counts loads, to show what a search reads

    @property
    def size(self) -> int:
        return len((MESSAGES / self.name).read_bytes())

    def view(self) -> MessageView:
        self.views.append(1)
        return MessageView((MESSAGES / self.name).read_bytes())


def folder() -> list[Message]:
    return [
        Message(1, 10, frozenset({"\\Seen"}), NOV_30, "plain.eml", 5),  # Date: Mon, 30 Nov 2026
        Message(2, 11, frozenset({"\\Seen", "\\Answered", "$Work"}), NOV_30 + DAY, "alternative.eml", 6),
        Message(3, 12, frozenset({"\\Flagged", "\\Recent"}), NOV_30 + 2 * DAY, "attachment.eml", 7),
        Message(4, 20, frozenset({"\\Deleted", "\\Recent", "\\Seen"}), NOV_30 + 3 * DAY, "forwarded.eml", 9),
        Message(5, 21, frozenset(), NOV_30 + 3 * DAY, "eightbit.eml", 9),
    ]


def arguments(text: bytes) -> tuple[Argument, ...]:
    reader = CommandReader()
    reader.receive_data(b"t SEARCH " + text + b"\r\n")
    events = []
    while (event := reader.next_event()) is not None:
        events.append(event)
    command = events[-1]
    assert isinstance(command, Command), command
    return command.arguments


def program(text: bytes, *, utf8: bool = False) -> SearchProgram:
    return parse_search(arguments(text), utf8=utf8)


def found(text: bytes, *, utf8: bool = False) -> list[int]:
    search = program(text, utf8=utf8)
    messages = folder()
    return [
        m.seq for m in messages if search.matches(m, messages=len(messages), highest_uid=messages[-1].uid)
    ]


@pytest.mark.parametrize(
    ("text", "seqs"),
    [
        (b"ALL", [1, 2, 3, 4, 5]),
        (b"SEEN", [1, 2, 4]),
        (b"UNSEEN", [3, 5]),
        (b"answered", [2]),
        (b"UNANSWERED DELETED", [4]),
        (b"UNDELETED FLAGGED", [3]),
        (b"DRAFT", []),
        (b"UNDRAFT UNFLAGGED", [1, 2, 4, 5]),
        (b"RECENT", [3, 4]),
        (b"NEW", [3]),
        (b"OLD", [1, 2, 5]),
        (b"KEYWORD $work", [2]),
        (b"UNKEYWORD $Work", [1, 3, 4, 5]),
        (b"LARGER 700", [3, 4]),
        (b"SMALLER 200", [5]),
        (b"2:3", [2, 3]),
        (b"*", [5]),
        (b"4:*", [4, 5]),
        (b"1,5", [1, 5]),
        (b"UID 11:12,21", [2, 3, 5]),
        (b"UID *", [5]),
        (b"UID 13:19", []),
        (b"NOT SEEN", [3, 5]),
        (b"NOT NOT SEEN", [1, 2, 4]),
        (b"OR ANSWERED FLAGGED", [2, 3]),
        (b"OR (SEEN DELETED) (UNSEEN FLAGGED)", [3, 4]),
        (b"(SEEN) (NOT DELETED)", [1, 2]),
        (b"SINCE 1-Dec-2026", [2, 3, 4, 5]),
        (b"ON 1-dec-2026", [2]),
        (b'BEFORE "1-Dec-2026"', [1]),
        (b"SENTON 30-Nov-2026", [1]),  # the Date: header's own day (+0100)
        (b"SENTSINCE 2-Dec-2026", [3, 4]),  # no Date: header in 5
        (b"SENTBEFORE 1-Dec-2026", [1]),
        (b"MODSEQ 7", [3, 4, 5]),
        (b'MODSEQ "/flags/\\\\seen" all 9', [4, 5]),
    ],
)
def test_flag_number_date_and_set_keys(text: bytes, seqs: list[int]) -> None:
    assert found(text) == seqs


@pytest.mark.parametrize(
    ("text", "seqs"),
    [
        (b"FROM fabrikam", [1, 2, 3, 5]),
        (b'FROM "doe, ann"', [1]),
        (b"TO carol", [1]),
        (b"CC dave", [1]),
        (b"BCC anyone", []),
        (b"SUBJECT invoice", [3, 4]),
        (b'SUBJECT "caf\xc3\xa9"', [1]),  # 8-bit: see the charset test
        (b"HEADER Message-ID inv-7", [3]),
        (b'HEADER Content-Language ""', [3]),  # an empty string: the field is present
        (b"HEADER X-Absent x", []),
        (b"BODY open", [1]),
        (b'BODY "CAF\xc3\x89"', [1, 2]),  # quoted-printable ISO-8859-1 decoded, case folded
        (b"BODY invoice", [4]),  # the forwarded message's header is its body
        (b"TEXT monthly", [2]),
        (b"TEXT nothing", [2]),
    ],
)
def test_text_keys_match_decoded_text(text: bytes, seqs: list[int]) -> None:
    assert found(b"CHARSET UTF-8 " + text) == seqs
    assert found(text, utf8=True) == seqs


def test_8bit_text_needs_a_charset_unless_utf8_is_enabled() -> None:
    with pytest.raises(SearchError, match="CHARSET UTF-8") as refused:
        found(b'SUBJECT "caf\xc3\xa9"')
    assert refused.value.status == "BAD"
    assert found(b"CHARSET us-ascii SUBJECT menu") == [1]
    with pytest.raises(SearchError):
        found(b'CHARSET US-ASCII SUBJECT "caf\xc3\xa9"')
    with pytest.raises(SearchError, match="UTF-8"):
        found(b'CHARSET UTF-8 SUBJECT "\xff"')


def test_another_charset_is_no_badcharset() -> None:
    with pytest.raises(SearchError) as refused:
        program(b"CHARSET ISO-8859-1 SUBJECT x")
    assert (refused.value.status, refused.value.code) == ("NO", BADCHARSET)
    assert refused.value.bad_charset


@pytest.mark.parametrize(
    ("text", "needs"),
    [
        (b"SEEN 1:3 UID 5 LARGER 3 SINCE 1-Jan-2026 MODSEQ 4", "none"),
        (b"SUBJECT x", "header"),
        (b"OR SEEN SENTON 1-Jan-2026", "header"),
        (b"(SEEN (FROM a))", "header"),
        (b"NOT BODY x", "full"),
        (b"FROM a TEXT b", "full"),
    ],
)
def test_what_a_search_reads(text: bytes, needs: str) -> None:
    assert program(text).needs == needs


def test_a_search_on_flags_never_loads_a_message() -> None:
    messages = folder()
    search = program(b"OR SEEN FLAGGED")
    for message in messages:
        search.matches(message)
    assert all(not message.views for message in messages)


def test_modseq_use_is_reported() -> None:
    assert program(b"MODSEQ 3").uses_modseq
    assert program(b"(OR SEEN MODSEQ 3)").uses_modseq
    assert not program(b"SEEN").uses_modseq


def test_star_needs_the_folder_facts() -> None:
    search = program(b"UID 1:*")
    with pytest.raises(ValueError, match="highest_uid"):
        search.matches(folder()[0])
    assert search.matches(folder()[0], messages=5, highest_uid=21)
    assert found(b"1:*") == [1, 2, 3, 4, 5]
    empty = program(b"1:*")
    assert not empty.matches(folder()[0], messages=0, highest_uid=0)


@pytest.mark.parametrize(
    "text",
    [
        b"",
        b"BOGUS",
        b"FROM",
        b"HEADER Subject",
        b"OR SEEN",
        b"NOT",
        b"()",
        b"LARGER x",
        b"LARGER -1",
        b"LARGER 99999999999",
        b"SMALLER " + b"9" * 5000,
        b"SINCE 31-Feb-2026",
        b"SINCE 1-Foo-2026",
        b"SINCE 2026-01-01",
        b"SINCE 1-Jan-26",
        b"UID 0",
        b"UID x",
        b"0:3",
        b"1:2:3",
        b"SEEN CHARSET UTF-8",
        b"CHARSET",
        b"MODSEQ",
        b"MODSEQ 99999999999999999999",
        b'MODSEQ "/flags/\\\\seen" everyone 3',
        b"KEYWORD",
        b"CHARSET UTF-8",
    ],
)
def test_invalid_searches_are_bad(text: bytes) -> None:
    with pytest.raises(SearchError) as refused:
        if text:
            program(text)
        else:
            parse_search((), utf8=False)
    assert refused.value.status == "BAD"


def test_nesting_and_key_count_are_bounded() -> None:
    program(b"NOT " * MAX_DEPTH + b"SEEN")
    with pytest.raises(SearchError, match="too deep"):
        program(b"NOT " * (MAX_DEPTH + 1) + b"SEEN")
    with pytest.raises(SearchError, match="too deep"):
        program(b"OR " * (MAX_DEPTH + 1) + b" ".join([b"SEEN"] * (MAX_DEPTH + 2)))
    with pytest.raises(SearchError, match="at most"):
        parse_search(tuple(Atom("SEEN") for _ in range(MAX_KEYS + 1)), utf8=False)
    with pytest.raises(SearchError, match="at most"):
        parse_search(((Atom("SEEN"),) * (MAX_KEYS // 2), (Atom("SEEN"),) * (MAX_KEYS // 2 + 1)), utf8=False)


def test_string_arguments_may_be_literals() -> None:
    search = parse_search((Atom("SUBJECT"), String(b"menu", literal=True)), utf8=False)
    assert search.matches(folder()[0])


def test_text_keys_are_bounded() -> None:
    program(b" ".join([b"BODY x"] * MAX_TEXT_KEYS))
    with pytest.raises(SearchError, match="text keys"):
        program(b" ".join([b"SUBJECT x"] * MAX_TEXT_KEYS) + b" (FROM y)")
