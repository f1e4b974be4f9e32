"""Setting up a node: `postroom init DIR` writes the config, the data directory, the database and a
self-signed TLS certificate for the service's host names.

Nothing is overwritten: an existing config file makes `init` refuse, saying so. The config file is
rendered from the settings' defaults with `init`'s choices (`render_config`), so it holds every key.
The certificate is self-signed (2048-bit RSA, one year) for the node's host name, the service domain
and the MX host pattern, so STARTTLS works from the first start; replace it with a real one by
pointing `[tls] certificate/key` at it.

Failure: `init` is all or nothing. Options are checked before anything is written; a failure while
writing (a path that cannot be created, a full disk) removes everything `init` made, the directory
itself when `init` created it, and raises `SetupError` whose one-line message names the path or the
option and what to do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import ipaddress
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import tomli_w
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from postroom.app.node import App
from postroom.config import ListenAddress, Settings, config_document, load_settings, parse_listen

_DEFAULTS = Settings(source=Path("postroom.toml"))


# Comments for the keys whose meaning is not plain from the name; every key is in docs/configuration.md.
_COMMENTS = {
    "node.data_dir": "database, blobs and TLS files; relative to this file",
    "node.blob_store": '"files" (under blob_dir) or "database" (nodes that share only PostgreSQL)',
    "service.domain": "tenants' default domains are <tenant>.<domain>",
    "service.hostname": "this node's name in greetings and Received headers",
    "service.mx_suffix": "customers' MX: <domainKey>.<mx_suffix>; empty: mail.protection.<domain>",
    "service.spf_host": "customers' SPF includes it; empty: spf.protection.<domain>",
    "service.addresses": "the nodes' public IPs: `postroom service records` publishes them",
    "service.mta_sts_mode": "MTA-STS policy mode for customers' domains: testing or enforce",
    "service.srs_domain": "domain of SRS-rewritten senders of forwarded mail; empty: the service domain",
    "service.srs_secret_file": "SRS key file; empty: srs.key in the data directory (made at first use)",
    "service.srs_max_age_days": "days a rewritten sender takes bounces",
    "database.url": "empty: SQLite in the data directory; or postgresql+psycopg://...",
    "dns.nameservers": 'host:port, e.g. ["127.0.0.1:5353"]; empty: the system\'s resolvers',
    "mx.listen": "host:port; port 0 picks a free port",
    "admin.tls": "true: HTTPS with [tls]; false: HTTP for a reverse proxy that holds TLS",
    "clients.imap_host": "the IMAP name mail clients are told (autoconfig); empty: [service] hostname",
    "clients.submission_host": "the submission name mail clients are told; empty: [service] hostname",
    "protection.enabled": "the filtering stack on every message; false only for a lab",
    "protection.spam_engine": '"builtin" or "rspamd" (rspamd_url, rspamd_controller_url)',
    "protection.malware_engine": '"builtin" or "clamd" (clamd_socket: a Unix path or host:port)',
    "protection.engine_unavailable": '"defer" (451 4.7.0) or "deliver" (stamped: not scanned)',
    "protection.ip_allow": 'addresses, a-b ranges, CIDR /24-/32, e.g. ["192.0.2.0/24"]',
    "protection.dnsbl": 'e.g. ["zen.example.org=127.0.0.2-127.0.0.11"]',
}


def render_config(settings: Settings) -> str:
    """The text of a `postroom.toml` that loads back to `settings` (paths relative to the file's
    directory stay relative): every key, with a comment where the name does not say enough."""
    lines = [
        "# Postroom node configuration: every key with its value (the defaults unless `postroom init`",
        "# was told otherwise). Every key is documented in docs/configuration.md.",
        "",
    ]
    table = ""
    for line in tomli_w.dumps(config_document(settings)).splitlines():
        if line.startswith("["):
            table = line.strip("[]")
        key = line.partition(" = ")[0]
        comment = _COMMENTS.get(f"{table}.{key}") if " = " in line else None
        lines.append(f"{line}  # {comment}" if comment else line)
    return "\n".join(lines) + "\n"


class SetupError(Exception):
    """`init` cannot proceed; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class InitOptions:
    """`init`'s choices; a listen address left None keeps the settings' default."""

    service_domain: str = _DEFAULTS.service.domain
    hostname: str | None = None
    mx_listen: str | None = None
    submission_listen: str | None = None
    submission_tls_listen: str | None = None
    imap_listen: str | None = None
    imap_tls_listen: str | None = None
    admin_listen: str | None = None
    nameservers: tuple[str, ...] = ()


