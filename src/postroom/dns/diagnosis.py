"""Live DNS diagnosis of one accepted domain: what is published, what is wrong, and what to publish instead.

`diagnose_domain` asks the DNS through the `Resolver` seam (always `fresh`: the admin just changed a
record and wants to see it) and compares what it finds with the records `postroom.dns.records` says
the domain needs. The result is a list of typed `Finding`s, one or more per area, each with a stable
`code`, a `severity`, the DNS name it is about, what was found, and the fix: a sentence and, where a
record solves it, the exact records to publish. Areas, in order: the domain itself (NXDOMAIN, a CNAME
at the apex), the ownership proof (pending domains), MX, SPF, DKIM, DMARC, client set-up
(autodiscover, autoconfig), MTA-STS and TLS reporting. Every area reports an `ok` finding when it
passes, so an admin sees what was checked, not only what failed.

Severity: `error` breaks mail flow, authentication or the proof (the CLI exits 1); `warning` is a
weaker set-up than recommended (`~all`, no DMARC, no MTA-STS); `ok` passed. A DNS failure (timeout,
SERVFAIL) is an error of its own code, never a conclusion about the records.

The same checks serve the CLI (`postroom domain check`) and, later, the admin center; nothing here
prints.

*Security:* everything read from DNS (and the MTA-STS policy fetched over HTTPS) is untrusted text:
it is parsed by the strict parsers of `spf`, `dmarc` and `mta_sts`, compared and quoted back (shortened
to `MAX_QUOTE` characters), never evaluated.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum, StrEnum

from postroom.config.settings import ServiceSettings
from postroom.dns.dmarc import DmarcSyntaxError, is_dmarc_record, parse_dmarc
from postroom.dns.mta_sts import FetchedPolicy, MtaStsError, parse_sts_txt
from postroom.dns.records import (
    TXT_STRING_MAX,
    DkimSelector,
    DnsRecord,
    DomainFacts,
    dkim_record,
    domain_records,
)
from postroom.dns.resolver import DnsTemporaryError, MxRecord, NxDomain, Resolver, TxtRecord
from postroom.dns.spf import (
    SpfProblemCode,
    SpfRecord,
    SpfSyntaxError,
    analyze_spf,
    is_spf_record,
    parse_spf,
)

MAX_QUOTE = 300  # characters of a published value quoted back in a finding
PolicyFetcher = Callable[[str], Awaitable[FetchedPolicy]]  # domain -> its MTA-STS policy, fetched


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    OK = "ok"


class FindingCode(StrEnum):
    DNS_UNAVAILABLE = "dns.unavailable"
    DOMAIN_NXDOMAIN = "domain.nxdomain"
    DOMAIN_CNAME_AT_APEX = "domain.cname-at-apex"
    OWNERSHIP_OK = "ownership.ok"
    OWNERSHIP_MISSING = "ownership.missing"
    MX_OK = "mx.ok"
    MX_MISSING = "mx.missing"
    MX_NULL = "mx.null"
    MX_WRONG_HOST = "mx.wrong-host"
    MX_EXTRA = "mx.extra"
    MX_PRIORITY = "mx.priority"
    MX_HOST_NO_ADDRESS = "mx.host-no-address"
    SPF_OK = "spf.ok"
    SPF_MISSING = "spf.missing"
    SPF_MULTIPLE = "spf.multiple"
    SPF_SYNTAX = "spf.syntax"
    SPF_TRUNCATED = "spf.truncated-string"
    SPF_NO_SERVICE_INCLUDE = "spf.no-service-include"
    SPF_PASS_ALL = "spf.pass-all"
    SPF_SOFTFAIL = "spf.softfail"
    SPF_NEUTRAL = "spf.neutral"
    SPF_TOO_MANY_LOOKUPS = SpfProblemCode.TOO_MANY_LOOKUPS.value
    SPF_VOID_LOOKUPS = SpfProblemCode.TOO_MANY_VOID_LOOKUPS.value
    SPF_INCLUDE_LOOP = SpfProblemCode.INCLUDE_LOOP.value
    SPF_INCLUDE_WITHOUT_SPF = SpfProblemCode.INCLUDE_WITHOUT_SPF.value
    SPF_INCLUDE_MULTIPLE = SpfProblemCode.INCLUDE_MULTIPLE.value
    SPF_INCLUDE_SYNTAX = SpfProblemCode.INCLUDE_SYNTAX.value
    SPF_MX_TOO_MANY_HOSTS = SpfProblemCode.MX_TOO_MANY_HOSTS.value
    SPF_PTR = SpfProblemCode.PTR_USED.value
    SPF_DNS_UNAVAILABLE = SpfProblemCode.DNS_UNAVAILABLE.value
    DKIM_OK = "dkim.ok"
    DKIM_MISSING = "dkim.missing"
    DKIM_MISMATCH = "dkim.mismatch"
    DKIM_MULTIPLE = "dkim.multiple"
    DMARC_OK = "dmarc.ok"
    DMARC_MISSING = "dmarc.missing"
    DMARC_MULTIPLE = "dmarc.multiple"
    DMARC_SYNTAX = "dmarc.syntax"
    DMARC_NO_REPORTS = "dmarc.no-reports"
    DMARC_REPORTS_UNAUTHORIZED = "dmarc.reports-unauthorized"
    CLIENT_SETUP_OK = "client-setup.ok"
    CLIENT_SETUP_MISSING = "client-setup.missing"
    CLIENT_SETUP_WRONG = "client-setup.wrong-target"
    MTA_STS_OK = "mta-sts.ok"
    MTA_STS_MISSING = "mta-sts.missing"
    MTA_STS_SYNTAX = "mta-sts.syntax"
    MTA_STS_POLICY_UNAVAILABLE = "mta-sts.policy-unavailable"
    MTA_STS_POLICY_MX = "mta-sts.policy-mx"
    MTA_STS_ID_STALE = "mta-sts.id-stale"
    TLS_RPT_OK = "tls-rpt.ok"
    TLS_RPT_MISSING = "tls-rpt.missing"
    TLS_RPT_SYNTAX = "tls-rpt.syntax"


# SPF problems the analyzer reports that only weaken the record; the others make it fail (permerror).
_SPF_WARNINGS = {SpfProblemCode.PTR_USED}


@dataclass(frozen=True, slots=True)
class Finding:
    """One result of a check: `fix` says what to do, `publish` holds the exact records that fix it."""

    code: FindingCode
    severity: Severity
    name: str  # the DNS name the finding is about
    message: str  # what is wrong (or right), one sentence
    found: tuple[str, ...] = ()  # what DNS holds there, quoted
    fix: str = ""
    publish: tuple[DnsRecord, ...] = ()

    def as_json(self) -> dict[str, object]:
        return {
            "code": self.code.value,
            "severity": self.severity.value,
            "name": self.name,
            "message": self.message,
            "found": list(self.found),
            "fix": self.fix,
            "publish": [record.as_json() for record in self.publish],
        }


@dataclass(frozen=True, slots=True)
class DomainDiagnosis:
    domain: str
    findings: tuple[Finding, ...]

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity is Severity.ERROR)

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity is Severity.WARNING)

    def as_json(self) -> dict[str, object]:
        return {
            "domain": self.domain,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "findings": [finding.as_json() for finding in self.findings],
        }

    def codes(self) -> list[str]:
        return [finding.code.value for finding in self.findings]

    def find(self, code: FindingCode) -> Finding:
        """The first finding of `code`; KeyError when there is none."""
        for finding in self.findings:
            if finding.code is code:
                return finding
        raise KeyError(f"no {code.value} finding; found {', '.join(self.codes())}")


def _quote(text: str) -> str:
    return text if len(text) <= MAX_QUOTE else text[: MAX_QUOTE - 1] + "…"


def _publish_hint(records: Sequence[DnsRecord]) -> str:
    """`publish MX contoso.com` for a fix sentence; the values are in the finding's `publish`."""
    return "publish " + " and ".join(dict.fromkeys(f"{r.type} {r.name}" for r in records)) + " (below)"


