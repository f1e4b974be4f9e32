"""The tenant admin API's connectors and the admin center's connectors page, on a running node, through
a real HTTP client: a token acts for its tenant only (another tenant's connector is a 404 like a name
nobody uses, and a change to it is refused), a browser's Basic password reads but never changes, and
a tenant that reuses a removed tenant's name gets none of its tokens or connectors."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from postroom.app import App, remove_tenant
from postroom.directory import Directory
from postroom.model.connectors import ValidationResult, ValidationStep
from postroom.model.scope import OPERATOR
from tests.admin.client import Reply, request
from tests.support.node import RunningNode, make_node, running

HOST = "admin.postroom.test"
JSON = "application/json"


@dataclass
class Served:
    node: RunningNode
    port: int
    tokens: dict[str, str]  # tenant -> its token

    @property
    def directory(self) -> Directory:
        return self.node.app.directory

    def call(
        self, path: str, *, tenant: str | None = None, method: str = "GET", auth: str | None = None
    ) -> Reply:
        headers = []
        if auth is not None:
            headers.append(("Authorization", auth))
        elif tenant is not None:
            headers.append(("Authorization", f"Bearer {self.tokens[tenant]}"))
        return request(self.port, [HOST], path, method=method, headers=headers)

    def json(self, path: str, tenant: str, method: str = "GET") -> Any:
        reply = self.call(path, tenant=tenant, method=method)
        assert (reply.status, reply.content_type) == (200, JSON), reply.body
        return json.loads(reply.body)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def setup(directory: Directory) -> dict[str, str]:
    """contoso and fabrikam, each with an on-premises inbound connector named "onprem" of its own, an
    outbound connector, and one name only the tenant uses; a token each."""
    for tenant in ("contoso", "fabrikam"):
        directory.add_tenant(OPERATOR, tenant)
        directory.add_domain(OPERATOR, f"{tenant}.com", tenant, verified=True)
        directory.add_inbound_connector(
            OPERATOR, tenant, "onprem", "on-premises", tls_certificate_name=f"*.{tenant}.com"
        )
        directory.add_outbound_connector(
            OPERATOR,
            tenant,
            "to onprem",
            "on-premises",
            all_accepted_domains=True,
            smart_hosts=[f"mail.{tenant}.com"],
            validation_recipients=[f"postmaster@{tenant}.com"],
        )
    directory.add_inbound_connector(
        OPERATOR, "contoso", "third party <b>", "partner", sender_ips=["192.0.2.0/24"]
    )
    directory.add_inbound_connector(
        OPERATOR, "fabrikam", "fabrikam only", "partner", sender_ips=["198.51.100.1"]
    )
    return {
        tenant: directory.add_api_token(OPERATOR, tenant, "admin")[1] for tenant in ("contoso", "fabrikam")
    }


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    settings = make_node(tmp_path_factory.mktemp("admin-connectors") / "node")
    app = App.open(settings)
    try:
        tokens = setup(app.directory)
    finally:
        app.close()
    with running(settings) as node:
        yield Served(node, node.address("admin")[1], tokens)


INBOUND = "/api/v1/connectors/inbound"
OUTBOUND = "/api/v1/connectors/outbound"


@pytest.mark.parametrize(
    "auth",
    [
        None,
        "Bearer ",
        "Bearer pr_" + "A" * 43,
        "Bearer not-a-token",
        "Basic !!!not-base64",
        basic("contoso", "pr_" + "B" * 43),
        "Token whatever",
    ],
)
def test_no_valid_token_no_answer(served: Served, auth: str | None) -> None:
    for path in (INBOUND, f"{INBOUND}/onprem", OUTBOUND, "/connectors"):
        reply = served.call(path, auth=auth)
        assert (reply.status, reply.content_type) == (401, JSON)
        challenges = [value for field, value in reply.headers if field.lower() == "www-authenticate"]
        assert challenges == [
            'Basic realm="Postroom admin", charset="UTF-8"',
            'Bearer realm="Postroom admin"',
        ]
        assert b"onprem" not in reply.body and b"contoso" not in reply.body


def test_each_tenant_sees_only_its_own_connectors(served: Served) -> None:
    for tenant, other in (("contoso", "fabrikam"), ("fabrikam", "contoso")):
        inbound = served.json(INBOUND, tenant)
        assert {c["tenant_id"] for c in inbound} == {served.directory.get_tenant(OPERATOR, tenant).id}
        onprem = served.json(f"{INBOUND}/ONPREM", tenant)
        assert onprem["tls_certificate_name"] == f"*.{tenant}.com", "its own connector of that name"
        assert "ips" not in onprem
        [outbound] = served.json(OUTBOUND, tenant)
        assert (outbound["smart_hosts"], outbound["validation"]) == (
            [f"mail.{tenant}.com"],
            "never validated",
        )
        assert other not in json.dumps(inbound) + json.dumps(outbound)
    assert [c["name"] for c in served.json(INBOUND, "contoso")] == ["onprem", "third party <b>"]
    assert served.json(f"{INBOUND}/{quote('third party <b>')}", "contoso")["sender_ips"] == ["192.0.2.0/24"]


def test_another_tenants_connector_is_a_404_like_a_name_nobody_uses(served: Served) -> None:
    for name in ("fabrikam only", "nobody uses this"):
        for path, method in (
            (f"{INBOUND}/{quote(name)}", "GET"),
            (f"{INBOUND}/{quote(name)}/disable", "POST"),
            (f"{OUTBOUND}/{quote(name)}", "GET"),
            (f"{OUTBOUND}/{quote(name)}/enable", "POST"),
        ):
            reply = served.call(path, tenant="contoso", method=method)
            direction = "inbound" if "inbound" in path else "outbound"
            assert (reply.status, reply.content_type) == (404, JSON)
            assert json.loads(reply.body) == {
                "error": f"tenant contoso has no {direction} connector {name!r}; `postroom connector "
                f"{direction} list --tenant contoso` shows them"
            }
    assert served.directory.inbound_connector(OPERATOR, "fabrikam", "fabrikam only").enabled, "untouched"


def test_a_tenant_turns_its_own_connectors_off_and_on(served: Served) -> None:
    off = served.json(f"{INBOUND}/onprem/disable", "contoso", method="POST")
    assert (off["name"], off["enabled"]) == ("onprem", False)
    assert not served.directory.inbound_connector(OPERATOR, "contoso", "onprem").enabled
    assert served.directory.inbound_connector(OPERATOR, "fabrikam", "onprem").enabled, (
        "not the other tenant's"
    )
    assert served.json(f"{INBOUND}/onprem/enable", "contoso", method="POST")["enabled"] is True
    off = served.json(f"{OUTBOUND}/{quote('to onprem')}/disable", "fabrikam", method="POST")
    assert (off["enabled"], off["validation"]) == (False, "never validated")
    assert (
        served.json(f"{OUTBOUND}/{quote('To Onprem')}/enable", "fabrikam", method="POST")["enabled"] is True
    )
    assert served.call(f"{INBOUND}/onprem/disable", tenant="contoso").status == 404, "a change is a POST"
    assert served.directory.inbound_connector(OPERATOR, "contoso", "onprem").enabled


def test_a_browsers_basic_password_reads_but_never_changes(served: Served) -> None:
    token = served.tokens["contoso"]
    reply = served.call(INBOUND, auth=basic("contoso", token))
    assert reply.status == 200 and b"third party" in reply.body
    refused = served.call(f"{INBOUND}/onprem/disable", method="POST", auth=basic("contoso", token))
    assert refused.status == 403 and b"Authorization: Bearer" in refused.body
    assert served.directory.inbound_connector(OPERATOR, "contoso", "onprem").enabled
    assert served.call(INBOUND, auth=basic("fabrikam", token)).status == 401, "the user name is the tenant's"


def test_outbound_connectors_show_their_last_validation(served: Served) -> None:
    connector = served.directory.outbound_connector(OPERATOR, "fabrikam", "to onprem")
    step = ValidationStep(
        "tls", False, "certificate name mismatch", "450 4.7.320 Certificate validation failed"
    )
    failed = ValidationResult(
        connector.id, "run-1", "postmaster@fabrikam.com", False, step.reply, (step,), 86_400.0
    )
    served.directory.record_validation(OPERATOR, "fabrikam", "to onprem", [failed])
    shown = served.json(f"{OUTBOUND}/{quote('to onprem')}", "fabrikam")
    assert shown["validation"] == "1 of 1 failed at 1970-01-02 00:00:00 UTC"
    assert shown["last_validation"][0]["steps"] == [
        {"step": "tls", "ok": False, "detail": "certificate name mismatch", "reply": step.reply}
    ]
    assert served.json(OUTBOUND, "contoso")[0]["validation"] == "never validated"
    page = served.call("/connectors", auth=basic("fabrikam", served.tokens["fabrikam"]))
    assert page.status == 200
    assert "1 of 1 failed at 1970-01-02 00:00:00 UTC" in page.body.decode()
    assert "postmaster@fabrikam.com: failed (450 4.7.320 Certificate validation failed)" in page.body.decode()


def test_the_connectors_page_shows_the_tenants_connectors_escaped(served: Served) -> None:
    page = served.call("/connectors", tenant="contoso")
    assert (page.status, page.content_type) == (200, "text/html; charset=utf-8")
    text = page.body.decode()
    assert "<h1>Connectors of contoso</h1>" in text
    assert "<td>third party &lt;b&gt;</td>" in text and "<b>" not in text
    assert "<td>*.contoso.com</td>" in text and "<td>mail.contoso.com</td>" in text
    assert "never validated" in text
    assert "fabrikam" not in text
    headers = {field.lower(): value for field, value in page.headers}
    assert headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
    assert headers["x-frame-options"] == "DENY"


def test_a_removed_token_or_tenant_no_longer_opens_anything(served: Served, tmp_path: Path) -> None:
    directory = served.directory
    directory.add_tenant(OPERATOR, "northwind")
    directory.add_domain(OPERATOR, "northwind.com", "northwind", verified=True)
    directory.add_inbound_connector(
        OPERATOR, "northwind", "onprem", "on-premises", sender_ips=["203.0.113.9"]
    )
    _, spare = directory.add_api_token(OPERATOR, "northwind", "spare")
    _, kept = directory.add_api_token(OPERATOR, "northwind", "kept")
    directory.remove_api_token(OPERATOR, "northwind", "SPARE")
    assert served.call(INBOUND, auth=f"Bearer {spare}").status == 401
    assert [c["name"] for c in json.loads(served.call(INBOUND, auth=f"Bearer {kept}").body)] == ["onprem"]

    app = served.node.app
    remove_tenant(app.database, app.blobs, directory, OPERATOR, "northwind", apply=True)
    directory.add_tenant(OPERATOR, "northwind")
    directory.add_domain(OPERATOR, "northwind.com", "northwind", verified=True)
    assert served.call(INBOUND, auth=f"Bearer {kept}").status == 401, "the old tenant's token went with it"
    assert directory.api_tokens(OPERATOR, "northwind") == []
    _, fresh = directory.add_api_token(OPERATOR, "northwind", "kept")
    assert json.loads(served.call(INBOUND, auth=f"Bearer {fresh}").body) == []
    assert served.call(f"{INBOUND}/onprem", auth=f"Bearer {fresh}").status == 404
