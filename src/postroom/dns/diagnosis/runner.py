"""The runner: every area's checks of one domain, in order, into one `DomainDiagnosis`.

It never raises: a name that cannot publish records gives one `domain.not-a-domain` finding; no
answer from any nameserver to the first question gives one `dns.unavailable` and nothing else is asked;
an unexpected exception in any area ends the check with the findings so far and one `check.failed`
naming it (logged with its traceback), so a sweep of every domain goes on with the next.
"""

from __future__ import annotations

import logging

from postroom.config.settings import ServiceSettings
from postroom.dns.diagnosis.apex import Apex, check_apex, check_ownership
from postroom.dns.diagnosis.client_setup import check_client_setup
from postroom.dns.diagnosis.common import (
    Check,
    DomainDiagnosis,
    Finding,
    FindingCode,
    PolicyFetcher,
    Severity,
)
from postroom.dns.diagnosis.dkim import check_dkim
from postroom.dns.diagnosis.dmarc import check_dmarc
from postroom.dns.diagnosis.mta_sts import check_mta_sts
from postroom.dns.diagnosis.mx import check_mx
from postroom.dns.diagnosis.spf import check_spf
from postroom.dns.diagnosis.tls_rpt import check_tls_rpt
from postroom.dns.records import DomainFacts, NotADomainName, domain_records
from postroom.dns.resolver import Resolver

_log = logging.getLogger(__name__)


async def diagnose_domain(
    resolver: Resolver,
    service: ServiceSettings,
    facts: DomainFacts,
    *,
    fetch_policy: PolicyFetcher | None = None,
) -> DomainDiagnosis:
    """Check what DNS publishes for the domain against what it needs. `fetch_policy` fetches the MTA-STS
    policy (None: the policy is not fetched and only the TXT record is checked)."""
    try:
        expected = domain_records(service, facts)
    except NotADomainName as error:
        finding = Finding(
            FindingCode.DOMAIN_NOT_A_DOMAIN,
            Severity.ERROR,
            facts.name,
            str(error),
            fix=f"remove it (`postroom domain remove {facts.name}`) and add the domain by its name",
        )
        return DomainDiagnosis(facts.name, (finding,))
    check = Check(resolver, service, facts, fetch_policy, expected)
    silent = False
    try:
        silent = await _run(check)
    except Exception as error:  # one domain's failure must not end a sweep of them all
        _log.exception("the DNS check of %s failed", facts.name)
        check.add(
            FindingCode.CHECK_FAILED,
            Severity.ERROR,
            facts.name,
            f"the check stopped on an unexpected error ({type(error).__name__}: {error}); the findings "
            "above are those made before it",
            fix="run the check again; if it fails the same way, report it with the node's log",
        )
    return DomainDiagnosis(facts.name, tuple(check.findings), nameservers_silent=silent)


async def _run(check: Check) -> bool:
    """Every area's checks; True when no nameserver answered the first question and nothing was asked."""
    apex = await check_apex(check)
    if apex in (Apex.NXDOMAIN, Apex.SILENT):  # NXDOMAIN: the one finding lists every record
        return apex is Apex.SILENT
    if apex is Apex.USABLE:
        await check_ownership(check)
        await check_mx(check)
        await check_spf(check)
    if check.facts.is_default:  # the service publishes its MX and SPF only (`domain_records`)
        return False
    await check_dkim(check)
    await check_dmarc(check)
    await check_client_setup(check)
    await check_mta_sts(check)
    await check_tls_rpt(check)
    return False
