"""Protection policies as directory data: a tenant's anti-spam, anti-malware and connection filter
policies, and each mailbox's safe and blocked senders (`model.policy` values).

Placeholder loaders until the policy store lands: every tenant has the built-in Default anti-spam
and anti-malware policies and every mailbox empty lists. The connection policy is read from its row
(`protection_policies`, kind `connection`: `settings` holds `ip_allow` and `ip_block` as JSON lists),
or is empty when the tenant has none. (Issue 10 replaces this module's body; its two loaders keep their
signatures: `CachedDirectory` calls them.)
"""

from __future__ import annotations

import json

from sqlalchemy import Connection, select

from postroom.model.policy import ConnectionPolicy, MailboxSenderLists, TenantProtection
from postroom.storage.schema import protection_policies

CONNECTION = "connection"  # the kind of a tenant's connection filter policy row


def load_tenant_protection(conn: Connection, tenant_id: int) -> TenantProtection:
    """The tenant's protection policies."""
    table = protection_policies.c
    settings = conn.execute(
        select(table.settings).where(table.tenant_id == tenant_id, table.kind == CONNECTION)
    ).scalar_one_or_none()
    values = json.loads(settings) if settings else {}
    connection = ConnectionPolicy(
        ip_allow=tuple(values.get("ip_allow", ())), ip_block=tuple(values.get("ip_block", ()))
    )
    return TenantProtection(tenant_id, connection=connection)


def load_sender_lists(conn: Connection, mailbox_id: int) -> MailboxSenderLists:
    """The mailbox's own safe and blocked senders."""
    return MailboxSenderLists()
