"""The end-to-end proof: a real node whose `[database] url` is PostgreSQL receives, expands, delivers,
refuses and traces mail exactly as on SQLite; and every 250 survives a kill -9 of `postroom serve`.

The records move to PostgreSQL; the blobs stay files in the node's data directory, or move to the
database too (`[node] blob_store = "database"`), where a second node reads them.
"""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import select

from postroom.app import App
from postroom.config import DatabaseSettings, load_settings
from postroom.model.flow import TraceStatus
from postroom.model.scope import OPERATOR
from postroom.storage.schema import messages, spool_messages
from postroom.trace import TraceQuery
from tests.conftest import Hosted, populate, wait_for
from tests.support.durability import assert_acknowledged_mail_survives_kill_9
from tests.support.node import make_node, running
from tests.support.records import exported, stored_messages

MESSAGE = (
    b"From: Partner <news@partner.example>\r\n"
    b"To: Team <team@contoso.com>\r\n"
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
    b"Message-ID: <pg-1@partner.example>\r\n"
    b"Date: Fri, 27 Nov 2026 08:00:00 +0000\r\n"
    b"\r\n"
    b"Hello team.\r\n"
    b"..A line that started with a dot.\r\n"
    b"Trailing spaces stay   \r\n"
)


@pytest.fixture
def pg_hosted(tmp_path: Path, postgres_url: str) -> Iterator[Hosted]:
    """The standard hosted node (contoso, fabrikam), its records on a fresh PostgreSQL database."""
    settings = make_node(tmp_path / "node")
    settings = replace(settings, database=DatabaseSettings(url=postgres_url))
    app = App.open(settings)
    assert app.database.write_engine.dialect.name == "postgresql"
    populate(app)
    yield Hosted(settings, app)
    app.close()


def inbox(hosted: Hosted, address: str) -> list[bytes]:
    app = hosted.app
    return [
        exported(app.directory, app.mailstore, address, m.uid)
        for m in stored_messages(app.directory, app.mailstore, address)
    ]


def test_group_alias_and_unknown_recipient_on_postgres(pg_hosted: Hosted) -> None:
    with running(pg_hosted.settings) as node, smtplib.SMTP(*node.mx) as client:
        client.ehlo("mta.partner.example")
        assert client.mail("news@partner.example")[0] == 250
        assert client.rcpt("team@contoso.com")[0] == 250
        assert client.rcpt("AL@Contoso.com")[0] == 250  # alice's alias: alice gets the message once
        code, text = client.rcpt("nobody@contoso.com")
        assert (code, text.split()[0]) == (550, b"5.4.1")
        code, text = client.data(MESSAGE)
        assert (code, text.split()[0]) == (250, b"2.6.0")
        wait_for(
            lambda: (
                len(inbox(pg_hosted, "alice@contoso.com")) == 1
                and len(inbox(pg_hosted, "bob@contoso.com")) == 1
            )
        )

    for address in ("alice@contoso.com", "bob@contoso.com"):
        [raw] = inbox(pg_hosted, address)
        headers, _, _ = raw.partition(b"\r\n\r\n")
        assert raw.startswith(b"Return-Path: <news@partner.example>\r\n")
        assert f"Delivered-To: {address}".encode() in headers
        assert b"by mx.postroom.test (Postroom)" in headers
        # The service's headers (the bytea prefix) then the message exactly as sent.
        assert raw.endswith(MESSAGE)
        assert raw[: -len(MESSAGE)].endswith(b"\r\n") and b"\r\n\r\n" not in raw[: -len(MESSAGE)]
    [listed] = stored_messages(pg_hosted.app.directory, pg_hosted.app.mailstore, "alice@contoso.com")
    assert (listed.subject, listed.message_id) == ("Grüße", "<pg-1@partner.example>")
    assert inbox(pg_hosted, "carol@fabrikam.com") == []

    rows = pg_hosted.app.trace.search(TraceQuery(message_id_header="pg-1@partner.example"), OPERATOR)
    # As on SQLite: alice's one delivery is traced under the RCPT as given (the alias, domain
    # lower-cased); the group's copy for alice settles with it.
    assert {r.recipient: r.status for r in rows} == {
        "team@contoso.com": TraceStatus.EXPANDED,
        "AL@contoso.com": TraceStatus.DELIVERED,
        "bob@contoso.com": TraceStatus.DELIVERED,
        "nobody@contoso.com": TraceStatus.FAILED,
    }
    detail = pg_hosted.app.trace.detail(rows[0].message_id, OPERATOR)
    assert detail is not None
    kinds = [e.event for e in detail.events]
    assert kinds[0] == "Receive" and {"Expand", "Deliver", "Fail"} <= set(kinds)
    assert detail.message.subject == "Grüße"
    assert pg_hosted.app.queue_summary().messages == 0
    with pg_hosted.app.database.read() as conn:  # bytea comes back as bytes
        [prefix] = conn.execute(select(messages.c.prefix).limit(1)).scalars().all()
        assert isinstance(prefix, bytes) and prefix.startswith(b"Return-Path: ")
        assert conn.execute(select(spool_messages.c.id)).all() == []


