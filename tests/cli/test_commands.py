"""The `postroom` command as a user runs it: a real process, its output, its exit status."""

from __future__ import annotations

import contextlib
import json
import os
import smtplib
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from postroom import __version__
from postroom.app.setup import write_self_signed
from postroom.cli import app
from postroom.config import Settings
from tests.support.cli import run_postroom
from tests.support.dns_server import DnsTestServer
from tests.support.node import RunningNode, make_node


def postroom(
    *args: str, config: Path | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`postroom ARGS` in a process of its own (`tests.support.cli`), its output and exit status."""
    env = {k: v for k, v in os.environ.items() if k != "POSTROOM_CONFIG"}
    env["COLUMNS"] = "200"
    prefix = ["-c", str(config)] if config else []
    return run_postroom([*prefix, *args], env, stdin, timeout=60)


COMMANDS = [
    [],
    ["init"],
    ["check-config"],
    ["serve"],
    ["tenant"],
    *[["tenant", c] for c in ("add", "list", "show", "set", "remove")],
    ["domain"],
    *[["domain", c] for c in ("add", "set", "list", "show", "verify", "records", "check", "remove")],
    ["domain", "dkim"],
    *[["domain", "dkim", c] for c in ("show", "rotate")],
    ["service"],
    ["service", "records"],
    ["mailbox"],
    *[["mailbox", c] for c in ("add", "list", "show", "set", "remove", "messages", "export")],
    ["group"],
    *[["group", c] for c in ("add", "list", "show", "set", "remove")],
    ["contact"],
    *[["contact", c] for c in ("add", "list", "show", "remove")],
    ["trace"],
    ["trace", "show"],
    ["trace", "purge"],
    ["sender"],
    ["sender", "restricted"],
    *[["sender", "restricted", c] for c in ("list", "release")],
    ["mailbox", "send-as"],
    *[["mailbox", "send-as", c] for c in ("add", "remove", "list")],
    ["queue"],
    *[["queue", c] for c in ("list", "show", "retry", "hold", "release", "delete", "summary")],
    ["quarantine"],
    *[
        ["quarantine", c]
        for c in ("list", "show", "preview", "release", "request-release", "delete", "purge")
    ],
    ["scenario"],
    *[["scenario", c] for c in ("list", "apply", "check")],
    ["explain"],
]


def test_version() -> None:
    # The interpreter itself, started as a user starts it (the other tests fork `postroom` ready-made).
    result = subprocess.run(
        [sys.executable, "-m", "postroom", "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    assert result.stdout.strip() == f"postroom {__version__}"
    assert postroom("--version").stdout == result.stdout


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "postroom")
def test_every_command_has_help(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_missing_config_says_what_to_do() -> None:
    result = postroom("tenant", "list")
    assert result.returncode == 2
    assert "pass -c FILE or set POSTROOM_CONFIG" in result.stderr
    assert "postroom init" in result.stderr


def test_bad_config_names_file_key_and_fix(tmp_path: Path) -> None:
    config = tmp_path / "postroom.toml"
    config.write_text(
        '[mx.limits]\nmax_recipients = "many"\nmax_message_sise = 5\n[dns]\nnameservers = ["nowhere"]\n'
    )
    result = postroom("check-config", config=config)
    assert result.returncode == 2
    for expected in (
        str(config),
        "mx.limits.max_recipients",
        "mx.limits.max_message_sise",
        "unknown key",
        "dns.nameservers",
    ):
        assert expected in result.stderr
    assert "3 problem(s)" in result.stderr


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    first = postroom("init", str(tmp_path / "n"), "--mx-listen", "127.0.0.1:0")
    assert first.returncode == 0, first.stderr
    assert "Next steps" in first.stdout
    assert (tmp_path / "n" / "postroom.toml").exists() and (tmp_path / "n" / "tls" / "cert.pem").exists()
    second = postroom("init", str(tmp_path / "n"))
    assert second.returncode == 2
    assert "already exists" in second.stderr
    assert postroom("check-config", config=tmp_path / "n" / "postroom.toml").returncode == 0


def test_directory_round_trip_with_json(node_settings: Settings) -> None:
    config = node_settings.source
    assert postroom("tenant", "add", "contoso", config=config).returncode == 0
    assert (
        postroom(
            "domain", "add", "contoso.com", "--tenant", "contoso", "--verified", config=config
        ).returncode
        == 0
    )
    added = postroom(
        "mailbox",
        "add",
        "alice@contoso.com",
        "--name",
        "Alice",
        "--password-stdin",
        "--alias",
        "al@contoso.com",
        config=config,
        stdin="s3cret-passphrase\n",
    )
    assert added.returncode == 0, added.stderr
    assert (
        postroom(
            "group", "add", "team@contoso.com", "--member", "alice@contoso.com", config=config
        ).returncode
        == 0
    )
    shown = json.loads(postroom("mailbox", "show", "AL@contoso.com", "--json", config=config).stdout)
    assert shown["address"] == "alice@contoso.com"
    assert shown["aliases"] == ["al@contoso.com"]
    assert shown["has_password"] is True
    assert [f["name"] for f in shown["folders"]] == ["Inbox", "Sent", "Drafts", "Junk", "Trash", "Archive"]
    assert all(f["messages"] == 0 for f in shown["folders"])
    domains = json.loads(postroom("domain", "list", "--json", config=config).stdout)
    assert {(d["name"], d["status"]) for d in domains} == {
        ("contoso.postroom.test", "verified"),
        ("contoso.com", "verified"),
    }
    group = json.loads(postroom("group", "show", "team@contoso.com", "--json", config=config).stdout)
    assert group["members"] == ["alice@contoso.com"]
    assert json.loads(postroom("queue", "summary", "--json", config=config).stdout)["pending"] == 0
    assert json.loads(postroom("trace", "--json", config=config).stdout) == []


@pytest.fixture(scope="module")
def contoso_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A node with contoso, contoso.com and alice, made once with the CLI for the tests whose every
    command is refused (so none changes what the next one sees)."""
    config = make_node(tmp_path_factory.mktemp("contoso")).source
    for command in (
        ["tenant", "add", "contoso"],
        ["domain", "add", "contoso.com", "--tenant", "contoso", "--verified"],
        ["mailbox", "add", "alice@contoso.com"],
    ):
        assert postroom(*command, config=config).returncode == 0, command
    return config


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["domain", "add", "x.example", "--tenant", "nobody"], "no tenant named 'nobody'"),
        (["mailbox", "add", "a@unknown.example"], "is not an accepted domain"),
        (["mailbox", "add", "not-an-address"], "is not a valid address"),
        (["mailbox", "remove", "alice@contoso.com"], "repeat with --yes"),
        (["trace", "--since", "yesterday"], "is not a date"),
        (["mailbox", "export", "alice@contoso.com", "7"], "has no message with UID 7"),
    ],
)
def test_mistakes_print_what_to_do(contoso_config: Path, args: list[str], message: str) -> None:
    result = postroom(*args, config=contoso_config)
    assert result.returncode in (1, 2)
    assert message in result.stderr


