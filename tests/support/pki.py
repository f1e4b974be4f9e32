"""A test certificate authority: a CA and the client and server certificates it signs (`cryptography`).

Inbound connectors identify a source by the TLS client certificate it presents (spec §3.4); the node
verifies it against `[tls] client_ca_file`. `TestCa(directory)` writes `ca.pem`; `issue(name,
sans)` writes `<name>.pem` and `<name>.key` (the subject's CN is the first SAN unless `common_name`
says otherwise; `sans=()` gives a certificate with a CN only) and returns their paths.
`untrusted(...)` makes one no CA the node knows vouches for (to the node, as good as self-signed),
the kind a partner may send unannounced.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Issued:
    certificate: Path
    key: Path


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    path.chmod(0o600)


def _name(common_name: str, organization: str = "") -> x509.Name:
    attributes = []
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


class TestCa:
    """A CA in `directory`: `ca.pem` is what the node trusts."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path, name: str = "Postroom Test CA") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._subject = _name(name)
        now = datetime.datetime.now(datetime.UTC)
        self._certificate = (
            x509.CertificateBuilder()
            .subject_name(self._subject)
            .issuer_name(self._subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )
        self.certificate = directory / "ca.pem"
        self.certificate.write_bytes(self._certificate.public_bytes(serialization.Encoding.PEM))

    def issue(
        self,
        name: str,
        sans: tuple[str, ...],
        *,
        common_name: str = "",
        organization: str = "",
        ips: tuple[str, ...] = (),
    ) -> Issued:
        """A certificate for `sans` (DNS names) and `ips` (addresses), good for TLS clients and servers,
        signed by this CA."""
        key = ec.generate_private_key(ec.SECP256R1())
        cn = common_name or (sans[0] if sans else name)
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn, organization))
            .issuer_name(self._subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]),
                critical=False,
            )
        )
        if sans or ips:
            names: list[x509.GeneralName] = [x509.DNSName(s) for s in sans]
            names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        certificate = builder.sign(self._key, hashes.SHA256())
        issued = Issued(self.directory / f"{name}.pem", self.directory / f"{name}.key")
        issued.certificate.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        _write_key(key, issued.key)
        return issued


def untrusted(directory: Path, name: str, sans: tuple[str, ...]) -> Issued:
    """A certificate for `sans` signed by a CA of its own, which nobody trusts."""
    return TestCa(directory / f"{name}-own-ca", name=sans[0]).issue(name, sans)