def test_every_acknowledged_message_survives_kill_9_on_postgres(tmp_path: Path, postgres_url: str) -> None:
    settings = make_node(tmp_path / "node")
    config = settings.source.read_text()
    assert '\nurl = ""' in config
    settings.source.write_text(config.replace('\nurl = ""', f'\nurl = "{postgres_url}"', 1))
    settings = load_settings(settings.source)
    assert settings.database_url == postgres_url
    assert_acknowledged_mail_survives_kill_9(settings)


def large_message(octets: int) -> bytes:
    """A message of about `octets` octets: headers, then numbered 76-octet lines (none starts with a dot)."""
    header = (
        b"From: Partner <news@partner.example>\r\n"
        b"To: Alice <alice@contoso.com>\r\n"
        b"Subject: the quarterly archive\r\n"
        b"Message-ID: <pg-large@partner.example>\r\n"
        b"\r\n"
    )
    lines = [b"%08d " % n + bytes(range(65, 91)) * 2 + b"0123456789\r\n" for n in range(octets // 78 + 1)]
    return header + b"".join(lines)


def test_a_blob_in_the_database_is_read_back_by_another_node(tmp_path: Path, postgres_url: str) -> None:
    # Past spool_threshold (1 MiB): received into a spool file, streamed into the database in chunks.
    message = large_message(1_200_000)
    first = replace(
        make_node(tmp_path / "first"), database=DatabaseSettings(url=postgres_url), blob_store="database"
    )
    app = App.open(first)
    populate(app)
    app.close()
    with running(first) as node, smtplib.SMTP(*node.mx) as client:
        client.ehlo("mta.partner.example")
        assert client.sendmail("news@partner.example", ["alice@contoso.com"], message) == {}  # 250 to all
        wait_for(
            lambda: len(stored_messages(node.app.directory, node.app.mailstore, "alice@contoso.com")) == 1
        )
    assert [p for p in first.data_dir.rglob("*") if p.is_file() and p.stat().st_size > 1_000_000] == [], (
        "the database store writes no blob file"
    )

    # Another node: its own data directory and config, the same database; it never saw the message.
    second = replace(
        make_node(tmp_path / "second"), database=DatabaseSettings(url=postgres_url), blob_store="database"
    )
    other = App.open(second)
    try:
        [listed] = stored_messages(other.directory, other.mailstore, "alice@contoso.com")
        raw = exported(other.directory, other.mailstore, "alice@contoso.com", listed.uid)
    finally:
        other.close()
    assert raw.endswith(message), "byte-exact, after the headers the receiving node added"
    assert raw.startswith(b"Return-Path: <news@partner.example>\r\n")
    assert listed.subject == "the quarterly archive"
