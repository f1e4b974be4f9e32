"""DKIM verification of every signature, keys from the loopback DNS server: RSA and Ed25519 pass, a
changed body or header fails, a missing, revoked or unreachable key is an error, expiry is judged at
the authenticator's clock, and each signature of a message gets its own verdict."""

from __future__ import annotations

import time

import dkim
import pytest
from dkim.canonicalization import CanonicalizationPolicy

from postroom.dns import DnsResolver
from postroom.model.verdicts import DkimResult
from postroom.protection.authentication import Authenticator
from postroom.protection.dkim import MAX_SIGNATURES, canonical_body, canonical_headers, without_signature
from tests.protection.conftest import AUTHSERV_ID, message, spf
from tests.support.dns_server import DnsTestServer
from tests.support.mail_auth import SigningKey, ed25519_key, rsa_key


@pytest.fixture(scope="module")
def rsa() -> SigningKey:
    return rsa_key("contoso.com", "rsa1")


@pytest.fixture(scope="module")
def ed25519() -> SigningKey:
    return ed25519_key("contoso.com", "ed1")


@pytest.fixture(autouse=True)
def published(dns: DnsTestServer, rsa: SigningKey, ed25519: SigningKey) -> None:
    rsa.publish(dns)
    ed25519.publish(dns)


def results(verdict_dkim: tuple) -> list[tuple[str, str, str, str]]:  # type: ignore[type-arg]
    return [(v.result.value, v.domain, v.selector, v.reason) for v in verdict_dkim]


@pytest.mark.parametrize("key", ["rsa", "ed25519"])
async def test_a_signature_verifies(
    authenticator: Authenticator, key: str, request: pytest.FixtureRequest
) -> None:
    signer: SigningKey = request.getfixturevalue(key)
    verdict = await authenticator.authenticate(signer.sign(message()), spf())
    [dkim] = verdict.dkim
    assert (dkim.result, dkim.domain, dkim.selector) == (DkimResult.PASS, "contoso.com", signer.selector)
    assert dkim.algorithm == signer.algorithm
    assert dkim.reason == "signature was verified"


async def test_both_signatures_of_a_dual_signed_message_are_reported_in_header_order(
    authenticator: Authenticator, rsa: SigningKey, ed25519: SigningKey
) -> None:
    signed = ed25519.sign(rsa.sign(message()))  # Ed25519 on top, as RFC 8463 senders add it
    verdict = await authenticator.authenticate(signed, spf())
    assert results(verdict.dkim) == [
        ("pass", "contoso.com", "ed1", "signature was verified"),
        ("pass", "contoso.com", "rsa1", "signature was verified"),
    ]


@pytest.mark.parametrize("key", ["rsa", "ed25519"])
async def test_a_changed_body_fails(
    authenticator: Authenticator, key: str, request: pytest.FixtureRequest
) -> None:
    signer: SigningKey = request.getfixturevalue(key)
    signed = signer.sign(message()).replace(b"The figures are attached.", b"The figures are attached!")
    [dkim] = (await authenticator.authenticate(signed, spf())).dkim
    assert (dkim.result, dkim.reason) == (DkimResult.FAIL, "body hash did not verify")


async def test_a_changed_signed_header_fails(authenticator: Authenticator, rsa: SigningKey) -> None:
    signed = rsa.sign(message()).replace(b"Subject: Quarterly figures", b"Subject: Quarterly figures (fwd)")
    [dkim] = (await authenticator.authenticate(signed, spf())).dkim
    assert (dkim.result, dkim.reason) == (DkimResult.FAIL, "signature did not verify")


async def test_relaxed_canonicalization_survives_refolding_and_trailing_blank_lines(
    authenticator: Authenticator, rsa: SigningKey
) -> None:
    signed = rsa.sign(message())
    refolded = (
        signed.replace(b"Subject: Quarterly figures", b"Subject:  Quarterly\r\n  figures") + b"\r\n\r\n"
    )
    [dkim] = (await authenticator.authenticate(refolded, spf())).dkim
    assert dkim.result is DkimResult.PASS


async def test_a_message_with_bare_lf_line_ends_verifies_as_received(
    authenticator: Authenticator, rsa: SigningKey
) -> None:
    signed = rsa.sign(message(body=b"line one\r\nline two\r\n"))
    [dkim] = (await authenticator.authenticate(signed.replace(b"\r\n", b"\n"), spf())).dkim
    assert dkim.result is DkimResult.PASS


async def test_a_missing_key_is_a_permanent_error(authenticator: Authenticator) -> None:
    unpublished = rsa_key("contoso.com", "nokey", bits=1024)
    [dkim] = (await authenticator.authenticate(unpublished.sign(message()), spf())).dkim
    assert (dkim.result, dkim.reason) == (DkimResult.PERMERROR, "no key for signature")
    assert dkim.selector == "nokey"


async def test_a_revoked_key_is_a_permanent_error(authenticator: Authenticator, dns: DnsTestServer) -> None:
    revoked = rsa_key("contoso.com", "revoked", bits=1024)
    dns.add_txt(revoked.name, "v=DKIM1; k=rsa; p=")
    [dkim] = (await authenticator.authenticate(revoked.sign(message()), spf())).dkim
    assert (dkim.result, dkim.reason) == (DkimResult.PERMERROR, "key revoked")


async def test_a_garbled_key_record_is_a_permanent_error(
    authenticator: Authenticator, dns: DnsTestServer
) -> None:
    garbled = rsa_key("contoso.com", "garbled", bits=1024)
    dns.add_txt(garbled.name, "v=DKIM1; k=rsa; p=bm90IGEga2V5")
    [dkim] = (await authenticator.authenticate(garbled.sign(message()), spf())).dkim
    assert (dkim.result, dkim.reason) == (DkimResult.PERMERROR, "key unusable")


