"""The app's hooks for outbound sending: the DKIM key is the sending tenant's own, never another's; a
forward of mail from outside leaves ARC-sealed with the forwarding tenant's key, and verifies."""

from __future__ import annotations

from dataclasses import replace

from postroom.app.sending import (
    SIGNING_KEY_SECONDS,
    SigningKeys,
    arc_sealer,
    authserv_id,
    dkim_signer,
    remote_delivery,
)
from postroom.directory import CachedDirectory
from postroom.dns import DnsResolver
from postroom.dns.records import DkimSelector, dkim_record
from postroom.model.message import header_section
from postroom.model.scope import OPERATOR, TenantScope
from postroom.model.verdicts import ArcResult, SpfResult, SpfVerdict
from postroom.protection.authentication import Authenticator
from tests.conftest import Hosted
from tests.support.dns_server import DnsTestServer


def tenant_id(hosted: Hosted, name: str) -> int:
    return next(t.id for t in hosted.app.directory.list_tenants(OPERATOR) if t.name == name)


def test_the_from_domain_of_the_sending_tenant_signs_with_its_active_key(hosted: Hosted) -> None:
    contoso = tenant_id(hosted, "contoso")
    signer = dkim_signer(SigningKeys(hosted.app.directory), contoso, "Contoso.com")
    assert signer is not None
    selector, pem = hosted.app.directory.dkim_signing_key(OPERATOR, "contoso.com")
    assert (signer.domain, signer.selector, signer.private_key_pem) == ("contoso.com", selector, pem)


def test_another_tenants_domain_or_an_unknown_one_is_not_signed(hosted: Hosted) -> None:
    fabrikam = tenant_id(hosted, "fabrikam")
    assert dkim_signer(SigningKeys(hosted.app.directory), fabrikam, "contoso.com") is None
    assert dkim_signer(SigningKeys(hosted.app.directory), fabrikam, "gmail.example") is None
    assert dkim_signer(SigningKeys(hosted.app.directory), None, "contoso.com") is None


def test_the_agent_is_built_from_the_node_settings(hosted: Hosted) -> None:
    app = hosted.app
    agent = remote_delivery(
        app.settings, app.resolver, app.blobs, app.directory, CachedDirectory(app.database)
    )
    assert agent.helo_name == hosted.settings.service.hostname
    assert agent.max_hops == 30


AUTHSERV = "mx.postroom.test"
FROM_OUTSIDE = (
    b"From: Dana <dana@outside.example>\r\nTo: alice@contoso.com\r\nSubject: Hello\r\n"
    b"Message-ID: <o1@outside.example>\r\n\r\nHello Alice.\r\n"
)
OUR_RESULTS = (
    b"Authentication-Results: mx.postroom.test; spf=pass (sender IP is 192.0.2.7)\r\n"
    b" smtp.mailfrom=outside.example; dkim=none (message not signed); dmarc=bestguesspass\r\n"
    b" action=none header.from=outside.example; compauth=pass reason=101\r\n"
)


async def test_a_forward_from_outside_is_sealed_with_the_forwarding_tenants_key(hosted: Hosted) -> None:
    directory = hosted.app.directory
    contoso = tenant_id(hosted, "contoso")
    queued = OUR_RESULTS + FROM_OUTSIDE
    sealer = arc_sealer(SigningKeys(directory), AUTHSERV, contoso, header_section(queued))
    assert sealer is not None
    arc_set = sealer(queued)
    # The tenant's default domain (the service's own name for it) seals: its keys are always published.
    domain = next(d.name for d in directory.list_domains(OPERATOR, "contoso") if d.is_default)
    selector, _ = directory.dkim_signing_key(OPERATOR, domain)
    assert b" ".join(arc_set.split()).startswith(
        f"ARC-Seal: i=1; cv=none; a=rsa-sha256; d={domain}; s={selector};".encode()
    )
    with DnsTestServer({domain: ""}) as dns:  # the next hop reads the keys the tenant publishes
        for key in directory.dkim_keys(OPERATOR, domain):
            record = dkim_record(domain, DkimSelector(key.selector, key.public_key, key.active))
            dns.add_txt(record.name, record.value)
        next_hop = Authenticator(DnsResolver(dns.settings()), "mx.next-hop.example")
        verdict = await next_hop.authenticate(
            arc_set + queued, SpfVerdict(SpfResult.FAIL, "outside.example", "mailfrom", "198.51.100.2")
        )
    assert (verdict.arc.result, verdict.arc.sealers) == (ArcResult.PASS, (domain,))
    assert verdict.arc.recorded.startswith("mx.postroom.test; spf=pass smtp.mailfrom=outside.example")
    assert verdict.arc.recorded_aligned


