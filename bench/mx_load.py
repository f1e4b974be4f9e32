"""MX load benchmark: Postroom against a stock Postfix, both measured by counting the mailbox.

Sends N messages of S bytes over C concurrent SMTP sessions (one recipient each) to a freshly set-up
server on 127.0.0.1 and measures two times from the start of the load:

- *accepted*: until the client is done (smtp-source exited after its last 250 and QUIT; with the python
  client, the last 250 after DATA);
- *delivered*: until the destination mailbox holds N messages, seen by polling its real count (Postroom:
  its mailstore service opened in this process, or its CLI; Postfix: the files of the Maildir). No
  acknowledgement, log line or server timestamp is taken as a delivery time.

With ``--vs-postfix`` the same load runs against Postroom and against a private Postfix instance that is
Debian's stock configuration except for what the comparison needs (tests/support/postfix.py), R times
(default 5), alternating which target goes first, each run on fresh server state; it reports per run and
the median and range of the ratio Postroom/Postfix, accepted and delivered separately.

    .venv/bin/python bench/mx_load.py --vs-postfix                 # 5 runs, smtp-source, N=5000 S=4096 C=20
    .venv/bin/python bench/mx_load.py --vs-postfix --client python # adds p50/p99 latency
    .venv/bin/python bench/mx_load.py --target postroom --runs 1
    .venv/bin/python bench/mx_load.py --vs-postfix --workers 2     # postroom serve --workers 2

Guarantees: a run counts only if the final mailbox count equals N for every target (else the exit status
is 1 and the summary says which run failed); everything listens on and is sent to 127.0.0.1 only; each
target run is bounded by --timeout and the whole invocation by a hard alarm; servers, clients and temp dirs
are cleaned up on exit, Ctrl-C and SIGTERM (exit 130), and only processes this run started are stopped.
With ``--workers N`` Postroom is started as ``postroom serve --workers N`` (without it, ``serve`` as
configured: ``[node] workers``). Server CPU is the sum over the server's whole process tree (for
Postroom the supervisor and every worker; a process started during the load counts from zero).

Postroom runs with its filtering stack as ``postroom init`` writes it (``[protection]`` on, the built-in
engines), so it asks the DNS about every message's sender (SPF, DMARC, the client's reverse name): its
``[dns] nameservers`` is a loopback DNS server run by this harness (tests/support/dns_server.py, on a free
127.0.0.1 port), holding the sending host ``mx.<sender's domain>`` (A 127.0.0.1 and the PTR of
127.0.0.1, as a legitimate sender has) and nothing else: unsigned mail without SPF or DMARC records.
``--no-protection`` turns the stack off (``[protection] enabled = false``), as the figures measured
before protection existed were. bench/protection_load.py reuses this harness with signed mail and the
production engines. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # the repository: tests.support


from loadgen import LoadResult, LoadSpec, run_in_process
from tests.support.dns_server import DnsTestServer
from tests.support.postfix import PostfixLab, free_port, proc_tree, wait_port

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"  # the only address the benchmark listens on or sends to
SMTP_SOURCE = "/usr/sbin/smtp-source"
CLK_TCK = os.sysconf("SC_CLK_TCK")
STALL_SECONDS = 10.0  # no delivery progress this long after the load: look at the queue
SETUP_ALLOWANCE = 120.0  # per target run, on top of --timeout, for set-up and clean-up (hard alarm)
LOG_LEVELS_AT_LEAST_INFO = ("debug", "info")  # Postroom must log its per-message line


class Interrupted(BaseException):
    """SIGTERM/SIGINT or the hard alarm: stop, clean up, exit."""


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
    def final_count(self) -> int: ...
    def queue_summary(self) -> dict[str, Any]: ...
    def log_lines(self) -> int: ...
    def describe(self) -> str: ...
    def folder_counts(self) -> dict[str, int]: ...
    def check(self, messages: int) -> str | None: ...
    def notes(self) -> dict[str, Any]: ...


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


class PostfixTarget:
    """Postfix via tests/support/postfix.py; delivered = files in the Maildir (new/ and cur/)."""

    name = "postfix"

    def __init__(self, keep: bool, in_flow_delay: str | None) -> None:
        self.lab = PostfixLab(keep=keep, in_flow_delay=in_flow_delay)
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

    def final_count(self) -> int:
        return self.lab.delivered()

    def queue_summary(self) -> dict[str, Any]:
        return {"pending": self.lab.queue_size()}

    def log_lines(self) -> int:
        return _count_lines(self.lab.base / "log" / "maillog")

    def folder_counts(self) -> dict[str, int]:
        return {"Maildir": self.lab.delivered()}

    def check(self, messages: int) -> str | None:
        """What else a complete run must show beyond the count (bench/protection_load.py's targets)."""
        return None

    def notes(self) -> dict[str, Any]:
        """More figures of the run for the JSON (bench/protection_load.py's targets)."""
        return {}

    def describe(self) -> str:
        v = subprocess.run(["postconf", "-h", "mail_version"], capture_output=True, text=True, check=False)
        delay = self.lab.in_flow_delay or "1s (as shipped)"
        return (
            f"Postfix {v.stdout.strip()} (virtual(8) -> Maildir, in_flow_delay {delay}), dir {self.lab.base}"
        )


class PostroomTarget:
    """Postroom via its CLI: init, tenant/domain/mailbox add, serve (at log_level info, as shipped).

    Delivered count: the mailstore service of `postroom` opened in this process (one SQL query a poll),
    or with count="cli" `postroom mailbox show --json` (a new Python process each poll, about a second
    of CPU here). The final count is always taken with the CLI, independently of the polls.
    """

    name = "postroom"
    PASSWORD = "bench-load-password"

    def __init__(
        self,
        exe: str,
        keep: bool,
        count: str,
        workers: int | None = None,
        *,
        nameserver: str | None = None,
        protection: bool = True,
    ) -> None:
        self.exe = exe
        self.workers = workers  # `serve --workers N`; None: as configured ([node] workers)
        self.nameserver = nameserver  # `init --nameserver HOST:PORT`; None: the system's resolvers
        self.protection = protection  # False: `[protection] enabled = false`
        self.keep = keep
        self.count_mode = count  # api | cli
        self._app: Any = None  # postroom.app.App, opened on the first API count
        self._mailbox_id = 0  # the recipient's mailbox, resolved with the app
        self.base = Path()
        self.cfg = Path()
        self.port = 0
        self.recipient = "user@bench.example"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = Path()
        self.log_level = ""
        self._threads_at_start: dict[str, int] = {}

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
        submission, submissions, imap, admin = (free_port() for _ in range(4))
        self._cli(
            "init",
            str(node),
            "--service-domain",
            "bench.test",
            "--mx-listen",
            f"{HOST}:{self.port}",
            "--submission-listen",
            f"{HOST}:{submission}",
            "--submission-tls-listen",  # not the default 2465: another node may hold it
            f"{HOST}:{submissions}",
            "--imap-listen",
            f"{HOST}:{imap}",
            "--admin-listen",
            f"{HOST}:{admin}",
            *self.init_options(),
        )
        self.cfg = node / "postroom.toml"
        self._configure()
        self._check_log_level()
        c = str(self.cfg)
        self.populate(c)
        self.log_path = self.base / "serve.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [self.exe, "-c", c, "serve", *self.serve_options()],
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
                self._threads_at_start = self._thread_ticks()
                return
        raise RuntimeError(f"postroom serve did not listen on {HOST}:{self.port}: {self._log_tail()}")

    def serve_options(self) -> list[str]:
        """`postroom serve` options: `--workers N` when asked for."""
        return [] if self.workers is None else ["--workers", str(self.workers)]

    def init_options(self) -> list[str]:
        """More `postroom init` options: the harness's DNS server (bench/outbound_relay.py has its own)."""
        return [] if self.nameserver is None else ["--nameserver", self.nameserver]

    def populate(self, config: str) -> None:
        """The directory the load needs, through the CLI: tenant, domain, the recipient's mailbox."""
        self._cli("-c", config, "tenant", "add", "bench")
        self._cli("-c", config, "domain", "add", "bench.example", "--tenant", "bench", "--verified")
        self._cli(
            "-c", config, "mailbox", "add", self.recipient, "--password-stdin", stdin=self.PASSWORD + "\n"
        )

    def config_changes(self) -> dict[str, dict[str, Any]]:
        """What the harness changes in the generated config, by section: the connection filter's rate
        limits per client are lifted (the load comes from one address that stands for many senders;
        Postfix's defaults limit no client rate either), and with protection off the stack is off."""
        protection: dict[str, Any] = {
            "connections_per_minute": 1_000_000_000,
            "messages_per_minute": 1_000_000_000,
        }
        if not self.protection:
            protection["enabled"] = False
        return {"protection": protection}

    def _configure(self) -> None:
        import tomli_w

        document = tomllib.loads(self.cfg.read_text())
        for section, values in self.config_changes().items():
            document.setdefault(section, {}).update(values)
        self.cfg.write_text(tomli_w.dumps(document))

    def _check_log_level(self) -> None:
        """Refuse to measure a Postroom that logs less than info: its per-message line must be on."""
        from postroom.config import load_settings

        self.log_level = load_settings(self.cfg).log_level.lower()
        if self.log_level not in LOG_LEVELS_AT_LEAST_INFO:
            raise RuntimeError(f"{self.cfg}: log_level is {self.log_level!r}; the benchmark runs at info")

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-800:]
        except OSError:
            return ""

    def stop(self) -> None:
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
        return self._api_count() if self.count_mode == "api" else self.final_count()

    def app(self) -> Any:
        """Postroom's services opened in this process (`postroom.app.App`), and the recipient's mailbox
        id: opened once, closed by `stop`."""
        from postroom.model.scope import OPERATOR

        if self._app is None:
            from postroom.app import App
            from postroom.config import load_settings

            self._app = App.open(load_settings(self.cfg))
            self._mailbox_id = self._app.directory.get_recipient(OPERATOR, self.recipient).id
        return self._app

    def _api_count(self) -> int:
        """Count through Postroom's own mailstore service, in this process (one SQL query a poll)."""
        from postroom.model.scope import OPERATOR

        folders = self.app().mailstore.folders(OPERATOR, self._mailbox_id)
        return sum(folder.messages for folder in folders)

    def folder_counts(self) -> dict[str, int]:
        """Messages per folder of the mailbox, by the CLI contract (`mailbox show --json`)."""
        out = self._cli("-c", str(self.cfg), "mailbox", "show", self.recipient, "--json", timeout=60)
        data = json.loads(out)
        return {str(f.get("name", "?")): int(f.get("messages", 0)) for f in data.get("folders", [])}

    def final_count(self) -> int:
        """Messages in all folders of the mailbox, by the CLI contract (`mailbox show --json`)."""
        return sum(self.folder_counts().values())

    def check(self, messages: int) -> str | None:
        """What else a complete run must show beyond the count (bench/protection_load.py's targets)."""
        return None

    def notes(self) -> dict[str, Any]:
        """CPU seconds since the server listened, of its processes' main threads (each one's event loop:
        the SMTP sessions, protection) and of their other threads (the group commit's writer, lookups,
        blob writes)."""
        now, then = self._thread_ticks(), self._threads_at_start
        return {f"cpu_{kind}_s": round((now[kind] - then.get(kind, 0)) / CLK_TCK, 2) for kind in now}

    def _thread_ticks(self) -> dict[str, int]:
        ticks = {"event_loops": 0, "other_threads": 0}
        for pid in PostroomTarget.pids(self):  # Postroom's own processes (a subclass adds its engines)
            with contextlib.suppress(OSError):
                for tid in os.listdir(f"/proc/{pid}/task"):
                    kind = "event_loops" if int(tid) == pid else "other_threads"
                    ticks[kind] += _cpu_ticks_of(f"/proc/{pid}/task/{tid}/stat")
        return ticks

    def queue_summary(self) -> dict[str, Any]:
        out = self._cli("-c", str(self.cfg), "queue", "summary", "--json", timeout=60)
        result: dict[str, Any] = json.loads(out)
        return result

    def log_lines(self) -> int:
        return _count_lines(self.log_path)

    def describe(self) -> str:
        workers = "as configured" if self.workers is None else str(self.workers)
        protection = "on, built-in engines" if self.protection else "off"
        return (
            f"Postroom ({self.exe}, log_level {self.log_level}, workers {workers}, protection {protection}),"
            f" dir {self.base}, delivered counted by {self.count_mode}"
        )


