"""The MX endpoint: what an SMTP session on the MX listener does with each command.

One `MxSession` per connection (the connection scope); its `Envelope` is the transaction scope and
is reset explicitly. RCPT is decided at RCPT time by `routing.resolve_recipient` (accepted domain,
DBEB, anti-relay) over the node's directory cache: on the event loop from the cache's memory
only, and in a worker thread when the cache must ask the database (no SQL on the event loop). At
the end of DATA the session categorizes the recipients (aliases, groups, contacts) the same way,
writes the body blob (a body within the store's `inline_limit`, `[node] blob_inline_limit`, is
written inside the commit instead: one durable write for the body and its rows), then runs one job in
the group committer that delivers to the local mailboxes
(`delivery.deliver_at_commit`), spools the message with a queue row per recipient that is not local,
and writes the trace; only when that commit returned does the client get 250. Anything that fails
before it gets 451 4.3.0 and nothing is acknowledged.

A `Received` header is added to every message (kept beside the body, which is stored exactly as
received); a message that already has more than `[routing] max_hops` Received headers is refused as a loop
(554 5.4.14). A message the listener spooled to disk is moved into the blob store as a file, never
loaded whole: only its first `HEAD_OCTETS` are read, for the header summary and the hop count.
Recipients refused at RCPT (by routing, or by the SMTP core past its recipient limit) and messages
refused at the end of data (by this session, or by the core for size, bare LF, line length or NUL)
are traced as failed with the reply they got, so an admin can answer "why did my partner's mail to x
bounce?"; past the limits of `[trace] refusals_per_session` and `refusals_per_client` they are
aggregated instead (`trace.refusals`), so a client cannot make the node write without bound.

Each committed message is counted (`postroom_messages_received_total`), with its local recipients as
delivered and those that failed while routed as failed (`postroom.metrics`), once the commit returned.

Each committed message, and each transaction refused at the end of DATA, gets one info line in the
node's log (logger `postroom.app.mx`), the way an MTA's mail log reads: queue id, client IP, sender,
size, time taken, and every recipient with its outcome (delivered, queued, failed with its reply).

Mailbox quotas (`directory.quota`): a mailbox recipient whose mailbox is at or over its quota, or
would pass it with a message of MAIL's declared SIZE=, is refused at RCPT with 552 5.2.2 (on the MX
and the submission endpoint alike), traced like routing's refusals; the other recipients of the
transaction are not affected, and since the sending server reports it, Postroom writes no bounce.
The quota comes with the cached address owner; the usage is one aggregate query off the loop, only
for a mailbox that has a quota, and at most once per `USAGE_SECONDS` per mailbox. It is checked at
RCPT: a message accepted just before the mailbox filled is still delivered at commit, as are copies
that reach the mailbox through a group or forwarding (their RCPT named someone else).

Forwarding and SRS: categorizing follows mailbox forwarding and rewrites the sender of external
forwards with the node's `Srs`; at RCPT a bounce (the null sender) to a valid SRS address of ours is
accepted and routed back to the original address (`routing.resolve`).

The connection filter (`protection.connection`, when `[protection]` is enabled) runs at connect
(service IP lists, connections per minute, the DNS blocklists asked in the background), at MAIL
(messages per minute) and at each RCPT that routing accepted (the recipient's tenant's IP lists, a
blocklist listing); a recipient it refuses is a `Rejected` like routing's refusals, and traced the same
way. Its verdicts are kept for the rest of the stack: the session's `connection_verdict` (service-wide)
and the envelope's `tenant_listing` (per tenant). Submission sessions are not filtered.

Inbound connectors (spec §3, `app.inbound`): at each MAIL (after STARTTLS, with the sender known)
the transaction is attributed to a tenant's OnPremises connector by the verified client
certificate or the client's IP, and becomes the `Source` that routing decides every RCPT with (the
anti-relay rule, Partner connector restrictions, internal-relay unknown recipients; for those with
no on-premises connector the session asks the DNS whether the domain's MX is this service). An
attributed connector that requires TLS refuses a plaintext MAIL (451 4.7.321: the server keeps the
mail and retries once TLS is fixed). Whether the sender is inside a tenant's organization
(`MxSession.sender_internal_to`) decides group delivery restrictions at RCPT: on the MX endpoint
nobody is, except a sender from a tenant's own domain over that tenant's OnPremises connector (SMTP
AUTH sets it for submission). A connector that treats messages as internal makes them internal to
its tenant: its copies skip anti-spam (`SFV:SKI`, `DIR:INT`). The connection filter neither counts
an OnPremises connector's client against its rates nor judges the tenant's own relay by its lists.
At DATA, enhanced filtering (`protection.enhanced`) judges the original internet sender behind a
connector's trusted gateway (SPF, the report's CIP, the lists and blocklists; a tenant's list that
refuses it fails that tenant's copies) and stamps what it found. Each recipient tenant's Receive
trace event names the connector the message came over (only its own).

Security: every input here was parsed and bounded by the SMTP core. The session never relays by
itself: a recipient outside the service's verified accepted domains is refused by routing unless the
transaction's source meets the anti-relay rule there.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import hashlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from email.utils import format_datetime
from functools import partial
from typing import TypeVar

from sqlalchemy import Connection

from postroom import metrics
from postroom.app.filtering import Filtered, apply_inspection, hold_copies, prepend_subject
from postroom.app.inbound import (
    Attributed,
    EnhancedView,
    attribute_source,
    claimed_on_premises,
    connector_of,
    enhanced_views,
    mx_elsewhere,
    receive_detail,
)
from postroom.delivery import deliver_at_commit
from postroom.delivery.remote import LocalEndpoints
from postroom.directory import (
    REFRESH_SECONDS,
    AddressOwner,
    CachedDirectory,
    DirectoryView,
    NotCached,
    RecipientKind,
)
from postroom.dns import Resolver
from postroom.mailstore.mailbox import mailbox_usage
from postroom.model import Address, Reply, replies
from postroom.model.connectors import Source, certificate_names
from postroom.model.flow import EventKind, Route, RoutedRecipient, TraceEvent, TraceRecipient, TraceStatus
from postroom.model.message import count_received, summarize
from postroom.model.policy import MailboxSenderLists, TenantProtection
from postroom.model.verdicts import ConnectionVerdict, Direction, MessageFacts
from postroom.protection import ConnectionCheck, ConnectionFilter
from postroom.protection.enhanced import stamps
from postroom.protection.pipeline import Disposition, Inspection, Protection, RecipientFacts
from postroom.queue import SpoolEntry, new_message_id, write_spool
from postroom.routing import (
    NO_SERVICE_POSTMASTER,
    Accepted,
    Categorized,
    Rejected,
    RejectReason,
    Relayed,
    Resolution,
    ServicePostmaster,
    Srs,
    categorize,
    resolve_recipient,
)
from postroom.smtp import ConnectionInfo, MailParams, MessageContent, RcptParams, SaslCredentials, TlsInfo
from postroom.storage import BlobStore, Database, GroupCommitter
from postroom.trace import TraceMessage, record_events, record_message, set_statuses
from postroom.trace.refusals import FLUSH_SECONDS, RefusalLedger, RefusalLimits, record_aggregates

HEAD_OCTETS = 262_144  # octets of a message read for its header summary and hop count
USAGE_SECONDS = 5.0  # a mailbox's usage, read for its quota at RCPT, is reused this long
USAGE_ENTRIES = 10_000  # mailboxes whose usage is kept; past it the cache starts again

log = logging.getLogger(__name__)
T = TypeVar("T")
# What a commit job returns: each trace row's (recipient, outcome, reply) for the mail log line, or
# the reply that refuses the message (the job wrote why, e.g. a sender's restriction, and no spool).
CommitResult = list[tuple[str, str, str]] | Reply


@dataclass(slots=True)
class Envelope:
    """One transaction: MAIL, the RCPTs and their outcomes."""

    id: str
    sender: Address | None
    params: MailParams
    accepted: list[Accepted | Relayed] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    refused_data: Reply | None = None  # the reply when the message itself was refused at end of data
    refused_untraced: int = 0  # refused recipients that went into the client's aggregate
    started: float = field(default_factory=time.monotonic)
    # The connection filter's verdict for each tenant with an accepted recipient (filled at RCPT):
    # the tenant's own IP Allow list (IPV:CAL), else the session's `connection_verdict`.
    tenant_listing: dict[int, ConnectionVerdict] = field(default_factory=dict)


class MxEndpoint:
    """The process-wide part of the MX endpoint: its services and worker threads."""

    def __init__(
        self,
        *,
        hostname: str,
        directory: CachedDirectory,
        database: Database,
        blobs: BlobStore,
        committer: GroupCommitter,
        on_queued: Callable[[], None],
        max_expanded_recipients: int,
        max_receive_size: int,
        refusal_limits: RefusalLimits,
        service_postmaster: ServicePostmaster = NO_SERVICE_POSTMASTER,
        srs: Srs | None = None,
        max_hops: int = 30,
        clock: Callable[[], float] = time.time,
        protection: Protection | None = None,
        connection_filter: ConnectionFilter | None = None,
        resolver: Resolver | None = None,
        local_endpoints: LocalEndpoints | None = None,
        smtp_port: int = 25,
    ) -> None:
        self.hostname = hostname
        # Where an internal-relay domain's MX is looked up (None: never, its unknown recipients
        # go only to an on-premises connector), and what of that MX is this service.
        self._resolver = resolver
        self._local = local_endpoints or LocalEndpoints()
        self._smtp_port = smtp_port
        self.protection = protection  # the filtering stack; None: mail is not filtered (a lab)
        self.directory = directory
        self._database = database  # read off the loop: a mailbox's usage, for its quota at RCPT
        self._usage: dict[int, tuple[int, float]] = {}  # mailbox id -> (usage, when read; monotonic)
        self._blobs = blobs
        self.committer = committer
        self._on_queued = on_queued
        self._max_expanded_recipients = max_expanded_recipients
        self._max_receive_size = max_receive_size
        self._service_postmaster = service_postmaster
        self._srs = srs
        self.max_hops = max_hops  # Received headers a message may carry; more: a loop (554 5.4.14)
        self.refusals = RefusalLedger(refusal_limits, clock)
        self.clock = clock
        self.connection_filter = connection_filter  # None: no connection filter ([protection] enabled off)
        self._lookups = ThreadPoolExecutor(max_workers=4, thread_name_prefix="postroom-lookup")
        self._writers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="postroom-blob")
        self._directory_changed = asyncio.Event()

    def session(self, connection: ConnectionInfo) -> MxSession:
        return MxSession(self, connection)

    def close(self) -> None:
        self._lookups.shutdown(wait=True)
        self._writers.shutdown(wait=True)

    async def ask(self, question: Callable[[DirectoryView], T]) -> T:
        """Ask the directory: from the cache's memory when it holds every answer (the usual case), else
        in a worker thread. No SQL runs on the event loop."""
        try:
            return question(self.directory.in_memory())
        except NotCached:
            pass
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._lookups, question, self.directory)

    async def lookup(self, work: Callable[[], T]) -> T:
        """Run a blocking lookup (SQL, a password hash) in a worker thread."""
        return await asyncio.get_running_loop().run_in_executor(self._lookups, work)

    async def resolve(
        self,
        recipient: Address,
        sender_internal_to: int | None,
        authenticated_tenant: int | None = None,
        *,
        null_sender: bool = False,
        source: Source | None = None,
        mx_elsewhere: frozenset[str] = frozenset(),
    ) -> Resolution:
        """Decide a RCPT (`routing.resolve_recipient`)."""
        return await self.ask(
            partial(
                resolve_recipient,
                recipient=recipient,
                sender_internal_to=sender_internal_to,
                service_postmaster=self._service_postmaster,
                srs=self._srs,
                null_sender=null_sender,
                authenticated_tenant=authenticated_tenant,
                source=source,
                mx_elsewhere=mx_elsewhere,
            )
        )

    async def attribute(self, peer_ip: str, tls: TlsInfo | None, sender: Address | None) -> Attributed:
        """The transaction's source: the connection attributed to an inbound connector (`app.inbound`)."""
        certificate = certificate_names(tls.peer_subject, tls.peer_sans) if tls is not None else ()
        question = partial(
            attribute_source,
            peer_ip=peer_ip,
            tls=tls is not None,
            certificate=certificate,
            sender_domain=sender.domain if sender is not None else "",
        )
        return await self.ask(question)

    async def claimed_on_premises(self, peer_ip: str) -> bool:
        """Whether a tenant's OnPremises inbound connector names the client's IP."""
        return await self.ask(partial(claimed_on_premises, peer_ip))

    async def mx_elsewhere(self, domain: str) -> bool | Reply:
        """Whether `domain`'s MX is not this service (True: an unknown recipient of the internal-relay
        domain may go there by MX); False when it is, or when the domain has no usable MX (550 5.4.1
        stands); a temporary reply (451 4.4.3) when the DNS failed."""
        if self._resolver is None:
            return False
        return await mx_elsewhere(self._resolver, self._local, self._smtp_port, domain)

    async def categorize(
        self,
        message_id: str,
        accepted: list[Accepted | Relayed],
        sender: str = "",
        source: Source | None = None,
    ) -> Categorized:
        """Routes for the accepted recipients (`routing.categorize`) of a message from `sender` that
        came from `source` (its inbound connector attribution; None: an ordinary client)."""
        limit, srs = self._max_expanded_recipients, self._srs
        return await self.ask(
            lambda directory: categorize(
                directory, message_id, accepted, max_recipients=limit, sender=sender, srs=srs, source=source
            )
        )

    async def receive_limit(self, mailbox_id: int) -> int:
        """The largest message the mailbox receives: its own, its tenant's, else `[routing]`'s."""
        limit = await self.ask(lambda directory: directory.receive_limit(mailbox_id))
        return limit if limit is not None else self._max_receive_size

    async def mailbox_full(self, owner: AddressOwner, size: int | None) -> bool:
        """Whether the mailbox is at or over its quota, or `size` would take it past (see
        `mailbox_full`). Only a mailbox that has a quota costs anything (the quota came with the cached
        address owner), and its usage is read at most once per `USAGE_SECONDS` (kept for at most
        `USAGE_ENTRIES` mailboxes): a stranger repeating RCPT to a full mailbox costs no queries."""
        quota = owner.quota_bytes
        if quota is None or owner.kind is not RecipientKind.MAILBOX:
            return False
        now = time.monotonic()
        cached = self._usage.get(owner.recipient_id)
        if cached is None or now - cached[1] > USAGE_SECONDS:
            usage = await self.lookup(partial(self._mailbox_usage, owner.recipient_id))
            if len(self._usage) >= USAGE_ENTRIES:
                self._usage.clear()
            self._usage[owner.recipient_id] = (usage, now)
        else:
            usage = cached[0]
        return usage >= quota or (size is not None and usage + size > quota)

    def _mailbox_usage(self, mailbox_id: int) -> int:
        with self._database.read() as conn:
            return mailbox_usage(conn, mailbox_id)

    async def over_receive_limits(self, routes: list[RoutedRecipient], size: int) -> list[RoutedRecipient]:
        """`routes` with each local recipient whose receive limit `size` exceeds failed (5.2.3): it is
        queued already failed, and the queue's DSN round tells the sender."""
        failure = str(replies.RECIPIENT_SIZE_EXCEEDED)
        checked = []
        for route in routes:
            mailbox_id = route.mailbox_id if route.route is Route.LOCAL else None
            if mailbox_id is not None and size > await self.receive_limit(mailbox_id):
                route = replace(route, failure=failure)
            checked.append(route)
        return checked

    async def flush_refusals(self, *, everything: bool = False) -> None:
        """Write the refusal aggregates that are due (with `everything`, all: the node stops)."""
        due = self.refusals.take_due(everything=everything)
        if due:
            job = partial(record_aggregates, [(new_message_id(self.clock()), a) for a in due])
            await self.committer.run(job)

    async def keep_refusals_flushed(self) -> None:
        """Write due refusal aggregates every FLUSH_SECONDS."""
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            try:
                await self.flush_refusals()
            except Exception:
                log.exception("could not write the aggregated refusals; retrying")

    async def keep_directory_fresh(self) -> None:
        """Drop the directory cache whenever the directory changes: checked every REFRESH_SECONDS, and
        at once when `directory_changed` is called (the `directory` notification of another process)."""
        loop = asyncio.get_running_loop()
        while True:
            self._directory_changed.clear()
            try:
                await loop.run_in_executor(self._lookups, self.directory.refresh)
            except Exception:
                log.exception("could not check the directory generation; keeping the cache")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._directory_changed.wait(), REFRESH_SECONDS)

    def directory_changed(self, _payload: str | None = None) -> None:
        """Another process changed the directory (a notification): refresh the cache now."""
        self._directory_changed.set()

    @property
    def inline_limit(self) -> int:
        return self._blobs.inline_limit

    async def message_bytes(self, content: MessageContent) -> bytes:
        """The whole message, for protection: from memory, or read from its spool file off the loop."""
        if not content.spooled:
            return content.read()
        return await asyncio.get_running_loop().run_in_executor(self._writers, content.read)

    async def store_bytes(self, data: bytes) -> str:
        """Write `data` to the blob store (off the event loop); its id."""
        return await asyncio.get_running_loop().run_in_executor(self._writers, self._blobs.put, data)

    async def policies(
        self, routes: list[RoutedRecipient]
    ) -> tuple[dict[int, TenantProtection], dict[int, MailboxSenderLists]]:
        """The protection policies of the routes' tenants and the sender lists of their mailboxes."""
        tenants = {r.tenant_id for r in routes if r.tenant_id is not None}
        mailboxes = {r.mailbox_id for r in routes if r.mailbox_id is not None}
        found = {t: await self.ask(partial(_protection_of, t)) for t in tenants}
        lists = {m: await self.ask(partial(_sender_lists_of, m)) for m in mailboxes}
        return found, lists

    def inline_body(self, content: MessageContent) -> bytes | None:
        """The message's bytes when they go into its commit (in memory and within the store's inline
        limit: one durable write for the message and its rows), else None: `store_blob` first."""
        if content.spooled or content.size > self._blobs.inline_limit:
            return None
        return content.read()

    def put_inline(self, body: bytes, blob_id: str, conn: Connection) -> str:
        """In the commit job: the message's bytes (hashed already) as rows of the open transaction."""
        return self._blobs.put_in(conn, body, blob_id)

    async def store_blob(self, content: MessageContent) -> str:
        """Write the message to the blob store: a spooled one is moved there, never loaded."""
        loop = asyncio.get_running_loop()
        if content.path is not None and content.sha256 is not None:
            put = partial(self._blobs.put_file, content.path, content.sha256)
            return await loop.run_in_executor(self._writers, put)
        return await loop.run_in_executor(self._writers, self._blobs.put, content.read())

    def queued(self) -> None:
        """A commit left recipients in the queue: the scheduler has work."""
        self._on_queued()


