"""The composition root: builds a node from its settings, serves, and stops cleanly.

`App.open(settings)` opens the database (migrating it), the blob store and the services; the CLI
uses it as is. `App.serve()` removes the temporary files of blob writes that never finished (not in
`open`: a CLI command may run beside a serving node), starts the group committer, the scheduler and
every listener (the MX endpoint, and the admin HTTP listener that serves the hosted domains' MTA-STS
policies), prints where it listens, and runs until SIGTERM or SIGINT; then it drains: listeners stop
accepting, transactions and HTTP requests in flight finish (bounded by `[node] drain_seconds`; a
session still in a transaction then is cut with 421 4.3.2), the scheduler finishes its round, the
refusal aggregates are written and the writer commits what it was given. Nothing acknowledged is
left uncommitted.

Local recipients are delivered inside the spool commit (`delivery.deliver_at_commit`), so the
scheduler has no round for them; what the queue keeps is remote mail, and the scheduler runs the
remote delivery round when outbound sending arrives (until then it has no rounds and remote mail
waits in the queue). While serving, the node also purges trace older than `[trace] retention_days`
every `purge_interval`, one `purge_batch` per writer job, so it never holds the writer long.

Failure at start is one `StartupError` whose message is one line naming the problem and the key to
change: a data directory that does not exist (`postroom init` makes one; `open` never does), a
database that cannot be opened or reached, a full disk, a `[tls]` certificate or key that is missing,
unreadable or not a pair, a listen address already in use. `check(settings)` runs the same checks
without serving (the database briefly), for `postroom check-config`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import sqlalchemy
import sqlalchemy.exc
import uvloop

from postroom.admin import AdminListener, build_admin_app
from postroom.app.domain_dns import mta_sts_policy_text
from postroom.app.mx import MxEndpoint
from postroom.config import Settings
from postroom.directory import CachedDirectory, Directory, PasswordPolicy
from postroom.dns import DnsResolver
from postroom.mailstore import Mailstore
from postroom.model import Address
from postroom.queue import DeliveryRound, QueueSummary, Scheduler, queue_summary
from postroom.routing import ServicePostmaster
from postroom.smtp import MemoryBudget, SmtpListener
from postroom.storage import BlobStore, Database, GroupCommitter
from postroom.trace import TraceService, purge
from postroom.trace.refusals import RefusalLimits

DAY = 86_400.0
# The scheduler's delivery rounds: none until outbound sending (remote delivery) arrives.
DELIVERY_ROUNDS: tuple[DeliveryRound, ...] = ()

DATABASE_PROBE_SECONDS = 5  # `check` gives a database server this long to answer

log = logging.getLogger(__name__)


class StartupError(Exception):
    """The node cannot open or start; the message is one line: what is wrong and which key to change."""


FULL_BELOW = 64 * 1024  # free bytes under which a failure to open the store is put down to a full disk


def _space_left(directory: Path) -> int:
    try:
        stats = os.statvfs(directory)
    except OSError:
        return FULL_BELOW  # cannot tell: not called full
    return stats.f_bavail * stats.f_frsize


def _full(error: BaseException, settings: Settings) -> StartupError | None:
    """A StartupError for a full disk, else None: ENOSPC, or any failure to open the store while the data
    directory's file system has (next to) no space left (SQLite reports that as a "disk I/O error")."""
    if (
        (isinstance(error, OSError) and error.errno == errno.ENOSPC)
        or "disk is full" in str(error)
        or _space_left(settings.data_dir) < FULL_BELOW
    ):
        return StartupError(
            f"the data directory {settings.data_dir} is full (no space left on the device): "
            f"free space there, or move [node] data_dir in {settings.source}"
        )
    return None


def _database_error(error: sqlalchemy.exc.SQLAlchemyError, settings: Settings) -> StartupError:
    full = _full(error, settings)
    if full is not None:
        return full
    reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
    shown = sqlalchemy.make_url(settings.database_url).render_as_string(hide_password=True)
    return StartupError(
        f"cannot open the database {shown}: {reason}; check that it is reachable, "
        f"or fix [database] url in {settings.source}"
    )


