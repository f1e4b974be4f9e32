"""Setting up a node: `postroom init DIR` writes the config, the data directory, the database and a
self-signed TLS certificate for the service's host names.

Nothing is overwritten: an existing config file makes `init` refuse, saying so. The certificate is
self-signed (2048-bit RSA, one year) for the node's host name, the service domain and the MX host
pattern, so STARTTLS works from the first start; replace it with a real one by pointing
`[tls] certificate/key` at it.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from postroom.config import Settings, load_settings, render_config


class SetupError(Exception):
    """`init` cannot proceed; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class InitOptions:
    service_domain: str = "postroom.test"
    hostname: str | None = None
    mx_listen: str = "127.0.0.1:2525"
    submission_listen: str = "127.0.0.1:2587"
    imap_listen: str = "127.0.0.1:2143"
    admin_listen: str = "127.0.0.1:8080"
    nameservers: tuple[str, ...] = ()


def init_node(directory: Path, options: InitOptions) -> Settings:
    """Create `directory/postroom.toml` and the data directory; returns the settings read back."""
    config_path = directory / "postroom.toml"
    if config_path.exists():
        raise SetupError(
            f"{config_path} already exists; use it with `postroom -c {config_path} serve` or pick another DIR"
        )
    directory.mkdir(parents=True, exist_ok=True)
    hostname = options.hostname or f"mx.{options.service_domain}"
    config_path.write_text(
        render_config(
            data_dir=".",
            service_domain=options.service_domain,
            hostname=hostname,
            mx_listen=options.mx_listen,
            submission_listen=options.submission_listen,
            imap_listen=options.imap_listen,
            admin_listen=options.admin_listen,
            nameservers=list(options.nameservers),
        )
    )
    settings = load_settings(config_path)
    write_self_signed(
        settings.tls.certificate,
        settings.tls.key,
        [hostname, options.service_domain, f"*.mail.protection.{options.service_domain}", "localhost"],
    )
    return settings


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
