"""`postroom sender restricted`, `mailbox send-as`, and the sending options of `tenant set` and
`mailbox set`, as a user runs them (a real process against a node's database)."""

from __future__ import annotations

import json
import time

from postroom.app import App
from postroom.directory import charge_recipients, find_submission_account
from postroom.model.scope import OPERATOR
from tests.cli.test_commands import postroom
from tests.conftest import Hosted


def test_send_as_and_sending_limits(hosted: Hosted) -> None:
    config = hosted.settings.source
    added = postroom("mailbox", "send-as", "add", "team@contoso.com", "bob@contoso.com", config=config)
    assert added.returncode == 0, added.stderr
    listed = postroom("mailbox", "send-as", "list", "team@contoso.com", "--json", config=config)
    assert json.loads(listed.stdout) == ["bob@contoso.com"]
    across = postroom("mailbox", "send-as", "add", "carol@fabrikam.com", "bob@contoso.com", config=config)
    assert across.returncode != 0 and "different tenants" in across.stderr
    changed = postroom(
        "mailbox", "set", "bob@contoso.com", "--max-recipients", "20", "--smtp-auth", "off", config=config
    )
    assert changed.returncode == 0, changed.stderr
    too_many = postroom("mailbox", "set", "bob@contoso.com", "--max-recipients", "5000", config=config)
    assert too_many.returncode != 0 and "1 to 1000" in too_many.stderr
    tenant = postroom(
        "tenant", "set", "contoso", "--max-send-size", "1000000", "--smtp-auth", "off", config=config
    )
    assert tenant.returncode == 0 and "SMTP AUTH off" in tenant.stdout
    with hosted.app.database.read() as conn:
        bob = find_submission_account(conn, "bob@contoso.com")
    assert bob is not None and not bob.smtp_auth and bob.max_recipients == 20
    assert bob.max_send_size == 1_000_000 and "team@contoso.com" in bob.senders


def test_restricted_senders_list_and_release(hosted: Hosted) -> None:
    app: App = hosted.app
    bob = app.directory.get_recipient(OPERATOR, "bob@contoso.com")
    with app.database.write() as conn:
        charge_recipients(conn, bob.id, bob.tenant_id, 11, time.time(), 10)
    config = hosted.settings.source
    listed = postroom("sender", "restricted", "list", "--json", config=config)
    assert [r["address"] for r in json.loads(listed.stdout)] == ["bob@contoso.com"]
    other = postroom("sender", "restricted", "list", "--tenant", "fabrikam", "--json", config=config)
    assert json.loads(other.stdout) == []
    released = postroom("sender", "restricted", "release", "bob@contoso.com", config=config)
    assert released.returncode == 0, released.stderr
    again = postroom("sender", "restricted", "release", "bob@contoso.com", config=config)
    assert again.returncode == 1 and "not restricted" in again.stderr
    assert json.loads(postroom("sender", "restricted", "list", "--json", config=config).stdout) == []
