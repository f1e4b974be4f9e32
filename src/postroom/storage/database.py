"""The database: engines, migration, and the group-commit writer.

`migrate()` creates a fresh database at `SCHEMA_VERSION` or runs the upgrade steps of
`storage.migrations` on an older one, one transaction per step; on PostgreSQL it then makes sure of
the PostgreSQL-only indexes of trace search (`migrations.create_suffix_indexes`).

`Database` opens SQLite (the embedded default: WAL journal, `synchronous=FULL`, so a commit is on
disk when it returns) or PostgreSQL from one URL. It offers:

- `read()` / `write()`: synchronous connections for the CLI and for work already off the event loop.
  A write transaction on SQLite starts with `BEGIN IMMEDIATE` so two writers never deadlock on a
  lock upgrade.
- `GroupCommitter`: the single writer of a serving node. Sessions submit jobs (functions of a
  connection); one thread runs every job waiting and commits them all in one durable transaction.
  A job's future resolves only after that commit returned, which is what lets the SMTP session say
  250. Jobs are functions of the connection with no other effects, so a
  batch in which one job raises is rolled back and replayed job by job: that job's future carries
  its exception and every other job still commits. (No savepoint per job: in the common case a
  batch is one BEGIN and one COMMIT.) Each batch is observed in `postroom_commit_batch_jobs` and
  `postroom_commit_seconds` (`postroom.metrics`).

SQLite shared by several processes (the workers of `postroom serve --workers N`): each process has
its own `GroupCommitter`, and the writers take turns through an exclusive `flock` on a lock file next
to the database (`<database>-writer.lock`), held from `BEGIN IMMEDIATE` to `COMMIT`, by the group
committer and by `write()`. A writer that waits for the lock sleeps in the kernel and wakes the moment
the holder unlocks, and the group committer gathers its batch only once it has its turn, so the jobs
that arrived while it waited go into that commit.
Without it SQLite's busy handler would poll the database lock with sleeps of 1, 2, 5, 10 ... 100 ms,
which leaves the database idle between turns and lets one writer starve another (figures in
bench/sqlite_commit.py). The busy timeout stays as the backstop for a writer that does not take the
lock (another program, an older Postroom). The lock is advisory and per open file: a process that dies
holding it releases it. An in-memory database has no lock file.

On PostgreSQL every connection runs with `synchronous_commit = on` whatever the server's default
(a commit returns once its WAL is flushed on the primary), and writes run SERIALIZABLE (see
`Database`); a job that fails with a serialization
failure or deadlock is run again (5 attempts in all).

Announcements after commit: a write that others should hear of (a mailbox changed: IMAP sessions
on every process wake) calls `announce_after_commit(conn, topic)` inside its transaction; once that
transaction is durable, the group committer and `write()` hand each topic to `Database.announce`
(the app sets it to its notification channel's `publish`), and a rolled-back transaction's topics
are dropped. Announcing before the commit would let a listener look too early and miss the change.

Failure: a commit that fails fails every job of its batch (none was acknowledged). A waiter that
gives up never stops the writer; a writer that dies is logged at CRITICAL and every `run()` then fails
at once with `WriterStoppedError` (see `GroupCommitter`). `migrate()` refuses a database whose schema
is newer than this code.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager, nullcontext
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, insert, inspect, make_url, select

from postroom import metrics
from postroom.storage import migrations
from postroom.storage.schema import SCHEMA_VERSION, directory_generation, metadata, schema_version

T = TypeVar("T")
Job = Callable[[Connection], T]

_ANNOUNCE = "postroom.announce"  # Connection.info key: the topics to announce after the commit


def announce_after_commit(conn: Connection, topic: str) -> None:
    """Announce `topic` (`Database.announce`) once the transaction of `conn` is durable; never if it
    rolls back."""
    conn.info.setdefault(_ANNOUNCE, set()).add(topic)


def _take_announcements(conn: Connection) -> set[str]:
    topics: set[str] = conn.info.pop(_ANNOUNCE, set())
    return topics


log = logging.getLogger(__name__)


class SchemaTooNewError(RuntimeError):
    """The database was written by a newer Postroom; this one will not touch it."""


def _sqlite_engine(url: str, *, immediate: bool) -> Engine:
    engine = create_engine(url)  # pooled: the writer keeps its connection, PRAGMAs run once

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _postgresql_engine(url: str) -> Engine:
    engine = create_engine(url, pool_size=10, max_overflow=10)

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # A commit returns only once it is on disk (WAL flushed), whatever the server's or the
        # database's default: with `off` a crash loses commits we already answered 250 for.
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET synchronous_commit = on")
        dbapi_connection.commit()

    return engine


class WriterLock:
    """The turn of one writer among the processes that share a SQLite file: an exclusive `flock` on
    `<database>-writer.lock`, on this object's own open file (a lock per open file, so two of them in
    one process exclude each other as two processes do)."""

    def __init__(self, path: str) -> None:
        self._descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    @contextmanager
    def turn(self) -> Iterator[None]:
        fcntl.flock(self._descriptor, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._descriptor, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self._descriptor)


def _writer_lock_path(url: str) -> str | None:
    """Where a SQLite file database's writers take turns; None for memory or PostgreSQL."""
    if not url.startswith("sqlite"):
        return None
    path = make_url(url).database
    if not path or path == ":memory:" or path.startswith("file:"):
        return None
    return f"{path}-writer.lock"


