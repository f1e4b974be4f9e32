"""load_settings: a good file, every problem of a bad one at once, unknown keys, types, listen
addresses, relative paths; render_config round trip; find_config."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from postroom.app.setup import InitOptions, init_node, render_config
from postroom.config import (
    CONFIG_ENV,
    AdminLimits,
    AdminSettings,
    ConfigError,
    DatabaseSettings,
    DnsSettings,
    ListenAddress,
    PasswordSettings,
    QueueSettings,
    ServiceSettings,
    Settings,
    SmtpLimits,
    SubmissionSettings,
    TlsSettings,
    find_config,
    load_settings,
    parse_listen,
)

GOOD = """
[node]
data_dir = "data"
log_level = "debug"
drain_seconds = 2.5
memory_budget = 1048576
blob_store = "database"

[service]
domain = "mail.example.net"
hostname = "mx1.mail.example.net"

[database]
url = "postgresql+psycopg://postroom@db/postroom"

[dns]
nameservers = ["127.0.0.1:5353", "[::1]:53"]
timeout = 2
cache_size = 50

[tls]
certificate = "/etc/postroom/cert.pem"
key = "tls/key.pem"

[mx]
listen = ["0.0.0.0:25", "[::]:25"]

[mx.limits]
max_recipients = 100
command_timeout = 60
bare_lf = "normalize"

[submission]
listen = "127.0.0.1:587"

[imap]
listen = []

[admin]
listen = ["127.0.0.1:8443"]