def test_only_forwards_of_mail_from_outside_are_sealed(hosted: Hosted) -> None:
    directory = hosted.app.directory
    contoso = tenant_id(hosted, "contoso")
    keys = SigningKeys(directory)
    queued = header_section(OUR_RESULTS + FROM_OUTSIDE)
    assert arc_sealer(keys, AUTHSERV, None, queued) is None  # mail of no tenant
    assert arc_sealer(keys, AUTHSERV, contoso, header_section(FROM_OUTSIDE)) is None  # submitted
    claimed = header_section(OUR_RESULTS.replace(b"mx.postroom.test", b"mx.other.example") + FROM_OUTSIDE)
    assert arc_sealer(keys, AUTHSERV, contoso, claimed) is None  # another server's results


def test_the_sealing_key_is_the_default_domains_when_verified(hosted: Hosted) -> None:
    directory = hosted.app.directory
    contoso = tenant_id(hosted, "contoso")
    domains = directory.list_domains(OPERATOR, "contoso")
    default = next(d.name for d in domains if d.is_default)
    key = directory.arc_sealing_key(TenantScope(contoso))
    assert key is not None and key.domain == default
    selector, pem = directory.dkim_signing_key(OPERATOR, default)
    assert (key.selector, key.private_key_pem) == (selector, pem)


def test_the_authserv_id_is_the_setting_or_the_host_name(hosted: Hosted) -> None:
    settings = hosted.settings
    assert authserv_id(settings) == settings.service.hostname
    configured = replace(settings, protection=replace(settings.protection, authserv_id="auth.postroom.test"))
    assert authserv_id(configured) == "auth.postroom.test"


def test_a_signing_key_is_read_again_once_its_time_is_up(hosted: Hosted) -> None:
    """Keys are kept `SIGNING_KEY_SECONDS` (the agent asks per message); a rotation is in force after."""
    directory = hosted.app.directory
    contoso = tenant_id(hosted, "contoso")
    now = [1000.0]
    keys = SigningKeys(directory, clock=lambda: now[0])
    before = dkim_signer(keys, contoso, "contoso.com")
    assert before is not None
    directory.rotate_dkim(OPERATOR, "contoso.com")
    assert dkim_signer(keys, contoso, "contoso.com") == before  # within its time: the key read before
    now[0] += SIGNING_KEY_SECONDS
    after = dkim_signer(keys, contoso, "contoso.com")
    assert after is not None and after.selector != before.selector


def test_the_tenants_own_mail_is_not_sealed(hosted: Hosted) -> None:
    """Mail From the tenant's own domain (its on-premises server relays it; hybrid 4) carries our
    Authentication-Results from its receipt, yet leaves with only the tenant's aligned DKIM signature."""
    contoso = tenant_id(hosted, "contoso")
    own = FROM_OUTSIDE.replace(b"dana@outside.example", b"ann@contoso.com")
    keys = SigningKeys(hosted.app.directory)
    assert arc_sealer(keys, AUTHSERV, contoso, header_section(OUR_RESULTS + own)) is None
    assert arc_sealer(keys, AUTHSERV, contoso, header_section(OUR_RESULTS + FROM_OUTSIDE)) is not None
