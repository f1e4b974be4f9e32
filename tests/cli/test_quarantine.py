"""`postroom quarantine ...` as an operator, a tenant's administrator and a recipient run it: list, show,
preview, release (--to, --report-false-positive), request-release, delete, purge; trace finds the held
mail by status; mistakes say what to do."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from postroom.app import App
from postroom.config import Settings
from postroom.model.scope import OPERATOR
from tests.cli.test_commands import postroom
from tests.conftest import populate
from tests.support.quarantine import held
from tests.support.records import stored_messages


class Held:
    def __init__(self, app: App, config: Path, spam: int, phish: int, malware: int) -> None:
        self.app, self.config = app, config
        self.spam, self.phish, self.malware = spam, phish, malware


@pytest.fixture
def quarantined(node_settings: Settings) -> Iterator[Held]:
    app = App.open(node_settings)
    populate(app)
    d = app.directory

    def mailbox(address: str) -> tuple[str, int]:
        return address, d.get_recipient(OPERATOR, address).id

    contoso = d.get_tenant(OPERATOR, "contoso").id
    fabrikam = d.get_tenant(OPERATOR, "fabrikam").id
    db, blobs = app.database, app.blobs
    now = time.time()
    spam = held(db, blobs, contoso, [mailbox("alice@contoso.com"), mailbox("bob@contoso.com")], at=now - 300)
    phish = held(
        db, blobs, contoso, [mailbox("alice@contoso.com")], reason="high-confidence-phish", at=now - 200
    )
    malware = held(db, blobs, fabrikam, [mailbox("carol@fabrikam.com")], reason="malware", at=now - 100)
    yield Held(app, node_settings.source, spam, phish, malware)
    app.close()


def run(held: Held, *args: str) -> str:
    result = postroom("quarantine", *args, config=held.config)
    assert result.returncode == 0, result.stderr
    return result.stdout


def ids(held: Held, *args: str) -> list[int]:
    return [m["id"] for m in json.loads(run(held, "list", "--json", *args))]


def test_quarantine_commands_round_trip(quarantined: Held) -> None:
    q = quarantined
    listed = json.loads(run(q, "list", "--json"))
    assert [m["id"] for m in listed] == [q.malware, q.phish, q.spam]
    assert (listed[2]["tenant"], listed[2]["reason"], listed[2]["state"]) == (
        "contoso",
        "high-confidence-spam",
        "held",
    )
    assert (listed[0]["tenant"], listed[0]["admin_only"]) == ("fabrikam", True)
    assert ids(q, "--tenant", "contoso", "--recipient", "bob@contoso.com") == [q.spam]
    assert ids(q, "--as-user", "alice@contoso.com", "--reason", "high-confidence-phish") == [q.phish]
    table = run(q, "list")
    assert "You won" in table and "fabrikam" in table and "high-confidence-phish" in table

    shown = run(q, "show", str(q.spam))
    for expected in ("DefaultFullAccessPolicy", "alice@contoso.com", "bob@contoso.com", "held", "scl"):
        assert expected in shown
    preview = run(q, "preview", str(q.spam))
    assert "Subject: You won" in preview and "Claim your prize today." in preview

    released = run(q, "release", str(q.spam), "--to", "bob@contoso.com")
    assert "released to bob@contoso.com (Inbox)" in released
    assert len(stored_messages(q.app.directory, q.app.mailstore, "bob@contoso.com")) == 1
    assert stored_messages(q.app.directory, q.app.mailstore, "alice@contoso.com") == []
    assert q.app.quarantine.show(OPERATOR, q.spam).state == "released to 1 of 2"

    refused = postroom(
        "quarantine", "release", str(q.phish), "--as-user", "alice@contoso.com", config=q.config
    )
    assert refused.returncode == 1 and "request its release instead" in refused.stderr
    assert "release requested" in run(q, "request-release", str(q.phish), "--as-user", "alice@contoso.com")
    assert q.app.quarantine.show(OPERATOR, q.phish).state == "release requested"
    reported = run(q, "release", str(q.phish), "--tenant", "contoso", "--report-false-positive")
    assert "released to alice@contoso.com (Inbox)" in reported
    assert "false positive report: learned as not spam" in reported  # the built-in engine learned it
    [inbox] = stored_messages(q.app.directory, q.app.mailstore, "alice@contoso.com")
    alice = q.app.directory.get_recipient(OPERATOR, "alice@contoso.com").id
    exported = q.app.mailstore.export(OPERATOR, alice, inbox.uid)
    assert b"X-Postroom-Quarantine-Released: by tenant administrator;" in exported and b"SFV:SKQ;" in exported

    other = postroom("quarantine", "delete", str(q.malware), "--tenant", "contoso", config=q.config)
    assert other.returncode == 1 and f"no quarantined message {q.malware}" in other.stderr
    assert "deleted message" in run(q, "delete", str(q.malware))
    assert [m.id for m in q.app.quarantine.list_messages(OPERATOR)] == [q.phish, q.spam]
    assert "removed 0 expired" in run(q, "purge")

    traced = postroom("trace", "--status", "quarantined", "--json", config=q.config)
    assert traced.returncode == 0, traced.stderr
    rows = {(r["recipient"], r["status"]) for r in json.loads(traced.stdout)}
    assert rows == {("alice@contoso.com", "quarantined"), ("carol@fabrikam.com", "quarantined")}
    spam_status = postroom("trace", "--status", "filtered-as-spam", config=q.config)
    assert spam_status.returncode == 0, spam_status.stderr


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["list", "--reason", "boring"], "use one of malware, file-type", 2),
        (["request-release", "SPAM"], "give --as-user ADDRESS", 2),
        (["release", "SPAM", "--to", "nobody@contoso.com"], "is not a recipient of quarantined message", 2),
        (["release", "SPAM", "--as-user", "team@contoso.com"], "is a group", 2),
        (["show", "999"], "`postroom quarantine list` shows the ids", 1),
        (["preview", "SPAM", "--as-user", "carol@fabrikam.com"], "no quarantined message", 1),
    ],
)
def test_quarantine_mistakes_say_what_to_do(
    quarantined: Held, args: list[str], message: str, code: int
) -> None:
    args = [str(quarantined.spam) if a == "SPAM" else a for a in args]
    result = postroom("quarantine", *args, config=quarantined.config)
    assert result.returncode == code, result.stderr
    assert message in result.stderr