def test_domain_ownership_proof_through_dns(tmp_path: Path) -> None:
    with DnsTestServer({"contoso.com.": '@ 300 IN TXT "v=spf1 -all"\n'}) as dns_server:
        settings = make_node(tmp_path / "node", nameservers=(str(dns_server.address),))
        config = settings.source
        postroom("tenant", "add", "contoso", config=config)
        added = postroom("domain", "add", "contoso.com", "--tenant", "contoso", config=config)
        assert "pending" in added.stdout
        refused = postroom("mailbox", "add", "alice@contoso.com", config=config)
        assert refused.returncode == 1 and "not verified yet" in refused.stderr
        proof = json.loads(postroom("domain", "show", "contoso.com", "--json", config=config).stdout)
        record = proof["verification_record"]
        assert record.startswith("postroom-verification=")

        failed = postroom("domain", "verify", "contoso.com", config=config)
        assert failed.returncode == 1
        assert "none is" in failed.stdout and "found: v=spf1 -all" in failed.stdout

        dns_server.add_txt("contoso.com.", record)
        verified = postroom("domain", "verify", "contoso.com", "--json", config=config)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert json.loads(verified.stdout)["outcome"] == "verified"
        history = json.loads(postroom("domain", "show", "contoso.com", "--json", config=config).stdout)[
            "history"
        ]
        assert [h["event"] for h in history] == ["added", "verification-failed", "verified"]
        assert postroom("mailbox", "add", "alice@contoso.com", config=config).returncode == 0

        # A DNS host that cannot publish TXT at the apex: the proof as an MX record instead.
        dns_server.set_zone("fabrikam.example", "@ 300 IN MX 10 mail.fabrikam.example.\n")
        postroom("domain", "add", "fabrikam.example", "--tenant", "contoso", config=config)
        shown = json.loads(postroom("domain", "show", "fabrikam.example", "--json", config=config).stdout)
        dns_server.add_records("fabrikam.example", "MX", f"100 {shown['verification_mx']}.")
        by_mx = postroom("domain", "verify", "fabrikam.example", config=config)
        assert by_mx.returncode == 0, by_mx.stdout
        history = json.loads(postroom("domain", "show", "fabrikam.example", "--json", config=config).stdout)
        assert "MX record postroom-verification-" in history["history"][-1]["detail"]

        missing = postroom("domain", "add", "ghost.example", "--tenant", "contoso", config=config)
        assert missing.returncode == 0
        nxdomain = postroom("domain", "verify", "ghost.example", config=config)
        assert nxdomain.returncode == 1
        assert "does not exist" in nxdomain.stdout or "could not be asked" in nxdomain.stdout


