"""The runner: every area's checks of one domain, in order, into one `DomainDiagnosis`."""

from __future__ import annotations

from postroom.config.settings import ServiceSettings
from postroom.dns.diagnosis.apex import Apex, check_apex, check_ownership
from postroom.dns.diagnosis.client_setup import check_client_setup
from postroom.dns.diagnosis.common import (
    Check,
    DomainDiagnosis,
    PolicyFetcher,
)
from postroom.dns.diagnosis.dkim import check_dkim
from postroom.dns.diagnosis.dmarc import check_dmarc
from postroom.dns.diagnosis.mta_sts import check_mta_sts
from postroom.dns.diagnosis.mx import check_mx
from postroom.dns.diagnosis.spf import check_spf
from postroom.dns.diagnosis.tls_rpt import check_tls_rpt
from postroom.dns.records import (
    DomainFacts,
    domain_records,
)
from postroom.dns.resolver import Resolver


async def diagnose_domain(
    resolver: Resolver,
    service: ServiceSettings,
    facts: DomainFacts,
    *,
    fetch_policy: PolicyFetcher | None = None,
) -> DomainDiagnosis:
    """Check what DNS publishes for the domain against what it needs. `fetch_policy` fetches the MTA-STS
    policy (None: the policy is not fetched and only the TXT record is checked)."""
    check = Check(resolver, service, facts, fetch_policy, domain_records(service, facts))
    apex = await check_apex(check)
    if apex is Apex.NXDOMAIN:  # no name below it exists either: the one finding lists every record
        return DomainDiagnosis(facts.name, tuple(check.findings))
    if apex is Apex.USABLE:
        await check_ownership(check)
        await check_mx(check)
        await check_spf(check)
    await check_dkim(check)
    await check_dmarc(check)
    await check_client_setup(check)
    await check_mta_sts(check)
    await check_tls_rpt(check)
    return DomainDiagnosis(facts.name, tuple(check.findings))
