"""Authentication of an inbound message: DKIM, DMARC and ARC on top of the SPF verdict, the composite
verdict (compauth) and the `Authentication-Results` header field that explains them (spec §10.7).

`Authenticator(resolver, authserv_id).authenticate(message, spf)` returns an `AuthVerdict`:

1. the header section is read once (dkimpy's parser); the From domain is the one domain of the
   single From field's addresses (none, several fields or several domains: DMARC permerror);
2. every key the DKIM-Signature, ARC-Message-Signature and ARC-Seal fields name, and the DMARC
   record (`_dmarc.<From domain>`, then the organizational domain's), are asked at once through the
   async resolver: the event loop never waits on a synchronous lookup;
3. dkimpy verifies the signatures (`protection.dkim`) and the ARC chain (`protection.arc`) against
   those answers: on the event loop for a message up to `INLINE_VERIFY_OCTETS`, in a worker thread
   for a larger one (its body hash would hold the loop);
4. DMARC (`protection.dmarc`), compauth, and the header (`protection.results_header`).

compauth (spec §10.7) and its reason:

| compauth | reason | when |
|---|---|---|
| pass | 100 | DMARC passed (SPF or DKIM aligned with the From domain, a record published) |
| pass | 101 | no DMARC record, but SPF or DKIM aligned (dmarc=bestguesspass) |
| pass | 130 | DMARC failed or had no record, and a trusted ARC sealer's results align (`trusting`) |
| softpass | 200 | nothing aligned, no enforcing policy, but SPF or another domain's DKIM passed |
| fail | 000 | explicit: DMARC failed and the From domain publishes p=quarantine or p=reject |
| fail | 001 | implicit: nothing authenticated the From domain and it publishes no enforcing policy |
| none | 300 | DMARC could not be checked now (temperror) |

`trusting(verdict, sealers)` is the same verdict as a tenant that trusts the ARC sealers `sealers`
sees it (see its docstring); the pipeline calls it per tenant with its policy's
`trusted_arc_sealers`. The tenant's DMARC choices (honour p=reject or mark spoof) are the anti-spam
policy's (`model.policy`), applied by the pipeline to `DmarcVerdict.policy` and `.action`.

`strip_foreign(message, authserv_id)` removes what nobody outside may claim (RFC 8601 §5): every
`Authentication-Results` field with our authserv-id and every field under `headers.INTERNAL_PREFIX`.

Failure: `authenticate` never raises for anything in the message or the DNS: a header section dkimpy
cannot read gives dkim and dmarc permerror; DNS failures are temperrors in the verdicts.

*Security:* the message and the DNS answers are network input (see the modules named above). The
header written here holds only values checked to be DNS names, IP addresses or fixed texts.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from email.utils import getaddresses

import dkim

from postroom.dns.resolver import Resolver
from postroom.model.address import Address, AddressError
from postroom.model.verdicts import (
    ArcResult,
    ArcVerdict,
    AuthVerdict,
    CompAuthResult,
    DkimResult,
    DkimVerdict,
    DmarcAction,
    DmarcPolicy,
    DmarcResult,
    DmarcVerdict,
    SpfResult,
    SpfVerdict,
)
from postroom.protection import arc as arc_chain
from postroom.protection.dkim import (
    UNSIGNED,
    Keys,
    Signature,
    dns_name,
    fetch_keys,
    signatures,
    verifier,
    verify_signatures,
)
from postroom.protection.dmarc import (
    PolicyLookup,
    Sample,
    aligned,
    evaluate,
    find_policy,
    organizational_domain,
)
from postroom.protection.headers import INTERNAL_PREFIX, ORIGINAL_SENDER, SKIP_LISTED_SENDER
from postroom.protection.results_header import (
    field_name,
    fields,
    head_end,
    is_own_results,
    render,
    without_fields,
)

INLINE_VERIFY_OCTETS = 262_144  # larger messages are verified in a worker thread
UNREADABLE = "header section unreadable"
ARC_OVERRIDE = 130
# The From fields most mail has, `Name <local@domain>` or `local@domain`, read without the general
# RFC 5322 address parser (anything else: groups, comments, quoted commas, goes through it).
_SIMPLE_FROM = re.compile(
    r'(?:[^<>",;:@()\\]*|"[^"\\]*")\s*<([^<>\s@",;:()]+@[A-Za-z0-9.-]+)>|([^<>\s@",;:()]+@[A-Za-z0-9.-]+)'
)
_INTERNAL = INTERNAL_PREFIX.lower().encode("ascii")
_STAMPS = frozenset(name.lower().encode("ascii") for name in (SKIP_LISTED_SENDER, ORIGINAL_SENDER))


class Authenticator:
    """DKIM, DMARC, ARC and compauth for inbound messages; one per node (it holds no per-message state).

    `clock` gives the time DKIM x= and t= are judged at; `sample` draws DMARC's pct= sampling."""

    def __init__(
        self,
        resolver: Resolver,
        authserv_id: str,
        *,
        clock: Callable[[], float] = time.time,
        sample: Sample = random.random,
    ) -> None:
        checked = dns_name(authserv_id)
        if checked is None:
            raise ValueError(f"the authserv-id {authserv_id!r} is not a host name")
        self.authserv_id = checked
        self._resolver = resolver
        self._clock = clock
        self._sample = sample

    async def authenticate(self, message: bytes, spf: SpfVerdict) -> AuthVerdict:
        """The verdict on `message` (as received: header section and body), given its SPF verdict."""
        end = head_end(message)
        try:
            headers, _ = dkim.rfc822_parse(message[:end])
        except (dkim.MessageFormatError, IndexError):
            return self._verdict(spf, (DkimVerdict(DkimResult.PERMERROR, reason=UNREADABLE),), _unreadable())
        from_domain, problem = from_domain_of(headers)
        found = signatures(headers, organizational_domain(from_domain) if from_domain else "")
        chain = arc_chain.has_chain(headers)
        names = {name for s in found if (name := s.key_name)}
        if chain:
            names |= arc_chain.key_names(headers)
        if names:
            keys, lookup = await asyncio.gather(
                fetch_keys(self._resolver, names), find_policy(self._resolver, from_domain)
            )
        else:  # the usual unsigned message: no task to spawn
            keys, lookup = Keys({}), await find_policy(self._resolver, from_domain)
        dkim_verdicts: tuple[DkimVerdict, ...] = UNSIGNED
        arc = ArcVerdict(ArcResult.NONE)
        if found or chain:
            now = self._clock()
            if len(message) > INLINE_VERIFY_OCTETS:
                dkim_verdicts, arc = await asyncio.to_thread(
                    _verify, message, end, headers, found, chain, keys, now
                )
            else:
                dkim_verdicts, arc = _verify(message, end, headers, found, chain, keys, now)
        if problem:
            dmarc = DmarcVerdict(DmarcResult.PERMERROR, "", action=DmarcAction.PERMERROR, reason=problem)
        else:
            dmarc = evaluate(from_domain, lookup, spf, dkim_verdicts, self._sample)
        if arc.result is ArcResult.PASS and from_domain:
            arc = replace(arc, recorded_aligned=_recorded_aligned(arc, from_domain, lookup))
        return self._verdict(spf, dkim_verdicts, dmarc, arc)

    def trusting(self, verdict: AuthVerdict, sealers: frozenset[str]) -> AuthVerdict:
        """`verdict` as a tenant that trusts the ARC sealers `sealers` (domains) sees it.

        When the chain passed, its newest sealer is one of `sealers`, the SPF or DKIM passes it
        recorded align with the From domain, and our own DMARC failed (or found no record): DMARC
        passes by them (`dmarc=pass`, or `bestguesspass` without a record), compauth is pass with
        reason 130, the header says `arc=pass (trusted sealer <domain>)`, and `arc_trusted` is True.
        Otherwise the same verdict comes back."""
        arc, dmarc = verdict.arc, verdict.dmarc
        if arc.result is not ArcResult.PASS or not arc.sealers or not arc.recorded_aligned:
            return verdict
        newest = arc.sealers[-1]
        if newest not in {dns_name(s) for s in sealers}:
            return verdict
        reason = f"trusted ARC sealer {newest}"
        if dmarc.result is DmarcResult.FAIL:
            dmarc = replace(dmarc, result=DmarcResult.PASS, action=DmarcAction.NONE, reason=reason)
        elif dmarc.result is DmarcResult.NONE:
            dmarc = replace(dmarc, result=DmarcResult.BESTGUESSPASS, reason=reason)
        else:
            return verdict
        header = render(
            self.authserv_id,
            verdict.spf,
            verdict.dkim,
            arc,
            dmarc,
            CompAuthResult.PASS,
            ARC_OVERRIDE,
            arc_trusted=True,
        )
        return replace(
            verdict,
            dmarc=dmarc,
            compauth=CompAuthResult.PASS,
            compauth_reason=ARC_OVERRIDE,
            header=header,
            arc_trusted=True,
        )

    def _verdict(
        self,
        spf: SpfVerdict,
        dkim_verdicts: tuple[DkimVerdict, ...],
        dmarc: DmarcVerdict,
        arc: ArcVerdict | None = None,
    ) -> AuthVerdict:
        arc = arc or ArcVerdict(ArcResult.NONE)
        compauth, reason = composite(spf, dkim_verdicts, dmarc)
        header = render(self.authserv_id, spf, dkim_verdicts, arc, dmarc, compauth, reason)
        return AuthVerdict(spf, dkim_verdicts, dmarc, arc, compauth, reason, header)


