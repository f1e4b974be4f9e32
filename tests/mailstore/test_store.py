"""Mailstore: deliver assigns ascending UIDs per folder; export is prefix + blob exactly."""

from __future__ import annotations

from pathlib import Path

import pytest

from postroom.directory import Directory
from postroom.mailstore import LocalDelivery, MailboxNotFoundError, Mailstore, deliver
from postroom.model.message import HeaderSummary
from postroom.model.scope import OPERATOR, TenantScope
from postroom.storage import BlobStore, Database, FileBlobStore


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    return FileBlobStore(tmp_path / "blobs")


@pytest.fixture
def store(database: Database, directory: Directory, blobs: BlobStore) -> Mailstore:
    directory.add_tenant(OPERATOR, "contoso")
    directory.add_domain(OPERATOR, "contoso.com", "contoso", verified=True)
    directory.add_mailbox(OPERATOR, "alice@contoso.com", aliases=["al@contoso.com"])
    directory.add_mailbox(OPERATOR, "bob@contoso.com")
    directory.add_group(OPERATOR, "team@contoso.com", members=[])
    return Mailstore(database, blobs)


def delivery(
    mailbox_id: int, blob_id: str, *, folder: str = "Inbox", subject: str = "s", prefix: bytes = b""
) -> LocalDelivery:
    return LocalDelivery(
        mailbox_id=mailbox_id,
        folder=folder,
        blob_id=blob_id,
        prefix=prefix,
        size=len(prefix) + 10,
        internal_date=1000.0,
        summary=HeaderSummary(
            "Carol <carol@example.net>", subject, "Mon, 1 Jan 2024 10:00:00 +0000", "<m@x>"
        ),
        trace_id="trace-1",
    )


def test_uids_ascend_per_folder(
    database: Database, directory: Directory, store: Mailstore, blobs: BlobStore
) -> None:
    alice = directory.get_recipient(OPERATOR, "alice@contoso.com").id
    bob = directory.get_recipient(OPERATOR, "bob@contoso.com").id
    blob = blobs.put(b"Subject: s\r\n\r\nbody\r\n")
    with database.write() as conn:
        first_missing = deliver(
            conn,
            [
                delivery(alice, blob, subject="a1"),
                delivery(bob, blob, subject="b1"),
                delivery(alice, blob, subject="a2"),
                delivery(alice, blob, folder="Junk", subject="j1"),
            ],
        )
    with database.write() as conn:
        second_missing = deliver(
            conn, [delivery(alice, blob, subject="a3"), delivery(alice, blob, folder="Junk", subject="j2")]
        )
    assert first_missing == second_missing == set()
    assert [(m.uid, m.subject) for m in store.list_messages(OPERATOR, alice)] == [
        (1, "a1"),
        (2, "a2"),
        (3, "a3"),
    ]
    assert [(m.uid, m.subject) for m in store.list_messages(OPERATOR, alice, "junk")] == [
        (1, "j1"),
        (2, "j2"),
    ]
    assert [(m.uid, m.subject) for m in store.list_messages(OPERATOR, bob)] == [(1, "b1")]
    summary = {f.name: f for f in store.folders(OPERATOR, alice)}
    assert (summary["Inbox"].messages, summary["Inbox"].unseen, summary["Inbox"].uidnext) == (3, 3, 4)
    assert (summary["Junk"].messages, summary["Junk"].uidnext, summary["Sent"].messages) == (2, 3, 0)
    assert (
        summary["Sent"].uidnext,
        {f.name: f.uidnext for f in store.folders(OPERATOR, bob)}["Inbox"],
    ) == (1, 2)
    assert summary["Inbox"].size == 30


def test_stored_message_facts(
    database: Database, directory: Directory, store: Mailstore, blobs: BlobStore
) -> None:
    alice = directory.get_recipient(OPERATOR, "alice@contoso.com").id
    with database.write() as conn:
        deliver(conn, [delivery(alice, blobs.put(b"x"), subject="Grüße")])
    [message] = store.list_messages(OPERATOR, alice)
    assert (
        message.folder,
        message.from_header,
        message.subject,
        message.message_id,
        message.flags,
        message.trace_id,
    ) == (
        "Inbox",
        "Carol <carol@example.net>",
        "Grüße",
        "<m@x>",
        (),
        "trace-1",
    )


def test_export_is_prefix_then_blob_exactly(
    database: Database, directory: Directory, store: Mailstore, blobs: BlobStore
) -> None:
    body = b"From: carol@example.net\r\nSubject: raw\r\n\r\n\xff\x00binary line\r\n.\r\nno final CRLF"
    prefix = b"Return-Path: <carol@example.net>\r\nReceived: from mx by postroom\r\n"
    alice = directory.get_recipient(OPERATOR, "alice@contoso.com").id
    with database.write() as conn:
        deliver(conn, [delivery(alice, blobs.put(body), prefix=prefix)])
    [stored] = store.list_messages(OPERATOR, alice)
    assert store.export(OPERATOR, alice, stored.uid) == prefix + body


def test_export_and_list_errors(directory: Directory, store: Mailstore) -> None:
    alice = directory.get_recipient(OPERATOR, "alice@contoso.com").id
    team = directory.get_recipient(OPERATOR, "team@contoso.com").id
    with pytest.raises(MailboxNotFoundError, match="no message with UID 1"):
        store.export(OPERATOR, alice, 1)
    with pytest.raises(MailboxNotFoundError, match="no folder 'Outbox'"):
        store.list_messages(OPERATOR, alice, "Outbox")
    with pytest.raises(MailboxNotFoundError, match="no mailbox"):
        store.folders(OPERATOR, team)
    with pytest.raises(MailboxNotFoundError):
        store.folders(OPERATOR, 10_000)


def test_another_tenant_cannot_read_a_mailbox_by_id(
    database: Database, directory: Directory, store: Mailstore, blobs: BlobStore
) -> None:
    fabrikam = directory.add_tenant(OPERATOR, "fabrikam")
    contoso = directory.get_tenant(OPERATOR, "contoso")
    alice = directory.get_recipient(OPERATOR, "alice@contoso.com").id
    with database.write() as conn:
        deliver(conn, [delivery(alice, blobs.put(b"Subject: s\r\n\r\nsecret\r\n"))])
    intruder = TenantScope(fabrikam.id)
    for read in (
        lambda: store.folders(intruder, alice),
        lambda: store.list_messages(intruder, alice),
        lambda: store.export(intruder, alice, 1),
    ):
        with pytest.raises(MailboxNotFoundError, match="no mailbox"):
            read()
    assert len(store.list_messages(TenantScope(contoso.id), alice)) == 1


def test_a_missing_mailbox_or_folder_is_reported_and_the_others_are_stored(
    database: Database, directory: Directory, store: Mailstore, blobs: BlobStore
) -> None:
    alice = directory.get_recipient(OPERATOR, "alice@contoso.com").id
    bob = directory.get_recipient(OPERATOR, "bob@contoso.com").id
    blob = blobs.put(b"x")
    with database.write() as conn:
        missing = deliver(
            conn,
            [
                delivery(alice + 1000, blob),
                delivery(alice, blob, subject="kept"),
                delivery(bob, blob, folder="Nope"),
            ],
        )
    assert missing == {alice + 1000, bob}
    assert [(m.uid, m.subject) for m in store.list_messages(OPERATOR, alice)] == [(1, "kept")]
    assert store.list_messages(OPERATOR, bob) == []


def test_deliver_nothing(database: Database) -> None:
    with database.write() as conn:
        assert deliver(conn, []) == set()
