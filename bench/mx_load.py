"""Load benchmark of the MX endpoint: Postroom, and optionally Postfix set up the same way.

Sends N messages of S bytes over C concurrent SMTP sessions (1 recipient each) to a freshly set-up
server on 127.0.0.1, and reports: msg/s accepted (until the last 250 after DATA), msg/s delivered
(until all accepted messages are in the destination mailbox), p50/p99 transaction latency
(MAIL .. 250 after DATA), and the peak RSS of the server's process tree. With ``--vs-postfix`` the same
load runs against a private Postfix instance (virtual(8) to Maildir) in the same invocation, and the
ratio Postroom/Postfix is printed.

    .venv/bin/python bench/mx_load.py                      # Postroom, defaults N=5000 S=4096 C=20
    .venv/bin/python bench/mx_load.py --vs-postfix --json out.json
    .venv/bin/python bench/mx_load.py --target postfix --client smtp-source

Everything listens on 127.0.0.1 only; each target run is bounded by --timeout; servers, generator
processes and temp dirs are cleaned up on exit, Ctrl-C and SIGTERM. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import imaplib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

sys.path.insert(0, str(Path(__file__).resolve().parent))


from loadgen import LoadResult, LoadSpec, run_in_process
from postfix_lab import PostfixLab, free_port, proc_tree, wait_port

REPO = Path(__file__).resolve().parent.parent
SMTP_SOURCE = "/usr/sbin/smtp-source"
CLK_TCK = os.sysconf("SC_CLK_TCK")
STALL_SECONDS = 10.0  # no delivery progress this long after the load: look at the queue


class Interrupted(BaseException):
    """SIGTERM/SIGINT or the overall alarm: stop, clean up, exit."""


class BenchTimeout(Exception):
    """A target run exceeded --timeout."""


# --------------------------------------------------------------------------------------------- targets


class Target(Protocol):
    name: str
    port: int
    recipient: str

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def pids(self) -> list[int]: ...
    def delivered(self) -> int: ...
    def last_delivery_wallclock(self) -> float | None: ...
    def queue_summary(self) -> dict[str, Any]: ...
    def describe(self) -> str: ...


class PostfixTarget:
    """Postfix via bench/postfix_lab.py; delivered = files in Maildir new/ (exact time from mtimes)."""

    name = "postfix"

    def __init__(self, keep: bool, log: bool) -> None:
        self.lab = PostfixLab(keep=keep, log=log)
        self.port = 0
        self.recipient = self.lab.recipient

    def start(self) -> None:
        self.lab.start()
        self.port = self.lab.port

    def stop(self) -> None:
        self.lab.stop()

    def pids(self) -> list[int]:
        return self.lab.pids()

    def delivered(self) -> int:
        return self.lab.delivered()

    def last_delivery_wallclock(self) -> float | None:
        return self.lab.last_delivery_time()

    def queue_summary(self) -> dict[str, Any]:
        return {"pending": self.lab.queue_size(), "deferred": 0}

    def describe(self) -> str:
        v = subprocess.run(["postconf", "-h", "mail_version"], capture_output=True, text=True, check=False)
        return f"Postfix {v.stdout.strip()} (virtual(8) -> Maildir), dir {self.lab.base}"


class PostroomTarget:
    """Postroom via its CLI: init, tenant/domain/mailbox add, serve.

    Delivered count: IMAP STATUS (MESSAGES) over all folders on one persistent connection when the IMAP
    listener lets the mailbox log in (cheap), else the mailstore service of `postroom` in this process
    (one SQL query a poll); `--postroom-count cli` uses `postroom mailbox show --json` (a new Python
    process each time, about a second of CPU on this machine).
    """

    name = "postroom"
    PASSWORD = "bench-load-password"
    delivers_before_ack = True  # local recipients are delivered inside the commit that precedes 250

    def __init__(self, exe: str, keep: bool, count: str = "auto") -> None:
        self.exe = exe
        self.keep = keep
        self.count_mode = count  # auto | imap | cli
        self.imap_port = 0
        self.imap: imaplib.IMAP4 | None = None
        self._app: Any = None  # postroom.app.App, opened on first API count
        self._mailbox_id = 0  # the recipient's mailbox, resolved with the app
        self.folders: list[str] = []
        self.base = Path()
        self.cfg = Path()
        self.port = 0
        self.recipient = "user@bench.example"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = Path()

    def _cli(self, *args: str, timeout: float = 60.0, stdin: str | None = None) -> str:
        res = subprocess.run(
            [self.exe, *args], input=stdin, capture_output=True, text=True, timeout=timeout, check=False
        )
        if res.returncode != 0:
            detail = (res.stderr.strip() or res.stdout.strip())[-800:]
            raise RuntimeError(f"postroom {' '.join(args[:3])} ... failed ({res.returncode}): {detail}")
        return res.stdout

    def start(self) -> None:
        if not Path(self.exe).exists():
            raise RuntimeError(f"{self.exe} not found")
        self.base = Path(tempfile.mkdtemp(prefix="postroom-bench-"))
        node = self.base / "node"
        self.port = free_port()
        ports = [free_port() for _ in range(3)]
        self.imap_port = ports[1]
        self._cli(
            "init",
            str(node),
            "--service-domain",
            "bench.test",
            "--mx-listen",
            f"127.0.0.1:{self.port}",
            "--submission-listen",
            f"127.0.0.1:{ports[0]}",
            "--imap-listen",
            f"127.0.0.1:{ports[1]}",
            "--admin-listen",
            f"127.0.0.1:{ports[2]}",
        )
        self.cfg = node / "postroom.toml"
        c = str(self.cfg)
        self._cli("-c", c, "tenant", "add", "bench")
        self._cli("-c", c, "domain", "add", "bench.example", "--tenant", "bench", "--verified")
        self._cli("-c", c, "mailbox", "add", self.recipient, "--password-stdin", stdin=self.PASSWORD + "\n")
        self.log_path = self.base / "serve.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [self.exe, "-c", c, "serve"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches us, not the server; we stop it ourselves
            )
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postroom serve exited ({self.proc.returncode}): {self._log_tail()}")
            if wait_port(self.port, 0.5):
                self._choose_counter()
                return
        raise RuntimeError(f"postroom serve did not listen on 127.0.0.1:{self.port}: {self._log_tail()}")

    def _choose_counter(self) -> None:
        if self.count_mode == "cli":
            return
        err = ""
        for _ in range(8):  # IMAP may come up a moment after the MX listener
            try:
                self._imap_connect()
                self.count_mode = "imap"
                return
            except (OSError, imaplib.IMAP4.error) as exc:
                err = str(exc)
                time.sleep(0.25)
        if self.count_mode == "imap":
            raise RuntimeError(f"IMAP count on 127.0.0.1:{self.imap_port} impossible: {err}")
        print(
            f"[postroom] IMAP count unavailable ({err[:100]}); counting through the mailstore API", flush=True
        )
        self.count_mode = "api"

    def _imap_connect(self) -> imaplib.IMAP4:
        if self.imap is None:
            m = imaplib.IMAP4("127.0.0.1", self.imap_port, timeout=10)
            try:
                m.login(self.recipient, self.PASSWORD)
                typ, data = m.list()
                if typ != "OK":
                    raise imaplib.IMAP4.error(f"LIST {typ}")
                folders = []
                for item in data:
                    line = item.decode() if isinstance(item, bytes) else ""
                    name = line.rsplit(" ", 1)[-1] if line.count('"') < 4 else line.split('"')[-2]
                    if "\\Noselect" not in line and name:
                        folders.append(name)
                self.folders = folders or ["INBOX"]
            except BaseException:
                m.shutdown()
                raise
            self.imap = m
        return self.imap

    def _imap_count(self) -> int:
        m = self._imap_connect()
        total = 0
        try:
            for f in self.folders:
                typ, data = m.status(f'"{f}"', "(MESSAGES)")
                if typ != "OK" or not data or not isinstance(data[0], bytes):
                    raise RuntimeError(f"STATUS {f}: {typ} {data!r}")
                match = re.search(rb"MESSAGES (\d+)", data[0])
                total += int(match.group(1)) if match else 0
        except (OSError, imaplib.IMAP4.error):
            self.imap = None  # reconnect next time
            raise
        return total

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-800:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.imap is not None:
            with contextlib.suppress(Exception):
                self.imap.shutdown()
            self.imap = None
        if self._app is not None:
            self._app.close()
            self._app = None
        if self.proc is not None and self.proc.poll() is None:
            pids = proc_tree(self.proc.pid)
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=20)
            for p in [*pids, *proc_tree(self.proc.pid)]:
                with contextlib.suppress(OSError):
                    os.kill(p, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
        if self.base != Path() and not self.keep:
            shutil.rmtree(self.base, ignore_errors=True)

    def pids(self) -> list[int]:
        return proc_tree(self.proc.pid) if self.proc is not None else []

    def delivered(self) -> int:
        if self.count_mode == "imap":
            return self._imap_count()
        if self.count_mode == "api":
            return self._api_count()
        return self.delivered_cli()

    def _api_count(self) -> int:
        """Count through Postroom's own mailstore service, in this process (one SQL query a poll)."""
        from postroom.model.scope import OPERATOR

        if self._app is None:
            from postroom.app import App
            from postroom.config import load_settings

            self._app = App.open(load_settings(self.cfg))
            self._mailbox_id = self._app.directory.get_recipient(OPERATOR, self.recipient).id
        return sum(folder.messages for folder in self._app.mailstore.folders(OPERATOR, self._mailbox_id))

    def delivered_cli(self) -> int:
        out = self._cli("-c", str(self.cfg), "mailbox", "show", self.recipient, "--json", timeout=30)
        data = json.loads(out)
        return sum(int(f.get("messages", 0)) for f in data.get("folders", []))

    def queue_summary(self) -> dict[str, Any]:
        out = self._cli("-c", str(self.cfg), "queue", "summary", "--json", timeout=30)
        result: dict[str, Any] = json.loads(out)
        return result

    def last_delivery_wallclock(self) -> float | None:
        return None  # not observable from outside: interpolated between polls

    def describe(self) -> str:
        return f"Postroom ({self.exe}), dir {self.base}, delivered counted by {self.count_mode}"


