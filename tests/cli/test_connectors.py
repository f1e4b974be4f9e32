"""`postroom connector inbound|outbound ...` as an admin runs them: what is stored, what `--json`
gives, `show` with its warnings and validation state, and what a mistake prints with its exit status
(2: the command is wrong, 1: the service refused, and nothing was written)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

from postroom.cli import app
from postroom.cli.context import state
from postroom.config import Settings
from postroom.model.connectors import ValidationResult, ValidationStep
from postroom.model.scope import OPERATOR
from tests.support.node import make_node

COMMANDS = [
    ["connector"],
    *(["api-token", command] for command in ("add", "list", "remove")),
    *(
        ["connector", direction, command]
        for direction in ("inbound", "outbound")
        for command in ("add", "set", "list", "show", "remove", "enable", "disable")
    ),
]


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One node for the module: contoso (contoso.com) and fabrikam (fabrikam.com), both verified."""
    settings: Settings = make_node(tmp_path_factory.mktemp("connector-cli") / "node")
    path = settings.source
    for command in (
        ["tenant", "add", "contoso"],
        ["domain", "add", "contoso.com", "--tenant", "contoso", "--verified"],
        ["tenant", "add", "fabrikam"],
        ["domain", "add", "fabrikam.com", "--tenant", "fabrikam", "--verified"],
    ):
        assert cli(path, *command).exit_code == 0, command
    yield path
    if state.node is not None:
        state.node.close()
        state.node = None


def cli(config: Path, *args: str) -> Result:
    return CliRunner().invoke(app, ["-c", str(config), *args], env={"COLUMNS": "200"})


def ok(config: Path, *args: str) -> str:
    result = cli(config, *args)
    assert result.exit_code == 0, result.output
    return result.output


def shown(config: Path, direction: str, name: str, tenant: str = "contoso") -> dict[str, Any]:
    found: dict[str, Any] = json.loads(
        ok(config, "connector", direction, "show", name, "--tenant", tenant, "--json")
    )
    return found


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help(command: list[str]) -> None:
    assert CliRunner().invoke(app, [*command, "--help"]).exit_code == 0


def test_connector_is_in_the_top_level_help() -> None:
    assert "connector" in CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"}).output


def test_an_inbound_connector_from_add_to_remove(config: Path) -> None:
    added = ok(
        config,
        "connector",
        "inbound",
        "add",
        "From on-premises",
        "--tenant",
        "contoso",
        "--type",
        "on-premises",
        "--sender-ip",
        "192.0.2.0/24",
        "--sender-ip",
        "198.51.100.7",
        "--tls-certificate-name",
        "*.Contoso.com",
        "--treat-as-internal",
        "--ef-skip-last-ip",
        "--comment",
        "Exchange 2019",
    )
    assert "inbound connector From on-premises (on-premises, on) added to contoso" in added
    found = shown(config, "inbound", "from on-premises")
    assert {k: found[k] for k in ("name", "tenant", "type", "enabled", "sender_domains", "sender_ips")} == {
        "name": "From on-premises",
        "tenant": "contoso",
        "type": "on-premises",
        "enabled": True,
        "sender_domains": ["*"],
        "sender_ips": ["192.0.2.0/24", "198.51.100.7"],
    }
    assert (found["tls_certificate_name"], found["require_tls"], found["treat_messages_as_internal"]) == (
        "*.contoso.com",
        True,
        True,
    )
    assert (found["ef_skip_last_ip"], found["comment"], found["warnings"]) == (True, "Exchange 2019", [])
    text = ok(config, "connector", "inbound", "show", "From on-premises", "--tenant", "contoso")
    for line in (
        "sender IPs                       192.0.2.0/24, 198.51.100.7",
        "treat messages as internal       yes",
    ):
        assert line in text
    assert "enhanced filtering               skips the last IP; for every recipient" in text

    changed = ok(
        config,
        "connector",
        "inbound",
        "set",
        "From on-premises",
        "--tenant",
        "contoso",
        "--clear-sender-ips",
        "--no-require-tls",
    )
    assert "sender IPs                       -" in changed
    after = shown(config, "inbound", "From on-premises")
    assert (after["sender_ips"], after["require_tls"], after["tls_certificate_name"]) == (
        [],
        False,
        "*.contoso.com",
    )

    assert "state                            off" in ok(
        config, "connector", "inbound", "disable", "FROM ON-PREMISES", "--tenant", "contoso"
    )
    listed = json.loads(ok(config, "connector", "inbound", "list", "--tenant", "contoso", "--json"))
    assert [(c["name"], c["enabled"]) for c in listed] == [("From on-premises", False)]
    ok(config, "connector", "inbound", "enable", "From on-premises", "--tenant", "contoso")
    assert "From" in ok(config, "connector", "inbound", "list", "--tenant", "contoso"), "a table for people"
    assert "removed from contoso" in ok(
        config, "connector", "inbound", "remove", "From on-premises", "--tenant", "contoso"
    )
    assert json.loads(ok(config, "connector", "inbound", "list", "--tenant", "contoso", "--json")) == []


