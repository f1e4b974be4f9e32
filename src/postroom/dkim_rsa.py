"""RSA signatures for dkimpy made by `cryptography` (OpenSSL) instead of dkimpy's own pure-Python RSA.

dkimpy (1.1) signs RSA-SHA256 with its own `dkim.crypto.RSASSA_PKCS1_v1_5_sign`: the PKCS#1 v1.5
encoding and then the private-key operation as Python big-integer `pow()` calls. That costs about
10.4 ms of CPU for a 2048-bit key on this project's 2-core machine, against 0.55 ms for the same
signature made by OpenSSL through `cryptography` (measured 2026-11-30, 50 signatures each). Every
message Postroom sends out is DKIM-signed (`delivery.dkim_signing`), and one it relays or forwards from
outside is ARC-sealed too (`protection.arc`: two more signatures), so dkimpy's RSA was most of the
CPU of relaying (bench/outbound_relay.py --hybrid4: 31 of 41 ms per message).

`install()` replaces the name `RSASSA_PKCS1_v1_5_sign` in dkimpy's package namespace (where
`DomainSigner.gen_header` looks it up for DKIM-Signature, ARC-Message-Signature and ARC-Seal alike) with
`sign`, which builds the `cryptography` key from the numbers dkimpy parsed (cached per modulus, at most
`MAX_KEYS`) and signs the digest dkimpy computed, pre-hashed. RSASSA-PKCS1-v1_5 is deterministic, so
the signature is the same octets dkimpy's own code makes (the tests compare them); a digest algorithm
other than SHA-256 or SHA-1, or a key `cryptography` refuses, goes to dkimpy's original function.
Verification is untouched (dkimpy's public-key operation is a small exponent, cheap). `install()` is
idempotent; the modules that sign call it at import.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import dkim
import dkim.crypto
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

MAX_KEYS = 256  # signing keys kept built (one per tenant domain that sends); the cache is emptied when full

_ORIGINAL: Callable[[Any, Mapping[str, int]], bytes] = dkim.crypto.RSASSA_PKCS1_v1_5_sign
_ALGORITHMS: dict[str, Callable[[], hashes.HashAlgorithm]] = {"sha256": hashes.SHA256, "sha1": hashes.SHA1}
_keys: dict[int, rsa.RSAPrivateKey] = {}
_lock = threading.Lock()


def sign(digest: Any, private_key: Mapping[str, int]) -> bytes:
    """dkimpy's `RSASSA_PKCS1_v1_5_sign(hash, private_key)`, made by OpenSSL."""
    algorithm = _ALGORITHMS.get(str(getattr(digest, "name", "")).lower())
    key = _key(private_key) if algorithm is not None else None
    if algorithm is None or key is None:
        return _ORIGINAL(digest, private_key)
    return key.sign(digest.digest(), padding.PKCS1v15(), Prehashed(algorithm()))


def _key(numbers: Mapping[str, int]) -> rsa.RSAPrivateKey | None:
    modulus = numbers["modulus"]
    key = _keys.get(modulus)
    if key is not None:
        return key
    try:
        key = rsa.RSAPrivateNumbers(
            p=numbers["prime1"],
            q=numbers["prime2"],
            d=numbers["privateExponent"],
            dmp1=numbers["exponent1"],
            dmq1=numbers["exponent2"],
            iqmp=numbers["coefficient"],
            public_numbers=rsa.RSAPublicNumbers(numbers["publicExponent"], modulus),
        ).private_key()
    except (ValueError, KeyError):
        return None
    with _lock:
        if len(_keys) >= MAX_KEYS:
            _keys.clear()
        _keys[modulus] = key
    return key


def install() -> None:
    """Make dkimpy sign RSA with `sign` (see the module docstring); idempotent."""
    dkim.RSASSA_PKCS1_v1_5_sign = sign