@dataclass(slots=True)
class _Check:
    """One run of the checks: what is expected, and the findings so far."""

    resolver: Resolver
    service: ServiceSettings
    facts: DomainFacts
    fetch_policy: PolicyFetcher | None
    expected: list[DnsRecord]
    findings: list[Finding] = field(default_factory=list)
    _mx: list[MxRecord] | DnsTemporaryError | None = None

    async def mx(self) -> list[MxRecord]:
        """The domain's MX records (none for NXDOMAIN), asked once: the proof and the MX check read them."""
        if self._mx is None:
            try:
                self._mx = await self.resolver.mx(self.facts.name, fresh=True)
            except NxDomain:
                self._mx = []
            except DnsTemporaryError as error:
                self._mx = error
        if isinstance(self._mx, DnsTemporaryError):
            raise self._mx
        return self._mx

    def add(
        self,
        code: FindingCode,
        severity: Severity,
        name: str,
        message: str,
        *,
        found: tuple[str, ...] = (),
        fix: str = "",
        publish: tuple[DnsRecord, ...] = (),
    ) -> None:
        self.findings.append(Finding(code, severity, name, message, found, fix, publish))

    def expect(self, type_: str, name: str) -> tuple[DnsRecord, ...]:
        return tuple(r for r in self.expected if r.type == type_ and r.name == name)

    def unavailable(self, name: str, error: DnsTemporaryError) -> None:
        self.add(
            FindingCode.DNS_UNAVAILABLE,
            Severity.ERROR,
            name,
            f"DNS could not be asked: {error}",
            fix="nothing is concluded about this record; check the nameservers and run the check again",
        )

    async def txt(self, name: str) -> list[TxtRecord] | None:
        """TXT records at `name` (empty when none or NXDOMAIN); None after reporting a DNS failure."""
        try:
            return await self.resolver.txt(name, fresh=True)
        except NxDomain:
            return []
        except DnsTemporaryError as error:
            self.unavailable(name, error)
            return None


