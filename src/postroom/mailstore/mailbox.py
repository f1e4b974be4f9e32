"""The IMAP view of the mailstore: a mailbox's folders and messages as IMAP and the migration use them.

Plain functions over the caller's `Connection`. Reads run in `Database.read()`; every write runs in
the caller's transaction, which for anything a client is told is done is a `GroupCommitter.run` job
(the IMAP OK, the migration's record of a copied message come after the durable commit). None of
them checks tenants: the caller passes the id of a mailbox it already authenticated (the logged-in
IMAP mailbox) or looked up inside its tenant (the migration); `Mailstore` keeps the scoped reads of
the CLI and the admin center.

Folders have full hierarchical names with `SEPARATOR` ("Projects/2026"); the inbox is stored as
`INBOX` ("Inbox", shown to IMAP clients as "INBOX"). A folder has at most one special use (RFC 6154)
and a mailbox has at most one folder of each; the standard folders carry theirs from creation. A
folder's UIDVALIDITY never changes while it exists; a folder made again after a delete gets a new one
(from the clock, above any the mailbox ever gave: `mailbox_uidvalidity`), so a client's cached UIDs
are never wrongly reused.

Modification sequences (RFC 7162): every write call bumps the folder's `highestmodseq` once and gives
each message it touched (stored, flagged, copied in) that value; an expunge bumps it too. So a
session that sees the folder's highestmodseq move reads `changes_since` for new and changed messages
and diffs `folder_uids` for expunged ones.

Change notification: the writer of a change publishes `change_topic(mailbox_id)` after its commit
(local delivery, the IMAP server, the migration), so IDLE sessions on any process wake at once.

Bounds: a message's flags are stored as one space-separated text of at most `MAX_FLAGS_TEXT`
characters (the column's size); more keywords are refused (`FolderError`, IMAP `NO [LIMIT]`). A
folder name is at most `MAX_NAME` characters and `MAX_DEPTH` levels; a mailbox has at most
`MAX_FOLDERS` folders. A mailbox with `quota_bytes` takes no append or copy that would pass it
(`OverQuotaError`); deliveries from outside are the delivery room's decision.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from sqlalchemy import Connection, Row, bindparam, case, delete, func, insert, null, select, update

from postroom.model.message import HeaderSummary
from postroom.storage.database import announce_after_commit
from postroom.storage.prepared import PreparedStatement
from postroom.storage.schema import folders, mailbox_uidvalidity, messages, recipients

INBOX = "Inbox"
SEPARATOR = "/"
SPECIAL_USES = ("\\Sent", "\\Drafts", "\\Junk", "\\Trash", "\\Archive")
SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
STANDARD_FOLDERS = (
    (INBOX, ""),
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Junk", "\\Junk"),
    ("Trash", "\\Trash"),
    ("Archive", "\\Archive"),
)
MAX_FLAGS_TEXT = 200  # characters of a message's flags (the column's size)
MAX_NAME = 255  # characters of a folder's full name
MAX_DEPTH = 16  # levels of a folder name
MAX_FOLDERS = 1000  # folders of one mailbox

FlagMode = Literal["set", "add", "remove"]


class FolderError(ValueError):
    """The change cannot be made; the message says why and what to do (IMAP answers NO with it)."""


class FolderExistsError(FolderError):
    """IMAP: NO [ALREADYEXISTS]."""


class NoSuchFolderError(FolderError):
    """IMAP: NO [NONEXISTENT]."""


class OverQuotaError(FolderError):
    """IMAP: NO [OVERQUOTA]."""


@dataclass(frozen=True, slots=True)
class Folder:
    id: int
    mailbox_id: int
    name: str  # "Inbox", "Sent", "Projects/2026"
    special_use: str  # "" or one of SPECIAL_USES
    subscribed: bool
    uidvalidity: int
    uidnext: int
    highestmodseq: int


@dataclass(frozen=True, slots=True)
class FolderStatus:
    messages: int
    unseen: int
    size: int
    uidvalidity: int
    uidnext: int
    highestmodseq: int


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """One stored message without its bytes (the message is `prefix` + the blob `blob_id`)."""

    uid: int
    flags: frozenset[str]  # system flags as in SYSTEM_FLAGS, keywords as stored (case kept)
    internal_date: float  # epoch seconds
    size: int  # RFC822.SIZE: len(prefix) + the blob's size
    modseq: int
    blob_id: str
    prefix: bytes  # the headers the service added at delivery
    trace_id: str  # "" for appended and migrated messages
    envelope: bytes | None  # the cached IMAP ENVELOPE text, or None
    bodystructure: bytes | None  # the cached IMAP BODYSTRUCTURE text, or None
    search_headers: str | None = None  # SEARCH's cached header text; None: not yet, "": not cacheable


# What SEARCH reads of a message when it reads no octets (`search_rows`): uid, flags, internal date,
# size, modseq, cached header text (None: not yet; "": not cacheable).
SearchRow = tuple[int, frozenset[str], float, int, int, str | None]


@dataclass(frozen=True, slots=True)
class CachedTexts:
    """A message's cached IMAP texts (`imap.cache.cached_texts`), stored with it when known."""

    envelope: bytes
    bodystructure: bytes
    search_headers: str  # "": not cacheable (SEARCH reads the bytes)


