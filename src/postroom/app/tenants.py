"""Removing a tenant: its directory rows, mail, queue rows, quarantine and trace in one transaction,
then the message files no one else uses.

A tenant's data lives in five rooms; each removes its own rows through its own function, in the one
transaction passed to it (`Directory.delete_tenant`, `mailstore.remove_tenant_mail`,
`queue.remove_tenant_queue`, `quarantine.remove_tenant_quarantine`, `trace.remove_tenant_trace`).
Rows are deleted, not tombstoned: the tenant's id is never reused (AUTOINCREMENT), so a tenant later
made with the same name, domains and mailbox names starts empty, and a removed organization's mail
and quarantine are not kept.

Blobs are content-addressed and may be shared with another tenant's message: after the commit, each
blob the removed rows pointed at is deleted only if no stored, spooled or quarantined message still
points at it and nobody stored the same content again since the removal began
(`BlobStore.discard_unused`: a message with the same bytes being received right now keeps its blob).

`apply=False` runs the same removal and rolls it back: the counts are exactly what `apply=True`
would delete (what `postroom tenant remove` shows before it asks for --yes).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import Connection

from postroom.directory import Directory, Tenant
from postroom.mailstore import referenced_blobs, remove_tenant_mail
from postroom.model.scope import OperatorScope
from postroom.quarantine import quarantined_blobs, remove_tenant_quarantine
from postroom.queue import remove_tenant_queue, spooled_blobs
from postroom.storage import BlobStore, Database
from postroom.trace import remove_tenant_trace


@dataclass(frozen=True, slots=True)
class TenantRemoval:
    """What removing a tenant deletes (or deleted)."""

    tenant: Tenant
    domains: int
    recipients: int
    messages: int  # stored in its mailboxes
    trace_messages: int  # messages it had trace rows for
    queue_recipients: int
    quarantined: int  # messages in its quarantine
    blobs: int  # message blobs no one else uses


def remove_tenant(
    database: Database,
    blobs: BlobStore,
    directory: Directory,
    scope: OperatorScope,
    name: str,
    *,
    apply: bool,
) -> TenantRemoval:
    started = time.time()
    with database.write_engine.connect() as conn:
        transaction = conn.begin()
        try:
            mail_tenant = directory.get_tenant(scope, name)
            mail = remove_tenant_mail(conn, mail_tenant.id)
            queued = remove_tenant_queue(conn, mail_tenant.id)
            held = remove_tenant_quarantine(conn, mail_tenant.id)
            traced = remove_tenant_trace(conn, mail_tenant.id)
            rows = directory.delete_tenant(conn, scope, name)
            candidates = mail.blob_ids | queued.blob_ids | held.blob_ids
            unused = candidates - _in_use(conn, candidates)
        except BaseException:
            transaction.rollback()
            raise
        if apply:
            transaction.commit()
        else:
            transaction.rollback()
    if apply and directory.on_change is not None:
        directory.on_change()  # the tenant's names are gone: caching processes refresh at once
    removed_blobs = len(unused)
    if apply and unused:
        with database.read() as conn:
            unused -= _in_use(conn, frozenset(unused))
        removed_blobs = blobs.discard_unused(unused, stored_before=started)
    return TenantRemoval(
        tenant=rows.tenant,
        domains=rows.domains,
        recipients=rows.recipients,
        messages=mail.messages,
        trace_messages=traced,
        queue_recipients=queued.recipients,
        quarantined=held.messages,
        blobs=removed_blobs,
    )


def _in_use(conn: Connection, blob_ids: frozenset[str]) -> set[str]:
    """Those of `blob_ids` a stored, spooled or quarantined message still points at."""
    return (
        referenced_blobs(conn, blob_ids) | spooled_blobs(conn, blob_ids) | quarantined_blobs(conn, blob_ids)
    )
