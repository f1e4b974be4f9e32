"""Copy a batch of mailboxes from an IMAP server into Postroom mailboxes: the migration run.

For each row of the batch (`migration.batch`), in order: find the target mailbox by its address in the
directory, within the caller's scope (an address of another tenant, of a removed tenant or of a
domain no tenant has accepted fails that row); log in on the source (`migration.source`); plan the
folders (`migration.folders`); list every folder's messages; then copy what an earlier run has not,
folder by folder, each folder's newest first. One mailbox's failure (a wrong password, the server
gone, the mailbox over its quota) is reported on its row and the batch goes on.

What is copied: the message's bytes exactly as the source gives them (`BODY.PEEK[]`, so nothing is
marked read there), its flags (\\Seen \\Answered \\Flagged \\Draft and keywords; \\Recent is the
session's, not the message's) and its internal date. Not copied, and counted as skipped: messages
marked \\Deleted (the source is about to expunge them), messages over the size limit (the service's
35 MB, or the node's smaller limit: `max_message_size`), and past `MAX_ITEMS` per mailbox the oldest.
Keywords that are no IMAP atom, or past `MAX_FLAGS_TEXT` characters in all, are dropped and noted.

Idempotent and resumable: each copied message is recorded in `migrated_messages` (mailbox, source,
source folder, UIDVALIDITY, UID) in the same transaction as its append to the mailstore, so a message
is either in the mailbox and recorded, or neither. A re-run (or a run after a crash or a kill) copies
only what is not recorded. A blob stored before a transaction that never committed is left for
`postroom blobs sweep`. Two runs on one mailbox at once cannot both record a message (the table's
unique key): the second run's transaction fails and that mailbox is reported failed. A folder whose
UIDVALIDITY changed on the source cannot be matched by UID any more: the copies recorded under the old
UIDVALIDITY that are still in their folder are removed and the folder is copied again (noted).

Durability: messages are fetched and appended in groups (`COMMIT_MESSAGES` messages or
`COMMIT_OCTETS` octets by their sizes; one FETCH each), each group in one durable transaction; after
each commit the mailstore announces `mailbox:<id>` (`announce_after_commit`, sent by the app's
notification channel), so open IMAP sessions of the mailbox see the new messages.

*Security:* everything read from the source is bounded (`migration.source`, `migration.folders`);
a message's size is checked against the limit before its bytes are asked for and again on the bytes.
Only the mailbox the directory gave for the row's address, within the caller's scope, is written.
Passwords are never reported.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from postroom.directory import Directory, DirectoryError, RecipientKind
from postroom.mailstore import mailbox as mailstore
from postroom.migration.batch import BatchRow
from postroom.migration.folders import PlannedFolder, plan_folders
from postroom.migration.source import SourceError, SourceMailbox, SourceMessage, SourceServer
from postroom.model.message import summarize
from postroom.model.scope import Scope
from postroom.storage import BlobStore, Database
from postroom.storage.schema import migrated_messages

MAX_ITEMS = 500_000  # messages of one mailbox the migration copies (spec §2), newest first
MAX_MESSAGE_SIZE = 36_700_160  # octets: the largest message the service migrates (35 MB, spec §2)
MAX_FLAGS_TEXT = 200  # characters of a message's flags, space-separated (the mailstore's column)
COMMIT_MESSAGES = 100  # appends per transaction
COMMIT_OCTETS = 16 * 1024 * 1024  # octets of message content per transaction
MAX_SOURCE_KEY = 600  # characters of "host:port user" (what `migrated_messages` records)
MAX_NOTES = 50  # notes kept per mailbox (skipped folders and messages); the rest are counted

_ATOM = re.compile(r"^[!#$&'+-\[^-z|}~]{1,64}$")  # an IMAP flag keyword: atom characters, no "]"
log = logging.getLogger(__name__)
_SYSTEM = {flag.lower(): flag for flag in mailstore.SYSTEM_FLAGS if flag != "\\Deleted"}


@dataclass
class MailboxReport:
    """What a run did for one row of the batch."""

    line: int
    address: str
    ok: bool = True
    error: str = ""  # why the mailbox failed (or stopped part way)
    folders: int = 0  # Postroom folders messages were copied into (or were already in)
    copied: int = 0  # messages copied by this run
    already: int = 0  # messages an earlier run copied
    skipped: int = 0  # messages not copied on purpose: \Deleted, too large, past MAX_ITEMS, gone
    failed: int = 0  # messages this run meant to copy but could not (the mailbox failed part way)
    octets: int = 0  # message octets copied by this run
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        if len(self.notes) < MAX_NOTES:
            self.notes.append(text)
        elif len(self.notes) == MAX_NOTES:
            self.notes.append("more notes left out")

    def fail(self, error: str) -> None:
        self.ok = False
        self.error = error


@dataclass
class BatchReport:
    mailboxes: list[MailboxReport]
    seconds: float

    @property
    def failed_mailboxes(self) -> int:
        return sum(1 for report in self.mailboxes if not report.ok)


class Progress(Protocol):
    """What the run tells whoever watches it (the CLI's progress bars)."""

    def mailbox_started(self, address: str, messages: int) -> None: ...

    def copied(self, address: str, folder: str, messages: int, octets: int) -> None: ...

    def mailbox_finished(self, report: MailboxReport) -> None: ...


class Silent:
    def mailbox_started(self, address: str, messages: int) -> None:
        pass

    def copied(self, address: str, folder: str, messages: int, octets: int) -> None:
        pass

    def mailbox_finished(self, report: MailboxReport) -> None:
        pass


@dataclass(frozen=True, slots=True)
class _FolderWork:
    planned: PlannedFolder
    uidvalidity: int
    messages: list[SourceMessage]  # to copy, newest first
    stale: bool  # copies recorded under another UIDVALIDITY exist: remove them first


class Migration:
    """One batch run: where to copy from, into what, in whose name."""

    def __init__(
        self,
        *,
        database: Database,
        blobs: BlobStore,
        directory: Directory,
        scope: Scope,
        server: SourceServer,
        max_message_size: int = MAX_MESSAGE_SIZE,
        progress: Progress | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = database
        self._blobs = blobs
        self._directory = directory
        self._scope = scope
        self._server = server
        self._max_size = min(max_message_size, MAX_MESSAGE_SIZE)
        self._progress = progress or Silent()
        self._clock = clock

    def run(self, rows: Sequence[BatchRow]) -> BatchReport:
        started = time.monotonic()
        reports = [self.migrate(row) for row in rows]
        return BatchReport(reports, time.monotonic() - started)

    def migrate(self, row: BatchRow) -> MailboxReport:
        """Copy one row's mailbox; never raises for the mailbox's own problems."""
        started = time.monotonic()
        report = MailboxReport(row.line, row.email_address)
        try:
            if row.problem:
                report.fail(row.problem)
            else:
                mailbox_id = self._target(row, report)
                source_key = f"{self._server.name} {row.user_name}"  # host:port user
                if mailbox_id is not None and len(source_key) > MAX_SOURCE_KEY:
                    report.fail(f"the UserName on line {row.line} is too long; at most 256 characters")
                elif mailbox_id is not None:
                    with self._server.open(row.user_name, row.password, self._max_size) as source:
                        self._copy(source, mailbox_id, source_key, report)
        except SourceError as error:
            report.fail(str(error))
        except SQLAlchemyError as error:
            log.exception("migration of %s: the database failed", row.email_address)
            report.fail(
                f"the database failed ({type(error).__name__}); see the log, then run the batch again"
            )
        report.seconds = time.monotonic() - started
        self._progress.mailbox_finished(report)
        return report

    def _target(self, row: BatchRow, report: MailboxReport) -> int | None:
        try:
            recipient = self._directory.get_recipient(self._scope, row.email_address)
        except DirectoryError as error:
            report.fail(f"{error}; the target mailbox must exist first (`postroom mailbox add`)")
            return None
        if recipient.kind is not RecipientKind.MAILBOX:
            report.fail(
                f"{row.email_address} is a {recipient.kind.value}, not a mailbox; give a mailbox's address"
            )
            return None
        return recipient.id

    # --- one mailbox ------------------------------------------------------------------------------
    def _copy(self, source: SourceMailbox, mailbox_id: int, source_key: str, report: MailboxReport) -> None:
        plan = plan_folders(source.folders())
        for skipped in plan.skipped:
            report.note(f"folder {skipped.source!r} skipped: {skipped.reason}")
        work = self._survey(source, mailbox_id, source_key, plan.folders, report)
        planned = sum(len(item.messages) for item in work)
        self._progress.mailbox_started(report.address, planned)
        report.folders = len({item.planned.target for item in work})
        skipped_before = report.skipped
        for item in work:
            try:
                self._copy_folder(source, mailbox_id, source_key, item, report)
            except _FolderSkipped as skipped:
                report.note(str(skipped))
                report.skipped += len(item.messages)
            except (SourceError, _MailboxStopped) as error:
                report.fail(str(error))
                report.failed = planned - report.copied - (report.skipped - skipped_before)
                return

    def _survey(
        self,
        source: SourceMailbox,
        mailbox_id: int,
        source_key: str,
        folders: list[PlannedFolder],
        report: MailboxReport,
    ) -> list[_FolderWork]:
        """Every folder's messages that are still to copy, bounded to MAX_ITEMS newest in the mailbox."""
        found: list[tuple[PlannedFolder, int, list[SourceMessage], bool]] = []
        candidates: list[tuple[float, int, int]] = []  # (internal date, uid, index in found)
        for planned in folders:
            uidvalidity = source.select(planned.source)
            messages = source.messages()
            recorded = self._recorded(mailbox_id, source_key, planned.source)
            stale = any(validity != uidvalidity for validity in recorded)
            if stale:
                report.note(
                    f"folder {planned.source!r} has a new UIDVALIDITY ({uidvalidity}): the copies of its "
                    "old messages are replaced by a new copy"
                )
            done = recorded.get(uidvalidity, set())
            deleted = {m.uid for m in messages if any(flag.lower() == "\\deleted" for flag in m.flags)}
            if deleted:
                report.skipped += len(deleted)
                report.note(f"{len(deleted)} message(s) of {planned.source!r} marked \\Deleted not copied")
            report.already += sum(1 for m in messages if m.uid in done)
            todo = [m for m in messages if m.uid not in done and m.uid not in deleted]
            found.append((planned, uidvalidity, todo, stale))
            candidates.extend((m.internal_date, m.uid, len(found) - 1) for m in todo)
        room = max(0, MAX_ITEMS - report.already)
        if len(candidates) > room:
            candidates.sort(reverse=True)
            report.skipped += len(candidates) - room
            report.note(
                f"{len(candidates) - room} of the oldest messages not copied: "
                f"a mailbox takes at most {MAX_ITEMS:,} migrated messages"
            )
            kept = {(index, uid) for _, uid, index in candidates[:room]}
        else:
            kept = {(index, uid) for _, uid, index in candidates}
        work: list[_FolderWork] = []
        for index, (planned, uidvalidity, todo, stale) in enumerate(found):
            chosen = []
            for message in todo:
                if (index, message.uid) not in kept:
                    continue
                if message.size > self._max_size:
                    report.skipped += 1
                    report.note(_too_large(planned.source, message.uid, message.size, self._max_size))
                    continue
                chosen.append(message)
            chosen.sort(key=lambda m: (m.internal_date, m.uid), reverse=True)
            work.append(_FolderWork(planned, uidvalidity, chosen, stale))
        return work

    def _recorded(self, mailbox_id: int, source_key: str, folder: str) -> dict[int, set[int]]:
        """UIDs recorded as copied from this source folder, by UIDVALIDITY."""
        found: dict[int, set[int]] = {}
        with self._db.read() as conn:
            rows = conn.execute(
                select(migrated_messages.c.uidvalidity, migrated_messages.c.uid).where(
                    (migrated_messages.c.mailbox_id == mailbox_id)
                    & (migrated_messages.c.source == source_key)
                    & (migrated_messages.c.folder == folder)
                )
            )
            for uidvalidity, uid in rows:
                found.setdefault(int(uidvalidity), set()).add(int(uid))
        return found

    def _copy_folder(
        self,
        source: SourceMailbox,
        mailbox_id: int,
        source_key: str,
        item: _FolderWork,
        report: MailboxReport,
    ) -> None:
        target = self._target_folder(mailbox_id, item.planned)
        if item.stale:
            self._forget_stale(mailbox_id, source_key, item)
        if not item.messages:
            return
        if source.select(item.planned.source) != item.uidvalidity:
            raise _MailboxStopped(
                f"the UIDVALIDITY of {item.planned.source!r} changed during the run; run the batch again"
            )
        for group in _groups(item.messages):
            bodies = source.bodies([message.uid for message in group])
            fetched: list[tuple[SourceMessage, bytes]] = []
            for message in group:
                body = bodies.get(message.uid)
                if body is None:
                    report.skipped += 1
                    report.note(
                        f"message UID {message.uid} of {item.planned.source!r} left the source meanwhile"
                    )
                elif len(body) > self._max_size:
                    report.skipped += 1
                    report.note(_too_large(item.planned.source, message.uid, len(body), self._max_size))
                else:
                    fetched.append((message, body))
            if fetched:
                self._commit(mailbox_id, source_key, item, target, fetched, report)

    def _target_folder(self, mailbox_id: int, planned: PlannedFolder) -> mailstore.Folder:
        """The Postroom folder to copy into: the mailbox's folder of the special use, or by name (made
        when missing)."""
        with self._db.write() as conn:
            if planned.special_use:
                for folder in mailstore.list_folders(conn, mailbox_id):
                    if folder.special_use == planned.special_use:
                        return folder
            existing = mailstore.find_folder(conn, mailbox_id, planned.target)
            if existing is not None:
                return existing
            try:
                return mailstore.create_folder(
                    conn, mailbox_id, planned.target, self._clock(), special_use=planned.special_use
                )
            except mailstore.FolderError as error:
                raise _FolderSkipped(f"folder {planned.source!r} skipped: {error}") from None

    def _forget_stale(self, mailbox_id: int, source_key: str, item: _FolderWork) -> None:
        """Remove the copies recorded under an old UIDVALIDITY (those still in their folder) and their
        records, in one transaction."""
        matches = (
            (migrated_messages.c.mailbox_id == mailbox_id)
            & (migrated_messages.c.source == source_key)
            & (migrated_messages.c.folder == item.planned.source)
            & (migrated_messages.c.uidvalidity != item.uidvalidity)
        )
        with self._db.write() as conn:
            by_folder: dict[int, list[int]] = {}
            for folder_id, uid in conn.execute(
                select(migrated_messages.c.target_folder_id, migrated_messages.c.target_uid).where(matches)
            ):
                by_folder.setdefault(int(folder_id), []).append(int(uid))
            mine = {folder.id: folder.name for folder in mailstore.list_folders(conn, mailbox_id)}
            for folder_id, uids in by_folder.items():
                if folder_id not in mine:
                    continue  # the folder is gone, and its messages with it
                present = set(mailstore.folder_uids(conn, folder_id)) & set(uids)
                if present:
                    mailstore.store_flags(conn, folder_id, sorted(present), ["\\Deleted"], "add")
                    mailstore.expunge(conn, folder_id, sorted(present))
            conn.execute(delete(migrated_messages).where(matches))

    def _commit(
        self,
        mailbox_id: int,
        source_key: str,
        item: _FolderWork,
        target: mailstore.Folder,
        group: list[tuple[SourceMessage, bytes]],
        report: MailboxReport,
    ) -> None:
        inline = self._blobs.inline_limit
        stored = {m.uid: self._blobs.put(body) for m, body in group if len(body) > inline}
        now = self._clock()
        try:
            with self._db.write() as conn:
                records = []
                for message, body in group:
                    blob_id = stored.get(message.uid) or self._blobs.put_in(conn, body)
                    flags, dropped = target_flags(message.flags)
                    if dropped:
                        report.note(f"message UID {message.uid} of {item.planned.source!r}: {dropped}")
                    _, uid = mailstore.append(
                        conn,
                        mailbox_id,
                        target.id,
                        blob_id=blob_id,
                        size=len(body),
                        flags=flags,
                        internal_date=message.internal_date,
                        summary=summarize(body),
                    )
                    records.append(
                        {
                            "mailbox_id": mailbox_id,
                            "source": source_key,
                            "folder": item.planned.source,
                            "uidvalidity": item.uidvalidity,
                            "uid": message.uid,
                            "target_folder_id": target.id,
                            "target_uid": uid,
                            "copied_at": now,
                        }
                    )
                conn.execute(insert(migrated_messages), records)
        except mailstore.OverQuotaError as error:
            raise _MailboxStopped(f"{error}; raise the mailbox's quota, then run the batch again") from None
        except mailstore.FolderError as error:
            raise _MailboxStopped(f"the mailstore refused a copy into {target.name!r}: {error}") from None
        except IntegrityError:
            raise _MailboxStopped(
                "another migration run is copying this mailbox; let it finish, then run the batch again"
            ) from None
        copied_octets = sum(len(body) for _, body in group)
        report.copied += len(group)
        report.octets += copied_octets
        self._progress.copied(report.address, target.name, len(group), copied_octets)


class _MailboxStopped(Exception):
    """This mailbox cannot go on in this run; the message says why and what to do."""


class _FolderSkipped(Exception):
    """This folder cannot be copied (the mailstore refused to make it); the rest of the mailbox goes on."""


def _groups(messages: list[SourceMessage]) -> Iterator[list[SourceMessage]]:
    """Consecutive groups of at most COMMIT_MESSAGES messages and (by their sizes) COMMIT_OCTETS
    octets; a message larger than that is a group alone."""
    group: list[SourceMessage] = []
    octets = 0
    for message in messages:
        if group and (len(group) == COMMIT_MESSAGES or octets + message.size > COMMIT_OCTETS):
            yield group
            group, octets = [], 0
        group.append(message)
        octets += message.size
    if group:
        yield group


def _too_large(folder: str, uid: int, size: int, limit: int) -> str:
    return (
        f"message UID {uid} of {folder!r} not copied: {size:,} octets, over the limit of {limit:,}; "
        "move it by hand (e.g. as an attachment split) if it is needed"
    )


def target_flags(flags: Iterable[str]) -> tuple[list[str], str]:
    """The flags a copy gets: system flags in their canonical spelling (\\Deleted and \\Recent never),
    then keywords, within MAX_FLAGS_TEXT characters; and what was dropped ("" when nothing)."""
    system: list[str] = []
    keywords: list[str] = []
    dropped: list[str] = []
    for flag in flags:
        canonical = _SYSTEM.get(flag.lower())
        if canonical is not None:
            if canonical not in system:
                system.append(canonical)
        elif flag.startswith("\\"):
            continue  # \Recent, \Deleted and unknown system flags are the source session's
        elif _ATOM.match(flag) and flag not in keywords:
            keywords.append(flag)
        else:
            dropped.append(flag)
    kept = list(system)
    length = len(" ".join(kept))
    for keyword in keywords:
        if length + 1 + len(keyword) > MAX_FLAGS_TEXT:
            dropped.append(keyword)
            continue
        kept.append(keyword)
        length += 1 + len(keyword)
    note = f"keyword(s) {', '.join(repr(word[:64]) for word in dropped)} not copied" if dropped else ""
    return kept, note