@dataclass(frozen=True, slots=True)
class NewMessage:
    """One message for `append_many` (its blob is stored already)."""

    blob_id: str
    size: int
    flags: Iterable[str]
    internal_date: float
    summary: HeaderSummary
    prefix: bytes = b""
    cached: CachedTexts | None = None


@dataclass(frozen=True, slots=True)
class FlagUpdate:
    updated: list[MessageRecord]  # the messages whose flags changed, after the change
    modified: list[int]  # CONDSTORE: UIDs left alone because they changed after UNCHANGEDSINCE
    highestmodseq: int


def change_topic(mailbox_id: int) -> str:
    """The notification topic of a mailbox's changes (`cluster.notify`)."""
    return f"mailbox:{mailbox_id}"


# -- folders


def _folder(row: Row[Any]) -> Folder:
    return Folder(
        id=int(row.id),
        mailbox_id=int(row.mailbox_id),
        name=str(row.name),
        special_use=str(row.special_use),
        subscribed=bool(row.subscribed),
        uidvalidity=int(row.uidvalidity),
        uidnext=int(row.uidnext),
        highestmodseq=int(row.highestmodseq),
    )


def list_folders(conn: Connection, mailbox_id: int) -> list[Folder]:
    """The mailbox's folders, by name."""
    rows = conn.execute(select(folders).where(folders.c.mailbox_id == mailbox_id).order_by(folders.c.name))
    return [_folder(row) for row in rows]


def find_folder(conn: Connection, mailbox_id: int, name: str) -> Folder | None:
    """The folder of exactly this name, or None."""
    row = conn.execute(
        select(folders).where((folders.c.mailbox_id == mailbox_id) & (folders.c.name == name))
    ).first()
    return None if row is None else _folder(row)


def _check_name(name: str) -> None:
    if not name or len(name) > MAX_NAME:
        raise FolderError(f"a folder name has 1 to {MAX_NAME} characters")
    levels = name.split(SEPARATOR)
    if len(levels) > MAX_DEPTH:
        raise FolderError(f"a folder name has at most {MAX_DEPTH} levels")
    if any(not level or level != level.strip() for level in levels):
        raise FolderError(f"each level of a folder name is a non-blank name between {SEPARATOR!r}s")
    if any(ord(char) < 0x20 or char == "\x7f" for char in name):
        raise FolderError("a folder name has no control characters")


