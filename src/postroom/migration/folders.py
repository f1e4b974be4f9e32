"""Where each folder of the source mailbox goes in the Postroom mailbox: the folder plan.

- INBOX (any case) goes to the Inbox.
- A folder the source marks with a special-use flag (RFC 6154 LIST attributes `\\Sent \\Drafts
  \\Junk \\Trash \\Archive`; `\\Spam`, an older name for junk, too) goes to the Postroom folder of that
  special use. Where the source marks none, the well-known names do (`WELL_KNOWN`: "Sent Items",
  "Deleted Items", "Junk E-mail", "Spam" ...; at the top level or under INBOX). The first source
  folder of each special use takes it; a second one is copied as an ordinary folder under its own name.
- Every other folder keeps its name and hierarchy: the source's separator becomes "/" ("Projects.2026"
  on a server whose separator is "." becomes "Projects/2026").
- Skipped, and reported: a folder with "/" in a level of its name (spec §2: the service skips them),
  one with an empty level, a level with spaces around it or control characters, one whose name is
  longer than the mailstore's `MAX_NAME` characters or `MAX_DEPTH` levels, and the folders past the
  mailstore's `MAX_FOLDERS` for a mailbox. Folders that cannot hold messages (`\\Noselect`) are not
  copied: their children's hierarchy makes them.

*Security:* names and flags come from the source server. Each name is bounded here (length, levels)
before anything is created; the mailstore checks it again. The number of folders the plan holds is
bounded by `MAX_FOLDERS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from postroom.mailstore.mailbox import INBOX, MAX_DEPTH, MAX_FOLDERS, MAX_NAME, SEPARATOR, SPECIAL_USES
from postroom.migration.source import SourceFolder

MAX_SOURCE_NAME = 1000  # characters of a source folder's name (what `migrated_messages` records)

# The Postroom folder of each special use (the standard folders every mailbox is created with).
STANDARD = {
    "\\Sent": "Sent",
    "\\Drafts": "Drafts",
    "\\Junk": "Junk",
    "\\Trash": "Trash",
    "\\Archive": "Archive",
}
_FLAG_ALIASES = {"\\spam": "\\Junk"} | {use.lower(): use for use in SPECIAL_USES}
WELL_KNOWN = {
    "\\Sent": ("sent", "sent items", "sent messages", "sent mail", "outbox sent"),
    "\\Drafts": ("drafts", "draft"),
    "\\Junk": ("junk", "junk e-mail", "junk email", "junk mail", "spam", "bulk mail"),
    "\\Trash": ("trash", "deleted items", "deleted messages", "bin", "deleted"),
    "\\Archive": ("archive", "archives"),
}


@dataclass(frozen=True, slots=True)
class PlannedFolder:
    source: str  # the source server's name
    target: str  # the Postroom folder ("Inbox", "Sent", "Projects/2026")
    special_use: str  # "" or the special use the target has


@dataclass(frozen=True, slots=True)
class SkippedFolder:
    source: str
    reason: str


@dataclass(frozen=True, slots=True)
class FolderPlan:
    folders: list[PlannedFolder]
    skipped: list[SkippedFolder]


def plan_folders(found: Sequence[SourceFolder]) -> FolderPlan:
    folders: list[PlannedFolder] = []
    skipped: list[SkippedFolder] = []
    taken: set[str] = set()
    selectable = [folder for folder in found if folder.selectable]
    # Flagged folders claim their special use before any folder that only has its name.
    by_flag = {folder.name: _flagged_use(folder) for folder in selectable}
    for folder in selectable:
        use = by_flag[folder.name]
        if use and use not in taken:
            taken.add(use)
    claimed: set[str] = set()
    for folder in selectable:
        if len(folders) == MAX_FOLDERS:
            skipped.append(SkippedFolder(folder.name, f"more than {MAX_FOLDERS} folders"))
            continue
        if folder.name.upper() == "INBOX":
            folders.append(PlannedFolder(folder.name, INBOX, ""))
            continue
        use = by_flag[folder.name] or _named_use(folder, taken)
        if use and use not in claimed:
            claimed.add(use)
            folders.append(PlannedFolder(folder.name, STANDARD[use], use))
            continue
        target, problem = _target_name(folder)
        if problem:
            skipped.append(SkippedFolder(folder.name, problem))
        else:
            folders.append(PlannedFolder(folder.name, target, ""))
    return FolderPlan(folders, skipped)


def _flagged_use(folder: SourceFolder) -> str:
    for flag in folder.flags:
        use = _FLAG_ALIASES.get(flag.lower())
        if use:
            return use
    return ""


def _named_use(folder: SourceFolder, flagged: set[str]) -> str:
    name = folder.name
    if folder.separator and name.upper().startswith("INBOX" + folder.separator):
        name = name[len("INBOX") + len(folder.separator) :]  # Courier and Cyrus keep folders under INBOX
    if folder.separator and folder.separator in name:
        return ""
    for use, names in WELL_KNOWN.items():
        if use not in flagged and name.casefold() in names:
            return use
    return ""


def _target_name(folder: SourceFolder) -> tuple[str, str]:
    """The Postroom name of an ordinary folder, or ("", why it is skipped)."""
    if len(folder.name) > MAX_SOURCE_NAME:
        return "", f"its name is longer than {MAX_SOURCE_NAME} characters; rename it on the source to copy it"
    levels = folder.name.split(folder.separator) if folder.separator else [folder.name]
    if folder.separator != SEPARATOR and any(SEPARATOR in level for level in levels):
        return "", 'its name has "/" in it, which the migration skips; rename it on the source to copy it'
    if any(not level.isprintable() for level in levels):
        return "", "its name has control characters; rename it on the source to copy it"
    if any(not level.strip() for level in levels):
        return "", "its name has an empty level; rename it on the source to copy it"
    if any(level != level.strip() for level in levels):
        return "", "a level of its name begins or ends with a space; rename it on the source to copy it"
    if len(levels) > MAX_DEPTH:
        return "", f"it is more than {MAX_DEPTH} levels deep; move it up on the source to copy it"
    if levels[0].upper() == "INBOX":
        levels[0] = INBOX
    target = SEPARATOR.join(levels)
    if len(target) > MAX_NAME:
        return "", f"its name is longer than {MAX_NAME} characters; rename it on the source to copy it"
    return target, ""