class MxSession:
    """One connection to the MX listener (and the base of a submission session, `app.submission`,
    which adds SMTP AUTH and its checks through the hooks marked below)."""

    receive_event = EventKind.RECEIVE  # the trace event of a received message
    direction = Direction.INBOUND  # the antispam report's DIR
    connection_filtered = True  # the connection filter applies (the MX endpoint: to every client)

    def __init__(self, endpoint: MxEndpoint, connection: ConnectionInfo) -> None:
        self._endpoint = endpoint
        self.connection = connection
        self.helo_name = ""
        self.extended = False
        self.tls: TlsInfo | None = None
        self.envelope: Envelope | None = None
        # Whose organization the sender is inside of (group delivery restrictions): on the MX
        # endpoint nobody's, unless the transaction came over the tenant's OnPremises connector
        # from one of its domains (set at each MAIL).
        self.sender_internal_to: int | None = None
        self.authenticated_tenant: int | None = None  # the MX endpoint: nobody is authenticated
        # The transaction's source (set at each MAIL): its inbound connector attribution, which
        # routing decides each RCPT with; None on an authenticated session.
        self.attributed: Attributed | None = None
        self.refusals_traced = 0  # refused recipients of this session traced one by one
        # The connection filter's service-wide verdict (service lists, DNS blocklists): final once
        # the first recipient was decided, so before DATA.
        self.connection_verdict = ConnectionVerdict()
        self._connection_check: ConnectionCheck | None = None

    async def connect(self) -> Reply | None:
        if not self._endpoint.committer.alive:
            return replies.STORAGE_UNAVAILABLE
        connection_filter = self._endpoint.connection_filter
        if connection_filter is None or not self.connection_filtered:
            return None
        check = self._connection_check = connection_filter.check(self.connection.peer_ip)
        exempt = await self._endpoint.claimed_on_premises(self.connection.peer_ip)
        refusal = check.connect(exempt=exempt)
        self.connection_verdict = check.verdict
        return refusal

    async def helo(self, name: str, extended: bool) -> Reply | None:
        self.helo_name = name
        self.extended = extended
        return None

    async def tls_started(self, info: TlsInfo) -> None:
        self.tls = info

    async def authenticate(self, credentials: SaslCredentials) -> Reply:
        """The MX listener offers no AUTH (submission does); the SMTP core never asks."""
        return replies.NOT_IMPLEMENTED

    async def mail_from(self, sender: Address | None, params: MailParams) -> Reply:
        if not self._endpoint.committer.alive:
            return replies.STORAGE_UNAVAILABLE  # nothing could be committed: say so now, and close
        if self.authenticated_tenant is None:
            refusal = await self._attribute(sender)
            if refusal is not None:
                return refusal
        refusal = self._connection_check.mail() if self._connection_check is not None else None
        if refusal is not None:
            return refusal
        self.envelope = Envelope(new_message_id(self._endpoint.clock()), sender, params)
        return replies.SENDER_OK

    async def _attribute(self, sender: Address | None) -> Reply | None:
        """Attribute the transaction to an inbound connector (spec §3.4), once TLS and the sender are
        known: its `Source` for routing, whether the sender is inside a tenant; the refusal of an
        attributed OnPremises connector that requires TLS the client did not start."""
        attributed = await self._endpoint.attribute(self.connection.peer_ip, self.tls, sender)
        self.attributed = attributed
        self.sender_internal_to = attributed.inside
        connector = attributed.connector
        if connector is None:
            return None
        if self._connection_check is not None:
            self._connection_check.exempt()
        if connector.require_tls and self.tls is None:
            log.info(
                "refused MAIL from %s: connector %r of tenant %d requires TLS",
                self.connection.peer_ip,
                connector.name,
                connector.tenant_id,
            )
            return replies.CONNECTOR_TLS_REQUIRED
        return None

    @property
    def source(self) -> Source | None:
        """The transaction's source as routing sees it (None: an authenticated session)."""
        return self.attributed.source if self.attributed is not None else None

    async def rcpt_to(self, recipient: Address, params: RcptParams) -> Reply:
        envelope = self.envelope
        assert envelope is not None, "the SMTP core sends RCPT only after MAIL"
        resolution = await self._resolve(recipient, null_sender=envelope.sender is None)
        if isinstance(resolution, Rejected) and resolution.reason is RejectReason.INTERNAL_RELAY_UNROUTED:
            resolution = await self._by_mx(recipient, resolution, null_sender=envelope.sender is None)
        if not isinstance(resolution, Rejected):
            resolution = await self._filter_connection(envelope, resolution)
        if isinstance(resolution, Relayed):
            envelope.accepted.append(resolution)
            return replies.RECIPIENT_OK
        if isinstance(resolution, Accepted):
            refused = await self._over_receive_limit(resolution, envelope.params.size)
            refused = refused or await self._mailbox_full(resolution, envelope.params.size)
            if refused is None:
                envelope.accepted.append(resolution)
                return replies.RECIPIENT_OK
            resolution = refused
        if self._traced_alone(envelope, str(recipient), resolution.reply):
            envelope.rejected.append(resolution)
        return resolution.reply

    async def _resolve(
        self, recipient: Address, *, null_sender: bool, mx_elsewhere: frozenset[str] = frozenset()
    ) -> Resolution:
        return await self._endpoint.resolve(
            recipient,
            self.sender_internal_to,
            self.authenticated_tenant,
            null_sender=null_sender,
            source=self.source,
            mx_elsewhere=mx_elsewhere,
        )

    async def _by_mx(self, recipient: Address, unrouted: Rejected, *, null_sender: bool) -> Resolution:
        """An unknown recipient of an internal-relay domain with no on-premises connector: relayed by
        MX when the domain's MX is not this service (asked now, off the routing function), else
        refused as it was; a DNS failure defers it (451 4.4.3)."""
        elsewhere = await self._endpoint.mx_elsewhere(recipient.domain)
        if isinstance(elsewhere, Reply):
            return Rejected(recipient, elsewhere, unrouted.reason, unrouted.tenant_id)
        if not elsewhere:
            return unrouted
        return await self._resolve(
            recipient, null_sender=null_sender, mx_elsewhere=frozenset({recipient.domain})
        )

    async def _filter_connection(self, envelope: Envelope, resolution: Accepted | Relayed) -> Resolution:
        """The connection filter's word on a recipient routing accepted: refused for its tenant's IP
        Block list or a DNS blocklist, else as it was (its tenant's verdict kept on the envelope)."""
        check = self._connection_check
        if check is None:
            return resolution
        tenant = resolution.tenant_id
        source = self.source
        if tenant is not None and source is not None and source.on_premises_tenant == tenant:
            # The tenant's own on-premises server (its connector vouches for the client): its IP
            # lists and the blocklists judge strangers, not the tenant's relay.
            return resolution
        policy = None
        if tenant is not None:
            policy = (await self._endpoint.ask(lambda directory: directory.protection(tenant))).connection
        outcome = await check.recipient(tenant, policy)
        self.connection_verdict = check.verdict
        if outcome.refusal is not None:
            reason = RejectReason.BLOCKLISTED if outcome.by_blocklist else RejectReason.IP_BLOCKED
            return Rejected(resolution.recipient, outcome.refusal, reason, tenant)
        if tenant is not None:
            envelope.tenant_listing[tenant] = outcome.verdict
        return resolution

    async def _over_receive_limit(self, accepted: Accepted, size: int | None) -> Rejected | None:
        """A mailbox recipient refused at RCPT because MAIL's SIZE= is over its receive limit."""
        owner = accepted.owner
        if size is None or owner.kind is not RecipientKind.MAILBOX:
            return None
        if size <= await self._endpoint.receive_limit(owner.recipient_id):
            return None
        return Rejected(
            accepted.recipient, replies.RECIPIENT_SIZE_EXCEEDED, RejectReason.RECIPIENT_SIZE, owner.tenant_id
        )

    async def _mailbox_full(self, accepted: Accepted, size: int | None) -> Rejected | None:
        """A mailbox recipient refused at RCPT because its mailbox is full (552 5.2.2): the sending
        server tells its sender, and Postroom writes no bounce (no backscatter)."""
        owner = accepted.owner
        if not await self._endpoint.mailbox_full(owner, size):
            return None
        return Rejected(accepted.recipient, replies.MAILBOX_FULL, RejectReason.MAILBOX_FULL, owner.tenant_id)

    async def rcpt_refused(self, recipient: Address, reply: Reply) -> None:
        """The SMTP core refused a RCPT itself (over its recipient limit): traced like routing's refusals."""
        envelope = self.envelope
        if envelope is None:
            return
        resolution = await self._resolve(recipient, null_sender=envelope.sender is None)
        tenant = resolution.tenant_id
        if self._traced_alone(envelope, str(recipient), reply):
            envelope.rejected.append(Rejected(recipient, reply, RejectReason.RECIPIENT_LIMIT, tenant))

    def data_refused(self, reply: Reply) -> None:
        """The SMTP core refused the message at its end; `reset` follows and traces it."""
        if self.envelope is not None:
            self._refuse_data(self.envelope, reply, None)

    def _traced_alone(self, envelope: Envelope, recipient: str, reply: Reply) -> bool:
        """Count a refused recipient; True when it is traced alone, False when it was aggregated."""
        sender = str(envelope.sender) if envelope.sender else ""
        # Counted per client network, not per address: an IPv6 client holds a /64 of addresses.
        client = self.connection.network
        if self._endpoint.refusals.refused(client, self.refusals_traced, recipient, sender, str(reply)):
            self.refusals_traced += 1
            return True
        envelope.refused_untraced += 1
        return False

    async def data(self, content: MessageContent) -> Reply:
        envelope = self.envelope
        assert envelope is not None and envelope.accepted, "the SMTP core sends DATA only with recipients"
        head = content.head(HEAD_OCTETS)
        if count_received(head) > self._endpoint.max_hops:
            return self._refuse_data(envelope, replies.HOP_COUNT_EXCEEDED, content.size)
        refusal = await self._check_message(envelope, content.size, head)
        if refusal is not None:
            return self._refuse_data(envelope, refusal, content.size)
        now = self._endpoint.clock()
        summary = summarize(head)
        prefix = self._received_header(envelope, now)
        sender = str(envelope.sender) if envelope.sender else ""
        categorized = await self._endpoint.categorize(envelope.id, envelope.accepted, sender, self.source)
        size = content.size + len(prefix)
        categorized.routes = await self._endpoint.over_receive_limits(categorized.routes, size)
        filtered: Filtered | None = None
        body: bytes | None = None  # the message as protection left it, when it changed it
        if self._endpoint.protection is not None:
            outcome = await self._protect(envelope, content, categorized.routes)
            if isinstance(outcome, Reply):
                return self._refuse_data(envelope, outcome, content.size)
            filtered, body = outcome
            categorized.routes = filtered.routes
        if body is not None:
            inline: bytes | None = body if len(body) <= self._endpoint.inline_limit else None
            size = len(body) + len(prefix)
            blob_id = hashlib.sha256(body).hexdigest() if inline else await self._endpoint.store_bytes(body)
        else:
            inline = self._endpoint.inline_body(content)
            if inline is not None:
                blob_id = hashlib.sha256(inline).hexdigest()
            else:
                blob_id = await self._endpoint.store_blob(content)
        entry = SpoolEntry(
            id=envelope.id,
            sender=sender,
            blob_id=blob_id,
            prefix=prefix,
            size=size,
            received_at=now,
            summary=summary,
        )
        receive_detail: dict[str, object] = {
            "client_ip": self.connection.peer_ip,
            "helo": self.helo_name,
            "tls": self.tls.version if self.tls else "none",
            "size": entry.size,
            "message_id": summary.message_id,
            "listener": self.connection.listener_name,
        }
        received = Received(
            entry,
            categorized,
            envelope,
            receive_detail,
            self.connection.peer_ip,
            filtered,
            await self._connector_details(envelope),
        )
        job = self._commit_job(received)
        if inline is not None:
            job = partial(_with_body, partial(self._endpoint.put_inline, inline, blob_id), job)
        try:
            outcomes = await self._endpoint.committer.run(job)
        except asyncio.CancelledError:
            # Cut mid-commit (a stop past its grace): the writer may still commit the job, which
            # carries this transaction's refusals, so the reset at close must not trace them again.
            self.envelope = None
            raise
        if isinstance(outcomes, Reply):
            return self._refuse_data(envelope, outcomes, entry.size)
        if any(_queued(route) for route in categorized.routes):
            self._endpoint.queued()
        self.envelope = None  # committed: a reset must not trace its rejects again
        _count_committed(self.connection.listener_name, categorized.routes)
        self._log_transaction("queued", envelope, entry.size, outcomes)
        return replies.QUEUED.with_text(f"Queued as {envelope.id}")

    async def _protect(
        self, envelope: Envelope, content: MessageContent, routes: list[RoutedRecipient]
    ) -> tuple[Filtered, bytes | None] | Reply:
        """Run the filtering stack on the message: what becomes of each route and the message as
        protection left it (None: unchanged), or the reply that defers or refuses it whole."""
        endpoint = self._endpoint
        protection = endpoint.protection
        assert protection is not None
        message = await endpoint.message_bytes(content)
        tenants, lists = await endpoint.policies(routes)
        facts = MessageFacts(
            client_ip=self.connection.peer_ip,
            helo=self.helo_name,
            mail_from=str(envelope.sender) if envelope.sender else "",
            recipients=tuple(r.recipient for r in routes),
            direction=self.direction,
            authenticated_user=self._authenticated_user(),
            tls=self.tls is not None,
            tenant_ids=tuple(sorted(tenants)),
            connection=self.connection_verdict,
        )
        listings = dict(envelope.tenant_listing)
        views = await self._enhanced_views(envelope, message, routes)
        judged = await self._judge_original_sender(views, routes, facts, listings)
        if isinstance(judged, Reply):
            return judged
        facts = judged
        recipients = [RecipientFacts(r.recipient, r.tenant_id, r.mailbox_id) for r in routes]
        internal = self.attributed.internal if self.attributed is not None else None
        inspection = await protection.inspect(
            message,
            facts,
            recipients,
            tenants,
            lists,
            listings,
            internal=() if internal is None else (internal,),
        )
        if views and not inspection.defer:
            inspection = _stamped(inspection, routes, views, facts.client_ip)
        if inspection.defer is not None:
            log.warning("deferred id=%s: %s", envelope.id, inspection.detail.get("unavailable", ""))
            return inspection.defer
        refusal = await self._judge(envelope, inspection)
        if refusal is not None:
            return refusal
        filtered = apply_inspection(envelope.id, inspection, routes)
        if filtered.refusal is not None:
            return filtered.refusal
        body = inspection.message
        await self._rewrite_subjects(filtered, body if body is not None else message)
        await self._redirect(envelope, filtered)
        return filtered, body

    async def _enhanced_views(
        self, envelope: Envelope, message: bytes, routes: list[RoutedRecipient]
    ) -> dict[int, EnhancedView]:
        """Enhanced filtering's walk (`app.inbound`) for each recipient tenant whose connector has it."""
        source = self.source
        if source is None:
            return {}
        addresses: dict[int, list[str]] = {}
        for accepted in envelope.accepted:
            if accepted.tenant_id is not None:
                addresses.setdefault(accepted.tenant_id, []).append(accepted.recipient.key)
        if not any(r.tenant_id in addresses for r in routes):
            return {}
        max_hops = self._endpoint.max_hops
        return await self._endpoint.ask(
            partial(enhanced_views, source=source, message=message, recipients=addresses, max_hops=max_hops)
        )

    async def _judge_original_sender(
        self,
        views: dict[int, EnhancedView],
        routes: list[RoutedRecipient],
        facts: MessageFacts,
        listings: dict[int, ConnectionVerdict],
    ) -> MessageFacts | Reply:
        """With enhanced filtering, the facts the stack judges: the original sender's IP and HELO in
        place of the gateway's (SPF, the report's CIP and PTR), and the connection filter's verdict on
        it for each tenant (`listings`, filled in). It applies only when every routed tenant's
        connector found the same sender and its `ef_users` scope held; else the message is judged on
        the connecting IP. A tenant's lists or a blocklist that refuse the original sender fail that
        tenant's routes (their DSN says why); when that is every route, the reply refuses the message."""
        tenants = {r.tenant_id for r in routes}
        originals = {views[t].original for t in tenants if t is not None and t in views and views[t].applied}
        if len(originals) != 1 or None in tenants or any(t not in views for t in tenants):
            for tenant_id in views:
                views[tenant_id] = replace(views[tenant_id], applied=False)
            return facts
        [original] = originals
        facts = replace(facts, client_ip=original.ip, helo=original.helo, connection=ConnectionVerdict())
        connection_filter = self._endpoint.connection_filter
        if connection_filter is None:
            return facts
        refusals: dict[int, Reply] = {}
        for tenant_id in sorted(t for t in tenants if t is not None):
            policy = (await self._endpoint.ask(partial(_protection_of, tenant_id))).connection
            check = await connection_filter.judge(original.ip, tenant_id, policy)
            listings[tenant_id] = check.verdict
            if check.refusal is not None:
                refusals[tenant_id] = check.refusal
        if refusals and all(r.tenant_id in refusals or r.failure for r in routes):
            return next(iter(refusals.values()))
        for index, route in enumerate(routes):
            refusal = refusals.get(route.tenant_id) if route.tenant_id is not None else None
            if refusal is not None and not route.failure:
                routes[index] = replace(route, failure=str(refusal))
        return facts

    async def _rewrite_subjects(self, filtered: Filtered, message: bytes) -> None:
        """Give each local copy whose action prepends the subject a body of its own (the queue sends
        the message's own body: a remote copy keeps its subject and carries the verdict in its headers)."""
        written: dict[str, tuple[str, int]] = {}
        for index, text in filtered.subject_prefixes.items():
            route = filtered.routes[index]
            if route.route is not Route.LOCAL:
                continue
            if text not in written:
                rewritten = prepend_subject(message, text)
                written[text] = (await self._endpoint.store_bytes(rewritten), len(rewritten))
            blob_id, blob_size = written[text]
            filtered.routes[index] = replace(route, blob_id=blob_id, blob_size=blob_size)

    async def _redirect(self, envelope: Envelope, filtered: Filtered) -> None:
        """Route each redirected copy to the policy's address, as its tenant would send there; a
        redirect address that does not resolve leaves the copy in the recipient's Junk folder."""
        for route, address in filtered.redirects:
            target: Resolution | None = None
            with contextlib.suppress(ValueError):
                target = await self._endpoint.resolve(
                    Address.parse(address), route.tenant_id, route.tenant_id, null_sender=False
                )
            if not isinstance(target, Accepted | Relayed):
                filtered.routes.append(replace(route, folder="Junk"))
                continue
            sender = str(envelope.sender) if envelope.sender else ""
            redirected = await self._endpoint.categorize(envelope.id, [target], sender, self.source)
            for new in redirected.routes:
                filtered.routes.append(
                    replace(
                        new,
                        original_recipient=route.original_recipient,
                        also_settles=route.also_settles,
                        headers=route.headers,
                    )
                )
            detail: dict[str, object] = {"to": address, "reason": "protection policy"}
            filtered.events += [
                TraceEvent(envelope.id, EventKind.REDIRECT, route.tenant_id, row, detail)
                for row in route.trace_rows
            ]

    async def _connector_details(self, envelope: Envelope) -> dict[int, dict[str, object]]:
        """Each recipient tenant's Receive trace detail about the connector the message came over
        (only that tenant's own connector: connector names are tenant data)."""
        source = self.source
        if source is None:
            return {}
        tenants = {a.tenant_id for a in envelope.accepted if a.tenant_id is not None}
        details: dict[int, dict[str, object]] = {}
        for tenant in sorted(tenants):
            connector = await self._endpoint.ask(partial(connector_of, source=source, tenant_id=tenant))
            if connector is not None:
                details[tenant] = receive_detail(connector, source)
        return details

    async def _judge(self, envelope: Envelope, inspection: Inspection) -> Reply | None:
        """A reply that refuses the whole message for its verdicts (the MX endpoint: none; each
        recipient's policy decides)."""
        return None

    def _authenticated_user(self) -> str:
        """The login of an authenticated session ("" on the MX endpoint)."""
        return ""

    # --- hooks a submission session overrides ----------------------------------------------------
    async def _check_message(self, envelope: Envelope, size: int, head: bytes) -> Reply | None:
        """A reply that refuses the message at the end of DATA, or None (the MX endpoint: none)."""
        return None

    def _commit_job(self, received: Received) -> Callable[[Connection], CommitResult]:
        """The job the group committer runs for the message (in the writer's transaction)."""
        return partial(commit_received, received, self.receive_event)

    def _refuse_data(self, envelope: Envelope, reply: Reply, size: int | None) -> Reply:
        """Refuse the message at the end of DATA (by this session, or by the SMTP core, which does not
        say the size): every accepted recipient fails with `reply`."""
        envelope.refused_data = reply
        traced = [a for a in envelope.accepted if self._traced_alone(envelope, str(a.recipient), reply)]
        outcomes = [(str(r.recipient), "failed", str(r.reply)) for r in envelope.rejected]
        outcomes += [(str(a.recipient), "failed", str(reply)) for a in envelope.accepted]
        envelope.accepted = traced  # what the reset traces as refused at DATA
        self._log_transaction("refused", envelope, size, outcomes)
        return reply

    def _log_transaction(
        self, verdict: str, envelope: Envelope, size: int | None, outcomes: list[tuple[str, str, str]]
    ) -> None:
        """The mail log line of one transaction (the node's log, at info)."""
        recipients = ", ".join(
            f"to=<{recipient}> status={status}" + (f" ({reply})" if reply else "")
            for recipient, status, reply in outcomes
        )
        untraced = f" refused_untraced={envelope.refused_untraced}" if envelope.refused_untraced else ""
        log.info(
            "%s id=%s client=%s from=<%s> size=%s time=%.3fs %s%s",
            verdict,
            envelope.id,
            self.connection.peer_ip,
            envelope.sender or "",
            "-" if size is None else size,
            time.monotonic() - envelope.started,
            recipients,
            untraced,
        )

    def reset(self) -> None:
        envelope, self.envelope = self.envelope, None
        if envelope is not None and (envelope.rejected or (envelope.refused_data and envelope.accepted)):
            # Nothing was committed for this transaction; its refused recipients are still traced.
            job = partial(_record_refusals, envelope, self.connection.peer_ip, self._endpoint.clock())
            future = asyncio.ensure_future(self._endpoint.committer.run(job))
            future.add_done_callback(_log_failure)

    def close(self) -> None:
        if self._connection_check is not None:
            self._connection_check.close()
        self.reset()

    def _received_header(self, envelope: Envelope, now: float) -> bytes:
        """The Received header this node adds (RFC 5321 §4.4, with the TLS details of RFC 8314)."""
        smtputf8 = envelope.params.smtputf8
        protocol = ("UTF8SMTP" if smtputf8 else "ESMTP" if self.extended else "SMTP") + (
            "S" if self.tls else ""
        )
        if protocol == "SMTPS":
            protocol = "ESMTPS"  # RFC 3848 has no SMTPS; TLS implies the extended protocol
        if self.authenticated_tenant is not None:
            protocol += "A"  # RFC 3848: ESMTPA, ESMTPSA (RFC 6531: UTF8SMTPA, UTF8SMTPSA)
        peer = self.connection.peer_ip
        literal = f"[IPv6:{peer}]" if ":" in peer else f"[{peer}]"
        helo = _printable(self.helo_name) or literal
        lines = [f"Received: from {helo} ({literal})", f"\tby {self._endpoint.hostname} (Postroom)"]
        if self.tls:
            lines.append(f"\t(using {self.tls.version} with cipher {self.tls.cipher})")
        recipient = f" for <{envelope.accepted[0].recipient}>" if len(envelope.accepted) == 1 else ""
        lines.append(f"\twith {protocol} id {envelope.id}{recipient};")
        lines.append(f"\t{_rfc5322_date(int(now))}")
        return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def _stamped(
    inspection: Inspection, routes: list[RoutedRecipient], views: dict[int, EnhancedView], judged_ip: str
) -> Inspection:
    """The inspection with enhanced filtering's fields added to the protection headers of each copy
    of a tenant whose connector's walk found the original sender (and, when it was the IP judged,
    that it was)."""
    dispositions: list[Disposition] = []
    for route, disposition in zip(routes, inspection.dispositions, strict=True):
        view = views.get(route.tenant_id) if route.tenant_id is not None else None
        if view is not None:
            applied = view.applied and view.original.ip == judged_ip
            disposition = replace(disposition, headers=disposition.headers + stamps(view.original, applied))
        dispositions.append(disposition)
    return replace(inspection, dispositions=tuple(dispositions))