def _new_uidvalidity(conn: Connection, mailbox_id: int, now: float) -> int:
    """Larger than any the mailbox's folders ever had (deleted ones too), and at least the clock."""
    largest = conn.execute(
        select(func.max(folders.c.uidvalidity)).where(folders.c.mailbox_id == mailbox_id)
    ).scalar()
    last = conn.execute(
        select(mailbox_uidvalidity.c.last).where(mailbox_uidvalidity.c.mailbox_id == mailbox_id)
    ).scalar()
    value = max(int(now), int(largest or 0) + 1, int(last or 0) + 1)
    if last is None:
        conn.execute(insert(mailbox_uidvalidity).values(mailbox_id=mailbox_id, last=value))
    else:
        conn.execute(
            update(mailbox_uidvalidity)
            .where(mailbox_uidvalidity.c.mailbox_id == mailbox_id)
            .values(last=value)
        )
    return value


def create_mailbox_folders(conn: Connection, mailbox_id: int, now: float) -> None:
    """Make a new mailbox's standard folders, in the caller's (the directory's) transaction."""
    conn.execute(
        insert(folders),
        [
            {
                "mailbox_id": mailbox_id,
                "name": name,
                "special_use": special_use,
                "uidvalidity": int(now) + index,
                "uidnext": 1,
            }
            for index, (name, special_use) in enumerate(STANDARD_FOLDERS)
        ],
    )


def create_folder(conn: Connection, mailbox_id: int, name: str, now: float, special_use: str = "") -> Folder:
    """Create `name` and any missing parent ("a/b/c" makes "a" and "a/b"); the new folder."""
    _check_name(name)
    if name.casefold() == INBOX.casefold() or find_folder(conn, mailbox_id, name) is not None:
        raise FolderExistsError(f"the folder {name!r} exists already")
    if special_use:
        if special_use not in SPECIAL_USES:
            raise FolderError(f"the special uses are {' '.join(SPECIAL_USES)}")
        taken = conn.execute(
            select(folders.c.name).where(
                (folders.c.mailbox_id == mailbox_id) & (folders.c.special_use == special_use)
            )
        ).scalar()
        if taken is not None:
            raise FolderError(f"the folder {taken!r} is the mailbox's {special_use} folder already")
    count = conn.execute(select(func.count()).where(folders.c.mailbox_id == mailbox_id)).scalar_one()
    levels = name.split(SEPARATOR)
    wanted = [SEPARATOR.join(levels[: depth + 1]) for depth in range(len(levels))]
    missing = [path for path in wanted if find_folder(conn, mailbox_id, path) is None]
    if count + len(missing) > MAX_FOLDERS:
        raise FolderError(f"a mailbox has at most {MAX_FOLDERS} folders; delete some first")
    for path in missing:
        conn.execute(
            insert(folders).values(
                mailbox_id=mailbox_id,
                name=path,
                special_use=special_use if path == name else "",
                subscribed=True,
                uidvalidity=_new_uidvalidity(conn, mailbox_id, now),
                uidnext=1,
                highestmodseq=1,
            )
        )
    created = find_folder(conn, mailbox_id, name)
    assert created is not None
    return created


def _existing(conn: Connection, mailbox_id: int, name: str) -> Folder:
    found = find_folder(conn, mailbox_id, name)
    if found is None:
        raise NoSuchFolderError(f"there is no folder {name!r}")
    return found


def _children(conn: Connection, mailbox_id: int, name: str) -> list[Folder]:
    prefix = name + SEPARATOR
    return [folder for folder in list_folders(conn, mailbox_id) if folder.name.startswith(prefix)]


def delete_folder(conn: Connection, mailbox_id: int, name: str) -> int:
    """Delete the folder and its messages; the number of messages removed."""
    folder = _existing(conn, mailbox_id, name)
    if folder.name == INBOX:
        raise FolderError("the inbox cannot be deleted")
    if _children(conn, mailbox_id, name):
        raise FolderError(f"the folder {name!r} has subfolders: delete them first")
    removed = conn.execute(delete(messages).where(messages.c.folder_id == folder.id)).rowcount
    conn.execute(delete(folders).where(folders.c.id == folder.id))
    return int(removed)