def test_an_outbound_connector_shows_its_validation_state(config: Path) -> None:
    added = ok(
        config,
        "connector",
        "outbound",
        "add",
        "To on-premises",
        "--tenant",
        "contoso",
        "--type",
        "on-premises",
        "--all-accepted-domains",
        "--smart-host",
        "192.0.2.7:2525",
        "--smart-host",
        "MAIL.contoso.com",
        "--tls",
        "domain-validation",
        "--tls-domain",
        "*.contoso.com",
        "--validation-recipient",
        "alice@contoso.com",
        "--validation-recipient",
        "bob@contoso.com",
    )
    assert "outbound connector To on-premises (on-premises, on) added to contoso" in added
    found = shown(config, "outbound", "to on-premises")
    assert found["smart_hosts"] == ["192.0.2.7:2525", "mail.contoso.com"]
    assert (found["tls"], found["tls_domain"], found["all_accepted_domains"]) == (
        "domain-validation",
        "*.contoso.com",
        True,
    )
    assert (found["validation"], found["last_validation"]) == ("never validated", [])
    assert "validation                 never validated" in ok(
        config, "connector", "outbound", "show", "To on-premises", "--tenant", "contoso"
    )

    assert state.node is not None
    directory = state.node.directory
    connector = directory.outbound_connector(OPERATOR, "contoso", "To on-premises")
    dns = ValidationStep("dns", True, "192.0.2.7")
    old = ValidationResult(connector.id, "run-1", "alice@contoso.com", True, "", (dns,), 1_000.0)
    refused = ValidationStep("tcp", False, "connection refused", "450 4.4.316 Connection refused")
    run = [
        ValidationResult(connector.id, "run-2", "alice@contoso.com", True, "", (dns,), 2_000.0),
        ValidationResult(
            connector.id,
            "run-2",
            "bob@contoso.com",
            False,
            "450 4.4.316 Connection refused",
            (dns, refused),
            2_000.0,
        ),
    ]
    directory.record_validation(OPERATOR, "contoso", "To on-premises", [old])
    directory.record_validation(OPERATOR, "contoso", "To on-premises", run)
    text = ok(config, "connector", "outbound", "show", "To on-premises", "--tenant", "contoso")
    assert "validation                 1 of 2 failed at 1970-01-01 00:33:20" in text
    assert "alice@contoso.com │ ok" in text
    assert "bob@contoso.com   │ failed │ 450 4.4.316 Connection refused" in text
    last = shown(config, "outbound", "To on-premises")["last_validation"]
    assert [(r["recipient"], r["ok"], r["run"]) for r in last] == [
        ("alice@contoso.com", True, "run-2"),
        ("bob@contoso.com", False, "run-2"),
    ]
    assert last[1]["steps"][1] == {
        "step": "tcp",
        "ok": False,
        "detail": "connection refused",
        "reply": "450 4.4.316 Connection refused",
    }
    [listed] = json.loads(ok(config, "connector", "outbound", "list", "--tenant", "contoso", "--json"))
    assert listed["validation"] == "1 of 2 failed at 1970-01-01 00:33:20 UTC"

    changed = ok(
        config,
        "connector",
        "outbound",
        "set",
        "To on-premises",
        "--tenant",
        "contoso",
        "--tls",
        "none",
        "--clear-smart-hosts",
    )
    assert "TLS                        opportunistic" in changed
    assert "delivers to                the recipient domain's MX" in changed
    after = shown(config, "outbound", "To on-premises")
    assert (after["tls"], after["tls_domain"], after["smart_hosts"]) == ("opportunistic", "", [])
    ok(config, "connector", "outbound", "disable", "To on-premises", "--tenant", "contoso")
    assert shown(config, "outbound", "To on-premises")["enabled"] is False
    ok(config, "connector", "outbound", "remove", "To on-premises", "--tenant", "contoso")
    assert json.loads(ok(config, "connector", "outbound", "list", "--tenant", "contoso", "--json")) == []


