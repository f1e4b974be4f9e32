"""ARC (RFC 8617): verify the chain a message arrives with, read what its sealers recorded, and seal
what Postroom forwards. dkimpy does the cryptography; keys come prefetched (`protection.dkim.Keys`).

`verify_arc(headers, body, keys)` gives the `ArcVerdict`: none (no ARC header fields), pass (every
set complete, every ARC-Seal and the newest ARC-Message-Signature verify, cv= consistent), or fail
with a fixed reason. A chain of more than `MAX_INSTANCES` sets fails without being verified (RFC 8617
§4.2.1 allows 50; every set costs a body hash, and real chains are a few hops long). On pass the
verdict carries the sealers' domains (instance 1 first) and `recorded`: the newest
ARC-Authentication-Results without its `i=` tag, which `recorded_passes` reads for the SPF and DKIM
passes the last sealer saw before the message was changed in transit.

`arc_seal(message, auth, ...)` makes the three header fields of the next instance (ARC-Seal,
ARC-Message-Signature, ARC-Authentication-Results, in the order they are prepended) with dkimpy's
`arc_sign`, rsa-sha256,
relaxed/relaxed, over the header fields dkimpy recommends: the chain validation status (cv=) is the
`arc=` result of our Authentication-Results (none when the message came with no chain). It raises
`NotSealed` when it cannot seal; the caller then sends the message unsealed, never loses it.

Sealing is CPU work (two RSA signatures, one body hash): call it from a worker thread.

*Security:* ARC header fields are network input: dkimpy parses them; sealer domains are checked to be
DNS names; `recorded` is kept as text and only ever parsed (authres), never put into a header of
ours. A chain proves only who handled the message: its recorded results are honoured only for a
tenant that trusts the newest sealer (`authentication.Authenticator.trusting`). The private key is
not logged and not put in exceptions.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

import authres
import dkim
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from postroom import dkim_rsa
from postroom.model.verdicts import ArcResult, ArcVerdict, AuthVerdict
from postroom.protection.dkim import (
    DKIMPY_LOG,
    MIN_KEY_BITS,
    ArcVerifier,
    Keys,
    dns_name,
    key_name,
    parse_tags,
)
from postroom.protection.results_header import is_own_results, without_fields

dkim_rsa.install()  # dkimpy's RSA signing is pure Python; OpenSSL's is 19x faster

log = logging.getLogger(__name__)

MAX_INSTANCES = 10  # ARC sets verified; a longer chain fails
ARC_SEAL = b"arc-seal"
ARC_MESSAGE_SIGNATURE = b"arc-message-signature"
ARC_AUTHENTICATION_RESULTS = b"arc-authentication-results"
ARC_HEADERS = (ARC_SEAL, ARC_MESSAGE_SIGNATURE, ARC_AUTHENTICATION_RESULTS)
_INSTANCE = re.compile(rb"(?:^|[\s;])i\s*=\s*(\d{1,4})")
_AAR_INSTANCE = re.compile(r"^\s*i\s*=\s*\d+\s*;\s*")

VALIDATED = "chain validated"
TOO_LONG = "chain longer than verified"
MALFORMED = "chain malformed"
NEWEST_SIGNATURE = "newest message signature did not verify"
SEAL = "seal did not verify"
REPORTED_FAIL = "a sealer reported a failed chain"
KEY_LOOKUP_FAILED = "key lookup failed"


class NotSealed(Exception):
    """No ARC set was made; `reason` says why (the caller sends the message unsealed)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def has_chain(headers: Sequence[Sequence[bytes]]) -> bool:
    return any(field[0].lower() in ARC_HEADERS for field in headers)


def key_names(headers: Sequence[Sequence[bytes]]) -> set[str]:
    """The `_domainkey` names the ARC-Seal and ARC-Message-Signature fields need (none past the bound)."""
    names: set[str] = set()
    fields = [(f[0].lower(), f[1]) for f in headers if f[0].lower() in (ARC_SEAL, ARC_MESSAGE_SIGNATURE)]
    if len(fields) > 2 * MAX_INSTANCES:
        return names
    for _, value in fields:
        tags = parse_tags(value)
        name = key_name(tags) if tags else None
        if name:
            names.add(name)
    return names


