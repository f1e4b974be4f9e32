"""DKIM verification (RFC 6376) of every signature on a message, with dkimpy and keys fetched beforehand.

dkimpy asks the DNS synchronously, which an event loop cannot afford. So verification is two steps:

1. `fetch_keys(resolver, names)` asks the async resolver for every `<s>._domainkey.<d>` TXT record the
   message's DKIM-Signature, ARC-Message-Signature and ARC-Seal header fields name (`key_name`), all at
   once, and keeps each answer as a `KeyRecord`: the record, "none" (NXDOMAIN or no TXT) or "could not
   be had now" (a temporary DNS error);
2. `verify_signatures(signer, signatures, keys, now)` runs dkimpy on the message with `Keys.dnsfunc`,
   which answers from those records and never touches the network.

Outcomes of one signature (`DkimVerdict`, RFC 8601 §2.7.1), each with a fixed reason text (nothing
of the message is echoed into a reason, so it is safe in a header comment):

- pass "signature was verified";
- fail "body hash did not verify" / "signature did not verify": the signature was evaluated and the
  message or its header fields do not match it (PERMFAIL of RFC 6376 after the crypto);
- permerror "no key for signature" (RFC 6376 §6.1.2: the key record does not exist), "key revoked"
  (empty p=), "key unusable" (unparseable, unknown k=, or under `MIN_KEY_BITS`), "signature syntax
  error" (tags missing or malformed, d= or s= not a DNS name), "insecure algorithm" (rsa-sha1,
  which RFC 8301 forbids verifiers to accept), "signature expired" (x= is past at
  `now`), "signature from the future" (t= after `now` + `CLOCK_SKEW`);
- temperror "key lookup failed": the key could not be had now (DNS timeout, SERVFAIL): try again later.

Bounds: at most `MAX_SIGNATURES` signatures are verified (RFC 6376 §6.1 lets a verifier limit them);
signatures whose d= aligns with the From domain are tried first, so junk signatures added above a
real one cannot push it out. The others are not reported. CPU: one canonicalization and hash of the
body per canonicalization used (shared by the signatures that use it), one RSA (OpenSSL) or Ed25519
verification per signature, key records parsed once per process (see `OpenSslRsa` below).

*Security:* the signature header fields and the key records are network input. dkimpy parses the
tag lists; d= and s= are checked to be DNS names before they are looked up or reported; a key record
is only parsed by dkimpy. Reasons are fixed strings; the detail of a failure goes to the debug log.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import dkim
import nacl.exceptions
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey, RSAPublicNumbers
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.hazmat.primitives.hashes import SHA256
from dkim.canonicalization import (
    CanonicalizationPolicy,
    InvalidCanonicalizationPolicyError,
    correct_empty_body,
    strip_trailing_lines,
)
from dkim.util import InvalidTagValueList, parse_tag_value

from postroom.dns.resolver import DnsTemporaryError, NxDomain, Resolver
from postroom.model.verdicts import DkimResult, DkimVerdict

log = logging.getLogger(__name__)


class _Quiet(logging.LoggerAdapter):  # type: ignore[type-arg]
    """dkimpy logs every signature that does not verify as an error; here that is a verdict, not a
    fault of the node: its messages go to our debug log."""

    def log(self, level: int, msg: object, *args: object, **kwargs: object) -> None:
        super().log(logging.DEBUG, msg, *args, **kwargs)  # type: ignore[arg-type]


DKIMPY_LOG = _Quiet(logging.getLogger(__name__ + ".dkimpy"), {})

MAX_SIGNATURES = 8  # DKIM-Signature fields verified on one message
MIN_KEY_BITS = 1024  # RSA keys shorter than this are unusable (RFC 8301 §3.2)
CLOCK_SKEW = 36_000  # seconds a t= may lie in the future (dkimpy's own leeway)
DKIM_SIGNATURE = b"dkim-signature"

# A DNS name as a DKIM d= or s= may hold: LDH labels (underscores too, as some selectors have).
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_NAME = re.compile(rf"(?=.{{1,253}}\Z){_LABEL}(?:\.{_LABEL})*")

VERIFIED = "signature was verified"
BODY_HASH = "body hash did not verify"
BAD_SIGNATURE = "signature did not verify"
NO_KEY = "no key for signature"
KEY_REVOKED = "key revoked"
KEY_UNUSABLE = "key unusable"
SYNTAX = "signature syntax error"
EXPIRED = "signature expired"
FUTURE = "signature from the future"
KEY_LOOKUP_FAILED = "key lookup failed"
INSECURE = "insecure algorithm"
NOT_SIGNED = "message not signed"


def dns_name(value: bytes | str) -> str | None:
    """`value` as a lower-case DNS name without the root dot, or None when it is not one."""
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    name = value.strip().lower().rstrip(".")
    return name if _NAME.fullmatch(name) else None


def key_name(tags: dict[bytes, bytes]) -> str | None:
    """`<s>._domainkey.<d>` of a signature's tags, or None when s= or d= is missing or not a DNS name."""
    selector, domain = dns_name(tags.get(b"s", b"")), dns_name(tags.get(b"d", b""))
    if selector is None or domain is None:
        return None
    return f"{selector}._domainkey.{domain}"


