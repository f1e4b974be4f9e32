"""DMARC against records in the loopback DNS server: relaxed and strict alignment of SPF and DKIM, the
subdomain policy, the organizational domain by the Public Suffix List, pct sampling, the actions of
none, quarantine and reject, and the errors of discovery."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from postroom.dns import DnsResolver
from postroom.model.verdicts import DmarcAction, DmarcPolicy, DmarcResult, SpfResult
from postroom.protection.authentication import Authenticator
from tests.protection.conftest import AUTHSERV_ID, message, spf
from tests.support.dns_server import DnsTestServer
from tests.support.mail_auth import SigningKey, rsa_key


@pytest.fixture(scope="module")
def keys(dns: DnsTestServer) -> Iterator[dict[str, SigningKey]]:
    made = {
        domain: rsa_key(domain, "s1", bits=1024)
        for domain in ("contoso.com", "mail.contoso.com", "fabrikam.com", "news.contoso.co.uk")
    }
    for key in made.values():
        key.publish(dns)
    yield made


def publish_dmarc(dns: DnsTestServer, domain: str, record: str | None) -> None:
    dns.remove_records(f"_dmarc.{domain}")
    if record is not None:
        dns.add_txt(f"_dmarc.{domain}", record)


@pytest.fixture(autouse=True)
def forget_dmarc_records(dns: DnsTestServer) -> Iterator[None]:
    yield
    for domain in ("contoso.com", "sub.contoso.com", "contoso.co.uk", "mail.contoso.co.uk", "fabrikam.com"):
        publish_dmarc(dns, domain, None)


@pytest.mark.parametrize(
    ("signer", "record", "expected", "aligned"),
    [
        ("contoso.com", "v=DMARC1; p=reject", DmarcResult.PASS, True),
        ("mail.contoso.com", "v=DMARC1; p=reject", DmarcResult.PASS, True),  # relaxed: same org domain
        ("mail.contoso.com", "v=DMARC1; p=reject; adkim=s", DmarcResult.FAIL, False),  # strict: not equal
        ("contoso.com", "v=DMARC1; p=reject; adkim=s", DmarcResult.PASS, True),
        ("fabrikam.com", "v=DMARC1; p=reject", DmarcResult.FAIL, False),  # another domain's signature
    ],
)
async def test_dkim_alignment(
    authenticator: Authenticator,
    dns: DnsTestServer,
    keys: dict[str, SigningKey],
    signer: str,
    record: str,
    expected: DmarcResult,
    aligned: bool,
) -> None:
    publish_dmarc(dns, "contoso.com", record)
    verdict = await authenticator.authenticate(keys[signer].sign(message()), spf(SpfResult.FAIL))
    assert (verdict.dmarc.result, verdict.dmarc.dkim_aligned) == (expected, aligned)
    assert verdict.dkim[0].domain == signer  # the signature itself passed either way
    assert verdict.dmarc.from_domain == "contoso.com"


@pytest.mark.parametrize(
    ("mail_from", "record", "expected"),
    [
        ("contoso.com", "v=DMARC1; p=quarantine", DmarcResult.PASS),
        ("bounces.contoso.com", "v=DMARC1; p=quarantine", DmarcResult.PASS),
        ("bounces.contoso.com", "v=DMARC1; p=quarantine; aspf=s", DmarcResult.FAIL),
        ("contoso.net", "v=DMARC1; p=quarantine", DmarcResult.FAIL),
    ],
)
async def test_spf_alignment(
    authenticator: Authenticator, dns: DnsTestServer, mail_from: str, record: str, expected: DmarcResult
) -> None:
    publish_dmarc(dns, "contoso.com", record)
    verdict = await authenticator.authenticate(message(), spf(SpfResult.PASS, mail_from))
    assert verdict.dmarc.result is expected
    assert verdict.dmarc.spf_aligned is (expected is DmarcResult.PASS)


async def test_spf_that_did_not_pass_never_aligns(authenticator: Authenticator, dns: DnsTestServer) -> None:
    publish_dmarc(dns, "contoso.com", "v=DMARC1; p=none")
    for result in (SpfResult.SOFTFAIL, SpfResult.NEUTRAL, SpfResult.TEMPERROR):
        verdict = await authenticator.authenticate(message(), spf(result, "contoso.com"))
        assert verdict.dmarc.result is DmarcResult.FAIL


@pytest.mark.parametrize(
    ("record", "policy", "action", "compauth"),
    [
        ("v=DMARC1; p=none", DmarcPolicy.NONE, DmarcAction.NONE, ("fail", 1)),
        ("v=DMARC1; p=quarantine", DmarcPolicy.QUARANTINE, DmarcAction.QUARANTINE, ("fail", 0)),
        ("v=DMARC1; p=reject", DmarcPolicy.REJECT, DmarcAction.OREJECT, ("fail", 0)),
    ],
)
async def test_a_forged_from_gets_the_policys_action(
    authenticator: Authenticator,
    dns: DnsTestServer,
    record: str,
    policy: DmarcPolicy,
    action: DmarcAction,
    compauth: tuple[str, int],
) -> None:
    publish_dmarc(dns, "contoso.com", record)
    forged = message("Ann <ann@contoso.com>")  # sent from a stranger's server: nothing authenticates it
    verdict = await authenticator.authenticate(forged, spf(SpfResult.PASS, "spammer.example"))
    assert (verdict.dmarc.result, verdict.dmarc.policy, verdict.dmarc.action) == (
        DmarcResult.FAIL,
        policy,
        action,
    )
    if policy is DmarcPolicy.NONE:
        assert (verdict.compauth.value, verdict.compauth_reason) == (
            "softpass",
            200,
        )  # SPF passed for another
    else:
        assert (verdict.compauth.value, verdict.compauth_reason) == compauth


@pytest.mark.parametrize(
    ("record", "draw", "action"),
    [
        ("v=DMARC1; p=reject; pct=30", 0.29, DmarcAction.OREJECT),  # inside the sample
        ("v=DMARC1; p=reject; pct=30", 0.30, DmarcAction.PCT_REJECT),  # outside: applied as quarantine
        ("v=DMARC1; p=quarantine; pct=0", 0.0, DmarcAction.PCT_QUARANTINE),  # outside: no action
        ("v=DMARC1; p=quarantine; pct=100", 0.999, DmarcAction.QUARANTINE),
    ],
)
async def test_pct_samples_the_failures(
    dns: DnsTestServer, record: str, draw: float, action: DmarcAction
) -> None:
    publish_dmarc(dns, "contoso.com", record)
    authenticator = Authenticator(DnsResolver(dns.settings(cache_size=0)), AUTHSERV_ID, sample=lambda: draw)
    verdict = await authenticator.authenticate(message(), spf(SpfResult.FAIL))
    assert (verdict.dmarc.result, verdict.dmarc.action) == (DmarcResult.FAIL, action)


async def test_a_subdomain_without_a_record_gets_the_organizational_domains_sp(
    authenticator: Authenticator, dns: DnsTestServer
) -> None:
    publish_dmarc(dns, "contoso.com", "v=DMARC1; p=none; sp=reject")
    sub = await authenticator.authenticate(message("ann@sub.contoso.com"), spf(SpfResult.FAIL))
    assert (sub.dmarc.from_domain, sub.dmarc.policy, sub.dmarc.action) == (
        "sub.contoso.com",
        DmarcPolicy.REJECT,
        DmarcAction.OREJECT,
    )
    top = await authenticator.authenticate(message("ann@contoso.com"), spf(SpfResult.FAIL))
    assert (top.dmarc.policy, top.dmarc.action) == (DmarcPolicy.NONE, DmarcAction.NONE)


async def test_a_subdomains_own_record_wins_and_applies_p(
    authenticator: Authenticator, dns: DnsTestServer
) -> None:
    publish_dmarc(dns, "contoso.com", "v=DMARC1; p=none; sp=none")
    publish_dmarc(dns, "sub.contoso.com", "v=DMARC1; p=quarantine; sp=none")
    verdict = await authenticator.authenticate(message("ann@sub.contoso.com"), spf(SpfResult.FAIL))
    assert (verdict.dmarc.policy, verdict.dmarc.action) == (DmarcPolicy.QUARANTINE, DmarcAction.QUARANTINE)


async def test_the_organizational_domain_comes_from_the_public_suffix_list(
    authenticator: Authenticator, dns: DnsTestServer, keys: dict[str, SigningKey]
) -> None:
    # mail.contoso.co.uk's organizational domain is contoso.co.uk (co.uk is a public suffix), never co.uk.
    publish_dmarc(dns, "contoso.co.uk", "v=DMARC1; p=quarantine; sp=reject")
    dns.set_zone("co.uk", '_dmarc TXT "v=DMARC1; p=none"')  # a wrong find: served only to prove it is not
    forged = await authenticator.authenticate(message("ann@mail.contoso.co.uk"), spf(SpfResult.FAIL))
    assert (forged.dmarc.result, forged.dmarc.policy) == (DmarcResult.FAIL, DmarcPolicy.REJECT)
    # A signature of news.contoso.co.uk aligns (relaxed) with mail.contoso.co.uk: same organization.
    signed = keys["news.contoso.co.uk"].sign(message("ann@mail.contoso.co.uk"))
    passed = await authenticator.authenticate(signed, spf(SpfResult.FAIL))
    assert (passed.dmarc.result, passed.dmarc.dkim_aligned) == (DmarcResult.PASS, True)


async def test_without_a_record(authenticator: Authenticator, keys: dict[str, SigningKey]) -> None:
    unsigned = await authenticator.authenticate(message(), spf(SpfResult.NONE))
    assert (unsigned.dmarc.result, unsigned.compauth.value, unsigned.compauth_reason) == ("none", "fail", 1)
    signed = await authenticator.authenticate(keys["contoso.com"].sign(message()), spf(SpfResult.NONE))
    assert (signed.dmarc.result, signed.compauth.value, signed.compauth_reason) == (
        "bestguesspass",
        "pass",
        101,
    )


@pytest.mark.parametrize(
    ("records", "failure", "expected"),
    [
        (["v=DMARC1; p=reject", "v=DMARC1; p=none"], None, DmarcResult.PERMERROR),  # two records
        (["v=DMARC1; p=block"], None, DmarcResult.PERMERROR),  # a record receivers ignore
        (["v=spf1 -all"], None, DmarcResult.NONE),  # not a DMARC record: discarded
        ([], "SERVFAIL", DmarcResult.TEMPERROR),
    ],
)
async def test_discovery_errors(
    authenticator: Authenticator,
    dns: DnsTestServer,
    records: list[str],
    failure: str | None,
    expected: DmarcResult,
) -> None:
    for record in records:
        dns.add_txt("_dmarc.contoso.com", record)
    if failure:
        dns.set_failure("_dmarc.contoso.com", failure)
    try:
        verdict = await authenticator.authenticate(message(), spf(SpfResult.FAIL))
    finally:
        dns.set_failure("_dmarc.contoso.com", None)
    assert verdict.dmarc.result is expected
    assert verdict.dmarc.action.value == (expected.value if expected is not DmarcResult.NONE else "none")


@pytest.mark.parametrize(
    ("sender", "reason"),
    [
        ("Ann <ann@contoso.com>, Mallory <m@fabrikam.com>", "From addresses in several domains"),
        ("undisclosed-recipients:;", "no From address"),
    ],
)
async def test_a_from_field_without_one_domain_is_a_permanent_error(
    authenticator: Authenticator, sender: str, reason: str
) -> None:
    verdict = await authenticator.authenticate(message(sender), spf(SpfResult.PASS))
    assert (verdict.dmarc.result, verdict.dmarc.from_domain, verdict.dmarc.reason) == (
        DmarcResult.PERMERROR,
        "",
        reason,
    )


async def test_two_from_fields_are_a_permanent_error(authenticator: Authenticator) -> None:
    doubled = b"From: m@fabrikam.com\r\n" + message()
    verdict = await authenticator.authenticate(doubled, spf(SpfResult.PASS))
    assert (verdict.dmarc.result, verdict.dmarc.reason) == (
        DmarcResult.PERMERROR,
        "several From header fields",
    )


async def test_several_addresses_of_one_domain_are_that_domain(
    authenticator: Authenticator, dns: DnsTestServer
) -> None:
    publish_dmarc(dns, "contoso.com", "v=DMARC1; p=reject")
    verdict = await authenticator.authenticate(
        message("ann@contoso.com, Bo <bo@Contoso.COM>"), spf(SpfResult.PASS, "contoso.com")
    )
    assert (verdict.dmarc.result, verdict.dmarc.from_domain) == (DmarcResult.PASS, "contoso.com")
