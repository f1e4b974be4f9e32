"""Connectors for tests: rows written straight into `inbound_connectors` and `outbound_connectors`.

The directory's connector service (and `postroom connector ...`) is built elsewhere; until the tests
switch to it, these helpers write the rows the service would write, and log the change the way every
directory write does (`directory.base.log_changes`), so a running node's cache drops its connector
answers within its refresh interval. Defaults are the spec's (§3.1: `require_tls` on).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from sqlalchemy import delete, insert, update

from postroom.directory.base import DirectoryChanges, log_changes
from postroom.model.connectors import ConnectorType, OutboundTls
from postroom.storage import Database
from postroom.storage.schema import inbound_connectors, outbound_connectors


def add_inbound(
    database: Database,
    tenant_id: int,
    name: str,
    type: ConnectorType,
    *,
    sender_domains: Sequence[str] = ("*",),
    sender_ips: Sequence[str] = (),
    tls_certificate_name: str = "",
    require_tls: bool = True,
    restrict_domains_to_ips: bool = False,
    restrict_domains_to_certificate: bool = False,
    treat_messages_as_internal: bool = False,
    ef_skip_last_ip: bool = False,
    ef_skip_ips: Sequence[str] = (),
    ef_users: Sequence[str] = (),
    enabled: bool = True,
) -> int:
    """Add an inbound connector; its id."""
    with database.write() as conn:
        connector_id = conn.execute(
            insert(inbound_connectors).values(
                tenant_id=tenant_id,
                name=name,
                name_key=name.lower(),
                type=type.value,
                enabled=enabled,
                sender_domains=json.dumps(list(sender_domains)),
                sender_ips=json.dumps(list(sender_ips)),
                tls_certificate_name=tls_certificate_name,
                require_tls=require_tls,
                restrict_domains_to_ips=restrict_domains_to_ips,
                restrict_domains_to_certificate=restrict_domains_to_certificate,
                treat_messages_as_internal=treat_messages_as_internal,
                associated_accepted_domains="[]",
                ef_skip_last_ip=ef_skip_last_ip,
                ef_skip_ips=json.dumps(list(ef_skip_ips)),
                ef_users=json.dumps(list(ef_users)),
                comment="",
                created_at=time.time(),
            )
        ).inserted_primary_key[0]
        log_changes(conn, DirectoryChanges(connectors={tenant_id}))
    return int(connector_id)


def set_inbound(database: Database, connector_id: int, tenant_id: int, **values: object) -> None:
    """Change columns of an inbound connector (lists as JSON text, as stored)."""
    stored = {k: json.dumps(list(v)) if isinstance(v, list | tuple) else v for k, v in values.items()}
    with database.write() as conn:
        conn.execute(
            update(inbound_connectors).where(inbound_connectors.c.id == connector_id).values(**stored)
        )
        log_changes(conn, DirectoryChanges(connectors={tenant_id}))


def add_outbound(
    database: Database,
    tenant_id: int,
    name: str,
    type: ConnectorType,
    *,
    recipient_domains: Sequence[str] = (),
    all_accepted_domains: bool = False,
    smart_hosts: Sequence[str] = (),
    tls: OutboundTls = OutboundTls.OPPORTUNISTIC,
    rule_scoped: bool = False,
    enabled: bool = True,
) -> int:
    """Add an outbound connector; its id."""
    with database.write() as conn:
        connector_id = conn.execute(
            insert(outbound_connectors).values(
                tenant_id=tenant_id,
                name=name,
                name_key=name.lower(),
                type=type.value,
                enabled=enabled,
                recipient_domains=json.dumps(list(recipient_domains)),
                all_accepted_domains=all_accepted_domains,
                smart_hosts=json.dumps(list(smart_hosts)),
                tls=tls.value,
                tls_domain="",
                rule_scoped=rule_scoped,
                route_all_via_on_premises=False,
                sender_rewriting=False,
                validation_recipients="[]",
                comment="",
                created_at=time.time(),
            )
        ).inserted_primary_key[0]
        log_changes(conn, DirectoryChanges(connectors={tenant_id}))
    return int(connector_id)


def remove_outbound(database: Database, connector_id: int, tenant_id: int) -> None:
    with database.write() as conn:
        conn.execute(delete(outbound_connectors).where(outbound_connectors.c.id == connector_id))
        log_changes(conn, DirectoryChanges(connectors={tenant_id}))
