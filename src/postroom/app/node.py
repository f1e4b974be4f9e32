"""The composition root: builds a node from its settings, serves, and stops cleanly.

`App.open(settings)` opens the database (migrating it), the blob store and the services; the CLI
uses it as is. `App.serve()` starts the group committer, the scheduler and every listener (the MX
endpoint, and the admin HTTP listener that serves the hosted domains' MTA-STS policies), prints
where it listens, and runs until SIGTERM or SIGINT; then it drains: listeners stop accepting,
transactions and HTTP requests in flight finish (bounded by `DRAIN_SECONDS`), the scheduler
finishes its round and the writer commits what it was given. Nothing acknowledged is left
uncommitted. With `[admin] tls = true` and no certificate at `[tls]` the node refuses to start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import uvloop

from postroom.admin import AdminListener, build_admin_app
from postroom.app.domain_dns import mta_sts_policy_text
from postroom.app.mx import MxEndpoint
from postroom.config import Settings
from postroom.delivery import LocalDeliveryAgent
from postroom.directory import CachedDirectory, Directory, PasswordPolicy
from postroom.dns import DnsResolver
from postroom.mailstore import Mailstore
from postroom.queue import QueueSummary, Scheduler, queue_summary
from postroom.smtp import SmtpListener
from postroom.storage import BlobStore, Database, GroupCommitter
from postroom.trace import TraceService

DRAIN_SECONDS = 30.0

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
        self.blobs = BlobStore(settings.blob_dir)
        service = settings.service
        self.directory = Directory(
            database,
            service_domain=service.domain,
            service_hosts=(service.hostname, service.mx_host_suffix, service.spf_include),
            password_policy=PasswordPolicy(
                min_length=settings.passwords.min_length, max_length=settings.passwords.max_length
            ),
        )
        self.mailstore = Mailstore(database, self.blobs)
        self.trace = TraceService(database)
        self._resolver: DnsResolver | None = None
        self.stop: Callable[[], None] = lambda: None  # set by serve(): asks the node to drain and stop

    @classmethod
    def open(cls, settings: Settings) -> App:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        settings.blob_dir.mkdir(parents=True, exist_ok=True)
        database = Database(settings.database_url)
        database.migrate()
        return cls(settings, database)

    @property
    def resolver(self) -> DnsResolver:
        if self._resolver is None:
            self._resolver = DnsResolver(self.settings.dns)
        return self._resolver

    def queue_summary(self) -> QueueSummary:
        with self.database.read() as conn:
            return queue_summary(conn)

    def close(self) -> None:
        self.database.dispose()

    def tls_context(self) -> ssl.SSLContext | None:
        tls = self.settings.tls
        if not (tls.certificate.exists() and tls.key.exists()):
            log.warning("no TLS certificate at %s: STARTTLS is not offered", tls.certificate)
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(tls.certificate, tls.key)
        return context

    def run(self, on_ready: Callable[[list[Listening]], None] | None = None) -> None:
        """Serve on a uvloop event loop (libuv: less overhead per socket event) until stopped."""
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(self.serve(on_ready))

    async def serve(self, on_ready: Callable[[list[Listening]], None] | None = None) -> None:
        """Serve until SIGTERM/SIGINT (or `stop()`, callable from any thread), then drain and return."""
        settings = self.settings
        tls = self.tls_context()
        if settings.admin_tls and tls is None:
            raise RuntimeError(
                f"[admin] tls = true but there is no certificate and key at {settings.tls.certificate} and "
                f"{settings.tls.key}: set [tls] certificate and key, or [admin] tls = false behind a proxy"
            )
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def request_stop() -> None:
            loop.call_soon_threadsafe(stop.set)

        self.stop = request_stop
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread
                loop.add_signal_handler(signum, stop.set)
        committer = GroupCommitter(self.database, batch_max=settings.queue.commit_batch_max)
        committer.start()
        scheduler = Scheduler(committer, [LocalDeliveryAgent(batch_max=settings.queue.delivery_batch_max)])
        endpoint = MxEndpoint(
            hostname=settings.service.hostname,
            directory=CachedDirectory(self.database),
            blobs=self.blobs,
            committer=committer,
            on_queued=scheduler.wake,
        )
        mx = SmtpListener(
            name="mx",
            addresses=settings.mx.listen,
            limits=settings.mx.limits,
            hostname=settings.service.hostname,
            factory=endpoint.session,
            ssl_context=tls,
        )
        # The policy lookup reads the directory (the database); the admin app runs it in a worker thread.
        admin = AdminListener(
            build_admin_app(partial(mta_sts_policy_text, self.directory, settings)),
            settings.admin_listen,
            ssl_context=tls if settings.admin_tls else None,
        )
        scheduler_task = asyncio.create_task(scheduler.run(), name="postroom-scheduler")
        refresh_task = asyncio.create_task(endpoint.keep_directory_fresh(), name="postroom-directory-refresh")
        try:
            await mx.start()
            try:
                await admin.start()
            except BaseException:
                await mx.stop(0)
                raise
            listening = [Listening("mx", str(address), "SMTP") for address in mx.bound]
            listening += [Listening("admin", str(address), admin.protocol) for address in admin.bound]
            if on_ready is not None:
                on_ready(listening)
            await stop.wait()
            log.info("stopping: draining transactions in flight")
            await asyncio.gather(mx.stop(DRAIN_SECONDS), admin.stop(DRAIN_SECONDS))
        finally:
            refresh_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresh_task
            scheduler.stop()
            await scheduler_task
            await asyncio.to_thread(committer.stop)
            endpoint.close()
            for signum in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.remove_signal_handler(signum)