[queue]
retry_schedule = [60, 120.5]
delay_notification = 7200
"""


def write(tmp_path: Path, text: str, name: str = "postroom.toml") -> Path:
    path = tmp_path / "etc" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert caught.value.path == path
    assert str(path) in str(caught.value)
    return {problem.key: problem.message for problem in caught.value.problems}


def test_good_file(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    settings = load_settings(path)
    base = path.parent.resolve()
    assert settings.source == path.resolve()
    assert settings.data_dir == base / "data"
    assert settings.log_level == "debug"
    assert settings.blob_store == "database"
    assert settings.drain_seconds == 2.5
    assert settings.memory_budget == 1_048_576
    assert (settings.service.domain, settings.service.hostname) == (
        "mail.example.net",
        "mx1.mail.example.net",
    )
    assert settings.database_url == "postgresql+psycopg://postroom@db/postroom"
    assert settings.dns.nameservers == (ListenAddress("127.0.0.1", 5353), ListenAddress("::1", 53))
    assert (settings.dns.timeout, settings.dns.cache_size) == (2.0, 50)
    assert isinstance(settings.dns.timeout, float)
    assert settings.tls.certificate == Path("/etc/postroom/cert.pem")
    assert settings.tls.key == base / "tls" / "key.pem"
    assert settings.mx.listen == (ListenAddress("0.0.0.0", 25), ListenAddress("::", 25))
    assert settings.mx.limits == SmtpLimits(max_recipients=100, command_timeout=60.0, bare_lf="normalize")
    assert settings.submission.listen == (ListenAddress("127.0.0.1", 587),)
    assert settings.submission.limits == SubmissionSettings().limits
    assert settings.submission.limits.max_recipients == 1000  # the per-mailbox ceiling (spec §8)
    assert settings.imap.listen == ()
    assert settings.admin.listen == (ListenAddress("127.0.0.1", 8443),)
    assert settings.queue == QueueSettings(retry_schedule=(60.0, 120.5), delay_notification=7200.0)
    assert settings.blob_dir == base / "data" / "blobs"


def test_service_dns_names_default_under_the_service_domain(tmp_path: Path) -> None:
    service = load_settings(write(tmp_path, '[service]\ndomain = "mail.example.net"\n')).service
    assert service.mx_host("contoso-com") == "contoso-com.mail.protection.mail.example.net"
    assert service.spf_include == "spf.protection.mail.example.net"
    assert (service.addresses, service.mta_sts_mode) == ((), "testing")
    text = (
        '[service]\ndomain = "mail.example.net"\nmx_suffix = "mx.example.net"\n'
        'spf_host = "_spf.example.net"\naddresses = ["203.0.113.25", "2001:DB8:0::25"]\n'
        'mta_sts_mode = "enforce"\n'
    )
    service = load_settings(write(tmp_path, text)).service
    assert service.mx_host("contoso-com") == "contoso-com.mx.example.net"
    assert service.spf_include == "_spf.example.net"
    assert (service.addresses, service.mta_sts_mode) == (("203.0.113.25", "2001:db8::25"), "enforce")


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    settings = load_settings(path)
    assert settings.data_dir == path.parent.resolve()
    assert settings.database_url == f"sqlite:///{path.parent.resolve() / 'postroom.db'}"
    assert settings.mx.listen == (ListenAddress("127.0.0.1", 2525),)
    assert settings.submission.listen == (ListenAddress("127.0.0.1", 2587),)
    assert settings.imap.listen == (ListenAddress("127.0.0.1", 2143),)
    assert settings.imap.tls_listen == (ListenAddress("127.0.0.1", 2993),)
    assert settings.mx.limits == SmtpLimits()
    assert settings.queue == QueueSettings()
    assert settings.drain_seconds == 30.0
    assert settings.memory_budget == 268_435_456


@pytest.mark.parametrize(
    ("value", "resolved"),
    [
        ("data", "etc/data"),
        ("./data/../store", "etc/data/../store"),
        ("../var/postroom", "etc/../var/postroom"),
    ],
)
def test_relative_paths_are_relative_to_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str, resolved: str
) -> None:
    path = write(tmp_path, f'[node]\ndata_dir = "{value}"\n[tls]\ncertificate = "{value}/c.pem"\n')
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    settings = load_settings(path)
    assert settings.data_dir == tmp_path.resolve() / resolved
    assert settings.tls.certificate == tmp_path.resolve() / resolved / "c.pem"


def test_every_problem_is_reported_at_once_with_key_and_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[node]
log_level = "verbose"
data_dri = "typo"

[service]
domain = "localhost"

[dns]
timeout = "fast"
nameservers = ["8.8.8.8"]

[mx]
listen = ["127.0.0.1:99999", "127.0.0.1:25"]

[mx.limits]
max_recipients = 0
max_errors = true
bare_lf = "accept"
nul = "keep"
ipv4_prefix = 33
reserved_connections = 5000

[queue]
lease_seconds = -1.0

[imap]
listen = 143

[extras]
anything = 1
""",
    )
    problems = problems_of(path)
    assert set(problems) == {
        "node.log_level",
        "node.data_dri",
        "service.domain",
        "dns.timeout",
        "dns.nameservers",
        "mx.listen",
        "mx.limits.max_recipients",
        "mx.limits.max_errors",
        "mx.limits.bare_lf",
        "mx.limits.nul",
        "mx.limits.ipv4_prefix",
        "mx.limits.reserved_connections",
        "queue.lease_seconds",
        "imap.listen",
        "extras",
    }
    assert problems["node.data_dri"] == "unknown key"
    assert problems["mx.limits.max_recipients"] == "must be greater than 0"
    assert "99999" in problems["mx.listen"]
    message = str(ConfigError(path, []))
    assert message.startswith(f"{path}: 0 problem(s)")


