"""Scenario test support: an applied scenario and connectors written as rows, and an in-memory twin of
the directory's connector and scenario service (`app.scenarios.ScenarioDirectory`).

The rows go straight into `tenant_scenarios`, `inbound_connectors` and `outbound_connectors`, as the
directory's connector service (issue 11, part A) writes them; the twin keeps connectors and the
recorded scenario in memory on top of a real `Directory` (tenants, domains, their types), so the plan
logic of `scenario apply` is tested before that service exists.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy import delete, insert

from postroom.directory import (
    AcceptedDomain,
    ConflictError,
    Directory,
    DomainType,
    NotFoundError,
    RefusedError,
    Tenant,
)
from postroom.directory.scenarios import SCENARIOS, AppliedScenario, ScenarioParameters
from postroom.model.connectors import ConnectorType, InboundConnector, OutboundConnector, OutboundTls
from postroom.model.scope import Scope
from postroom.storage import Database
from postroom.storage.schema import inbound_connectors, outbound_connectors, tenant_scenarios


def record_scenario(database: Database, tenant_id: int, name: str, parameters: Mapping[str, object]) -> None:
    with database.write() as conn:
        conn.execute(delete(tenant_scenarios).where(tenant_scenarios.c.tenant_id == tenant_id))
        conn.execute(
            insert(tenant_scenarios).values(
                tenant_id=tenant_id, scenario=name, parameters=json.dumps(parameters), applied_at=time.time()
            )
        )


def _column(value: object) -> object:
    if isinstance(value, tuple | list):
        return json.dumps(list(value))
    if isinstance(value, OutboundTls | ConnectorType):
        return value.value
    return value


def insert_inbound(
    database: Database, tenant_id: int, name: str, type: ConnectorType, **settings: object
) -> None:
    values: dict[str, object] = {
        "enabled": True,
        "require_tls": False,
        "restrict_domains_to_ips": False,
        "restrict_domains_to_certificate": False,
        "treat_messages_as_internal": False,
        "ef_skip_last_ip": False,
        **settings,
    }
    with database.write() as conn:
        conn.execute(
            insert(inbound_connectors).values(
                tenant_id=tenant_id,
                name=name,
                name_key=name.lower(),
                type=type.value,
                created_at=time.time(),
                **{k: _column(v) for k, v in values.items()},
            )
        )


def insert_outbound(
    database: Database, tenant_id: int, name: str, type: ConnectorType, **settings: object
) -> None:
    values: dict[str, object] = {
        "enabled": True,
        "all_accepted_domains": False,
        "tls": OutboundTls.OPPORTUNISTIC,
        "rule_scoped": False,
        "route_all_via_on_premises": False,
        "sender_rewriting": False,
        **settings,
    }
    with database.write() as conn:
        conn.execute(
            insert(outbound_connectors).values(
                tenant_id=tenant_id,
                name=name,
                name_key=name.lower(),
                type=type.value,
                created_at=time.time(),
                **{k: _column(v) for k, v in values.items()},
            )
        )


@dataclass(frozen=True)
class Validation:
    run: str
    recipient: str
    ok: bool
    reply: str
    at: float


@dataclass
class ConnectorTwin:
    """`ScenarioDirectory` over a real `Directory`: connectors, validations and the scenario in memory."""

    directory: Directory
    inbound: dict[tuple[int, str], InboundConnector] = field(default_factory=dict)
    outbound: dict[tuple[int, str], OutboundConnector] = field(default_factory=dict)
    validations: dict[tuple[int, str], list[Validation]] = field(default_factory=dict)
    scenarios: dict[int, AppliedScenario] = field(default_factory=dict)
    refuse: str = ""  # a connector name whose write the twin refuses, as the service refuses bad input
    writes: list[str] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def get_tenant(self, scope: Scope, name: str) -> Tenant:
        return self.directory.get_tenant(scope, name)

    def list_domains(self, scope: Scope, tenant: str | None = None) -> list[AcceptedDomain]:
        return self.directory.list_domains(scope, tenant)

    def set_domain_type(self, scope: Scope, name: str, domain_type: DomainType) -> AcceptedDomain:
        self.writes.append(f"domain {name}")
        return self.directory.set_domain_type(scope, name, domain_type)

    def applied_scenario(self, scope: Scope, tenant: str) -> AppliedScenario | None:
        return self.scenarios.get(self.get_tenant(scope, tenant).id)

    def set_scenario(
        self, scope: Scope, tenant: str, scenario: str, parameters: Mapping[str, object]
    ) -> None:
        found = self.get_tenant(scope, tenant)
        self.writes.append(f"scenario {scenario}")
        self.scenarios[found.id] = AppliedScenario(
            found.id, scenario, SCENARIOS.get(scenario), ScenarioParameters.from_json(parameters), time.time()
        )

    def inbound_connectors(self, scope: Scope, tenant: str) -> Sequence[InboundConnector]:
        found = self.get_tenant(scope, tenant)
        return [c for (t, _), c in self.inbound.items() if t == found.id]

    def outbound_connectors(self, scope: Scope, tenant: str) -> Sequence[OutboundConnector]:
        found = self.get_tenant(scope, tenant)
        return [c for (t, _), c in self.outbound.items() if t == found.id]

    def _check(self, name: str) -> None:
        if name == self.refuse:
            raise RefusedError(f"the twin refuses {name}")
        self.writes.append(f"connector {name}")

    def add_inbound_connector(
        self, scope: Scope, tenant: str, name: str, type: ConnectorType, **settings: object
    ) -> InboundConnector:
        found = self.get_tenant(scope, tenant)
        self._check(name)
        connector = InboundConnector(next(self._ids), found.id, name, type, **settings)  # type: ignore[arg-type]
        self.inbound[(found.id, name.lower())] = connector
        return connector

    def set_inbound_connector(
        self, scope: Scope, tenant: str, name: str, **settings: object
    ) -> InboundConnector:
        found = self.get_tenant(scope, tenant)
        key = (found.id, name.lower())
        if key not in self.inbound:
            raise NotFoundError(f"no inbound connector {name}")
        self._check(name)
        self.inbound[key] = dataclasses.replace(self.inbound[key], **settings)  # type: ignore[arg-type]
        return self.inbound[key]

    def _one_route(self, connector: OutboundConnector) -> None:
        """As the directory: one connector per recipient domain (spec §3.3), disabled ones too."""
        for (tenant_id, key), other in self.outbound.items():
            shared = set(other.recipient_domains) & set(connector.recipient_domains)
            if tenant_id == connector.tenant_id and key != connector.name.lower() and shared:
                raise ConflictError(f"outbound connector {other.name} already routes {sorted(shared)[0]}")

    def add_outbound_connector(
        self, scope: Scope, tenant: str, name: str, type: ConnectorType, **settings: object
    ) -> OutboundConnector:
        found = self.get_tenant(scope, tenant)
        self._check(name)
        connector = OutboundConnector(next(self._ids), found.id, name, type, **settings)  # type: ignore[arg-type]
        self._one_route(connector)
        self.outbound[(found.id, name.lower())] = connector
        return connector

    def set_outbound_connector(
        self, scope: Scope, tenant: str, name: str, **settings: object
    ) -> OutboundConnector:
        found = self.get_tenant(scope, tenant)
        key = (found.id, name.lower())
        if key not in self.outbound:
            raise NotFoundError(f"no outbound connector {name}")
        self._check(name)
        changed = dataclasses.replace(self.outbound[key], **settings)  # type: ignore[arg-type]
        self._one_route(changed)
        self.outbound[key] = changed
        return changed

    def remove_outbound_connector(self, scope: Scope, tenant: str, name: str) -> None:
        found = self.get_tenant(scope, tenant)
        self._check(name)
        del self.outbound[(found.id, name.lower())]

    def connector_validations(
        self, scope: Scope, tenant: str, name: str, limit: int = 20
    ) -> Sequence[Validation]:
        found = self.get_tenant(scope, tenant)
        return self.validations.get((found.id, name.lower()), [])[:limit]