def _unusable_url(error: BaseException, settings: Settings) -> StartupError:
    return StartupError(
        f"[database] url: {error}; use postgresql+psycopg://... (with the `postgres` extra installed) "
        f"or leave it empty for SQLite, in {settings.source}"
    )


def _check_data_dir(settings: Settings) -> None:
    if not settings.data_dir.is_dir():
        raise StartupError(
            f"the data directory {settings.data_dir} does not exist: set [node] data_dir in "
            f"{settings.source} to the node's directory, or create a node with `postroom init DIR`"
        )


def _tls_context(settings: Settings) -> ssl.SSLContext:
    """The server TLS context of `[tls]`; StartupError when a file is missing, unreadable or not a pair."""
    tls = settings.tls
    for key, path in (("certificate", tls.certificate), ("key", tls.key)):
        if not path.is_file():
            raise StartupError(
                f"[tls] {key}: there is no file {path}; point [tls] {key} in {settings.source} at it"
            )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(tls.certificate, tls.key)
    except (ssl.SSLError, OSError) as error:
        reason = getattr(error, "reason", None) or getattr(error, "strerror", None) or str(error)
        raise StartupError(
            f"[tls] certificate {tls.certificate} and key {tls.key} cannot be used: {reason} (a PEM "
            f"certificate chain and its own private key are needed); fix [tls] in {settings.source}"
        ) from None
    return context


def check(settings: Settings) -> None:
    """Check what `App.open` and `serve` need, without serving: raises StartupError naming the first
    problem. The data directory exists; the TLS files load as a pair; a PostgreSQL database answers
    within `DATABASE_PROBE_SECONDS` (a SQLite file is not opened: a check creates nothing)."""
    _check_data_dir(settings)
    _tls_context(settings)
    if settings.database.url.startswith("postgresql"):
        try:
            engine = sqlalchemy.create_engine(
                settings.database.url,
                poolclass=sqlalchemy.NullPool,
                connect_args={"connect_timeout": DATABASE_PROBE_SECONDS},
            )
        except (sqlalchemy.exc.SQLAlchemyError, ImportError) as error:
            raise _unusable_url(error, settings) from None
        try:
            with engine.connect():
                pass
        except sqlalchemy.exc.SQLAlchemyError as error:
            raise _database_error(error, settings) from None
        finally:
            engine.dispose()