def rename_folder(conn: Connection, mailbox_id: int, old: str, new: str, now: float) -> None:
    """Rename a folder and its subfolders; renaming the inbox moves its messages to a new folder `new`
    (RFC 3501 §6.3.5) and leaves the inbox empty."""
    folder = _existing(conn, mailbox_id, old)
    _check_name(new)
    if new.casefold() == INBOX.casefold() or find_folder(conn, mailbox_id, new) is not None:
        raise FolderExistsError(f"the folder {new!r} exists already")
    if new.startswith(old + SEPARATOR):
        raise FolderError("a folder cannot be moved inside itself")
    if folder.name == INBOX:
        target = create_folder(conn, mailbox_id, new, now)
        uids = folder_uids(conn, folder.id)
        move_messages(conn, mailbox_id, folder.id, uids, target.id)
        return
    parent = new.rpartition(SEPARATOR)[0]
    if parent and find_folder(conn, mailbox_id, parent) is None:
        create_folder(conn, mailbox_id, parent, now)
    for child in [folder, *_children(conn, mailbox_id, old)]:
        conn.execute(
            update(folders).where(folders.c.id == child.id).values(name=new + child.name[len(old) :])
        )


def subscribe(conn: Connection, mailbox_id: int, name: str, subscribed: bool) -> None:
    folder = _existing(conn, mailbox_id, name)
    conn.execute(update(folders).where(folders.c.id == folder.id).values(subscribed=subscribed))


# -- messages

_RECORD_COLUMNS = (
    messages.c.uid,
    messages.c.flags,
    messages.c.internal_date,
    messages.c.size,
    messages.c.modseq,
    messages.c.blob_id,
    messages.c.prefix,
    messages.c.trace_id,
    messages.c.envelope,
    messages.c.bodystructure,
    messages.c.search_headers,
)


def _record(row: Sequence[object], flag_sets: dict[object, frozenset[str]] | None = None) -> MessageRecord:
    """A row as a record; `flag_sets` keeps the flag sets parsed so far (a folder's rows share a few)."""
    uid, flags, internal_date, size, modseq, blob_id, prefix, trace_id, envelope, bodystructure, headers = row
    flag_set = None if flag_sets is None else flag_sets.get(flags)
    if flag_set is None:
        flag_set = frozenset(str(flags).split())
        if flag_sets is not None:
            flag_sets[flags] = flag_set
    return MessageRecord(
        uid=int(uid),  # type: ignore[call-overload]
        flags=flag_set,
        internal_date=float(internal_date),  # type: ignore[arg-type]
        size=int(size),  # type: ignore[call-overload]
        modseq=int(modseq),  # type: ignore[call-overload]
        blob_id=str(blob_id),
        prefix=bytes(prefix),  # type: ignore[call-overload]
        trace_id=str(trace_id),
        envelope=None if envelope is None else bytes(envelope),  # type: ignore[call-overload]
        bodystructure=None if bodystructure is None else bytes(bodystructure),  # type: ignore[call-overload]
        search_headers=None if headers is None else str(headers),
    )


_UNSTRUCTURED_COLUMNS = tuple(
    null().label(column.name) if column.name in ("envelope", "bodystructure") else column
    for column in _RECORD_COLUMNS
)


def _columns(structure: bool) -> tuple[Any, ...]:
    return _RECORD_COLUMNS if structure else _UNSTRUCTURED_COLUMNS


_FOLDER_MESSAGES, _FOLDER_MESSAGES_UNSTRUCTURED = (
    PreparedStatement(
        select(*columns).where(messages.c.folder_id == bindparam("folder_id")).order_by(messages.c.uid)
    )
    for columns in (_RECORD_COLUMNS, _UNSTRUCTURED_COLUMNS)
)