def _verify(
    message: bytes,
    end: int,
    headers: list[list[bytes]],
    found: Sequence[Signature],
    chain: bool,
    keys: Keys,
    now: float,
) -> tuple[tuple[DkimVerdict, ...], ArcVerdict]:
    """The CPU part: every signature and the chain, against the prefetched keys."""
    body = _body(message, end)
    dkim_verdicts = verify_signatures(verifier(headers, body), found, keys, now)
    arc = arc_chain.verify_arc(headers, body, keys) if chain else ArcVerdict(ArcResult.NONE)
    return dkim_verdicts, arc


def _body(message: bytes, end: int) -> bytes:
    """The body as dkimpy's parser gives it (lines joined by CRLF), without splitting a CRLF body."""
    if end >= len(message):
        return b""
    body = message[end + (2 if message.startswith(b"\r\n", end) else 1) :]
    if body.count(b"\n") != body.count(b"\r\n"):  # bare LF somewhere: normalize as dkimpy does
        body = b"\r\n".join(re.split(b"\r?\n", body))
    return body


def _recorded_aligned(arc: ArcVerdict, from_domain: str, lookup: PolicyLookup) -> bool:
    passes = arc_chain.recorded_passes(arc.recorded)
    record = lookup.record
    spf_mode, dkim_mode = (record.spf_alignment, record.dkim_alignment) if record else ("r", "r")
    return any(aligned(d, from_domain, spf_mode) for d in passes.spf) or any(
        aligned(d, from_domain, dkim_mode) for d in passes.dkim
    )


