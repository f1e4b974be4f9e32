"""Outbound connectors for tests, written straight into `outbound_connectors` (the directory's connector
service is built in parallel; the lead may switch these helpers to it). Each write logs a connector
change for the tenant, so caching nodes drop their copy as they would after the service's write."""

from __future__ import annotations

import json
import time

from sqlalchemy import delete, insert, update

from postroom.directory.base import DirectoryChanges, log_changes
from postroom.model.connectors import ConnectorType, OutboundTls
from postroom.storage import Database
from postroom.storage.schema import outbound_connectors

_LISTS = ("recipient_domains", "smart_hosts", "validation_recipients")


def _values(settings: dict[str, object]) -> dict[str, object]:
    values = dict(settings)
    for key in _LISTS:
        if key in values:
            values[key] = json.dumps(list(values[key]))  # type: ignore[call-overload]
    if "tls" in values:
        values["tls"] = OutboundTls(values["tls"]).value
    return values


def add_outbound_connector(
    database: Database,
    tenant_id: int,
    name: str,
    type: ConnectorType = ConnectorType.ON_PREMISES,
    **settings: object,
) -> int:
    """Insert an outbound connector of `tenant_id`; `settings` are OutboundConnector field names."""
    row: dict[str, object] = {
        "tenant_id": tenant_id,
        "name": name,
        "name_key": name.lower(),
        "type": type.value,
        "enabled": True,
        "recipient_domains": [],
        "all_accepted_domains": False,
        "smart_hosts": [],
        "tls": OutboundTls.OPPORTUNISTIC,
        "tls_domain": "",
        "rule_scoped": False,
        "route_all_via_on_premises": False,
        "sender_rewriting": False,
        "validation_recipients": [],
        "comment": "",
        "created_at": time.time(),
    }
    row.update(settings)
    with database.write() as conn:
        connector_id = conn.execute(insert(outbound_connectors).values(**_values(row))).inserted_primary_key
        log_changes(conn, DirectoryChanges(connectors={tenant_id}))
    assert connector_id is not None
    return int(connector_id[0])


def set_outbound_connector(database: Database, tenant_id: int, connector_id: int, **settings: object) -> None:
    with database.write() as conn:
        conn.execute(
            update(outbound_connectors)
            .where(outbound_connectors.c.id == connector_id)
            .values(**_values(dict(settings)))
        )
        log_changes(conn, DirectoryChanges(connectors={tenant_id}))


def remove_outbound_connector(database: Database, tenant_id: int, connector_id: int) -> None:
    with database.write() as conn:
        conn.execute(delete(outbound_connectors).where(outbound_connectors.c.id == connector_id))
        log_changes(conn, DirectoryChanges(connectors={tenant_id}))
