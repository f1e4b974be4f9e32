"""`postroom migrate imap` against a real Dovecot (the source) into a real node's mailboxes: what lands
where (folders, special use, flags, internal dates, the bytes), what a re-run copies, an interrupted
run resumed, what is skipped and reported, the rows that fail alone and the batch that fails whole,
the three security modes, and that another tenant's mailbox is never written.

One Dovecot and one node for the module; each test uses its own source users and target mailboxes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

from postroom.app import App
from postroom.cli import app, output
from postroom.cli.context import state
from postroom.mailstore import mailbox
from postroom.model.scope import OPERATOR
from postroom.storage.schema import migrated_messages
from tests.support import dovecot
from tests.support.dovecot import Dovecot, Fixture
from tests.support.node import make_node

NODE_LIMIT = 100_000  # the node's largest message (mx.limits.max_message_size), below the service's 35 MB
CONTOSO = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy")


def message(subject: str, body_octets: int = 200, sender: str = "someone@example.org") -> bytes:
    body = (b"The quick brown fox jumps over the lazy dog. " * (body_octets // 45 + 1))[:body_octets]
    return (
        (
            f"From: {sender}\r\nTo: user@contoso.test\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '.')}@example.org>\r\n"
            "Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        ).encode()
        + body
        + b"\r\n"
    )


@pytest.fixture(scope="module")
def source() -> Iterator[Dovecot]:
    with dovecot.running() as server:
        for user in (*CONTOSO, "mallory"):
            server.add_user(user, f"{user}-pw")
        server.add_master("admin", "admin-pw")
        yield server


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    settings = make_node(tmp_path_factory.mktemp("migration") / "node")
    text = settings.source.read_text(encoding="utf-8")
    settings.source.write_text(
        text.replace("max_message_size = 36700160", f"max_message_size = {NODE_LIMIT}", 1), "utf-8"
    )
    path = settings.source
    for command in (
        ["tenant", "add", "contoso"],
        ["domain", "add", "contoso.test", "--tenant", "contoso", "--verified"],
        ["tenant", "add", "fabrikam"],
        ["domain", "add", "fabrikam.test", "--tenant", "fabrikam", "--verified"],
        *(["mailbox", "add", f"{user}@contoso.test", "--tenant", "contoso"] for user in CONTOSO),
        ["mailbox", "add", "mallory@fabrikam.test", "--tenant", "fabrikam"],
        ["tenant", "add", "northwind"],  # removed at once: its address must fail like any unknown one
        ["domain", "add", "northwind.test", "--tenant", "northwind", "--verified"],
        ["mailbox", "add", "oscar@northwind.test", "--tenant", "northwind"],
        ["tenant", "remove", "northwind", "--yes"],
    ):
        assert cli(path, *command).exit_code == 0, command
    yield path
    if state.node is not None:
        state.node.close()
        state.node = None


def cli(config: Path, *args: str) -> Result:
    # The summary table has ten columns: the shared console reads COLUMNS only when it is made (at
    # import, maybe by another test module of this worker), so its width is set here.
    width = output.console.width
    output.console.width = 200
    try:
        return CliRunner().invoke(app, ["-c", str(config), *args], env={"COLUMNS": "200"})
    finally:
        output.console.width = width


def batch(
    tmp_path: Path, *rows: tuple[str, str, str], header: str = "EmailAddress,UserName,Password"
) -> Path:
    path = tmp_path / "batch.csv"
    path.write_text(header + "\n" + "".join(f"{a},{u},{p}\n" for a, u, p in rows), "utf-8")
    return path


def migrate(config: Path, source: Dovecot, csv: Path, *extra: str, port: int | None = None) -> Result:
    return cli(
        config,
        "migrate",
        "imap",
        "--csv",
        str(csv),
        "--host",
        source.host,
        "--port",
        str(port or source.tls_port),
        "--ca-file",
        str(source.ca),
        *extra,
    )


def summary(result: Result, exit_code: int = 0) -> dict[str, Any]:
    assert result.exit_code == exit_code, result.output
    found: dict[str, Any] = json.loads(result.stdout)
    return found


def node() -> App:
    assert state.node is not None
    return state.node


def mailbox_id(address: str) -> int:
    return node().directory.get_recipient(OPERATOR, address).id


def stored(address: str) -> dict[str, list[tuple[bytes, frozenset[str], float]]]:
    """Every folder of the Postroom mailbox with its messages: (bytes, flags, internal date)."""
    found: dict[str, list[tuple[bytes, frozenset[str], float]]] = {}
    with node().database.read() as conn:
        for folder in mailbox.list_folders(conn, mailbox_id(address)):
            found[folder.name] = [
                (record.prefix + node().blobs.get(record.blob_id), record.flags, record.internal_date)
                for record in mailbox.folder_messages(conn, folder.id)
            ]
    return found


def special_uses(address: str) -> dict[str, str]:
    with node().database.read() as conn:
        return {
            f.name: f.special_use for f in mailbox.list_folders(conn, mailbox_id(address)) if f.special_use
        }


def test_a_full_copy_lands_every_folder_message_flag_and_date(
    config: Path, source: Dovecot, tmp_path: Path
) -> None:
    inbox = [
        Fixture(message("seen one"), ("\\Seen",), 1_600_000_000.0),
        Fixture(message("answered and flagged"), ("\\Answered", "\\Flagged", "$Label1"), 1_600_000_100.0),
        Fixture(message("draft-ish unread"), (), 1_600_000_200.0),
        Fixture(message("deleted on the source"), ("\\Deleted", "\\Seen"), 1_600_000_300.0),
        Fixture(message("far too large", NODE_LIMIT + 1000), (), 1_600_000_400.0),
    ]
    source.fill("alice", "INBOX", inbox)
    source.fill("alice", "Sent", [Fixture(message("sent by alice"), ("\\Seen",), 1_500_000_000.0)])
    source.fill("alice", "Junk", [Fixture(message("spam"), (), 1_500_000_001.0)])
    source.fill("alice", "Projects.2026", [Fixture(message("project"), ("\\Seen", "Work"), 1_550_000_000.0)])
    with source.client("alice", "alice-pw") as client:  # a folder with "/" in its name: skipped
        client.create('"Odd/Name"')
        client.append('"Odd/Name"', "", None, message("odd"))

    result = migrate(config, source, batch(tmp_path, ("alice@contoso.test", "alice", "alice-pw")), "--json")

    report = summary(result)
    (alice,) = report["mailboxes"]
    assert (alice["ok"], alice["copied"], alice["already"], alice["skipped"], alice["failed"]) == (
        True,
        6,
        0,
        2,
        0,
    )
    assert any("Odd/Name" in note and '"/"' in note for note in alice["notes"])
    assert any("over the limit of 100,000" in note for note in alice["notes"])
    assert any("\\Deleted not copied" in note for note in alice["notes"])
    folders = stored("alice@contoso.test")
    by_subject = {
        raw.split(b"Subject: ")[1].split(b"\r\n")[0]: (raw, flags, date)
        for raw, flags, date in folders["Inbox"]
    }
    assert set(by_subject) == {b"seen one", b"answered and flagged", b"draft-ish unread"}
    assert by_subject[b"seen one"] == (inbox[0].raw, frozenset({"\\Seen"}), 1_600_000_000.0)
    assert by_subject[b"answered and flagged"] == (
        inbox[1].raw,
        frozenset({"\\Answered", "\\Flagged", "$Label1"}),
        1_600_000_100.0,
    )
    assert by_subject[b"draft-ish unread"][1] == frozenset()
    assert [(raw, flags) for raw, flags, _ in folders["Sent"]] == [
        (message("sent by alice"), frozenset({"\\Seen"}))
    ]
    assert [raw for raw, _, _ in folders["Junk"]] == [message("spam")]
    assert folders["Projects/2026"] == [(message("project"), frozenset({"\\Seen", "Work"}), 1_550_000_000.0)]
    assert "Odd/Name" not in folders
    assert special_uses("alice@contoso.test")["Sent"] == "\\Sent"
    assert inbox_subjects_in_uid_order("alice@contoso.test") == [
        "draft-ish unread",
        "answered and flagged",
        "seen one",
    ]

    again = summary(
        migrate(config, source, batch(tmp_path, ("alice@contoso.test", "alice", "alice-pw")), "--json")
    )
    assert (again["total"]["copied"], again["total"]["already"]) == (0, 6)
    assert stored("alice@contoso.test") == folders

    source.fill("alice", "INBOX", [Fixture(message("new after the first run"), (), 1_700_000_000.0)])
    third = summary(
        migrate(config, source, batch(tmp_path, ("alice@contoso.test", "alice", "alice-pw")), "--json")
    )
    assert (third["total"]["copied"], third["total"]["already"]) == (1, 6)
    assert len(stored("alice@contoso.test")["Inbox"]) == 4


def inbox_subjects_in_uid_order(address: str) -> list[str]:
    """The Inbox's subjects in UID order: the migration copies each folder newest first."""
    return [raw.split(b"Subject: ")[1].split(b"\r\n")[0].decode() for raw, _, _ in stored(address)["Inbox"]]