def _unreadable() -> DmarcVerdict:
    return DmarcVerdict(DmarcResult.PERMERROR, "", action=DmarcAction.PERMERROR, reason=UNREADABLE)


def from_domain_of(headers: Sequence[Sequence[bytes]]) -> tuple[str, str]:
    """The RFC5322.From domain (A-label, lower case) and "", or "" and why there is none usable."""
    values = [field[1] for field in headers if field[0].lower() == b"from"]
    if not values:
        return "", "no From header field"
    if len(values) > 1:
        return "", "several From header fields"
    text = " ".join(values[0].decode("utf-8", "replace").split())
    simple = _SIMPLE_FROM.fullmatch(text)
    addresses = [simple.group(1) or simple.group(2)] if simple else [a for _, a in getaddresses([text])]
    domains: set[str] = set()
    for address in addresses:
        if not address:
            continue
        try:
            domain = dns_name(Address.parse(address).domain)
        except AddressError:
            domain = None
        if domain is None:
            return "", "From address unusable"
        domains.add(domain)
    if not domains:
        return "", "no From address"
    if len(domains) > 1:
        return "", "From addresses in several domains"
    return domains.pop(), ""


def composite(
    spf: SpfVerdict, dkim_verdicts: Sequence[DkimVerdict], dmarc: DmarcVerdict
) -> tuple[CompAuthResult, int]:
    """compauth and its reason (the table in the module docstring), before any ARC override."""
    result = dmarc.result
    if result is DmarcResult.PASS:
        return CompAuthResult.PASS, 100
    if result is DmarcResult.BESTGUESSPASS:
        return CompAuthResult.PASS, 101
    if result is DmarcResult.TEMPERROR:
        return CompAuthResult.NONE, 300
    if result is DmarcResult.FAIL and dmarc.policy in (DmarcPolicy.QUARANTINE, DmarcPolicy.REJECT):
        return CompAuthResult.FAIL, 0
    if spf.result is SpfResult.PASS or any(v.result is DkimResult.PASS for v in dkim_verdicts):
        return CompAuthResult.SOFTPASS, 200
    return CompAuthResult.FAIL, 1


def strip_foreign(message: bytes, authserv_id: str) -> bytes | None:
    """`message` without the Authentication-Results fields that claim `authserv_id`, the fields
    under `INTERNAL_PREFIX` and the enhanced-filtering fields (RFC 8601 §5); None when it has none
    (the usual case). The body is byte-identical."""
    head = message[: head_end(message)].lower()
    stamped = any(stamp in head for stamp in _STAMPS)
    if b"authentication-results" not in head and _INTERNAL not in head and not stamped:
        return None
    own = authserv_id.lower()
    return without_fields(
        message,
        lambda name, raw: name.startswith(_INTERNAL) or name in _STAMPS or is_own_results(name, raw, own),
    )


def carries_results(head: bytes, authserv_id: str) -> bool:
    """Whether a header section holds an Authentication-Results field of `authserv_id`: the message
    came from outside and was authenticated here (what an ARC seal records)."""
    if b"authentication-results" not in head.lower():
        return False
    for start, stop in fields(head):
        raw = head[start:stop]
        if is_own_results(field_name(raw), raw, authserv_id):
            return True
    return False
