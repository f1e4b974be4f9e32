"""Protection policies as directory data: a tenant's anti-spam, anti-malware and connection filter
policies, and each mailbox's safe and blocked senders (`model.policy` values).

Placeholder loaders until the policy store lands: every tenant has the built-in Default policies
and every mailbox empty lists. (Issue 10 replaces this module's body; its two loaders keep their
signatures: `CachedDirectory` calls them.)
"""

from __future__ import annotations

from sqlalchemy import Connection

from postroom.model.policy import MailboxSenderLists, TenantProtection


def load_tenant_protection(conn: Connection, tenant_id: int) -> TenantProtection:
    """The tenant's protection policies."""
    return TenantProtection(tenant_id)


def load_sender_lists(conn: Connection, mailbox_id: int) -> MailboxSenderLists:
    """The mailbox's own safe and blocked senders."""
    return MailboxSenderLists()
