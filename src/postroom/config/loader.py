"""Reading `postroom.toml` into `Settings`: every error at once, each with its file, key and fix.

The file is parsed once at start. Unknown keys are errors (a misspelt limit must not silently keep
its default); every value is checked for type and range; relative paths are relative to the file's
directory. `ConfigError` carries all the problems found; its message is what the CLI prints.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from postroom.config.settings import (
    DatabaseSettings,
    DnsSettings,
    ListenAddress,
    ListenerSettings,
    QueueSettings,
    RoutingSettings,
    ServiceSettings,
    Settings,
    SmtpLimits,
    TlsSettings,
    TraceSettings,
)

CONFIG_ENV = "POSTROOM_CONFIG"
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Problem:
    key: str
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}; {self.fix}"


class ConfigError(Exception):
    """The config file cannot be used; `problems` lists every reason."""

    def __init__(self, path: Path, problems: list[Problem]) -> None:
        self.path = path
        self.problems = problems
        lines = [f"{path}: {len(problems)} problem(s) in the configuration:"]
        lines += [f"  {problem}" for problem in problems]
        super().__init__("\n".join(lines))


def parse_listen(text: str) -> ListenAddress:
    """Parse `host:port` or `[v6]:port`; raises ValueError with what is wrong."""
    text = text.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not host:port")
    return ListenAddress(host, int(port))


class _Reader:
    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.problems: list[Problem] = []
        self.used: set[str] = set()

    def table(self, key: str) -> dict[str, Any]:
        value = self.data
        parts = key.split(".")
        for depth, part in enumerate(parts, start=1):
            child = value.get(part, {})
            if not isinstance(child, dict):
                # Reported once, under the key that is not a table (every key read from it asks again).
                where = ".".join(parts[:depth])
                if where not in self.used:
                    self.used.add(where)
                    self.problems.append(Problem(where, "must be a table", f"write it as [{where}]"))
                return {}
            value = child
        self.used.add(key)
        return value

    def get(
        self, table: str, key: str, kind: type[T], default: T, check: Callable[[T], str | None] | None = None
    ) -> T:
        section = self.table(table)
        full = f"{table}.{key}"
        self.used.add(full)
        if key not in section:
            return default
        value = section[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            shown = str(default).lower() if isinstance(default, bool) else repr(default)  # TOML's spelling
            self.problems.append(
                Problem(full, f"expected {kind.__name__}, found {value!r}", f"set it like `{key} = {shown}`")
            )
            return default
        if check is not None:
            complaint = check(value)
            if complaint:
                self.problems.append(Problem(full, complaint, f"the default is {default!r}"))
                return default
        return value

    def strings(
        self, table: str, key: str, default: list[str], what: str, example: str, *, one_alone: bool = False
    ) -> list[str]:
        """A list of strings (with `one_alone`, a string alone is taken as a list of one); `what` and
        `example` word the fix when it is something else."""
        section = self.table(table)
        full = f"{table}.{key}"
        self.used.add(full)
        raw = section.get(key, default)
        if one_alone and isinstance(raw, str):
            raw = [raw]
        if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
            self.problems.append(
                Problem(full, f"expected a list of {what}, found {raw!r}", f"e.g. {key} = {example}")
            )
            return []
        return raw

    def listen(self, table: str, key: str, default: tuple[str, ...]) -> tuple[ListenAddress, ...]:
        addresses = []
        for item in self.strings(
            table, key, list(default), "host:port", '["127.0.0.1:2525"]', one_alone=True
        ):
            try:
                addresses.append(parse_listen(item))
            except ValueError as error:
                self.problems.append(
                    Problem(f"{table}.{key}", str(error), 'write "127.0.0.1:2525" or "[::1]:2525"')
                )
        return tuple(addresses)

    def addresses(self, table: str, key: str) -> tuple[str, ...]:
        """A list of IP addresses, each checked and written in its compressed form."""
        found = []
        for item in self.strings(table, key, [], "IP addresses", '["203.0.113.25"]'):
            try:
                found.append(str(ipaddress.ip_address(item.strip())))
            except ValueError:
                self.problems.append(
                    Problem(
                        f"{table}.{key}",
                        f"{item!r} is not an IP address",
                        'write "203.0.113.25" or "2001:db8::25"',
                    )
                )
        return tuple(found)

    def dataclass_table(self, table: str, cls: type[T]) -> T:
        default = cls()
        values = {}
        for item in dataclasses.fields(cls):  # type: ignore[arg-type]
            current = getattr(default, item.name)
            values[item.name] = self.get(
                table,
                item.name,
                type(current),
                current,
                _positive if isinstance(current, int | float) else None,
            )
        return cls(**values)

    def unknown_keys(self) -> None:
        def walk(prefix: str, table: dict[str, Any]) -> None:
            for key, value in table.items():
                full = f"{prefix}{key}"
                if isinstance(value, dict) and full in self.used:
                    walk(full + ".", value)
                elif full not in self.used:
                    known = sorted(
                        k.rsplit(".", 1)[-1]
                        for k in self.used
                        if k.startswith(prefix) and k.count(".") == prefix.count(".")
                    )
                    self.problems.append(
                        Problem(
                            full, "unknown key", f"remove it or use one of: {', '.join(known) or '(none)'}"
                        )
                    )

        walk("", self.data)


def _positive(value: int | float) -> str | None:
    return None if value > 0 else "must be greater than 0"


def _bare_lf(value: str) -> str | None:
    return None if value in ("reject", "normalize") else 'must be "reject" or "normalize"'


def _limit_problems(limits: SmtpLimits) -> list[tuple[str, str, str]]:
    """(key, complaint, fix) for SMTP limits that are each valid alone but not as a set."""
    found = []
    if limits.bare_lf not in ("reject", "normalize"):
        found.append(("bare_lf", _bare_lf(limits.bare_lf) or "", 'use "reject"'))
    if limits.nul not in ("reject", "strip"):
        found.append(("nul", 'must be "reject" or "strip"', 'use "reject"'))
    if not 8 <= limits.ipv4_prefix <= 32:
        found.append(("ipv4_prefix", "must be a prefix length from 8 to 32", "use 24 (or 32: per address)"))
    if not 16 <= limits.ipv6_prefix <= 128:
        found.append(("ipv6_prefix", "must be a prefix length from 16 to 128", "use 64"))
    if limits.reserved_connections >= limits.max_connections:
        found.append(("reserved_connections", "must be less than max_connections", "use a tenth of it"))
    if limits.refusal_slowdown >= limits.max_refused_recipients:
        found.append(
            (
                "refusal_slowdown",
                "must be less than max_refused_recipients",
                "use half of max_refused_recipients",
            )
        )
    return found


def _sts_mode(value: str) -> str | None:
    return None if value in ("testing", "enforce") else 'must be "testing" or "enforce"'


def _address(value: str) -> str | None:
    local, at, domain = value.rpartition("@")
    if not value or (at and local and "." in domain and " " not in value):
        return None
    return 'must be an address hosted here, e.g. "postmaster@contoso.com", or "" for postmaster@<domain>'


def _level(value: str) -> str | None:
    return None if value in ("debug", "info", "warning", "error") else "must be debug, info, warning or error"


def find_config(explicit: str | None) -> Path | None:
    """The config file named by `-c`, else by $POSTROOM_CONFIG; None when neither is set."""
    chosen = explicit or os.environ.get(CONFIG_ENV)
    return Path(chosen) if chosen else None


def load_settings(path: Path) -> Settings:
    """Read and check `path`; raises `ConfigError` listing every problem."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ConfigError(
            path,
            [Problem("(file)", f"cannot read it: {error.strerror}", "create it with `postroom init DIR`")],
        ) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(
            path, [Problem("(syntax)", str(error), "fix the TOML syntax at that line")]
        ) from None
    base = path.parent.resolve()
    reader = _Reader(data)

    def relative(value: str) -> Path:
        candidate = Path(value).expanduser()
        return candidate if candidate.is_absolute() else base / candidate

    data_dir = relative(reader.get("node", "data_dir", str, "."))
    log_level = reader.get("node", "log_level", str, "info", _level)
    drain_seconds = reader.get("node", "drain_seconds", float, 30.0, _positive)
    service = ServiceSettings(
        domain=reader.get("service", "domain", str, ServiceSettings().domain),
        hostname=reader.get("service", "hostname", str, ServiceSettings().hostname),
        mx_suffix=reader.get("service", "mx_suffix", str, ""),
        spf_host=reader.get("service", "spf_host", str, ""),
        addresses=reader.addresses("service", "addresses"),
        mta_sts_mode=reader.get("service", "mta_sts_mode", str, "testing", _sts_mode),
        postmaster=reader.get("service", "postmaster", str, "", _address),
    )
    database = DatabaseSettings(url=reader.get("database", "url", str, ""))
    dns = DnsSettings(
        nameservers=reader.listen("dns", "nameservers", ()),
        timeout=reader.get("dns", "timeout", float, DnsSettings().timeout, _positive),
        cache_size=reader.get("dns", "cache_size", int, DnsSettings().cache_size, _positive),
    )
    tls = TlsSettings(
        certificate=relative(reader.get("tls", "certificate", str, "tls/cert.pem")),
        key=relative(reader.get("tls", "key", str, "tls/key.pem")),
    )
    listeners = {}
    for name, port in (("mx", 2525), ("submission", 2587)):
        limits = reader.dataclass_table(f"{name}.limits", SmtpLimits)
        for key, complaint, fix in _limit_problems(limits):
            reader.problems.append(Problem(f"{name}.limits.{key}", complaint, fix))
        listeners[name] = ListenerSettings(
            listen=reader.listen(name, "listen", (f"127.0.0.1:{port}",)), limits=limits
        )
    settings = Settings(
        source=path.resolve(),
        data_dir=data_dir,
        service=service,
        database=database,
        dns=dns,
        tls=tls,
        mx=listeners["mx"],
        submission=listeners["submission"],
        imap_listen=reader.listen("imap", "listen", ("127.0.0.1:2143",)),
        admin_listen=reader.listen("admin", "listen", ("127.0.0.1:8080",)),
        queue=reader.dataclass_table("queue", QueueSettings),
        routing=reader.dataclass_table("routing", RoutingSettings),
        trace=reader.dataclass_table("trace", TraceSettings),
        log_level=log_level,
        drain_seconds=drain_seconds,
        admin_tls=reader.get("admin", "tls", bool, False),
    )
    names = [("service.domain", service.domain), ("service.hostname", service.hostname)]
    names += [
        (key, value)
        for key, value in (("service.mx_suffix", service.mx_suffix), ("service.spf_host", service.spf_host))
        if value
    ]
    for key, value in names:
        if not value or " " in value or "." not in value:
            reader.problems.append(
                Problem(key, f"{value!r} is not a fully qualified domain name", 'e.g. "mail.example.net"')
            )
    reader.unknown_keys()
    if reader.problems:
        raise ConfigError(path, reader.problems)
    return settings


