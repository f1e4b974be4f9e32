"""The IMAP view of the mailstore: folders with special use and hierarchy, flags with modseq, copy,
move, expunge, append under a quota, and change announcements only after the commit."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import update

from postroom.directory import Directory
from postroom.mailstore import LocalDelivery, deliver
from postroom.mailstore import mailbox as mb
from postroom.model.message import HeaderSummary
from postroom.model.scope import OPERATOR
from postroom.storage import BlobStore, Database, FileBlobStore
from postroom.storage.schema import recipients

SUMMARY = HeaderSummary("Carol <carol@example.net>", "hello", "Mon, 1 Jan 2024 10:00:00 +0000", "<m@x>")


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    return FileBlobStore(tmp_path / "blobs")


@pytest.fixture
def alice(directory: Directory) -> int:
    directory.add_tenant(OPERATOR, "contoso")
    directory.add_domain(OPERATOR, "contoso.com", "contoso", verified=True)
    directory.add_mailbox(OPERATOR, "alice@contoso.com")
    directory.add_mailbox(OPERATOR, "bob@contoso.com")
    return directory.get_recipient(OPERATOR, "alice@contoso.com").id


def _folder(database: Database, mailbox_id: int, name: str) -> mb.Folder:
    with database.read() as conn:
        found = mb.find_folder(conn, mailbox_id, name)
    assert found is not None
    return found


def _append(
    database: Database, blobs: BlobStore, mailbox_id: int, folder: str, flags: tuple[str, ...] = ()
) -> int:
    body = b"From: carol@example.net\r\nSubject: hello\r\n\r\nbody\r\n"
    blob = blobs.put(body)
    with database.write() as conn:
        folder_id = _folder_id(conn, mailbox_id, folder)
        _, uid = mb.append(
            conn,
            mailbox_id,
            folder_id,
            blob_id=blob,
            size=len(body),
            flags=flags,
            internal_date=1_700_000_000.0,
            summary=SUMMARY,
        )
    return uid


def _folder_id(conn: object, mailbox_id: int, name: str) -> int:
    found = mb.find_folder(conn, mailbox_id, name)  # type: ignore[arg-type]
    assert found is not None
    return found.id


def test_a_new_mailbox_has_the_standard_folders_with_their_special_use(
    database: Database, alice: int
) -> None:
    with database.read() as conn:
        uses = {folder.name: folder.special_use for folder in mb.list_folders(conn, alice)}
    assert uses == {
        "Inbox": "",
        "Sent": "\\Sent",
        "Drafts": "\\Drafts",
        "Junk": "\\Junk",
        "Trash": "\\Trash",
        "Archive": "\\Archive",
    }


def test_create_makes_parents_and_refuses_what_exists_or_is_malformed(database: Database, alice: int) -> None:
    with database.write() as conn:
        made = mb.create_folder(conn, alice, "Projects/2026/Q1", 1000.0)
        assert made.name == "Projects/2026/Q1"
        names = [folder.name for folder in mb.list_folders(conn, alice)]
        assert {"Projects", "Projects/2026", "Projects/2026/Q1"} <= set(names)
        for bad in ("", "a//b", "/a", "a/", " a", "x\r\ny", "x" * 300, "/".join("a" * 20)):
            with pytest.raises(mb.FolderError):
                mb.create_folder(conn, alice, bad, 1000.0)
        with pytest.raises(mb.FolderExistsError):
            mb.create_folder(conn, alice, "Projects", 1000.0)
        with pytest.raises(mb.FolderExistsError):
            mb.create_folder(conn, alice, "INBOX", 1000.0)
        with pytest.raises(mb.FolderError, match="Junk"):
            mb.create_folder(conn, alice, "Spam", 1000.0, special_use="\\Junk")


def test_a_folder_made_again_gets_a_new_uidvalidity(database: Database, alice: int) -> None:
    with database.write() as conn:
        first = mb.create_folder(conn, alice, "Old", 1000.0)
        mb.delete_folder(conn, alice, "Old")
        again = mb.create_folder(conn, alice, "Old", 1000.0)
    assert again.uidvalidity > first.uidvalidity


def test_delete_refuses_the_inbox_and_a_parent(database: Database, alice: int) -> None:
    with database.write() as conn:
        mb.create_folder(conn, alice, "a/b", 1000.0)
        with pytest.raises(mb.FolderError, match="subfolders"):
            mb.delete_folder(conn, alice, "a")
        with pytest.raises(mb.FolderError, match="inbox"):
            mb.delete_folder(conn, alice, "Inbox")
        with pytest.raises(mb.NoSuchFolderError):
            mb.delete_folder(conn, alice, "nothing")


def test_rename_moves_children_and_renaming_the_inbox_moves_its_mail(
    database: Database, blobs: BlobStore, alice: int
) -> None:
    with database.write() as conn:
        mb.create_folder(conn, alice, "a/b", 1000.0)
        mb.rename_folder(conn, alice, "a", "z/y", 1000.0)
        names = {folder.name for folder in mb.list_folders(conn, alice)}
    assert {"z", "z/y", "z/y/b"} <= names and "a" not in names
    _append(database, blobs, alice, "Inbox")
    with database.write() as conn:
        mb.rename_folder(conn, alice, "Inbox", "Old mail", 1000.0)
        assert mb.folder_uids(conn, _folder_id(conn, alice, "Inbox")) == []
        assert len(mb.folder_uids(conn, _folder_id(conn, alice, "Old mail"))) == 1


def test_flags_move_the_modseq_and_conditional_stores_refuse_changed_messages(
    database: Database, blobs: BlobStore, alice: int
) -> None:
    first = _append(database, blobs, alice, "Inbox", ("\\seen", "\\Recent", "\\Bogus", "$Label1"))
    second = _append(database, blobs, alice, "Inbox")
    inbox = _folder(database, alice, "Inbox")
    with database.read() as conn:
        records = mb.folder_messages(conn, inbox.id)
    assert records[0].flags == frozenset({"\\Seen", "$Label1"})  # canonical case; \Recent, unknown gone
    before = inbox.highestmodseq
    with database.write() as conn:
        update_ = mb.store_flags(conn, inbox.id, [first, second], ["\\Flagged"], "add")
    assert [r.uid for r in update_.updated] == [first, second]
    assert all(r.modseq == update_.highestmodseq > before for r in update_.updated)
    with database.write() as conn:
        again = mb.store_flags(conn, inbox.id, [first], ["\\Deleted"], "add", unchanged_since=before)
    assert again.modified == [first] and again.updated == []
    with database.read() as conn:
        changed = mb.changes_since(conn, inbox.id, before)
        assert [r.uid for r in changed] == [first, second]
    with database.write() as conn, pytest.raises(mb.FolderError, match="keywords"):
        mb.store_flags(conn, inbox.id, [first], [f"$k{n:03}" for n in range(60)], "add")


def test_copy_keeps_flags_move_removes_and_expunge_takes_only_deleted(
    database: Database, blobs: BlobStore, alice: int
) -> None:
    one = _append(database, blobs, alice, "Inbox", ("\\Seen",))
    two = _append(database, blobs, alice, "Inbox")
    with database.write() as conn:
        inbox, archive, trash = (_folder_id(conn, alice, n) for n in ("Inbox", "Archive", "Trash"))
        assert mb.copy_messages(conn, alice, inbox, [one, 999], archive) == [(one, 1)]
        assert mb.folder_messages(conn, archive)[0].flags == frozenset({"\\Seen"})
        assert mb.move_messages(conn, alice, inbox, [two], trash) == [(two, 1)]
        assert mb.folder_uids(conn, inbox) == [one]
        mb.store_flags(conn, archive, [1], ["\\Deleted"], "add")
        assert mb.expunge(conn, archive, uids=[5]) == []
        assert mb.expunge(conn, archive) == [1]
        status = mb.folder_status(conn, inbox)
    assert (status.messages, status.unseen) == (1, 0)


def test_the_quota_refuses_appends_and_copies_but_not_moves(
    database: Database, blobs: BlobStore, alice: int
) -> None:
    uid = _append(database, blobs, alice, "Inbox")
    with database.write() as conn:
        used = mb.mailbox_usage(conn, alice)
        conn.execute(update(recipients).where(recipients.c.id == alice).values(quota_bytes=used + 10))
    with pytest.raises(mb.OverQuotaError):
        _append(database, blobs, alice, "Inbox")
    with database.write() as conn:
        inbox, trash = _folder_id(conn, alice, "Inbox"), _folder_id(conn, alice, "Trash")
        with pytest.raises(mb.OverQuotaError):
            mb.copy_messages(conn, alice, inbox, [uid], trash)
        assert mb.move_messages(conn, alice, inbox, [uid], trash) == [(uid, 1)]
        assert mb.mailbox_quota(conn, alice) == used + 10


def test_changes_are_announced_after_the_commit_and_never_for_a_rollback(
    database: Database, blobs: BlobStore, alice: int
) -> None:
    heard: list[str] = []
    database.announce = heard.append
    _append(database, blobs, alice, "Inbox")
    assert heard == [mb.change_topic(alice)]
    heard.clear()
    with pytest.raises(RuntimeError), database.write() as conn:
        mb.store_flags(conn, _folder_id(conn, alice, "Inbox"), [1], ["\\Seen"], "add")
        raise RuntimeError("rolled back")
    assert heard == []


def test_delivery_gives_the_folder_a_new_modseq_and_announces(
    database: Database, blobs: BlobStore, alice: int
) -> None:
    heard: list[str] = []
    database.announce = heard.append
    inbox = _folder(database, alice, "Inbox")
    item = LocalDelivery(alice, "Inbox", blobs.put(b"x"), b"", 1, 1.0, SUMMARY, "t")
    with database.write() as conn:
        deliver(conn, [item, item])
    after = _folder(database, alice, "Inbox")
    assert after.highestmodseq == inbox.highestmodseq + 1
    with database.read() as conn:
        assert [r.modseq for r in mb.changes_since(conn, inbox.id, inbox.highestmodseq)] == [
            after.highestmodseq
        ] * 2
    assert heard == [mb.change_topic(alice)]


def test_expunge_and_unseen_match_the_system_flag_not_a_keyword_that_contains_its_name(
    database: Database, blobs: BlobStore, alice: int
) -> None:
    # On PostgreSQL a backslash in LIKE is an escape: "\\Deleted" would match a keyword "NotDeleted".
    keep = _append(database, blobs, alice, "Inbox", ("NotDeleted", "Seen"))
    with database.write() as conn:
        inbox = _folder_id(conn, alice, "Inbox")
        assert mb.expunge(conn, inbox) == []
        assert mb.folder_uids(conn, inbox) == [keep]
        assert mb.folder_status(conn, inbox).unseen == 1
