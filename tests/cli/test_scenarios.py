"""`postroom scenario list|apply|check`, `postroom domain set --type` and `postroom explain` as an admin
runs them: output, JSON, exit statuses.

`scenario apply` without `--dry-run` and `scenario check` need the directory's connector service
(issue 11, part A); those tests run once it is there.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from postroom.app import App
from postroom.cli import app
from postroom.cli.context import state
from postroom.config import Settings
from postroom.directory import Directory
from postroom.model.connectors import ConnectorType
from postroom.model.scope import OPERATOR
from tests.cli.test_commands import postroom
from tests.support.dns_server import DnsTestServer
from tests.support.node import make_node
from tests.support.scenarios import insert_inbound

HYBRID = [
    "--on-premises-host",
    "mail.contoso.com",
    "--on-premises-ip",
    "203.0.113.5",
    "--on-premises-certificate-name",
    "*.contoso.com",
]
CONNECTOR_SERVICE = hasattr(Directory, "add_inbound_connector")


def cli(config: Path, *args: str) -> Result:
    return CliRunner().invoke(app, ["-c", str(config), *args], env={"COLUMNS": "200"})


@pytest.fixture
def config(tmp_path: Path) -> Iterator[Path]:
    settings: Settings = make_node(tmp_path / "node")
    opened = App.open(settings)
    d = opened.directory
    contoso = d.add_tenant(OPERATOR, "contoso")
    d.add_domain(OPERATOR, "contoso.com", "contoso", verified=True)
    d.add_mailbox(OPERATOR, "alice@contoso.com")
    fabrikam = d.add_tenant(OPERATOR, "fabrikam")
    d.add_domain(OPERATOR, "fabrikam.com", "fabrikam", verified=True)
    d.add_mailbox(OPERATOR, "carol@fabrikam.com")
    # A third party that filters fabrikam's mail (a Partner connector locked to its address) and
    # contoso's on-premises server known by its certificate: rows as the connector service writes them.
    insert_inbound(
        opened.database,
        fabrikam.id,
        "filter",
        ConnectorType.PARTNER,
        sender_ips=["198.51.100.7"],
        restrict_domains_to_ips=True,
    )
    insert_inbound(
        opened.database,
        contoso.id,
        "on-premises",
        ConnectorType.ON_PREMISES,
        tls_certificate_name="*.contoso.com",
        require_tls=True,
    )
    opened.close()
    yield settings.source
    if state.node is not None:
        state.node.close()
        state.node = None


def test_list_shows_every_row(config: Path) -> None:
    rows = json.loads(cli(config, "scenario", "list", "--json").output)
    assert [r["name"] for r in rows][:4] == [
        "hosted",
        "third-party-filtering",
        "third-party-no-filtering",
        "hybrid-1",
    ]
    unsupported = next(r for r in rows if not r["supported"])
    assert unsupported["name"] == "third-party-no-filtering" and "SPF" in unsupported["why_unsupported"]
    shown = cli(config, "scenario", "list")
    assert shown.exit_code == 0 and "hosted" in shown.output and "scenario apply NAME" in shown.output


def test_dry_run_prints_the_plan_and_the_records_and_changes_nothing(config: Path) -> None:
    dry = cli(config, "scenario", "apply", "hybrid-4", "--tenant", "contoso", *HYBRID, "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    report = json.loads(dry.output)
    assert report["dry_run"] and report["plan"]["scenario"] == "hybrid-4"
    assert [c["name"] for c in report["plan"]["connectors"]] == [
        "hybrid-4-on-premises-inbound",
        "hybrid-4-on-premises-outbound",
    ]
    [dns] = report["dns"]
    assert [(r["type"], r["value"]) for r in dns["records"]] == [
        ("MX", "mail.contoso.com"),
        ("TXT", "v=spf1 ip4:203.0.113.5 include:spf.protection.postroom.test -all"),
    ]
    text = cli(config, "scenario", "apply", "hybrid-4", "--tenant", "contoso", *HYBRID, "--dry-run")
    assert "nothing was changed" in text.output
    assert "contoso.com.\t3600\tIN\tMX\t0 mail.contoso.com." in text.output
    domain = json.loads(cli(config, "domain", "show", "contoso.com", "--json").output)
    assert domain["type"] == "authoritative", "a dry run changes nothing"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["hybrid-1", "--on-premises-ip", "203.0.113.5"], "--on-premises-host"),
        (["third-party-filtering"], "--third-party-ip"),
        (["devices"], "--device-ip"),
        (["third-party-no-filtering", "--third-party-ip", "198.51.100.7"], "not supported"),
        (["hybrid-1", *HYBRID[:4], "--on-premises-certificate-name", "*.fabrikam.com"], "verified domains"),
        (["hybrid-1", *HYBRID, "--domain", "fabrikam.com"], "not an accepted domain of the tenant"),
        (["hybrid-7"], "no scenario named"),
    ],
)
def test_a_refused_apply_says_why_and_exits_1(config: Path, args: list[str], says: str) -> None:
    refused = cli(config, "scenario", "apply", *args, "--tenant", "contoso", "--dry-run")
    assert refused.exit_code == 1, refused.output
    assert says in refused.output


def test_domain_set_type(config: Path) -> None:
    changed = cli(config, "domain", "set", "contoso.com", "--type", "internal-relay")
    assert changed.exit_code == 0 and "contoso.com is internal-relay" in changed.output
    assert (
        json.loads(cli(config, "domain", "show", "contoso.com", "--json").output)["type"] == "internal-relay"
    )
    refused = cli(config, "domain", "set", "contoso.postroom.test", "--type", "internal-relay")
    assert refused.exit_code == 1 and "stays authoritative" in refused.output
    assert cli(config, "domain", "set", "contoso.com", "--type", "external-relay").exit_code == 2


# --- explain -------------------------------------------------------------------------------------------
def explain(config: Path, *args: str) -> dict[str, object]:
    result = cli(config, "explain", *args, "--json")
    assert result.exit_code == 0, result.output
    report: dict[str, object] = json.loads(result.output)
    return report


def recipients(report: dict[str, object]) -> list[tuple[str, str, str]]:
    return [(r["recipient"], r["outcome"], r["reply"]) for r in report["recipients"]]  # type: ignore[attr-defined,index]


def test_explain_a_hosted_recipient_a_dbeb_reject_and_a_relay_attempt(config: Path) -> None:
    report = explain(
        config,
        "--from",
        "sender@internet.example",
        "--to",
        "alice@contoso.com",
        "--to",
        "nobody@contoso.com",
        "--to",
        "someone@elsewhere.example",
    )
    assert report["attribution"]["connector"] is None  # type: ignore[index]
    assert recipients(report) == [
        ("alice@contoso.com", "accepted", "250 2.1.5 Recipient OK"),
        ("nobody@contoso.com", "rejected", "550 5.4.1 Recipient address rejected: Access denied"),
        ("someone@elsewhere.example", "rejected", "550 5.7.1 Unable to relay"),
    ]
    [route] = report["routes"]  # type: ignore[misc]
    assert (route["recipient"], route["route"], route["tenant"]) == ("alice@contoso.com", "local", "contoso")
    assert "Inbox" in route["destination"]
    assert report["outcome"].startswith("250 2.6.0")  # type: ignore[union-attr]
    assert report["protection"]["enabled"] is False  # type: ignore[index]

    text = cli(config, "explain", "--from", "sender@internet.example", "--to", "nobody@contoso.com")
    assert text.exit_code == 0
    for stage in ("1. Connection and attribution", "2. Recipients", "3. Authentication", "4. Routes"):
        assert stage in text.output
    assert "no recipient was accepted" in text.output and "503 5.5.1" in text.output


def test_explain_a_relay_from_a_tenants_domain_without_its_connector_is_refused(config: Path) -> None:
    """An attacker on an Internet address sends as contoso to the Internet: refused, whatever the code
    of the relay rule (5.7.1, or 5.7.64 once the connector rules know contoso's on-premises server)."""
    report = explain(
        config,
        "--from",
        "alice@contoso.com",
        "--to",
        "victim@elsewhere.example",
        "--client-ip",
        "203.0.113.66",
    )
    [(_, outcome, reply)] = recipients(report)
    assert outcome == "rejected" and reply.startswith("550 5.7.")
    assert report["routes"] == []


def test_explain_shows_the_partner_connector_an_address_matches(config: Path) -> None:
    report = explain(
        config, "--from", "news@sender.example", "--to", "carol@fabrikam.com", "--client-ip", "198.51.100.7"
    )
    attribution = report["attribution"]
    assert attribution["connector"] is None  # type: ignore[index]
    assert attribution["matched"] == [{"name": "filter", "type": "partner", "tenant": "fabrikam"}]  # type: ignore[index]
    assert "Partner connectors match" in attribution["summary"]  # type: ignore[index]
    assert recipients(report) == [("carol@fabrikam.com", "accepted", "250 2.1.5 Recipient OK")]


def test_explain_attributes_a_certificate_to_the_on_premises_connector(config: Path) -> None:
    report = explain(
        config,
        "--from",
        "app@contoso.com",
        "--to",
        "alice@contoso.com",
        "--client-ip",
        "203.0.113.5",
        "--tls-cert",
        "mail.contoso.com",
    )
    attribution = report["attribution"]
    assert attribution["connector"] == {"name": "on-premises", "type": "on-premises", "tenant": "contoso"}  # type: ignore[index]
    assert attribution["by_certificate"] is True and attribution["tls"] is True  # type: ignore[index]
    assert attribution["sender_tenant"] == "contoso"  # type: ignore[index]
    # fabrikam's certificate name is not contoso's: not attributed.
    other = explain(
        config, "--from", "app@fabrikam.com", "--to", "alice@contoso.com", "--tls-cert", "mail.fabrikam.com"
    )
    assert other["attribution"]["connector"] is None  # type: ignore[index]


def test_explain_refuses_bad_input(config: Path, tmp_path: Path) -> None:
    bad = cli(config, "explain", "--from", "not an address", "--to", "alice@contoso.com")
    assert bad.exit_code == 2 and "--from" in bad.output
    missing = cli(
        config,
        "explain",
        "--from",
        "a@b.example",
        "--to",
        "alice@contoso.com",
        "--message",
        str(tmp_path / "none.eml"),
    )
    assert missing.exit_code == 2 and "--message" in missing.output


def test_explain_runs_the_filtering_stack(tmp_path: Path) -> None:
    """With protection on: SPF judged on the client's address from DNS, a GTUBE message quarantined or
    junked per the default policy, an attachment of a blocked type caught, all without storing anything."""
    with DnsTestServer({"sender.example": '@ 300 IN TXT "v=spf1 ip4:198.51.100.25 -all"\n'}) as dns:
        settings = make_node(tmp_path / "node", nameservers=(str(dns.address),), protection=True)
        opened = App.open(settings)
        opened.directory.add_tenant(OPERATOR, "contoso")
        opened.directory.add_domain(OPERATOR, "contoso.com", "contoso", verified=True)
        alice = opened.directory.add_mailbox(OPERATOR, "alice@contoso.com")
        opened.close()
        config = settings.source
        try:
            clean = explain(
                config,
                "--from",
                "news@sender.example",
                "--to",
                "alice@contoso.com",
                "--client-ip",
                "198.51.100.25",
            )
            protection = clean["protection"]
            assert protection["enabled"] is True  # type: ignore[index]
            assert protection["spf"].startswith("pass")  # type: ignore[index]
            [verdict] = protection["recipients"]  # type: ignore[index]
            assert (verdict["action"], verdict["folder"]) == ("inbox", "Inbox")
            forged = explain(
                config,
                "--from",
                "news@sender.example",
                "--to",
                "alice@contoso.com",
                "--client-ip",
                "203.0.113.9",
            )
            assert forged["protection"]["spf"].startswith("fail")  # type: ignore[index]

            gtube = tmp_path / "gtube.eml"
            gtube.write_text(
                "From: news@sender.example\nTo: alice@contoso.com\nSubject: test\n\n"
                "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\n"
            )
            spam = explain(
                config,
                "--from",
                "news@sender.example",
                "--to",
                "alice@contoso.com",
                "--client-ip",
                "198.51.100.25",
                "--message",
                str(gtube),
            )
            [verdict] = spam["protection"]["recipients"]  # type: ignore[index]
            assert verdict["verdict"] in ("spam", "high-confidence-spam")
            assert verdict["action"] != "inbox" or verdict["folder"] == "Junk"
        finally:
            if state.node is not None:
                state.node.close()
                state.node = None
        check = App.open(settings)
        try:
            assert check.mailstore.list_messages(OPERATOR, alice.id) == [], "explain stores nothing"
        finally:
            check.close()


# --- apply and check through the directory's connector service --------------------------------------
@pytest.mark.skipif(
    not CONNECTOR_SERVICE, reason="needs the directory's connector service (issue 11, part A)"
)
def test_apply_then_publish_then_check_clean(tmp_path: Path) -> None:
    with DnsTestServer() as dns:
        settings = make_node(tmp_path / "node", nameservers=(str(dns.address),))
        config = settings.source
        config.write_text(config.read_text().replace("addresses = []", 'addresses = ["127.0.0.1"]'))
        assert postroom("tenant", "add", "contoso", config=config).returncode == 0
        assert (
            postroom(
                "domain", "add", "contoso.com", "--tenant", "contoso", "--verified", config=config
            ).returncode
            == 0
        )
        applied = postroom(
            "scenario", "apply", "hybrid-3", "--tenant", "contoso", *HYBRID, "--json", config=config
        )
        assert applied.returncode == 0, applied.stderr
        report = json.loads(applied.stdout)
        assert [c["action"] for c in report["changes"]] == [
            "created",
            "created",
            "internal-relay",
            "recorded",
        ]
        zone = "".join(
            f"{r['name']}. {r['ttl']} IN {r['type']} "
            + (f"{r['priority']} {r['value']}." if r["type"] == "MX" else f'"{r["value"]}"')
            + "\n"
            for r in report["dns"][0]["records"]
        )
        dns.set_zone("contoso.com", zone + "mail.contoso.com. 3600 IN A 203.0.113.5\n")
        dns.set_zone("postroom.test", postroom("service", "records", "--zone", config=config).stdout)
        checked = postroom("scenario", "check", "--tenant", "contoso", "--json", config=config)
        result = json.loads(checked.stdout)
        assert checked.returncode == 0, result
        assert result["errors"] == 0
        assert {f["code"] for f in result["findings"] if f["severity"] == "warning"} == {
            "connector.never-validated"
        }
        domain_check = postroom("domain", "check", "contoso.com", "--json", config=config)
        codes = [f["code"] for f in json.loads(domain_check.stdout)["findings"]]
        assert "mx.scenario-host" in codes and "mx.wrong-host" not in codes
        assert (
            postroom("scenario", "check", "--tenant", "fabrikam", config=config).returncode == 1
        )  # no such tenant
