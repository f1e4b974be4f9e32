"""Reading `postroom.toml` into `Settings`: every error at once, each with its file, key and fix.

The file is parsed once at start. Unknown keys are errors (a misspelt limit must not silently keep
its default); every value is checked for type and range; relative paths are relative to the file's
directory. `config_document` is the other direction: settings as the tables of a file that loads back
to them (`postroom init` writes it). `ConfigError` carries all the problems found; its message is what
the CLI prints (one line for one problem, a line each for several).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from postroom.config.settings import (
    ClientSettings,
    ImapSettings,
    ListenAddress,
    Network,
    ProtectionSettings,
    Settings,
    SmtpLimits,
    SubmissionSettings,
    TlsSettings,
)
from postroom.model.ipfilter import Blocklist, IpList, IpListError

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
        if len(problems) == 1:
            super().__init__(f"{path}: {problems[0]}")  # one problem, one line
            return
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

    def seconds(self, table: str, key: str, default: tuple[float, ...]) -> tuple[float, ...]:
        """A non-empty list of positive numbers of seconds."""
        section = self.table(table)
        full = f"{table}.{key}"
        self.used.add(full)
        raw = section.get(key, list(default))
        if (
            not isinstance(raw, list)
            or not raw
            or not all(isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in raw)
        ):
            shown = ", ".join(f"{v:g}" for v in default)
            self.problems.append(
                Problem(
                    full, f"expected a list of positive seconds, found {raw!r}", f"e.g. {key} = [{shown}]"
                )
            )
            return default
        return tuple(float(v) for v in raw)

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

    def networks(
        self, table: str, key: str, default: tuple[Network, ...] = (), *, strict: bool = False
    ) -> tuple[Network, ...]:
        """A list of IP networks in CIDR notation (an address alone is a network of one). `strict`: a
        network with host bits set is an error (a trust list should say exactly what it means)."""
        found = []
        example = '["10.0.0.0/8", "127.0.0.1"]' if strict else '["10.0.0.0/8"]'
        kind = "addresses or networks" if strict else "IP networks"
        for item in self.strings(table, key, [str(n) for n in default], kind, example):
            try:
                found.append(ipaddress.ip_network(item.strip(), strict=strict))
            except ValueError as error:
                complaint, fix = (
                    (
                        f"{item!r} is not an IP address or network ({error})",
                        'write an address, "10.0.0.5", or a network with its host bits zero, "10.0.0.0/8"',
                    )
                    if strict
                    else (
                        f"{item!r} is not an IP network",
                        'write "192.0.2.0/24", "2001:db8::/32" or an address alone',
                    )
                )
                self.problems.append(Problem(f"{table}.{key}", complaint, fix))
        return tuple(found)

    def strict_networks(self, table: str, key: str) -> tuple[str, ...]:
        """`networks(strict=True)`, each normalized as text ("127.0.0.1/32")."""
        return tuple(str(network) for network in self.networks(table, key, strict=True))

    def proxy_problems(self, table: str, proxy_protocol: bool, trusted: tuple[str, ...]) -> None:
        """A listener that takes PROXY headers from no one would refuse its balancer's every connection."""
        if (
            proxy_protocol
            and not trusted
            and f"{table}.trusted_proxies" not in {p.key for p in self.problems}
        ):
            self.problems.append(
                Problem(
                    f"{table}.trusted_proxies",
                    "is empty while proxy_protocol = true",
                    'list the load balancers\' addresses, e.g. trusted_proxies = ["10.0.0.0/8"], '
                    "or set proxy_protocol = false",
                )
            )

    def dataclass_table(
        self,
        table: str,
        default: T,
        checks: dict[str, Callable[[Any], str | None]] | None = None,
        **given: Any,
    ) -> T:
        """Read every field of the dataclass value `default` from `table`, each falling back to its default:
        by the default's type, numbers checked to be positive unless `checks` names a check; fields in
        `given` were read by the caller (lists, paths)."""
        values = dict(given)
        for item in dataclasses.fields(default):  # type: ignore[arg-type]
            if item.name in given:
                continue
            current = getattr(default, item.name)
            check = (checks or {}).get(item.name)
            if check is None and isinstance(current, int | float) and not isinstance(current, bool):
                check = _positive
            values[item.name] = self.get(table, item.name, type(current), current, check)
        return dataclasses.replace(default, **values)  # type: ignore[type-var]

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


_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_HOST_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*", re.ASCII | re.IGNORECASE)


def _positive(value: int | float) -> str | None:
    return None if value > 0 else "must be greater than 0"


def _bare_lf(value: str) -> str | None:
    return None if value in ("reject", "normalize") else 'must be "reject" or "normalize"'


