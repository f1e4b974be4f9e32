"""DKIM signing of outbound mail (RFC 6376) with dkimpy: the sending domain's active key, added first.

`sign(octets, signer)` returns the message with one `DKIM-Signature` header field prepended (the rest of
the octets unchanged): rsa-sha256, relaxed/relaxed canonicalization, `d=` the signer's domain, `s=` its
active selector (`Directory.dkim_signing_key`), `t=` the signing time, no `l=` (the whole body is
signed, so nothing can be appended under the signature). The signed header fields are `From` and,
where present, `To`, `Cc`, `Subject`, `Date`, `Message-ID`, `MIME-Version`, `Content-Type`,
`Content-Transfer-Encoding`, `Reply-To`, `In-Reply-To` and `References`, each as many times as it
occurs, and `From` once more (over-signed: a `From` added later breaks the signature, RFC 6376 §8.15).

Failure: a message that cannot be signed raises `NotSigned` (its `reason` says why): no `From` header
field, more than one (RFC 6376 §5.4 and RFC 5322 require exactly one), no header/body boundary a
signer can read, or a key dkimpy cannot use. The caller then sends the message as it was: an unsigned
message is delivered, never lost (DMARC at the destination decides what it is worth).

Signing is CPU work (one RSA signature, a SHA-256 over the body): call it from a worker thread, not the
event loop. Keys are PKCS#8 PEM as the directory stores them; they are converted once to the PKCS#1
form dkimpy reads and kept (a bounded cache keyed by the PEM).

*Security:* the message is our own outbound mail but its content came from a client: dkimpy parses the
header section (bounded by the SMTP limits the message was received under). The private key never
leaves this module; it is not logged and not put in exceptions.
"""

from __future__ import annotations

import functools

import dkim
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from postroom import dkim_rsa
from postroom.model.outbound import DkimSigner

dkim_rsa.install()  # dkimpy's RSA signing is pure Python; OpenSSL's is 19x faster

SIGNED_HEADERS = (
    b"from",
    b"to",
    b"cc",
    b"subject",
    b"date",
    b"message-id",
    b"mime-version",
    b"content-type",
    b"content-transfer-encoding",
    b"reply-to",
    b"in-reply-to",
    b"references",
)


class NotSigned(Exception):
    """The message was not signed; `reason` says why (the caller sends it unsigned)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def sign(octets: bytes, signer: DkimSigner) -> bytes:
    """`octets` with a DKIM-Signature by `signer` first; raises `NotSigned` (see the module docstring)."""
    try:
        headers, _ = dkim.rfc822_parse(octets)
    except dkim.MessageFormatError as error:
        raise NotSigned(f"the header section cannot be read: {error}") from None
    present = [name.lower() for name, _ in headers]
    froms = present.count(b"from")
    if froms != 1:
        raise NotSigned(
            "the message has no From header field"
            if froms == 0
            else "the message has several From header fields"
        )
    include = [name for wanted in SIGNED_HEADERS for name in present if name == wanted] + [b"from"]
    try:
        field = dkim.sign(
            octets,
            signer.selector.encode("ascii"),
            signer.domain.encode("ascii"),
            _pkcs1(signer.private_key_pem),
            canonicalize=(b"relaxed", b"relaxed"),
            signature_algorithm=b"rsa-sha256",
            include_headers=include,
        )
    except (ValueError, UnicodeEncodeError, dkim.DKIMException) as error:
        raise NotSigned(
            f"signing with {signer.selector}._domainkey.{signer.domain} failed: {type(error).__name__}"
        ) from None
    return bytes(field) + octets


@functools.lru_cache(maxsize=256)
def _pkcs1(private_key_pem: str) -> bytes:
    """The key as PKCS#1 `RSA PRIVATE KEY` PEM, which dkimpy reads (the directory stores PKCS#8)."""
    try:
        key = load_pem_private_key(private_key_pem.encode("ascii"), password=None)
    except (ValueError, TypeError, UnicodeEncodeError):
        raise NotSigned("the signing key cannot be read") from None
    if not isinstance(key, RSAPrivateKey):
        raise NotSigned("the signing key is not an RSA key")
    return key.private_bytes(Encoding.PEM, PrivateFormat.TraditionalOpenSSL, NoEncryption())
