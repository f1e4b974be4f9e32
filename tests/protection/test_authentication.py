"""The Authentication-Results header field (golden texts in the style of spec §10.7), compauth, the removal
of foreign results that claim our authserv-id and of internal header fields (RFC 8601 §5), and the
authenticator's behaviour on messages it cannot read or that are too large to verify on the loop."""

from __future__ import annotations

from collections.abc import Iterator

import authres
import pytest

from postroom.model.verdicts import (
    ArcResult,
    ArcVerdict,
    CompAuthResult,
    DkimResult,
    DkimVerdict,
    DmarcAction,
    DmarcPolicy,
    DmarcResult,
    DmarcVerdict,
    SpfResult,
    SpfVerdict,
)
from postroom.protection.authentication import (
    INLINE_VERIFY_OCTETS,
    Authenticator,
    carries_results,
    strip_foreign,
)
from postroom.protection.results_header import FOLD_AT, render
from tests.protection.conftest import AUTHSERV_ID, message, spf
from tests.support.dns_server import DnsTestServer
from tests.support.mail_auth import SigningKey, rsa_key


@pytest.fixture(scope="module")
def contoso(dns: DnsTestServer) -> Iterator[SigningKey]:
    key = rsa_key("contoso.com", "selector1", bits=1024)
    key.publish(dns)
    dns.add_txt("_dmarc.contoso.com", "v=DMARC1; p=reject")
    yield key
    dns.remove_records("_dmarc.contoso.com")


# --- golden header texts --------------------------------------------------------------------------

GOLDEN_PASS = (
    "Authentication-Results: mx.postroom.test; spf=pass (sender IP is 192.0.2.1)\r\n"
    " smtp.mailfrom=contoso.com; dkim=pass (signature was verified)\r\n"
    " header.d=contoso.com; dmarc=pass action=none header.from=contoso.com;\r\n"
    " compauth=pass reason=100\r\n"
)
GOLDEN_FORGED = (
    "Authentication-Results: mx.postroom.test; spf=fail (sender IP is 203.0.113.9)\r\n"
    " smtp.mailfrom=contoso.com; dkim=none (message not signed); dmarc=fail\r\n"
    " action=oreject header.from=contoso.com; compauth=fail reason=000\r\n"
)


async def test_golden_signed_and_aligned(authenticator: Authenticator, contoso: SigningKey) -> None:
    verdict = await authenticator.authenticate(contoso.sign(message()), spf(SpfResult.PASS, ip="192.0.2.1"))
    assert verdict.header == GOLDEN_PASS
    assert (verdict.compauth, verdict.compauth_reason) == (CompAuthResult.PASS, 100)


async def test_golden_forged_from(authenticator: Authenticator, contoso: SigningKey) -> None:
    verdict = await authenticator.authenticate(message(), spf(SpfResult.FAIL, ip="203.0.113.9"))
    assert verdict.header == GOLDEN_FORGED


