"""The domain's SPF record: one, parsable, with the service's include, an `all` term, within the limits;
the fix merges what is published into one valid record.

*Security:* records are parsed by `postroom.dns.spf`, never evaluated; a malformed term is a finding.
"""

from __future__ import annotations

from collections.abc import Sequence

from postroom.dns.diagnosis.common import Check, FindingCode, Severity, publish_hint, quote
from postroom.dns.records import TXT_STRING_MAX, DnsRecord
from postroom.dns.spf import SpfProblemCode, SpfRecord, SpfSyntaxError, analyze_spf, is_spf_record, parse_spf

# SPF problems the analyzer reports that only weaken the record; the others make it fail (permerror).
_SPF_WARNINGS = {SpfProblemCode.PTR_USED}


def merged_spf(check: Check, published: Sequence[str]) -> DnsRecord:
    """One SPF record: the senders of the published records (in a stable order, whatever order DNS
    answered in), then the terms Postroom needs (its include last), then -all. No valid sender is lost:
    a `redirect=` in effect (a record without `all`) becomes an include of the same domain; only broken
    terms, `all` and `exp=` (an explanation, no sender) are not carried over."""
    expected = check.expect("TXT", check.facts.name)
    spf = next(r for r in expected if is_spf_record(r.value))
    ours = spf.value.split()[1:]
    terms: list[str] = []
    for text in sorted(published):
        words = text.split()[1:]
        has_all = any(word.lstrip("+-~?").lower() == "all" for word in words)
        for term in words:
            bare = term.lstrip("+-~?").lower()
            if bare.startswith("redirect=") and not has_all:
                term = "include:" + term.split("=", 1)[1]  # what it names sends for the domain
            elif bare == "all" or bare.startswith(("redirect=", "exp=")):
                continue
            if term in terms or term in ours:
                continue
            try:
                parse_spf(f"v=spf1 {term}")
            except SpfSyntaxError:
                continue  # a broken term is dropped, not copied into the fix
            terms.append(term)
    return DnsRecord("TXT", spf.name, " ".join(["v=spf1", *terms, *ours]), purpose=spf.purpose)


async def check_spf(check: Check) -> None:
    name = check.facts.name
    records = await check.txt(name)
    if records is None:
        return
    spf_records = [r for r in records if is_spf_record(r.text)]
    texts = [r.text for r in spf_records]
    merged = merged_spf(check, texts)
    if not spf_records:
        check.add(
            FindingCode.SPF_MISSING,
            Severity.ERROR,
            name,
            f"{name} has no SPF record: receivers cannot tell Postroom may send for it",
            found=tuple(quote(r.text) for r in records),
            fix=publish_hint([merged]),
            publish=(merged,),
        )
        return
    if len(spf_records) > 1:
        check.add(
            FindingCode.SPF_MULTIPLE,
            Severity.ERROR,
            name,
            f"{name} has {len(spf_records)} SPF records; two or more make every receiver fail SPF "
            "(permerror) for all of them",
            found=tuple(quote(t) for t in texts),
            fix="delete them all and publish one record that merges them (below)",
            publish=(merged,),
        )
        return
    record = spf_records[0]
    error: SpfSyntaxError | None = None
    try:
        parsed: SpfRecord | None = parse_spf(record.text)
    except SpfSyntaxError as raised:
        parsed, error = None, raised
    # A provider that cuts a long value leaves one last string of exactly 255 octets, cut in the middle
    # of a term. A record that parses may be exactly that long on purpose: it is judged as it stands.
    if len(record.strings[-1]) == TXT_STRING_MAX and parsed is None:
        cut = record.text.rpartition(" ")[2]
        kept = merged_spf(check, [record.text])  # every term that parses is kept
        check.add(
            FindingCode.SPF_TRUNCATED,
            Severity.ERROR,
            name,
            f"the SPF record ends in a string of exactly {TXT_STRING_MAX} octets that does not parse: the "
            f"DNS host cut a longer value, in the middle of {cut!r}; add back any sender named after it",
            found=(quote(record.text),),
            fix="enter the record as several quoted strings of at most 255 octets each (they are joined "
            "with nothing between them), as below",
            publish=(kept,),
        )
        return
    if parsed is None:
        joined = (
            "; the strings of a TXT record are joined with nothing between them, so end each one with a space"
            if len(record.strings) > 1
            else ""
        )
        check.add(
            FindingCode.SPF_SYNTAX,
            Severity.ERROR,
            name,
            f"the SPF record does not parse: {error}{joined}",
            found=(quote(record.text),),
            fix="replace it with the record below",
            publish=(merged,),
        )
        return
    findings_before = len(check.findings)
    include = f"include:{check.service.spf_include}"
    if check.service.spf_include.lower() not in [i.lower() for i in parsed.includes]:
        check.add(
            FindingCode.SPF_NO_SERVICE_INCLUDE,
            Severity.ERROR,
            name,
            f"the SPF record does not include {check.service.spf_include}: mail Postroom sends for {name} "
            "fails SPF",
            found=(quote(record.text),),
            fix=f"add {include} before the all term (below)",
            publish=(merged,),
        )
    # No all term is neutral too, unless a redirect decides (RFC 7208 §6.1).
    qualifier = (
        parsed.all_term.qualifier if parsed.all_term is not None else "?" if not parsed.redirect else ""
    )
    if qualifier in _ALL_TERM_FINDINGS:
        code, severity, message, fix = _ALL_TERM_FINDINGS[qualifier]
        check.add(code, severity, name, message, found=(quote(record.text),), fix=fix, publish=(merged,))
    analysis = await analyze_spf(check.resolver, name, parsed)
    for problem in analysis.problems:
        severity = Severity.WARNING if problem.code in _SPF_WARNINGS else Severity.ERROR
        check.add(
            FindingCode(problem.code.value),
            severity,
            problem.domain,
            problem.detail,
            found=(quote(record.text),),
            fix=_SPF_FIXES[problem.code],
        )
    if len(check.findings) == findings_before:
        check.add(
            FindingCode.SPF_OK,
            Severity.OK,
            name,
            f"one SPF record, including {check.service.spf_include}, {analysis.lookups} of 10 DNS lookups",
            found=(quote(record.text),),
        )