class Database:
    """One database: a read engine, a write engine, and the schema migration."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self.writer_lock_path = _writer_lock_path(url)
        if self.is_sqlite:
            self.read_engine = _sqlite_engine(url, immediate=False)
            self.write_engine = _sqlite_engine(url, immediate=True)
        else:
            # PostgreSQL (scale-out): several processes write at once. The code was written against
            # SQLite's single serialized writer (BEGIN IMMEDIATE) and its jobs read then write (a
            # folder's uidnext, the directory's uniqueness and primary-address rules), so writes run
            # SERIALIZABLE: an interleaving with another node that is not equivalent to some serial
            # order aborts with a serialization failure (SQLSTATE 40001) instead of losing an
            # update; the GroupCommitter replays such a job. Never AUTOCOMMIT: a batch must be one
            # all-or-nothing transaction, or its replay after a failed job would commit jobs twice.
            # Reads stay READ COMMITTED: they take no predicate locks and never abort a writer.
            self.read_engine = _postgresql_engine(url)
            self.write_engine = self.read_engine.execution_options(isolation_level="SERIALIZABLE")
        # Where committed transactions' topics go (`announce_after_commit`); the app sets its
        # notification channel's `publish`. Called on the committing thread; must not block.
        self.announce: Callable[[str], None] = lambda topic: None

    def migrate(self) -> int:
        """Create or upgrade the schema (see `migrations`); returns the version now in force."""
        with self.write() as conn:
            fresh = not inspect(conn).has_table(schema_version.name)
            found = 0 if fresh else _schema_version(conn)
            if found > SCHEMA_VERSION:
                raise SchemaTooNewError(
                    f"the database is at schema version {found}, newer than this Postroom "
                    f"({SCHEMA_VERSION}); upgrade Postroom"
                )
            if fresh:
                metadata.create_all(conn)
                conn.execute(insert(schema_version).values(version=SCHEMA_VERSION, applied_at=time.time()))
                conn.execute(insert(directory_generation).values(id=1, generation=0))
                log.info("created the database schema at version %d", SCHEMA_VERSION)
        if fresh:
            self._ensure_suffix_indexes()
            return SCHEMA_VERSION
        steps = migrations.steps_from(found)
        for version, step in steps:
            started = time.monotonic()
            log.info("upgrading the database schema to version %d: %s", version, (step.__doc__ or "").strip())
            with self._upgrade_transaction() as conn:
                if _schema_version(conn) >= version:
                    continue  # another node ran it meanwhile
                step(migrations.Ops(conn, version))
                conn.execute(insert(schema_version).values(version=version, applied_at=time.time()))
            log.info("schema version %d in force (%.1f s)", version, time.monotonic() - started)
        self._ensure_suffix_indexes()
        return SCHEMA_VERSION

    def _ensure_suffix_indexes(self) -> None:
        """PostgreSQL: trace search's suffix indexes, at every start (see `migrations.SUFFIX_INDEXES`)."""
        if not self.is_sqlite:
            with self.write() as conn:
                migrations.create_suffix_indexes(conn)

    @contextmanager
    def _upgrade_transaction(self) -> Iterator[Connection]:
        """The transaction of one upgrade step. On SQLite foreign keys are off around it (a pragma that
        cannot change inside a transaction): a step that copies a table drops the old one, which with
        them on would delete every row pointing at it. Before the step commits, `foreign_key_check`
        must find no row pointing at nothing."""
        if not self.is_sqlite:
            with self.write() as conn:
                yield conn
            return
        with self.writer_turn(), self.write_engine.connect() as conn:
            driver = conn.connection.driver_connection
            assert driver is not None
            driver.execute("PRAGMA foreign_keys=OFF")
            try:
                with conn.begin():
                    yield conn
                    dangling = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
                    if dangling:
                        raise migrations.MigrationError(
                            f"the upgrade left rows that point at nothing: {dangling[:5]}"
                        )
            finally:
                driver.execute("PRAGMA foreign_keys=ON")

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.read_engine.connect() as conn:
            yield conn

    def writer_lock(self) -> WriterLock | None:
        """A new handle on the writers' lock file (SQLite file databases), None where there is none."""
        return WriterLock(self.writer_lock_path) if self.writer_lock_path is not None else None

    @contextmanager
    def writer_turn(self) -> Iterator[None]:
        """Hold the writers' lock (see `WriterLock`) on a handle of its own, for one transaction."""
        lock = self.writer_lock()
        if lock is None:
            yield
            return
        try:
            with lock.turn():
                yield
        finally:
            lock.close()

    @contextmanager
    def write(self) -> Iterator[Connection]:
        with self.writer_turn(), self.write_engine.connect() as conn:
            try:
                with conn.begin():
                    yield conn
            except BaseException:
                _take_announcements(conn)
                raise
            self.announce_committed(conn)

    def announce_committed(self, conn: Connection) -> None:
        """Hand the topics of the transaction `conn` just committed to `announce`."""
        for topic in sorted(_take_announcements(conn)):
            try:
                self.announce(topic)
            except Exception:  # an announcement is a hint: it never fails a commit
                log.exception("announcing %s failed", topic)

    def dispose(self) -> None:
        self.read_engine.dispose()
        if self.write_engine is not self.read_engine:
            self.write_engine.dispose()


