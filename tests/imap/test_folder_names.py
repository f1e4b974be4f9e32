"""IMAP folder names: modified UTF-7 both ways, and LIST patterns that match as RFC 3501 says
(and in time proportional to the name, whatever the pattern)."""

from __future__ import annotations

import pytest

from postroom.imap.folder_names import MAX_PATTERN, decode_name, encode_name, list_matcher


@pytest.mark.parametrize(
    ("text", "wire"),
    [
        ("INBOX", "INBOX"),
        ("Entwürfe", "Entw&APw-rfe"),
        ("Tom & Jerry", "Tom &- Jerry"),
        ("&", "&-"),
        ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),  # RFC 3501 §5.1.3's example
        ("Отправленные", "&BB4EQgQ,BEAEMAQyBDsENQQ9BD0ESwQ1-"),
        ("📧 Mail", "&2D3c5w- Mail"),  # outside the BMP: a surrogate pair
        ("é&é", "&AOk-&-&AOk-"),
        ("", ""),
    ],
)
def test_names_encode_and_decode(text: str, wire: str) -> None:
    assert encode_name(text) == wire
    assert decode_name(wire) == text


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        ("Entwürfe", "outside printable ASCII"),
        ("tab\there", "outside printable ASCII"),
        ("a\r\nb", "outside printable ASCII"),
        ("Entw&APw", "closed by '-'"),
        ("&AP*-", "alphabet"),
        ("&APw=-", "alphabet"),
        ("&APw/-", "alphabet"),
        ("&A-", "middle of a character"),
        ("&APx-", "bits left over"),
        ("&AGE-", "printable ASCII"),  # "a" encoded
        ("&ACY-", "printable ASCII"),  # "&" encoded
        ("&2D0-", "surrogate"),  # a lone high surrogate
        ("&AA0ACg-", "control"),  # CR LF hidden in base64
        ("&AAA-", "control"),  # NUL
    ],
)
def test_bad_modified_utf7_is_refused_with_a_reason(wire: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        decode_name(wire)


NAMES = [
    "INBOX",
    "INBOX/Receipts",
    "Sent",
    "Projects",
    "Projects/2026",
    "Projects/2026/Q1",
    "Junk",
    "Entwürfe",
]


@pytest.mark.parametrize(
    ("reference", "pattern", "expected"),
    [
        ("", "*", NAMES),
        ("", "%", ["INBOX", "Sent", "Projects", "Junk", "Entwürfe"]),
        ("", "Projects/%", ["Projects/2026"]),
        ("", "Projects/*", ["Projects/2026", "Projects/2026/Q1"]),
        ("Projects/", "%", ["Projects/2026"]),
        ("Projects/", "*/Q1", ["Projects/2026/Q1"]),
        ("", "inbox", ["INBOX"]),
        ("", "InBox/%", ["INBOX/Receipts"]),
        ("", "*2026*", ["Projects/2026", "Projects/2026/Q1"]),
        ("", "%/%", ["INBOX/Receipts", "Projects/2026"]),
        ("", "Entw*", ["Entwürfe"]),
        ("", "", []),
        ("", "sent", []),  # only INBOX is case-insensitive
        ("", "%*%", NAMES),
        ("", "P%%s", ["Projects"]),
    ],
)
def test_list_patterns(reference: str, pattern: str, expected: list[str]) -> None:
    matches = list_matcher(reference, pattern)
    assert [name for name in NAMES if matches(name)] == expected


def test_inbox_in_any_case_is_matched_by_name() -> None:
    assert list_matcher("", "INBOX")("inbox")
    assert list_matcher("", "INBOX/*")("Inbox/Receipts")
    assert not list_matcher("", "INBOXES")("INBOX")


def test_pathological_patterns_answer() -> None:
    """A backtracking matcher (a regex of `.*`) would not return from these within the suite's time."""
    name = "a" * 255
    assert not list_matcher("", "*%" * 400 + "x")(name)
    assert not list_matcher("", "*a" * 300 + "b")(name)
    assert list_matcher("", "*a" * 200)(name)
    assert not list_matcher("", "%a" * 300 + "/")(name + "/")


def test_the_pattern_length_is_bounded() -> None:
    list_matcher("", "x" * MAX_PATTERN)
    with pytest.raises(ValueError, match="at most"):
        list_matcher("ref/", "x" * MAX_PATTERN)


def test_a_stored_name_with_line_ends_is_written_as_printable_ascii() -> None:
    wire = encode_name("Evil\r\n* BYE")
    assert wire == "Evil&AA0ACg-* BYE"
    assert all(" " <= char <= "~" for char in wire)