def _listen(option: str, text: str | None, default: tuple[ListenAddress, ...]) -> tuple[ListenAddress, ...]:
    if text is None:
        return default
    try:
        return (parse_listen(text),)
    except ValueError as error:
        raise SetupError(f"--{option}: {error}; write it like 127.0.0.1:2525 or [::1]:2525") from None


def initial_settings(config_path: Path, options: InitOptions) -> Settings:
    """The settings `init` writes: the defaults with `options` applied (paths relative to the file)."""
    hostname = options.hostname or f"mx.{options.service_domain}"
    nameservers = tuple(
        address for text in options.nameservers for address in _listen("nameserver", text, ())
    )
    return dataclasses.replace(
        _DEFAULTS,
        source=config_path,
        service=dataclasses.replace(_DEFAULTS.service, domain=options.service_domain, hostname=hostname),
        dns=dataclasses.replace(_DEFAULTS.dns, nameservers=nameservers),
        mx=dataclasses.replace(
            _DEFAULTS.mx, listen=_listen("mx-listen", options.mx_listen, _DEFAULTS.mx.listen)
        ),
        submission=dataclasses.replace(
            _DEFAULTS.submission,
            listen=_listen("submission-listen", options.submission_listen, _DEFAULTS.submission.listen),
            tls_listen=_listen(
                "submission-tls-listen", options.submission_tls_listen, _DEFAULTS.submission.tls_listen
            ),
        ),
        imap=dataclasses.replace(
            _DEFAULTS.imap,
            listen=_listen("imap-listen", options.imap_listen, _DEFAULTS.imap.listen),
            tls_listen=_listen("imap-tls-listen", options.imap_tls_listen, _DEFAULTS.imap.tls_listen),
        ),
        admin=dataclasses.replace(
            _DEFAULTS.admin, listen=_listen("admin-listen", options.admin_listen, _DEFAULTS.admin.listen)
        ),
    )


def init_node(directory: Path, options: InitOptions) -> Settings:
    """Create `directory/postroom.toml`, the TLS files and the database; returns the settings read back.

    All or nothing (see the module's Failure paragraph); a bad option raises `SetupError` and a
    config the loader refuses raises its `ConfigError`, both before anything is left behind."""
    directory = directory.absolute()
    config_path = directory / "postroom.toml"
    if config_path.exists():
        raise SetupError(
            f"{config_path} already exists; use it with `postroom -c {config_path} serve` or pick another DIR"
        )
    if directory.exists() and not directory.is_dir():
        raise SetupError(f"{directory} is a file, not a directory; pick another DIR")
    text = render_config(initial_settings(config_path, options))
    # What to remove on failure: the topmost directory init creates, or else the entries it adds.
    created_root = next((p for p in reversed([directory, *directory.parents]) if not p.exists()), None)
    before = set(directory.iterdir()) if created_root is None else set()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        config_path.write_text(text)
        settings = load_settings(config_path)
        names = [settings.service.hostname, settings.service.domain]
        names += [f"*.{settings.service.mx_host_suffix}", "localhost"]
        write_self_signed(settings.tls.certificate, settings.tls.key, names)
        App.open(settings).close()  # creates the database and the blob store
        return settings
    except BaseException as error:
        if created_root is not None:
            shutil.rmtree(created_root, ignore_errors=True)
        else:
            for path in set(directory.iterdir()) - before:
                with contextlib.suppress(OSError):
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
        if isinstance(error, OSError):
            where = error.filename or directory
            raise SetupError(
                f"cannot create the node in {directory}: {where}: {error.strerror or error}; "
                "pick a DIR you can write to (nothing was written)"
            ) from None
        raise


def write_self_signed(certificate: Path, key: Path, names: list[str]) -> None:
    certificate.parent.mkdir(parents=True, exist_ok=True)
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.UTC)
    alternative: list[x509.GeneralName] = [x509.DNSName(name) for name in names]
    alternative.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(alternative), critical=False)
        .sign(private_key, hashes.SHA256())
    )
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(
            private_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    certificate.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