@pytest.mark.parametrize(
    ("text", "key", "fix_mentions"),
    [
        ("[node]\ndata_dirr = 'x'\n", "node.data_dirr", "data_dir"),
        ("[nodes]\ndata_dir = 'x'\n", "nodes", "node"),
        ("top = 1\n", "top", "service"),
        ("[mx.limits]\nmax_recipient = 5\n", "mx.limits.max_recipient", "max_recipients"),
        ("[mx.limit]\nmax_recipients = 5\n", "mx.limit", "limits"),
        ("[submission.limits]\nsize = 5\n", "submission.limits.size", "max_message_size"),
        ("[queue]\nretries = 5\n", "queue.retries", "retry_schedule"),
    ],
)
def test_unknown_keys(tmp_path: Path, text: str, key: str, fix_mentions: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text))
    [problem] = caught.value.problems
    assert (problem.key, problem.message) == (key, "unknown key")
    assert fix_mentions in problem.fix


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        ('[mx.limits]\nmax_recipients = "500"\n', "mx.limits.max_recipients", "expected int, found '500'"),
        ("[mx.limits]\nmax_errors = true\n", "mx.limits.max_errors", "expected int, found True"),
        ("[mx.limits]\nmax_errors = 1.5\n", "mx.limits.max_errors", "expected int, found 1.5"),
        (
            "[mx.limits]\ncommand_timeout = false\n",
            "mx.limits.command_timeout",
            "expected float, found False",
        ),
        ('[dns]\ntimeout = "5"\n', "dns.timeout", "expected float"),
        ("[node]\ndata_dir = 5\n", "node.data_dir", "expected str, found 5"),
        ("[service]\ndomain = ['a.b']\n", "service.domain", "expected str"),
        ("node = 5\n", "node", "must be a table"),
        ("[mx]\nlimits = 3\n", "mx.limits", "must be a table"),
        ("mx = 'x'\n", "mx", "must be a table"),
        (
            "[queue]\nretry_schedule = [300, 0]\n",
            "queue.retry_schedule",
            "expected a list of positive seconds",
        ),
        ("[queue]\nretry_schedule = []\n", "queue.retry_schedule", "expected a list of positive seconds"),
        ("[queue]\ndelay_notification = 0\n", "queue.delay_notification", "must be greater than 0"),
        ('[node]\nlog_level = "loud"\n', "node.log_level", "must be debug, info, warning or error"),
        ("[node]\ndrain_seconds = 0\n", "node.drain_seconds", "must be greater than 0"),
        ("[node]\nmemory_budget = -1\n", "node.memory_budget", "must be greater than 0"),
        ("[node]\nworkers = -1\n", "node.workers", "must be from 0 (one per core) to 256"),
        ("[node]\nworkers = 1000\n", "node.workers", "must be from 0 (one per core) to 256"),
        ('[node]\nworkers = "4"\n', "node.workers", "expected int"),
        ('[node]\nblob_store = "s3"\n', "node.blob_store", 'must be "files" or "database"'),
        (
            '[submission.limits]\nbare_lf = "keep"\n',
            "submission.limits.bare_lf",
            'must be "reject" or "normalize"',
        ),
        (
            '[service]\nhostname = "mx host.example"\n',
            "service.hostname",
            "is not a fully qualified domain name",
        ),
        ('[service]\ndomain = ""\n', "service.domain", "is not a fully qualified domain name"),
        ('[service]\nmx_suffix = "mx"\n', "service.mx_suffix", "is not a fully qualified domain name"),
        ('[service]\nspf_host = "spf host.example"\n', "service.spf_host", "is not a fully qualified"),
        ('[service]\naddresses = ["203.0.113.300"]\n', "service.addresses", "is not an IP address"),
        ('[service]\naddresses = "203.0.113.25"\n', "service.addresses", "expected a list of IP addresses"),
        ('[service]\nmta_sts_mode = "none"\n', "service.mta_sts_mode", 'must be "testing" or "enforce"'),
        ("[mta_sts]\npolicy_port = 70000\n", "mta_sts.policy_port", "must be a port number from 1 to 65535"),
        ("[mta_sts]\nfetch_timeout = 0\n", "mta_sts.fetch_timeout", "must be greater than 0"),
        ('[mta_sts]\npolicy_https = "no"\n', "mta_sts.policy_https", "expected bool"),
    ],
)
def test_wrong_values_are_one_problem_each(tmp_path: Path, text: str, key: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text))
    assert [(p.key, message in p.message) for p in caught.value.problems] == [(key, True)]


@pytest.mark.parametrize(
    "listen",
    [
        '"127.0.0.1"',
        '"127.0.0.1:"',
        '":25"',
        '"127.0.0.1:99999"',
        '"[::1]"',
        '"[::1]25"',
        '"host:port"',
        "25",
        "[25]",
    ],
)
def test_bad_listen_addresses(tmp_path: Path, listen: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, f"[mx]\nlisten = {listen}\n"))
    assert [p.key for p in caught.value.problems] == ["mx.listen"]


