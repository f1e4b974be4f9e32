"""MTA-STS (RFC 8461): the `_mta-sts` record, and the policy fetched and compared with it."""

from __future__ import annotations

from postroom.dns.diagnosis.common import Check, FindingCode, Severity, publish_hint, quote
from postroom.dns.mta_sts import MtaStsError, parse_sts_txt
from postroom.dns.records import DnsRecord, mx_exchange
from postroom.dns.resolver import DnsTemporaryError, NxDomain


async def check_mta_sts(check: Check) -> None:
    domain = check.facts.name
    if not mx_exchange(check.service, check.facts):
        return  # the MX is a third party's not named here: no policy can be judged (`mta_sts_policy`)
    name = f"_mta-sts.{domain}"
    expected_txt = check.expect("TXT", name)
    expected = (*check.expect("CNAME", f"mta-sts.{domain}"), *expected_txt)
    records = await check.txt(name)
    if records is None:
        return
    sts = [r.text for r in records if r.text.replace(" ", "").lower().startswith("v=stsv1")]
    if not sts:
        check.add(
            FindingCode.MTA_STS_MISSING,
            Severity.WARNING,
            name,
            "no MTA-STS record: senders may deliver to the domain without TLS, or to a forged MX",
            fix=publish_hint(expected),
            publish=expected,
        )
        return
    found = tuple(quote(t) for t in sts)
    try:
        if len(sts) > 1:
            raise MtaStsError(f"{len(sts)} v=STSv1 records; there must be exactly one")
        txt = parse_sts_txt(sts[0])
    except MtaStsError as error:
        check.add(
            FindingCode.MTA_STS_SYNTAX,
            Severity.ERROR,
            name,
            f"the MTA-STS record is not usable: {error}",
            found=found,
            fix=f"replace it: {publish_hint(expected_txt)}",
            publish=expected_txt,
        )
        return
    if check.fetch_policy is None:
        check.add(
            FindingCode.MTA_STS_OK, Severity.OK, name, "the MTA-STS record is published (policy not fetched)"
        )
        return
    fetched = await check.fetch_policy(domain)
    if fetched.policy is None:
        fix, publish = await _unavailable_fix(check, expected[:1])
        check.add(
            FindingCode.MTA_STS_POLICY_UNAVAILABLE,
            Severity.ERROR,
            fetched.url,
            f"the MTA-STS record is published but the policy cannot be had: {fetched.error}",
            found=found,
            fix=f"{fix}; or delete {name}",
            publish=publish,
        )
        return
    mx_host = mx_exchange(check.service, check.facts)
    if not fetched.policy.matches(mx_host):
        check.add(
            FindingCode.MTA_STS_POLICY_MX,
            Severity.ERROR,
            fetched.url,
            f"the MTA-STS policy names {', '.join(fetched.policy.mx)} but not the MX {mx_host}: senders that "
            "enforce it refuse to deliver",
            found=(quote(fetched.text),),
            fix=f"point mta-sts.{domain} at {check.service.hostname}, which serves the right policy",
            publish=expected[:1],
        )
        return
    want_id = next((r.value.split("id=", 1)[1] for r in expected_txt), "")
    if txt.id != want_id:
        check.add(
            FindingCode.MTA_STS_ID_STALE,
            Severity.WARNING,
            name,
            f"the MTA-STS id is {txt.id}, not {want_id}: senders that cached an older policy keep it",
            found=found,
            fix=f"replace it: {publish_hint(expected_txt)}",
            publish=expected_txt,
        )
        return
    check.add(
        FindingCode.MTA_STS_OK,
        Severity.OK,
        name,
        f"the MTA-STS record and the policy agree (mode {fetched.policy.mode}, MX {mx_host})",
        found=found,
    )


async def _unavailable_fix(check: Check, cname: tuple[DnsRecord, ...]) -> tuple[str, tuple[DnsRecord, ...]]:
    """What to do about a policy that cannot be fetched: the DNS name when it does not lead to the
    service host, else what serves HTTPS there (the admin listener, behind a TLS proxy or with TLS)."""
    host = f"mta-sts.{check.facts.name}"
    service = check.service.hostname
    publish = f"{publish_hint(cname)} so that Postroom serves the policy, with a certificate for {host}"
    try:
        target = await check.resolver.cname(host, fresh=True)
        addresses = [*await check.resolver.a(host, fresh=True), *await check.resolver.aaaa(host, fresh=True)]
    except NxDomain:
        return f"{host} does not exist: {publish}", cname
    except DnsTemporaryError:
        return publish, cname
    if target is not None and target != service:
        return f"{host} points at {target}, not at {service}: {publish}", cname
    if not addresses:
        return f"{host} has no address: {publish}", cname
    return (
        f"{host} resolves, but nothing there serves the policy over HTTPS with a certificate for {host}: "
        "the node's admin listener ([admin] listen) serves it, so either put a TLS proxy on port 443 in "
        f"front of it holding a certificate for {host}, or set [admin] tls = true with a [tls] "
        f"certificate that names {host} (docs/dns.md, 'Serving the MTA-STS policy')",
        (),
    )