MISTAKES: list[tuple[list[str], int, str]] = [
    (["inbound", "set", "x", "--tenant", "contoso"], 2, "nothing to change"),
    (["outbound", "set", "x", "--tenant", "contoso"], 2, "nothing to change"),
    (
        ["inbound", "set", "x", "--tenant", "contoso", "--sender-ip", "192.0.2.1", "--clear-sender-ips"],
        2,
        "not both",
    ),
    (["inbound", "add", "x", "--tenant", "contoso"], 2, "Missing option '--type'"),
    (["inbound", "add", "x", "--tenant", "contoso", "--type", "bogus"], 2, "'bogus' is not one of"),
    (
        ["inbound", "add", "x", "--tenant", "contoso", "--type", "on-premises"],
        1,
        "give sender IPs or a certificate name",
    ),
    (
        ["inbound", "add", "x", "--tenant", "contoso", "--type", "partner", "--sender-ip", "10.0.0.0/8"],
        1,
        "'10.0.0.0/8' is wider",
    ),
    (
        [
            "inbound",
            "add",
            "x",
            "--tenant",
            "contoso",
            "--type",
            "on-premises",
            "--sender-ip",
            "192.0.2.1",
            "--restrict-to-ips",
        ],
        1,
        "for Partner connectors",
    ),
    (["outbound", "add", "x", "--tenant", "contoso", "--type", "partner"], 1, "give recipient domains"),
    (
        [
            "outbound",
            "add",
            "x",
            "--tenant",
            "contoso",
            "--type",
            "partner",
            "--recipient-domain",
            "x.example",
            "--tls",
            "strict",
        ],
        1,
        "'strict' is not a TLS setting",
    ),
    (
        [
            "outbound",
            "add",
            "x",
            "--tenant",
            "contoso",
            "--type",
            "partner",
            "--recipient-domain",
            "x.example",
            "--smart-host",
            "a:0",
        ],
        1,
        "port must be a number",
    ),
    (
        ["outbound", "show", "nothing", "--tenant", "contoso"],
        1,
        "tenant contoso has no outbound connector 'nothing'",
    ),
    (["inbound", "list", "--tenant", "nobody"], 1, "no tenant named 'nobody'"),
]


@pytest.mark.parametrize(("args", "code", "message"), MISTAKES, ids=lambda v: str(v)[:60])
def test_a_mistake_says_what_to_do_and_writes_nothing(
    config: Path, args: list[str], code: int, message: str
) -> None:
    result = cli(config, "connector", *args)
    assert result.exit_code == code, result.output
    assert message in " ".join(result.output.split()), result.output
    for direction in ("inbound", "outbound"):
        names = [
            c["name"]
            for c in json.loads(ok(config, "connector", direction, "list", "--tenant", "contoso", "--json"))
        ]
        assert "x" not in names


def test_a_tenant_cannot_claim_another_tenants_certificate_for_its_on_premises_server(config: Path) -> None:
    result = cli(
        config,
        "connector",
        "inbound",
        "add",
        "evil",
        "--tenant",
        "fabrikam",
        "--type",
        "on-premises",
        "--tls-certificate-name",
        "*.contoso.com",
    )
    assert result.exit_code == 1
    assert "*.contoso.com is not under a verified accepted domain of the tenant" in result.output
    assert json.loads(ok(config, "connector", "inbound", "list", "--tenant", "fabrikam", "--json")) == []


def test_show_warns_the_operator_of_tenants_sharing_an_on_premises_ip(config: Path) -> None:
    for tenant in ("contoso", "fabrikam"):
        ok(
            config,
            "connector",
            "inbound",
            "add",
            "shared",
            "--tenant",
            tenant,
            "--type",
            "on-premises",
            "--sender-ip",
            "203.0.113.0/24",
        )
    text = " ".join(ok(config, "connector", "inbound", "show", "shared", "--tenant", "contoso").split())
    assert (
        "warning: 203.0.113.0/24 overlaps 203.0.113.0/24 of on-premises connector shared of tenant fabrikam"
        in text
    )
    assert len(shown(config, "inbound", "shared", "fabrikam")["warnings"]) == 1
    for tenant in ("contoso", "fabrikam"):
        ok(config, "connector", "inbound", "remove", "shared", "--tenant", tenant)


def test_api_tokens_for_the_admin_api_from_the_command_line(config: Path) -> None:
    made = json.loads(ok(config, "api-token", "add", "helpdesk", "--tenant", "contoso", "--json"))
    assert (made["name"], made["tenant"]) == ("helpdesk", "contoso") and made["token"].startswith("pr_")
    text = ok(config, "api-token", "add", "automation", "--tenant", "contoso")
    assert "shown only now" in text
    secret = text.strip().splitlines()[-1]
    assert state.node is not None
    caller = state.node.directory.authenticate_api_token(secret)
    assert caller is not None and caller.tenant == "contoso"
    listed = json.loads(ok(config, "api-token", "list", "--tenant", "contoso", "--json"))
    assert [t["name"] for t in listed] == ["helpdesk", "automation"]
    assert made["token"] not in ok(config, "api-token", "list", "--tenant", "contoso")
    ok(config, "api-token", "remove", "helpdesk", "--tenant", "contoso")
    ok(config, "api-token", "remove", "automation", "--tenant", "contoso")
    assert state.node.directory.authenticate_api_token(secret) is None
    refused = cli(config, "api-token", "remove", "helpdesk", "--tenant", "contoso")
    assert refused.exit_code == 1 and "tenant contoso has no API token 'helpdesk'" in refused.output