async def diagnose_domain(
    resolver: Resolver,
    service: ServiceSettings,
    facts: DomainFacts,
    *,
    fetch_policy: PolicyFetcher | None = None,
) -> DomainDiagnosis:
    """Check what DNS publishes for the domain against what it needs. `fetch_policy` fetches the MTA-STS
    policy (None: the policy is not fetched and only the TXT record is checked)."""
    check = _Check(resolver, service, facts, fetch_policy, domain_records(service, facts))
    apex = await _check_apex(check)
    if apex is _Apex.NXDOMAIN:  # no name below it exists either: the one finding lists every record
        return DomainDiagnosis(facts.name, tuple(check.findings))
    if apex is _Apex.USABLE:
        await _check_ownership(check)
        await _check_mx(check)
        await _check_spf(check)
    await _check_dkim(check)
    await _check_dmarc(check)
    await _check_client_setup(check)
    await _check_mta_sts(check)
    await _check_tls_rpt(check)
    return DomainDiagnosis(facts.name, tuple(check.findings))


class _Apex(Enum):
    USABLE = "usable"
    NXDOMAIN = "nxdomain"  # nothing else is checked
    UNUSABLE = "unusable"  # a CNAME, or DNS down: the apex's own checks are skipped, the names below checked


async def _check_apex(check: _Check) -> _Apex:
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
        return _Apex.NXDOMAIN
    except DnsTemporaryError as error:
        check.unavailable(name, error)
        return _Apex.UNUSABLE
    if target is not None:
        apex = tuple(r for r in check.expected if r.name == name)
        check.add(
            FindingCode.DOMAIN_CNAME_AT_APEX,
            Severity.ERROR,
            name,
            f"{name} is a CNAME to {target}: a CNAME allows no other record beside it (RFC 1034 §3.6.2), "
            "so the domain can have no MX, SPF or ownership TXT of its own",
            found=(f"CNAME {target}",),
            fix=f"delete the CNAME at {name} and {_publish_hint(apex)}",
            publish=apex,
        )
        return _Apex.UNUSABLE
    return _Apex.USABLE