def test_the_table_summary_names_each_mailbox_and_the_totals(
    config: Path, source: Dovecot, tmp_path: Path
) -> None:
    source.fill("bob", "INBOX", [Fixture(message(f"bob {n}")) for n in range(3)])
    result = migrate(config, source, batch(tmp_path, ("bob@contoso.test", "bob", "bob-pw")))
    assert result.exit_code == 0, result.output
    assert "bob@contoso.test" in result.stdout
    assert "1 mailbox(es), 0 failed" in result.stdout


def test_one_mailboxs_failure_does_not_stop_the_batch(config: Path, source: Dovecot, tmp_path: Path) -> None:
    source.fill("dave", "INBOX", [Fixture(message("dave's"))])
    source.fill("erin", "INBOX", [Fixture(message("erin's"))])
    rows = (
        ("dave@contoso.test", "dave", "not-the-password"),
        ("nobody@contoso.test", "erin", "erin-pw"),  # no such mailbox
        ("erin@elsewhere.test", "erin", "erin-pw"),  # a domain no tenant has accepted
        ("oscar@northwind.test", "erin", "erin-pw"),  # a removed tenant's mailbox
        ("erin@contoso.test", "erin", "erin-pw"),
    )
    report = summary(migrate(config, source, batch(tmp_path, *rows), "--json"), exit_code=1)
    results = [(b["address"], b["ok"], b["copied"]) for b in report["mailboxes"]]
    assert results == [
        ("dave@contoso.test", False, 0),
        ("nobody@contoso.test", False, 0),
        ("erin@elsewhere.test", False, 0),
        ("oscar@northwind.test", False, 0),
        ("erin@contoso.test", True, 1),
    ]
    errors = [b["error"] for b in report["mailboxes"]]
    assert "refused the login of 'dave'" in errors[0]
    assert all("must exist first" in error for error in errors[1:4])
    assert "not-the-password" not in json.dumps(report)
    assert report["total"]["failed_mailboxes"] == 4
    assert sum(len(messages) for messages in stored("dave@contoso.test").values()) == 0