# --------------------------------------------------------------------------------------------- DNS


def sender_domain(sender: str) -> str:
    return sender.rpartition("@")[2].lower()


def sending_host(sender: str) -> str:
    """The name the load's sending host greets with and has in the DNS: mx.<sender's domain>."""
    return f"mx.{sender_domain(sender)}"


def sender_zones(sender: str, records: str = "") -> dict[str, str]:
    """The harness DNS server's zones: the sender's domain with its sending host (A 127.0.0.1) and
    `records` (BIND text relative to the domain), the PTR of 127.0.0.1 naming that host, so the client
    has forward-confirmed reverse DNS as a legitimate sender does, and the root: any other name does
    not exist."""
    host = sending_host(sender)
    return {
        ".": "",  # every other name: NXDOMAIN, as on the Internet (not REFUSED)
        sender_domain(sender): f"{host.partition('.')[0]} A {HOST}\n{records}",
        "127.in-addr.arpa": f"1.0.0 PTR {host}.\n",
    }


def harness_dns(zones: dict[str, str]) -> DnsTestServer:
    """The loopback DNS server Postroom's `[dns] nameservers` names (started; stop it when done)."""
    return DnsTestServer(zones, host=HOST).start()


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


def _cpu_ticks_of(stat: str) -> int:
    """utime + stime in clock ticks from a /proc stat file (a process's or a thread's); 0 if gone."""
    try:
        with open(stat, "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, ValueError, IndexError):
        return 0


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
        self.peak_pss_by_command: dict[str, int] = {}  # KB by command name, at the sample of the peak
        self.peak_rss_by_command: dict[str, int] = {}  # KB by command name, at the sample of the peak
        self.baselined = False  # after `baseline`, a process seen for the first time counts from zero

    def sample(self) -> None:
        pids = self.target.pids()
        if self.samples % self.pss_every == 0:
            by_command: dict[str, int] = {}
            for p in pids:
                name = self.comm.get(p) or _cpu_ticks(p)[0] or "?"
                by_command[name] = by_command.get(name, 0) + _pss_kb(p)
            if sum(by_command.values()) > self.peak_pss_kb:
                self.peak_pss_kb = sum(by_command.values())
                self.peak_pss_by_command = by_command
        self.samples += 1
        total = 0
        rss_by_command: dict[str, int] = {}
        for pid in pids:
            rss = _status_kb(pid, b"VmRSS:")
            total += rss
            hwm = _status_kb(pid, b"VmHWM:")
            if hwm > self.hwm_kb.get(pid, 0):
                self.hwm_kb[pid] = hwm
            comm, ticks = _cpu_ticks(pid)
            if not comm:
                continue  # gone
            self.comm[pid] = comm
            rss_by_command[comm] = rss_by_command.get(comm, 0) + rss
            self.cpu_base.setdefault(pid, 0 if self.baselined else ticks)
            self.cpu[pid] = max(self.cpu.get(pid, 0), ticks)
        self.current_rss_kb = total
        if total > self.peak_rss_kb:
            self.peak_rss_kb = total
            self.peak_rss_by_command = rss_by_command
        self.nprocs_peak = max(self.nprocs_peak, len(pids))

    def baseline(self) -> None:
        """Sample now and count CPU from here on (excludes the server's start-up)."""
        self.sample()
        self.cpu_base = dict(self.cpu)
        self.baselined = True

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
    """Polls the mailbox count; remembers when the count first reached the goal.

    `reached_at` is the monotonic time at which the poll that first saw ``count >= goal`` returned (an
    upper bound: the goal was reached at most one poll interval plus one query earlier); `before` is the
    start of the previous poll (a lower bound).
    """

    def __init__(self, target: Target, interval: float, goal: int) -> None:
        super().__init__(daemon=True)
        self.target = target
        self.interval = interval
        self.goal = goal
        self.stop_event = threading.Event()
        self.count = 0
        self.polls = 0
        self.reached_at: float | None = None
        self.before: float | None = None
        self.error: str | None = None

    def run(self) -> None:
        last_start = time.monotonic()
        while not self.stop_event.is_set():
            t = time.monotonic()
            try:
                n = self.target.delivered()
                done = time.monotonic()
                self.count, self.polls, self.error = n, self.polls + 1, None
                if n >= self.goal and self.reached_at is None:
                    self.reached_at, self.before = done, last_start
                last_start = t
            except Exception as exc:
                self.error = str(exc)[:200]
            self.stop_event.wait(max(0.0, self.interval - (time.monotonic() - t)))


# --------------------------------------------------------------------------------------------- clients


class SmtpSourceClient:
    """Postfix's smtp-source (C); progress from its -c counter; no per-transaction latency.

    Without `reuse` it opens a new connection per message (as most internet senders do); with it, `-d`.
    It greets with the spec's HELO name (`-M`) and sends `-l size` octets of its own, or with the spec's
    `message_file` that pre-formatted message (`-F`: the same message every time).
    Its CPU comes from wait4() on its own pid, so nothing else the harness runs is counted.
    """

    def __init__(self, spec: LoadSpec, reuse: bool) -> None:
        content = ["-F", spec.message_file] if spec.message_file else ["-l", str(spec.size)]
        self.cmd = [SMTP_SOURCE, "-c", *content, "-m", str(spec.messages), "-s", str(spec.sessions)]
        self.cmd += ["-M", spec.helo, "-f", spec.sender, "-t", spec.recipient]
        if reuse:
            self.cmd.append("-d")
        self.cmd.append(f"{spec.host}:{spec.port}")
        self.counter = 0
        self.t_start = time.monotonic()
        self.t_end = 0.0
        self.returncode: int | None = None
        self.cpu_seconds = 0.0
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

    def _reap(self, options: int) -> bool:
        pid, status, usage = os.wait4(self.proc.pid, options)
        if pid == 0:
            return False
        self.t_end = time.monotonic()
        self.returncode = self.proc.returncode = os.waitstatus_to_exitcode(status)
        self.cpu_seconds = usage.ru_utime + usage.ru_stime
        return True

    def done(self) -> bool:
        return self.returncode is not None or self._reap(os.WNOHANG)

    def result(self, messages: int) -> LoadResult:
        self.reader.join(timeout=2)
        err = (self.proc.stderr.read() if self.proc.stderr else b"").decode(errors="replace").strip()
        r = LoadResult(t_start=self.t_start, t_last_accept=self.t_end, t_end=self.t_end)
        r.accepted, r.failed, r.cpu_seconds = self.counter, messages - self.counter, self.cpu_seconds
        if self.returncode:
            r.errors[f"smtp-source exit {self.returncode}: {err[-200:]}"] = 1
        return r

    def stop(self) -> None:
        if self.returncode is None:
            with contextlib.suppress(OSError):
                self.proc.kill()
            with contextlib.suppress(ChildProcessError):
                self._reap(0)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


# --------------------------------------------------------------------------------------------- a run


@dataclass
class RunResult:
    run: int
    position: int  # 1 = this target went first in its run
    target: str
    client: str
    messages: int
    size: int
    sessions: int
    workers: int | None = None  # Postroom's `serve --workers N`; None: as configured (or Postfix)
    server: str = ""
    error: str | None = None
    accepted: int = 0
    failed: int = 0
    delivered: int = 0  # last polled count
    final_count: int | None = None  # counted again at the end, independently of the polls
    complete: bool = False  # final_count == messages and no error
    accept_seconds: float | None = None
    deliver_seconds: float | None = None
    deliver_seconds_lower_bound: float | None = None
    accepted_per_s: float | None = None
    delivered_per_s: float | None = None
    polls: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    peak_rss_mb: float | None = None
    peak_pss_mb: float | None = None
    peak_rss_by_command_mb: dict[str, float] = field(default_factory=dict)  # at the sample of the peak
    peak_pss_by_command_mb: dict[str, float] = field(default_factory=dict)  # at the sample of the peak
    peak_processes: int = 0
    server_cpu_seconds: float | None = None
    server_cpu_ms_per_message: float | None = None  # server CPU s x 1000 / N
    client_cpu_seconds: float | None = None
    harness_cpu_seconds: float | None = None
    server_log_lines: int | None = None
    queue_after: dict[str, Any] | None = None
    server_cpu_by_command: dict[str, float] = field(default_factory=dict)
    folders: dict[str, int] = field(default_factory=dict)  # the final count by folder (Postfix: Maildir)
    notes: dict[str, Any] = field(default_factory=dict)  # the target's own figures (Target.notes)
    startup_seconds: float | None = None
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
        for k, v in r.errors.items():
            m.errors[k] = m.errors.get(k, 0) + v
    return m


def _mb(kb_by_name: dict[str, int]) -> dict[str, float]:
    return {name: round(kb / 1024, 1) for name, kb in sorted(kb_by_name.items(), key=lambda kv: -kv[1])}


def _own_cpu() -> float:
    """CPU seconds of this process (threads included)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    return me.ru_utime + me.ru_stime


def _queue_after(target: Target) -> dict[str, Any] | None:
    try:
        return target.queue_summary()
    except Exception as exc:
        return {"error": str(exc)[:200]}


def run_target(target: Target, args: argparse.Namespace, run: int, position: int) -> RunResult:
    res = RunResult(run, position, target.name, args.client, args.messages, args.size, args.concurrency)
    if isinstance(target, PostroomTarget):
        res.workers = target.workers
    tag = f"[run {run}/{args.runs} {target.name}]"
    sampler: ProcSampler | None = None
    poller: DeliveryPoller | None = None
    client: Any = None
    try:
        t = time.monotonic()
        print(f"{tag} setting up ...", flush=True)
        target.start()
        res.startup_seconds = time.monotonic() - t
        res.server = target.describe()
        print(
            f"{tag} {res.server}; MX on {HOST}:{target.port} (ready in {res.startup_seconds:.1f}s)",
            flush=True,
        )
        # One count before the load: the mailbox starts empty, and the counter's set-up (for Postroom,
        # importing and opening its mailstore service) is not done while the server is being measured.
        if (initial := target.delivered()) != 0:
            raise RuntimeError(f"the mailbox holds {initial} messages before the load")
        deadline = time.monotonic() + args.timeout
        cpu0 = _own_cpu()
        sampler = ProcSampler(target)
        sampler.baseline()
        sampler.start()
        poll_interval = args.poll_interval
        if isinstance(target, PostroomTarget) and target.count_mode == "cli":
            poll_interval = max(poll_interval, args.cli_poll_interval)
        poller = DeliveryPoller(target, poll_interval, args.messages)
        poller.start()
        spec = LoadSpec(
            HOST,
            target.port,
            args.messages,
            args.size,
            args.concurrency,
            args.sender,
            target.recipient,
            helo=sending_host(args.sender),
            message_file=getattr(args, "message_file", None),
        )
        if args.client == "smtp-source":
            client = SmtpSourceClient(spec, args.source_reuse)
            print(f"{tag} client: {' '.join(client.cmd)}", flush=True)
        else:
            client = run_in_process(spec, args.gen_procs)
            print(f"{tag} client: python asyncio generator, {args.gen_procs} process(es)", flush=True)
        t_start = time.monotonic()
        next_print = t_start + 1.0
        load: LoadResult | None = None
        last_delivered, last_progress = -1, t_start
        while True:
            now = time.monotonic()
            if now > deadline:
                raise BenchTimeout(f"timeout after {args.timeout:g}s")
            if load is None and client.done():
                load = (
                    client.result(args.messages) if args.client == "smtp-source" else _merge(client.results)
                )
            sent, acc, fail = client.progress()
            delivered = poller.count
            if now >= next_print:
                next_print += 1.0
                extra = f"  (poll error: {poller.error})" if poller.error else ""
                print(
                    f"{tag} {now - t_start:6.1f}s  sent {sent:6d}  accepted {acc:6d}  failed {fail:5d}  "
                    f"mailbox {delivered:6d}/{args.messages}  "
                    f"rss {sampler.current_rss_kb / 1024:7.1f} MB{extra}",
                    flush=True,
                )
            if load is not None and poller.reached_at is not None:
                break
            if delivered != last_delivered:
                last_delivered, last_progress = delivered, now
            elif load is not None and now - last_progress > STALL_SECONDS:
                last_progress = now
                q = target.queue_summary()
                if not q.get("pending") and not q.get("deferred"):
                    print(f"{tag} queue is empty but the mailbox holds {delivered}; giving up", flush=True)
                    break
            time.sleep(0.05)
        sampler.sample()
        res.server_cpu_seconds = sampler.cpu_seconds()
        res.server_cpu_by_command = sampler.cpu_by_command()
        poller.stop_event.set()
        poller.join(timeout=35)
        res.harness_cpu_seconds = _own_cpu() - cpu0
        res.accepted, res.failed, res.errors = load.accepted, load.failed, load.errors
        res.client_cpu_seconds = load.cpu_seconds
        t0 = load.t_start or t_start
        res.accept_seconds = load.t_last_accept - t0
        if load.accepted and res.accept_seconds > 0:
            res.accepted_per_s = load.accepted / res.accept_seconds
        res.delivered, res.polls = poller.count, poller.polls
        if poller.reached_at is not None:
            res.deliver_seconds = poller.reached_at - t0
            res.deliver_seconds_lower_bound = max(0.0, (poller.before or t0) - t0)
            res.delivered_per_s = args.messages / res.deliver_seconds
        if load.latencies:
            lat = sorted(load.latencies)
            res.p50_ms = percentile(lat, 50) * 1000
            res.p99_ms = percentile(lat, 99) * 1000
            res.max_ms = lat[-1] * 1000
        res.folders = target.folder_counts()
        res.final_count = sum(res.folders.values())
        if res.final_count != args.messages:
            res.error = f"final mailbox count {res.final_count} != N={args.messages}"
        elif poller.reached_at is None:
            res.error = "the polled count never reached N"
        elif problem := target.check(args.messages):
            res.error = problem
        res.notes = target.notes()
    except BenchTimeout as exc:
        res.error = str(exc)
        _sent, res.accepted, res.failed = client.progress()
        print(f"{tag} {exc}", flush=True)
    except Exception as exc:
        res.error = f"{exc.__class__.__name__}: {exc}"
        print(f"{tag} error: {res.error}", flush=True)
    finally:
        for th in (sampler, poller):
            if th is not None:
                th.stop_event.set()
        if client is not None:
            client.stop()
        for th in (sampler, poller):
            if th is not None and th.is_alive():
                th.join(timeout=35)
        if sampler is not None:
            res.peak_rss_mb = sampler.peak_rss_kb / 1024
            res.peak_pss_mb = sampler.peak_pss_kb / 1024
            res.peak_rss_by_command_mb = _mb(sampler.peak_rss_by_command)
            res.peak_pss_by_command_mb = _mb(sampler.peak_pss_by_command)
            res.peak_processes = sampler.nprocs_peak
            if res.server_cpu_seconds is None:
                res.server_cpu_seconds = sampler.cpu_seconds()
            res.server_cpu_ms_per_message = res.server_cpu_seconds * 1000 / args.messages
        if res.error is not None and poller is not None:
            res.delivered = poller.count
        if res.startup_seconds is not None:
            res.queue_after = _queue_after(target)
            res.server_log_lines = target.log_lines()
        res.complete = res.error is None and res.final_count == args.messages
        print(f"{tag} stopping server ...", flush=True)
        target.stop()
    verdict = "ok" if res.complete else f"FAILED: {res.error}"
    print(
        f"{tag} {verdict}: accepted {_fmt(res.accepted_per_s)} msg/s"
        f" ({_fmt(res.accept_seconds, 2)} s), delivered {_fmt(res.delivered_per_s)} msg/s"
        f" ({_fmt(res.deliver_seconds, 2)} s), mailbox {res.final_count}/{args.messages},"
        f" server CPU {_fmt(res.server_cpu_seconds, 2)} s",
        flush=True,
    )
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


def spread(values: list[float]) -> dict[str, float] | None:
    """Median, min and max of the values (None when there are none)."""
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def _fmt_spread(s: dict[str, float] | None, nd: int = 2) -> str:
    if s is None:
        return "n/a"
    return f"{s['median']:.{nd}f}  [{s['min']:.{nd}f} .. {s['max']:.{nd}f}]"


PER_RUN_COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("accepted msg/s", "accepted_per_s", 1),
    ("delivered msg/s", "delivered_per_s", 1),
    ("to accepted s", "accept_seconds", 2),
    ("to delivered s", "deliver_seconds", 2),
    ("server CPU s", "server_cpu_seconds", 2),
    ("CPU ms/msg", "server_cpu_ms_per_message", 2),
    ("client CPU s", "client_cpu_seconds", 2),
    ("harness CPU s", "harness_cpu_seconds", 2),
    ("p50 ms", "p50_ms", 1),
    ("p99 ms", "p99_ms", 1),
    ("peak PSS MB", "peak_pss_mb", 1),
    ("procs", "peak_processes", 0),
    ("log lines", "server_log_lines", 0),
    ("mailbox", "final_count", 0),
)

SUMMARY_METRICS: tuple[tuple[str, str, int], ...] = (
    ("accepted msg/s", "accepted_per_s", 1),
    ("delivered msg/s", "delivered_per_s", 1),
    ("server CPU s", "server_cpu_seconds", 2),
    ("CPU ms/msg", "server_cpu_ms_per_message", 2),
    ("p99 latency ms", "p99_ms", 1),
    ("peak PSS MB", "peak_pss_mb", 1),
)


def summarise(
    runs: list[list[Any]],
    names: list[str],
    metrics: tuple[tuple[str, str, int], ...] = SUMMARY_METRICS,
    ratio_of: tuple[str, ...] = ("accepted_per_s", "delivered_per_s"),
) -> dict[str, Any]:
    """Per target median/range of `metrics` over the valid runs, and the per-run ratio Postroom/Postfix
    of each attribute in `ratio_of` (bench/outbound_relay.py passes its own)."""
    valid = [run for run in runs if all(r.complete for r in run)]
    out: dict[str, Any] = {"runs": len(runs), "valid_runs": len(valid), "targets": {}}
    for name in names:
        results = [r for run in valid for r in run if r.target == name]
        out["targets"][name] = {
            attr: spread([v for r in results if (v := getattr(r, attr)) is not None])
            for _, attr, _ in metrics
        }
    if set(names) == {"postroom", "postfix"}:
        ratios: dict[str, list[float]] = {attr: [] for attr in ratio_of}
        for run in valid:
            pr, pf = (next(r for r in run if r.target == n) for n in ("postroom", "postfix"))
            for attr, values in ratios.items():
                a, b = getattr(pr, attr), getattr(pf, attr)
                if a is not None and b:
                    values.append(a / b)
        out["ratio_postroom_over_postfix"] = {k: spread(v) for k, v in ratios.items()}
        out["ratio_per_run"] = ratios
    return out


def print_runs(runs: list[list[Any]], columns: tuple[tuple[str, str, int], ...]) -> None:
    """The per-run table (one row per target run) and each run's errors."""
    header = ["run", "target", *(label for label, _, _ in columns), "ok"]
    table = [header]
    for run in runs:
        for r in run:
            cells = [_fmt(getattr(r, attr), nd) for _, attr, nd in columns]
            table.append([f"{r.run}.{r.position}", r.target, *cells, "yes" if r.complete else "NO"])
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for i, row in enumerate(table):
        print(
            "  ".join(
                c.ljust(w) if j < 2 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if i == 0:
            print("  ".join("-" * w for w in widths))
    for run in runs:
        for r in run:
            if r.error:
                print(f"  run {r.run} {r.target}: FAILED: {r.error}")
            for k, v in list(getattr(r, "errors", {}).items())[:5]:
                print(f"  run {r.run} {r.target}: {v} x {k}")


def print_summary(
    summary: dict[str, Any], metrics: tuple[tuple[str, str, int], ...], ratios: dict[str, str], note: str = ""
) -> None:
    """Median [min .. max] per target and metric, the ratios (label by attribute), a note, validity."""
    print(f"\nsummary over {summary['valid_runs']} valid run(s) of {summary['runs']}: median  [min .. max]")
    for name, values in summary["targets"].items():
        for label, attr, nd in metrics:
            if values[attr] is not None:
                print(f"  {name:9} {label:16} {_fmt_spread(values[attr], nd)}")
    ratio = summary.get("ratio_postroom_over_postfix")
    if ratio:
        width = max(len(label) for label in ratios.values())
        for attr, label in ratios.items():
            print(f"  ratio Postroom/Postfix {label:{width}}  {_fmt_spread(ratio[attr])}")
    if note:
        print(f"  {note}")
    if summary["valid_runs"] < summary["runs"]:
        print(f"  INVALID: {summary['runs'] - summary['valid_runs']} run(s) failed; see above")


def print_report(runs: list[list[RunResult]], summary: dict[str, Any], args: argparse.Namespace) -> None:
    print()
    print(
        f"MX load: N={args.messages} x S={args.size} bytes, C={args.concurrency} sessions, 1 recipient,"
        f" client={args.client}"
        + (" -d" if args.client == "smtp-source" and args.source_reuse else "")
        + f", {len(runs)} run(s), Postfix in_flow_delay {args.postfix_in_flow_delay or '1s (as shipped)'}"
        + f", Postroom workers {'as configured' if args.workers is None else args.workers}"
        + f", protection {'off' if args.no_protection else 'on (built-in engines, unsigned mail)'}"
    )
    print_runs(runs, PER_RUN_COLUMNS)
    print_summary(summary, SUMMARY_METRICS, {"accepted_per_s": "accepted", "delivered_per_s": "delivered"})


# --------------------------------------------------------------------------------------------- main


def parser(description: str | None = None, messages: int = 5000) -> argparse.ArgumentParser:
    """The harness's options (bench/protection_load.py adds its own and its defaults)."""
    if description is None and __doc__:
        description = __doc__.split("\n\n")[0]
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "-n", "--messages", type=int, default=messages, help=f"messages in total (default {messages})"
    )
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
        help="measure Postroom and Postfix, alternating order (overrides --target)",
    )
    p.add_argument(
        "--runs", type=int, help="runs, each on fresh server state (default 5 with --vs-postfix, else 1)"
    )
    p.add_argument(
        "--client",
        choices=["smtp-source", "python"],
        default="smtp-source",
        help="load generator: Postfix's smtp-source (default; no latency) or the python one (gives latency)",
    )
    p.add_argument(
        "--source-reuse", action="store_true", help="smtp-source -d: several messages per connection"
    )
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="postroom serve --workers N (default: as configured, [node] workers)",
    )
    p.add_argument("--gen-procs", type=int, default=1, help="processes for the python client (default 1)")
    p.add_argument(
        "--postfix-in-flow-delay",
        metavar="TIME",
        help="set Postfix's in_flow_delay (e.g. 0); default: as shipped (1s)",
    )
    p.add_argument(
        "--timeout", type=float, default=300.0, help="hard timeout per target run, s (default 300)"
    )
    p.add_argument(
        "--poll-interval",
        type=float,
        default=0.1,
        help="mailbox count poll interval, s (0.05..2; default 0.1)",
    )
    p.add_argument(
        "--postroom-count",
        choices=["api", "cli"],
        default="api",
        help="count Postroom's mailbox through its mailstore service in this process (default) or the CLI",
    )
    p.add_argument(
        "--cli-poll-interval",
        type=float,
        default=2.0,
        help="poll interval when counting with the CLI (default 2)",
    )
    p.add_argument(
        "--no-protection",
        action="store_true",
        help="Postroom with [protection] enabled = false (default: on, as postroom init writes it)",
    )
    p.add_argument("--sender", default="load@loadgen.bench.test", help="envelope sender")
    p.add_argument("--postroom", default=str(REPO / ".venv" / "bin" / "postroom"), help="postroom executable")
    p.add_argument("--keep", action="store_true", help="keep the temp dirs (for inspection)")
    p.add_argument(
        "--json", metavar="PATH", help="also write every run and the summary as JSON ('-' = stdout)"
    )
    return p


