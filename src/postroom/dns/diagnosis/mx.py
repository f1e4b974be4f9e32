"""The domain's MX records and the address of the MX host they must name.

The MX must name Postroom's per-domain host, unless the tenant's scenario (spec §4,
`DomainFacts.mx_elsewhere`) puts the MX at its on-premises server or a third-party filtering
service: then it must name that host (`mx.scenario-host`, or `mx.scenario-mismatch` naming where it
points and what the scenario expects; an MX still at Postroom is a mismatch too, never
`mx.wrong-host`). A third party whose host was not named is satisfied by any MX but Postroom's.
"""

from __future__ import annotations

from postroom.dns.diagnosis.common import Check, FindingCode, Severity, publish_hint
from postroom.dns.records import MxElsewhere
from postroom.dns.resolver import DnsTemporaryError, MxRecord, NxDomain


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
    if check.facts.mx_elsewhere is not None:
        await _check_mx_elsewhere(check, check.facts.mx_elsewhere, records)
        return
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


async def _check_mx_elsewhere(check: Check, elsewhere: MxElsewhere, records: list[MxRecord]) -> None:
    name = check.facts.name
    ours = check.service.mx_host(check.facts.domain_key)
    expected = check.expect("MX", name)
    found = tuple(f"{r.preference} {r.exchange or '.'}" for r in records)
    where = f"{elsewhere.at} ({elsewhere.host})" if elsewhere.host else elsewhere.at
    why = f"scenario {elsewhere.scenario} puts the MX at {where}"
    point = (
        publish_hint(expected)
        if expected
        else f"point the MX at the host {elsewhere.at} gave you (and name it with --third-party-host)"
    )
    reapply = "; or, if mail should reach Postroom first, apply that scenario (`postroom scenario list`)"
    if not records:
        check.add(
            FindingCode.MX_MISSING,
            Severity.ERROR,
            name,
            f"{name} has no MX record: {why}, and without one senders fall back to its address",
            fix=point,
            publish=expected,
        )
        return
    if any(r.is_null for r in records):
        check.add(
            FindingCode.MX_NULL,
            Severity.ERROR,
            name,
            f"{name} publishes the null MX '0 .' (RFC 7505): it tells every sender the domain takes no mail",
            found=found,
            fix=f"delete the null MX; {point}",
            publish=expected,
        )
        return
    at_postroom = [r for r in records if r.exchange == ours]
    if elsewhere.host:
        right = [r for r in records if r.exchange == elsewhere.host]
        others = [r for r in records if r.exchange != elsewhere.host]
    else:
        right, others = [r for r in records if r.exchange != ours], at_postroom
    if not right:
        check.add(
            FindingCode.MX_NOT_AT_SCENARIO_HOST,
            Severity.ERROR,
            name,
            f"the MX of {name} points at {', '.join(r.exchange for r in records)}, but {why}"
            + (": mail reaching Postroom directly bypasses it" if at_postroom else ""),
            found=found,
            fix=point + reapply,
            publish=expected,
        )
        return
    if others:
        check.add(
            FindingCode.MX_EXTRA,
            Severity.ERROR,
            name,
            f"besides {', '.join(r.exchange for r in right)}, {name} has MX records for "
            f"{', '.join(r.exchange for r in others)}: senders may deliver there instead, bypassing {where}",
            found=found,
            fix=f"delete the MX records for {', '.join(r.exchange for r in others)}",
            publish=expected,
        )
        return
    check.add(
        FindingCode.MX_AT_SCENARIO_HOST,
        Severity.OK,
        name,
        f"the MX is {', '.join(r.exchange for r in right)}, where {why}",
        found=found,
    )
    if elsewhere.host:
        await check_mx_host(
            check,
            elsewhere.host,
            fix=f"publish an A (or AAAA) record for {elsewhere.host}: the address of {elsewhere.at}",
        )


async def check_mx_host(check: Check, host: str, *, fix: str = "") -> None:
    """The MX host is the service's to publish (`postroom service records`); without an address, senders
    cannot deliver even though the customer's record is right. `fix`: what to do when the MX host is
    not the service's (a scenario's on-premises server)."""
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
            fix=fix
            or f"the service operator publishes *.{check.service.mx_host_suffix} with the nodes' addresses "
            "(`postroom service records`)",
        )