@pytest.mark.parametrize(
    ("text", "host", "port", "shown"),
    [
        ("127.0.0.1:25", "127.0.0.1", 25, "127.0.0.1:25"),
        (" localhost:0 ", "localhost", 0, "localhost:0"),
        ("[::1]:2525", "::1", 2525, "[::1]:2525"),
        ("[2001:db8::1]:65535", "2001:db8::1", 65535, "[2001:db8::1]:65535"),
    ],
)
def test_parse_listen(text: str, host: str, port: int, shown: str) -> None:
    address = parse_listen(text)
    assert (address.host, address.port, str(address)) == (host, port, shown)


def test_missing_file_and_bad_syntax(tmp_path: Path) -> None:
    assert problems_of(tmp_path / "absent.toml").keys() == {"(file)"}
    assert problems_of(write(tmp_path, "[node\n")).keys() == {"(syntax)"}
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes(b"[service]\ndomain = 'caf\xe9.example'\n")
    assert problems_of(latin1).keys() == {"(syntax)"}


SECTIONS = {
    "service": ServiceSettings,
    "database": DatabaseSettings,
    "dns": DnsSettings,
    "tls": TlsSettings,
    "mx.limits": SmtpLimits,
    "submission": SubmissionSettings,
    "submission.limits": SmtpLimits,
    "admin": AdminSettings,
    "admin.limits": AdminLimits,
    "queue": QueueSettings,
}


def test_rendered_config_holds_every_key_and_loads_to_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "postroom.toml"
    defaults = Settings(source=path)
    text = render_config(defaults)
    document = tomllib.loads(text)
    for section, cls in SECTIONS.items():
        table = document
        for part in section.split("."):
            table = table[part]
        assert {f.name for f in dataclasses.fields(cls)} <= set(table), section
    assert {"data_dir", "log_level"} <= set(document["node"])
    assert {"listen"} <= set(document["mx"]) & set(document["submission"]) & set(document["imap"])
    settings = load_settings(write(tmp_path, text))
    base = path.parent.resolve()
    assert settings == dataclasses.replace(
        defaults,
        source=path.resolve(),
        data_dir=base,
        tls=TlsSettings(base / "tls" / "cert.pem", base / "tls" / "key.pem"),
    )
    assert "# Postroom node configuration" in text and "# tenants' default domains" in text


def test_init_writes_every_default_with_its_choices(tmp_path: Path) -> None:
    options = InitOptions(
        service_domain="postroom.example",
        mx_listen="127.0.0.1:0",
        submission_listen="[::1]:2587",
        nameservers=("127.0.0.1:5353",),
    )
    settings = init_node(tmp_path / "node", options)
    base = (tmp_path / "node").resolve()
    defaults = Settings(source=settings.source)
    assert settings == dataclasses.replace(
        defaults,
        data_dir=base,
        service=dataclasses.replace(
            defaults.service, domain="postroom.example", hostname="mx.postroom.example"
        ),
        dns=dataclasses.replace(defaults.dns, nameservers=(ListenAddress("127.0.0.1", 5353),)),
        tls=TlsSettings(base / "tls" / "cert.pem", base / "tls" / "key.pem"),
        mx=dataclasses.replace(defaults.mx, listen=(ListenAddress("127.0.0.1", 0),)),
        submission=dataclasses.replace(defaults.submission, listen=(ListenAddress("::1", 2587),)),
    )
    document = tomllib.loads(settings.source.read_text())
    for section, cls in SECTIONS.items():
        table = document
        for part in section.split("."):
            table = table[part]
        assert {f.name for f in dataclasses.fields(cls)} <= set(table), section


@pytest.mark.parametrize(
    ("explicit", "environment", "found"),
    [
        ("/etc/a.toml", "/etc/b.toml", "/etc/a.toml"),
        (None, "/etc/b.toml", "/etc/b.toml"),
        ("/etc/a.toml", None, "/etc/a.toml"),
        (None, None, None),
        (None, "", None),
    ],
)
def test_find_config(
    monkeypatch: pytest.MonkeyPatch, explicit: str | None, environment: str | None, found: str | None
) -> None:
    if environment is None:
        monkeypatch.delenv(CONFIG_ENV, raising=False)
    else:
        monkeypatch.setenv(CONFIG_ENV, environment)
    assert find_config(explicit) == (Path(found) if found else None)


