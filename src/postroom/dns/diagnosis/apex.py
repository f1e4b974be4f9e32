"""The domain itself (NXDOMAIN, a CNAME at the apex) and the ownership proof of a pending domain."""

from __future__ import annotations

from enum import Enum

from postroom.dns.diagnosis.common import Check, FindingCode, Severity, publish_hint, quote
from postroom.dns.resolver import DnsTemporaryError, DnsTimeout, NxDomain


class Apex(Enum):
    USABLE = "usable"
    NXDOMAIN = "nxdomain"  # nothing else is checked
    UNUSABLE = "unusable"  # a CNAME, or DNS down: the apex's own checks are skipped, the names below checked
    SILENT = "silent"  # no nameserver answered the first question: nothing else is asked


async def check_apex(check: Check) -> Apex:
    name = check.facts.name
    try:
        target = await check.resolver.cname(name, fresh=True)
    except NxDomain:
        check.add(
            FindingCode.DOMAIN_NXDOMAIN,
            Severity.ERROR,
            name,
            f"DNS says {name} does not exist (NXDOMAIN)",
            fix=f"register {name} or create its zone at your DNS host, then publish these records",
            publish=tuple(check.expected),
        )
        return Apex.NXDOMAIN
    except DnsTimeout as error:
        # Every other question would wait as long again: one finding, about the nameservers.
        check.add(
            FindingCode.DNS_UNAVAILABLE,
            Severity.ERROR,
            name,
            f"no nameserver answered, so nothing was checked: {error}",
            fix="check that the nameservers of [dns] in postroom.toml (or the system's resolv.conf) are up "
            "and reachable from this host, then run the check again",
        )
        return Apex.SILENT
    except DnsTemporaryError as error:
        check.unavailable(name, error)
        return Apex.UNUSABLE
    if target is not None:
        apex = tuple(r for r in check.expected if r.name == name)
        check.add(
            FindingCode.DOMAIN_CNAME_AT_APEX,
            Severity.ERROR,
            name,
            f"{name} is a CNAME to {target}: a CNAME allows no other record beside it (RFC 1034 §3.6.2), "
            "so the domain can have no MX, SPF or ownership TXT of its own",
            found=(f"CNAME {target}",),
            fix=f"delete the CNAME at {name} and {publish_hint(apex)}",
            publish=apex,
        )
        return Apex.UNUSABLE
    return Apex.USABLE


async def check_ownership(check: Check) -> None:
    proof = check.facts.verification_record
    if proof is None:
        return
    name = check.facts.name
    records = await check.txt(name)
    if records is None:
        return
    found = tuple(quote(r.text) for r in records)
    expected = check.expect("TXT", name)[:1]
    if any(r.text.strip() == proof for r in records):
        check.add(
            FindingCode.OWNERSHIP_OK,
            Severity.OK,
            name,
            "the ownership TXT record is published: run `postroom domain verify` to finish",
            found=(proof,),
        )
        return
    if await proof_mx(check):
        check.add(
            FindingCode.OWNERSHIP_OK,
            Severity.OK,
            name,
            "the ownership MX record is published: run `postroom domain verify` to finish",
            found=(f"MX {check.facts.verification_mx}",),
        )
        return
    check.add(
        FindingCode.OWNERSHIP_MISSING,
        Severity.ERROR,
        name,
        f"the domain is pending and {name} has no TXT record {proof!r}",
        found=found,
        fix=f"{publish_hint(expected)}, then run `postroom domain verify {name}`",
        publish=expected,
    )


async def proof_mx(check: Check) -> bool:
    """Whether the pending domain publishes the fallback proof, an MX naming `verification_mx`."""
    if check.facts.verification_mx is None:
        return False
    try:
        records = await check.mx()
    except DnsTemporaryError:
        return False  # the MX check reports it
    return any(r.exchange == check.facts.verification_mx for r in records)