@functools.lru_cache(maxsize=4)
def _rfc5322_date(second: int) -> str:
    """The date of a Received header; formatted once per second, however many messages arrive in it."""
    return format_datetime(datetime.datetime.fromtimestamp(second, datetime.UTC))


def _printable(text: str) -> str:
    return "".join(ch for ch in text if 0x21 <= ord(ch) < 0x7F and ch not in "()")[:255]


def _log_failure(future: asyncio.Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("could not trace refused recipients", exc_info=future.exception())


def _refusal_rows(envelope: Envelope) -> tuple[list[TraceEvent], list[TraceRecipient]]:
    """Fail rows for the recipients refused at RCPT, and for all of them if DATA was refused."""
    refused = [(r.tenant_id, str(r.recipient), r.reply, "RCPT") for r in envelope.rejected]
    if envelope.refused_data is not None:
        data_reply = envelope.refused_data
        refused += [(a.tenant_id, str(a.recipient), data_reply, "DATA") for a in envelope.accepted]
    events = [
        TraceEvent(envelope.id, EventKind.FAIL, tenant, recipient, {"reply": str(reply), "stage": stage})
        for tenant, recipient, reply, stage in refused
    ]
    statuses = [
        TraceRecipient(envelope.id, tenant, recipient, TraceStatus.FAILED)
        for tenant, recipient, *_ in refused
    ]
    return events, statuses


_OUTCOMES = {
    TraceStatus.DELIVERED: "delivered",
    TraceStatus.PENDING: "queued",
    TraceStatus.FAILED: "failed",
    TraceStatus.EXPANDED: "expanded",
}


@dataclass(frozen=True, slots=True)
class Received:
    """A message at the end of DATA, ready for its commit job."""

    entry: SpoolEntry
    categorized: Categorized
    envelope: Envelope
    receive_detail: dict[str, object]
    client_ip: str
    filtered: Filtered | None = None  # what protection decided (held, deleted copies; its trace)
    # What one tenant's own Receive event adds: the inbound connector the message came over.
    tenant_detail: dict[int, dict[str, object]] = field(default_factory=dict)


def _protection_of(tenant_id: int, directory: DirectoryView) -> TenantProtection:
    return directory.protection(tenant_id)


def _sender_lists_of(mailbox_id: int, directory: DirectoryView) -> MailboxSenderLists:
    return directory.sender_lists(mailbox_id)


def _count_committed(listener: str, routes: list[RoutedRecipient]) -> None:
    """Count a committed message (its 250 follows) and what its commit settled: local recipients
    delivered, recipients that failed while routed; remote ones are counted when their delivery settles."""
    metrics.MESSAGES_RECEIVED.labels(listener).inc()
    for route in routes:
        if route.failure:
            metrics.RECIPIENTS_FAILED.labels(metrics.reason_of_reply(route.failure)).inc()
        elif route.route is Route.LOCAL:
            metrics.RECIPIENTS_DELIVERED.labels("local").inc()


def _queued(route: RoutedRecipient) -> bool:
    """Whether the route goes into the queue: remote, or failed while it was routed (for its DSN)."""
    return route.route is not Route.LOCAL or bool(route.failure)


def _with_body(put: Callable[[Connection], str], job: Callable[[Connection], T], conn: Connection) -> T:
    """A commit job that first writes the message's bytes in the same transaction."""
    put(conn)
    return job(conn)


def commit_received(
    received: Received, receive_event: EventKind, conn: Connection
) -> list[tuple[str, str, str]]:
    """The commit job of one received message: deliver locally, queue the rest, trace. Runs in the writer.

    Returns each trace row's (recipient, outcome, reply) for the mail log line."""
    entry, categorized, envelope = received.entry, received.categorized, received.envelope
    receive_detail, client_ip = received.receive_detail, received.client_ip
    summary = entry.summary
    queued = [route for route in categorized.routes if _queued(route)]
    if queued:
        write_spool(conn, entry, queued)
    record_message(
        conn,
        TraceMessage(
            id=entry.id,
            message_id_header=summary.message_id,
            sender=entry.sender,
            subject=summary.subject,
            size=entry.size,
            client_ip=client_ip,
            received_at=entry.received_at,
        ),
    )
    tenants = {a.tenant_id for a in envelope.accepted} | {r.tenant_id for r in envelope.rejected}
    refused_events, refused_statuses = _refusal_rows(envelope)
    receive = [
        TraceEvent(
            entry.id,
            receive_event,
            tenant,
            "",
            {**receive_detail, **received.tenant_detail.get(tenant, {})}
            if tenant is not None
            else receive_detail,
        )
        for tenant in sorted(tenants, key=str)
    ]
    delivered_events, delivered_statuses = deliver_at_commit(
        conn, entry, [route for route in categorized.routes if not route.failure]
    )
    traced = {e.recipient.lower() for e in categorized.events if e.event is EventKind.FAIL}
    failed_events, failed_statuses = _routing_failures(entry.id, categorized.routes, traced)
    filter_events, filter_statuses = _filter_rows(conn, entry, received.filtered)
    events = receive + refused_events + categorized.events + filter_events + delivered_events + failed_events
    record_events(conn, events, entry.received_at)
    # Later rows win: a recipient's `pending` from categorizing is settled by its delivery.
    final = _last_per_row(
        refused_statuses + categorized.statuses + filter_statuses + delivered_statuses + failed_statuses
    )
    set_statuses(conn, final, entry.received_at)
    replies_given = {
        e.recipient.lower(): str(e.detail.get("reply", "")) for e in events if e.event is EventKind.FAIL
    }
    outcomes = [
        (s.recipient, _OUTCOMES.get(s.status, s.status.value), replies_given.get(s.recipient.lower(), ""))
        for s in final
    ]
    past_limit = [e for e in categorized.events if e.event is EventKind.FAIL and not e.recipient]
    outcomes += [
        (f"{e.detail['count']} more", "failed", f"{e.detail['reply']}; {e.detail['limit']}")
        for e in past_limit
    ]
    return outcomes


def _filter_rows(
    conn: Connection, entry: SpoolEntry, filtered: Filtered | None
) -> tuple[list[TraceEvent], list[TraceRecipient]]:
    """Protection's part of the commit: the copies it held go into quarantine (in this transaction),
    and the trace of its verdicts and actions."""
    if filtered is None:
        return [], []
    events, statuses = list(filtered.events), list(filtered.statuses)
    if filtered.held:
        held_events, held_statuses = hold_copies(conn, entry, filtered.held, filtered.detail)
        events += held_events
        statuses += held_statuses
    return events, statuses


def _routing_failures(
    message_id: str, routes: list[RoutedRecipient], traced: set[str]
) -> tuple[list[TraceEvent], list[TraceRecipient]]:
    """Fail rows for the recipients that failed while routed (queued for their DSN); a Fail event only
    where categorizing did not write one already (`traced`: its rows, lower case)."""
    failed = [route for route in routes if route.failure]
    events = [
        TraceEvent(message_id, EventKind.FAIL, r.tenant_id, row, {"reply": r.failure, "stage": "DATA"})
        for r in failed
        for row in r.trace_rows
        if row.lower() not in traced
    ]
    statuses = [
        TraceRecipient(message_id, r.tenant_id, row, TraceStatus.FAILED, r.recipient)
        for r in failed
        for row in r.trace_rows
    ]
    return events, statuses


def _last_per_row(statuses: list[TraceRecipient]) -> list[TraceRecipient]:
    """One status per (message, recipient): the last one given, keeping the first `resolved`, in
    first-seen order."""
    latest: dict[str, TraceRecipient] = {}
    for status in statuses:
        key = status.recipient.lower()
        earlier = latest.get(key)
        if earlier is not None and earlier.resolved and not status.resolved:
            status = replace(status, resolved=earlier.resolved)
        latest[key] = status
    return list(latest.values())


def mailbox_full(conn: Connection, owner: AddressOwner, size: int | None) -> bool:
    """Whether the recipient's mailbox is at or over its quota, or a message of `size` octets (MAIL's
    declared SIZE=; None: not declared) would take it past it. One aggregate query (its usage), only
    when it has a quota."""
    quota = owner.quota_bytes
    if quota is None or owner.kind is not RecipientKind.MAILBOX:
        return False
    usage = mailbox_usage(conn, owner.recipient_id)
    return usage >= quota or (size is not None and usage + size > quota)


def _record_refusals(envelope: Envelope, client_ip: str, now: float, conn: Connection) -> None:
    record_message(
        conn,
        TraceMessage(
            id=envelope.id,
            message_id_header="",
            sender=str(envelope.sender) if envelope.sender else "",
            subject="",
            size=0,
            client_ip=client_ip,
            received_at=now,
        ),
    )
    events, statuses = _refusal_rows(envelope)
    record_events(conn, events, now)
    set_statuses(conn, statuses, now)