# `[admin] tls`: read as a bool, false by default, a wrong type reported with its fix.
@pytest.mark.parametrize(
    ("text", "tls"),
    [("", False), ("[admin]\n", False), ("[admin]\ntls = false\n", False), ("[admin]\ntls = true\n", True)],
)
def test_admin_tls(tmp_path: Path, text: str, tls: bool) -> None:
    assert load_settings(write(tmp_path, text)).admin.tls is tls


@pytest.mark.parametrize("value", ['"yes"', "1", '"true"'])
def test_admin_tls_must_be_a_bool(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, f"[admin]\ntls = {value}\n"))
    [problem] = caught.value.problems
    assert problem.key == "admin.tls"
    assert problem.message.startswith("expected bool, found ")
    assert problem.fix == "set it like `tls = false`"


# `[admin] metrics_allow`: who may read /readyz and /metrics; loopback by default, CIDRs or addresses.
@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("", ["127.0.0.0/8", "::1/128"]),
        ('[admin]\nmetrics_allow = ["10.0.0.0/8", "2001:db8::/32"]\n', ["10.0.0.0/8", "2001:db8::/32"]),
        ('[admin]\nmetrics_allow = ["192.0.2.7"]\n', ["192.0.2.7/32"]),
        ("[admin]\nmetrics_allow = []\n", []),
    ],
)
def test_admin_metrics_allow(tmp_path: Path, text: str, shown: list[str]) -> None:
    assert [str(n) for n in load_settings(write(tmp_path, text)).admin.metrics_allow] == shown


@pytest.mark.parametrize("value", ['["10.0.0.0/33"]', '["any"]', '"10.0.0.0/8"'])
def test_a_bad_metrics_allow_names_its_key_and_the_fix(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, f"[admin]\nmetrics_allow = {value}\n"))
    [problem] = caught.value.problems
    assert problem.key == "admin.metrics_allow"
    assert str(caught.value).startswith(f"{tmp_path / 'etc' / 'postroom.toml'}: admin.metrics_allow: ")
    assert "10.0.0.0/8" in problem.fix or "192.0.2.0/24" in problem.fix


def test_password_policy(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, "")).passwords == PasswordSettings(min_length=8, max_length=256)
    settings = load_settings(write(tmp_path, "[passwords]\nmin_length = 12\nmax_length = 64\n"))
    assert settings.passwords == PasswordSettings(min_length=12, max_length=64)
    problems = problems_of(write(tmp_path, '[passwords]\nmin_length = "long"\n'))
    assert "passwords.min_length" in problems
    problems = problems_of(write(tmp_path, "[passwords]\nmin_length = 20\nmax_length = 10\n"))
    assert problems["passwords.max_length"] == "is shorter than passwords.min_length"


def test_mta_sts_ca_file_is_relative_to_the_file(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, '[mta_sts]\nca_file = "lab/ca.pem"\npolicy_port = 8443\n'))
    expected = (str(tmp_path / "etc" / "lab" / "ca.pem"), 8443)
    assert (settings.mta_sts.ca_file, settings.mta_sts.policy_port) == expected
    assert load_settings(write(tmp_path, "")).mta_sts.ca_file == ""


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[submission]\nauth_failures_before_disconnect = 3\n", "submission.auth_failures_before_disconnect"),
        ("[submission]\nmax_recipients = 2000\n", "submission.max_recipients"),
        ("[submission]\nmax_send_size = 200000000\n", "submission.max_send_size"),
        ("[submission]\nmessages_per_minute = 0\n", "submission.messages_per_minute"),
        ('[submission]\ntls_listen = "465"\n', "submission.tls_listen"),
    ],
)
def test_bad_submission_settings_name_their_key(tmp_path: Path, text: str, key: str) -> None:
    assert key in problems_of(write(tmp_path, text))