def parse_args(
    argv: list[str] | None = None, p: argparse.ArgumentParser | None = None, runs_vs_postfix: int = 5
) -> argparse.Namespace:
    """The options, checked; `--runs` defaults to `runs_vs_postfix` with --vs-postfix, else 1."""
    p = p or parser()
    a = p.parse_args(argv)
    if a.runs is None:
        a.runs = runs_vs_postfix if a.vs_postfix else 1
    if min(a.messages, a.size, a.concurrency, a.gen_procs, a.runs) < 1 or a.timeout <= 0:
        p.error("--messages, --size, --concurrency, --gen-procs, --runs and --timeout must be positive")
    if a.workers is not None and not 1 <= a.workers <= 64:
        p.error("--workers must be between 1 and 64")
    if a.messages > 1_000_000 or a.concurrency > 1000 or a.size > 50_000_000 or a.runs > 50:
        p.error("bounded: at most 1,000,000 messages, 1000 sessions, 50 MB per message, 50 runs")
    if not 0.05 <= a.poll_interval <= 2.0:
        p.error("--poll-interval must be between 0.05 and 2 seconds")
    if a.postfix_in_flow_delay is not None and not re.fullmatch(r"\d+[smhdw]?", a.postfix_in_flow_delay):
        p.error("--postfix-in-flow-delay takes a Postfix time: 0, 1s, 500ms is not accepted")
    if a.client == "smtp-source" and not Path(SMTP_SOURCE).exists():
        p.error(f"{SMTP_SOURCE} not found (apt-get install postfix), or use --client python")
    return a


