"""The live DNS checks against a real DNS server on loopback: a correct zone, and broken ones.

Each broken zone starts from the records Postroom says to publish (`domain_records`, as `--zone`
prints them) and breaks one thing, as customers do; each case asserts the finding's code, severity and
the record it proposes instead. The MTA-STS policy is fetched through an in-memory twin of the HTTPS
fetch here (the real fetch against the admin listener is tested in `test_mta_sts.py` and in the CLI
round trip).
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from postroom.config.settings import DnsSettings, ServiceSettings
from postroom.directory.dkim import generate_key_pair
from postroom.dns import (
    DkimSelector,
    DnsRecord,
    DnsResolver,
    DomainDiagnosis,
    DomainFacts,
    FetchedPolicy,
    FindingCode,
    PolicyFetcher,
    Severity,
    diagnose_domain,
    domain_records,
    mta_sts_policy,
    service_records,
)
from postroom.dns.mta_sts import parse_sts_policy, render_sts_policy
from support.dns_server import DnsTestServer, silent_nameserver
from support.garbled import garbled_terms

SERVICE = ServiceSettings(domain="postroom.test", hostname="mx.postroom.test", addresses=("127.0.0.1",))
DOMAIN = "contoso.example"
MX_HOST = "contoso-example.mail.protection.postroom.test"
SPF = "v=spf1 include:spf.protection.postroom.test -all"
KEYS = (generate_key_pair(), generate_key_pair())
FACTS = DomainFacts(
    name=DOMAIN,
    domain_key="contoso-example",
    verification_record=None,
    dkim=(
        DkimSelector("postroom1", KEYS[0].public_key, active=True),
        DkimSelector("postroom2", KEYS[1].public_key, active=False),
    ),
)
PENDING = dataclasses.replace(
    FACTS,
    verification_record="postroom-verification=5f0c2a9e",
    verification_mx="postroom-verification-5f0c2a9e.invalid",
)
GOOD = domain_records(SERVICE, FACTS)
VENDORS = """\
a       IN TXT "v=spf1 include:b.vendors.example. a mx -all"
a       IN A   192.0.2.1
a       IN MX  10 a.vendors.example.
b       IN TXT "v=spf1 include:c.vendors.example. a mx -all"
b       IN A   192.0.2.2
b       IN MX  10 b.vendors.example.
c       IN TXT "v=spf1 a mx a:host.vendors.example. -all"
c       IN A   192.0.2.3
c       IN MX  10 c.vendors.example.
host    IN A   192.0.2.4
loop1   IN TXT "v=spf1 include:loop2.vendors.example. -all"
loop2   IN TXT "v=spf1 include:loop1.vendors.example. -all"
badcidr IN TXT "v=spf1 mx/1/2 -all"
"""


def zone(records: list[DnsRecord]) -> str:
    """What `postroom domain records --zone` prints, without the comments."""
    return "\n".join(record.zone_line() for record in records) + "\n"


def published(policy: str) -> PolicyFetcher:
    async def fetch(domain: str) -> FetchedPolicy:
        return FetchedPolicy(
            url=f"https://mta-sts.{domain}/.well-known/mta-sts.txt",
            status=200,
            content_type="text/plain",
            text=policy,
            policy=parse_sts_policy(policy),
        )

    return fetch


@pytest.fixture
def server() -> Iterator[DnsTestServer]:
    """The service's zone, the domain's correct zone, and the third parties its SPF may include."""
    service = [*service_records(SERVICE, []), DnsRecord("A", MX_HOST, "127.0.0.1")]
    with DnsTestServer(
        {"postroom.test": zone(service), DOMAIN: zone(GOOD), "vendors.example": VENDORS}
    ) as started:
        yield started


async def diagnose(
    server: DnsTestServer, facts: DomainFacts = FACTS, policy: str | None = None
) -> DomainDiagnosis:
    return await diagnose_domain(
        DnsResolver(server.settings()),
        SERVICE,
        facts,
        fetch_policy=published(policy or mta_sts_policy(SERVICE, FACTS)),
    )


def set_txt(server: DnsTestServer, name: str, *values: str) -> None:
    server.remove_records(name, "TXT")
    for value in values:
        server.add_txt(name, value)


def set_spf(server: DnsTestServer, *values: str) -> None:
    set_txt(server, DOMAIN, *values)


def set_mx(server: DnsTestServer, *values: str) -> None:
    server.remove_records(DOMAIN, "MX")
    if values:
        server.add_records(DOMAIN, "MX", *values)


def cname_at_apex(server: DnsTestServer) -> None:
    server.remove_zone(DOMAIN)
    server.set_zone("example", "contoso IN CNAME sites.hosting.example.\n")


def no_domain(server: DnsTestServer) -> None:
    server.remove_zone(DOMAIN)
    server.set_zone("example", "fabrikam IN A 192.0.2.80\n")


# 300 octets; cut at 255 in the middle of the last address, which the fix cannot know and leaves out.
LONG_SPF = (
    "v=spf1 "
    + " ".join(f"ip4:198.51.100.{host}" for host in range(10, 24))
    + " include:spf.protection.postroom.test -all"
)
LONG_SPF_KEPT = (
    "v=spf1 "
    + " ".join(f"ip4:198.51.100.{host}" for host in range(10, 23))
    + " include:spf.protection.postroom.test -all"
)
assert len(LONG_SPF) == 300


@dataclass(frozen=True)
class Broken:
    id: str
    breaks: Callable[[DnsTestServer], None]
    code: FindingCode
    severity: Severity
    fix: str  # a phrase the fix must hold
    publish: tuple[str, ...] = ()  # the values of the records it proposes
    facts: DomainFacts = FACTS
    found: tuple[str, ...] = ()  # values the finding must quote


BROKEN = [
    Broken(
        "two SPF records",
        lambda s: set_spf(s, SPF, "v=spf1 ip4:198.51.100.7 include:a.vendors.example ~all"),
        FindingCode.SPF_MULTIPLE,
        Severity.ERROR,
        "publish one record that merges them",
        ("v=spf1 ip4:198.51.100.7 include:a.vendors.example include:spf.protection.postroom.test -all",),
        found=(SPF, "v=spf1 ip4:198.51.100.7 include:a.vendors.example ~all"),
    ),
    Broken(
        "SPF without the service include",
        lambda s: set_spf(s, "v=spf1 ip4:198.51.100.7 -all"),
        FindingCode.SPF_NO_SERVICE_INCLUDE,
        Severity.ERROR,
        "add include:spf.protection.postroom.test before the all term",
        ("v=spf1 ip4:198.51.100.7 include:spf.protection.postroom.test -all",),
    ),
    Broken(
        "SPF redirect without the service include",
        lambda s: set_spf(s, "v=spf1 ip4:198.51.100.7 redirect=a.vendors.example"),
        FindingCode.SPF_NO_SERVICE_INCLUDE,
        Severity.ERROR,
        "add include:spf.protection.postroom.test",
        ("v=spf1 ip4:198.51.100.7 include:a.vendors.example include:spf.protection.postroom.test -all",),
    ),
    Broken(
        "SPF +all",
        lambda s: set_spf(s, "v=spf1 include:spf.protection.postroom.test +all"),
        FindingCode.SPF_PASS_ALL,
        Severity.ERROR,
        "end it with -all",
        (SPF,),
    ),
    Broken(
        "SPF ~all",
        lambda s: set_spf(s, "v=spf1 include:spf.protection.postroom.test ~all"),
        FindingCode.SPF_SOFTFAIL,
        Severity.WARNING,
        "end it with -all",
        (SPF,),
    ),
    Broken(
        "SPF 11 lookups through nested includes",
        lambda s: set_spf(s, "v=spf1 include:a.vendors.example include:spf.protection.postroom.test -all"),
        FindingCode.SPF_TOO_MANY_LOOKUPS,
        Severity.ERROR,
        "10 DNS lookups",
    ),
    Broken(
        "SPF include loop",
        lambda s: set_spf(
            s, "v=spf1 include:loop1.vendors.example include:spf.protection.postroom.test -all"
        ),
        FindingCode.SPF_INCLUDE_LOOP,
        Severity.ERROR,
        "leads back to a domain already on the chain",
    ),
    Broken(
        "SPF void lookups",
        lambda s: set_spf(
            s,
            "v=spf1 a:gone1.vendors.example a:gone2.vendors.example a:gone3.vendors.example "
            "include:spf.protection.postroom.test -all",
        ),
        FindingCode.SPF_VOID_LOOKUPS,
        Severity.ERROR,
        "name domains without records",
    ),
    Broken(
        "SPF include of a domain without SPF",
        lambda s: set_spf(s, "v=spf1 include:host.vendors.example include:spf.protection.postroom.test -all"),
        FindingCode.SPF_INCLUDE_WITHOUT_SPF,
        Severity.ERROR,
        "must name a domain with an SPF record",
    ),
    Broken(
        "no SPF record",
        lambda s: set_spf(s, "google-site-verification=abc"),
        FindingCode.SPF_MISSING,
        Severity.ERROR,
        "publish TXT contoso.example",
        (SPF,),
    ),
    Broken(
        "SPF syntax error",
        lambda s: set_spf(s, "v=spf1 ip4:198.51.100.300 include:spf.protection.postroom.test -all"),
        FindingCode.SPF_SYNTAX,
        Severity.ERROR,
        "replace it with",
        (SPF,),
    ),
    Broken(
        "SPF a term with an extra prefix length",
        lambda s: set_spf(s, "v=spf1 a/24/64 include:spf.protection.postroom.test -all"),
        FindingCode.SPF_SYNTAX,
        Severity.ERROR,
        "replace it with",
        (SPF,),
    ),
    Broken(
        "SPF two records, one with an extra prefix length",
        lambda s: set_spf(s, SPF, "v=spf1 a//64/ mx:vendors.example/24 -all"),
        FindingCode.SPF_MULTIPLE,
        Severity.ERROR,
        "publish one record that merges them",
        ("v=spf1 mx:vendors.example/24 include:spf.protection.postroom.test -all",),
    ),
    Broken(
        "SPF include of a record with an extra prefix length",
        lambda s: set_spf(
            s, "v=spf1 include:badcidr.vendors.example include:spf.protection.postroom.test -all"
        ),
        FindingCode.SPF_INCLUDE_SYNTAX,
        Severity.ERROR,
        "does not parse",
    ),
    Broken(
        "SPF of two strings joined without a space",
        lambda s: (
            s.remove_records(DOMAIN, "TXT"),
            s.add_txt(DOMAIN, "v=spf1 ip4:198.51.100.7", "include:spf.protection.postroom.test -all"),
        ),
        FindingCode.SPF_SYNTAX,
        Severity.ERROR,
        "replace it with",
    ),
    Broken(
        "SPF string of 300 octets cut at 255",
        lambda s: (s.remove_records(DOMAIN, "TXT"), s.add_txt(DOMAIN, LONG_SPF, oversize="truncate")),
        FindingCode.SPF_TRUNCATED,
        Severity.ERROR,
        "several quoted strings of at most 255 octets",
        (LONG_SPF_KEPT,),
    ),
    Broken(
        "wrong MX",
        lambda s: set_mx(s, "10 mail.oldhost.example."),
        FindingCode.MX_WRONG_HOST,
        Severity.ERROR,
        "delete every other MX record",
        (MX_HOST,),
        found=("10 mail.oldhost.example",),
    ),
    Broken(
        "an extra MX",
        lambda s: s.add_records(DOMAIN, "MX", "10 backup.oldhost.example."),
        FindingCode.MX_EXTRA,
        Severity.ERROR,
        "delete the MX records for backup.oldhost.example",
        (MX_HOST,),
    ),
    Broken(
        "null MX",
        lambda s: set_mx(s, "0 ."),
        FindingCode.MX_NULL,
        Severity.ERROR,
        "delete the null MX",
        (MX_HOST,),
    ),
    Broken("no MX", lambda s: set_mx(s), FindingCode.MX_MISSING, Severity.ERROR, "publish MX", (MX_HOST,)),
    Broken(
        "MX priority 10",
        lambda s: set_mx(s, f"10 {MX_HOST}."),
        FindingCode.MX_PRIORITY,
        Severity.WARNING,
        "publish MX",
        (MX_HOST,),
    ),
    Broken(
        "the service zone lacks the MX host's address",
        lambda s: (s.remove_records(MX_HOST), s.remove_records("*.mail.protection.postroom.test")),
        FindingCode.MX_HOST_NO_ADDRESS,
        Severity.ERROR,
        "*.mail.protection.postroom.test",
    ),
    Broken(
        "CNAME at apex",
        cname_at_apex,
        FindingCode.DOMAIN_CNAME_AT_APEX,
        Severity.ERROR,
        "delete the CNAME at contoso.example",
        (MX_HOST, SPF),
    ),
    Broken(
        "NXDOMAIN",
        no_domain,
        FindingCode.DOMAIN_NXDOMAIN,
        Severity.ERROR,
        "create its zone",
        tuple(r.value for r in GOOD),
    ),
    Broken(
        "missing ownership TXT",
        lambda s: None,
        FindingCode.OWNERSHIP_MISSING,
        Severity.ERROR,
        "postroom domain verify contoso.example",
        ("postroom-verification=5f0c2a9e",),
        facts=PENDING,
    ),
    Broken(
        "DKIM key mismatch",
        lambda s: set_txt(
            s, f"postroom1._domainkey.{DOMAIN}", f"v=DKIM1; k=rsa; p={generate_key_pair(1024).public_key}"
        ),
        FindingCode.DKIM_MISMATCH,
        Severity.ERROR,
        "replace it",
        (FACTS.dkim[0].record_value,),
    ),
    Broken(
        "DKIM rotation key missing",
        lambda s: s.remove_records(f"postroom2._domainkey.{DOMAIN}"),
        FindingCode.DKIM_MISSING,
        Severity.WARNING,
        "publish TXT postroom2._domainkey.contoso.example",
        (FACTS.dkim[1].record_value,),
    ),
    Broken(
        "DMARC syntax error",
        lambda s: set_txt(s, f"_dmarc.{DOMAIN}", "v=DMARC1; p=block; rua=postmaster@contoso.example"),
        FindingCode.DMARC_SYNTAX,
        Severity.ERROR,
        "replace it",
        ("v=DMARC1; p=none; rua=mailto:postmaster@contoso.example",),
    ),
    Broken(
        "DMARC reports to a domain that does not accept them",
        lambda s: set_txt(
            s, f"_dmarc.{DOMAIN}", "v=DMARC1; p=none; rua=mailto:dmarc@reports.vendors.example"
        ),
        FindingCode.DMARC_REPORTS_UNAUTHORIZED,
        Severity.WARNING,
        "contoso.example._report._dmarc.reports.vendors.example",
        ("v=DMARC1",),
    ),
    Broken(
        "DMARC with tags receivers discard",
        lambda s: set_txt(
            s, f"_dmarc.{DOMAIN}", "v=DMARC1; p=reject; pct=150; adkim=x; rua=postmaster@contoso.example"
        ),
        FindingCode.DMARC_TAG_DISCARDED,
        Severity.WARNING,
        "correct or remove those tags",
        ("v=DMARC1; p=none; rua=mailto:postmaster@contoso.example",),
    ),
    Broken(
        "DMARC without p= but with rua=",
        lambda s: set_txt(s, f"_dmarc.{DOMAIN}", "v=DMARC1; rua=mailto:postmaster@contoso.example"),
        FindingCode.DMARC_TAG_DISCARDED,
        Severity.WARNING,
        "correct or remove those tags",
    ),
    Broken(
        "two DMARC records",
        lambda s: set_txt(s, f"_dmarc.{DOMAIN}", "v=DMARC1; p=none", "v=DMARC1; p=reject"),
        FindingCode.DMARC_MULTIPLE,
        Severity.ERROR,
        "keep one",
    ),
    Broken(
        "no DMARC record",
        lambda s: s.remove_records(f"_dmarc.{DOMAIN}"),
        FindingCode.DMARC_MISSING,
        Severity.WARNING,
        "publish TXT _dmarc.contoso.example",
    ),
    Broken(
        "autodiscover elsewhere",
        lambda s: (
            s.remove_records(f"autodiscover.{DOMAIN}"),
            s.add_records(f"autodiscover.{DOMAIN}", "CNAME", "autodiscover.outlook.com."),
        ),
        FindingCode.CLIENT_SETUP_WRONG,
        Severity.WARNING,
        "replace it",
        ("mx.postroom.test",),
    ),
    Broken(
        "MTA-STS id of an older policy",
        lambda s: set_txt(s, f"_mta-sts.{DOMAIN}", "v=STSv1; id=20240101"),
        FindingCode.MTA_STS_ID_STALE,
        Severity.WARNING,
        "replace it",
    ),
    Broken(
        "MTA-STS record syntax error",
        lambda s: set_txt(s, f"_mta-sts.{DOMAIN}", "v=STSv1; id=not valid!"),
        FindingCode.MTA_STS_SYNTAX,
        Severity.ERROR,
        "replace it",
    ),
    Broken(
        "TLS-RPT without a URI scheme",
        lambda s: set_txt(s, f"_smtp._tls.{DOMAIN}", "v=TLSRPTv1; rua=postmaster@contoso.example"),
        FindingCode.TLS_RPT_SYNTAX,
        Severity.ERROR,
        "replace it",
        ("v=TLSRPTv1; rua=mailto:postmaster@contoso.example",),
    ),
]


async def test_the_records_postroom_generates_check_clean(server: DnsTestServer) -> None:
    diagnosis = await diagnose(server)
    assert diagnosis.errors == () and diagnosis.warnings == (), diagnosis.findings
    assert set(diagnosis.codes()) == {
        "mx.ok",
        "spf.ok",
        "dkim.ok",
        "dmarc.ok",
        "client-setup.ok",
        "mta-sts.ok",
        "tls-rpt.ok",
    }


@pytest.mark.parametrize("case", BROKEN, ids=[case.id for case in BROKEN])
async def test_each_broken_zone_gets_its_finding_and_fix(server: DnsTestServer, case: Broken) -> None:
    case.breaks(server)
    diagnosis = await diagnose(server, case.facts)
    finding = diagnosis.find(case.code)
    assert finding.severity is case.severity
    assert case.fix in finding.fix
    values = [record.value for record in finding.publish]
    for value in case.publish:
        assert value in values
    for value in case.found:
        assert value in finding.found
    if case.severity is Severity.ERROR:
        assert diagnosis.errors
    for record in finding.publish:  # what is proposed is valid zone text
        DnsTestServer({"check.example": record.zone_line() + "\n"})


async def test_the_fix_for_a_cut_string_splits_it_when_published(server: DnsTestServer) -> None:
    server.remove_records(DOMAIN, "TXT")
    server.add_txt(DOMAIN, LONG_SPF, oversize="truncate")
    [fix] = (await diagnose(server)).find(FindingCode.SPF_TRUNCATED).publish
    data = fix.zone_line().split("\t")[-1]
    assert data.count('"') == 4  # two strings, each within 255 octets
    server.set_zone(DOMAIN, zone([r for r in GOOD if not r.value.startswith("v=spf1")] + [fix]))
    assert (await diagnose(server)).find(FindingCode.SPF_OK)


# Valid, one string of exactly 255 octets, no all term: as long as it is on purpose, not cut.
EXACT_SPF = "v=spf1 " + " ".join(f"ip4:198.51.100.{host}" for host in range(10, 21))
EXACT_SPF += " include:spf.protection.postroom.test".rjust(255 - len(EXACT_SPF))
assert len(EXACT_SPF) == 255


@pytest.mark.parametrize("include", [True, False])
async def test_a_valid_record_of_exactly_255_octets_is_not_cut_and_its_fix_keeps_every_term(
    server: DnsTestServer, include: bool
) -> None:
    service = "include:spf.protection.postroom.test"
    text = EXACT_SPF if include else EXACT_SPF.replace(service, "a".rjust(len(service)))
    set_spf(server, text)
    diagnosis = await diagnose(server)
    assert "spf.truncated-string" not in diagnosis.codes()
    finding = diagnosis.find(FindingCode.SPF_NEUTRAL if include else FindingCode.SPF_NO_SERVICE_INCLUDE)
    [fix] = finding.publish
    assert set(text.split()) - set(fix.value.split()) == set()


async def test_a_default_domain_published_by_the_service_zone_checks_clean(server: DnsTestServer) -> None:
    default = DomainFacts("contoso.postroom.test", "contoso", None, dkim=FACTS.dkim, is_default=True)
    for record in service_records(SERVICE, [default]):
        if record.name == default.name:
            server.add_records(record.name, record.type, record.data)
    diagnosis = await diagnose(server, default)
    assert (diagnosis.errors, diagnosis.warnings) == ((), ()), diagnosis.findings
    assert diagnosis.codes() == ["mx.ok", "spf.ok"]


async def test_dkim_published_as_a_cname_to_the_key_checks_ok(server: DnsTestServer) -> None:
    selector = f"postroom1._domainkey.{DOMAIN}"
    server.remove_records(selector)
    server.add_records(selector, "CNAME", "postroom1-contoso-example._domainkey.postroom.test.")
    server.add_txt("postroom1-contoso-example._domainkey.postroom.test", FACTS.dkim[0].record_value)
    diagnosis = await diagnose(server)
    assert [f.code for f in diagnosis.findings if f.name == selector] == [FindingCode.DKIM_OK]


async def test_a_pending_domain_with_its_proof_published_is_told_to_verify(server: DnsTestServer) -> None:
    server.add_txt(DOMAIN, "postroom-verification=5f0c2a9e")
    finding = (await diagnose(server, PENDING)).find(FindingCode.OWNERSHIP_OK)
    assert "postroom domain verify" in finding.message


async def test_the_fallback_proof_mx_counts_and_is_not_judged_as_an_extra_mx(server: DnsTestServer) -> None:
    server.add_records(DOMAIN, "MX", "100 postroom-verification-5f0c2a9e.invalid.")
    diagnosis = await diagnose(server, PENDING)
    assert "MX record is published" in diagnosis.find(FindingCode.OWNERSHIP_OK).message
    assert diagnosis.find(FindingCode.MX_OK)
    assert diagnosis.errors == ()


async def test_reports_to_a_domain_that_authorized_them_are_fine(server: DnsTestServer) -> None:
    set_txt(server, f"_dmarc.{DOMAIN}", "v=DMARC1; p=reject; rua=mailto:dmarc@reports.vendors.example")
    server.add_txt("contoso.example._report._dmarc.reports.vendors.example", "v=DMARC1")
    diagnosis = await diagnose(server)
    assert "dmarc.reports-unauthorized" not in diagnosis.codes()
    assert "p=reject" in diagnosis.find(FindingCode.DMARC_OK).message


async def test_reports_within_the_organization_need_no_authorization(server: DnsTestServer) -> None:
    facts = dataclasses.replace(FACTS, name=f"mail.{DOMAIN}", domain_key="mail-contoso-example")
    set_txt(server, f"_dmarc.mail.{DOMAIN}", f"v=DMARC1; p=none; rua=mailto:dmarc@reports.{DOMAIN}")
    diagnosis = await diagnose(server, facts)
    assert diagnosis.find(FindingCode.DMARC_OK)
    assert "dmarc.reports-unauthorized" not in diagnosis.codes()


async def test_a_policy_that_does_not_name_the_mx_is_an_error(server: DnsTestServer) -> None:
    other = render_sts_policy("enforce", ["mail.oldhost.example"], 604800)
    finding = (await diagnose(server, policy=other)).find(FindingCode.MTA_STS_POLICY_MX)
    assert finding.severity is Severity.ERROR
    assert "mta-sts.contoso.example" in finding.fix


async def unreachable(domain: str) -> FetchedPolicy:
    return FetchedPolicy(url=f"https://mta-sts.{domain}/.well-known/mta-sts.txt", error="connection refused")


async def test_an_unreachable_policy_at_the_service_host_says_what_to_do_about_the_listener(
    server: DnsTestServer,
) -> None:
    diagnosis = await diagnose_domain(
        DnsResolver(server.settings()), SERVICE, FACTS, fetch_policy=unreachable
    )
    finding = diagnosis.find(FindingCode.MTA_STS_POLICY_UNAVAILABLE)
    assert finding.severity is Severity.ERROR
    assert "connection refused" in finding.message
    assert "[admin] tls = true" in finding.fix and "TLS proxy" in finding.fix
    assert "mta-sts.contoso.example" in finding.fix
    assert finding.publish == ()  # the CNAME is there already


@pytest.mark.parametrize(
    ("breaks", "says"),
    [
        (lambda s: s.remove_records(f"mta-sts.{DOMAIN}"), "does not exist"),
        (
            lambda s: (
                s.remove_records(f"mta-sts.{DOMAIN}"),
                s.add_records(f"mta-sts.{DOMAIN}", "CNAME", "sites.hosting.example."),
            ),
            "points at sites.hosting.example",
        ),
    ],
)
async def test_an_unreachable_policy_elsewhere_gets_the_cname_to_publish(
    server: DnsTestServer, breaks: Callable[[DnsTestServer], object], says: str
) -> None:
    breaks(server)
    diagnosis = await diagnose_domain(
        DnsResolver(server.settings()), SERVICE, FACTS, fetch_policy=unreachable
    )
    finding = diagnosis.find(FindingCode.MTA_STS_POLICY_UNAVAILABLE)
    assert says in finding.fix
    assert [r.value for r in finding.publish] == ["mx.postroom.test"]


async def test_dns_that_does_not_answer_gives_one_finding_naming_the_server_and_gives_up_quickly() -> None:
    with silent_nameserver() as address:
        resolver = DnsResolver(DnsSettings(nameservers=(address,), timeout=0.5))
        started = time.monotonic()
        diagnosis = await diagnose_domain(resolver, SERVICE, FACTS, fetch_policy=published(""))
        elapsed = time.monotonic() - started
    [finding] = diagnosis.findings
    assert finding.code is FindingCode.DNS_UNAVAILABLE and finding.severity is Severity.ERROR
    assert f"{address.host} port {address.port}" in finding.message
    assert elapsed < 3.0  # one timeout, not one per record (there are over a dozen)


async def test_no_garbled_spf_record_here_or_in_an_include_stops_the_check(
    server: DnsTestServer,
) -> None:
    rng = random.Random(4408)
    for _ in range(40):
        server.remove_records("fuzz.vendors.example")
        server.add_txt("fuzz.vendors.example", "v=spf1 " + garbled_terms(rng))
        own = f"v=spf1 include:fuzz.vendors.example {garbled_terms(rng)} include:spf.protection.postroom.test"
        set_spf(server, *((own, "v=spf1 " + garbled_terms(rng)) if rng.random() < 0.3 else (own,)))
        diagnosis = await diagnose(server)
        assert "check.failed" not in diagnosis.codes(), diagnosis.find(FindingCode.CHECK_FAILED)


async def test_an_unexpected_error_in_one_area_ends_that_check_with_one_finding(
    server: DnsTestServer,
) -> None:
    async def broken(domain: str) -> FetchedPolicy:
        raise RuntimeError("the fetcher is broken")

    diagnosis = await diagnose_domain(DnsResolver(server.settings()), SERVICE, FACTS, fetch_policy=broken)
    finding = diagnosis.find(FindingCode.CHECK_FAILED)
    assert finding.severity is Severity.ERROR
    assert "RuntimeError: the fetcher is broken" in finding.message
    assert diagnosis.find(FindingCode.MX_OK) and diagnosis.find(FindingCode.DMARC_OK)


@pytest.mark.parametrize(
    "name", ["192.0.2.1", "[192.0.2.1]", "[IPv6:2001:db8::1]", "2001:db8::1", "localhost"]
)
async def test_a_name_that_is_no_domain_gets_one_finding(server: DnsTestServer, name: str) -> None:
    facts = dataclasses.replace(FACTS, name=name, domain_key=name.replace(".", "-"))
    diagnosis = await diagnose(server, facts)
    [finding] = diagnosis.findings
    assert finding.code is FindingCode.DOMAIN_NOT_A_DOMAIN and finding.severity is Severity.ERROR
    assert "postroom domain remove" in finding.fix


async def test_a_domain_that_does_not_exist_gets_one_finding_listing_every_record(
    server: DnsTestServer,
) -> None:
    no_domain(server)
    diagnosis = await diagnose(server)
    [finding] = diagnosis.findings
    assert finding.code is FindingCode.DOMAIN_NXDOMAIN
    assert finding.publish == tuple(GOOD)
