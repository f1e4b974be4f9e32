"""Worker processes: a supervisor that binds every listener once and runs N workers that serve them.

`postroom serve` with more than one worker (`[node] workers`, `--workers N`; 0 means one per core)
runs a `Supervisor`. It does what must happen once per node before anyone serves: opens (migrates)
the database, loads the TLS pair and the SRS key (creating the default key file), empties the
metrics directory `<data_dir>/run/metrics`, and binds every listener (MX, submission, submissions,
imap, imaps, admin). Then it starts each worker as a fresh interpreter (`python -m postroom -c CONFIG serve
--worker K`, never a fork of a process that may hold threads), handing it the listening sockets
(`pass_fds`), a pipe on which the worker says it is serving, and `PROMETHEUS_MULTIPROC_DIR`. Each
worker is today's single-process node (`App.run`, its own event loop, its own group committer),
serving the sockets it was given. Once every worker is serving, the supervisor prints where the
node listens, once.

Why sockets bound once and shared (every worker accepts from one accept queue) and not
SO_REUSEPORT (a socket and an accept queue per worker, bound by the supervisor too): measured
2026-11-30 with smtp-source (4000 messages of 4 KB, 20 sessions, a connection per message) against
`--workers 2` on the 2-core machine while other jobs ran on it (load average 9-12, so the rates are
noise): shared 651, 500, 452 msg/s with 2034/1966, 1918/2082, 1566/2434 connections per worker;
SO_REUSEPORT 411, 598 msg/s with 1968/2032, 1988/2012. The kernel's hash spreads more evenly; a
shared queue goes to whichever worker's loop is free first, which is uneven at times but never
leaves work waiting behind a busy worker. Throughput was the same within the noise. What decides
it is failure: with SO_REUSEPORT each connection is hashed to one worker's queue, so connections
keep landing in the queue of a worker that died and wait there until it is restarted (or, were the
worker to hold the only copy of its socket, are reset); with one shared queue the other workers take
them at once. A socket bound once also means port 0 is one port for all (tests), a second `postroom
serve` on the same port fails with today's one-line "address in use" (with SO_REUSEPORT it could
join silently), and a privileged port is bound by the supervisor alone.

Failure behaviour. Anything that stops the node from starting is one `StartupError` line, from the
supervisor, before any worker starts. A worker that dies before every worker was serving stops the
node (`WorkersFailedError`): a worker that cannot start will not start on a retry either. A worker
that dies later is restarted (a new process on the same sockets), at once if it had served for
`QUICK_DEATH_SECONDS`, else (it never served, or not that long) after a delay that doubles from
`RESTART_DELAY` up to `RESTART_DELAY_MAX`; after `MAX_QUICK_DEATHS` quick deaths in a row of one
worker the supervisor stops the node with `WorkersFailedError` rather than spin. Each restart is counted
(`metrics.WORKER_RESTARTS`, by the new worker at its start: the supervisor may have imported
prometheus_client before it knew the metrics directory, so its own counts would not be shared).
`[node] memory_budget` and each listener's `max_connections` (IMAP's too) are the node's: each worker gets its
share (/ N, `worker_share`), so N workers hold no more message octets in memory, and no more
connections, than one process did. (The per-address and per-network connection limits stay per
worker; see docs/operations.md.)
SIGTERM or SIGINT to the supervisor is forwarded to every worker as SIGTERM; each drains
(`App.serve`), and the supervisor returns once all have exited (after `[node] drain_seconds` +
`STOP_SLACK` a worker still running is killed). Workers die with the supervisor: each asks the
kernel for SIGTERM when its parent dies (Linux `PR_SET_PDEATHSIG`), so a supervisor killed with -9
leaves no worker serving (each drains and exits).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import json
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from postroom import metrics
from postroom.app.node import App, Listening
from postroom.app.startup import StartupError, bind_error
from postroom.config import ListenAddress, Settings, SmtpLimits

QUICK_DEATH_SECONDS = 10.0  # a worker that dies before it served this long died "quickly"
MAX_QUICK_DEATHS = 5  # quick deaths in a row of one worker before the supervisor gives up
RESTART_DELAY = 0.25  # seconds before restarting a worker after its first quick death; doubles
RESTART_DELAY_MAX = 8.0
STOP_SLACK = 10.0  # seconds past [node] drain_seconds a worker may take to exit before it is killed

WORKER_ENV = "POSTROOM_WORKER"  # JSON: the sockets, the ready pipe, the supervisor's pid, restart
METRICS_ENV = metrics.MULTIPROCESS_ENV

_PR_SET_PDEATHSIG = 1

log = logging.getLogger(__name__)


class WorkersFailedError(Exception):
    """The supervisor stopped the node because a worker kept dying; the message says which and how."""


@dataclass(frozen=True, slots=True)
class _Role:
    """One listener as the supervisor binds it: its name in `App.sockets`, its config key, protocol."""

    name: str
    table: str  # the config table `listen` named in an error, as `startup.listen` names it
    addresses: tuple[ListenAddress, ...]
    protocol: str
    backlog: int


def _roles(settings: Settings) -> list[_Role]:
    """The node's listeners in the order `serve` prints them (an empty one is left out)."""
    submission = settings.submission
    smtp_backlog = min(settings.mx.limits.max_connections, 4096)
    roles = [
        _Role("mx", "mx", settings.mx.listen, "SMTP", smtp_backlog),
        _Role(
            "submission",
            "submission",
            submission.listen,
            "SMTP",
            min(submission.limits.max_connections, 4096),
        ),
        _Role(
            "submissions",
            "submissions",
            submission.tls_listen,
            "SMTPS",
            min(submission.limits.max_connections, 4096),
        ),
        _Role("imap", "imap", settings.imap.listen, "IMAP", min(settings.imap.max_connections, 4096)),
        _Role("imaps", "imap", settings.imap.tls_listen, "IMAPS", min(settings.imap.max_connections, 4096)),
        _Role(
            "admin",
            "admin",
            settings.admin.listen,
            "HTTPS" if settings.admin.tls else "HTTP",
            settings.admin.limits.max_connections,
        ),
    ]
    return [role for role in roles if role.addresses]


