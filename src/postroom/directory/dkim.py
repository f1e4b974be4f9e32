"""DKIM key pairs for accepted domains: generated here, stored by the directory, published by the tenant
(the record to publish is `postroom.dns.dkim_record`'s to write).

Each domain has two selectors (`DKIM_SELECTORS`), each with its own 2048-bit RSA key pair (spec §1.6):
one is active and signs, the other waits for the next rotation, so a rotation only switches to a key
that has been in DNS all along. The key a rotation retires stays as it is for `RETIRED_KEY_SECONDS`
(its record stays published, so mail signed just before the rotation and still in flight or in
queues elsewhere verifies); after that the retired selector gets a new key, the one to publish before
the next rotation. Keys are made on first use (records asked, a check run, a rotation),
not when the domain is added: a 2048-bit RSA key costs 25-100 ms to make, which a bulk import
of domains that never send should not pay.

The selectors are `postroom1` and `postroom2`, not `selector1`/`selector2`, so a tenant moving from
another hosted service can publish Postroom's keys beside the old ones before switching MX.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

DKIM_SELECTORS = ("postroom1", "postroom2")
DKIM_KEY_BITS = 2048
RETIRED_KEY_SECONDS = 7 * 86_400.0  # a retired key stays (published) this long before it is replaced


@dataclass(frozen=True, slots=True)
class DkimKey:
    """One selector of a domain: its public key (the `p=` tag, base64 DER) and whether it signs."""

    domain: str
    selector: str
    public_key: str
    active: bool
    created_at: float
    retired_at: float | None = None  # set while the selector still holds the key a rotation retired

    @property
    def state(self) -> str:
        """ "signs", "retired" (keep its record published: mail signed with it may be in flight) or
        "next" (publish it: the next rotation signs with it)."""
        return "signs" if self.active else "retired" if self.retired_at is not None else "next"


@dataclass(frozen=True, slots=True)
class DkimKeyPair:
    private_key_pem: str  # PKCS#8, unencrypted: the database is the secret store
    public_key: str  # base64 of the DER SubjectPublicKeyInfo


def generate_key_pair(bits: int = DKIM_KEY_BITS) -> DkimKeyPair:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return DkimKeyPair(private, base64.b64encode(public).decode("ascii"))