@pytest.mark.parametrize(
    ("header", "said"),
    [
        ("EmailAddress,UserName", "lacks the column(s) Password"),
        ("Email,UserName,Password", "unknown column 'Email'"),
    ],
)
def test_bad_csv_headers_fail_the_batch_before_anything_is_copied(
    config: Path, source: Dovecot, tmp_path: Path, header: str, said: str
) -> None:
    source.fill("frank", "INBOX", [Fixture(message("frank's"))])
    result = migrate(
        config, source, batch(tmp_path, ("frank@contoso.test", "frank", "frank-pw"), header=header)
    )
    assert result.exit_code == 2
    assert said in result.stderr
    assert sum(len(messages) for messages in stored("frank@contoso.test").values()) == 0


@pytest.mark.parametrize("security", ["ssl", "starttls", "plain"])
def test_each_security_mode_copies(config: Path, source: Dovecot, tmp_path: Path, security: str) -> None:
    user = {"ssl": "grace", "starttls": "heidi", "plain": "ivan"}[security]
    source.fill(user, "INBOX", [Fixture(message(f"over {security}"))])
    port = source.tls_port if security == "ssl" else source.port
    report = summary(
        migrate(
            config,
            source,
            batch(tmp_path, (f"{user}@contoso.test", user, f"{user}-pw")),
            "--json",
            "--security",
            security,
            port=port,
        )
    )
    assert report["total"]["copied"] == 1
    assert [raw for raw, _, _ in stored(f"{user}@contoso.test")["Inbox"]] == [message(f"over {security}")]