async def test_a_key_lookup_that_fails_is_a_temporary_error(
    authenticator: Authenticator, dns: DnsTestServer
) -> None:
    flaky = rsa_key("contoso.com", "flaky", bits=1024)
    flaky.publish(dns)
    dns.set_failure(flaky.name)
    try:
        [dkim] = (await authenticator.authenticate(flaky.sign(message()), spf())).dkim
    finally:
        dns.set_failure(flaky.name, None)
    assert (dkim.result, dkim.reason) == (DkimResult.TEMPERROR, "key lookup failed")


async def test_expiry_and_signing_time_are_judged_at_the_authenticators_clock(
    dns: DnsTestServer, rsa: SigningKey
) -> None:
    now = time.time()
    expiring = rsa.sign(message(), expires=int(now) + 3600)
    resolver = DnsResolver(dns.settings(cache_size=0))

    async def at(moment: float) -> tuple[DkimResult, str]:
        [dkim] = (
            await Authenticator(resolver, AUTHSERV_ID, clock=lambda: moment).authenticate(expiring, spf())
        ).dkim
        return dkim.result, dkim.reason

    assert await at(now) == (DkimResult.PASS, "signature was verified")
    assert await at(now + 7200) == (DkimResult.PERMERROR, "signature expired")
    assert await at(now - 86_400) == (DkimResult.PERMERROR, "signature from the future")


async def test_an_unsigned_message_has_one_none_verdict(authenticator: Authenticator) -> None:
    [dkim] = (await authenticator.authenticate(message(), spf())).dkim
    assert (dkim.result, dkim.reason) == (DkimResult.NONE, "message not signed")


async def test_a_malformed_signature_is_a_permanent_error(authenticator: Authenticator) -> None:
    forged = b"DKIM-Signature: v=1; a=rsa-sha256; d=contoso.com; s=rsa1; b=!!\r\n" + message()
    [dkim] = (await authenticator.authenticate(forged, spf())).dkim
    assert (dkim.result, dkim.reason) == (DkimResult.PERMERROR, "signature syntax error")


async def test_signatures_past_the_limit_are_not_verified_and_the_from_domains_come_first(
    authenticator: Authenticator, rsa: SigningKey, dns: DnsTestServer
) -> None:
    junk = rsa_key("fabrikam.com", "junk", bits=1024)
    junk.publish(dns)
    signed = rsa.sign(message())
    for _ in range(MAX_SIGNATURES + 2):
        signed = junk.sign(signed)  # junk piled on top of the From domain's signature
    verdict = await authenticator.authenticate(signed, spf())
    assert len(verdict.dkim) == MAX_SIGNATURES
    assert [v.domain for v in verdict.dkim].count("contoso.com") == 1
    assert verdict.dmarc.dkim_aligned


BODIES = [
    b"",
    b"\r\n",
    b"\r\n\r\n\r\n",
    b"one line without end",
    b"a  b\t\tc \t d \r\n\r\n",
    b"trailing \t \r\nwhite  \r\n \r\n\t\r\n",
    b" leading space\r\n\tleading tab\r\n",
    b"lone\rCR and  double  spaces\r\n" * 3,
]
HEADERS = [
    [b"Subject", b"  Quarterly \t figures \r\n"],
    [b"SUBJECT ", b" folded\r\n  over\r\n\tlines\r\n"],
    [b"X-Bare-Lf", b" a\n b\r\n"],
    [b"From", b"Ann <ann@contoso.com>\r\n"],
]


@pytest.mark.parametrize("c", [b"relaxed/relaxed", b"simple/simple", b"relaxed/simple", b"simple/relaxed"])
def test_canonicalization_is_dkimpys(c: bytes) -> None:
    # The verifier's own canonicalization (made once per message) must equal dkimpy's byte for byte.
    policy = CanonicalizationPolicy.from_c_value(c)
    for body in BODIES:
        assert canonical_body(policy, body) == policy.canonicalize_body(body), body
    assert canonical_headers(policy, HEADERS) == [tuple(h) for h in policy.canonicalize_headers(HEADERS)]


@pytest.mark.parametrize(
    "value",
    [
        b" v=1; a=rsa-sha256; d=contoso.com; s=s1; h=from; bh=abc=;\r\n b=dGVz\r\n dA==\r\n",
        b" v=1; b=dGVzdA==; a=rsa-sha256; d=contoso.com; bh=abc=\r\n",
        b" v=1;\tb = dGVz dA== ; d=contoso.com\r\n",
        b" b=\r\n",
        b" v=1; bh=dGVzdA==; d=b.example\r\n",  # bh= is not b=
    ],
)
def test_the_signature_value_is_erased_as_dkimpy_does(value: bytes) -> None:
    assert without_signature(value) == dkim.RE_BTAG.sub(b"\\1", value)


async def test_rsa_sha1_is_never_valid(authenticator: Authenticator, rsa: SigningKey) -> None:
    field = dkim.sign(
        message(), rsa.selector.encode(), rsa.domain.encode(), rsa.private, signature_algorithm=b"rsa-sha1"
    )
    [verdict] = (await authenticator.authenticate(bytes(field) + message(), spf())).dkim
    assert (verdict.result, verdict.reason, verdict.algorithm) == (
        DkimResult.PERMERROR,
        "insecure algorithm",
        "rsa-sha1",
    )
