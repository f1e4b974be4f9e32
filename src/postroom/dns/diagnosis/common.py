"""Findings, their codes and severities, and the state one run of the checks shares.

No I/O but through the `Resolver` the `Check` holds; see the package docstring for the contract.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from postroom.config.settings import ServiceSettings
from postroom.dns.mta_sts import FetchedPolicy
from postroom.dns.records import DnsRecord, DomainFacts
from postroom.dns.resolver import DnsTemporaryError, MxRecord, NxDomain, Resolver, TxtRecord
from postroom.dns.spf import SpfProblemCode

MAX_QUOTE = 300  # characters of a published value quoted back in a finding
PolicyFetcher = Callable[[str], Awaitable[FetchedPolicy]]  # domain -> its MTA-STS policy, fetched


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    OK = "ok"


class FindingCode(StrEnum):
    CHECK_FAILED = "check.failed"
    DNS_UNAVAILABLE = "dns.unavailable"
    DOMAIN_NOT_A_DOMAIN = "domain.not-a-domain"
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
    MX_AT_SCENARIO_HOST = "mx.scenario-host"  # the MX is where the tenant's scenario puts it
    MX_NOT_AT_SCENARIO_HOST = "mx.scenario-mismatch"
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
    DMARC_TAG_DISCARDED = "dmarc.tag-discarded"
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
    # `scenario check` (`scenario.py`): the tenant against the scenario it applied.
    SCENARIO_NONE = "scenario.none"
    SCENARIO_INVALID = "scenario.invalid"
    SPF_SCENARIO_SENDERS = "spf.scenario-senders"
    DOMAIN_TYPE_OK = "domain-type.ok"
    DOMAIN_TYPE_WRONG = "domain-type.wrong"
    DOMAIN_PENDING = "domain.pending"
    CONNECTOR_OK = "connector.ok"
    CONNECTOR_MISSING = "connector.missing"
    CONNECTOR_WRONG_TYPE = "connector.wrong-type"
    CONNECTOR_DISABLED = "connector.disabled"
    CONNECTOR_MISMATCH = "connector.mismatch"
    CONNECTOR_DIFFERS = "connector.differs"
    CONNECTOR_VALIDATED = "connector.validated"
    CONNECTOR_NEVER_VALIDATED = "connector.never-validated"
    CONNECTOR_VALIDATION_FAILED = "connector.validation-failed"
    CONNECTOR_PREVIOUS_SCENARIO = "connector.previous-scenario"


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
    """The findings of one domain. `nameservers_silent`: no nameserver answered the first question, so
    nothing was asked after it (the one finding says so); a sweep need not ask them for other domains."""

    domain: str
    findings: tuple[Finding, ...]
    nameservers_silent: bool = False

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


def quote(text: str) -> str:
    return text if len(text) <= MAX_QUOTE else text[: MAX_QUOTE - 1] + "…"


def publish_hint(records: Sequence[DnsRecord]) -> str:
    """`publish MX contoso.com` for a fix sentence; the values are in the finding's `publish`."""
    return "publish " + " and ".join(dict.fromkeys(f"{r.type} {r.name}" for r in records)) + " (below)"


@dataclass(slots=True)
class Check:
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