def folder_messages(conn: Connection, folder_id: int, *, structure: bool = True) -> list[MessageRecord]:
    """Every message of the folder, by UID; without `structure`, their envelope and bodystructure
    are left unread (None: SEARCH has no use for them, and they are most of a row's octets)."""
    rows = (_FOLDER_MESSAGES if structure else _FOLDER_MESSAGES_UNSTRUCTURED).fetch(
        conn, {"folder_id": folder_id}
    )
    flag_sets: dict[object, frozenset[str]] = {}
    return [_record(row, flag_sets) for row in rows]


# A whole folder's rows are read through the driver (`storage.prepared`): SQLAlchemy's result
# processing was a third of a 10,000-message SELECT or SEARCH.
_FOLDER_FLAGS = PreparedStatement(
    select(messages.c.uid, messages.c.flags, messages.c.modseq)
    .where(messages.c.folder_id == bindparam("folder_id"))
    .order_by(messages.c.uid)
)
_SEARCH_ROWS = PreparedStatement(
    select(
        messages.c.uid,
        messages.c.flags,
        messages.c.internal_date,
        messages.c.size,
        messages.c.modseq,
        messages.c.search_headers,
    )
    .where(messages.c.folder_id == bindparam("folder_id"))
    .order_by(messages.c.uid)
)


def folder_flags(conn: Connection, folder_id: int) -> list[tuple[int, frozenset[str], int]]:
    """(uid, flags, modseq) of every message of the folder, by UID: what SELECT needs, without the
    rows' prefix and cached structure (a tenth of the octets on a 10,000-message folder)."""
    rows = _FOLDER_FLAGS.fetch(conn, {"folder_id": folder_id})
    flag_sets = _flag_sets(row[1] for row in rows)
    return [(uid, flag_sets[flags], modseq) for uid, flags, modseq in rows]


def _flag_sets(texts: Iterable[str]) -> dict[str, frozenset[str]]:
    """Each distinct flag text parsed once (a folder's messages share a few)."""
    return {text: frozenset(text.split()) for text in set(texts)}


def search_rows(conn: Connection, folder_id: int) -> list[SearchRow]:
    """Every message of the folder by UID, as far as a SEARCH on flags, dates, sizes, modseqs and
    cached header text reads it: six columns, not the whole row; plain tuples (`SearchRow`'s order)."""
    rows = _SEARCH_ROWS.fetch(conn, {"folder_id": folder_id})
    flag_sets = _flag_sets(row[1] for row in rows)
    return [
        (uid, flag_sets[flags], internal_date, size, modseq, headers)
        for uid, flags, internal_date, size, modseq, headers in rows
    ]


def messages_by_uid(
    conn: Connection, folder_id: int, uids: Sequence[int], *, structure: bool = True
) -> list[MessageRecord]:
    """The folder's messages of these UIDs (those that exist), by UID (`structure`: `folder_messages`)."""
    found: list[MessageRecord] = []
    for start in range(0, len(uids), _BATCH):
        batch = list(uids[start : start + _BATCH])
        rows = conn.execute(
            select(*_columns(structure)).where(
                (messages.c.folder_id == folder_id) & messages.c.uid.in_(batch)
            )
        )
        found.extend(_record(row) for row in rows)
    found.sort(key=lambda record: record.uid)
    return found


def changes_since(conn: Connection, folder_id: int, modseq: int) -> list[MessageRecord]:
    """Messages stored or changed after `modseq`, by UID."""
    rows = conn.execute(
        select(*_RECORD_COLUMNS)
        .where((messages.c.folder_id == folder_id) & (messages.c.modseq > modseq))
        .order_by(messages.c.uid)
    )
    return [_record(row) for row in rows]


def folder_uids(conn: Connection, folder_id: int) -> list[int]:
    rows = conn.execute(
        select(messages.c.uid).where(messages.c.folder_id == folder_id).order_by(messages.c.uid)
    )
    return [int(uid) for uid in rows.scalars()]


