"""Admin API tokens in the directory: the operator makes them, each acts for its tenant only, a
removed token or tenant opens nothing, and a tenant cannot see or remove another tenant's tokens."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from postroom.directory import (
    ApiCaller,
    ConflictError,
    Directory,
    InvalidInputError,
    NotFoundError,
    RefusedError,
)
from postroom.model.scope import OPERATOR, TenantScope
from postroom.storage import Database
from postroom.storage.schema import api_tokens
from tests.support.records import Org, populate


@pytest.fixture
def org(directory: Directory) -> Org:
    return populate(directory)


def test_a_token_acts_for_its_tenant_and_only_its_hash_is_kept(
    database: Database, directory: Directory, org: Org
) -> None:
    token, secret = directory.add_api_token(OPERATOR, "contoso", "Helpdesk")
    assert (token.tenant_id, token.tenant, token.name) == (org.contoso, "contoso", "Helpdesk")
    assert secret.startswith("pr_") and len(secret) == 46
    assert directory.authenticate_api_token(secret) == ApiCaller(
        TenantScope(org.contoso), "contoso", "Helpdesk"
    )
    with database.read() as conn:
        stored = conn.execute(select(api_tokens)).one()
    assert secret not in str(tuple(stored)), "the token itself is not stored"
    for wrong in ("", secret[:-1], secret + "x", secret.upper(), "pr_" + "A" * 43, f" {secret}"):
        assert directory.authenticate_api_token(wrong) is None
    _, other = directory.add_api_token(OPERATOR, "contoso", "Automation")
    assert other != secret
    assert [t.name for t in directory.api_tokens(TenantScope(org.contoso), "contoso")] == [
        "Helpdesk",
        "Automation",
    ]
    directory.remove_api_token(TenantScope(org.contoso), "contoso", "helpdesk")
    assert directory.authenticate_api_token(secret) is None
    assert directory.authenticate_api_token(other) is not None


def test_only_the_operator_makes_tokens_and_a_tenant_sees_only_its_own(
    directory: Directory, org: Org
) -> None:
    directory.add_api_token(OPERATOR, "contoso", "admin")
    fabrikam = TenantScope(org.fabrikam)
    with pytest.raises(RefusedError, match="only the service operator can make API tokens"):
        directory.add_api_token(fabrikam, "fabrikam", "mine")  # type: ignore[arg-type]
    for attempt in (
        lambda: directory.api_tokens(fabrikam, "contoso"),
        lambda: directory.remove_api_token(fabrikam, "contoso", "admin"),
    ):
        with pytest.raises(NotFoundError, match="no tenant named 'contoso'"):
            attempt()
    assert directory.api_tokens(fabrikam, "fabrikam") == []
    with pytest.raises(NotFoundError, match="tenant fabrikam has no API token 'admin'"):
        directory.remove_api_token(fabrikam, "fabrikam", "admin")
    assert [t.name for t in directory.api_tokens(OPERATOR, "contoso")] == ["admin"]
    with pytest.raises(ConflictError, match="already has an API token named ADMIN"):
        directory.add_api_token(OPERATOR, "contoso", "ADMIN")
    with pytest.raises(InvalidInputError, match="1 to 64 printable characters"):
        directory.add_api_token(OPERATOR, "contoso", " ")