def render_config(
    *,
    data_dir: str,
    service_domain: str,
    hostname: str,
    mx_listen: str,
    submission_listen: str,
    imap_listen: str,
    admin_listen: str,
    nameservers: list[str],
) -> str:
    """The text of a new `postroom.toml`, with every section present and commented."""
    names = ", ".join(f'"{n}"' for n in nameservers)
    return f"""# Postroom node configuration. Every key is documented in docs/configuration.md.

[node]
data_dir = "{data_dir}"        # database, blobs and TLS files; relative to this file
log_level = "info"
drain_seconds = 30.0           # at stop, transactions in flight get this long to finish

[service]
domain = "{service_domain}"    # tenants' default domains are <tenant>.{service_domain}
hostname = "{hostname}"        # this node's name in greetings and Received headers
mx_suffix = ""                 # customers' MX: <domainKey>.<mx_suffix>; empty: mail.protection.<domain>
spf_host = ""                  # customers' SPF includes it; empty: spf.protection.<domain>
addresses = []                 # the nodes' public IPs: `postroom service records` publishes them
mta_sts_mode = "testing"       # MTA-STS policy mode for customers' domains: testing or enforce

[database]
url = ""                       # empty: SQLite in the data directory; or postgresql+psycopg://...

[dns]
nameservers = [{names}]        # host:port; empty: the system's resolvers
timeout = 5.0

[tls]
certificate = "tls/cert.pem"
key = "tls/key.pem"

[mx]
listen = ["{mx_listen}"]

[mx.limits]
max_message_size = 36700160
max_recipients = 500
max_command_line = 2048
max_data_line = 8192
max_errors = 10
max_refused_recipients = 20
refusal_slowdown = 10
refusal_delay = 1.0
max_junk_commands = 100
command_timeout = 300.0
data_timeout = 600.0
max_session_time = 1800.0
min_data_rate = 1024
data_rate_window = 30.0
data_rate_grace = 30.0
max_connections = 1000
max_connections_per_ip = 50
max_connections_per_prefix = 100
ipv4_prefix = 24
ipv6_prefix = 64
reserved_connections = 100
busy_prefix_connections = 10
spool_threshold = 1048576
memory_budget = 268435456
bare_lf = "reject"
nul = "reject"

[submission]
listen = ["{submission_listen}"]

[imap]
listen = ["{imap_listen}"]

[admin]
listen = ["{admin_listen}"]
tls = false                    # true: HTTPS with [tls]; false: HTTP for a reverse proxy that holds TLS

[queue]
commit_batch_max = 256
delivery_batch_max = 256
lease_seconds = 300.0
retry_interval = 300.0
max_retry_interval = 3600.0
message_expiration = 172800.0
"""