def test_domain_records_as_table_zone_and_json(node_settings: Settings) -> None:
    config = node_settings.source
    postroom("tenant", "add", "contoso", config=config)
    postroom("domain", "add", "contoso.example", "--tenant", "contoso", config=config)
    records = json.loads(postroom("domain", "records", "contoso.example", "--json", config=config).stdout)
    assert all({"type", "name", "value", "ttl"} <= set(r) for r in records)
    kinds = [(r["type"], r["name"]) for r in records]
    assert kinds[:3] == [("TXT", "contoso.example"), ("MX", "contoso.example"), ("TXT", "contoso.example")]
    assert records[0]["value"].startswith("postroom-verification=")
    assert records[1]["value"] == "contoso-example.mail.protection.postroom.test"
    assert records[1]["priority"] == 0
    assert ("TXT", "postroom1._domainkey.contoso.example") in kinds
    assert ("TXT", "_mta-sts.contoso.example") in kinds

    zone = postroom("domain", "records", "contoso.example", "--zone", config=config).stdout
    assert "contoso.example.\t3600\tIN\tMX\t0 contoso-example.mail.protection.postroom.test." in zone
    DnsTestServer({"contoso.example": zone})  # the fragment is zone text BIND (and dnspython) read

    shown = postroom("domain", "records", "contoso.example", config=config)
    assert shown.returncode == 0
    assert "v=spf1 include:spf.protection.postroom.test -all" in shown.stdout

    unknown = postroom("domain", "records", "fabrikam.example", config=config)
    assert unknown.returncode == 1 and "postroom domain add" in unknown.stderr


def test_service_records_need_the_node_addresses(node_settings: Settings) -> None:
    config = node_settings.source
    postroom("tenant", "add", "contoso", config=config)
    bare = postroom("service", "records", config=config)
    assert bare.returncode == 0 and "service.addresses is empty" in bare.stderr
    text = config.read_text().replace("addresses = []", 'addresses = ["203.0.113.25"]')
    config.write_text(text)
    records = json.loads(postroom("service", "records", "--json", config=config).stdout)
    values = {(r["type"], r["name"]): r["value"] for r in records}
    assert values["A", "*.mail.protection.postroom.test"] == "203.0.113.25"
    assert values["TXT", "spf.protection.postroom.test"] == "v=spf1 ip4:203.0.113.25 -all"
    assert values["PTR", "25.113.0.203.in-addr.arpa"] == node_settings.service.hostname
    assert values["MX", "contoso.postroom.test"] == "contoso-postroom-test.mail.protection.postroom.test"


