"""ARC: a forwarded message whose DKIM signature broke on the way passes DMARC for a tenant that trusts
the sealer, and does not for one that does not; broken and over-long chains fail; Postroom's own seal
(instance 1 or the next one) verifies at the next hop."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from postroom.model.verdicts import ArcResult, AuthVerdict, CompAuthResult, DkimResult, DmarcResult, SpfResult
from postroom.protection.arc import MAX_INSTANCES, NotSealed, arc_seal
from postroom.protection.authentication import Authenticator
from tests.protection.conftest import AUTHSERV_ID, message, spf
from tests.support.dns_server import DnsTestServer
from tests.support.mail_auth import SigningKey, rsa_key, seal_as_forwarder

ORIGIN_RESULTS = "spf=pass smtp.mailfrom=contoso.com; dkim=pass header.d=contoso.com"


@pytest.fixture(scope="module")
def keys(dns: DnsTestServer) -> Iterator[dict[str, SigningKey]]:
    made = {
        "contoso": rsa_key("contoso.com", "s1", bits=1024),
        "lists": rsa_key("lists.example", "arc", bits=1024),
        "forwarder": rsa_key("forwarder.example", "arc", bits=1024),
        "tailspin": rsa_key("tailspin.example", "selector1", bits=1024),
    }
    for key in made.values():
        key.publish(dns)
    dns.add_txt("_dmarc.contoso.com", "v=DMARC1; p=reject")
    yield made
    dns.remove_records("_dmarc.contoso.com")


def through_a_list(keys: dict[str, SigningKey], results: str = ORIGIN_RESULTS) -> bytes:
    """contoso.com's signed message as a mailing list sends it on: subject tag and footer added (the
    signature breaks), then sealed with what the list saw on arrival."""
    original = keys["contoso"].sign(message())
    changed = original.replace(b"Subject: Quarterly figures", b"Subject: [team] Quarterly figures")
    changed += b"--\r\nteam mailing list\r\n"
    return seal_as_forwarder(changed, keys["lists"], "mx.lists.example", results)


LIST_SPF = spf(SpfResult.FAIL, "contoso.com", "198.51.100.7")  # the list's IP is not in contoso's SPF


async def test_a_broken_signature_under_a_valid_seal(
    authenticator: Authenticator, keys: dict[str, SigningKey]
) -> None:
    verdict = await authenticator.authenticate(through_a_list(keys), LIST_SPF)
    assert [v.result for v in verdict.dkim] == [DkimResult.FAIL]
    assert (verdict.arc.result, verdict.arc.instances, verdict.arc.sealers) == (
        ArcResult.PASS,
        1,
        ("lists.example",),
    )
    assert verdict.arc.recorded.startswith("mx.lists.example; spf=pass")
    assert verdict.arc.recorded_aligned
    assert (verdict.dmarc.result, verdict.dmarc.action.value) == (DmarcResult.FAIL, "oreject")
    assert (verdict.compauth, verdict.compauth_reason) == (CompAuthResult.FAIL, 0)
    assert "arc=pass (sealer lists.example)" in unfolded(verdict)


async def test_passes_for_a_tenant_that_trusts_the_sealer(
    authenticator: Authenticator, keys: dict[str, SigningKey]
) -> None:
    verdict = await authenticator.authenticate(through_a_list(keys), LIST_SPF)
    seen = authenticator.trusting(verdict, frozenset({"lists.example"}))
    assert (seen.dmarc.result, seen.dmarc.action.value) == (DmarcResult.PASS, "none")
    assert (seen.compauth, seen.compauth_reason, seen.arc_trusted) == (CompAuthResult.PASS, 130, True)
    assert "arc=pass (trusted sealer lists.example)" in unfolded(seen)
    assert "dmarc=pass action=none header.from=contoso.com; compauth=pass reason=130" in unfolded(seen)
    assert seen.dkim == verdict.dkim and seen.spf == verdict.spf  # our own results stay as they were


@pytest.mark.parametrize("trusted", [frozenset(), frozenset({"forwarder.example"}), frozenset({"example"})])
async def test_does_not_pass_for_a_tenant_that_does_not(
    authenticator: Authenticator, keys: dict[str, SigningKey], trusted: frozenset[str]
) -> None:
    verdict = await authenticator.authenticate(through_a_list(keys), LIST_SPF)
    assert authenticator.trusting(verdict, trusted) is verdict


async def test_a_trusted_sealer_that_saw_no_aligned_pass_changes_nothing(
    authenticator: Authenticator, keys: dict[str, SigningKey]
) -> None:
    sealed = through_a_list(keys, "spf=softfail smtp.mailfrom=contoso.com; dkim=pass header.d=fabrikam.com")
    verdict = await authenticator.authenticate(sealed, LIST_SPF)
    assert verdict.arc.result is ArcResult.PASS and not verdict.arc.recorded_aligned
    assert authenticator.trusting(verdict, frozenset({"lists.example"})) is verdict


async def test_a_message_changed_after_the_seal_fails_the_chain(
    authenticator: Authenticator, keys: dict[str, SigningKey]
) -> None:
    tampered = through_a_list(keys).replace(b"Quarterly figures", b"Quarterly invoice")
    verdict = await authenticator.authenticate(tampered, LIST_SPF)
    assert (verdict.arc.result, verdict.arc.reason) == (
        ArcResult.FAIL,
        "newest message signature did not verify",
    )
    assert authenticator.trusting(verdict, frozenset({"lists.example"})) is verdict
    assert "arc=fail (newest message signature did not verify)" in unfolded(verdict)


async def test_only_the_newest_sealer_is_trusted(
    authenticator: Authenticator, keys: dict[str, SigningKey]
) -> None:
    twice = seal_as_forwarder(through_a_list(keys), keys["forwarder"], "mx.forwarder.example", "arc=pass")
    verdict = await authenticator.authenticate(twice, LIST_SPF)
    assert (verdict.arc.result, verdict.arc.sealers) == (
        ArcResult.PASS,
        ("lists.example", "forwarder.example"),
    )
    # The newest sealer recorded no SPF or DKIM pass of its own: nothing to honour, whoever is trusted.
    assert authenticator.trusting(verdict, frozenset({"lists.example"})) is verdict
    assert authenticator.trusting(verdict, frozenset({"forwarder.example"})) is verdict


async def test_a_chain_longer_than_verified_fails(
    authenticator: Authenticator, keys: dict[str, SigningKey]
) -> None:
    sealed = seal_as_forwarder(
        message(), keys["forwarder"], "mx.forwarder.example", "spf=pass smtp.mailfrom=contoso.com"
    )
    for _ in range(MAX_INSTANCES):
        sealed = seal_as_forwarder(sealed, keys["forwarder"], "mx.forwarder.example", "arc=pass")
    verdict = await authenticator.authenticate(sealed, spf())
    assert (verdict.arc.result, verdict.arc.instances, verdict.arc.reason) == (
        ArcResult.FAIL,
        MAX_INSTANCES + 1,
        "chain longer than verified",
    )


async def test_our_seal_on_a_message_that_came_without_a_chain_verifies_at_the_next_hop(
    authenticator: Authenticator, keys: dict[str, SigningKey]
) -> None:
    received = keys["contoso"].sign(message())
    auth = await authenticator.authenticate(received, spf(SpfResult.PASS))
    changed = received.replace(b"The figures", b"FYI: the figures")  # e.g. a disclaimer added on the way
    arc_set = seal(changed, auth, keys["tailspin"])  # what we saw on arrival, sealed over what we send
    assert arc_set.startswith(b"ARC-Seal: i=1; cv=none; a=rsa-sha256; d=tailspin.example; s=selector1;")
    assert b"ARC-Authentication-Results: i=1; mx.postroom.test;" in arc_set
    forwarded = arc_set + changed
    next_hop = await authenticator.authenticate(forwarded, spf(SpfResult.FAIL))
    assert next_hop.dkim[0].result is DkimResult.FAIL
    assert (next_hop.arc.result, next_hop.arc.sealers) == (ArcResult.PASS, ("tailspin.example",))
    assert next_hop.arc.recorded_aligned  # we saw contoso.com's DKIM and SPF pass
    trusted = authenticator.trusting(next_hop, frozenset({"tailspin.example"}))
    assert (trusted.dmarc.result, trusted.compauth_reason) == (DmarcResult.PASS, 130)


async def test_our_seal_continues_a_chain_that_passed(
    authenticator: Authenticator, keys: dict[str, SigningKey]
) -> None:
    received = through_a_list(keys)
    auth = await authenticator.authenticate(received, LIST_SPF)
    arc_set = seal(received, auth, keys["tailspin"])
    assert arc_set.startswith(b"ARC-Seal: i=2; cv=pass;")
    next_hop = await authenticator.authenticate(arc_set + received, LIST_SPF)
    assert (next_hop.arc.result, next_hop.arc.sealers) == (
        ArcResult.PASS,
        ("lists.example", "tailspin.example"),
    )


async def test_our_seal_reads_our_results_from_a_queued_message(
    authenticator: Authenticator, keys: dict[str, SigningKey]
) -> None:
    received = keys["contoso"].sign(message())
    auth = await authenticator.authenticate(received, spf(SpfResult.PASS))
    queued = auth.header.encode() + received  # as the pipeline stored it
    arc_set = seal(queued, None, keys["tailspin"])
    next_hop = await authenticator.authenticate(arc_set + queued, spf(SpfResult.FAIL))
    assert next_hop.arc.result is ArcResult.PASS and next_hop.arc.recorded_aligned


async def test_no_seal_without_results_of_ours_or_with_a_key_that_is_not_rsa(
    keys: dict[str, SigningKey],
) -> None:
    with pytest.raises(NotSealed, match=r"no usable Authentication-Results of mx\.postroom\.test"):
        seal(message(), None, keys["tailspin"])
    foreign = (
        b"Authentication-Results: mx.elsewhere.example; spf=pass smtp.mailfrom=contoso.com\r\n" + message()
    )
    with pytest.raises(NotSealed):
        seal(foreign, None, keys["tailspin"])
    with pytest.raises(NotSealed, match="cannot be read"):
        arc_seal(
            b"Authentication-Results: mx.postroom.test; spf=pass\r\n" + message(),
            None,
            domain="tailspin.example",
            selector="selector1",
            private_key=b"not a key",
            authserv_id=AUTHSERV_ID,
            now=0,
        )


def seal(content: bytes, auth: AuthVerdict | None, key: SigningKey) -> bytes:
    return arc_seal(
        content,
        auth,
        domain=key.domain,
        selector=key.selector,
        private_key=key.pkcs8(),
        authserv_id=AUTHSERV_ID,
        now=1_780_000_000,
    )


def unfolded(verdict: AuthVerdict) -> str:
    return " ".join(verdict.header.split())
