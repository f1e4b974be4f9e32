"""`postroom protection policy|connection ...` and `postroom mailbox junk ...` as an admin runs them:
output, JSON, what a mistake prints and its exit status (2: the command is wrong, 1: the service
refused)."""

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

COMMANDS = [
    *(["protection", "policy", c] for c in ("list", "show", "add", "set", "remove", "enable", "disable")),
    *(["protection", "connection", c] for c in ("show", "set")),
    *(["mailbox", "junk", c] for c in ("list", "add", "remove")),
]


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One node for the module: contoso (alice, bob, team@) and fabrikam (carol)."""
    settings: Settings = make_node(tmp_path_factory.mktemp("protection-cli") / "node")
    path = settings.source
    for command in (
        ["tenant", "add", "contoso"],
        ["domain", "add", "contoso.com", "--tenant", "contoso", "--verified"],
        ["mailbox", "add", "alice@contoso.com", "--alias", "al@contoso.com"],
        ["mailbox", "add", "bob@contoso.com"],
        ["group", "add", "team@contoso.com", "--member", "alice@contoso.com"],
        ["tenant", "add", "fabrikam"],
        ["domain", "add", "fabrikam.com", "--tenant", "fabrikam", "--verified"],
        ["mailbox", "add", "carol@fabrikam.com"],
    ):
        assert cli(path, *command).exit_code == 0, command
    yield path
    if state.node is not None:
        state.node.close()
        state.node = None


def cli(config: Path, *args: str) -> Result:
    return CliRunner().invoke(app, ["-c", str(config), *args], env={"COLUMNS": "200"})


def policies(config: Path, kind: str, tenant: str = "contoso") -> list[dict[str, object]]:
    result = cli(config, "protection", "policy", "list", "--kind", kind, "--tenant", tenant, "--json")
    assert result.exit_code == 0, result.output
    found: list[dict[str, object]] = json.loads(result.output)
    return found


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help(command: list[str]) -> None:
    assert CliRunner().invoke(app, [*command, "--help"]).exit_code == 0


def test_protection_is_in_the_top_level_help() -> None:
    shown = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"}).output
    assert "protection" in shown and "anti-spam and anti-malware policies" in shown
    assert "junk" in CliRunner().invoke(app, ["mailbox", "--help"], env={"COLUMNS": "200"}).output


def test_anti_spam_policies_from_the_command_line(config: Path) -> None:
    spam = ["--kind", "antispam", "--tenant", "contoso"]
    added = cli(
        config,
        "protection",
        "policy",
        "add",
        "Execs",
        *spam,
        "--users",
        "alice@contoso.com",
        "--domains",
        "contoso.com",
        "--spam-action",
        "quarantine",
        "--bulk-threshold",
        "5",
        "--allowed-domains",
        "partner.example,friend.example",
    )
    assert added.exit_code == 0, added.output
    assert "anti-spam policy Execs added to contoso at priority 0" in added.output
    first = cli(
        config,
        "protection",
        "policy",
        "add",
        "First",
        *spam,
        "--groups",
        "team@contoso.com",
        "--priority",
        "0",
    )
    assert first.exit_code == 0, first.output
    listed = policies(config, "antispam")
    assert [(p["name"], p["priority"]) for p in listed] == [("First", 0), ("Execs", 1), ("Default", None)]
    execs = listed[1]
    assert (execs["users"], execs["domains"], execs["spam_action"]) == (
        ["alice@contoso.com"],
        ["contoso.com"],
        "quarantine",
    )
    assert execs["allowed_domains"] == ["friend.example", "partner.example"]
    assert [p["name"] for p in policies(config, "antispam", "fabrikam")] == ["Default"]

    shown = cli(config, "protection", "policy", "show", "execs", *spam)
    assert shown.exit_code == 0
    assert "users: alice@contoso.com and domains: contoso.com" in shown.output
    assert "BCL 5, marked as spam" in shown.output

    changed = cli(config, "protection", "policy", "set", "Execs", *spam, "--priority", "0", "--users", "")
    assert changed.exit_code == 0, changed.output
    assert [p["name"] for p in policies(config, "antispam")] == ["Execs", "First", "Default"]
    assert policies(config, "antispam")[0]["users"] == [], "'' cleared the user filter"

    assert cli(config, "protection", "policy", "disable", "First", *spam).exit_code == 0
    assert [p["enabled"] for p in policies(config, "antispam")] == [True, False, True]
    assert cli(config, "protection", "policy", "enable", "First", *spam).exit_code == 0

    default = cli(
        config,
        "protection",
        "policy",
        "set",
        "Default",
        *spam,
        "--phish-action",
        "junk",
        "--x-header",
        "X Bad",
    )
    assert default.exit_code == 0, default.output
    assert "not a header field name" in default.output and "X-This-Is-Spam" in default.output
    assert policies(config, "antispam")[-1]["phish_action"] == "junk"

    for name in ("Execs", "First"):
        assert cli(config, "protection", "policy", "remove", name, *spam).exit_code == 0
    assert [p["name"] for p in policies(config, "antispam")] == ["Default"]


def test_anti_malware_policies_from_the_command_line(config: Path) -> None:
    malware = ["--kind", "antimalware", "--tenant", "contoso"]
    changed = cli(
        config, "protection", "policy", "set", "Default", *malware, "--file-types", "exe,JS",
        "--file-types", ".iso", "--file-action", "reject", "--quarantine-retention-days", "15",
    )  # fmt: skip
    assert changed.exit_code == 0, changed.output
    assert "exe iso js" in changed.output and "reject" in changed.output
    [default] = policies(config, "antimalware")
    assert (default["file_types"], default["quarantine_retention_days"]) == (["exe", "iso", "js"], 15)
    added = cli(
        config,
        "protection",
        "policy",
        "add",
        "Relaxed",
        *malware,
        "--users",
        "bob@contoso.com",
        "--no-file-filter",
    )
    assert added.exit_code == 0, added.output
    listed = cli(config, "protection", "policy", "list", *malware)
    assert "Relaxed" in listed.output and "everyone else" in listed.output
    assert cli(config, "protection", "policy", "remove", "Relaxed", *malware).exit_code == 0


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["add", "P", "--kind", "antispam", "--tenant", "contoso"], 2, "give --users, --groups or --domains"),
        (["set", "Default", "--kind", "antispam", "--tenant", "contoso"], 2, "nothing to change"),
        (
            ["set", "Default", "--kind", "antimalware", "--tenant", "contoso", "--spam-action", "junk"],
            2,
            "--spam-action is an anti-spam setting; it does not apply to --kind antimalware",
        ),
        (
            ["set", "Default", "--kind", "antispam", "--tenant", "contoso", "--file-action", "reject"],
            2,
            "--file-action is an anti-malware setting",
        ),
        (
            ["set", "Default", "--kind", "antispam", "--tenant", "contoso", "--spam-action", "bounce"],
            2,
            "bounce",
        ),
        (["list", "--tenant", "contoso"], 2, "--kind"),
        (
            [
                "set",
                "Default",
                "--kind",
                "antispam",
                "--tenant",
                "contoso",
                "--high-confidence-phish-action",
                "junk",
            ],
            1,
            "can only be quarantine",
        ),
        (
            ["set", "Default", "--kind", "antispam", "--tenant", "contoso", "--spam-action", "redirect"],
            1,
            "give the address to redirect to (--redirect-to)",
        ),
        (
            [
                "set",
                "Default",
                "--kind",
                "antispam",
                "--tenant",
                "contoso",
                "--quarantine-retention-days",
                "90",
            ],
            1,
            "give 1 to 30",
        ),
        (["remove", "Default", "--kind", "antispam", "--tenant", "contoso"], 1, "cannot be removed"),
        (["disable", "Default", "--kind", "antispam", "--tenant", "contoso"], 1, "always on"),
        (["show", "Nope", "--kind", "antispam", "--tenant", "contoso"], 1, "postroom protection policy list"),
        (["list", "--kind", "antispam", "--tenant", "nowhere"], 1, "no tenant named 'nowhere'"),
        (
            ["add", "P", "--kind", "antispam", "--tenant", "fabrikam", "--users", "alice@contoso.com"],
            1,
            "no such recipient in this tenant: alice@contoso.com",
        ),
        (
            ["add", "P", "--kind", "antispam", "--tenant", "fabrikam", "--domains", "contoso.com"],
            1,
            "contoso.com is not an accepted domain of this tenant",
        ),
    ],
)
def test_every_policy_mistake_says_what_to_do(config: Path, args: list[str], code: int, message: str) -> None:
    result = cli(config, "protection", "policy", *args)
    assert result.exit_code == code, result.output
    assert message in " ".join(result.output.split()), result.output
    assert [p["name"] for p in policies(config, "antispam", "fabrikam")] == ["Default"]


def test_the_connection_filter_from_the_command_line(config: Path) -> None:
    tenant = ["--tenant", "contoso"]
    result = cli(
        config, "protection", "connection", "set", *tenant, "--ip-allow", "192.0.2.0/24, 198.51.100.7",
        "--ip-block", "203.0.113.1-203.0.113.9", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {
        "tenant": "contoso",
        "ip_allow": ["192.0.2.0/24", "198.51.100.7"],
        "ip_block": ["203.0.113.1-203.0.113.9"],
    }
    added = cli(
        config,
        "protection",
        "connection",
        "set",
        *tenant,
        "--add-ip-block",
        "2001:db8::/48",
        "--remove-ip-allow",
        "198.51.100.7",
    )
    assert added.exit_code == 0, added.output
    shown = json.loads(cli(config, "protection", "connection", "show", *tenant, "--json").output)
    assert (shown["ip_allow"], shown["ip_block"]) == (
        ["192.0.2.0/24"],
        ["203.0.113.1-203.0.113.9", "2001:db8::/48"],
    )
    wide = cli(config, "protection", "connection", "set", *tenant, "--add-ip-block", "10.0.0.0/8")
    assert wide.exit_code == 1 and "wider than a /24" in wide.output
    assert cli(config, "protection", "connection", "set", *tenant).exit_code == 2
    cleared = cli(
        config, "protection", "connection", "set", *tenant, "--ip-allow", "", "--ip-block", "", "--json"
    )
    assert json.loads(cleared.output)["ip_allow"] == [] and json.loads(cleared.output)["ip_block"] == []
    other = json.loads(
        cli(config, "protection", "connection", "show", "--tenant", "fabrikam", "--json").output
    )
    assert other == {"tenant": "fabrikam", "ip_allow": [], "ip_block": []}


def test_mailbox_junk_lists_from_the_command_line(config: Path) -> None:
    added = cli(
        config,
        "mailbox",
        "junk",
        "add",
        "al@contoso.com",
        "--safe",
        "Friend@Example.org",
        "--blocked",
        "spam.example",
    )
    assert added.exit_code == 0, added.output
    assert "alice@contoso.com" in added.output and "friend@example.org" in added.output
    listed = json.loads(cli(config, "mailbox", "junk", "list", "alice@contoso.com", "--json").output)
    assert listed == {
        "mailbox": "alice@contoso.com",
        "safe": ["friend@example.org"],
        "blocked": ["spam.example"],
    }
    clash = cli(config, "mailbox", "junk", "add", "alice@contoso.com", "--blocked", "friend@example.org")
    assert clash.exit_code == 1 and "remove it there first" in clash.output
    missing = cli(config, "mailbox", "junk", "remove", "alice@contoso.com", "--safe", "other@example.org")
    assert missing.exit_code == 1 and "is not on the safe senders" in missing.output
    assert cli(config, "mailbox", "junk", "add", "alice@contoso.com").exit_code == 2
    intruder = cli(config, "mailbox", "junk", "list", "alice@contoso.com", "--tenant", "fabrikam")
    assert intruder.exit_code == 1 and "no recipient has the address" in intruder.output
    removed = cli(
        config,
        "mailbox",
        "junk",
        "remove",
        "alice@contoso.com",
        "--safe",
        "friend@example.org",
        "--blocked",
        "spam.example",
    )
    assert removed.exit_code == 0, removed.output
    assert (
        json.loads(cli(config, "mailbox", "junk", "list", "alice@contoso.com", "--json").output)["safe"] == []
    )