async def _listen(table: str, starting: Awaitable[object], settings: Settings) -> None:
    """Await a listener's start; a bind failure (the port in use) becomes a StartupError naming the key."""
    try:
        await starting
    except OSError as error:
        full = str(error).removeprefix(f"[Errno {error.errno}] ")
        raise StartupError(
            f"[{table}] listen: cannot listen: {full}; change [{table}] listen in {settings.source} "
            "or stop what holds the port"
        ) from None


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
        """Open the node at `settings.data_dir` (which must exist); StartupError says what stops it."""
        _check_data_dir(settings)
        try:
            settings.blob_dir.mkdir(exist_ok=True)
        except OSError as error:
            raise _full(error, settings) or StartupError(
                f"cannot create the blob store {settings.blob_dir}: {error.strerror}; "
                f"fix [node] data_dir in {settings.source}"
            ) from None
        try:
            database = Database(settings.database_url)
        except (sqlalchemy.exc.SQLAlchemyError, ImportError) as error:
            raise _unusable_url(error, settings) from None
        try:
            database.migrate()
        except sqlalchemy.exc.SQLAlchemyError as error:
            database.dispose()
            raise _database_error(error, settings) from None
        return cls(settings, database)

    @property
    def resolver(self) -> DnsResolver:
        if self._resolver is None:
            self._resolver = DnsResolver(self.settings.dns)
        return self._resolver

    def service_postmaster(self) -> ServicePostmaster:
        """Where RCPT TO:<postmaster> goes: `[service] postmaster`, else postmaster@<service domain>."""
        service = self.settings.service
        return ServicePostmaster(
            frozenset({service.hostname.lower(), service.domain.lower()}),
            Address.parse(service.postmaster_address),
        )

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

    def queue_summary(self) -> QueueSummary:
        with self.database.read() as conn:
            return queue_summary(conn)

    def close(self) -> None:
        self.database.dispose()

    def tls_context(self) -> ssl.SSLContext:
        return _tls_context(self.settings)

    def run(self, on_ready: Callable[[list[Listening]], None] | None = None) -> None:
        """Serve on a uvloop event loop (libuv: less overhead per socket event) until stopped."""
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(self.serve(on_ready))

    async def serve(self, on_ready: Callable[[list[Listening]], None] | None = None) -> None:
        """Serve until SIGTERM/SIGINT (or `stop()`, callable from any thread), then drain and return."""
        settings = self.settings
        tls = self.tls_context()
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
                "removed %d temporary file(s) of unfinished blob writes from %s", leftovers, self.blobs.root
            )
        committer = GroupCommitter(self.database, batch_max=settings.queue.commit_batch_max)
        committer.start()
        scheduler = Scheduler(committer, DELIVERY_ROUNDS)
        endpoint = MxEndpoint(
            hostname=settings.service.hostname,
            directory=CachedDirectory(self.database),
            blobs=self.blobs,
            committer=committer,
            on_queued=scheduler.wake,
            max_expanded_recipients=settings.routing.max_expanded_recipients,
            refusal_limits=RefusalLimits(
                settings.trace.refusals_per_session,
                settings.trace.refusals_per_client,
                settings.trace.refusal_window,
            ),
            service_postmaster=self.service_postmaster(),
        )
        mx = SmtpListener(
            name="mx",
            addresses=settings.mx.listen,
            limits=settings.mx.limits,
            hostname=settings.service.hostname,
            factory=endpoint.session,
            ssl_context=tls,
            spool_dir=settings.spool_dir,
            memory=MemoryBudget(settings.memory_budget),
        )
        # The policy lookup reads the directory (the database); the admin app runs it in a worker thread.
        admin = AdminListener(
            build_admin_app(partial(mta_sts_policy_text, self.directory, settings)),
            settings.admin.listen,
            ssl_context=tls if settings.admin.tls else None,
            limits=settings.admin.limits,
        )
        scheduler_task = asyncio.create_task(scheduler.run(), name="postroom-scheduler")
        background = [
            asyncio.create_task(endpoint.keep_directory_fresh(), name="postroom-directory-refresh"),
            asyncio.create_task(endpoint.keep_refusals_flushed(), name="postroom-refusals"),
            asyncio.create_task(self._keep_trace_purged(committer), name="postroom-trace-purge"),
        ]
        try:
            # The admin listener first: it logs nothing at info, so when the MX endpoint's address is in
            # use the one line of the error is all the operator sees.
            await _listen("admin", admin.start(), settings)
            try:
                await _listen("mx", mx.start(), settings)
            except BaseException:
                await admin.stop(0)
                raise
            listening = [Listening("mx", str(address), "SMTP") for address in mx.bound]
            listening += [Listening("admin", str(address), admin.protocol) for address in admin.bound]
            if on_ready is not None:
                on_ready(listening)
            await stop.wait()
            log.info("stopping: draining transactions in flight")
            await asyncio.gather(mx.stop(settings.drain_seconds), admin.stop(settings.drain_seconds))
        finally:
            for task in background:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            scheduler.stop()
            await scheduler_task
            try:
                await endpoint.flush_refusals(everything=True)
            except Exception:
                log.exception("could not write the aggregated refusals at stop")
            await asyncio.to_thread(committer.stop)
            endpoint.close()
            for signum in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.remove_signal_handler(signum)