def make_target(name: str, args: argparse.Namespace, nameserver: str) -> Target:
    if name == "postfix":
        return PostfixTarget(args.keep, args.postfix_in_flow_delay)
    return PostroomTarget(
        args.postroom,
        args.keep,
        args.postroom_count,
        args.workers,
        nameserver=nameserver,
        protection=not args.no_protection,
    )


def interruptible(names: list[str], runs: int, timeout: float) -> tuple[float, float, float]:
    """SIGTERM, SIGINT and a hard alarm raise `Interrupted`; prints the plan; returns the load before."""

    def on_signal(signum: int, _frame: object) -> None:
        for s in (signal.SIGINT, signal.SIGTERM):  # one interruption is enough; let clean-up finish
            signal.signal(s, signal.SIG_IGN)
        raise Interrupted(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGALRM, on_signal)
    hard = int(runs * len(names) * (timeout + SETUP_ALLOWANCE))
    signal.alarm(hard)
    load_before = os.getloadavg()
    print(
        f"{runs} run(s) x {', '.join(names)}, order alternating; hard timeout {hard}s;"
        f" load average {' '.join(f'{x:.2f}' for x in load_before)} on {os.cpu_count()} CPUs",
        flush=True,
    )
    return load_before


def alternating(
    names: list[str], runs: int, make: Callable[[str], Any], measure: Callable[[Any, int, int], Any]
) -> list[list[Any]] | None:
    """`runs` runs of every target, the order alternating from run to run, each target made fresh;
    None when interrupted (the target of the moment was stopped)."""
    results: list[list[Any]] = []
    live: list[Any] = []
    try:
        for k in range(1, runs + 1):
            order = names if k % 2 else names[::-1]
            run: list[Any] = []
            for position, name in enumerate(order, 1):
                target = make(name)
                live[:] = [target]
                run.append(measure(target, k, position))
                live.clear()
            results.append(run)
    except Interrupted as exc:
        print(f"\ninterrupted ({exc}); cleaning up", file=sys.stderr, flush=True)
        for t in live:
            try:
                t.stop()
            except Exception as e:
                print(f"cleanup of {t.name}: {e}", file=sys.stderr)
        return None
    finally:
        signal.alarm(0)
    return results


