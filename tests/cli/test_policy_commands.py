"""`postroom remote-domain ...`, `tenant set --external-postmaster/--auto-forward` and `mailbox set
--forward-to/--keep-copy/--no-forward` as an admin runs them: output, JSON, exit statuses."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from postroom.cli import app
from postroom.cli.context import state
from postroom.config import Settings
from tests.support.node import make_node

COMMANDS = [["remote-domain", c] for c in ("add", "set", "list", "show", "remove")]


@pytest.fixture
def config(tmp_path: Path) -> Iterator[Path]:
    settings: Settings = make_node(tmp_path / "node")
    yield settings.source
    if state.node is not None:
        state.node.close()
        state.node = None


def cli(config: Path, *args: str) -> Result:
    return CliRunner().invoke(app, ["-c", str(config), *args], env={"COLUMNS": "200"})


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help(command: list[str]) -> None:
    assert CliRunner().invoke(app, [*command, "--help"]).exit_code == 0


def test_remote_domains_from_the_command_line(config: Path) -> None:
    assert cli(config, "tenant", "add", "contoso").exit_code == 0
    assert cli(config, "tenant", "add", "fabrikam").exit_code == 0
    added = cli(
        config,
        "remote-domain",
        "add",
        "Partner",
        "*.partner.example",
        "--tenant",
        "contoso",
        "--no-auto-forward",
        "--line-wrap",
        "78",
        "--charset",
        "iso-8859-1",
        "--content-type",
        "mime-text",
    )
    assert added.exit_code == 0, added.output
    listed = json.loads(cli(config, "remote-domain", "list", "--tenant", "contoso", "--json").output)
    assert [(d["name"], d["pattern"], d["auto_forward"], d["line_wrap"]) for d in listed] == [
        ("Default", "*", True, 0),
        ("Partner", "*.partner.example", False, 78),
    ]
    assert json.loads(cli(config, "remote-domain", "list", "--tenant", "fabrikam", "--json").output)[1:] == []
    shown = cli(config, "remote-domain", "show", "partner", "--tenant", "contoso")
    assert "*.partner.example" in shown.output and "blocked" in shown.output
    assert cli(config, "remote-domain", "show", "Partner", "--tenant", "fabrikam").exit_code == 1
    changed = cli(config, "remote-domain", "set", "Default", "--tenant", "contoso", "--no-ndr")
    assert changed.exit_code == 0 and "NDRs" in changed.output
    bad = cli(config, "remote-domain", "set", "Partner", "--tenant", "contoso", "--line-wrap", "200")
    assert bad.exit_code == 1 and "0 (unlimited) to 132" in bad.output
    nothing = cli(config, "remote-domain", "set", "Partner", "--tenant", "contoso")
    assert nothing.exit_code == 2 and "nothing to change" in nothing.output
    refused = cli(config, "remote-domain", "remove", "Default", "--tenant", "contoso")
    assert refused.exit_code == 1 and "cannot be removed" in refused.output
    assert cli(config, "remote-domain", "remove", "Partner", "--tenant", "contoso").exit_code == 0
    assert len(json.loads(cli(config, "remote-domain", "list", "--tenant", "contoso", "--json").output)) == 1


def test_outbound_settings_and_forwarding_from_the_command_line(config: Path) -> None:
    assert cli(config, "tenant", "add", "contoso").exit_code == 0
    shown = json.loads(cli(config, "tenant", "show", "contoso", "--json").output)
    assert (shown["external_postmaster"], shown["auto_forward"]) == (
        "postmaster@contoso.postroom.test",
        "automatic",
    )
    done = cli(
        config,
        "tenant",
        "set",
        "contoso",
        "--external-postmaster",
        "bounces@contoso.postroom.test",
        "--auto-forward",
        "on",
    )
    assert done.exit_code == 0, done.output
    shown = json.loads(cli(config, "tenant", "show", "contoso", "--json").output)
    assert (shown["external_postmaster_chosen"], shown["auto_forward"]) == (
        "bounces@contoso.postroom.test",
        "on",
    )
    assert cli(config, "tenant", "set", "contoso", "--auto-forward", "maybe").exit_code == 1
    reset = cli(config, "tenant", "set", "contoso", "--external-postmaster", "")
    assert "postmaster@contoso.postroom.test (the default" in reset.output
    assert cli(config, "mailbox", "add", "amy@contoso.postroom.test").exit_code == 0
    forwarded = cli(
        config,
        "mailbox",
        "set",
        "amy@contoso.postroom.test",
        "--forward-to",
        "amy@home.example",
        "--keep-copy",
    )
    assert forwarded.exit_code == 0 and "amy@home.example (and keeps a copy)" in forwarded.output
    mailbox = json.loads(cli(config, "mailbox", "show", "amy@contoso.postroom.test", "--json").output)
    assert mailbox["forwarding"] == {"forward_to": "amy@home.example", "keep_copy": True}
    both = cli(
        config, "mailbox", "set", "amy@contoso.postroom.test", "--forward-to", "x@y.example", "--no-forward"
    )
    assert both.exit_code == 2
    stopped = cli(config, "mailbox", "set", "amy@contoso.postroom.test", "--no-forward")
    assert stopped.exit_code == 0
    assert (
        json.loads(cli(config, "mailbox", "show", "amy@contoso.postroom.test", "--json").output)["forwarding"]
        is None
    )