async def _check_ownership(check: _Check) -> None:
    proof = check.facts.verification_record
    if proof is None:
        return
    name = check.facts.name
    records = await check.txt(name)
    if records is None:
        return
    found = tuple(_quote(r.text) for r in records)
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
    if await _proof_mx(check):
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
        fix=f"{_publish_hint(expected)}, then run `postroom domain verify {name}`",
        publish=expected,
    )


async def _proof_mx(check: _Check) -> bool:
    """Whether the pending domain publishes the fallback proof, an MX naming `verification_mx`."""
    if check.facts.verification_mx is None:
        return False
    try:
        records = await check.mx()
    except DnsTemporaryError:
        return False  # the MX check reports it
    return any(r.exchange == check.facts.verification_mx for r in records)


async def _check_mx(check: _Check) -> None:
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
    fix_all = f"{_publish_hint(expected)} and delete every other MX record of {name}"
    if not records:
        check.add(
            FindingCode.MX_MISSING,
            Severity.ERROR,
            name,
            f"{name} has no MX record: senders fall back to its address; its mail does not reach us",
            fix=_publish_hint(expected),
            publish=expected,
        )
    elif any(r.is_null for r in records):
        check.add(
            FindingCode.MX_NULL,
            Severity.ERROR,
            name,
            f"{name} publishes the null MX '0 .' (RFC 7505): it tells every sender the domain takes no mail",
            found=found,
            fix=f"delete the null MX and {_publish_hint(expected)}",
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
            fix=_publish_hint(expected),
            publish=expected,
        )
    else:
        check.add(FindingCode.MX_OK, Severity.OK, name, f"the only MX is {want}", found=found)
    if ours:
        await _check_mx_host(check, want)


async def _check_mx_host(check: _Check, host: str) -> None:
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


def _merged_spf(check: _Check, published: Sequence[str]) -> DnsRecord:
    """One SPF record: the senders of the published records (in a stable order, whatever order DNS
    answered in), then the terms Postroom needs (its include last), then -all. Broken terms, `all`,
    `redirect=` and `exp=` are not carried over."""
    expected = check.expect("TXT", check.facts.name)
    spf = next(r for r in expected if is_spf_record(r.value))
    ours = spf.value.split()[1:]
    terms: list[str] = []
    for text in sorted(published):
        for term in text.split()[1:]:
            bare = term.lstrip("+-~?").lower()
            if bare == "all" or bare.startswith(("redirect=", "exp=")) or term in terms or term in ours:
                continue
            try:
                parse_spf(f"v=spf1 {term}")
            except SpfSyntaxError:
                continue  # a broken term is dropped, not copied into the fix
            terms.append(term)
    return DnsRecord("TXT", spf.name, " ".join(["v=spf1", *terms, *ours]), purpose=spf.purpose)