def _nul(value: str) -> str | None:
    return None if value in ("reject", "strip") else 'must be "reject" or "strip"'


def _limit_problems(limits: SmtpLimits) -> list[tuple[str, str, str]]:
    """(key, complaint, fix) for SMTP limits that are each valid alone but not as a set."""
    found = []
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


def _port(value: int) -> str | None:
    return None if 1 <= value <= 65535 else "must be a port number from 1 to 65535"


def _host_name(value: str) -> str | None:
    if not value or ("." in value and " " not in value and value.isascii()):
        return None
    return 'must be a fully qualified host name, e.g. "mail.example.net", or "" for [service] hostname'


def _optional_path(relative: Callable[[str], Path], value: str) -> str:
    """A path setting where "" means none: kept "", else made absolute like the other paths."""
    return str(relative(value)) if value else ""


def _path_or_none(relative: Callable[[str], Path], value: str) -> Path | None:
    """A path setting where "" means the default: None, else made absolute like the other paths."""
    return relative(value) if value else None


def _database_url(value: str) -> str | None:
    if not value or value.startswith(("sqlite:///", "postgresql+psycopg://")):
        return None
    return 'is not a database Postroom runs on: use "postgresql+psycopg://USER@HOST/DB", or "" for SQLite'


def _sts_mode(value: str) -> str | None:
    return None if value in ("testing", "enforce") else 'must be "testing" or "enforce"'


def _address(value: str) -> str | None:
    local, at, domain = value.rpartition("@")
    if not value or (at and local and "." in domain and " " not in value):
        return None
    return 'must be an address hosted here, e.g. "postmaster@contoso.com", or "" for postmaster@<domain>'


def _optional_domain(value: str) -> str | None:
    if not value:
        return None
    if " " in value or "." not in value or "@" in value:
        return f'{value!r} is not a fully qualified domain name: e.g. "srs.example.net" ("": service domain)'
    return None


def _workers(value: int) -> str | None:
    return None if 0 <= value <= 256 else "must be from 0 (one per core) to 256"


def _inline_limit(value: int) -> str | None:
    return None if 0 <= value <= 1_048_576 else "must be from 0 (never) to 1048576 (1 MiB)"


def _blob_store(value: str) -> str | None:
    return None if value in ("files", "database") else 'must be "files" or "database"'


def _level(value: str) -> str | None:
    return None if value in ("debug", "info", "warning", "error") else "must be debug, info, warning or error"


def _submission(reader: _Reader, default: SubmissionSettings, limits: SmtpLimits) -> SubmissionSettings:
    """`[submission]`: its listeners, limits, and the sending and login limits that go together."""
    table = "submission"
    settings = reader.dataclass_table(
        table,
        default,
        listen=reader.listen(table, "listen", tuple(map(str, default.listen))),
        tls_listen=reader.listen(table, "tls_listen", tuple(map(str, default.tls_listen))),
        limits=limits,
        trusted_proxies=reader.strict_networks(table, "trusted_proxies"),
    )
    reader.proxy_problems(table, settings.proxy_protocol, settings.trusted_proxies)
    found = []
    if settings.max_recipients > limits.max_recipients:
        found.append(("max_recipients", "is more than submission.limits.max_recipients", "lower it"))
    if settings.max_send_size > limits.max_message_size:
        found.append(("max_send_size", "is more than submission.limits.max_message_size", "lower it"))
    if settings.auth_failures_before_disconnect <= settings.auth_failures_before_throttle:
        found.append(
            (
                "auth_failures_before_disconnect",
                "must be more than auth_failures_before_throttle",
                "use twice auth_failures_before_throttle",
            )
        )
    reader.problems += [Problem(f"{table}.{key}", complaint, fix) for key, complaint, fix in found]
    return settings


def _clients(reader: _Reader, default: ClientSettings) -> ClientSettings:
    """`[clients]`: the public names and ports mail clients are told; each pair offers at least one."""
    table = "clients"
    settings = reader.dataclass_table(
        table,
        default,
        {
            "imap_host": _client_host,
            "submission_host": _client_host,
            **dict.fromkeys(("imap_port", "imaps_port", "submission_port", "submissions_port"), _port_or_off),
        },
    )
    for first, second in (("imaps_port", "imap_port"), ("submissions_port", "submission_port")):
        if not getattr(settings, first) and not getattr(settings, second):
            reader.problems.append(
                Problem(f"{table}.{second}", f"is 0 while {first} is 0 too", "offer at least one of the two")
            )
    return settings


