"""IMAP sequence sets: what a FETCH, STORE or SEARCH over `2:4,*` names, and nothing more."""

from __future__ import annotations

import pytest

from postroom.imap.sequence import MAX_RANGES, SequenceError, SequenceSet, compact_uid_set


@pytest.mark.parametrize(
    ("text", "largest", "members"),
    [
        ("1", 5, [1]),
        ("2:4", 5, [2, 3, 4]),
        ("4:2", 5, [2, 3, 4]),
        ("*", 5, [5]),
        ("5:*", 7, [5, 6, 7]),
        ("*:3", 5, [3, 4, 5]),
        ("1,3,2,3,1:2", 5, [1, 2, 3]),
        ("4:6,1:2,5:9", 10, [1, 2, 4, 5, 6, 7, 8, 9]),
        ("9:*", 5, [5]),  # RFC 3501 §6.4.8: `9:*` with 5 largest is 5:9, which holds 5
        ("7", 5, []),
        ("1:*", 0, []),  # an empty folder
        ("*", 0, []),
        ("1:4294967295", 3, [1, 2, 3]),
    ],
)
def test_members(text: str, largest: int, members: list[int]) -> None:
    assert list(SequenceSet.parse(text).members(largest)) == members


def test_highest_tells_a_sequence_number_past_the_folder_apart() -> None:
    assert SequenceSet.parse("1:3").highest(5) == 3
    assert SequenceSet.parse("2,9").highest(5) == 9
    assert SequenceSet.parse("9:*").highest(5) == 9
    assert SequenceSet.parse("1:*").highest(0) == 0
    assert SequenceSet.parse("1").highest(0) == 1
    assert SequenceSet.parse("5:*").uses_star and not SequenceSet.parse("5:6").uses_star


def test_contains_and_select_work_per_range_not_per_number() -> None:
    whole = SequenceSet.parse("1:4294967295")
    assert whole.contains(4294967295, 10)
    assert whole.select([3, 70, 4000000000], 4000000000) == [3, 70, 4000000000]
    uids = [2, 5, 9, 12, 40]
    assert SequenceSet.parse("3:10,40:*").select(uids, 40) == [5, 9, 40]
    assert SequenceSet.parse("*").select(uids, uids[-1]) == [40]
    assert SequenceSet.parse("1:*").select([], 0) == []
    assert not SequenceSet.parse("3:10").contains(11, 20)
    assert not SequenceSet.parse("3:10").contains(2, 20)
    assert SequenceSet.parse("3:10,*").contains(20, 20)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0",
        "1:0",
        "01",
        "-1",
        "1:",
        ":1",
        "1,,2",
        "1,",
        "a",
        "1.5",
        "4294967296",
        "99999999999",
        "١",
        "**",
        "1:2:3",
    ],
)
def test_invalid_sets_are_refused_with_a_bad_text(text: str) -> None:
    with pytest.raises(SequenceError, match="sequence set"):
        SequenceSet.parse(text)


def test_the_number_of_ranges_is_bounded() -> None:
    assert len(SequenceSet.parse(",".join(["1"] * MAX_RANGES)).ranges) == MAX_RANGES
    with pytest.raises(SequenceError, match="more than"):
        SequenceSet.parse(",".join(["1"] * (MAX_RANGES + 1)))


@pytest.mark.parametrize(
    ("uids", "text"),
    [
        ([1, 2, 3, 7], "1:3,7"),
        ([7], "7"),
        ([], ""),
        ([5, 4, 3], "5,4,3"),  # order kept: COPYUID pairs its two sets by position
        ([1, 2, 10, 11, 12, 4], "1:2,10:12,4"),
    ],
)
def test_compact_uid_set(uids: list[int], text: str) -> None:
    assert compact_uid_set(uids) == text
    if uids and uids == sorted(uids):
        assert list(SequenceSet.parse(text).members(max(uids))) == uids
