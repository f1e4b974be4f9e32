"""Domain ownership proof: look up the domain's TXT records and verify it when the proof is there.

Composes the directory (the domain and its token) with the resolver (what DNS says, asked fresh so
a record published a minute ago counts). The proof is the TXT record `verification_record`; where a
DNS host cannot publish TXT at the apex, an MX record naming `verification_mx` (spec §1.1) counts
too. The outcome says exactly what was found, so an admin whose proof did not take can see why: no
TXT at all, the name does not exist, other TXT values, or DNS could not be asked (temporary; try
again). Every attempt is recorded in the domain's history.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from postroom.directory import AcceptedDomain, Directory, DomainStatus
from postroom.dns import DnsTemporaryError, NxDomain, Resolver
from postroom.model.scope import Scope


class ProofOutcome(StrEnum):
    VERIFIED = "verified"  # the TXT record was found; the domain is verified now
    ALREADY_VERIFIED = "already-verified"
    NOT_FOUND = "not-found"  # TXT records exist, none is the proof
    NO_TXT = "no-txt"  # the name exists but has no TXT records
    NO_DOMAIN = "no-domain"  # NXDOMAIN
    DNS_UNAVAILABLE = "dns-unavailable"


@dataclass(frozen=True, slots=True)
class ProofResult:
    domain: AcceptedDomain
    outcome: ProofOutcome
    expected: str
    found: tuple[str, ...]
    message: str


async def verify_ownership(directory: Directory, resolver: Resolver, scope: Scope, name: str) -> ProofResult:
    domain = directory.get_domain(scope, name)
    expected = domain.verification_record
    if domain.status is DomainStatus.VERIFIED:
        return ProofResult(
            domain, ProofOutcome.ALREADY_VERIFIED, expected, (), f"{domain.name} is already verified"
        )
    found: tuple[str, ...] = ()
    try:
        found = tuple(record.text for record in await resolver.txt(domain.name, fresh=True))
    except NxDomain:
        outcome, message = ProofOutcome.NO_DOMAIN, f"DNS says {domain.name} does not exist (NXDOMAIN)"
    except DnsTemporaryError as error:
        outcome, message = (
            ProofOutcome.DNS_UNAVAILABLE,
            f"DNS could not be asked ({error}); try again shortly",
        )
    else:
        if expected in found:
            verified = directory.mark_verified(scope, domain.name, f"TXT record {expected} found in DNS")
            return ProofResult(verified, ProofOutcome.VERIFIED, expected, found, f"{domain.name} is verified")
        if await _has_proof_mx(resolver, domain):
            how = f"MX record {domain.verification_mx} found in DNS"
            verified = directory.mark_verified(scope, domain.name, how)
            return ProofResult(verified, ProofOutcome.VERIFIED, expected, found, f"{domain.name} is verified")
        if found:
            outcome = ProofOutcome.NOT_FOUND
            message = f"{domain.name} has {len(found)} TXT record(s) but none is {expected!r}"
        else:
            outcome, message = ProofOutcome.NO_TXT, f"{domain.name} has no TXT records"
    directory.record_domain_event(scope, domain.name, "verification-failed", message)
    return ProofResult(domain, outcome, expected, found, message)


async def _has_proof_mx(resolver: Resolver, domain: AcceptedDomain) -> bool:
    """The fallback proof: an MX record naming `verification_mx` (for DNS hosts without TXT at the apex)."""
    try:
        return any(mx.exchange == domain.verification_mx for mx in await resolver.mx(domain.name, fresh=True))
    except DnsTemporaryError:
        return False