def parse_tags(value: bytes) -> dict[bytes, bytes] | None:
    """The tag=value list of a signature header field, or None when it is not one (RFC 6376 §3.2)."""
    try:
        tags: dict[bytes, bytes] = parse_tag_value(value)
    except InvalidTagValueList:
        return None
    return tags


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """The answer for one key name: the TXT record (strings joined), or none, or a temporary failure."""

    data: bytes | None
    temporary: bool = False


class Keys:
    """The key records fetched for one message; `dnsfunc` is the dkimpy DNS seam answering from them."""

    def __init__(self, records: dict[str, KeyRecord]) -> None:
        self.records = records

    def get(self, name: str) -> KeyRecord | None:
        return self.records.get(name)

    def dnsfunc(self, name: bytes, timeout: int = 5) -> bytes | None:
        """dkimpy asks `<s>._domainkey.<d>.`; a name not fetched (or absent) reads as no record."""
        wanted = dns_name(name)
        record = self.records.get(wanted) if wanted is not None else None
        return record.data if record is not None else None


async def fetch_keys(resolver: Resolver, names: Iterable[str]) -> Keys:
    """Every key record in `names`, asked at once through the resolver."""
    unique = sorted(set(names))
    answers = await asyncio.gather(*(_fetch(resolver, name) for name in unique))
    return Keys(dict(zip(unique, answers, strict=True)))


async def _fetch(resolver: Resolver, name: str) -> KeyRecord:
    try:
        records = await resolver.txt(name)
    except NxDomain:
        return KeyRecord(None)
    except DnsTemporaryError as error:
        log.debug("DKIM key %s: %s", name, error)
        return KeyRecord(None, temporary=True)
    if not records:
        return KeyRecord(None)
    # Several TXT records at a key name: the one that holds a key (p=) is the key, as verifiers do.
    keys = [r.data for r in records if b"p=" in r.data]
    return KeyRecord(keys[0] if keys else records[0].data)


@dataclass(frozen=True, slots=True)
class Signature:
    """A DKIM-Signature header field of the message: its position among them and its tags."""

    index: int  # 0: the topmost DKIM-Signature (dkimpy's idx)
    tags: dict[bytes, bytes] | None  # None: not a tag list

    @property
    def domain(self) -> str:
        return (dns_name(self.tags.get(b"d", b"")) or "") if self.tags else ""

    @property
    def selector(self) -> str:
        return (dns_name(self.tags.get(b"s", b"")) or "") if self.tags else ""

    @property
    def algorithm(self) -> str:
        value = self.tags.get(b"a", b"") if self.tags else b""
        return value.decode("ascii", "replace").lower() if re.fullmatch(rb"[A-Za-z0-9-]{1,32}", value) else ""

    @property
    def key_name(self) -> str | None:
        return key_name(self.tags) if self.tags else None