def _schema_version(conn: Connection) -> int:
    found = conn.execute(select(schema_version.c.version)).scalars().all()
    return max(found, default=0)


_TRANSIENT_ATTEMPTS = 5
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected


def _is_transient(error: BaseException) -> bool:
    """A PostgreSQL error that a rerun of the same transaction can succeed past.

    SQLAlchemy wraps the driver's error (`.orig`); PreparedInsert/PreparedStatement run on the DBAPI
    cursor and raise psycopg's own, which carries `sqlstate` itself."""
    driver_error = getattr(error, "orig", None) or error
    return getattr(driver_error, "sqlstate", None) in _TRANSIENT_SQLSTATES


class WriterStoppedError(RuntimeError):
    """The writer is gone (stopped, or died): nothing more can be committed by this committer."""


class _Pending:
    __slots__ = ("future", "job")

    def __init__(self, job: Job[Any], future: Future[Any]) -> None:
        self.job = job
        self.future = future


class GroupCommitter:
    """The single writer: batches the jobs of every waiting session into one durable commit.

    The writer survives anything a waiter does. A waiter that gives up (its task was cancelled, e.g.
    a session cut at the end of the drain grace) before its job was taken into a batch has its job
    dropped; once taken, the job runs and commits, and its answer goes nowhere. A job that raises
    answers its own waiter with the exception. If the writer thread itself ever ends on an error
    (anything escaping, e.g. the database refusing its connection), it says so at CRITICAL, every
    waiting job and every later `run()` fails at once with `WriterStoppedError`, and `alive` turns
    False so the node can refuse mail rather than hang.
    """

    def __init__(self, database: Database, *, batch_max: int = 256) -> None:
        self._database = database
        self._batch_max = batch_max
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="postroom-writer", daemon=True)
        self._gate = threading.Lock()  # orders run()'s check-then-enqueue against the writer's end
        self._ended: BaseException | None = None  # why the writer ended: its error, or WriterStoppedError
        self._batch: list[_Pending] = []  # the batch being committed, answered if the writer dies in it
        self._lock: WriterLock | None = None  # the writer's turn among processes sharing a SQLite file
        self.commits = 0  # durable writes made, for the benchmark and the admin center
        self.jobs = 0

    @property
    def alive(self) -> bool:
        """False once the writer died or was stopped: `run()` fails at once."""
        return self._ended is None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Finish every job already submitted, then stop the thread; later `run()` calls fail at once."""
        with self._gate:
            if self._ended is None:
                self._ended = WriterStoppedError("the writer was stopped")
            self._queue.put(None)
        self._thread.join()

    async def run(self, job: Job[T]) -> T:
        """Run `job` in the next batch; returns its result once the batch is durably committed.

        Raises the job's own exception if it failed, `WriterStoppedError` if the writer is gone."""
        future: Future[T] = Future()
        with self._gate:
            if self._ended is not None:
                raise WriterStoppedError(f"nothing can be committed: {self._ended}") from self._ended
            self._queue.put(_Pending(job, future))
        return await asyncio.wrap_future(future)

    def _run(self) -> None:
        try:
            # The writer's own connection and lock handle, held for its lifetime: no pool checkout
            # and no open() per batch.
            self._lock = self._database.writer_lock()
            try:
                with self._database.write_engine.connect() as conn:
                    self._drain(conn)
            finally:
                if self._lock is not None:
                    self._lock.close()
        except BaseException as error:
            log.critical("the writer died: nothing can be committed until the node restarts", exc_info=error)
            with self._gate:
                self._ended = error
            stopped = WriterStoppedError(f"the writer died: {error!r}")
            for pending in self._batch:
                _answer(pending.future, error=stopped)
            self._batch = []
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None and item.future.set_running_or_notify_cancel():
                    _answer(item.future, error=stopped)

    def _drain(self, conn: Connection) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            # The batch is gathered once this writer has its turn: what arrived while it waited for
            # another process's commit goes into this one.
            with self._lock.turn() if self._lock is not None else nullcontext():
                batch = [first]
                while len(batch) < self._batch_max:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        stopping = True
                        break
                    batch.append(item)
                # A waiter that already gave up has its job dropped; from here on a waiter cannot cancel.
                self._batch = [pending for pending in batch if pending.future.set_running_or_notify_cancel()]
                if self._batch:
                    started = time.perf_counter()
                    self._commit(conn, self._batch)
                    metrics.COMMIT_SECONDS.observe(time.perf_counter() - started)
                    metrics.COMMIT_BATCH_SIZE.observe(len(self._batch))
                self._batch = []

    def _commit(self, conn: Connection, batch: list[_Pending], attempt: int = 1) -> None:
        """Run the batch in one transaction; if a job raises, replay each job in its own."""
        results: list[Any] = []
        try:
            with conn.begin():
                for pending in batch:
                    results.append(pending.job(conn))
        except Exception as error:
            _take_announcements(conn)
            if len(batch) > 1:
                # One job failed and rolled the batch back: replay alone, so only that job fails.
                for pending in batch:
                    self._commit(conn, [pending])
                return
            if _is_transient(error) and attempt < _TRANSIENT_ATTEMPTS:
                # PostgreSQL: a serialization failure or deadlock with another node's writer says
                # nothing about the job; it succeeds when run again (jobs have no other effects).
                self._commit(conn, batch, attempt + 1)
                return
            log.warning("commit job failed: %s", error)
            _answer(batch[0].future, error=error)
            return
        self.commits += 1
        self.jobs += len(batch)
        self._database.announce_committed(conn)
        for pending, result in zip(batch, results, strict=True):
            _answer(pending.future, result=result)


def _answer(future: Future[Any], *, result: Any = None, error: BaseException | None = None) -> None:
    """Settle a waiter's future; one already settled is left alone (the writer never fails on a waiter)."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
