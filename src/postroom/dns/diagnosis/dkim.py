"""The DKIM selectors: each publishes the key Postroom holds (through a CNAME too)."""

from __future__ import annotations

from postroom.dns.diagnosis.common import Check, Finding, FindingCode, Severity, publish_hint, quote
from postroom.dns.records import DkimSelector, dkim_record
from postroom.dns.resolver import DnsTemporaryError, NxDomain, Resolver


def _dkim_key_of(text: str) -> str | None:
    """The p= tag of a DKIM key record, whitespace removed; None when the record has none."""
    for part in text.split(";"):
        tag, _, value = part.strip().partition("=")
        if tag.strip() == "p":
            return "".join(value.split())
    return None


async def check_dkim(check: Check) -> None:
    for selector in check.facts.dkim:
        check.findings.append(await check_dkim_selector(check.resolver, selector, check.facts.name))


async def check_dkim_selector(resolver: Resolver, selector: DkimSelector, domain: str) -> Finding:
    """Whether DNS publishes the selector's key (through a CNAME too). A wrong or missing key is an error
    for the selector that signs, a warning for the one waiting: it must be right before the next
    rotation, which `postroom domain dkim rotate` checks with this."""
    expected = (dkim_record(domain, selector),)
    name = expected[0].name
    role = "signs" if selector.active else "waits for the next rotation"
    severity = Severity.ERROR if selector.active else Severity.WARNING
    try:
        records = await resolver.txt(name, fresh=True)
    except NxDomain:
        records = []
    except DnsTemporaryError as error:
        return Finding(
            FindingCode.DNS_UNAVAILABLE,
            Severity.ERROR,
            name,
            f"DNS could not be asked: {error}",
            fix="nothing is concluded about this record; check the nameservers and run the check again",
        )
    keys = [r.text for r in records if _dkim_key_of(r.text) is not None]
    found = tuple(quote(t) for t in keys)
    if not keys:
        return Finding(
            FindingCode.DKIM_MISSING,
            severity,
            name,
            f"no DKIM key is published for selector {selector.selector}, which {role}",
            tuple(quote(r.text) for r in records),
            publish_hint(expected),
            expected,
        )
    if len(keys) > 1:
        return Finding(
            FindingCode.DKIM_MULTIPLE,
            severity,
            name,
            f"{len(keys)} DKIM key records at selector {selector.selector}: verifiers fail on it",
            found,
            f"delete them and {publish_hint(expected)}",
            expected,
        )
    if _dkim_key_of(keys[0]) != selector.public_key:
        return Finding(
            FindingCode.DKIM_MISMATCH,
            severity,
            name,
            f"the key published for selector {selector.selector} is not the one Postroom holds"
            + (": every signature fails" if selector.active else ""),
            found,
            f"replace it: {publish_hint(expected)}",
            expected,
        )
    return Finding(
        FindingCode.DKIM_OK,
        Severity.OK,
        name,
        f"selector {selector.selector} ({role}) publishes the key held",
    )
