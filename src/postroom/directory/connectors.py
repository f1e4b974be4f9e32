"""A tenant's inbound and outbound connectors (spec §3): stored rows, and the loaders mail flow reads.

The value types and the matching rules are `model.connectors`; this module reads and writes the
`inbound_connectors` and `outbound_connectors` tables (`storage.schema`). The loaders here are what
`view.DirectoryView` answers from: every enabled inbound connector of the service as one
`ConnectorTable` (a connection is attributed before its tenant is known), and one tenant's outbound
connectors. A stored list that no longer parses (written by another version) loses only the entries
that fail; everything is checked when written.
"""

from __future__ import annotations

import json

from sqlalchemy import Connection, Row, select

from postroom.model.connectors import (
    ConnectorTable,
    ConnectorType,
    InboundConnector,
    OutboundConnector,
    OutboundTls,
)
from postroom.model.ipfilter import IpList
from postroom.storage.schema import inbound_connectors, outbound_connectors


def _strings(text: str) -> tuple[str, ...]:
    try:
        value = json.loads(text or "[]")
    except ValueError:
        return ()
    return tuple(str(item) for item in value) if isinstance(value, list) else ()


def inbound_from_row(row: Row[tuple[object, ...]]) -> InboundConnector:
    m = row._mapping
    sender_ips = _strings(str(m["sender_ips"]))
    return InboundConnector(
        id=int(m["id"]),
        tenant_id=int(m["tenant_id"]),
        name=str(m["name"]),
        type=ConnectorType(m["type"]),
        enabled=bool(m["enabled"]),
        sender_domains=_strings(str(m["sender_domains"])),
        sender_ips=sender_ips,
        tls_certificate_name=str(m["tls_certificate_name"]),
        require_tls=bool(m["require_tls"]),
        restrict_domains_to_ips=bool(m["restrict_domains_to_ips"]),
        restrict_domains_to_certificate=bool(m["restrict_domains_to_certificate"]),
        treat_messages_as_internal=bool(m["treat_messages_as_internal"]),
        associated_accepted_domains=_strings(str(m["associated_accepted_domains"])),
        ef_skip_last_ip=bool(m["ef_skip_last_ip"]),
        ef_skip_ips=_strings(str(m["ef_skip_ips"])),
        ef_users=_strings(str(m["ef_users"])),
        comment=str(m["comment"]),
        created_at=float(m["created_at"]),
        ips=IpList.parse(sender_ips, skip_invalid=True),
    )


def outbound_from_row(row: Row[tuple[object, ...]]) -> OutboundConnector:
    m = row._mapping
    return OutboundConnector(
        id=int(m["id"]),
        tenant_id=int(m["tenant_id"]),
        name=str(m["name"]),
        type=ConnectorType(m["type"]),
        enabled=bool(m["enabled"]),
        recipient_domains=_strings(str(m["recipient_domains"])),
        all_accepted_domains=bool(m["all_accepted_domains"]),
        smart_hosts=_strings(str(m["smart_hosts"])),
        tls=OutboundTls(m["tls"]),
        tls_domain=str(m["tls_domain"]),
        rule_scoped=bool(m["rule_scoped"]),
        route_all_via_on_premises=bool(m["route_all_via_on_premises"]),
        sender_rewriting=bool(m["sender_rewriting"]),
        validation_recipients=_strings(str(m["validation_recipients"])),
        comment=str(m["comment"]),
        created_at=float(m["created_at"]),
    )


def load_inbound_table(conn: Connection) -> ConnectorTable:
    """Every enabled inbound connector of every tenant, indexed (what attribution asks)."""
    rows = conn.execute(
        select(inbound_connectors).where(inbound_connectors.c.enabled).order_by(inbound_connectors.c.id)
    ).all()
    return ConnectorTable(inbound_from_row(row) for row in rows)


def load_outbound_connectors(conn: Connection, tenant_id: int) -> tuple[OutboundConnector, ...]:
    """A tenant's outbound connectors, enabled or not, oldest first."""
    rows = conn.execute(
        select(outbound_connectors)
        .where(outbound_connectors.c.tenant_id == tenant_id)
        .order_by(outbound_connectors.c.id)
    ).all()
    return tuple(outbound_from_row(row) for row in rows)


def find_outbound_connector(conn: Connection, connector_id: int) -> OutboundConnector | None:
    """One outbound connector by id (what delivery asks for a queued recipient), or None when removed."""
    row = conn.execute(select(outbound_connectors).where(outbound_connectors.c.id == connector_id)).first()
    return outbound_from_row(row) if row is not None else None
