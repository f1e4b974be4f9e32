"""Test senders' DKIM keys and signatures, and a forwarder's ARC seal, for the authentication tests.

`rsa_key(domain, selector)` and `ed25519_key(...)` make key pairs whose public half `publish` puts in
a `DnsTestServer` as the `<selector>._domainkey.<domain>` TXT record; `sign` prepends a DKIM-Signature
made by dkimpy, as the sending domain's server would. `seal_as_forwarder` is what an ARC-sealing
forwarder does: it records its Authentication-Results and prepends its ARC set (dkimpy's `arc_sign`).
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass

import dkim
import nacl.signing
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from tests.support.dns_server import DnsTestServer


@dataclass(frozen=True)
class SigningKey:
    domain: str
    selector: str
    algorithm: str  # rsa-sha256 | ed25519-sha256
    private: bytes  # PKCS#1 PEM (RSA) or the base64 seed (Ed25519), as dkimpy takes them
    record: str  # the TXT value to publish

    @property
    def name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"

    def publish(self, server: DnsTestServer) -> None:
        server.remove_records(self.name, "TXT")
        server.add_txt(self.name, self.record)

    def sign(self, message: bytes, *, expires: int | None = None) -> bytes:
        """`message` with this key's DKIM-Signature on top (relaxed/relaxed; with x=`expires` if given)."""
        signer = _Expiring(message) if expires is not None else dkim.DKIM(message)
        signer.expires = expires
        field = signer.sign(
            self.selector.encode(),
            self.domain.encode(),
            self.private,
            signature_algorithm=self.algorithm.encode(),
            canonicalize=(b"relaxed", b"relaxed"),
        )
        return bytes(field) + message

    def pkcs8(self) -> bytes:
        """The RSA private key as the directory stores keys (PKCS#8 PEM)."""
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        key = load_pem_private_key(self.private, password=None)
        return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


class _Expiring(dkim.DKIM):  # type: ignore[misc]
    """dkimpy's signer with an x= tag: dkimpy has no option for it, so its tag list is extended."""

    expires: int | None = None

    def gen_header(self, fields, include_headers, canon_policy, header_name, pk, standardize=False):  # type: ignore[no-untyped-def]
        at = next(i for i, (tag, _) in enumerate(fields) if tag == b"h")
        fields.insert(at, (b"x", str(self.expires).encode()))
        return super().gen_header(fields, include_headers, canon_policy, header_name, pk, standardize)


def rsa_key(domain: str, selector: str = "s1", bits: int = 2048) -> SigningKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private = key.private_bytes(Encoding.PEM, PrivateFormat.TraditionalOpenSSL, NoEncryption())
    public = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return SigningKey(
        domain, selector, "rsa-sha256", private, f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}"
    )


def ed25519_key(domain: str, selector: str = "ed") -> SigningKey:
    key = nacl.signing.SigningKey.generate()
    private = base64.b64encode(bytes(key))
    public = base64.b64encode(bytes(key.verify_key)).decode()
    return SigningKey(domain, selector, "ed25519-sha256", private, f"v=DKIM1; k=ed25519; p={public}")


def seal_as_forwarder(message: bytes, key: SigningKey, authserv_id: str, results: str) -> bytes:
    """`message` as a forwarder sends it on: its Authentication-Results (`results`, the resinfo part,
    e.g. "spf=pass smtp.mailfrom=contoso.com; dkim=pass header.d=contoso.com") and its ARC set on top."""
    recorded = f"Authentication-Results: {authserv_id}; {results}\r\n".encode() + message
    fields = dkim.arc_sign(
        recorded,
        key.selector.encode(),
        key.domain.encode(),
        key.private,
        authserv_id.encode(),
        timestamp=int(time.time()),
    )
    assert fields, "the forwarder's seal was not made"
    return b"".join(bytes(f) for f in fields) + recorded
