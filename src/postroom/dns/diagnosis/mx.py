"""The domain's MX records and the address of the MX host they must name."""

from __future__ import annotations

from postroom.dns.diagnosis.common import Check, FindingCode, Severity, publish_hint
from postroom.dns.resolver import DnsTemporaryError, NxDomain


async def check_mx(check: Check) -> None:
    name = check.facts.name
    want = check.service.mx_host(check.facts.domain_key)
    expected = check.expect("MX", name)
    try:
        records = await check.mx()
    except DnsTemporaryError as error:
        check.unavailable(name, error)
        return
    # The ownership proof's MX (pending domains) names an .invalid host that takes no mail: not judged.
    records = [r for r in records if r.exchange != check.facts.verification_mx]
    found = tuple(f"{r.preference} {r.exchange or '.'}" for r in records)
    ours = [r for r in records if r.exchange == want]
    others = [r for r in records if r.exchange != want]
    fix_all = f"{publish_hint(expected)} and delete every other MX record of {name}"
    if not records:
        check.add(
            FindingCode.MX_MISSING,
            Severity.ERROR,
            name,
            f"{name} has no MX record: senders fall back to its address; its mail does not reach us",
            fix=publish_hint(expected),
            publish=expected,
        )
    elif any(r.is_null for r in records):
        check.add(
            FindingCode.MX_NULL,
            Severity.ERROR,
            name,
            f"{name} publishes the null MX '0 .' (RFC 7505): it tells every sender the domain takes no mail",
            found=found,
            fix=f"delete the null MX and {publish_hint(expected)}",
            publish=expected,
        )
    elif not ours:
        check.add(
            FindingCode.MX_WRONG_HOST,
            Severity.ERROR,
            name,
            f"the MX of {name} points at {', '.join(r.exchange for r in others)}, not at {want}",
            found=found,
            fix=fix_all,
            publish=expected,
        )
    elif others:
        check.add(
            FindingCode.MX_EXTRA,
            Severity.ERROR,
            name,
            f"besides {want}, {name} has MX records for {', '.join(r.exchange for r in others)}: "
            "senders may deliver there instead, and one MX per domain is supported",
            found=found,
            fix=f"delete the MX records for {', '.join(r.exchange for r in others)}",
            publish=expected,
        )
    elif ours[0].preference != 0:
        check.add(
            FindingCode.MX_PRIORITY,
            Severity.WARNING,
            name,
            f"the MX for {want} has priority {ours[0].preference}; the recommended value is 0",
            found=found,
            fix=publish_hint(expected),
            publish=expected,
        )
    else:
        check.add(FindingCode.MX_OK, Severity.OK, name, f"the only MX is {want}", found=found)
    if ours:
        await check_mx_host(check, want)


async def check_mx_host(check: Check, host: str) -> None:
    """The MX host is the service's to publish (`postroom service records`); without an address, senders
    cannot deliver even though the customer's record is right."""
    try:
        addresses = [*await check.resolver.a(host, fresh=True), *await check.resolver.aaaa(host, fresh=True)]
    except NxDomain:
        addresses = []
    except DnsTemporaryError as error:
        check.unavailable(host, error)
        return
    if not addresses:
        check.add(
            FindingCode.MX_HOST_NO_ADDRESS,
            Severity.ERROR,
            host,
            f"the MX host {host} has no address: senders cannot deliver to the domain",
            fix=f"the service operator publishes *.{check.service.mx_host_suffix} with the nodes' addresses "
            "(`postroom service records`)",
        )
