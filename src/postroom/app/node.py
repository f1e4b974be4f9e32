"""The composition root: builds a node from its settings, serves, and stops cleanly.

`App.open(settings)` opens the database (migrating it), the blob store and the services; the CLI
uses it as is. `App.serve()` removes the temporary files of blob writes that never finished (not in
`open`: a CLI command may run beside a serving node), starts the group committer, the scheduler and
every listener (the MX endpoint, the submission endpoint's STARTTLS and implicit-TLS listeners, the
IMAP server's STARTTLS and implicit-TLS listeners (`app.imap`), and
the admin HTTP listener that serves the hosted domains' MTA-STS policies, `/healthz`, `/readyz` and
`/metrics`: `app.monitor`, and the tenant admin API: `admin.api`), prints where it listens, and
runs until SIGTERM or SIGINT; then it drains: `/readyz` turns 503 at once, the SMTP listeners stop
accepting (the admin listener keeps answering until they have drained, so a load balancer sees the
503, then stops too), transactions and HTTP requests in flight finish (bounded by `[node]
drain_seconds`; a session still in a transaction then is cut with 421 4.3.2), the scheduler finishes
its round, the refusal aggregates are written and the writer commits what it was given. Nothing
acknowledged is left uncommitted.

Local recipients are delivered inside the spool commit (`delivery.deliver_at_commit`), so the
scheduler has no round for them; what the queue keeps is remote mail. The scheduler
(`app.outbound.build_scheduler`) leases it for the remote agent (`delivery.remote.RemoteDelivery`,
built by `app.sending.remote_delivery`; a test may set `App.remote_agent` to its own) and sends DSNs
for what failed.
Cluster (`postroom.cluster`): `App.notifications` is this process's notification channel. A
commit that queued remote recipients wakes the local scheduler and publishes `queue`; a directory
change publishes `directory` (CLI commands too, sent before they exit). While serving, the process
listens: `queue` wakes its scheduler, `directory` refreshes its directory cache at once. It
registers in the node registry under its lease-token owner once its listeners are up, heart-beats
every `[node] heartbeat_seconds` through the group committer, and marks itself stopped at the end.
While serving, the node also purges trace older than `[trace] retention_days` every
`purge_interval`, one `purge_batch` per writer job, so it never holds the writer long, and expired
quarantined messages every `[protection] quarantine_purge_interval` the same way.

Failure at start is one `StartupError` (`app.startup`): one line naming the problem and the key to
change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial

import sqlalchemy
import sqlalchemy.exc
import uvloop

from postroom import __version__
from postroom.admin import AdminListener, ClientServers, ClientSetup, build_admin_app
from postroom.app.domain_dns import mta_sts_policy_text, serves_mail_clients
from postroom.app.filtering import build_protection, spam_learner
from postroom.app.imap import ImapEndpoint
from postroom.app.logins import SharedCounts
from postroom.app.monitor import NodeMonitor
from postroom.app.mx import MxEndpoint
from postroom.app.outbound import build_scheduler, write_trace
from postroom.app.sending import local_endpoints, remote_delivery
from postroom.app.startup import (
    StartupError,
    check_data_dir,
    database_error,
    full_disk,
    listen,
    mx_tls_context,
    srs_secret,
    tls_context,
    unusable_url,
)
from postroom.app.submission import MINUTE, SubmissionEndpoint, SubmissionLimits
from postroom.cluster import DIRECTORY, QUEUE, NodeRegistry, notifications_for
from postroom.config import ListenerSettings, Settings, SubmissionSettings
from postroom.delivery.remote import RemoteDelivery
from postroom.directory import CachedDirectory, Directory, PasswordPolicy
from postroom.dns import DnsResolver
from postroom.imap.server import ImapListener
from postroom.imap.session import SessionLimits
from postroom.mailstore import Mailstore
from postroom.model import Address
from postroom.model.ipfilter import Blocklist, IpList
from postroom.protection import ConnectionFilter, RateLimits
from postroom.quarantine import QuarantineService, purge_expired
from postroom.queue import LeaseTokens, QueueControl, QueueSummary, RemoteAgent, Scheduler, queue_summary
from postroom.routing import ServicePostmaster, Srs
from postroom.smtp import AuthPolicy, ClientCertificates, MemoryBudget, SmtpListener, TrustedProxies
from postroom.storage import Database, GroupCommitter, open_blob_store
from postroom.trace import TraceService, purge
from postroom.trace.refusals import RefusalLimits

DAY = 86_400.0

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Listening:
    name: str
    address: str
    protocol: str


class App:
    """One node: its services, and (when serving) its listeners and background tasks."""

    def __init__(self, settings: Settings, database: Database) -> None:
        self.settings = settings
        self.database = database
        self.blobs = open_blob_store(
            settings.blob_store, settings.blob_dir, database, inline_limit=settings.blob_inline_limit
        )
        self.notifications = notifications_for(database, settings.data_dir)  # to the other processes
        # Committed changes others should hear of (a mailbox's new mail: IMAP IDLE) go out on it.
        database.announce = self.notifications.publish
        self.lease_tokens = LeaseTokens()  # its owner is this process's id in the node registry
        self.worker = 1  # this process's number under its supervisor (1-based; `app.workers` sets it)
        service = settings.service
        self.directory = Directory(
            database,
            service_domain=service.domain,
            service_hosts=(service.hostname, service.mx_host_suffix, service.spf_include),
            password_policy=PasswordPolicy(
                min_length=settings.passwords.min_length, max_length=settings.passwords.max_length
            ),
            on_change=partial(self.notifications.publish, DIRECTORY),
        )
        self.mailstore = Mailstore(database, self.blobs)
        self.trace = TraceService(database)
        self.queue = QueueControl(database, write_trace)
        self.quarantine = QuarantineService(database, self.blobs, learn=spam_learner(settings))
        # What delivers queued remote recipients; None: the node's `delivery.remote.RemoteDelivery`.
        self.remote_agent: RemoteAgent | None = None
        self._resolver: DnsResolver | None = None
        # The listening sockets its supervisor bound for it, by listener name (`app.workers`); a
        # listener without any binds its own addresses.
        self.sockets: dict[str, tuple[socket.socket, ...]] = {}
        self._counts: list[SharedCounts] = []
        # The clock of the connection filter's minute windows (monotonic); a test may set its own.
        self.rate_clock: Callable[[], float] = time.monotonic
        self.stop: Callable[[], None] = lambda: None  # set by serve(): asks the node to drain and stop

    @classmethod
    def open(cls, settings: Settings) -> App:
        """Open the node at `settings.data_dir` (which must exist); StartupError says what stops it."""
        check_data_dir(settings)
        try:
            if settings.blob_store == "files":
                settings.blob_dir.mkdir(exist_ok=True)
        except OSError as error:
            raise full_disk(error, settings) or StartupError(
                f"cannot create the blob store {settings.blob_dir}: {error.strerror}; "
                f"fix [node] data_dir in {settings.source}"
            ) from None
        try:
            database = Database(settings.database_url)
        except (sqlalchemy.exc.SQLAlchemyError, ImportError) as error:
            raise unusable_url(error, settings) from None
        try:
            database.migrate()
        except sqlalchemy.exc.SQLAlchemyError as error:
            database.dispose()
            raise database_error(error, settings) from None
        return cls(settings, database)

    @property
    def resolver(self) -> DnsResolver:
        if self._resolver is None:
            self._resolver = DnsResolver(self.settings.dns)
        return self._resolver

    def connection_filter(self) -> ConnectionFilter | None:
        """The MX endpoint's connection filter from `[protection]` (None when protection is off); its
        minute windows read `rate_clock`."""
        protection = self.settings.protection
        if not protection.enabled:
            return None
        blocklists = tuple(Blocklist.parse(zone) for zone in protection.dnsbl)
        return ConnectionFilter(
            allow=IpList.parse(protection.ip_allow),
            block=IpList.parse(protection.ip_block),
            blocklists=blocklists,
            resolver=self.resolver if blocklists else None,
            rates=RateLimits(
                connections_per_minute=protection.connections_per_minute,
                messages_per_minute=protection.messages_per_minute,
                max_clients=protection.rate_limited_clients,
                clock=self.rate_clock,
            ),
        )

    def service_postmaster(self) -> ServicePostmaster:
        """Where RCPT TO:<postmaster> goes: `[service] postmaster`, else postmaster@<service domain>."""
        service = self.settings.service
        return ServicePostmaster(
            frozenset({service.hostname.lower(), service.domain.lower()}),
            Address.parse(service.postmaster_address),
        )

    def srs(self) -> Srs:
        """The node's SRS (`[service] srs_*`); StartupError when its key file cannot be used."""
        service = self.settings.service
        return Srs(service.srs_host, srs_secret(self.settings), service.srs_max_age_days)

    async def _keep_trace_purged(self, committer: GroupCommitter) -> None:
        """Purge trace past its retention every `purge_interval`, one batch per writer job."""
        trace = self.settings.trace
        while True:
            try:
                before = time.time() - trace.retention_days * DAY
                removed = 0
                while count := await committer.run(partial(purge, before=before, batch=trace.purge_batch)):
                    removed += count
                if removed:
                    log.info("trace purge: removed %d rows older than %d days", removed, trace.retention_days)
            except Exception:
                log.exception("trace purge failed; retrying at the next interval")
            await asyncio.sleep(trace.purge_interval)

    async def _keep_quarantine_purged(self, committer: GroupCommitter) -> None:
        """Purge expired quarantined messages every `quarantine_purge_interval`, one batch per writer job."""
        while True:
            try:
                removed = 0
                while count := await committer.run(partial(purge_expired, now=time.time())):
                    removed += count
                if removed:
                    log.info("quarantine purge: removed %d expired message(s)", removed)
            except Exception:
                log.exception("quarantine purge failed; retrying at the next interval")
            await asyncio.sleep(self.settings.protection.quarantine_purge_interval)

    def _queued(self, wake: Callable[[], None]) -> None:
        """A commit queued remote recipients: wake this process's scheduler, and the others'."""
        wake()
        self.notifications.publish(QUEUE)

    def queue_summary(self) -> QueueSummary:
        with self.database.read() as conn:
            return queue_summary(conn)

    def close(self) -> None:
        self.notifications.close()  # sends what a CLI command published before it exits
        self.database.dispose()

    def tls_context(self) -> ssl.SSLContext:
        """The TLS context of submission, IMAP and admin (`[tls]`)."""
        return tls_context(self.settings)

    def mx_tls_context(self) -> ssl.SSLContext | None:
        """The MX listener's asking context: `tls_context` asking clients for a certificate (inbound
        connectors by certificate); None when `[tls] request_client_certificate` is off."""
        return mx_tls_context(self.settings)

    def run(self, on_ready: Callable[[list[Listening]], None] | None = None) -> None:
        """Serve on a uvloop event loop (libuv: less overhead per socket event) until stopped."""
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(self.serve(on_ready))

    def _shared(self, counts: SharedCounts) -> SharedCounts:
        self._counts.append(counts)  # closed when serve() returns
        return counts

    def _submission_listeners(
        self, mx: MxEndpoint, tls: ssl.SSLContext, memory: MemoryBudget
    ) -> list[SmtpListener]:
        """The submission listeners: `listen` (STARTTLS, the 587 role) and `tls_listen` (implicit TLS,
        the 465 role), each left out when it has no address. Both require AUTH for MAIL, after TLS."""
        settings = self.settings
        submission = settings.submission
        counts = settings.data_dir / "run" / "submission-counts.sqlite"
        endpoint = SubmissionEndpoint(
            mx,
            self.directory,
            self.database,
            SubmissionLimits(
                max_send_size=submission.max_send_size,
                max_recipients=submission.max_recipients,
                messages_per_minute=submission.messages_per_minute,
                recipients_per_day=submission.recipients_per_day,
                outbound_spam_per_day=submission.outbound_spam_per_day,
                auth_failure_window=submission.auth_failure_window,
                auth_failures_before_throttle=submission.auth_failures_before_throttle,
                auth_failures_before_disconnect=submission.auth_failures_before_disconnect,
                auth_cache_seconds=submission.auth_cache_seconds,
            ),
            # shared by every worker of the node (a file under <data_dir>/run), see app.logins
            failed_logins=self._shared(SharedCounts(counts, "failed_logins", submission.auth_failure_window)),
            messages=self._shared(SharedCounts(counts, "submitted_messages", MINUTE)),
        )
        roles = (("submission", submission.listen, False), ("submissions", submission.tls_listen, True))
        return [
            SmtpListener(
                name=name,
                addresses=addresses,
                limits=submission.limits,
                hostname=settings.service.hostname,
                factory=endpoint.session,
                ssl_context=tls,
                implicit_tls=implicit,
                spool_dir=settings.spool_dir,
                memory=memory,
                auth=AuthPolicy(tls_required=True, required_for_mail=True),
                sockets=self.sockets.get(name, ()),
                proxies=_trusted_proxies(submission),
            )
            for name, addresses, implicit in roles
            if addresses
        ]

    def _imap(
        self, committer: GroupCommitter, tls: ssl.SSLContext
    ) -> tuple[ImapEndpoint, list[ImapListener]]:
        """The IMAP endpoint and its listeners: `listen` (STARTTLS, the 143 role) and `tls_listen`
        (implicit TLS, the 993 role), each left out when it has no address."""
        imap = self.settings.imap
        counts = self.settings.data_dir / "run" / "imap-counts.sqlite"
        endpoint = ImapEndpoint(
            self.database,
            self.directory,
            committer,
            self.blobs,
            self.notifications,
            limits=SessionLimits(
                login_timeout=imap.login_timeout,
                idle_timeout=imap.idle_timeout,
                idle_max=imap.idle_max,
                max_errors=imap.max_errors,
                commands_before_login=imap.commands_before_login,
                max_append_size=imap.max_append_size,
                poll_seconds=imap.poll_seconds,
            ),
            # shared by every worker of the node (a file under <data_dir>/run), see app.logins
            failed_logins=self._shared(SharedCounts(counts, "failed_logins", imap.auth_failure_window)),
            throttle_after=imap.auth_failures_before_throttle,
            disconnect_after=imap.auth_failures_before_disconnect,
            auth_cache_seconds=imap.auth_cache_seconds,
            plaintext_login=imap.allow_plaintext_login,
            learn=spam_learner(self.settings),
        )
        roles = (("imap", imap.listen, False), ("imaps", imap.tls_listen, True))
        listeners = [
            ImapListener(
                name,
                addresses,
                endpoint.session,
                tls,
                implicit_tls=implicit,
                max_connections=imap.max_connections,
                max_connections_per_ip=imap.max_connections_per_ip,
                sockets=self.sockets.get(name, ()),
            )
            for name, addresses, implicit in roles
            if addresses
        ]
        return endpoint, listeners

    async def serve(self, on_ready: Callable[[list[Listening]], None] | None = None) -> None:
        """Serve until SIGTERM/SIGINT (or `stop()`, callable from any thread), then drain and return."""
        settings = self.settings
        tls = self.tls_context()
        mx_tls = self.mx_tls_context()
        srs = self.srs()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def request_stop() -> None:
            loop.call_soon_threadsafe(stop.set)

        self.stop = request_stop
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread
                loop.add_signal_handler(signum, stop.set)
        leftovers = await asyncio.to_thread(self.blobs.remove_leftovers)
        if leftovers:
            log.warning(
                "removed %d temporary file(s) of unfinished blob writes from %s",
                leftovers,
                self.blobs.location,
            )
        committer = GroupCommitter(self.database, batch_max=settings.queue.commit_batch_max)
        committer.start()
        cache = CachedDirectory(
            self.database
        )  # the directory as mail flow reads it: MX, submission, delivery
        agent = self.remote_agent
        if agent is None:
            agent = remote_delivery(settings, self.resolver, self.blobs, self.directory, cache)
        scheduler = build_scheduler(
            settings,
            self.database,
            self.directory,
            self.blobs,
            committer,
            agent,
            srs=srs,
            tokens=self.lease_tokens,
        )
        endpoint = MxEndpoint(
            hostname=settings.service.hostname,
            directory=cache,
            database=self.database,
            blobs=self.blobs,
            committer=committer,
            on_queued=partial(self._queued, scheduler.wake),
            max_expanded_recipients=settings.routing.max_expanded_recipients,
            max_receive_size=settings.routing.max_receive_size,
            refusal_limits=RefusalLimits(
                settings.trace.refusals_per_session,
                settings.trace.refusals_per_client,
                settings.trace.refusal_window,
            ),
            service_postmaster=self.service_postmaster(),
            srs=srs,
            max_hops=settings.routing.max_hops,
            connection_filter=self.connection_filter(),
            protection=build_protection(settings, self.resolver),
            resolver=self.resolver,
            local_endpoints=local_endpoints(settings),
            smtp_port=settings.delivery.smtp_port,
        )
        memory = MemoryBudget(settings.memory_budget)
        mx = SmtpListener(
            name="mx",
            addresses=settings.mx.listen,
            limits=settings.mx.limits,
            hostname=settings.service.hostname,
            factory=endpoint.session,
            ssl_context=tls,
            spool_dir=settings.spool_dir,
            memory=memory,
            sockets=self.sockets.get("mx", ()),
            proxies=_trusted_proxies(settings.mx),
            client_certificates=ClientCertificates(mx_tls) if mx_tls is not None else None,
        )
        smtp_listeners = [mx, *self._submission_listeners(endpoint, tls, memory)]
        imap, imap_listeners = self._imap(committer, tls)
        monitor = NodeMonitor(self.database, committer)
        # The policy lookup reads the directory (the database); the admin app runs it in a worker thread.
        admin = AdminListener(
            build_admin_app(
                partial(mta_sts_policy_text, self.directory, settings),
                monitor,
                settings.admin.metrics_allow,
                directory=self.directory,
                client_setup=ClientSetup(
                    ClientServers.from_settings(settings.service, settings.clients),
                    partial(serves_mail_clients, self.directory),
                ),
            ),
            settings.admin.listen,
            ssl_context=tls if settings.admin.tls else None,
            limits=settings.admin.limits,
            sockets=self.sockets.get("admin", ()),
        )
        self.notifications.subscribe(QUEUE, scheduler.wake)
        self.notifications.subscribe(DIRECTORY, endpoint.directory_changed)
        registry = NodeRegistry(
            id=self.lease_tokens.owner,
            node=settings.node_name,
            worker=self.worker,
            host=socket.gethostname(),
            pid=os.getpid(),
            version=__version__,
            heartbeat_seconds=settings.heartbeat_seconds,
        )
        scheduler_task = asyncio.create_task(scheduler.run(), name="postroom-scheduler")
        background = [
            asyncio.create_task(endpoint.keep_directory_fresh(), name="postroom-directory-refresh"),
            asyncio.create_task(endpoint.keep_refusals_flushed(), name="postroom-refusals"),
            asyncio.create_task(self._keep_trace_purged(committer), name="postroom-trace-purge"),
            asyncio.create_task(self._keep_quarantine_purged(committer), name="postroom-quarantine-purge"),
            asyncio.create_task(self.notifications.listen(), name="postroom-notifications"),
        ]
        registered = False
        try:
            # The admin listener first: it logs nothing at info, so when the MX endpoint's address is in
            # use the one line of the error is all the operator sees.
            await listen("admin", admin.start(), settings)
            listeners: list[SmtpListener | ImapListener] = [*smtp_listeners, *imap_listeners]
            started: list[SmtpListener | ImapListener] = []
            try:
                for listener in listeners:
                    table = (
                        "imap" if isinstance(listener, ImapListener) else listener.name
                    )  # its config table
                    await listen(table, listener.start(), settings)
                    started.append(listener)
            except BaseException:
                await asyncio.gather(*(listener.stop(0) for listener in started), admin.stop(0))
                raise
            listening = [
                Listening(listener.name, str(address), "SMTPS" if listener.implicit_tls else "SMTP")
                for listener in smtp_listeners
                for address in listener.bound
            ]
            listening += [
                Listening(listener.name, str(address), "IMAPS" if listener.implicit_tls else "IMAP")
                for listener in imap_listeners
                for address in listener.bound
            ]
            listening += [Listening("admin", str(address), admin.protocol) for address in admin.bound]
            registered = True
            try:
                await committer.run(
                    partial(registry.register, listeners=[asdict(item) for item in listening])
                )
            except Exception as error:  # still serving; the next heartbeat writes the row
                log.warning("could not register in the node registry (retrying at the heartbeat): %s", error)
            load = partial(_load, smtp_listeners, imap_listeners, memory, scheduler)
            background.append(
                asyncio.create_task(registry.keep_beating(committer, load), name="postroom-heartbeat")
            )
            if on_ready is not None:
                on_ready(listening)
            await stop.wait()
            monitor.draining = True  # /readyz says 503 from now on; the admin listener stops last
            log.info("stopping: draining transactions in flight")
            await asyncio.gather(*(listener.stop(settings.drain_seconds) for listener in listeners))
            await imap.close()
            await admin.stop(settings.drain_seconds)
        finally:
            for task in background:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            scheduler.stop()
            await scheduler_task
            if isinstance(agent, RemoteDelivery):
                await agent.close()  # its idle connections (the connection cache)
            try:
                await endpoint.flush_refusals(everything=True)
            except Exception:
                log.exception("could not write the aggregated refusals at stop")
            if registered:
                with contextlib.suppress(Exception):  # a row left serving is shown gone soon enough
                    await committer.run(registry.stopped)
            await asyncio.to_thread(committer.stop)
            endpoint.close()
            for counts in self._counts:
                counts.close()
            self._counts.clear()
            for signum in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.remove_signal_handler(signum)


def _trusted_proxies(listener: ListenerSettings | SubmissionSettings) -> TrustedProxies | None:
    """The balancers a listener takes PROXY headers from, or None when it takes none (the default)."""
    if not listener.proxy_protocol:
        return None
    return TrustedProxies.of(listener.trusted_proxies, listener.proxy_header_timeout)


def _load(
    listeners: list[SmtpListener], imap: list[ImapListener], memory: MemoryBudget, scheduler: Scheduler
) -> dict[str, int]:
    """What this process's heartbeat reports as its load."""
    return {
        "connections": sum(listener.connection_count for listener in listeners)
        + sum(listener.connection_count for listener in imap),
        "memory_in_use": memory.held,
        "deliveries_in_flight": scheduler.in_flight,
    }
