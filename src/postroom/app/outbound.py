"""Outbound wiring: the scheduler of remote delivery, its DSN sink, and the queue's trace writer.

`build_scheduler` composes the node's `queue.Scheduler` from `[queue]` settings, the remote agent
(`delivery.remote` when present; None: nothing is leased, remote mail waits, and only the DSN rounds
run), and the DSN `Reporter`: the node's host name, each tenant's external postmaster address
(`postmaster_for`, spec §9: `postmaster@<the tenant's default domain>` unless the app passes
another), the NDR hook of remote domains (`ndr_allowed`, default: allowed), and `DsnSink`.

`DsnSink` routes a generated message (a DSN) like any other, in the DSN round's transaction: the
body goes to the blob store, the recipient is resolved over the directory as the connection sees it
(`routing.resolve_recipient`, then `routing.categorize`): a sender inside one of our tenants gets the
DSN in their mailbox at once (`delivery.deliver_at_commit`); an external one gets a queued remote
row (the scheduler sends it like any message, with the null sender), by the tenant's outbound
connector for that domain when it has one (an on-premises sender of an internal-relay domain gets
it over the on-premises connector). A DSN whose recipient is
refused (an address of ours that no longer exists) is traced as failed and goes nowhere: a DSN is
never bounced. The DSN's own trace starts with a Receive event that says it was generated and for
which message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sqlalchemy import Connection

from postroom.config import QueueSettings, Settings
from postroom.delivery import deliver_at_commit
from postroom.directory import ConnectionView, Directory
from postroom.model import Address, AddressError
from postroom.model.flow import EventKind, Route, RoutedRecipient, TraceEvent, TraceRecipient, TraceStatus
from postroom.model.message import summarize
from postroom.queue import (
    DeliveryPolicy,
    GeneratedMessage,
    Lease,
    LeaseRunner,
    LeaseTokens,
    RemoteAgent,
    Reporter,
    RetryPolicy,
    Scheduler,
    SpoolEntry,
    TraceRows,
    write_spool,
)
from postroom.routing import Rejected, RejectReason, Relayed, Srs, categorize, resolve_recipient
from postroom.storage import BlobStore, Database, GroupCommitter
from postroom.trace import TraceMessage, record_events, record_message, set_statuses


def write_trace(conn: Connection, rows: TraceRows, now: float) -> None:
    """The queue's trace rows, written with trace's functions in the queue step's transaction."""
    if rows.events:
        record_events(conn, rows.events, now)
    if rows.statuses:
        set_statuses(conn, rows.statuses, now)


def lease_in_own_transaction(database: Database, job: Callable[[Connection], Lease]) -> Lease:
    """Run a leasing job in a short READ COMMITTED transaction of its own (PostgreSQL).

    `FOR UPDATE SKIP LOCKED` is made for READ COMMITTED: under the SERIALIZABLE isolation of the group
    committer, two nodes leasing at once abort each other (serialization failures, replayed), which
    is what skipping locked rows is for avoiding. A lease only stamps rows it holds locked, so it
    needs nothing stronger."""
    with database.read_engine.begin() as conn:
        return job(conn)


def lease_runner(database: Database, committer: GroupCommitter) -> LeaseRunner:
    """How this node's scheduler runs its leasing jobs: SQLite: the single writer; PostgreSQL: their
    own transactions, in a worker thread (never SQL on the event loop)."""
    if database.is_sqlite:
        return committer.run

    async def run(job: Callable[[Connection], Lease]) -> Lease:
        return await asyncio.to_thread(lease_in_own_transaction, database, job)

    return run


def delivery_policy(queue: QueueSettings) -> DeliveryPolicy:
    return DeliveryPolicy(
        retry=RetryPolicy(queue.retry_schedule, queue.message_expiration),
        batch_max=queue.delivery_batch_max,
        max_in_flight=queue.max_deliveries_in_flight,
        lease_seconds=queue.lease_seconds,
        delay_notification=queue.delay_notification,
    )


class ExternalPostmaster:
    """Who sends a DSN about mail of a tenant: its external postmaster (an organization setting, by
    default `postmaster@<the tenant's default domain>`); the service's postmaster for mail of no tenant."""

    def __init__(self, directory: Directory, service_postmaster: str) -> None:
        self._directory = directory
        self._service_postmaster = service_postmaster

    def __call__(self, tenant_id: int | None) -> str:
        if tenant_id is None:
            return self._service_postmaster
        return self._directory.external_postmaster(tenant_id)


