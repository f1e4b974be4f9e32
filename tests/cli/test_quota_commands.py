"""`postroom mailbox set --quota` and the quota and usage of `mailbox show`, as an admin runs them:
output, JSON, exit statuses, and another tenant's mailbox answered as one that does not exist."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from click.testing import Result
from typer.testing import CliRunner

from postroom.cli import app
from postroom.cli.context import state
from postroom.model.scope import OPERATOR
from tests.conftest import Hosted
from tests.support.records import receive

MESSAGE = b"From: x@partner.example\r\nTo: alice@contoso.com\r\nSubject: hi\r\n\r\n" + b"x" * 900 + b"\r\n"


@pytest.fixture
def admin(hosted: Hosted) -> Iterator[Hosted]:
    yield hosted
    if state.node is not None:
        state.node.close()
        state.node = None


def cli(hosted: Hosted, *args: str) -> Result:
    return CliRunner().invoke(app, ["-c", str(hosted.settings.source), *args], env={"COLUMNS": "200"})


def test_every_quota_command_has_true_help() -> None:
    shown = CliRunner().invoke(app, ["mailbox", "set", "--help"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0 and "--quota" in shown.output and "0: no limit" in shown.output


def test_quota_is_set_shown_with_usage_and_cleared(admin: Hosted) -> None:
    hosted = admin
    receive(hosted.app.database, hosted.app.blobs, "x@partner.example", ["alice@contoso.com"], MESSAGE)
    alice = hosted.app.directory.get_recipient(OPERATOR, "alice@contoso.com").id
    used = sum(folder.size for folder in hosted.app.mailstore.folders(OPERATOR, alice))
    assert used > len(MESSAGE)

    changed = cli(hosted, "mailbox", "set", "al@contoso.com", "--quota", str(4 * used))
    assert changed.exit_code == 0, changed.output
    assert f"{4 * used} octets ({used} used, 25.0%)" in changed.output
    shown = json.loads(cli(hosted, "mailbox", "show", "alice@contoso.com", "--json").output)
    assert (shown["quota"], shown["usage"], shown["usage_percent"]) == (4 * used, used, 25.0)
    text = cli(hosted, "mailbox", "show", "alice@contoso.com", "--tenant", "contoso")
    assert text.exit_code == 0 and f"{4 * used} octets ({used} used, 25.0%)" in text.output

    # A tenant's admin cannot read or change another tenant's mailbox: it does not exist for them.
    for args in (("show", "alice@contoso.com"), ("set", "alice@contoso.com", "--quota", "0")):
        refused = cli(hosted, "mailbox", *args, "--tenant", "fabrikam")
        assert refused.exit_code == 1 and "no recipient has the address" in refused.output
    assert hosted.app.directory.mailbox_quota(OPERATOR, "alice@contoso.com") == 4 * used

    too_big = cli(hosted, "mailbox", "set", "alice@contoso.com", "--quota", str(2**40 + 1))
    assert too_big.exit_code == 1 and "1 TiB" in too_big.output

    cleared = cli(hosted, "mailbox", "set", "alice@contoso.com", "--quota", "0", "--tenant", "contoso")
    assert cleared.exit_code == 0, cleared.output
    assert f"none ({used} octets used)" in cleared.output
    shown = json.loads(cli(hosted, "mailbox", "show", "alice@contoso.com", "--json").output)
    assert (shown["quota"], shown["usage"], shown["usage_percent"]) == (None, used, None)
