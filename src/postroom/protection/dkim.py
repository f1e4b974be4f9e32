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
  error" (tags missing or malformed, d= or s= not a DNS name), "signature expired" (x= is past at
  `now`), "signature from the future" (t= after `now` + `CLOCK_SKEW`);
- temperror "key lookup failed": the key could not be had now (DNS timeout, SERVFAIL): try again later.

Bounds: at most `MAX_SIGNATURES` signatures are verified (RFC 6376 §6.1 lets a verifier limit them);
signatures whose d= aligns with the From domain are tried first, so junk signatures added above a
real one cannot push it out. The others are not reported. CPU: one hash of the canonicalized body
per signature, one RSA or Ed25519 verification.

*Security:* the signature header fields and the key records are network input. dkimpy parses the
tag lists; d= and s= are checked to be DNS names before they are looked up or reported; a key record
is only parsed by dkimpy. Reasons are fixed strings; the detail of a failure goes to the debug log.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import dkim
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
    signer = dkim.DKIM(None, minkey=MIN_KEY_BITS, logger=DKIMPY_LOG)
    signer.headers, signer.body = headers, body
    return signer