def folder_status(conn: Connection, folder_id: int) -> FolderStatus:
    """The folder's counts (STATUS), from one aggregate query."""
    unseen = func.sum(case((messages.c.flags.contains("\\Seen", autoescape=True), 0), else_=1))
    row = conn.execute(
        select(
            func.count(messages.c.id),
            func.coalesce(unseen, 0),
            func.coalesce(func.sum(messages.c.size), 0),
        ).where(messages.c.folder_id == folder_id)
    ).one()
    folder = conn.execute(
        select(folders.c.uidvalidity, folders.c.uidnext, folders.c.highestmodseq).where(
            folders.c.id == folder_id
        )
    ).one()
    return FolderStatus(
        messages=int(row[0]),
        unseen=int(row[1]),
        size=int(row[2]),
        uidvalidity=int(folder.uidvalidity),
        uidnext=int(folder.uidnext),
        highestmodseq=int(folder.highestmodseq),
    )


_BATCH = 500  # UIDs per IN (...) list


def _flag_text(flags: Iterable[str]) -> str:
    kept = sorted({flag for flag in flags if not flag.startswith("\\") or flag in _SYSTEM_CASE.values()})
    text = " ".join(kept)
    if len(text) > MAX_FLAGS_TEXT:
        raise FolderError(f"a message's flags take at most {MAX_FLAGS_TEXT} characters; remove some keywords")
    return text


_SYSTEM_CASE = {flag.casefold(): flag for flag in SYSTEM_FLAGS}


def normalize_flags(flags: Iterable[str]) -> frozenset[str]:
    """System flags in their canonical case; \\Recent and unknown backslash flags dropped; keywords kept."""
    kept = set()
    for flag in flags:
        if flag.startswith("\\"):
            system = _SYSTEM_CASE.get(flag.casefold())
            if system is not None:
                kept.add(system)
        elif flag:
            kept.add(flag)
    return frozenset(kept)


def _bump(conn: Connection, folder_id: int) -> int:
    """The folder's next modseq, recorded as its highest; the mailbox's change is announced after the
    commit."""
    row = conn.execute(
        select(folders.c.mailbox_id, folders.c.highestmodseq).where(folders.c.id == folder_id)
    ).first()
    if row is None:
        raise NoSuchFolderError("the folder was deleted")
    modseq = int(row.highestmodseq) + 1
    conn.execute(update(folders).where(folders.c.id == folder_id).values(highestmodseq=modseq))
    announce_after_commit(conn, change_topic(int(row.mailbox_id)))
    return modseq


def _take_uids(conn: Connection, folder_id: int, count: int) -> tuple[int, int]:
    """(uidvalidity, first uid) of `count` new UIDs of the folder."""
    row = conn.execute(
        select(folders.c.uidvalidity, folders.c.uidnext).where(folders.c.id == folder_id)
    ).first()
    if row is None:
        raise NoSuchFolderError("the folder was deleted")
    conn.execute(update(folders).where(folders.c.id == folder_id).values(uidnext=int(row.uidnext) + count))
    return int(row.uidvalidity), int(row.uidnext)


def mailbox_usage(conn: Connection, mailbox_id: int) -> int:
    """Octets of all the mailbox's messages."""
    return int(
        conn.execute(
            select(func.coalesce(func.sum(messages.c.size), 0))
            .select_from(messages.join(folders, messages.c.folder_id == folders.c.id))
            .where(folders.c.mailbox_id == mailbox_id)
        ).scalar_one()
    )


def mailbox_quota(conn: Connection, mailbox_id: int) -> int | None:
    """The mailbox's size limit in octets (`recipients.quota_bytes`), or None."""
    quota = conn.execute(select(recipients.c.quota_bytes).where(recipients.c.id == mailbox_id)).scalar()
    return None if quota is None else int(quota)


def _check_quota(conn: Connection, mailbox_id: int, adding: int) -> None:
    quota = mailbox_quota(conn, mailbox_id)
    if quota is not None and mailbox_usage(conn, mailbox_id) + adding > quota:
        raise OverQuotaError(f"the mailbox is over its quota of {quota} octets; delete or archive some mail")


