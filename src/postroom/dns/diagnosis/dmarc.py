"""The DMARC record (RFC 7489) and the authorization of reports sent to another domain (§7.1)."""

from __future__ import annotations

from collections.abc import Sequence

from postroom.dns.diagnosis.common import Check, FindingCode, Severity, publish_hint, quote
from postroom.dns.dmarc import DmarcSyntaxError, is_dmarc_record, parse_dmarc
from postroom.dns.organizational import same_organization
from postroom.dns.records import DnsRecord


async def check_dmarc(check: Check) -> None:
    name = f"_dmarc.{check.facts.name}"
    expected = check.expect("TXT", name)
    records = await check.txt(name)
    if records is None:
        return
    dmarc = [r.text for r in records if is_dmarc_record(r.text)]
    found = tuple(quote(t) for t in dmarc)
    if not dmarc:
        check.add(
            FindingCode.DMARC_MISSING,
            Severity.WARNING,
            name,
            "no DMARC record: receivers apply no policy to mail failing SPF and DKIM, and send no reports",
            found=tuple(quote(r.text) for r in records),
            fix=publish_hint(expected),
            publish=expected,
        )
        return
    if len(dmarc) > 1:
        check.add(
            FindingCode.DMARC_MULTIPLE,
            Severity.ERROR,
            name,
            f"{len(dmarc)} DMARC records: receivers ignore them all (RFC 7489 §6.6.3)",
            found=found,
            fix=f"keep one: {publish_hint(expected)}",
            publish=expected,
        )
        return
    try:
        policy = parse_dmarc(dmarc[0])
    except DmarcSyntaxError as error:
        check.add(
            FindingCode.DMARC_SYNTAX,
            Severity.ERROR,
            name,
            f"the DMARC record does not parse: {error}",
            found=found,
            fix=f"replace it: {publish_hint(expected)}",
            publish=expected,
        )
        return
    if not policy.aggregate_reports:
        check.add(
            FindingCode.DMARC_NO_REPORTS,
            Severity.WARNING,
            name,
            "the DMARC record asks for no aggregate reports (rua=): you cannot see who sends as the domain",
            found=found,
            fix=f"add rua=mailto:postmaster@{check.facts.name}",
            publish=expected,
        )
    if policy.warnings:
        check.add(
            FindingCode.DMARC_TAG_DISCARDED,
            Severity.WARNING,
            name,
            "receivers discard part of the DMARC record (RFC 7489 §6.3): " + "; ".join(policy.warnings),
            found=found,
            fix=f"correct or remove those tags; the record to start from: {publish_hint(expected)}",
            publish=expected,
        )
    await check_report_authorization(check, name, (*policy.aggregate_reports, *policy.failure_reports))
    notes = {
        "none": "p=none only monitors: once the reports show all your mail passing, move to p=quarantine, "
        "then p=reject",
        "quarantine": "p=quarantine: failing mail goes to junk; move to p=reject when the reports stay clean",
        "reject": "p=reject: receivers refuse mail that fails DMARC",
    }
    details = [notes[policy.policy]]
    if policy.percent < 100:
        details.append(f"pct={policy.percent} applies the policy to only part of the failing mail")
    if "s" in (policy.dkim_alignment, policy.spf_alignment):
        details.append("strict alignment: the signing and envelope domains must equal the From domain")
    check.add(FindingCode.DMARC_OK, Severity.OK, name, "; ".join(details), found=found)


async def check_report_authorization(check: Check, name: str, uris: Sequence[str]) -> None:
    """RFC 7489 §7.1: a receiver sends reports to another domain only if that domain publishes
    `<domain>._report._dmarc.<its domain>` TXT "v=DMARC1"; without it the reports are lost."""
    domain = check.facts.name
    hosts = dict.fromkeys(
        uri.split("@", 1)[1].split("!", 1)[0].lower().rstrip(".")
        for uri in uris
        if uri.lower().startswith("mailto:") and "@" in uri
    )
    for host in hosts:
        if same_organization(host, domain):  # §7.1: only another organization must authorize
            continue
        authorization = f"{domain}._report._dmarc.{host}"
        records = await check.txt(authorization)
        if records is None or any(is_dmarc_record(r.text) for r in records):
            continue
        check.add(
            FindingCode.DMARC_REPORTS_UNAUTHORIZED,
            Severity.WARNING,
            name,
            f"reports go to {host}, which does not accept them for {domain}: receivers send none",
            fix=f'{host} must publish {authorization} TXT "v=DMARC1" (ask its owner), or send reports to '
            f"an address at {domain}",
            publish=(
                DnsRecord("TXT", authorization, "v=DMARC1", purpose=f"{host} accepts {domain}'s reports"),
            ),
        )
