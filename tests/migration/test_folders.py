"""The folder plan: where each source folder goes (INBOX, special use by flag or by well-known name,
hierarchy with the separator translated), and which folders are skipped with a reason."""

from __future__ import annotations

import pytest

from postroom.migration import SourceFolder, plan_folders
from postroom.migration.folders import MAX_FOLDERS


def folder(name: str, *flags: str, separator: str = ".") -> SourceFolder:
    return SourceFolder(name, separator, frozenset(flags))


def targets(*found: SourceFolder) -> dict[str, tuple[str, str]]:
    return {f.source: (f.target, f.special_use) for f in plan_folders(found).folders}


def test_flags_map_to_the_special_folders_and_the_first_of_each_wins() -> None:
    assert targets(
        folder("inbox"),
        folder("Gesendet", "\\Sent"),
        folder("Sent Messages", "\\Sent"),
        folder("Papierkorb", "\\Trash", "\\HasNoChildren"),
        folder("Spam", "\\Spam"),
        folder("Entwürfe", "\\Drafts"),
        folder("Archiv", "\\Archive"),
    ) == {
        "inbox": ("Inbox", ""),
        "Gesendet": ("Sent", "\\Sent"),
        "Sent Messages": ("Sent Messages", ""),
        "Papierkorb": ("Trash", "\\Trash"),
        "Spam": ("Junk", "\\Junk"),
        "Entwürfe": ("Drafts", "\\Drafts"),
        "Archiv": ("Archive", "\\Archive"),
    }


def test_well_known_names_map_where_the_server_marks_nothing() -> None:
    assert targets(
        folder("INBOX"),
        folder("INBOX.Sent Items"),
        folder("Deleted Items"),
        folder("Junk E-mail"),
        folder("Work.Drafts"),  # not at the top level: an ordinary folder
    ) == {
        "INBOX": ("Inbox", ""),
        "INBOX.Sent Items": ("Sent", "\\Sent"),
        "Deleted Items": ("Trash", "\\Trash"),
        "Junk E-mail": ("Junk", "\\Junk"),
        "Work.Drafts": ("Work/Drafts", ""),
    }


def test_a_flag_beats_a_well_known_name() -> None:
    assert targets(folder("Trash"), folder("Bin", "\\Trash")) == {
        "Trash": ("Trash", ""),
        "Bin": ("Trash", "\\Trash"),
    }


def test_the_separator_becomes_a_slash_and_noselect_folders_are_not_copied() -> None:
    assert targets(
        folder("Projects", "\\Noselect", "\\HasChildren"),
        folder("Projects.2026.Q1"),
        folder("INBOX.Receipts"),
        folder("Work\\Clients", separator="\\"),
        folder("Lists/Python", separator="/"),
    ) == {
        "Projects.2026.Q1": ("Projects/2026/Q1", ""),
        "INBOX.Receipts": ("Inbox/Receipts", ""),
        "Work\\Clients": ("Work/Clients", ""),
        "Lists/Python": ("Lists/Python", ""),
    }


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("Odd/Name", '"/" in it'),
        ("a..b", "empty level"),
        ("x" * 256, "longer than 255"),
        ("Bell\x07", "control characters"),
    ],
)
def test_folders_that_cannot_be_copied_are_skipped_with_the_reason(name: str, reason: str) -> None:
    plan = plan_folders([folder("INBOX"), folder(name)])
    assert [f.target for f in plan.folders] == ["Inbox"]
    assert [s.source for s in plan.skipped] == [name]
    assert reason in plan.skipped[0].reason


def test_a_hostile_number_of_folders_is_bounded() -> None:
    plan = plan_folders([folder(f"f{index}") for index in range(MAX_FOLDERS + 3)])
    assert len(plan.folders) == MAX_FOLDERS
    assert len(plan.skipped) == 3
    assert "more than" in plan.skipped[0].reason