def append(
    conn: Connection,
    mailbox_id: int,
    folder_id: int,
    *,
    blob_id: str,
    size: int,
    flags: Iterable[str],
    internal_date: float,
    summary: HeaderSummary,
    prefix: bytes = b"",
    cached: CachedTexts | None = None,
) -> tuple[int, int]:
    """Store a message (its blob is stored already) in the folder; (uidvalidity, uid)."""
    message = NewMessage(blob_id, size, flags, internal_date, summary, prefix, cached)
    uidvalidity, uids = append_many(conn, mailbox_id, folder_id, [message])
    return uidvalidity, uids[0]


def append_many(
    conn: Connection, mailbox_id: int, folder_id: int, new: Sequence[NewMessage]
) -> tuple[int, list[int]]:
    """Store messages in the folder in one go (one quota check, one modseq, one insert: the migration
    copies a group per call); (uidvalidity, their UIDs in order). All or none: a refusal raises."""
    if not new:
        raise ValueError("append_many needs at least one message")
    _check_quota(conn, mailbox_id, sum(message.size for message in new))
    flag_texts = [_flag_text(normalize_flags(message.flags)) for message in new]
    modseq = _bump(conn, folder_id)
    uidvalidity, first = _take_uids(conn, folder_id, len(new))
    rows = []
    for offset, (message, flag_text) in enumerate(zip(new, flag_texts, strict=True)):
        summary, cached = message.summary, message.cached
        rows.append(
            {
                "folder_id": folder_id,
                "uid": first + offset,
                "blob_id": message.blob_id,
                "prefix": message.prefix,
                "size": message.size,
                "internal_date": message.internal_date,
                "flags": flag_text,
                "from_header": summary.from_header,
                "subject": summary.subject,
                "date_header": summary.date,
                "message_id_header": summary.message_id,
                "trace_id": "",
                "modseq": modseq,
                "envelope": None if cached is None else cached.envelope,
                "bodystructure": None if cached is None else cached.bodystructure,
                "search_headers": None if cached is None else cached.search_headers,
            }
        )
    conn.execute(insert(messages), rows)
    return uidvalidity, [first + offset for offset in range(len(new))]


def store_flags(
    conn: Connection,
    folder_id: int,
    uids: Sequence[int],
    flags: Iterable[str],
    mode: FlagMode,
    unchanged_since: int | None = None,
) -> FlagUpdate:
    """Set, add or remove flags of the messages of `uids` (those that exist)."""
    given = normalize_flags(flags)
    modseq = _bump(conn, folder_id)
    updated: list[MessageRecord] = []
    modified: list[int] = []
    changes: list[dict[str, object]] = []
    for record in messages_by_uid(conn, folder_id, uids):
        if unchanged_since is not None and record.modseq > unchanged_since:
            modified.append(record.uid)
            continue
        if mode == "set":
            new = given
        elif mode == "add":
            new = record.flags | given
        else:
            new = record.flags - given
        if new == record.flags:
            continue
        changes.append({"b_uid": record.uid, "b_flags": _flag_text(new)})
        updated.append(replace(record, flags=new, modseq=modseq))
    if changes:
        conn.execute(
            update(messages)
            .where((messages.c.folder_id == folder_id) & (messages.c.uid == bindparam("b_uid")))
            .values(flags=bindparam("b_flags"), modseq=modseq),
            changes,
        )
    return FlagUpdate(updated=updated, modified=modified, highestmodseq=modseq)


def copy_messages(
    conn: Connection, mailbox_id: int, source_folder_id: int, uids: Sequence[int], target_folder_id: int
) -> list[tuple[int, int]]:
    """Copy the messages of `uids` (those that exist) with their flags and dates; (old uid, new uid)
    pairs. The blobs are shared, never copied; the cached structure goes along."""
    return _copy(conn, mailbox_id, source_folder_id, uids, target_folder_id, adds_size=True)