def test_submission_settings_load(tmp_path: Path) -> None:
    text = (
        '[submission]\ntls_listen = "127.0.0.1:465"\nmessages_per_minute = 3\n'
        "auth_failures_before_throttle = 2\n"
    )
    settings = load_settings(write(tmp_path, text))
    assert settings.submission.tls_listen == (ListenAddress("127.0.0.1", 465),)
    assert settings.submission.messages_per_minute == 3
    assert settings.submission.auth_failures_before_throttle == 2
    assert settings.submission.listen == SubmissionSettings().listen


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[imap]\nauth_failures_before_disconnect = 5\n", "imap.auth_failures_before_disconnect"),
        ("[imap]\nidle_timeout = 600\n", "imap.idle_timeout"),
        ("[imap]\nmax_errors = 0\n", "imap.max_errors"),
        ('[imap]\nallow_plaintext_login = "yes"\n', "imap.allow_plaintext_login"),
        ('[imap]\ntls_listen = "993"\n', "imap.tls_listen"),
        ("[imap]\nmax_literal = 5\n", "imap.max_literal"),
    ],
)
def test_bad_imap_settings_name_their_key(tmp_path: Path, text: str, key: str) -> None:
    assert key in problems_of(write(tmp_path, text))


def test_imap_settings_load(tmp_path: Path) -> None:
    text = '[imap]\ntls_listen = ["0.0.0.0:993"]\nallow_plaintext_login = true\nmax_append_size = 1000000\n'
    imap = load_settings(write(tmp_path, text)).imap
    assert imap.tls_listen == (ListenAddress("0.0.0.0", 993),)
    assert imap.allow_plaintext_login and imap.max_append_size == 1_000_000
    assert imap.listen == (ListenAddress("127.0.0.1", 2143),)


def test_proxy_protocol_settings_load(tmp_path: Path) -> None:
    text = (
        '[mx]\nproxy_protocol = true\ntrusted_proxies = ["10.0.0.0/8", "127.0.0.1", "2001:db8::/32"]\n'
        "proxy_header_timeout = 2\n"
        '[submission]\nproxy_protocol = true\ntrusted_proxies = ["192.0.2.10"]\n'
    )
    settings = load_settings(write(tmp_path, text))
    assert settings.mx.proxy_protocol and settings.mx.proxy_header_timeout == 2.0
    assert settings.mx.trusted_proxies == ("10.0.0.0/8", "127.0.0.1/32", "2001:db8::/32")
    assert settings.submission.trusted_proxies == ("192.0.2.10/32",)
    defaults = load_settings(write(tmp_path, ""))
    assert not defaults.mx.proxy_protocol and not defaults.submission.proxy_protocol


@pytest.mark.parametrize(
    ("text", "key", "message", "fix"),
    [
        ("[mx]\nproxy_protocol = true\n", "mx.trusted_proxies", "is empty", "trusted_proxies = ["),
        (
            "[submission]\nproxy_protocol = true\n",
            "submission.trusted_proxies",
            "is empty",
            "proxy_protocol = false",
        ),
        (
            '[mx]\ntrusted_proxies = ["balancer.example"]\n',
            "mx.trusted_proxies",
            "is not an IP",
            "10.0.0.0/8",
        ),
        ('[mx]\ntrusted_proxies = ["10.1.2.3/8"]\n', "mx.trusted_proxies", "host bits", "host bits zero"),
        ('[mx]\ntrusted_proxies = "10.0.0.0/8"\n', "mx.trusted_proxies", "expected a list", "10.0.0.0/8"),
        ('[mx]\nproxy_protocol = "yes"\n', "mx.proxy_protocol", "expected bool", "proxy_protocol = false"),
        ("[mx]\nproxy_header_timeout = 0\n", "mx.proxy_header_timeout", "greater than 0", "default"),
    ],
)
def test_bad_proxy_protocol_settings_name_their_key_and_fix(
    tmp_path: Path, text: str, key: str, message: str, fix: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text))
    [problem] = caught.value.problems
    assert (problem.key, message in problem.message, fix in problem.fix) == (key, True, True)
