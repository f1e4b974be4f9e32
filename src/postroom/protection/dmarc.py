"""DMARC (RFC 7489) for one message: find the From domain's policy, check alignment, apply p/sp/pct.

`find_policy(resolver, from_domain)` discovers the record (§6.6.3): `_dmarc.<From domain>`, and when
that name has no DMARC record, `_dmarc.<organizational domain>` (Public Suffix List, `dns.organizational`).
TXT records that do not begin with `v=DMARC1` are not DMARC records; two or more DMARC records at
one name, or one that receivers ignore (`dns.dmarc.parse_dmarc` refuses it), make a permerror; a DNS
failure a temperror. A record found at the organizational domain for a subdomain applies `sp=` (`p=`
when absent).

`evaluate(...)` gives the `DmarcVerdict`:

- pass when a passing SPF identity (MAIL FROM, or HELO for the null sender) or a passing DKIM d=
  aligns with the From domain: relaxed (`r`, the default) when both have the same organizational
  domain, strict (`s`) when they are equal (§3.1; `adkim`, `aspf`);
- otherwise fail when a record was found, none when there is none (bestguesspass when something
  aligned anyway: "it would have passed"), temperror/permerror as discovery said;
- the action of a failure (spec §1.7, §10.7): p=none: none; p=quarantine: quarantine; p=reject:
  `oreject` (marked, not rejected: the tenant's anti-spam policy decides, `honor_dmarc`). `pct` below
  100 samples (§6.6.4): a failure outside the sample gets the next policy down, reported as
  `pct.quarantine` (p=quarantine not applied) or `pct.reject` (p=reject applied as quarantine).

*Security:* the record text is network input, parsed by `dns.dmarc` (only split and compared).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from postroom.dns.dmarc import DmarcRecord, DmarcSyntaxError, is_dmarc_record, parse_dmarc
from postroom.dns.organizational import organizational_domain as _organizational_domain
from postroom.dns.resolver import DnsTemporaryError, NxDomain, Resolver
from postroom.model.verdicts import (
    DkimResult,
    DkimVerdict,
    DmarcAction,
    DmarcPolicy,
    DmarcResult,
    DmarcVerdict,
    SpfResult,
    SpfVerdict,
)

log = logging.getLogger(__name__)

# Asked several times per message for the same few names (the From domain, each signer's d=).
organizational_domain = functools.lru_cache(maxsize=4096)(_organizational_domain)

Sample = Callable[[], float]
"""A uniform draw in [0, 1): the pct= sampling (`random.random`; tests inject their own)."""


@dataclass(frozen=True, slots=True)
class PolicyLookup:
    """What policy discovery found for a From domain."""

    record: DmarcRecord | None = None
    at: str = ""  # the domain whose _dmarc record it is
    error: DmarcResult | None = None  # TEMPERROR or PERMERROR when discovery failed
    reason: str = ""


async def find_policy(resolver: Resolver, from_domain: str) -> PolicyLookup:
    """The DMARC record that applies to `from_domain` (RFC 7489 §6.6.3)."""
    if not from_domain:
        return PolicyLookup()
    found = await _record_at(resolver, from_domain)
    organizational = organizational_domain(from_domain)
    if found is None and organizational != from_domain:
        found = await _record_at(resolver, organizational)
    return found or PolicyLookup()


async def _record_at(resolver: Resolver, domain: str) -> PolicyLookup | None:
    """The lookup of `_dmarc.<domain>`; None when it holds no DMARC record."""
    try:
        records = await resolver.txt(f"_dmarc.{domain}")
    except NxDomain:
        return None
    except DnsTemporaryError as error:
        log.debug("DMARC record of %s: %s", domain, error)
        return PolicyLookup(at=domain, error=DmarcResult.TEMPERROR, reason="record lookup failed")
    texts = [r.text for r in records if is_dmarc_record(r.text)]
    if not texts:
        return None
    if len(texts) > 1:
        return PolicyLookup(at=domain, error=DmarcResult.PERMERROR, reason="several DMARC records")
    try:
        return PolicyLookup(parse_dmarc(texts[0]), at=domain)
    except DmarcSyntaxError as error:
        log.debug("DMARC record of %s: %s", domain, error)
        return PolicyLookup(at=domain, error=DmarcResult.PERMERROR, reason="record unusable")


def aligned(domain: str, from_domain: str, mode: str) -> bool:
    """Whether an authenticated `domain` aligns with the From domain in `mode` ("r" or "s")."""
    if not domain or not from_domain:
        return False
    if mode == "s":
        return domain == from_domain
    return domain == from_domain or organizational_domain(domain) == organizational_domain(from_domain)


def spf_aligned(spf: SpfVerdict, from_domain: str, record: DmarcRecord | None) -> bool:
    mode = record.spf_alignment if record else "r"
    return spf.result is SpfResult.PASS and aligned(spf.domain.lower().rstrip("."), from_domain, mode)


def dkim_aligned(dkim: Sequence[DkimVerdict], from_domain: str, record: DmarcRecord | None) -> bool:
    mode = record.dkim_alignment if record else "r"
    return any(v.result is DkimResult.PASS and aligned(v.domain, from_domain, mode) for v in dkim)


def evaluate(
    from_domain: str,
    lookup: PolicyLookup,
    spf: SpfVerdict,
    dkim: Sequence[DkimVerdict],
    sample: Sample,
) -> DmarcVerdict:
    """The DMARC verdict of a message whose From domain is `from_domain` (see the module docstring)."""
    record = lookup.record
    by_spf = spf_aligned(spf, from_domain, record)
    by_dkim = dkim_aligned(dkim, from_domain, record)
    policy = _policy(record, lookup.at, from_domain)

    def verdict(result: DmarcResult, action: DmarcAction, reason: str) -> DmarcVerdict:
        return DmarcVerdict(result, from_domain, policy, action, by_spf, by_dkim, reason)

    if lookup.error is DmarcResult.TEMPERROR:
        return verdict(DmarcResult.TEMPERROR, DmarcAction.TEMPERROR, lookup.reason)
    if lookup.error is DmarcResult.PERMERROR:
        return verdict(DmarcResult.PERMERROR, DmarcAction.PERMERROR, lookup.reason)
    if record is None:
        if by_spf or by_dkim:
            return verdict(DmarcResult.BESTGUESSPASS, DmarcAction.NONE, "no DMARC record; aligned")
        return verdict(DmarcResult.NONE, DmarcAction.NONE, "no DMARC record")
    if by_spf or by_dkim:
        return verdict(DmarcResult.PASS, DmarcAction.NONE, "aligned")
    return verdict(DmarcResult.FAIL, failure_action(policy, record.percent, sample), "not aligned")


def _policy(record: DmarcRecord | None, at: str, from_domain: str) -> DmarcPolicy:
    if record is None:
        return DmarcPolicy.NONE
    name = record.policy
    if at != from_domain and record.subdomain_policy is not None:
        name = record.subdomain_policy
    return DmarcPolicy(name)


def failure_action(policy: DmarcPolicy, percent: int, sample: Sample) -> DmarcAction:
    """The action on a DMARC failure under `policy` with pct=`percent` (§6.6.4 sampling)."""
    if policy is DmarcPolicy.NONE:
        return DmarcAction.NONE
    applied = sample() * 100 < percent
    if policy is DmarcPolicy.QUARANTINE:
        return DmarcAction.QUARANTINE if applied else DmarcAction.PCT_QUARANTINE
    return DmarcAction.OREJECT if applied else DmarcAction.PCT_REJECT