def write_json(
    path: str,
    params: dict[str, Any],
    runs: list[list[Any]],
    summary: dict[str, Any],
    load_before: tuple[float, float, float],
) -> None:
    """The whole result as JSON, to `path` or to standard output for `-`."""
    doc = {
        "params": params,
        "runs": [[asdict(r) for r in run] for run in runs],
        "summary": summary,
        "machine": {"nproc": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    text = json.dumps(doc, indent=2)
    if path == "-":
        print(text)
    else:
        Path(path).write_text(text + "\n")
        print(f"results written to {path}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = ["postroom", "postfix"] if args.vs_postfix else [args.target]
    load_before = interruptible(names, args.runs, args.timeout)
    dns = harness_dns(sender_zones(args.sender))
    try:
        nameserver = f"{HOST}:{dns.port}"
        runs = alternating(
            names,
            args.runs,
            lambda name: make_target(name, args, nameserver),
            lambda t, k, p: run_target(t, args, k, p),
        )
    finally:
        dns.stop()
    if runs is None:
        return 130
    summary = summarise(runs, names)
    print_report(runs, summary, args)
    if args.json:
        params = (
            "messages",
            "size",
            "concurrency",
            "client",
            "source_reuse",
            "gen_procs",
            "runs",
            "workers",
            "no_protection",
        )
        in_flow_delay = {"postfix_in_flow_delay": args.postfix_in_flow_delay or "1s (as shipped)"}
        write_json(
            args.json, {k: getattr(args, k) for k in params} | in_flow_delay, runs, summary, load_before
        )
    return 0 if summary["valid_runs"] == len(runs) else 1


if __name__ == "__main__":
    sys.exit(main())