def _copy(
    conn: Connection,
    mailbox_id: int,
    source_folder_id: int,
    uids: Sequence[int],
    target_folder_id: int,
    *,
    adds_size: bool,
) -> list[tuple[int, int]]:
    records = messages_by_uid(conn, source_folder_id, uids)
    if not records:
        return []
    if adds_size:
        _check_quota(conn, mailbox_id, sum(record.size for record in records))
    summaries = {
        row.uid: row
        for start in range(0, len(records), _BATCH)
        for row in conn.execute(
            select(
                messages.c.uid,
                messages.c.from_header,
                messages.c.subject,
                messages.c.date_header,
                messages.c.message_id_header,
            ).where(
                (messages.c.folder_id == source_folder_id)
                & messages.c.uid.in_([record.uid for record in records[start : start + _BATCH]])
            )
        )
    }
    modseq = _bump(conn, target_folder_id)
    _, first = _take_uids(conn, target_folder_id, len(records))
    pairs = []
    rows = []
    for offset, record in enumerate(records):
        summary = summaries[record.uid]
        pairs.append((record.uid, first + offset))
        rows.append(
            {
                "folder_id": target_folder_id,
                "uid": first + offset,
                "blob_id": record.blob_id,
                "prefix": record.prefix,
                "size": record.size,
                "internal_date": record.internal_date,
                "flags": " ".join(sorted(record.flags)),
                "from_header": summary.from_header,
                "subject": summary.subject,
                "date_header": summary.date_header,
                "message_id_header": summary.message_id_header,
                "trace_id": record.trace_id,
                "modseq": modseq,
                "envelope": record.envelope,
                "bodystructure": record.bodystructure,
                "search_headers": record.search_headers,
            }
        )
    conn.execute(insert(messages), rows)
    return pairs


def move_messages(
    conn: Connection, mailbox_id: int, source_folder_id: int, uids: Sequence[int], target_folder_id: int
) -> list[tuple[int, int]]:
    """Copy, then remove from the source (RFC 6851 MOVE): one transaction, so never both or neither."""
    if source_folder_id == target_folder_id:
        raise FolderError("the message is in that folder already")
    # A move inside one mailbox adds nothing to its size: no quota check (a full mailbox can still
    # move mail to Trash).
    pairs = _copy(conn, mailbox_id, source_folder_id, uids, target_folder_id, adds_size=False)
    _remove(conn, source_folder_id, [old for old, _ in pairs])
    return pairs


def _remove(conn: Connection, folder_id: int, uids: Sequence[int]) -> None:
    if not uids:
        return
    _bump(conn, folder_id)
    for start in range(0, len(uids), _BATCH):
        batch = list(uids[start : start + _BATCH])
        conn.execute(delete(messages).where((messages.c.folder_id == folder_id) & messages.c.uid.in_(batch)))


def expunge(conn: Connection, folder_id: int, uids: Sequence[int] | None = None) -> list[int]:
    """Remove the folder's \\Deleted messages (only among `uids` when given: UID EXPUNGE); their UIDs."""
    query = select(messages.c.uid).where(
        (messages.c.folder_id == folder_id) & messages.c.flags.contains("\\Deleted", autoescape=True)
    )
    found = [int(uid) for uid in conn.execute(query.order_by(messages.c.uid)).scalars()]
    if uids is not None:
        wanted = set(uids)
        found = [uid for uid in found if uid in wanted]
    _remove(conn, folder_id, found)
    return found


def cache_structure(
    conn: Connection,
    folder_id: int,
    uid: int,
    envelope: bytes,
    bodystructure: bytes,
    search_headers: str | None = None,
) -> None:
    """Keep a message's IMAP ENVELOPE and BODYSTRUCTURE text and SEARCH's header text (not a change:
    no modseq)."""
    conn.execute(
        update(messages)
        .where((messages.c.folder_id == folder_id) & (messages.c.uid == uid))
        .values(envelope=envelope, bodystructure=bodystructure, search_headers=search_headers)
    )