def verify_arc(headers: list[list[bytes]], body: bytes, keys: Keys) -> ArcVerdict:
    """The verdict on the ARC chain of a parsed message (`dkim.rfc822_parse`), keys prefetched."""
    seals = [f[1] for f in headers if f[0].lower() == ARC_SEAL]
    if not has_chain(headers):
        return ArcVerdict(ArcResult.NONE)
    instances = max((int(m.group(1)) for v in seals if (m := _INSTANCE.search(v))), default=0)
    if instances > MAX_INSTANCES or len(seals) > MAX_INSTANCES:
        return ArcVerdict(ArcResult.FAIL, instances, reason=TOO_LONG)
    arc = ArcVerifier(None, minkey=MIN_KEY_BITS, logger=DKIMPY_LOG)
    arc.headers, arc.body = headers, body
    try:
        status, results, detail = arc.verify(dnsfunc=keys.dnsfunc)
    except (dkim.DKIMException, ValueError, TypeError, IndexError, KeyError) as error:
        log.debug("ARC chain: %s", error)
        return ArcVerdict(ArcResult.FAIL, instances, reason=MALFORMED)
    ordered = sorted(results, key=lambda r: int(r["instance"]))
    sealers = tuple(dns_name(r.get("as-domain", b"")) or "" for r in ordered)
    if status == dkim.CV_Pass:
        newest = ordered[-1]["aar-value"].decode("utf-8", "replace")
        recorded = _AAR_INSTANCE.sub("", " ".join(newest.split()))
        return ArcVerdict(ArcResult.PASS, instances, sealers, recorded, reason=VALIDATED)
    if status == dkim.CV_None and not results:
        return ArcVerdict(ArcResult.NONE, reason=MALFORMED)
    log.debug("ARC chain: %s", detail)
    return ArcVerdict(ArcResult.FAIL, instances, sealers, reason=_reason(str(detail), headers, keys))


def _reason(detail: str, headers: list[list[bytes]], keys: Keys) -> str:
    if any((r := keys.get(n)) is not None and r.temporary for n in key_names(headers)):
        return KEY_LOOKUP_FAILED
    if detail.startswith("Most recent ARC-Message-Signature"):
        return NEWEST_SIGNATURE
    if "reported failure" in detail:
        return REPORTED_FAIL
    if "did not validate" in detail:
        return SEAL
    return MALFORMED


@dataclass(frozen=True, slots=True)
class RecordedPasses:
    """What a sealer's ARC-Authentication-Results say passed: the domains, lower case."""

    spf: tuple[str, ...] = ()  # smtp.mailfrom (or smtp.helo) of each spf=pass
    dkim: tuple[str, ...] = ()  # header.d (or the domain of header.i) of each dkim=pass


def recorded_passes(recorded: str) -> RecordedPasses:
    """The SPF and DKIM passes in `recorded` (an ArcVerdict's); nothing when it does not parse."""
    if not recorded:
        return RecordedPasses()
    try:
        parsed = authres.AuthenticationResultsHeader.parse("Authentication-Results: " + recorded)
    except (authres.core.AuthResError, ValueError, IndexError, AttributeError) as error:
        log.debug("ARC-Authentication-Results do not parse: %s", error)
        return RecordedPasses()
    spf: list[str] = []
    dkim_domains: list[str] = []
    for result in parsed.results:
        if str(result.result).lower() != "pass":
            continue
        found = {f"{p.type}.{p.name}".lower(): str(p.value) for p in result.properties}
        method = str(result.method).lower()
        if method == "spf":
            identity = found.get("smtp.mailfrom") or found.get("smtp.helo") or ""
            domain = dns_name(identity.rpartition("@")[2])
            if domain:
                spf.append(domain)
        elif method == "dkim":
            domain = dns_name(found.get("header.d") or found.get("header.i", "").rpartition("@")[2])
            if domain:
                dkim_domains.append(domain)
    return RecordedPasses(tuple(spf), tuple(dkim_domains))


def arc_seal(
    message: bytes,
    auth: AuthVerdict | None,
    *,
    domain: str,
    selector: str,
    private_key: bytes,
    authserv_id: str,
    now: float,
) -> bytes:
    """The next ARC set for `message` (the three fields, CRLF-terminated, to prepend as they are),
    sealed as `<selector>._domainkey.<domain>` with `private_key` (PEM, PKCS#8 or PKCS#1) at `now`.

    The results it records are `auth.header`; with `auth` None, those of the Authentication-Results
    with authserv-id `authserv_id` the message already carries (a queued message being forwarded).
    Raises `NotSealed`: no results of ours, a chain past dkimpy's 50 sets, an unusable key."""
    if auth is not None:
        others = without_fields(message, lambda name, raw: is_own_results(name, raw, authserv_id))
        message = auth.header.encode("ascii") + (message if others is None else others)
    try:
        fields = dkim.arc_sign(
            message,
            selector.encode("ascii"),
            domain.encode("ascii"),
            _pkcs1(private_key),
            authserv_id.encode("ascii"),
            timestamp=int(now),
            logger=DKIMPY_LOG,
        )
    except (dkim.DKIMException, ValueError, UnicodeError, TypeError, IndexError) as error:
        raise NotSealed(f"sealing as {selector}._domainkey.{domain} failed: {type(error).__name__}") from None
    if not fields:
        raise NotSealed(f"the message carries no usable Authentication-Results of {authserv_id}")
    return b"".join(bytes(field) for field in fields)


@functools.lru_cache(maxsize=64)
def _pkcs1(private_key: bytes) -> bytes:
    """The key as the PKCS#1 `RSA PRIVATE KEY` PEM dkimpy reads (the directory stores PKCS#8)."""
    try:
        key = load_pem_private_key(private_key, password=None)
    except (ValueError, TypeError):
        raise NotSealed("the sealing key cannot be read") from None
    if not isinstance(key, RSAPrivateKey):
        raise NotSealed("the sealing key is not an RSA key")
    return key.private_bytes(Encoding.PEM, PrivateFormat.TraditionalOpenSSL, NoEncryption())