def test_domain_check_reports_findings_and_exits_1_on_errors(tmp_path: Path) -> None:
    zone = '@ 300 IN MX 10 mail.oldhost.example.\n@ 300 IN TXT "v=spf1 a -all" \n'
    with DnsTestServer({"contoso.example": zone}) as dns_server:
        settings = make_node(tmp_path / "node", nameservers=(str(dns_server.address),))
        config = settings.source
        postroom("tenant", "add", "contoso", config=config)
        postroom("domain", "add", "contoso.example", "--tenant", "contoso", "--verified", config=config)
        checked = postroom("domain", "check", "contoso.example", "--json", config=config)
        assert checked.returncode == 1, checked.stderr
        report = json.loads(checked.stdout)
        codes = {f["code"]: f for f in report["findings"]}
        assert codes["mx.wrong-host"]["severity"] == "error"
        assert (
            codes["mx.wrong-host"]["publish"][0]["value"] == "contoso-example.mail.protection.postroom.test"
        )
        assert codes["spf.no-service-include"]["publish"][0]["value"] == (
            "v=spf1 a include:spf.protection.postroom.test -all"
        )
        assert report["errors"] == sum(f["severity"] == "error" for f in report["findings"])
        shown = postroom("domain", "check", "contoso.example", config=config)
        assert shown.returncode == 1
        assert "mx.wrong-host" in shown.stdout
        words = " ".join(shown.stdout.split())
        assert "contoso.example. 3600 IN MX 0 contoso-example.mail.protection.postroom.test." in words

        refused = postroom("domain", "dkim", "rotate", "contoso.example", config=config)
        assert refused.returncode == 1
        assert "not rotated" in refused.stderr and "postroom2._domainkey.contoso.example" in refused.stderr
        keys = json.loads(
            postroom("domain", "dkim", "show", "contoso.example", "--json", config=config).stdout
        )
        assert [(k["selector"], k["active"]) for k in keys] == [("postroom1", True), ("postroom2", False)]
        dns_server.add_txt(keys[1]["record_name"], keys[1]["record_value"])
        rotated = postroom("domain", "dkim", "rotate", "contoso.example", config=config)
        assert rotated.returncode == 0, rotated.stderr
        assert "postroom2 signs contoso.example" in rotated.stdout
        keys = json.loads(
            postroom("domain", "dkim", "show", "contoso.example", "--json", config=config).stdout
        )
        assert [(k["selector"], k["active"]) for k in keys] == [("postroom1", False), ("postroom2", True)]
        assert keys[0]["retired_at"] is not None  # kept published for mail in flight
        back = postroom("domain", "dkim", "rotate", "contoso.example", config=config)
        assert back.returncode == 1 and "still holds the key retired" in back.stderr


def test_domain_check_without_a_domain_sweeps_every_domain(tmp_path: Path) -> None:
    zone = '@ 300 IN TXT "v=spf1 [bold]relay -all"\n'
    with DnsTestServer({"contoso.example": zone, "postroom.test": ""}) as dns_server:
        settings = make_node(tmp_path / "node", nameservers=(str(dns_server.address),))
        config = settings.source
        postroom("tenant", "add", "contoso", config=config)
        postroom("domain", "add", "contoso.example", "--tenant", "contoso", "--verified", config=config)
        swept = postroom("domain", "check", "--tenant", "contoso", "--json", config=config)
        assert swept.returncode == 1
        reports = json.loads(swept.stdout)
        assert [r["domain"] for r in reports] == ["contoso.example", "contoso.postroom.test"]
        assert all(r["errors"] > 0 for r in reports)
        summary = postroom("domain", "check", config=config)
        assert summary.returncode == 1
        assert "contoso.postroom.test" in summary.stdout and "spf.syntax" in summary.stdout
        # What DNS holds is shown as it is, never read as terminal markup.
        detail = postroom("domain", "check", "contoso.example", config=config)
        assert "[bold]relay" in detail.stdout