# --------------------------------------------------------------------------------------------- sampling


def _status_kb(pid: int, key: bytes) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _cpu_ticks(pid: int) -> tuple[str, int]:
    """(command name, utime + stime in clock ticks) of a process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            head, _, tail = f.read().rpartition(b")")
        fields = tail.split()
        return head.partition(b"(")[2].decode(errors="replace"), int(fields[11]) + int(fields[12])
    except (OSError, ValueError, IndexError):
        return "", 0


class ProcSampler(threading.Thread):
    """Samples the target's process tree: peak of the summed VmRSS, per-process VmHWM, CPU ticks, and
    every `pss_every` samples the summed PSS (shared pages divided among their users; a fairer sum for
    many forked processes than RSS, which counts shared libraries once per process)."""

    def __init__(self, target: Target, interval: float = 0.2, pss_every: int = 5) -> None:
        super().__init__(daemon=True)
        self.target = target
        self.interval = interval
        self.stop_event = threading.Event()
        self.peak_rss_kb = 0
        self.current_rss_kb = 0
        self.nprocs_peak = 0
        self.hwm_kb: dict[int, int] = {}
        self.cpu: dict[int, int] = {}
        self.cpu_base: dict[int, int] = {}
        self.comm: dict[int, str] = {}
        self.pss_every = pss_every
        self.samples = 0
        self.peak_pss_kb = 0

    def sample(self) -> None:
        pids = self.target.pids()
        if self.samples % self.pss_every == 0:
            self.peak_pss_kb = max(self.peak_pss_kb, sum(_pss_kb(p) for p in pids))
        self.samples += 1
        total = 0
        for pid in pids:
            total += _status_kb(pid, b"VmRSS:")
            hwm = _status_kb(pid, b"VmHWM:")
            if hwm > self.hwm_kb.get(pid, 0):
                self.hwm_kb[pid] = hwm
            comm, ticks = _cpu_ticks(pid)
            if not comm:
                continue  # gone
            self.comm[pid] = comm
            self.cpu_base.setdefault(pid, ticks)
            self.cpu[pid] = max(self.cpu.get(pid, 0), ticks)
        self.current_rss_kb = total
        self.peak_rss_kb = max(self.peak_rss_kb, total)
        self.nprocs_peak = max(self.nprocs_peak, len(pids))

    def baseline(self) -> None:
        """Sample now and count CPU from here on (excludes the server's start-up)."""
        self.sample()
        self.cpu_base = dict(self.cpu)

    def cpu_seconds(self) -> float:
        return sum(t - self.cpu_base.get(p, 0) for p, t in self.cpu.items()) / CLK_TCK

    def cpu_by_command(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for p, t in self.cpu.items():
            name = self.comm.get(p, "?")
            out[name] = out.get(name, 0.0) + (t - self.cpu_base.get(p, 0)) / CLK_TCK
        return dict(sorted(((k, round(v, 2)) for k, v in out.items()), key=lambda kv: -kv[1]))

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            self.sample()


class DeliveryPoller(threading.Thread):
    """Polls the delivered count at a fixed interval; keeps the last two (monotonic time, count)."""

    def __init__(self, target: Target, interval: float) -> None:
        super().__init__(daemon=True)
        self.target = target
        self.interval = interval
        self.stop_event = threading.Event()
        self.samples: list[tuple[float, int]] = [(time.monotonic(), 0)]
        self.error: str | None = None

    @property
    def count(self) -> int:
        return self.samples[-1][1]

    def run(self) -> None:
        while not self.stop_event.is_set():
            t = time.monotonic()
            try:
                n = self.target.delivered()
                self.samples = [*self.samples[-1:], (time.monotonic(), n)]
                self.error = None
            except Exception as exc:
                self.error = str(exc)[:200]
            self.stop_event.wait(max(0.0, self.interval - (time.monotonic() - t)))

    def completion_time(self, goal: int) -> float | None:
        """Interpolated monotonic time the count reached `goal` (None unless reached)."""
        t0, n0 = self.samples[0]
        t1, n1 = self.samples[-1]
        if n1 < goal:
            return None
        if n1 == n0 or n0 >= goal:
            return t1
        return t0 + (t1 - t0) * (goal - n0) / (n1 - n0)


# --------------------------------------------------------------------------------------------- clients


class SmtpSourceClient:
    """Postfix's smtp-source; accepted count from its -c counter; no per-transaction latency."""

    def __init__(self, spec: LoadSpec, reuse: bool) -> None:
        self.cmd = [
            SMTP_SOURCE,
            "-c",
            "-l",
            str(spec.size),
            "-m",
            str(spec.messages),
            "-s",
            str(spec.sessions),
            "-f",
            spec.sender,
            "-t",
            spec.recipient,
        ]
        if reuse:
            self.cmd.append("-d")
        self.cmd.append(f"{spec.host}:{spec.port}")
        self.counter = 0
        self.t_start = time.monotonic()
        self.t_end = 0.0
        self.proc = subprocess.Popen(
            self.cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        buf = b""
        fd = self.proc.stdout.fileno()
        while chunk := os.read(fd, 4096):
            buf += chunk
            *done, buf = re.split(rb"[\r\n]", buf)
            for tok in reversed(done):
                if tok.strip().isdigit():
                    self.counter = int(tok)
                    break

    def progress(self) -> tuple[int, int, int]:
        return self.counter, self.counter, 0

    def done(self) -> bool:
        if self.proc.poll() is None:
            return False
        if not self.t_end:
            self.t_end = time.monotonic()
        return True

    def result(self, messages: int) -> LoadResult:
        self.reader.join(timeout=2)
        err = (self.proc.stderr.read() if self.proc.stderr else b"").decode(errors="replace").strip()
        accepted = self.counter
        r = LoadResult(t_start=self.t_start, t_last_accept=self.t_end, t_end=self.t_end)
        r.accepted, r.failed = accepted, messages - accepted
        if self.proc.returncode:
            r.errors[f"smtp-source exit {self.proc.returncode}: {err[-200:]}"] = 1
        return r

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.done()


# --------------------------------------------------------------------------------------------- a run


@dataclass
class RunResult:
    target: str
    client: str
    messages: int
    size: int
    sessions: int
    server: str = ""
    error: str | None = None
    accepted: int = 0
    failed: int = 0
    delivered: int = 0
    complete: bool = False
    accept_seconds: float | None = None
    deliver_seconds: float | None = None
    accepted_per_s: float | None = None
    delivered_per_s: float | None = None
    delivery_time_method: str = ""
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    peak_rss_mb: float | None = None
    peak_pss_mb: float | None = None
    peak_processes: int = 0
    server_cpu_seconds: float | None = None
    client_cpu_seconds: float | None = None
    harness_cpu_seconds: float | None = None
    queue_after: dict[str, Any] | None = None
    server_cpu_by_command: dict[str, float] = field(default_factory=dict)
    startup_seconds: float | None = None
    pipelining: bool | None = None
    errors: dict[str, int] = field(default_factory=dict)


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (p in 0..100)."""
    k = max(0, min(len(sorted_values) - 1, int(-(-p * len(sorted_values) // 100)) - 1))
    return sorted_values[k]


def _merge(results: list[LoadResult]) -> LoadResult:
    m = LoadResult()
    m.t_start = min((r.t_start for r in results if r.t_start), default=0.0)
    m.t_last_accept = max((r.t_last_accept for r in results), default=0.0)
    m.t_end = max((r.t_end for r in results), default=0.0)
    for r in results:
        m.accepted += r.accepted
        m.failed += r.failed
        m.latencies.extend(r.latencies)
        m.cpu_seconds += r.cpu_seconds
        m.pipelining = m.pipelining or r.pipelining
        for k, v in r.errors.items():
            m.errors[k] = m.errors.get(k, 0) + v
    return m


def _own_cpu() -> tuple[float, float]:
    """CPU seconds of this process, and of its reaped children."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def _queue_after(target: Target) -> dict[str, Any] | None:
    try:
        return target.queue_summary()
    except Exception as exc:
        return {"error": str(exc)[:200]}


def run_target(target: Target, args: argparse.Namespace) -> RunResult:
    res = RunResult(target.name, args.client, args.messages, args.size, args.concurrency)
    sampler: ProcSampler | None = None
    poller: DeliveryPoller | None = None
    client: Any = None
    try:
        t = time.monotonic()
        print(f"[{target.name}] setting up ...", flush=True)
        target.start()
        res.startup_seconds = time.monotonic() - t
        res.server = target.describe()
        print(
            f"[{target.name}] {res.server}; MX on 127.0.0.1:{target.port} "
            f"(ready in {res.startup_seconds:.1f}s)",
            flush=True,
        )
        deadline = time.monotonic() + args.timeout
        cpu0 = _own_cpu()
        sampler = ProcSampler(target)
        sampler.baseline()
        sampler.start()
        poll_interval = max(0.5, args.poll_interval)
        if isinstance(target, PostroomTarget) and target.count_mode == "cli":
            poll_interval = max(poll_interval, args.cli_poll_interval)
        poller = DeliveryPoller(target, poll_interval)
        poller.start()
        spec = LoadSpec(
            "127.0.0.1",
            target.port,
            args.messages,
            args.size,
            args.concurrency,
            args.sender,
            target.recipient,
        )
        if args.client == "smtp-source":
            client = SmtpSourceClient(spec, args.source_reuse)
            print(f"[{target.name}] client: {' '.join(client.cmd)}", flush=True)
        else:
            client = run_in_process(spec, args.gen_procs)
            print(
                f"[{target.name}] client: python asyncio generator, {args.gen_procs} process(es)", flush=True
            )
        t_start = time.monotonic()
        next_print = t_start + 1.0
        gen_done = False
        load: LoadResult | None = None
        last_delivered, last_progress = -1, t_start
        while True:
            now = time.monotonic()
            if now > deadline:
                raise BenchTimeout(f"timeout after {args.timeout:.0f}s")
            if not gen_done and client.done():
                gen_done = True
                if args.client == "smtp-source":
                    load = client.result(args.messages)
                else:
                    load = _merge(client.results)
            sent, acc, fail = client.progress()
            delivered = poller.count
            if now >= next_print:
                next_print += 1.0
                extra = f"  (poll error: {poller.error})" if poller.error else ""
                print(
                    f"[{target.name}] {now - t_start:6.1f}s  sent {sent:6d}  accepted {acc:6d}  "
                    f"failed {fail:5d}  delivered {delivered:6d}  "
                    f"rss {sampler.current_rss_kb / 1024:7.1f} MB{extra}",
                    flush=True,
                )
            if gen_done and load is not None and delivered >= load.accepted:
                break
            if delivered != last_delivered:
                last_delivered, last_progress = delivered, now
            elif gen_done and now - last_progress > STALL_SECONDS:
                last_progress = now
                q = target.queue_summary()
                if not q.get("pending") and not q.get("deferred"):
                    print(f"[{target.name}] queue is empty but only {delivered} delivered; giving up")
                    break
            time.sleep(0.05)
        assert load is not None
        t_done = time.monotonic()
        res.accepted, res.failed, res.errors = load.accepted, load.failed, load.errors
        res.pipelining = load.pipelining if args.client == "python" else None
        res.client_cpu_seconds = load.cpu_seconds if args.client == "python" else None
        t0 = load.t_start or t_start
        if load.accepted:
            res.accept_seconds = load.t_last_accept - t0
            res.accepted_per_s = load.accepted / res.accept_seconds
        res.delivered = poller.count
        wall = target.last_delivery_wallclock()
        if wall is not None:
            t_deliv = wall - (time.time() - time.monotonic())
            res.delivery_time_method = "exact (newest Maildir file mtime)"
        elif getattr(target, "delivers_before_ack", False) and poller.count >= load.accepted:
            # Postroom stores a local message in the commit that precedes its 250, so the last
            # delivery happened before the last 250; the count confirms every message arrived.
            t_deliv = load.t_last_accept
            res.delivery_time_method = "exact (local delivery commits before each 250)"
        else:
            t_deliv = poller.completion_time(load.accepted) or t_done
            res.delivery_time_method = f"interpolated between polls every {poll_interval:.1f}s"
        res.complete = res.delivered >= args.messages
        if res.delivered:
            res.deliver_seconds = t_deliv - t0
            res.delivered_per_s = res.delivered / res.deliver_seconds
        if load.latencies:
            lat = sorted(load.latencies)
            res.p50_ms = percentile(lat, 50) * 1000
            res.p99_ms = percentile(lat, 99) * 1000
            res.max_ms = lat[-1] * 1000
        res.queue_after = _queue_after(target)
        if isinstance(target, PostroomTarget) and target.count_mode == "imap" and res.queue_after is not None:
            try:  # cross-check the IMAP count with the CLI contract
                res.queue_after["mailbox_show_messages"] = target.delivered_cli()
            except Exception as exc:
                res.queue_after["mailbox_show_error"] = str(exc)[:200]
        sampler.sample()
        res.peak_rss_mb = sampler.peak_rss_kb / 1024
        res.peak_pss_mb = sampler.peak_pss_kb / 1024
        # harness = this process + its reaped children (CLI polls, smtp-source, generator) - client
        me, kids = (a - b for a, b in zip(_own_cpu(), cpu0, strict=True))
        if args.client == "smtp-source" and target.name == "postfix":
            res.client_cpu_seconds = kids  # the only child that ran during the load
        res.harness_cpu_seconds = me + kids - (res.client_cpu_seconds or 0.0)
        res.peak_processes = sampler.nprocs_peak
        res.server_cpu_seconds = sampler.cpu_seconds()
        res.server_cpu_by_command = sampler.cpu_by_command()
    except BenchTimeout as exc:
        res.error = str(exc)
        if client is not None:
            sent, acc, fail = client.progress()
            res.accepted, res.failed = acc, fail
        if poller is not None:
            res.delivered = poller.count
        if sampler is not None:
            res.peak_rss_mb = sampler.peak_rss_kb / 1024
            res.peak_pss_mb = sampler.peak_pss_kb / 1024
            res.peak_processes = sampler.nprocs_peak
            res.server_cpu_seconds = sampler.cpu_seconds()
        res.queue_after = _queue_after(target)
        print(f"[{target.name}] {exc}", flush=True)
    except Exception as exc:
        res.error = f"{exc.__class__.__name__}: {exc}"
        print(f"[{target.name}] error: {res.error}", flush=True)
    finally:
        for th in (sampler, poller):
            if th is not None:
                th.stop_event.set()
        if client is not None:
            client.stop()
        for th in (sampler, poller):
            if th is not None and th.is_alive():
                th.join(timeout=35)
        print(f"[{target.name}] stopping server ...", flush=True)
        target.stop()
    return res


# --------------------------------------------------------------------------------------------- output


def _fmt(v: Any, nd: int = 1) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def print_table(results: list[RunResult], args: argparse.Namespace) -> dict[str, float | None]:
    rows: list[tuple[str, str, int]] = [
        ("accepted msg/s", "accepted_per_s", 1),
        ("delivered msg/s", "delivered_per_s", 1),
        ("p50 latency ms", "p50_ms", 2),
        ("p99 latency ms", "p99_ms", 2),
        ("max latency ms", "max_ms", 2),
        ("peak RSS MB (tree)", "peak_rss_mb", 1),
        ("peak PSS MB (tree)", "peak_pss_mb", 1),
        ("peak processes", "peak_processes", 0),
        ("accepted", "accepted", 0),
        ("failed", "failed", 0),
        ("delivered", "delivered", 0),
        ("all delivered", "complete", 0),
        ("time to last 250 s", "accept_seconds", 2),
        ("time to delivered s", "deliver_seconds", 2),
        ("server CPU s", "server_cpu_seconds", 2),
        ("client CPU s", "client_cpu_seconds", 2),
        ("harness CPU s", "harness_cpu_seconds", 2),
        ("server start-up s", "startup_seconds", 1),
    ]
    ratios: dict[str, float | None] = {}
    both = len(results) == 2 and {r.target for r in results} == {"postroom", "postfix"}
    ratio_rows = {
        "accepted_per_s",
        "delivered_per_s",
        "p50_ms",
        "p99_ms",
        "max_ms",
        "peak_rss_mb",
        "peak_pss_mb",
        "server_cpu_seconds",
    }
    pr = next((r for r in results if r.target == "postroom"), None)
    pf = next((r for r in results if r.target == "postfix"), None)
    header = ["metric", *(r.target for r in results)]
    if both:
        header.append("postroom/postfix")
    table: list[list[str]] = [header]
    for label, attr, nd in rows:
        line = [label, *(_fmt(getattr(r, attr), nd) for r in results)]
        if both and pr is not None and pf is not None:
            a, b = getattr(pr, attr), getattr(pf, attr)
            ok = attr in ratio_rows and pr.error is None and pf.error is None
            ratio = a / b if ok and isinstance(a, int | float) and isinstance(b, int | float) and b else None
            if attr in ("accepted_per_s", "delivered_per_s"):
                ratios[attr] = ratio
            line.append(_fmt(ratio, 2) if attr in ratio_rows else "")
        table.append(line)
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    print()
    print(
        f"MX load: N={args.messages} messages x S={args.size} bytes, C={args.concurrency} sessions, "
        f"1 recipient, client={args.client}"
        + (" (latency n/a with smtp-source)" if args.client == "smtp-source" else "")
    )
    for i, row in enumerate(table):
        print(
            "  ".join(
                c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if i == 0:
            print("  ".join("-" * w for w in widths))
    for r in results:
        if r.delivery_time_method:
            print(f"  {r.target}: delivered time {r.delivery_time_method}")
        if r.server_cpu_by_command and len(r.server_cpu_by_command) > 1:
            top = ", ".join(f"{k} {v:.1f}" for k, v in list(r.server_cpu_by_command.items())[:8])
            print(f"  {r.target}: server CPU s by command: {top}")
        if r.queue_after is not None:
            print(f"  {r.target}: queue at the end: {json.dumps(r.queue_after)}")
        if r.error:
            print(f"  {r.target}: ERROR {r.error}")
        for k, v in list(r.errors.items())[:5]:
            print(f"  {r.target}: {v} x {k}")
    if both:
        print(
            f"  ratio Postroom/Postfix: accepted {_fmt(ratios.get('accepted_per_s'), 2)}, "
            f"delivered {_fmt(ratios.get('delivered_per_s'), 2)}"
        )
    return ratios


# --------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("-n", "--messages", type=int, default=5000, help="messages in total (default 5000)")
    p.add_argument("-s", "--size", type=int, default=4096, help="message size in bytes (default 4096)")
    p.add_argument("-c", "--concurrency", type=int, default=20, help="concurrent SMTP sessions (default 20)")
    p.add_argument(
        "--target",
        choices=["postroom", "postfix"],
        default="postroom",
        help="server to measure (default postroom)",
    )
    p.add_argument(
        "--vs-postfix",
        action="store_true",
        help="run Postroom, then Postfix, same load; print ratios (overrides --target)",
    )
    p.add_argument(
        "--client",
        choices=["python", "smtp-source"],
        default="python",
        help="load generator (default python; smtp-source gives no latency)",
    )
    p.add_argument("--gen-procs", type=int, default=1, help="processes for the python generator (default 1)")
    p.add_argument(
        "--source-reuse",
        action="store_true",
        help="smtp-source: add -d (keep the connection for several messages)",
    )
    p.add_argument(
        "--timeout", type=float, default=300.0, help="hard timeout per target run, s (default 300)"
    )
    p.add_argument(
        "--poll-interval",
        type=float,
        default=0.5,
        help="delivered-count poll interval, s (at least 0.5; default 0.5)",
    )
    p.add_argument(
        "--postroom-count",
        choices=["auto", "imap", "api", "cli"],
        default="auto",
        help="how to count Postroom's delivered messages: IMAP STATUS (cheap), the mailstore API in this"
        " process (one query), the CLI `mailbox show` (about 1 s of CPU per call), or auto = IMAP if it"
        " logs in, else the API (default auto)",
    )
    p.add_argument(
        "--cli-poll-interval",
        type=float,
        default=2.0,
        help="poll interval when counting with the CLI, s (default 2.0)",
    )
    p.add_argument("--sender", default="load@loadgen.bench.test", help="envelope sender")
    p.add_argument("--postroom", default=str(REPO / ".venv" / "bin" / "postroom"), help="postroom executable")
    p.add_argument("--no-postfix-log", action="store_true", help="Postfix: no maillog_file (log to nowhere)")
    p.add_argument("--keep", action="store_true", help="keep the temp dirs (for inspection)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH ('-' = stdout)")
    a = p.parse_args(argv)
    if min(a.messages, a.size, a.concurrency, a.gen_procs) < 1 or a.timeout <= 0:
        p.error("--messages, --size, --concurrency, --gen-procs and --timeout must be positive")
    if a.messages > 1_000_000 or a.concurrency > 1000 or a.size > 50_000_000:
        p.error("bounded: at most 1,000,000 messages, 1000 sessions, 50 MB per message")
    if a.client == "smtp-source" and not Path(SMTP_SOURCE).exists():
        p.error(f"{SMTP_SOURCE} not found (apt-get install postfix)")
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = ["postroom", "postfix"] if args.vs_postfix else [args.target]
    targets: list[Target] = []
    for n in names:
        if n == "postfix":
            targets.append(PostfixTarget(args.keep, not args.no_postfix_log))
        else:
            targets.append(PostroomTarget(args.postroom, args.keep, args.postroom_count))

    def on_signal(signum: int, _frame: object) -> None:
        for s in (signal.SIGINT, signal.SIGTERM):  # one interruption is enough; let clean-up finish
            signal.signal(s, signal.SIG_IGN)
        raise Interrupted(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGALRM, on_signal)
    # Backstop: each run is bounded by --timeout; set-up and clean-up get 120 s more each.
    signal.alarm(int(len(targets) * (args.timeout + 120)))
    results: list[RunResult] = []
    try:
        for t in targets:
            results.append(run_target(t, args))
    except Interrupted as exc:
        print(f"\ninterrupted ({exc}); cleaning up", file=sys.stderr, flush=True)
        for t in targets:
            try:
                t.stop()
            except Exception as e:
                print(f"cleanup of {t.name}: {e}", file=sys.stderr)
        return 130
    finally:
        signal.alarm(0)
    ratios = print_table(results, args)
    if args.json:
        doc = {
            "params": {
                k: getattr(args, k)
                for k in (
                    "messages",
                    "size",
                    "concurrency",
                    "client",
                    "gen_procs",
                    "source_reuse",
                    "timeout",
                    "sender",
                )
            },
            "results": [asdict(r) for r in results],
            "ratio_postroom_over_postfix": ratios or None,
            "nproc": os.cpu_count(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        text = json.dumps(doc, indent=2)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
            print(f"results written to {args.json}")
    return 0 if all(r.error is None and r.complete for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