def _client_host(value: str) -> str | None:
    if not value or (len(value) <= 253 and "." in value and _HOST_NAME.fullmatch(value)):
        return None
    return 'must be a fully qualified host name, e.g. "imap.example.net", or "" for [service] hostname'


def _port_or_off(value: int) -> str | None:
    return None if 0 <= value <= 65535 else "must be a port number from 1 to 65535, or 0: not offered"


def _imap(reader: _Reader, default: ImapSettings) -> ImapSettings:
    """`[imap]`: its two listeners, its limits and the login limits that go together."""
    table = "imap"
    settings = reader.dataclass_table(
        table,
        default,
        listen=reader.listen(table, "listen", tuple(map(str, default.listen))),
        tls_listen=reader.listen(table, "tls_listen", tuple(map(str, default.tls_listen))),
    )
    found = []
    if settings.auth_failures_before_disconnect <= settings.auth_failures_before_throttle:
        found.append(
            (
                "auth_failures_before_disconnect",
                "must be more than auth_failures_before_throttle",
                "use twice auth_failures_before_throttle",
            )
        )
    if settings.idle_timeout < 1800.0:
        found.append(("idle_timeout", "must be at least 1800 (RFC 3501 §5.4: 30 minutes)", "raise it"))
    reader.problems += [Problem(f"{table}.{key}", complaint, fix) for key, complaint, fix in found]
    return settings


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

    defaults = Settings(source=path.resolve())
    service = reader.dataclass_table(
        "service",
        defaults.service,
        {"mta_sts_mode": _sts_mode, "postmaster": _address, "srs_domain": _optional_domain},
        addresses=reader.addresses("service", "addresses"),
    )
    srs_file = reader.get("service", "srs_secret_file", str, defaults.service.srs_secret_file)
    service = dataclasses.replace(service, srs_secret_file=str(relative(srs_file)) if srs_file else "")
    tls = defaults.tls
    limits = {
        name: reader.dataclass_table(f"{name}.limits", default, {"bare_lf": _bare_lf, "nul": _nul})
        for name, default in (("mx", defaults.mx.limits), ("submission", defaults.submission.limits))
    }
    delivery = reader.dataclass_table(
        "delivery",
        defaults.delivery,
        {"smtp_port": _port, "helo_name": _host_name},
        tls_ca_file=_optional_path(relative, reader.get("delivery", "tls_ca_file", str, "")),
    )
    for name, listener_limits in limits.items():
        for key, complaint, fix in _limit_problems(listener_limits):
            reader.problems.append(Problem(f"{name}.limits.{key}", complaint, fix))
    mx = reader.dataclass_table(
        "mx",
        defaults.mx,
        listen=reader.listen("mx", "listen", tuple(map(str, defaults.mx.listen))),
        limits=limits["mx"],
        trusted_proxies=reader.strict_networks("mx", "trusted_proxies"),
    )
    reader.proxy_problems("mx", mx.proxy_protocol, mx.trusted_proxies)
    submission = _submission(reader, defaults.submission, limits["submission"])
    settings = Settings(
        source=defaults.source,
        data_dir=relative(reader.get("node", "data_dir", str, str(defaults.data_dir))),
        service=service,
        database=reader.dataclass_table("database", defaults.database, {"url": _database_url}),
        dns=reader.dataclass_table(
            "dns",
            defaults.dns,
            nameservers=reader.listen("dns", "nameservers", tuple(map(str, defaults.dns.nameservers))),
        ),
        tls=TlsSettings(
            certificate=relative(reader.get("tls", "certificate", str, str(tls.certificate))),
            key=relative(reader.get("tls", "key", str, str(tls.key))),
            request_client_certificate=reader.get(
                "tls", "request_client_certificate", bool, tls.request_client_certificate
            ),
            client_ca_file=_optional_path(relative, reader.get("tls", "client_ca_file", str, "")),
        ),
        mx=mx,
        submission=submission,
        imap=_imap(reader, defaults.imap),
        admin=reader.dataclass_table(
            "admin",
            defaults.admin,
            listen=reader.listen("admin", "listen", tuple(map(str, defaults.admin.listen))),
            limits=reader.dataclass_table("admin.limits", defaults.admin.limits),
            metrics_allow=reader.networks("admin", "metrics_allow", defaults.admin.metrics_allow),
        ),
        clients=_clients(reader, defaults.clients),
        queue=reader.dataclass_table(
            "queue",
            defaults.queue,
            retry_schedule=reader.seconds("queue", "retry_schedule", defaults.queue.retry_schedule),
        ),
        delivery=delivery,
        passwords=reader.dataclass_table("passwords", defaults.passwords),
        routing=reader.dataclass_table("routing", defaults.routing),
        trace=reader.dataclass_table("trace", defaults.trace),
        mta_sts=reader.dataclass_table(
            "mta_sts",
            defaults.mta_sts,
            {"policy_port": _port},
            ca_file=_optional_path(relative, reader.get("mta_sts", "ca_file", str, defaults.mta_sts.ca_file)),
        ),
        protection=_protection(reader, defaults.protection),
        log_level=reader.get("node", "log_level", str, defaults.log_level, _level),
        drain_seconds=reader.get("node", "drain_seconds", float, defaults.drain_seconds, _positive),
        memory_budget=reader.get("node", "memory_budget", int, defaults.memory_budget, _positive),
        workers=reader.get("node", "workers", int, defaults.workers, _workers),
        name=reader.get("node", "name", str, defaults.name),
        blob_root=_path_or_none(relative, reader.get("node", "blob_dir", str, "")),
        heartbeat_seconds=reader.get(
            "node", "heartbeat_seconds", float, defaults.heartbeat_seconds, _positive
        ),
        blob_store=reader.get("node", "blob_store", str, defaults.blob_store, _blob_store),
        blob_inline_limit=reader.get(
            "node", "blob_inline_limit", int, defaults.blob_inline_limit, _inline_limit
        ),
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
    if settings.passwords.max_length < settings.passwords.min_length:
        reader.problems.append(
            Problem(
                "passwords.max_length", "is shorter than passwords.min_length", "raise it or lower min_length"
            )
        )
    reader.unknown_keys()
    if reader.problems:
        raise ConfigError(path, reader.problems)
    return settings


def _protection(reader: _Reader, default: ProtectionSettings) -> ProtectionSettings:
    """[protection]: the engines by name, the engine-failure policy, the connection filter's IP lists
    and DNS blocklists (every bad entry named, with its fix: `model.ipfilter`)."""
    table = "protection"
    lists = {}
    for key, example in (("ip_allow", '["192.0.2.0/24"]'), ("ip_block", '["198.51.100.7"]')):
        entries = tuple(reader.strings(table, key, [], "IP entries", example))
        try:
            IpList.parse(entries)
        except IpListError as error:
            reader.problems += [Problem(f"{table}.{key}", p.complaint, p.fix) for p in error.problems]
        lists[key] = entries
    zones = tuple(reader.strings(table, "dnsbl", [], "DNS blocklist zones", '["zen.example.org"]'))
    for zone in zones:
        try:
            Blocklist.parse(zone)
        except IpListError as error:
            reader.problems += [Problem(f"{table}.dnsbl", p.complaint, p.fix) for p in error.problems]
    return reader.dataclass_table(
        table,
        default,
        {
            "spam_engine": _one_of("builtin", "rspamd"),
            "malware_engine": _one_of("builtin", "clamd"),
            "engine_unavailable": _one_of("defer", "deliver"),
            "authserv_id": _optional_domain,
        },
        dnsbl=zones,
        **lists,
    )


def _one_of(*choices: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value in choices else f"must be one of: {', '.join(choices)}"

    return check


def _toml(value: Any) -> Any:
    """A settings value as TOML holds it: tables for dataclasses, strings for paths and addresses."""
    if isinstance(value, Path | ListenAddress | ipaddress.IPv4Network | ipaddress.IPv6Network):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {item.name: _toml(getattr(value, item.name)) for item in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_toml(item) for item in value]
    return value


def config_document(settings: Settings) -> dict[str, Any]:
    """`settings` as the tables of `postroom.toml`: every key the loader reads, each with its value."""
    return {
        "node": {
            "data_dir": str(settings.data_dir),
            "log_level": settings.log_level,
            "drain_seconds": settings.drain_seconds,
            "memory_budget": settings.memory_budget,
            "workers": settings.workers,
            "name": settings.name,
            "blob_dir": str(settings.blob_root or ""),
            "heartbeat_seconds": settings.heartbeat_seconds,
            "blob_store": settings.blob_store,
            "blob_inline_limit": settings.blob_inline_limit,
        },
        "service": _toml(settings.service),
        "database": _toml(settings.database),
        "dns": _toml(settings.dns),
        "tls": _toml(settings.tls),
        "mx": _toml(settings.mx),
        "submission": _toml(settings.submission),
        "imap": _toml(settings.imap),
        "admin": _toml(settings.admin),
        "clients": _toml(settings.clients),
        "queue": _toml(settings.queue),
        "delivery": _toml(settings.delivery),
        "passwords": _toml(settings.passwords),
        "routing": _toml(settings.routing),
        "trace": _toml(settings.trace),
        "mta_sts": _toml(settings.mta_sts),
        "protection": _toml(settings.protection),
    }