def signatures(headers: Sequence[tuple[bytes, bytes]], aligned: str = "") -> list[Signature]:
    """The DKIM-Signature fields to verify, at most `MAX_SIGNATURES`: those whose d= is `aligned` or
    under it first (the From domain's organizational domain), then the rest, each group top down."""
    found = [
        Signature(index, parse_tags(value))
        for index, value in enumerate(v for name, v in headers if name.lower() == DKIM_SIGNATURE)
    ]
    if aligned:
        found.sort(key=lambda s: not (s.domain == aligned or s.domain.endswith("." + aligned)))
    return found[:MAX_SIGNATURES]


UNSIGNED = (DkimVerdict(DkimResult.NONE, reason=NOT_SIGNED),)  # the verdicts of a message without any


def verify_signatures(
    signer: dkim.DKIM, found: Sequence[Signature], keys: Keys, now: float
) -> tuple[DkimVerdict, ...]:
    """The verdict of each signature in `found`, in header order; a single NONE when there are none.
    `signer` holds the parsed message (dkimpy's `DKIM` with `headers` and `body` set)."""
    if not found:
        return UNSIGNED
    ordered = sorted(found, key=lambda s: s.index)
    return tuple(_verify(signer, signature, keys, now) for signature in ordered)


def _verify(signer: dkim.DKIM, signature: Signature, keys: Keys, now: float) -> DkimVerdict:
    def verdict(result: DkimResult, reason: str) -> DkimVerdict:
        return DkimVerdict(result, signature.domain, signature.selector, signature.algorithm, reason)

    tags, name = signature.tags, signature.key_name
    if tags is None or name is None or not all(t in tags for t in (b"v", b"a", b"b", b"bh", b"h")):
        return verdict(DkimResult.PERMERROR, SYNTAX)
    if tags.get(b"a", b"").strip().lower() == b"rsa-sha1":  # RFC 8301 §3.1: never valid
        return verdict(DkimResult.PERMERROR, INSECURE)
    timing = _timing(tags, now)
    if timing:
        return verdict(DkimResult.PERMERROR, timing)
    record = keys.get(name)
    if record is not None and record.temporary:
        return verdict(DkimResult.TEMPERROR, KEY_LOOKUP_FAILED)
    if record is None or record.data is None:
        return verdict(DkimResult.PERMERROR, NO_KEY)
    try:
        if signer.verify(signature.index, dnsfunc=keys.dnsfunc):
            return verdict(DkimResult.PASS, VERIFIED)
    except dkim.ValidationError as error:
        log.debug("DKIM signature d=%s s=%s: %s", signature.domain, signature.selector, error)
        if str(error).startswith("body hash mismatch"):
            return verdict(DkimResult.FAIL, BODY_HASH)
        return verdict(DkimResult.PERMERROR, SYNTAX)
    except dkim.KeyFormatError as error:  # e.g. a key shorter than MIN_KEY_BITS
        log.debug("DKIM key %s: %s", name, error)
        return verdict(DkimResult.PERMERROR, KEY_UNUSABLE)
    except (dkim.DKIMException, ValueError, TypeError, IndexError) as error:
        log.debug("DKIM signature d=%s s=%s: %s", signature.domain, signature.selector, error)
        return verdict(DkimResult.PERMERROR, SYNTAX)
    problem = key_problem(name, record.data)
    if problem:
        return verdict(DkimResult.PERMERROR, problem)
    return verdict(DkimResult.FAIL, BAD_SIGNATURE)


def key_problem(name: str, data: bytes) -> str:
    """Why a key record cannot verify anything ("" when it can): revoked, or unusable."""
    tags = parse_tags(data)
    if tags is not None and b"p" in tags and not tags[b"p"].strip():
        return KEY_REVOKED
    try:
        dkim.evaluate_pk(name.encode("ascii"), data)
    except (dkim.DKIMException, ValueError, TypeError, IndexError) as error:
        log.debug("DKIM key %s: %s", name, error)
        return KEY_UNUSABLE
    return ""


def _timing(tags: dict[bytes, bytes], now: float) -> str:
    """x= past or t= in the future at `now` (RFC 6376 §3.5), as a reason; "" when neither."""
    signed, expires = tags.get(b"t", b""), tags.get(b"x", b"")
    if signed.isdigit() and int(signed) > now + CLOCK_SKEW:
        return FUTURE
    if expires.isdigit() and int(expires) < now:
        return EXPIRED
    return ""


