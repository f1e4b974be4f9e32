"""The app's hooks for outbound sending: the DKIM key is the sending tenant's own, never another's."""

from __future__ import annotations

from postroom.app.sending import dkim_signer, remote_delivery
from postroom.directory import CachedDirectory
from postroom.model.scope import OPERATOR
from tests.conftest import Hosted


def tenant_id(hosted: Hosted, name: str) -> int:
    return next(t.id for t in hosted.app.directory.list_tenants(OPERATOR) if t.name == name)


def test_the_from_domain_of_the_sending_tenant_signs_with_its_active_key(hosted: Hosted) -> None:
    contoso = tenant_id(hosted, "contoso")
    signer = dkim_signer(hosted.app.directory, contoso, "Contoso.com")
    assert signer is not None
    selector, pem = hosted.app.directory.dkim_signing_key(OPERATOR, "contoso.com")
    assert (signer.domain, signer.selector, signer.private_key_pem) == ("contoso.com", selector, pem)


def test_another_tenants_domain_or_an_unknown_one_is_not_signed(hosted: Hosted) -> None:
    fabrikam = tenant_id(hosted, "fabrikam")
    assert dkim_signer(hosted.app.directory, fabrikam, "contoso.com") is None
    assert dkim_signer(hosted.app.directory, fabrikam, "gmail.example") is None
    assert dkim_signer(hosted.app.directory, None, "contoso.com") is None


def test_the_agent_is_built_from_the_node_settings(hosted: Hosted) -> None:
    app = hosted.app
    agent = remote_delivery(
        app.settings, app.resolver, app.blobs, app.directory, CachedDirectory(app.database)
    )
    assert agent.helo_name == hosted.settings.service.hostname
    assert agent.max_hops == 30