def test_a_master_login_works_as_the_username(config: Path, source: Dovecot, tmp_path: Path) -> None:
    source.fill("frank", "Archive", [Fixture(message("archived"), ("\\Seen",))])
    report = summary(
        migrate(config, source, batch(tmp_path, ("frank@contoso.test", "frank*admin", "admin-pw")), "--json")
    )
    assert report["mailboxes"][0]["ok"], report
    assert [raw for raw, _, _ in stored("frank@contoso.test")["Archive"]] == [message("archived")]


def test_a_tenant_scoped_batch_never_writes_another_tenants_mailbox(
    config: Path, source: Dovecot, tmp_path: Path
) -> None:
    source.fill("mallory", "INBOX", [Fixture(message("into fabrikam?"))])
    rows = (("mallory@fabrikam.test", "mallory", "mallory-pw"),)
    report = summary(
        migrate(config, source, batch(tmp_path, *rows), "--json", "--tenant", "contoso"), exit_code=1
    )
    assert not report["mailboxes"][0]["ok"]
    assert "no recipient has the address" in report["mailboxes"][0]["error"]
    assert sum(len(messages) for messages in stored("mallory@fabrikam.test").values()) == 0
    with node().database.read() as conn:
        rows_of = conn.execute(
            migrated_messages.select().where(
                migrated_messages.c.mailbox_id == mailbox_id("mallory@fabrikam.test")
            )
        ).all()
    assert rows_of == []


def test_a_killed_run_resumes_without_duplicates(config: Path, source: Dovecot, tmp_path: Path) -> None:
    total = 1000  # ten commit groups: the kill lands long before the last
    source.fill(
        "carol", "INBOX", [Fixture(message(f"carol {n}"), (), 1_600_000_000.0 + n) for n in range(total)]
    )
    csv = batch(tmp_path, ("carol@contoso.test", "carol", "carol-pw"))
    command = [
        sys.executable,
        "-m",
        "postroom",
        "-c",
        str(config),
        "migrate",
        "imap",
        "--csv",
        str(csv),
        "--host",
        source.host,
        "--port",
        str(source.tls_port),
        "--ca-file",
        str(source.ca),
    ]
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert process.stderr is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        assert line, f"the run ended before copying: exit {process.wait()}"
        if " copied (Inbox)" in line:
            break
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    first = len(stored("carol@contoso.test")["Inbox"])
    assert 0 < first < total  # killed part way: some groups committed, not all

    report = summary(migrate(config, source, csv, "--json"))
    assert (report["total"]["already"], report["total"]["copied"]) == (first, total - first)
    subjects = [
        raw.split(b"Subject: ")[1].split(b"\r\n")[0] for raw, _, _ in stored("carol@contoso.test")["Inbox"]
    ]
    assert sorted(subjects) == sorted(f"carol {n}".encode() for n in range(total))


def test_a_folder_recreated_on_the_source_is_copied_again_without_duplicates(
    config: Path, source: Dovecot, tmp_path: Path
) -> None:
    csv = batch(tmp_path, ("judy@contoso.test", "judy", "judy-pw"))
    with source.client("judy", "judy-pw") as client:
        client.create("Work")
        for n in range(2):
            client.append("Work", "", None, message(f"work {n}"))
    assert summary(migrate(config, source, csv, "--json"))["total"]["copied"] == 2
    with source.client("judy", "judy-pw") as client:  # a new folder of the same name: a new UIDVALIDITY
        client.delete("Work")
        client.create("Work")
        for n in range(3):
            client.append("Work", "(\\Seen)", None, message(f"work again {n}"))

    report = summary(migrate(config, source, csv, "--json"))

    assert report["total"]["copied"] == 3
    assert any("new UIDVALIDITY" in note for note in report["mailboxes"][0]["notes"])
    assert sorted(raw for raw, _, _ in stored("judy@contoso.test")["Work"]) == sorted(
        message(f"work again {n}") for n in range(3)
    )


def test_the_command_is_in_the_help_with_its_options() -> None:
    assert "migrate" in CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"}).output
    shown = CliRunner().invoke(app, ["migrate", "imap", "--help"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0
    for option in ("--csv", "--host", "--port", "--security", "--ca-file", "--json", "--tenant"):
        assert option in shown.output