# What the qualifier of the all term says about every other host, when that is too little.
_ALL_TERM_FINDINGS = {
    "+": (
        FindingCode.SPF_PASS_ALL,
        Severity.ERROR,
        "the SPF record ends in +all: every host on the internet passes SPF for the domain",
        "end it with -all (below)",
    ),
    "~": (
        FindingCode.SPF_SOFTFAIL,
        Severity.WARNING,
        "the SPF record ends in ~all (soft fail): receivers accept mail from other hosts, marked",
        "once every sender is listed, end it with -all (below)",
    ),
    "?": (
        FindingCode.SPF_NEUTRAL,
        Severity.WARNING,
        "the SPF record says nothing about other hosts (?all or no all term): SPF protects nothing",
        "end it with -all (below)",
    ),
}

_SPF_FIXES = {
    SpfProblemCode.TOO_MANY_LOOKUPS: "receivers stop at 10 DNS lookups and fail SPF (permerror): remove "
    "includes of services that no longer send for you, or replace an include with the ip4:/ip6: ranges "
    "it lists",
    SpfProblemCode.TOO_MANY_VOID_LOOKUPS: "receivers fail SPF after 2 lookups that find nothing: remove the "
    "include, a, mx or exists terms that name domains without records",
    SpfProblemCode.INCLUDE_LOOP: "remove the include or redirect that leads back to a domain already on "
    "the chain",
    SpfProblemCode.INCLUDE_WITHOUT_SPF: "an include or redirect must name a domain with an SPF record: fix "
    "the name or remove the term",
    SpfProblemCode.INCLUDE_MULTIPLE: "the included domain publishes two SPF records, so the include fails: "
    "ask its owner to merge them, or remove the include",
    SpfProblemCode.INCLUDE_SYNTAX: "the included domain's SPF record does not parse: ask its owner to fix "
    "it, or remove the include",
    SpfProblemCode.MX_TOO_MANY_HOSTS: "an mx term may name at most 10 MX hosts: list the senders with "
    "ip4:/ip6: instead",
    SpfProblemCode.PTR_USED: "ptr is deprecated (RFC 7208 §5.5) and slow: list the senders with ip4:/ip6: "
    "instead",
    SpfProblemCode.DNS_UNAVAILABLE: "part of the record could not be checked: check the nameservers and "
    "run the check again",
}