def verifier(headers: list[list[bytes]], body: bytes) -> dkim.DKIM:
    """A dkimpy verifier on an already parsed message (`dkim.rfc822_parse`), so it is parsed once."""
    signer = Verifier(None, minkey=MIN_KEY_BITS, logger=DKIMPY_LOG)
    signer.headers, signer.body = headers, body
    return signer


# --- the CPU of a verification --------------------------------------------------------------------
# dkimpy verifies RSA in pure Python (a 2048-bit modular exponentiation and a byte-by-byte conversion:
# about half of a verification) and parses the key record anew for every signature. `OpenSslRsa`
# keeps dkimpy's whole procedure (tags, canonicalization, the header hash, the checks, its errors)
# and changes these: a key record is parsed once (`_evaluated`, bounded LRU); the final rsa-sha256
# check is OpenSSL's (cryptography; Ed25519's stays PyNaCl's, as in dkimpy); the body hash and the
# canonicalized header fields are made once per message and canonicalization (a DKIM signature, an
# ARC-Message-Signature and the ARC-Seals share them), with bytes methods rather than dkimpy's regular
# expressions (a 4 KiB body: 10 µs instead of 500). Anything else goes through dkimpy unchanged. These
# override methods dkimpy does not document, so the dependency is bounded to the minor version they
# were written against (pyproject.toml).


# dkimpy's b= eraser, `[;\s]b FWS =` then (FWS base64-char)*: FWS is any run of white space here, and
# written so the regular expression does not backtrack through it (dkimpy's costs 4x as much).
_B_TAG = re.compile(rb"([;\s]b\s*=)(?:\s*[a-zA-Z0-9+/=])*(?:\r?\n\Z)?")


def _compressed(value: bytes) -> bytes:
    """Every run of SP and HTAB as one SP (what dkimpy's regular expression does, at memchr speed)."""
    if b"\t" in value:
        value = value.replace(b"\t", b" ")
    while b"  " in value:
        value = value.replace(b"  ", b" ")
    return value


def canonical_body(policy: CanonicalizationPolicy, body: bytes) -> bytes:
    """RFC 6376 §3.4.3-3.4.4, as dkimpy's `canonicalize_body` gives it."""
    if policy.body_algorithm.name != b"relaxed":
        return bytes(policy.canonicalize_body(body))
    # Compressed first, a line's trailing white space is one SP before its CRLF.
    return bytes(correct_empty_body(strip_trailing_lines(_compressed(body).replace(b" \r\n", b"\r\n"))))


def canonical_headers(
    policy: CanonicalizationPolicy, headers: Sequence[Sequence[bytes]]
) -> list[tuple[bytes, bytes]]:
    """RFC 6376 §3.4.1-3.4.2, as dkimpy's `canonicalize_headers` gives them (relaxed: name lower case,
    value unfolded, white space runs compressed, stripped)."""
    if policy.header_algorithm.name != b"relaxed":
        return [(f[0], f[1]) for f in policy.canonicalize_headers(headers)]
    return [
        (
            name.lower().rstrip(),
            _compressed(value.replace(b"\r\n", b"").replace(b"\n", b"")).strip() + b"\r\n",
        )
        for name, value in headers
    ]


def without_signature(value: bytes) -> bytes:
    """A signature header field's value with its b= value erased, as dkimpy hashes it."""
    return _B_TAG.sub(rb"\1", value)


@functools.lru_cache(maxsize=1024)
def _evaluated(name: bytes, record: bytes) -> tuple[Any, int, bytes, bool, RSAPublicKey | None]:
    """dkimpy's parse of a key record (`evaluate_pk`), and the RSA key for OpenSSL; KeyFormatError."""
    pk, keysize, ktag, seqtlsrpt = dkim.evaluate_pk(name, record)
    rsa_key = None
    if ktag == b"rsa":
        rsa_key = RSAPublicNumbers(pk["publicExponent"], pk["modulus"]).public_key()
    return pk, keysize, ktag, seqtlsrpt, rsa_key


