"""A domain's DNS, composed: the directory's state in, the records to publish and the live diagnosis out.

The `dns` room knows records and checks but not the directory; this module gives it the facts of one
accepted domain (`domain_facts`: its domainKey, ownership state and DKIM public keys, the keys made
on first use, and the MX and SPF senders its tenant's scenario expects) and the service's own
(`service_dns_records`), and which domains' mail clients the admin listener sets up
(`serves_mail_clients`, what the `autoconfig`/`autodiscover` CNAMEs lead to). The CLI and the admin
listener call these; nothing here prints.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Sequence

from postroom.app.scenarios import under_scenario
from postroom.config import Settings
from postroom.directory import AcceptedDomain, Directory, DirectoryError, DkimKey, DomainStatus
from postroom.dns import (
    DkimSelector,
    DnsRecord,
    DomainDiagnosis,
    DomainFacts,
    FetchedPolicy,
    Finding,
    FindingCode,
    NotADomainName,
    Resolver,
    Severity,
    diagnose_domain,
    fetch_sts_policy,
    mta_sts_policy,
    service_records,
)
from postroom.model.scope import OPERATOR

CHECK_CONCURRENCY = 8  # domains checked at once by one sweep


def _facts(domain: AcceptedDomain, dkim: tuple[DkimSelector, ...] = ()) -> DomainFacts:
    pending = domain.status is DomainStatus.PENDING
    return DomainFacts(
        name=domain.name,
        domain_key=domain.domain_key,
        verification_record=domain.verification_record if pending else None,
        verification_mx=domain.verification_mx if pending else None,
        dkim=dkim,
        is_default=domain.is_default,
    )


def dkim_selector(key: DkimKey) -> DkimSelector:
    """A directory-held DKIM key as the `dns` room publishes and checks it."""
    return DkimSelector(key.selector, key.public_key, key.active)


def domain_facts(directory: Directory, name: str) -> DomainFacts:
    """The facts of an accepted domain's records (DKIM keys made now when it has none yet), under its
    tenant's scenario (its MX at on-premises or a third party, its SPF senders: `app.scenarios`)."""
    domain = directory.get_domain(OPERATOR, name)
    facts = _facts(domain, tuple(dkim_selector(key) for key in directory.dkim_keys(OPERATOR, domain.name)))
    return under_scenario(facts, directory.applied_scenario(OPERATOR, domain.tenant))


def mta_sts_policy_text(directory: Directory, settings: Settings, domain: str) -> str | None:
    """The MTA-STS policy served for `domain`, or None when it is not a verified accepted domain."""
    try:
        accepted = directory.get_domain(OPERATOR, domain)  # served to anyone: public by design
    except DirectoryError:
        return None
    if accepted.status is not DomainStatus.VERIFIED:
        return None
    facts = under_scenario(_facts(accepted), directory.applied_scenario(OPERATOR, accepted.tenant))
    try:
        return mta_sts_policy(settings.service, facts)
    except NotADomainName:  # stored before the directory refused such names: it has no policy
        return None


def serves_mail_clients(directory: Directory, domain: str) -> bool:
    """Whether mail clients are given their settings for `domain` (autoconfig, Autodiscover): a
    verified accepted domain of any tenant, as for the MTA-STS policy; the answer is the same for
    every address in it."""
    try:
        accepted = directory.get_domain(OPERATOR, domain)  # served to anyone: public by design
    except DirectoryError:
        return False
    return accepted.status is DomainStatus.VERIFIED


def service_dns_records(directory: Directory, settings: Settings) -> list[DnsRecord]:
    """The service zone's records, with the MX and SPF of every tenant's default domain."""
    defaults = [_facts(d) for d in directory.list_domains(OPERATOR) if d.is_default]
    return service_records(settings.service, defaults)


async def check_domains_dns(
    directory: Directory,
    settings: Settings,
    resolver: Resolver,
    names: Sequence[str],
    *,
    policy_port: int = 443,
    policy_tls: bool = True,
    on_checked: Callable[[DomainDiagnosis], None] | None = None,
) -> list[DomainDiagnosis]:
    """Diagnose what DNS publishes for each domain (`CHECK_CONCURRENCY` at a time), in the order given.

    The MTA-STS policy is fetched from `mta-sts.<domain>` on `policy_port`, over HTTPS with certificate
    checks (plain HTTP when not `policy_tls`: a lab whose policy host has no certificate). Once one
    domain finds no nameserver answering, the domains not yet started are not asked: each gets one
    `dns.unavailable` finding saying so, and the sweep ends within about one DNS timeout.
    `on_checked` is called as each domain is done, for progress. Raises `DirectoryError` for a name
    that is not an accepted domain, before any DNS is asked.
    """
    facts = [domain_facts(directory, name) for name in names]
    context = ssl.create_default_context() if policy_tls else None
    slots = asyncio.Semaphore(CHECK_CONCURRENCY)

    async def fetch(domain: str) -> FetchedPolicy:
        return await fetch_sts_policy(resolver, domain, port=policy_port, ssl_context=context)

    silent: list[DomainDiagnosis] = []  # the first diagnosis that found the nameservers silent

    async def check(one: DomainFacts) -> DomainDiagnosis:
        async with slots:
            if silent:
                diagnosis = _not_asked(one.name, silent[0])
            else:
                diagnosis = await diagnose_domain(resolver, settings.service, one, fetch_policy=fetch)
                if diagnosis.nameservers_silent:
                    silent.append(diagnosis)
        if on_checked is not None:
            on_checked(diagnosis)
        return diagnosis

    return list(await asyncio.gather(*(check(one) for one in facts)))


def _not_asked(name: str, silent: DomainDiagnosis) -> DomainDiagnosis:
    cause = silent.findings[0]
    finding = Finding(
        FindingCode.DNS_UNAVAILABLE,
        Severity.ERROR,
        name,
        f"not checked: no nameserver answered when {silent.domain} was checked ({cause.message})",
        fix=cause.fix,
    )
    return DomainDiagnosis(name, (finding,), nameservers_silent=True)