@pytest.mark.parametrize(
    ("spf_verdict", "dkim", "arc", "dmarc", "compauth", "expected"),
    [
        (  # the null sender: SPF checked HELO; an IPv6 client
            SpfVerdict(SpfResult.PASS, "mta.fabrikam.com", "helo", "2001:db8::25"),
            (DkimVerdict(DkimResult.NONE, reason="message not signed"),),
            ArcVerdict(ArcResult.NONE),
            DmarcVerdict(DmarcResult.NONE, "fabrikam.com"),
            (CompAuthResult.SOFTPASS, 200),
            "Authentication-Results: mx.postroom.test; spf=pass (sender IP is 2001:db8::25)\r\n"
            " smtp.helo=mta.fabrikam.com; dkim=none (message not signed); dmarc=none\r\n"
            " action=none header.from=fabrikam.com; compauth=softpass reason=200\r\n",
        ),
        (  # a temporary failure everywhere, and an ARC chain that failed
            SpfVerdict(SpfResult.TEMPERROR, "contoso.com", "mailfrom", "192.0.2.1"),
            (DkimVerdict(DkimResult.TEMPERROR, "contoso.com", "s1", "rsa-sha256", "key lookup failed"),),
            ArcVerdict(ArcResult.FAIL, 1, ("lists.example",), reason="seal did not verify"),
            DmarcVerdict(DmarcResult.TEMPERROR, "contoso.com", action=DmarcAction.TEMPERROR),
            (CompAuthResult.NONE, 300),
            "Authentication-Results: mx.postroom.test; spf=temperror\r\n"
            " (sender IP is 192.0.2.1) smtp.mailfrom=contoso.com; dkim=temperror\r\n"
            " (key lookup failed) header.d=contoso.com; arc=fail (seal did not verify);\r\n"
            " dmarc=temperror action=temperror header.from=contoso.com; compauth=none\r\n"
            " reason=300\r\n",
        ),
        (  # values that are not names or addresses are left out, never written
            SpfVerdict(SpfResult.NONE, "evil;\r\nX-Injected: 1", "helo", "not an ip"),
            (DkimVerdict(DkimResult.FAIL, "bad domain (x)", "s", "rsa-sha256", "body hash did not verify"),),
            ArcVerdict(ArcResult.NONE),
            DmarcVerdict(DmarcResult.PERMERROR, "", DmarcPolicy.NONE, DmarcAction.PERMERROR),
            (CompAuthResult.FAIL, 1),
            "Authentication-Results: mx.postroom.test; spf=none; dkim=fail\r\n"
            " (body hash did not verify); dmarc=permerror action=permerror; compauth=fail\r\n"
            " reason=001\r\n",
        ),
    ],
)
def test_golden_rendering(
    spf_verdict: SpfVerdict,
    dkim: tuple[DkimVerdict, ...],
    arc: ArcVerdict,
    dmarc: DmarcVerdict,
    compauth: tuple[CompAuthResult, int],
    expected: str,
) -> None:
    assert render(AUTHSERV_ID, spf_verdict, dkim, arc, dmarc, *compauth) == expected


async def test_the_header_is_a_well_formed_folded_field_that_parses_back(
    authenticator: Authenticator, contoso: SigningKey
) -> None:
    signed = rsa_key("fabrikam.com", "x", bits=1024).sign(contoso.sign(message()))  # a second, unknown key
    verdict = await authenticator.authenticate(signed, spf(SpfResult.SOFTFAIL, "bounces.contoso.com"))
    header = verdict.header
    assert header.endswith("\r\n") and "\n" not in header.replace("\r\n", "")
    lines = header.removesuffix("\r\n").split("\r\n")
    assert all(len(line) <= FOLD_AT for line in lines)
    assert all(line.startswith(" ") for line in lines[1:])
    parsed = authres.AuthenticationResultsHeader.parse(header.strip())
    assert parsed.authserv_id == AUTHSERV_ID
    assert [(r.method, r.result) for r in parsed.results] == [
        ("spf", "softfail"),
        ("dkim", "permerror"),
        ("dkim", "pass"),
        ("dmarc", "pass"),
        ("compauth", "pass"),
    ]


# --- reading what cannot be read ------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        b" folded first line\r\nFrom: ann@contoso.com\r\n\r\nbody\r\n",  # a continuation with nothing above
        b"From: ann@contoso.com\r\nthis line has no colon\r\n\r\nbody\r\n",
    ],
)
async def test_a_header_section_that_cannot_be_read_is_a_permanent_error(
    authenticator: Authenticator, content: bytes
) -> None:
    verdict = await authenticator.authenticate(content, spf(SpfResult.PASS))
    assert [v.result for v in verdict.dkim] == [DkimResult.PERMERROR]
    assert (verdict.dmarc.result, verdict.dmarc.reason) == (
        DmarcResult.PERMERROR,
        "header section unreadable",
    )
    assert verdict.header.startswith("Authentication-Results: mx.postroom.test; spf=pass")


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\r\n",
        b"From: ann@contoso.com\r\n",
        b"\r\n\r\nbody only\r\n",
        b"From: <>\r\n\r\n",
        b"From: \xff\xfe@\xff\r\n\r\n",
    ],
)
async def test_odd_messages_get_a_verdict(authenticator: Authenticator, content: bytes) -> None:
    verdict = await authenticator.authenticate(content, spf())
    assert verdict.header.startswith("Authentication-Results: mx.postroom.test; spf=none")
    assert verdict.header.endswith("\r\n") and [v.result for v in verdict.dkim] == [DkimResult.NONE]


