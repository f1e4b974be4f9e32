"""`postroom mailbox set --quota` and the quota and usage of `mailbox show`, as a user runs them (a
real process against a node's database)."""

from __future__ import annotations

import json

from postroom.model.scope import OPERATOR
from tests.cli.test_commands import postroom
from tests.conftest import Hosted
from tests.support.records import receive

MESSAGE = b"From: x@partner.example\r\nTo: alice@contoso.com\r\nSubject: hi\r\n\r\n" + b"x" * 900 + b"\r\n"


def test_quota_is_set_shown_with_usage_and_cleared(hosted: Hosted) -> None:
    app, config = hosted.app, hosted.settings.source
    receive(app.database, app.blobs, "x@partner.example", ["alice@contoso.com"], MESSAGE)
    alice = app.directory.get_recipient(OPERATOR, "alice@contoso.com").id
    used = sum(folder.size for folder in app.mailstore.folders(OPERATOR, alice))
    assert used > len(MESSAGE)

    changed = postroom("mailbox", "set", "al@contoso.com", "--quota", str(4 * used), config=config)
    assert changed.returncode == 0, changed.stderr
    assert f"{4 * used} octets ({used} used, 25.0%)" in changed.stdout

    shown = json.loads(postroom("mailbox", "show", "alice@contoso.com", "--json", config=config).stdout)
    assert (shown["quota"], shown["usage"], shown["usage_percent"]) == (4 * used, used, 25.0)

    # A tenant's admin cannot change another tenant's mailbox: it does not exist for them.
    refused = postroom(
        "mailbox", "set", "alice@contoso.com", "--quota", "0", "--tenant", "fabrikam", config=config
    )
    assert refused.returncode != 0 and "no recipient has the address" in refused.stderr

    cleared = postroom(
        "mailbox", "set", "alice@contoso.com", "--quota", "0", "--tenant", "contoso", config=config
    )
    assert cleared.returncode == 0, cleared.stderr
    assert f"none ({used} octets used)" in cleared.stdout
    assert app.directory.mailbox_quota(OPERATOR, "alice@contoso.com") is None