def remote_domain_allows_ndr(directory: Directory) -> Callable[[int | None, str], bool]:
    """Whether the tenant's remote domain for a DSN's destination lets NDRs go there (spec §7 NDREnabled)."""
    return lambda tenant_id, domain: directory.remote_domain_for(tenant_id, domain).ndr


class DsnSink:
    """Routes and stores a generated message in the caller's transaction (see the module docstring)."""

    def __init__(self, blobs: BlobStore, *, max_recipients: int, srs: Srs | None = None) -> None:
        self._blobs = blobs
        self._max_recipients = max_recipients
        self._srs = srs  # a report to one of our SRS addresses goes to the sender behind it

    def __call__(self, conn: Connection, message: GeneratedMessage) -> None:
        summary = summarize(message.content)
        entry = SpoolEntry(
            id=message.id,
            sender=message.sender,
            blob_id=self._blobs.put(message.content),
            prefix=b"",
            size=len(message.content),
            received_at=message.created_at,
            summary=summary,
        )
        record_message(
            conn,
            TraceMessage(
                id=message.id,
                message_id_header=summary.message_id,
                sender=message.sender,
                subject=summary.subject,
                size=entry.size,
                client_ip="",
                received_at=message.created_at,
            ),
        )
        rows = TraceRows()
        rows.events.append(
            TraceEvent(
                message.id,
                EventKind.RECEIVE,
                message.tenant_id,
                "",
                {"generated": "DSN", "regarding": message.regarding},
            )
        )
        routes = self._route(conn, message, rows)
        queued = [r for r in routes if r.route is not Route.LOCAL]
        if queued:
            write_spool(conn, entry, queued)
        events, statuses = deliver_at_commit(conn, entry, routes)
        rows.events += events
        rows.statuses += statuses
        write_trace(conn, rows, message.created_at)

    def _route(self, conn: Connection, message: GeneratedMessage, rows: TraceRows) -> list[RoutedRecipient]:
        view = ConnectionView(conn)
        try:
            address = Address.parse(message.recipient)
        except AddressError as error:
            self._refused(message, rows, f"not an address: {error}")
            return []
        resolution = resolve_recipient(
            view, address, sender_internal_to=message.tenant_id, srs=self._srs, null_sender=not message.sender
        )
        if isinstance(resolution, Rejected):
            if resolution.reason is not RejectReason.RELAY_DENIED:
                self._refused(message, rows, str(resolution.reply))
                return []
            # Outside every tenant: sent on as the tenant's mail (by MX, or its outbound connector).
            resolution = Relayed(address, address, message.tenant_id)
        categorized = categorize(view, message.id, [resolution], max_recipients=self._max_recipients)
        rows.events += categorized.events
        rows.statuses += categorized.statuses
        return categorized.routes

    @staticmethod
    def _refused(message: GeneratedMessage, rows: TraceRows, reply: str) -> None:
        rows.events.append(
            TraceEvent(message.id, EventKind.FAIL, message.tenant_id, message.recipient, {"reply": reply})
        )
        rows.statuses.append(
            TraceRecipient(message.id, message.tenant_id, message.recipient, TraceStatus.FAILED)
        )


def build_scheduler(
    settings: Settings,
    database: Database,
    directory: Directory,
    blobs: BlobStore,
    committer: GroupCommitter,
    agent: RemoteAgent | None,
    *,
    postmaster_for: Callable[[int | None], str] | None = None,
    ndr_allowed: Callable[[int | None, str], bool] | None = None,
    srs: Srs | None = None,
    tokens: LeaseTokens | None = None,
) -> Scheduler:
    """The node's scheduler; `agent` is the remote delivery agent (None: DSN rounds only)."""
    reporter = Reporter(
        reporting_mta=settings.service.hostname,
        postmaster_for=postmaster_for or ExternalPostmaster(directory, settings.service.postmaster_address),
        submit_generated=DsnSink(blobs, max_recipients=settings.routing.max_expanded_recipients, srs=srs),
        blobs=blobs,
        ndr_allowed=ndr_allowed or remote_domain_allows_ndr(directory),
    )
    return Scheduler(
        committer,
        agent,
        delivery_policy(settings.queue),
        write_trace=write_trace,
        reporter=reporter,
        lease_with=lease_runner(database, committer),
        tokens=tokens,
        drain_seconds=settings.drain_seconds,
    )