async def test_a_large_message_is_verified_off_the_event_loop_all_the_same(
    authenticator: Authenticator, contoso: SigningKey
) -> None:
    body = b"A line of the attached report, long enough to matter.\r\n" * (INLINE_VERIFY_OCTETS // 50)
    signed = contoso.sign(message(body=body))
    assert len(signed) > INLINE_VERIFY_OCTETS
    verdict = await authenticator.authenticate(signed, spf())
    assert (verdict.dkim[0].result, verdict.dmarc.result) == (DkimResult.PASS, DmarcResult.PASS)


def test_the_authserv_id_must_be_a_host_name(dns: DnsTestServer) -> None:
    from postroom.dns import DnsResolver

    with pytest.raises(ValueError, match="authserv-id"):
        Authenticator(DnsResolver(dns.settings()), "mx.postroom.test; spf=pass")


# --- RFC 8601 §5: what nobody outside may claim ----------------------------------------------------

BODY = (
    b"\r\nAuthentication-Results: mx.postroom.test; spf=pass\r\nX-Postroom-Organization-AuthAs: Internal\r\n"
)


@pytest.mark.parametrize(
    ("claimed", "removed"),
    [
        (b"Authentication-Results: mx.postroom.test; spf=pass smtp.mailfrom=contoso.com\r\n", True),
        (b"authentication-results: MX.Postroom.Test; dkim=pass\r\n", True),
        (b"Authentication-Results: (forged) mx.postroom.test 1; dmarc=pass\r\n", True),
        (b'Authentication-Results: "mx.postroom.test"; dmarc=pass\r\n', True),
        (b"Authentication-Results: mx.postroom.test;\r\n spf=pass\r\n\tsmtp.mailfrom=contoso.com\r\n", True),
        (b"Authentication-Results : mx.postroom.test; spf=pass\r\n", True),
        (b"X-Postroom-Organization-AuthAs: Internal\r\n", True),
        (b"x-postroom-organization-scl: -1\r\n", True),
        (b"Authentication-Results: mx.postroom.test.evil.example; spf=pass\r\n", False),
        (b"Authentication-Results: mx.lists.example; spf=pass\r\n", False),
        (b"ARC-Authentication-Results: i=1; mx.postroom.test; spf=pass\r\n", False),
        (b"X-Postroom-Antispam: BCL:0;\r\n", False),
    ],
)
def test_strip_foreign(claimed: bytes, removed: bool) -> None:
    head = (
        b"Received: from a\r\n by b; Mon, 1 Jun 2026 10:00:00 +0000\r\n"
        + claimed
        + b"From: ann@contoso.com\r\n"
    )
    original = head + BODY
    stripped = strip_foreign(original, AUTHSERV_ID)
    if not removed:
        assert stripped is None
        return
    assert stripped == head.replace(claimed, b"") + BODY  # the body, which quotes such lines, untouched


def test_strip_foreign_removes_every_copy_and_handles_bare_lf() -> None:
    content = (
        b"Authentication-Results: mx.postroom.test; spf=pass\n"
        b"From: ann@contoso.com\n"
        b"Authentication-Results: mx.postroom.test;\n dkim=pass\n"
        b"Authentication-Results: mx.lists.example; dkim=pass\n"
        b"\nbody\n"
    )
    assert strip_foreign(content, AUTHSERV_ID) == (
        b"From: ann@contoso.com\nAuthentication-Results: mx.lists.example; dkim=pass\n\nbody\n"
    )


def test_strip_foreign_leaves_the_usual_message_alone() -> None:
    assert strip_foreign(message(), AUTHSERV_ID) is None
    assert strip_foreign(b"", AUTHSERV_ID) is None


def test_carries_results() -> None:
    ours = b"Authentication-Results: mx.postroom.test; spf=pass\r\nFrom: a@contoso.com\r\n"
    assert carries_results(ours, AUTHSERV_ID)
    assert not carries_results(b"Authentication-Results: mx.lists.example; spf=pass\r\n", AUTHSERV_ID)
    assert not carries_results(message(), AUTHSERV_ID)
