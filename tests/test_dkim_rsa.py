"""dkim_rsa: dkimpy signs with OpenSSL, and the signatures are the octets dkimpy's own RSA makes."""

from __future__ import annotations

import base64
import hashlib

import dkim
import dkim.crypto
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from postroom import dkim_rsa

MESSAGE = (
    b"From: ann@contoso.test\r\nTo: bob@fabrikam.test\r\nSubject: hello\r\n"
    b"Message-ID: <1@contoso.test>\r\nDate: Mon, 30 Nov 2026 08:00:00 +0000\r\n\r\nhello\r\n"
)


@pytest.fixture(scope="module")
def pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


@pytest.mark.parametrize("algorithm", ["sha256", "sha1"])
def test_the_signature_is_the_one_dkimpy_makes(pem: bytes, algorithm: str) -> None:
    numbers = dkim.crypto.parse_pem_private_key(pem)
    digest = hashlib.new(algorithm, b"the canonicalized header section")
    assert dkim_rsa.sign(digest, numbers) == bytes(dkim.crypto.RSASSA_PKCS1_v1_5_sign(digest, numbers))


def test_dkimpy_signs_through_it_and_the_signature_verifies(pem: bytes) -> None:
    dkim_rsa.install()
    assert dkim.RSASSA_PKCS1_v1_5_sign is dkim_rsa.sign
    signature = dkim.sign(MESSAGE, b"s1", b"contoso.test", pem)
    public = serialization.load_pem_private_key(pem, None).public_key()
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)
    assert dkim.verify(signature + MESSAGE, dnsfunc=lambda name, timeout=5: record)


def test_a_key_it_cannot_build_falls_back_to_dkimpy(pem: bytes) -> None:
    numbers = dict(dkim.crypto.parse_pem_private_key(pem))
    numbers["coefficient"] = 0  # inconsistent numbers: cryptography refuses them
    digest = hashlib.sha256(b"x")
    dkim_rsa._keys.pop(numbers["modulus"], None)
    assert dkim_rsa.sign(digest, numbers) == bytes(dkim.crypto.RSASSA_PKCS1_v1_5_sign(digest, numbers))