def _bind(address: ListenAddress, backlog: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    return socket.create_server((address.host, address.port), family=family, backlog=backlog)


@dataclass(slots=True)
class _Worker:
    """One worker slot: its number, and the process serving in it now (if any)."""

    number: int
    process: subprocess.Popen[bytes] | None = None
    ready_pipe: int = -1  # read end: one byte when the worker serves, EOF when it is gone
    started_at: float = 0.0
    serving: bool = False
    serving_since: float = 0.0
    quick_deaths: int = 0
    restart_at: float | None = None  # when the slot is empty: when to start it again
    restarts: int = 0


@dataclass(slots=True)
class Supervisor:
    """Runs `count` workers of the node `settings` describes (see the module docstring)."""

    settings: Settings
    count: int
    _sockets: dict[str, list[socket.socket]] = field(default_factory=dict)
    _workers: list[_Worker] = field(default_factory=list)
    _stopping: bool = False
    _wakeup: tuple[int, int] = (-1, -1)

    @property
    def metrics_dir(self) -> Path:
        return self.settings.data_dir / "run" / "metrics"

    def run(self, on_ready: Callable[[list[Listening]], None] | None = None) -> None:
        """Serve until SIGTERM/SIGINT, then drain every worker and return. StartupError when the node
        cannot start; WorkersFailedError when a worker keeps dying."""
        self._prepare()
        listening = self._bind_all()
        try:
            with self._signals():
                self._workers = [_Worker(number) for number in range(1, self.count + 1)]
                for worker in self._workers:
                    self._start(worker)
                self._wait_until_serving()
                if on_ready is not None and not self._stopping:
                    on_ready(listening)
                self._supervise()
        finally:
            self._stop_all()
            for sockets in self._sockets.values():
                for sock in sockets:
                    sock.close()

    def pids(self) -> list[int]:
        """The pids of the workers running now."""
        return [w.process.pid for w in self._workers if w.process is not None and w.process.poll() is None]

    # --- before the workers -------------------------------------------------------------------------
    def _prepare(self) -> None:
        """What happens once per node: the database's migration, the TLS pair, the SRS key, and an
        empty metrics directory. Each problem is a StartupError, as for a node run as one process."""
        node = App.open(self.settings)
        try:
            node.tls_context()
            node.mx_tls_context()
            node.srs()
        finally:
            node.close()
        try:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
            self.metrics_dir.mkdir(parents=True)
            # for the workers (set in their environment before they import prometheus_client) and
            # for `metrics.worker_exited` here
            os.environ[METRICS_ENV] = str(self.metrics_dir)
        except OSError as error:
            raise StartupError(
                f"cannot create the metrics directory {self.metrics_dir}: {error.strerror}; "
                f"fix [node] data_dir in {self.settings.source}"
            ) from None

    def _bind_all(self) -> list[Listening]:
        listening: list[Listening] = []
        try:
            for role in _roles(self.settings):
                sockets = self._sockets.setdefault(role.name, [])
                for address in role.addresses:
                    try:
                        sock = _bind(address, role.backlog)
                    except OSError as error:
                        # worded as asyncio words it for a node run as one process
                        where = f"error while attempting to bind on address {(address.host, address.port)!r}"
                        reason = OSError(error.errno, f"{where}: {(error.strerror or str(error)).lower()}")
                        raise bind_error(role.table, reason, self.settings) from None
                    sockets.append(sock)
                    host, port = sock.getsockname()[:2]
                    listening.append(Listening(role.name, str(ListenAddress(host, port)), role.protocol))
        except BaseException:
            for sockets in self._sockets.values():
                for sock in sockets:
                    sock.close()
            self._sockets.clear()
            raise
        return listening

    # --- signals --------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGTERM/SIGINT ask to stop, SIGCHLD only wakes the loop (through the wakeup pipe)."""
        read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._wakeup = (read_end, write_end)

        def stop(_signum: int, _frame: FrameType | None) -> None:
            self._stopping = True

        previous = {
            signum: signal.signal(signum, handler)
            for signum, handler in (
                (signal.SIGTERM, stop),
                (signal.SIGINT, stop),
                (signal.SIGCHLD, lambda _s, _f: None),
            )
        }
        old_wakeup = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        try:
            yield
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            os.close(read_end)
            os.close(write_end)

    def _sleep(self, timeout: float | None, extra: list[int] | None = None) -> list[int]:
        """Wait up to `timeout` for a signal or for one of the `extra` fds; returns those readable."""
        wakeup = self._wakeup[0]
        if self._stopping:
            return []
        readable, _, _ = select.select([wakeup, *(extra or [])], [], [], timeout)
        if wakeup in readable:
            with contextlib.suppress(BlockingIOError):
                while os.read(wakeup, 512):
                    pass
        return [fd for fd in readable if fd != wakeup]

    # --- workers ------------------------------------------------------------------------------------
    def _start(self, worker: _Worker) -> None:
        ready_read, ready_write = os.pipe2(os.O_CLOEXEC)
        fds = {name: [sock.fileno() for sock in sockets] for name, sockets in self._sockets.items()}
        description = {
            "sockets": fds,
            "ready": ready_write,
            "supervisor": os.getpid(),
            "restart": worker.restarts > 0,
            "workers": self.count,
        }
        env = {**os.environ, WORKER_ENV: json.dumps(description)}
        command = [
            sys.executable,
            "-m",
            "postroom",
            "-c",
            str(self.settings.source),
            "serve",
            "--worker",
            str(worker.number),
        ]
        try:
            worker.process = subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,  # the supervisor prints for the node; workers log to stderr
                pass_fds=[ready_write, *(fd for group in fds.values() for fd in group)],
            )
        finally:
            os.close(ready_write)
        worker.ready_pipe = ready_read
        worker.started_at = time.monotonic()
        worker.serving = False
        worker.restart_at = None
        log.info("worker %d started (pid %d)", worker.number, worker.process.pid)

    def _ended(self, worker: _Worker) -> int | None:
        """The exit status of the worker's process once it ended (reaped, its pipe closed), else None."""
        process = worker.process
        if process is None:
            return None
        status = process.poll()
        if status is None:
            return None
        if worker.ready_pipe >= 0:
            os.close(worker.ready_pipe)
            worker.ready_pipe = -1
        worker.process = None
        metrics.worker_exited(process.pid)  # its open connections end with it; its counts stay
        return status

    def _note_ready(self, readable: list[int]) -> None:
        for worker in self._workers:
            if worker.ready_pipe in readable:
                try:
                    said = os.read(worker.ready_pipe, 1)
                except OSError:
                    said = b""
                if said:
                    worker.serving, worker.serving_since = True, time.monotonic()
                os.close(worker.ready_pipe)  # said once, or EOF: the process is gone (reaped by poll)
                worker.ready_pipe = -1

    def _wait_until_serving(self) -> None:
        while not self._stopping and not all(worker.serving for worker in self._workers):
            pipes = [worker.ready_pipe for worker in self._workers if worker.ready_pipe >= 0]
            self._note_ready(self._sleep(1.0, pipes))
            for worker in self._workers:
                status = self._ended(worker)
                if status is not None:
                    raise WorkersFailedError(
                        f"worker {worker.number} exited ({_status(status)}) before it served; "
                        "its error is above; the node stopped"
                    )

    def _supervise(self) -> None:
        while not self._stopping:
            now = time.monotonic()
            pending = [w.restart_at for w in self._workers if w.restart_at is not None]
            timeout = max(0.0, min(pending) - now) if pending else None
            pipes = [worker.ready_pipe for worker in self._workers if worker.ready_pipe >= 0]
            self._note_ready(self._sleep(timeout, pipes))
            if self._stopping:
                return
            now = time.monotonic()
            for worker in self._workers:
                status = self._ended(worker)
                if status is not None:
                    self._schedule_restart(worker, status, now)
                if worker.restart_at is not None and worker.restart_at <= now:
                    worker.restarts += 1
                    self._start(worker)

    def _schedule_restart(self, worker: _Worker, status: int, now: float) -> None:
        lived = now - worker.started_at
        # Quick: it never served (a start takes seconds on a busy machine), or not for long.
        quick = not worker.serving or now - worker.serving_since < QUICK_DEATH_SECONDS
        worker.quick_deaths = worker.quick_deaths + 1 if quick else 0
        if worker.quick_deaths >= MAX_QUICK_DEATHS:
            raise WorkersFailedError(
                f"worker {worker.number} died {worker.quick_deaths} times in a row before it had "
                f"served {QUICK_DEATH_SECONDS:g} s (last: {_status(status)}); its errors are "
                "above; the node stopped"
            )
        delay = (
            min(RESTART_DELAY * 2 ** (worker.quick_deaths - 1), RESTART_DELAY_MAX)
            if worker.quick_deaths
            else 0.0
        )
        log.error(
            "worker %d died (%s) after %.1f s; restarting it in %.2f s",
            worker.number,
            _status(status),
            lived,
            delay,
        )
        worker.restart_at = now + delay

    def _stop_all(self) -> None:
        """SIGTERM to every worker, then wait for their drain (killing any past the deadline)."""
        running = [w for w in self._workers if w.process is not None]
        for worker in running:
            assert worker.process is not None
            with contextlib.suppress(ProcessLookupError):
                worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.drain_seconds + STOP_SLACK
        for worker in running:
            assert worker.process is not None
            try:
                worker.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker %d did not stop in time; killing it", worker.number)
                worker.process.kill()
                worker.process.wait()
            self._ended(worker)