def test_message_text_reaches_the_terminal_escaped(mx_node: RunningNode) -> None:
    """A Subject, From or Message-ID with terminal escape sequences or rich markup is shown inert."""
    hostile = "\x1b]0;pwned\x07\x1b[2J[bold]Hello[/bold]\x9b31m"
    message = (
        f"From: \x1b[31mMallory\x1b[0m <mallory@fabrikam.example>\r\n"
        f"To: alice@contoso.com\r\nSubject: {hostile}\r\nMessage-ID: <id\x1b[8m@x>\r\n\r\nhi\r\n"
    ).encode()
    with smtplib.SMTP(*mx_node.mx, timeout=30) as client:
        client.sendmail("mallory@fabrikam.example", ["alice@contoso.com"], message)
    config = mx_node.settings.source
    listed = postroom("mailbox", "messages", "alice@contoso.com", config=config)
    traced = postroom("trace", config=config)
    assert listed.returncode == 0 and traced.returncode == 0, listed.stderr + traced.stderr
    message_id = json.loads(postroom("trace", "--json", config=config).stdout)[0]["message_id"]
    shown = postroom("trace", "show", message_id, config=config)
    assert shown.returncode == 0, shown.stderr
    for output in (listed.stdout, traced.stdout, shown.stdout):
        words = "".join(output.split())  # a table may fold a long cell over lines
        assert "\x1b" not in output and "\x07" not in output and "\x9b" not in output
        assert "\\x1b[2J[bold]Hello[/bold]" in words
        assert "\\x9b31m" in words
    assert "\\x1b[31mMallory" in "".join(listed.stdout.split())
    assert "<id\\x1b[8m@x>" in "".join(shown.stdout.split())


