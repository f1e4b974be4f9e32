"""The mailstore: per-mailbox folders holding messages with UIDs, flags and internal dates.

Mailboxes are addressed by id (the directory's recipient id); callers resolve addresses through the
directory first. The mailstore owns `folders` and `messages`: the directory asks it for a new
mailbox's folders (`mailbox.create_mailbox_folders`) and tenant removal asks it to remove a tenant's mail
(`remove_tenant_mail`), each in the caller's transaction.

Scope: every `Mailstore` read takes the caller's `Scope`; a mailbox of another tenant is reported
exactly as one that does not exist (`MailboxNotFoundError`). To know a mailbox's tenant it reads
the directory's `recipients` table (read only; it never writes another room's table).

A stored message is the body blob exactly as received plus `prefix`, the headers the service added
(Return-Path, Received), so `export` returns prefix + blob byte for byte. UIDs are strictly
ascending per folder (`uidnext` is advanced in the same transaction as the insert) and a folder's
UIDVALIDITY never changes while it exists.

`deliver` takes the caller's connection: it runs inside the delivery transaction, so a message is
in the mailbox exactly when its queue row is gone. It gives the messages the folder's next
modification sequence and announces the mailbox's change after the commit (IMAP IDLE wakes). The
IMAP view of the mailstore (folders, flags, copy, move, expunge, append, quota) is `mailbox`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, case, delete, func, select, update

from postroom.mailstore.mailbox import STANDARD_FOLDERS, change_topic
from postroom.model.message import HeaderSummary
from postroom.model.scope import Scope
from postroom.storage import BlobStore, Database, announce_after_commit
from postroom.storage.prepared import PreparedInsert, PreparedStatement
from postroom.storage.schema import folders, messages, recipients

SENT_FOLDER = "Sent"  # where a mailbox's submitted messages are copied
MAILBOX_FOLDERS = tuple(name for name, _ in STANDARD_FOLDERS)


class MailboxNotFoundError(LookupError):
    """No such mailbox, folder or message for this caller; the message says what to do."""


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
        "modseq",
    ],
)
_FIND_FOLDER = PreparedStatement(
    select(folders.c.id, folders.c.uidnext, folders.c.highestmodseq).where(
        (folders.c.mailbox_id == bindparam("mailbox_id")) & (folders.c.name == bindparam("name"))
    )
)
_ADVANCE_UIDNEXT = PreparedStatement(
    update(folders)
    .where(folders.c.id == bindparam("folder_id"))
    .values(uidnext=bindparam("uidnext"), highestmodseq=bindparam("modseq"))
)


def deliver(conn: Connection, deliveries: Sequence[LocalDelivery]) -> set[int]:
    """Store each delivery in its folder, in the caller's transaction.

    Returns the mailbox ids that have no such folder any more (nothing is stored for them); every
    other delivery gets the folder's next UID, in order.
    """
    # Each folder: [id, next uid, the modseq of this delivery (its highest + 1)].
    next_uid: dict[tuple[int, str], list[int]] = {}
    for mailbox_id, folder_name in {(item.mailbox_id, item.folder) for item in deliveries}:
        found = _FIND_FOLDER.fetch(conn, {"mailbox_id": mailbox_id, "name": folder_name})
        for folder_id, uidnext, highestmodseq in found:
            next_uid[(mailbox_id, folder_name)] = [folder_id, uidnext, highestmodseq + 1]
            announce_after_commit(conn, change_topic(mailbox_id))
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
                "modseq": folder[2],
            }
        )
        folder[1] += 1
    _INSERT_MESSAGE.run(conn, rows)
    _ADVANCE_UIDNEXT.run(
        conn,
        [
            {"folder_id": folder_id, "uidnext": uidnext, "modseq": modseq}
            for folder_id, uidnext, modseq in next_uid.values()
        ],
    )
    return missing


@dataclass(frozen=True, slots=True)
class RemovedMail:
    messages: int
    blob_ids: frozenset[str]  # blobs the removed messages pointed at (others may still use them)


def remove_tenant_mail(conn: Connection, tenant_id: int) -> RemovedMail:
    """Delete every message and folder of the tenant's mailboxes, in the caller's transaction."""
    tenant_folders = select(folders.c.id).where(
        folders.c.mailbox_id.in_(select(recipients.c.id).where(recipients.c.tenant_id == tenant_id))
    )
    blob_ids = frozenset(
        conn.execute(select(messages.c.blob_id).where(messages.c.folder_id.in_(tenant_folders))).scalars()
    )
    removed = conn.execute(delete(messages).where(messages.c.folder_id.in_(tenant_folders))).rowcount
    conn.execute(delete(folders).where(folders.c.id.in_(tenant_folders)))
    return RemovedMail(messages=removed, blob_ids=blob_ids)


def referenced_blobs(conn: Connection, blob_ids: frozenset[str]) -> set[str]:
    """Those of `blob_ids` that some stored message still points at."""
    if not blob_ids:
        return set()
    return set(conn.execute(select(messages.c.blob_id).where(messages.c.blob_id.in_(blob_ids))).scalars())


class Mailstore:
    """Read access to mailboxes (by id, scoped) for the CLI, the admin API and IMAP."""

    def __init__(self, database: Database, blobs: BlobStore) -> None:
        self._db = database
        self._blobs = blobs

    @staticmethod
    def _mailbox(conn: Connection, scope: Scope, mailbox_id: int) -> None:
        tenant_id = conn.execute(
            select(recipients.c.tenant_id).where(
                (recipients.c.id == mailbox_id) & (recipients.c.kind == "mailbox")
            )
        ).scalar()
        if tenant_id is None or not scope.allows(tenant_id):
            raise MailboxNotFoundError(
                f"there is no mailbox {mailbox_id}; `postroom mailbox list` shows them"
            )

    def folders(self, scope: Scope, mailbox_id: int) -> list[FolderSummary]:
        with self._db.read() as conn:
            self._mailbox(conn, scope, mailbox_id)
            rows = conn.execute(
                select(
                    folders.c.name,
                    func.count(messages.c.id),
                    func.coalesce(func.sum(messages.c.size), 0),
                    func.coalesce(
                        func.sum(
                            case(
                                (messages.c.id.is_(None), 0),
                                (messages.c.flags.contains("\\Seen", autoescape=True), 0),
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

    def list_messages(self, scope: Scope, mailbox_id: int, folder: str = "Inbox") -> list[StoredMessage]:
        with self._db.read() as conn:
            self._mailbox(conn, scope, mailbox_id)
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

    def export(self, scope: Scope, mailbox_id: int, uid: int, folder: str = "Inbox") -> bytes:
        """The raw message: the headers the service added, then the bytes exactly as received."""
        with self._db.read() as conn:
            self._mailbox(conn, scope, mailbox_id)
            folder_id = self._folder_id(conn, mailbox_id, folder)
            row = conn.execute(
                select(messages.c.prefix, messages.c.blob_id).where(
                    (messages.c.folder_id == folder_id) & (messages.c.uid == uid)
                )
            ).first()
        if row is None:
            raise MailboxNotFoundError(f"the mailbox has no message with UID {uid} in {folder}")
        return bytes(row.prefix) + self._blobs.get(row.blob_id)

    @staticmethod
    def _folder_id(conn: Connection, mailbox_id: int, folder: str) -> int:
        found = conn.execute(
            select(folders.c.id).where(
                (folders.c.mailbox_id == mailbox_id) & (func.lower(folders.c.name) == folder.lower())
            )
        ).scalar()
        if found is None:
            raise MailboxNotFoundError(
                f"there is no folder {folder!r}; folders: {', '.join(MAILBOX_FOLDERS)}"
            )
        return int(found)