class OpenSslRsa:
    """The mixin of dkimpy's `DKIM` and `ARC` described above."""

    _rsa_key: RSAPublicKey | None = None
    _body_hashes: dict[tuple[bytes, bytes, bytes], bytes] | None = None
    _canonical_headers: dict[bytes, list[tuple[bytes, bytes]]] | None = None

    def verify_sig(
        self: Any, sig: dict[bytes, bytes], include_headers: list[bytes], sig_header: Any, dnsfunc: Any
    ) -> Any:
        name = sig[b"s"] + b"._domainkey." + sig[b"d"] + b"."
        try:
            record = dnsfunc(name, timeout=self.timeout)
            self.pk, self.keysize, self.ktag, self.seqtlsrpt, self._rsa_key = _evaluated(name, record or b"")
        except (dkim.KeyFormatError, binascii.Error, TypeError, ValueError) as error:
            self.logger.error("%s", error)
            return False
        return self.verify_sig_process(sig, include_headers, sig_header, dnsfunc)

    def verify_sig_process(
        self: Any, sig: dict[bytes, bytes], include_headers: list[bytes], sig_header: Any, dnsfunc: Any
    ) -> Any:
        algorithm = sig.get(b"a")
        rsa = self._rsa_key is not None and algorithm == b"rsa-sha256"
        ed25519 = self.ktag == b"ed25519" and algorithm == b"ed25519-sha256"
        if not (rsa or ed25519) or self.tlsrpt or self.seqtlsrpt:
            return super().verify_sig_process(sig, include_headers, sig_header, dnsfunc)  # type: ignore[misc]
        try:
            canon_policy = CanonicalizationPolicy.from_c_value(sig.get(b"c", b"simple/simple"))
        except InvalidCanonicalizationPolicyError as error:
            raise dkim.MessageFormatError(f"invalid c= value: {error.args[0]!r}") from None
        if b"bh" in sig:
            length = sig.get(b"l", b"")
            key = (canon_policy.to_c_value(), length, sig[b"a"])
            hashes = self._body_hashes if self._body_hashes is not None else {}
            self._body_hashes = hashes
            if key not in hashes:
                body = canonical_body(canon_policy, self.body)
                hashes[key] = hashlib.sha256(body[: int(length)] if length else body).digest()
            try:
                expected = base64.b64decode(re.sub(rb"\s+", b"", sig[b"bh"]))
            except (TypeError, binascii.Error) as error:
                raise dkim.MessageFormatError(str(error)) from None
            if hashes[key] != expected:
                raise dkim.ValidationError("body hash mismatch")
        if b"from" in include_headers:
            include_headers.append(b"from")
        hasher = hashlib.sha256()
        cached = self._canonical_headers if self._canonical_headers is not None else {}
        self._canonical_headers = cached
        kind = canon_policy.header_algorithm.name
        if kind not in cached:
            cached[kind] = canonical_headers(canon_policy, self.headers)
        headers = cached[kind]
        self.signed_headers = dkim.select_headers(headers, include_headers)
        [(name, value)] = canonical_headers(canon_policy, [(sig_header[0], without_signature(sig_header[1]))])
        for field_name, field_value in (*self.signed_headers, (name, value.rstrip())):
            hasher.update(field_name + b":" + field_value)
        signature = base64.b64decode(re.sub(rb"\s+", b"", sig[b"b"]))
        if ed25519:  # RFC 8463: the signature is over the SHA-256 of the header hash input
            try:
                self.pk.verify(hasher.digest(), signature)
            except nacl.exceptions.BadSignatureError:
                return False
            return True
        try:
            self._rsa_key.verify(signature, hasher.digest(), PKCS1v15(), Prehashed(SHA256()))
        except InvalidSignature:
            return False
        if self.keysize < self.minkey:
            raise dkim.KeyFormatError(f"public key too small: {self.keysize}")
        return True


class Verifier(OpenSslRsa, dkim.DKIM):  # type: ignore[misc]
    """dkimpy's DKIM verifier with `OpenSslRsa`."""


class ArcVerifier(OpenSslRsa, dkim.ARC):  # type: ignore[misc]
    """dkimpy's ARC verifier with `OpenSslRsa`."""