def one_line_error(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    """Exit 2 with one line on stderr that holds every `expected` text, and no traceback."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for text in expected:
        assert text in result.stderr, result.stderr


def edit(config: Path, old: str, new: str) -> None:
    text = config.read_text()
    assert old in text
    config.write_text(text.replace(old, new, 1))


def test_a_port_in_use_is_one_line(node_settings: Settings) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        config = node_settings.source
        edit(config, '"127.0.0.1:0"', f'"127.0.0.1:{port}"')  # the first is [mx] listen
        one_line_error(postroom("serve", config=config), "[mx] listen", "in use", str(config))


@pytest.mark.parametrize(
    ("old", "new", "commands", "expected"),
    [
        (
            'url = ""',
            'url = "postgresql+psycopg://postroom@127.0.0.1:1/postroom"',
            [["check-config"], ["serve"], ["tenant", "list"]],
            ["[database] url", "127.0.0.1"],
        ),
        ('url = ""', 'url = "mysql://db/postroom"', [["check-config"], ["serve"]], ["database.url"]),
        (
            'data_dir = "."',
            'data_dir = "gone"',
            [["check-config"], ["serve"], ["tenant", "list"]],
            ["[node] data_dir", "does not exist"],
        ),
        (
            'certificate = "tls/cert.pem"',
            'certificate = "tls/absent.pem"',
            [["check-config"], ["serve"]],
            ["[tls] certificate", "absent.pem"],
        ),
        (
            'key = "tls/key.pem"',
            'key = "other/key.pem"',
            [["check-config"], ["serve"]],
            ["[tls]", "cannot be used"],
        ),
    ],
    ids=["dead-postgresql", "unsupported-url", "no-data-dir", "no-certificate", "key-of-another-certificate"],
)
def test_start_up_problems_are_one_line(
    tmp_path: Path, old: str, new: str, commands: list[list[str]], expected: list[str]
) -> None:
    settings = make_node(tmp_path / "node")
    write_self_signed(
        tmp_path / "node" / "other" / "cert.pem", tmp_path / "node" / "other" / "key.pem", ["x"]
    )
    edit(settings.source, old, new)
    for command in commands:
        one_line_error(postroom(*command, config=settings.source), *expected)
    assert not (tmp_path / "node" / "gone").exists()  # opening a node never makes its data directory


def test_a_failed_init_writes_nothing(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    one_line_error(postroom("init", str(blocker / "node")), str(blocker), "nothing was written")
    assert blocker.read_text() == "not a directory"
    half = tmp_path / "half"
    half.mkdir()
    (half / "tls").write_text("a file where init puts its certificate directory")
    one_line_error(postroom("init", str(half)), "tls", "nothing was written")
    assert sorted(p.name for p in half.iterdir()) == ["tls"]
    fresh = tmp_path / "a" / "b"
    one_line_error(postroom("init", str(fresh), "--mx-listen", "nowhere"), "--mx-listen")
    assert not (tmp_path / "a").exists()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs to fill up (mounting needs root; skipped without it)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_data_directory_is_one_line(small_disk: Path) -> None:
    settings = make_node(small_disk / "node")
    with contextlib.suppress(OSError), (small_disk / "filler").open("wb") as filler:
        while True:
            filler.write(b"\0" * 65536)
            filler.flush()
    for command in (["tenant", "add", "contoso"], ["serve"]):
        one_line_error(postroom(*command, config=settings.source), "is full", "[node] data_dir")


@pytest.mark.parametrize("count", ["0", "-2", "many"])
def test_serve_refuses_a_worker_count_below_one(node_settings: Settings, count: str) -> None:
    result = postroom("serve", "--workers", count, config=node_settings.source)
    assert result.returncode == 2
    assert "Invalid value for '--workers'" in result.stderr


def test_the_worker_option_is_only_for_the_supervisor(node_settings: Settings) -> None:
    one_line_error(postroom("serve", "--worker", "1", config=node_settings.source), "serve --workers N")


def test_an_admin_port_in_use_is_one_line(node_settings: Settings) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        config = node_settings.source
        text = config.read_text()
        admin = text.index("[admin]")
        config.write_text(text[:admin] + text[admin:].replace('"127.0.0.1:0"', f'"127.0.0.1:{port}"', 1))
        one_line_error(postroom("serve", config=config), "[admin] listen", str(port), "in use")


def test_directory_rules_and_tenant_scope_from_the_command_line(node_settings: Settings) -> None:
    config = node_settings.source

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return postroom(*args, config=config, stdin=stdin)

    refused = run("tenant", "add", "mx")
    assert refused.returncode == 1 and "a name the service uses itself" in refused.stderr
    for name, rule in (
        ("[192.0.2.1]", "IP address"),
        ("co.uk", "public suffix"),
        ("contoso", "single label"),
    ):
        assert run("tenant", "add", "contoso").returncode in (0, 1)
        result = run("domain", "add", name, "--tenant", "contoso")
        assert result.returncode == 1 and rule in result.stderr, result.stderr
    for command in (
        ["domain", "add", "contoso.com", "--tenant", "contoso", "--verified"],
        ["tenant", "add", "fabrikam"],
        ["domain", "add", "fabrikam.com", "--tenant", "fabrikam", "--verified"],
        ["mailbox", "add", "carol@fabrikam.com"],
    ):
        assert run(*command).returncode == 0, command
    weak = run("mailbox", "add", "alice@contoso.com", "--password-stdin", stdin="alice\n")
    assert weak.returncode == 1 and "8 to 256 characters" in weak.stderr
    assert (
        run("mailbox", "add", "alice@contoso.com", "--password-stdin", stdin="a long secret\n").returncode
        == 0
    )
    external = run("group", "add", "team@contoso.com", "--member", "someone@partner.example")
    assert external.returncode == 1 and "contact add" in external.stderr
    foreign = run("group", "add", "team@contoso.com", "--member", "carol@fabrikam.com")
    assert foreign.returncode == 1 and "outside this tenant's accepted domains" in foreign.stderr
    assert run("group", "add", "team@contoso.com", "--member", "alice@contoso.com").returncode == 0
    loop = run("group", "add", "all@contoso.com", "--member", "team@contoso.com")
    assert loop.returncode == 0
    cycle = run("group", "set", "team@contoso.com", "--add-member", "all@contoso.com")
    assert cycle.returncode == 1 and "team@contoso.com -> all@contoso.com -> team@contoso.com" in cycle.stderr

    # --tenant narrows the operator to one tenant: another tenant's mailbox does not exist for it.
    for command in (
        ["mailbox", "show", "alice@contoso.com"],
        ["mailbox", "messages", "alice@contoso.com"],
        ["mailbox", "export", "alice@contoso.com", "1"],
        ["mailbox", "remove", "alice@contoso.com", "--yes"],
        ["group", "show", "team@contoso.com"],
    ):
        result = run(*command, "--tenant", "fabrikam")
        assert result.returncode == 1 and "no recipient has the address" in result.stderr, command
    listed = run("mailbox", "list", "--tenant", "fabrikam", "--json")
    assert [m["address"] for m in json.loads(listed.stdout)] == ["carol@fabrikam.com"]
    assert run("mailbox", "show", "alice@contoso.com", "--tenant", "contoso").returncode == 0