async def _check_spf(check: _Check) -> None:
    name = check.facts.name
    records = await check.txt(name)
    if records is None:
        return
    spf_records = [r for r in records if is_spf_record(r.text)]
    texts = [r.text for r in spf_records]
    merged = _merged_spf(check, texts)
    if not spf_records:
        check.add(
            FindingCode.SPF_MISSING,
            Severity.ERROR,
            name,
            f"{name} has no SPF record: receivers cannot tell Postroom may send for it",
            found=tuple(_quote(r.text) for r in records),
            fix=_publish_hint([merged]),
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
            found=tuple(_quote(t) for t in texts),
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
    # A provider that cuts a long value leaves one last string of exactly 255 octets and no all term.
    if len(record.strings[-1]) == TXT_STRING_MAX and (
        parsed is None or (parsed.all_term is None and parsed.redirect is None)
    ):
        kept_text, _, cut = record.text.rpartition(" ")
        kept = _merged_spf(check, [kept_text])
        check.add(
            FindingCode.SPF_TRUNCATED,
            Severity.ERROR,
            name,
            f"the SPF record ends in a string of exactly {TXT_STRING_MAX} octets with no all term: the DNS "
            f"host cut a longer value, in the middle of {cut!r}; add back any sender named after it",
            found=(_quote(record.text),),
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
            found=(_quote(record.text),),
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
            found=(_quote(record.text),),
            fix=f"add {include} before the all term (below)",
            publish=(merged,),
        )
    # No all term is neutral too, unless a redirect decides (RFC 7208 §6.1).
    qualifier = (
        parsed.all_term.qualifier if parsed.all_term is not None else "?" if not parsed.redirect else ""
    )
    if qualifier in _ALL_TERM_FINDINGS:
        code, severity, message, fix = _ALL_TERM_FINDINGS[qualifier]
        check.add(code, severity, name, message, found=(_quote(record.text),), fix=fix, publish=(merged,))
    analysis = await analyze_spf(check.resolver, name, parsed)
    for problem in analysis.problems:
        severity = Severity.WARNING if problem.code in _SPF_WARNINGS else Severity.ERROR
        check.add(
            FindingCode(problem.code.value),
            severity,
            problem.domain,
            problem.detail,
            found=(_quote(record.text),),
            fix=_SPF_FIXES[problem.code],
        )
    if len(check.findings) == findings_before:
        check.add(
            FindingCode.SPF_OK,
            Severity.OK,
            name,
            f"one SPF record, including {check.service.spf_include}, {analysis.lookups} of 10 DNS lookups",
            found=(_quote(record.text),),
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


def _dkim_key_of(text: str) -> str | None:
    """The p= tag of a DKIM key record, whitespace removed; None when the record has none."""
    for part in text.split(";"):
        tag, _, value = part.strip().partition("=")
        if tag.strip() == "p":
            return "".join(value.split())
    return None


async def _check_dkim(check: _Check) -> None:
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
    found = tuple(_quote(t) for t in keys)
    if not keys:
        return Finding(
            FindingCode.DKIM_MISSING,
            severity,
            name,
            f"no DKIM key is published for selector {selector.selector}, which {role}",
            tuple(_quote(r.text) for r in records),
            _publish_hint(expected),
            expected,
        )
    if len(keys) > 1:
        return Finding(
            FindingCode.DKIM_MULTIPLE,
            severity,
            name,
            f"{len(keys)} DKIM key records at selector {selector.selector}: verifiers fail on it",
            found,
            f"delete them and {_publish_hint(expected)}",
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
            f"replace it: {_publish_hint(expected)}",
            expected,
        )
    return Finding(
        FindingCode.DKIM_OK,
        Severity.OK,
        name,
        f"selector {selector.selector} ({role}) publishes the key held",
    )


async def _check_dmarc(check: _Check) -> None:
    name = f"_dmarc.{check.facts.name}"
    expected = check.expect("TXT", name)
    records = await check.txt(name)
    if records is None:
        return
    dmarc = [r.text for r in records if is_dmarc_record(r.text)]
    found = tuple(_quote(t) for t in dmarc)
    if not dmarc:
        check.add(
            FindingCode.DMARC_MISSING,
            Severity.WARNING,
            name,
            "no DMARC record: receivers apply no policy to mail failing SPF and DKIM, and send no reports",
            found=tuple(_quote(r.text) for r in records),
            fix=_publish_hint(expected),
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
            fix=f"keep one: {_publish_hint(expected)}",
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
            fix=f"replace it: {_publish_hint(expected)}",
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
    await _check_report_authorization(check, name, (*policy.aggregate_reports, *policy.failure_reports))
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


def _related(a: str, b: str) -> bool:
    """Whether one domain is the other or below it: reports between them need no authorization."""
    return a == b or a.endswith("." + b) or b.endswith("." + a)


async def _check_report_authorization(check: _Check, name: str, uris: Sequence[str]) -> None:
    """RFC 7489 §7.1: a receiver sends reports to another domain only if that domain publishes
    `<domain>._report._dmarc.<its domain>` TXT "v=DMARC1"; without it the reports are lost."""
    domain = check.facts.name
    hosts = dict.fromkeys(
        uri.split("@", 1)[1].split("!", 1)[0].lower().rstrip(".")
        for uri in uris
        if uri.lower().startswith("mailto:") and "@" in uri
    )
    for host in hosts:
        if _related(host, domain):
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


async def _check_client_setup(check: _Check) -> None:
    host = check.service.hostname
    for label in ("autodiscover", "autoconfig"):
        name = f"{label}.{check.facts.name}"
        expected = check.expect("CNAME", name)
        try:
            target = await check.resolver.cname(name, fresh=True)
        except NxDomain:
            target = None
        except DnsTemporaryError as error:
            check.unavailable(name, error)
            continue
        if target is None:
            check.add(
                FindingCode.CLIENT_SETUP_MISSING,
                Severity.WARNING,
                name,
                f"no {label} CNAME: mail clients cannot find their settings by themselves",
                fix=_publish_hint(expected),
                publish=expected,
            )
        elif target != host:
            check.add(
                FindingCode.CLIENT_SETUP_WRONG,
                Severity.WARNING,
                name,
                f"{name} points at {target}, not at {host}",
                found=(f"CNAME {target}",),
                fix=f"replace it: {_publish_hint(expected)}",
                publish=expected,
            )
        else:
            check.add(FindingCode.CLIENT_SETUP_OK, Severity.OK, name, f"{label} points at {host}")


async def _check_mta_sts(check: _Check) -> None:
    domain = check.facts.name
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
            fix=_publish_hint(expected),
            publish=expected,
        )
        return
    found = tuple(_quote(t) for t in sts)
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
            fix=f"replace it: {_publish_hint(expected_txt)}",
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
        check.add(
            FindingCode.MTA_STS_POLICY_UNAVAILABLE,
            Severity.ERROR,
            fetched.url,
            f"the MTA-STS record is published but the policy cannot be had: {fetched.error}",
            found=found,
            fix=f"{_publish_hint(expected[:1])} so that Postroom serves the policy, with a certificate for "
            f"mta-sts.{domain} (see docs/dns.md), or delete {name}",
            publish=expected[:1],
        )
        return
    mx_host = check.service.mx_host(check.facts.domain_key)
    if not fetched.policy.matches(mx_host):
        check.add(
            FindingCode.MTA_STS_POLICY_MX,
            Severity.ERROR,
            fetched.url,
            f"the MTA-STS policy names {', '.join(fetched.policy.mx)} but not the MX {mx_host}: senders that "
            "enforce it refuse to deliver",
            found=(_quote(fetched.text),),
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
            fix=f"replace it: {_publish_hint(expected_txt)}",
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


async def _check_tls_rpt(check: _Check) -> None:
    name = f"_smtp._tls.{check.facts.name}"
    expected = check.expect("TXT", name)
    records = await check.txt(name)
    if records is None:
        return
    reports = [r.text for r in records if r.text.replace(" ", "").lower().startswith("v=tlsrptv1")]
    found = tuple(_quote(t) for t in reports)
    if not reports:
        check.add(
            FindingCode.TLS_RPT_MISSING,
            Severity.WARNING,
            name,
            "no TLS reporting record: you are not told when senders fail to reach the domain over TLS",
            fix=_publish_hint(expected),
            publish=expected,
        )
        return
    tags = dict(
        (part.split("=", 1)[0].strip().lower(), part.split("=", 1)[1].strip())
        for part in reports[0].split(";")
        if "=" in part
    )
    uris = [u.strip() for u in tags.get("rua", "").split(",") if u.strip()]
    if len(reports) > 1 or not uris or not all(u.lower().startswith(("mailto:", "https:")) for u in uris):
        check.add(
            FindingCode.TLS_RPT_SYNTAX,
            Severity.ERROR,
            name,
            "the TLS reporting record is not usable: it needs exactly one v=TLSRPTv1 record with "
            "rua=mailto: or rua=https: (RFC 8460 §3)",
            found=found,
            fix=f"replace it: {_publish_hint(expected)}",
            publish=expected,
        )
        return
    check.add(FindingCode.TLS_RPT_OK, Severity.OK, name, f"TLS reports go to {', '.join(uris)}", found=found)
