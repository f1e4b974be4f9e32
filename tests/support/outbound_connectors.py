"""Outbound connectors for tests, written straight into `outbound_connectors` (the directory's connector
service is built in parallel; the lead may switch these helpers to it). Each write logs a connector
change for the tenant, so caching nodes drop their copy as they would after the service's write.

`TestAuthority` is a throwaway CA for the TLS settings of connectors: server certificates for sinks and
Postfix, and the CA file delivery trusts."""

from __future__ import annotations

import datetime
import json
import ssl
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy import delete, insert, update

from postroom.directory.base import DirectoryChanges, log_changes
from postroom.model.connectors import ConnectorType, OutboundTls
from postroom.storage import Database
from postroom.storage.schema import outbound_connectors

_LISTS = ("recipient_domains", "smart_hosts", "validation_recipients")


def _values(settings: dict[str, object]) -> dict[str, object]:
    values = dict(settings)
    for key in _LISTS:
        if key in values:
            values[key] = json.dumps(list(values[key]))  # type: ignore[call-overload]
    if "tls" in values:
        values["tls"] = OutboundTls(values["tls"]).value
    return values


def add_outbound_connector(
    database: Database,
    tenant_id: int,
    name: str,
    type: ConnectorType = ConnectorType.ON_PREMISES,
    **settings: object,
) -> int:
    """Insert an outbound connector of `tenant_id`; `settings` are OutboundConnector field names."""
    row: dict[str, object] = {
        "tenant_id": tenant_id,
        "name": name,
        "name_key": name.lower(),
        "type": type.value,
        "enabled": True,
        "recipient_domains": [],
        "all_accepted_domains": False,
        "smart_hosts": [],
        "tls": OutboundTls.OPPORTUNISTIC,
        "tls_domain": "",
        "rule_scoped": False,
        "route_all_via_on_premises": False,
        "sender_rewriting": False,
        "validation_recipients": [],
        "comment": "",
        "created_at": time.time(),
    }
    row.update(settings)
    with database.write() as conn:
        connector_id = conn.execute(insert(outbound_connectors).values(**_values(row))).inserted_primary_key
        log_changes(conn, DirectoryChanges(connectors={tenant_id}))
    assert connector_id is not None
    return int(connector_id[0])


def set_outbound_connector(database: Database, tenant_id: int, connector_id: int, **settings: object) -> None:
    with database.write() as conn:
        conn.execute(
            update(outbound_connectors)
            .where(outbound_connectors.c.id == connector_id)
            .values(**_values(dict(settings)))
        )
        log_changes(conn, DirectoryChanges(connectors={tenant_id}))


def remove_outbound_connector(database: Database, tenant_id: int, connector_id: int) -> None:
    with database.write() as conn:
        conn.execute(delete(outbound_connectors).where(outbound_connectors.c.id == connector_id))
        log_changes(conn, DirectoryChanges(connectors={tenant_id}))


class TestAuthority:
    """A certificate authority for connector TLS tests: `ca` is its PEM (what `[delivery] tls_ca_file`
    trusts); `issue` makes a server certificate for some names, signed by it."""

    __test__ = False  # not a test class

    def __init__(self, directory: Path, name: str = "Postroom Test CA") -> None:
        self.directory = directory
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self._certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.ca = directory / "ca.pem"
        self.ca.write_bytes(self._certificate.public_bytes(serialization.Encoding.PEM))

    def issue(self, stem: str, names: list[str]) -> tuple[Path, Path]:
        """(certificate, key) PEM files for `names` (the first is the CN, all are DNS SANs)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self._certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )
        cert_path, key_path = self.directory / f"{stem}.pem", self.directory / f"{stem}.key"
        cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return cert_path, key_path

    def server_context(self, stem: str, names: list[str]) -> ssl.SSLContext:
        """A server-side TLS context presenting a certificate for `names`."""
        certificate, key = self.issue(stem, names)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(certificate, key)
        return context