def _status(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit status {code}"


# --- the worker's side ------------------------------------------------------------------------------
def worker_share(settings: Settings, workers: int) -> Settings:
    """One worker's settings: the node-wide bounds divided between the workers, so N workers hold
    no more than one process did: `[node] memory_budget` and each listener's `max_connections`.
    (The per-address and per-network connection limits stay per worker: which worker takes a
    connection is the kernel's choice, so a share of them would refuse a client early.)"""

    def limits(value: SmtpLimits) -> SmtpLimits:
        return dataclasses.replace(value, max_connections=max(1, value.max_connections // workers))

    return dataclasses.replace(
        settings,
        memory_budget=max(1, settings.memory_budget // workers),
        mx=dataclasses.replace(settings.mx, limits=limits(settings.mx.limits)),
        submission=dataclasses.replace(settings.submission, limits=limits(settings.submission.limits)),
        imap=dataclasses.replace(
            settings.imap, max_connections=max(1, settings.imap.max_connections // workers)
        ),
        admin=dataclasses.replace(
            settings.admin,
            limits=dataclasses.replace(
                settings.admin.limits,
                max_connections=max(1, settings.admin.limits.max_connections // workers),
            ),
        ),
    )


def _die_with_parent(supervisor: int) -> None:
    """Ask the kernel for SIGTERM when the supervisor dies (Linux); exit now if it already has."""
    library = ctypes.util.find_library("c")
    if library is not None:
        libc = ctypes.CDLL(library, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            log.warning("cannot ask to die with the supervisor: %s", os.strerror(ctypes.get_errno()))
    if os.getppid() != supervisor:
        raise StartupError("the supervisor that started this worker is gone")


def run_worker(settings: Settings, number: int) -> None:
    """Serve as worker `number` of a supervisor: the sockets and pipes it handed down (see the module
    docstring). StartupError when not started by a supervisor, or when the node cannot start."""
    described = os.environ.get(WORKER_ENV)
    if not described:
        raise StartupError("--worker is for the supervisor's own use: run `postroom serve --workers N`")
    description = json.loads(described)
    _die_with_parent(int(description["supervisor"]))
    ready = int(description["ready"])
    node = App.open(worker_share(settings, int(description["workers"])))
    node.worker = number
    node.sockets = {
        name: tuple(socket.socket(fileno=fd) for fd in fds) for name, fds in description["sockets"].items()
    }
    if description.get("restart"):
        from postroom import metrics

        metrics.WORKER_RESTARTS.inc()

    def serving(_listening: list[Listening]) -> None:
        os.write(ready, b"1")
        os.close(ready)

    try:
        node.run(serving)
    finally:
        node.close()
