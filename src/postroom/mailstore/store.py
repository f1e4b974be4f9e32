"""The mailstore: per-mailbox folders holding messages with UIDs, flags and internal dates.

A stored message is the body blob exactly as received plus `prefix`, the headers the service added
(Return-Path, Received), so `export` returns prefix + blob byte for byte. UIDs are strictly
ascending per folder (`uidnext` is advanced in the same transaction as the insert) and a folder's
UIDVALIDITY never changes while it exists.

`deliver` takes the caller's connection: it runs inside the delivery transaction, so a message is
in the mailbox exactly when its queue row is gone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, case, func, select, update

from postroom.directory import Directory, RecipientKind
from postroom.directory.service import NotFoundError
from postroom.model.message import HeaderSummary
from postroom.storage import BlobStore, Database
from postroom.storage.prepared import PreparedInsert, PreparedStatement
from postroom.storage.schema import folders, messages


@dataclass(frozen=True, slots=True)
class LocalDelivery:
    """One message to put into one mailbox folder."""

    mailbox_id: int
    folder: str
    blob_id: str
    prefix: bytes
    size: int
    internal_date: float
    summary: HeaderSummary
    trace_id: str


@dataclass(frozen=True, slots=True)
class FolderSummary:
    name: str
    messages: int
    unseen: int
    size: int
    uidvalidity: int
    uidnext: int


@dataclass(frozen=True, slots=True)
class StoredMessage:
    uid: int
    folder: str
    from_header: str
    subject: str
    date: str
    message_id: str
    size: int
    internal_date: float
    flags: tuple[str, ...]
    trace_id: str


_INSERT_MESSAGE = PreparedInsert(
    messages,
    [
        "folder_id",
        "uid",
        "blob_id",
        "prefix",
        "size",
        "internal_date",
        "flags",
        "from_header",
        "subject",
        "date_header",
        "message_id_header",
        "trace_id",
    ],
)
_FIND_FOLDER = PreparedStatement(
    select(folders.c.id, folders.c.uidnext).where(
        (folders.c.mailbox_id == bindparam("mailbox_id")) & (folders.c.name == bindparam("name"))
    )
)
_ADVANCE_UIDNEXT = PreparedStatement(
    update(folders).where(folders.c.id == bindparam("folder_id")).values(uidnext=bindparam("uidnext"))
)


def deliver(conn: Connection, deliveries: Sequence[LocalDelivery]) -> set[int]:
    """Store each delivery in its folder, in the caller's transaction.

    Returns the mailbox ids that have no such folder any more (nothing is stored for them); every
    other delivery gets the folder's next UID, in order.
    """
    next_uid: dict[tuple[int, str], list[int]] = {}
    for mailbox_id, folder_name in {(item.mailbox_id, item.folder) for item in deliveries}:
        for folder_id, uidnext in _FIND_FOLDER.fetch(conn, {"mailbox_id": mailbox_id, "name": folder_name}):
            next_uid[(mailbox_id, folder_name)] = [folder_id, uidnext]
    missing: set[int] = set()
    rows = []
    for item in deliveries:
        folder = next_uid.get((item.mailbox_id, item.folder))
        if folder is None:
            missing.add(item.mailbox_id)
            continue
        rows.append(
            {
                "folder_id": folder[0],
                "uid": folder[1],
                "blob_id": item.blob_id,
                "prefix": item.prefix,
                "size": item.size,
                "internal_date": item.internal_date,
                "flags": "",
                "from_header": item.summary.from_header,
                "subject": item.summary.subject,
                "date_header": item.summary.date,
                "message_id_header": item.summary.message_id,
                "trace_id": item.trace_id,
            }
        )
        folder[1] += 1
    _INSERT_MESSAGE.run(conn, rows)
    _ADVANCE_UIDNEXT.run(
        conn, [{"folder_id": folder_id, "uidnext": uidnext} for folder_id, uidnext in next_uid.values()]
    )
    return missing


class Mailstore:
    """Read access to mailboxes for the CLI, the admin API and (later) IMAP."""

    def __init__(self, database: Database, blobs: BlobStore, directory: Directory) -> None:
        self._db = database
        self._blobs = blobs
        self._directory = directory

    def _mailbox_id(self, address: str) -> int:
        recipient = self._directory.get_recipient(address)
        if recipient.kind is not RecipientKind.MAILBOX:
            raise NotFoundError(f"{address} is a {recipient.kind.value}, not a mailbox")
        return recipient.id

    def folders(self, address: str) -> list[FolderSummary]:
        mailbox_id = self._mailbox_id(address)
        with self._db.read() as conn:
            rows = conn.execute(
                select(
                    folders.c.name,
                    func.count(messages.c.id),
                    func.coalesce(func.sum(messages.c.size), 0),
                    func.coalesce(
                        func.sum(
                            case(
                                (messages.c.id.is_(None), 0),
                                (messages.c.flags.contains("\\Seen"), 0),
                                else_=1,
                            )
                        ),
                        0,
                    ),
                    folders.c.uidvalidity,
                    folders.c.uidnext,
                )
                .select_from(folders)
                .outerjoin(messages, messages.c.folder_id == folders.c.id)
                .where(folders.c.mailbox_id == mailbox_id)
                .group_by(folders.c.id)
                .order_by(folders.c.id)
            ).all()
        return [
            FolderSummary(
                name=r[0], messages=r[1], size=int(r[2]), unseen=int(r[3]), uidvalidity=r[4], uidnext=r[5]
            )
            for r in rows
        ]

    def list_messages(self, address: str, folder: str = "Inbox") -> list[StoredMessage]:
        mailbox_id = self._mailbox_id(address)
        with self._db.read() as conn:
            folder_id = self._folder_id(conn, mailbox_id, folder)
            rows = conn.execute(
                select(messages).where(messages.c.folder_id == folder_id).order_by(messages.c.uid)
            ).all()
        return [
            StoredMessage(
                uid=r.uid,
                folder=folder,
                from_header=r.from_header,
                subject=r.subject,
                date=r.date_header,
                message_id=r.message_id_header,
                size=r.size,
                internal_date=r.internal_date,
                flags=tuple(r.flags.split()),
                trace_id=r.trace_id,
            )
            for r in rows
        ]

    def export(self, address: str, uid: int, folder: str = "Inbox") -> bytes:
        """The raw message: the headers the service added, then the bytes exactly as received."""
        mailbox_id = self._mailbox_id(address)
        with self._db.read() as conn:
            folder_id = self._folder_id(conn, mailbox_id, folder)
            row = conn.execute(
                select(messages.c.prefix, messages.c.blob_id).where(
                    (messages.c.folder_id == folder_id) & (messages.c.uid == uid)
                )
            ).first()
        if row is None:
            raise NotFoundError(f"{address} has no message with UID {uid} in {folder}")
        return bytes(row.prefix) + self._blobs.get(row.blob_id)

    @staticmethod
    def _folder_id(conn: Connection, mailbox_id: int, folder: str) -> int:
        found = conn.execute(
            select(folders.c.id).where(
                (folders.c.mailbox_id == mailbox_id) & (func.lower(folders.c.name) == folder.lower())
            )
        ).scalar()
        if found is None:
            raise NotFoundError(
                f"there is no folder {folder!r}; folders: Inbox, Sent, Drafts, Junk, Trash, Archive"
            )
        return int(found)
