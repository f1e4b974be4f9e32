"""Outbound relay benchmark: Postroom against a stock Postfix, both relaying the same load to one sink.

Sends N messages of S bytes over C concurrent SMTP sessions with Postfix's ``smtp-source`` to
``relay@bench.example`` at the relay's MX on 127.0.0.1. The relay sends each message on to
``user@sink.example``, a remote domain: a loopback DNS server (tests/support/dns_server.py, in this
process, on 127.0.0.35:53) answers ``sink.example MX 10 mx.sink.example`` and ``mx.sink.example A
127.0.0.25``, where Postfix's ``smtp-sink`` listens on port 25 and counts every completed DATA
transaction (one new sink per target run). Measured from the start of the load:

- *accepted*: until smtp-source exited (after its last 250 and QUIT);
- *relayed*: until the sink's own counter (``smtp-sink -c``, read from its output as it changes) says
  N messages arrived. The sink also writes every message to a dump file (``-d``): after the run the files
  are counted and checked (N exactly, each to ``<user@sink.example>``, each at least S octets), and the
  sink must still hold N a second later (no duplicate arrived late). Nothing the relay says is believed.
- *relay latency p50/p99*: smtp-source cannot vary its messages (its Message-Ids are not unique), so
  arrivals cannot be attributed to messages. What is measured is the **order-matched latency**: for
  k = 1..N, the time the sink counted its k-th message minus the time smtp-source counted its k-th
  250 (both counters are read by this process from the tools' output as they change, on one clock). For a
  relay that delivers in arrival order this is each message's relay latency; otherwise it is how far the
  sink trails the client at each count (values below zero are possible and kept).

Postroom as the relay: ``postroom init`` with its ``[dns] nameservers`` set to the test DNS server (the
``--nameserver`` option of init; everything else as generated: log_level info, ``[delivery] smtp_port``
25), ``tenant add bench``, ``domain add bench.example --verified``, and a mail contact
``relay@bench.example`` whose external address is ``user@sink.example``: mail to a contact is queued
as remote mail and delivered by the node's scheduler and ``delivery.remote``. Postfix as the relay: the
private instance of tests/support/postfix.py (Debian's shipped main.cf and master.cf), with
``virtual_alias_domains = bench.example`` and ``virtual_alias_maps`` mapping ``relay@bench.example`` to
``user@sink.example`` instead of the lab's virtual mailbox, and its chroot's ``etc/resolv.conf`` naming
the test DNS server; it finds the sink by MX lookup like Postroom. bench/README.md lists every change.

Why port 25 on 127.0.0.25 and not a high port on 127.0.0.1: the sink on the standard port of an address
of its own needs no routing change in either relay (no ``smtp_port``, no ``transport_maps``), and Postfix
refuses an MX that is one of its own addresses ("loops back to myself"), which 127.0.0.1 is. The DNS
server needs port 53 because Postfix's resolver (resolv.conf) cannot name another. Both need root.
Postfix's smtp(8) asks that server for every delivery (MX, A, AAAA) where Postroom caches; the server
runs in this process and its CPU is the harness's, so ``--postfix-transport`` (a ``transport_maps``
nexthop ``[127.0.0.25]:25``, no DNS) is there to show what that costs Postfix.

**The hybrid-4 path** (``--hybrid4``, spec §4: MX at on-premises, outbound via the service): smtp-source
plays the organization's on-premises server and sends ``app@bench.example`` -> ``user@sink.example``
itself, so the relay relays for a source it trusts rather than sending to a contact. Postroom: tenant
bench with bench.example verified and an OnPremises inbound connector for 127.0.0.1/32 (``postroom
connector inbound add on-premises --tenant bench --type on-premises --sender-ip 127.0.0.1/32
--no-require-tls``: smtp-source speaks no TLS), so the connection is attributed to the tenant and,
the sender's domain being the tenant's, relayed (spec §3.6 (a)). Postfix: the same lab with no alias,
relaying for its own networks as shipped (``permit_mynetworks``; 127.0.0.0/8 is in ``mynetworks``).
The DNS server holds what the organization publishes for its on-premises server (``HYBRID4_ZONES``):
``mail.bench.example A 127.0.0.1``, the PTR of 127.0.0.1 naming it (forward-confirmed reverse DNS, as
a real mail server has and as bench/mx_load.py gives its sender) and bench.example's SPF record with
the on-premises address (``v=spf1 ip4:127.0.0.1 -all``, the record `scenario apply hybrid-4` prints
has that term). Without them every message's reverse lookup is an NXDOMAIN the test server sends
without an SOA, which no resolver may cache: a DNS query per message that no real deployment pays.

    .venv/bin/python bench/outbound_relay.py --vs-postfix            # 5 runs, N=2000 S=4096 C=10
    .venv/bin/python bench/outbound_relay.py --vs-postfix -n 200 --runs 1
    .venv/bin/python bench/outbound_relay.py --target postroom
    .venv/bin/python bench/outbound_relay.py --vs-postfix --hybrid4  # on-premises -> relay -> sink

Guarantees: a run counts only if the sink received exactly N messages for every target (else the exit
status is 1 and the summary says which run failed); everything listens on and is sent to loopback only;
each target run is bounded by --timeout and the whole invocation by a hard alarm; servers, sinks,
clients and temp dirs are cleaned up on exit, Ctrl-C and SIGTERM (exit 130), and only processes this
run started are stopped. See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # the repository: tests.support

from loadgen import LoadSpec
from mx_load import (
    SMTP_SOURCE,
    BenchTimeout,
    PostroomTarget,
    ProcSampler,
    SmtpSourceClient,
    _count_lines,
    _fmt,
    _own_cpu,
    alternating,
    interruptible,
    percentile,
    print_runs,
    print_summary,
    write_json,
)
from mx_load import summarise as summarise_runs
from tests.support.dns_server import DnsTestServer
from tests.support.postfix import DEBIAN_MAIN_CF, PostfixLab, lab_main_cf

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"  # the relays' MX
SINK_HOST = "127.0.0.25"  # mx.sink.example
SINK_PORT = 25
DNS_HOST = "127.0.0.35"  # the test DNS server, port 53 (Postfix's resolv.conf cannot name a port)
DNS_PORT = 53
SMTP_SINK = "/usr/sbin/smtp-sink"
SINK_DOMAIN = "sink.example"
SINK_RECIPIENT = f"user@{SINK_DOMAIN}"
RELAY_DOMAIN = "bench.example"
RELAY_ADDRESS = f"relay@{RELAY_DOMAIN}"  # Postroom: a mail contact; Postfix: a virtual alias
HYBRID4_SENDER = f"app@{RELAY_DOMAIN}"  # --hybrid4: on-premises mail from the tenant's domain
ON_PREMISES_CONNECTOR = "on-premises"  # --hybrid4: Postroom's inbound connector for smtp-source
SINK_ZONE = "@ 300 IN MX 10 mx\nmx 300 IN A " + SINK_HOST + "\n"
SENDER_DOMAIN = "loadgen.bench.test"  # served empty: a lookup of it is answered, never timed out
SETTLE_SECONDS = 1.0  # after the sink counted N: wait, and the sink must still hold N
STALL_SECONDS = 15.0  # no sink progress this long after the load: look at the relay's queue
SETUP_ALLOWANCE = 120.0  # per target run, on top of --timeout (hard alarm)


# --------------------------------------------------------------------------------------------- the sink


class Sink:
    """Postfix's smtp-sink on SINK_HOST:25 as `nobody`, counting (``-c``) and dumping (``-d``) each message.

    `arrivals` holds, for k = 1.., the monotonic time at which this process read the sink's counter at
    k or more (several arrivals read in one chunk share a time). `dumped()` counts the dump files.
    """

    def __init__(self, base: Path) -> None:
        self.base = base
        self.dump = base / "dump"
        self.proc: subprocess.Popen[bytes] | None = None
        self.count = 0
        self.sessions = 0  # SMTP sessions ended (the counter's `sess=`): how much the relay reused
        self.arrivals: list[float] = []
        self._reader: threading.Thread | None = None
        self.stderr = b""

    def start(self) -> None:
        if not Path(SMTP_SINK).exists():
            raise RuntimeError(f"{SMTP_SINK} not found (apt-get install postfix)")
        self.dump.mkdir(parents=True)
        shutil.chown(self.dump, "nobody")
        cmd = [
            SMTP_SINK,
            "-c",
            "-u",
            "nobody",
            "-d",
            f"{self.dump}/%H%M%S/",
            f"{SINK_HOST}:{SINK_PORT}",
            "256",
        ]
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = (self.proc.stderr.read() if self.proc.stderr else b"").decode(errors="replace")
                raise RuntimeError(f"smtp-sink exited ({self.proc.returncode}): {err.strip()[-300:]}")
            if _accepts(SINK_HOST, SINK_PORT):
                return
            time.sleep(0.05)
        raise RuntimeError(f"smtp-sink did not listen on {SINK_HOST}:{SINK_PORT}")

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        buf = b""
        while chunk := os.read(fd, 65536):
            now = time.monotonic()
            buf += chunk
            *done, buf = re.split(rb"[\r\n]", buf)
            for line in done:
                if sess := re.search(rb"sess=(\d+)", line):
                    self.sessions = max(self.sessions, int(sess.group(1)))
                m = re.search(rb"mesg=(\d+)", line)
                if m and int(m.group(1)) > self.count:
                    n = int(m.group(1))
                    self.arrivals.extend([now] * (n - self.count))
                    self.count = n

    def dumped(self) -> tuple[int, list[str]]:
        """(files in the dump, problems found in them): each must be to SINK_RECIPIENT."""
        files, problems = 0, list[str]()
        for root, _dirs, names in os.walk(self.dump):
            for name in names:
                files += 1
                path = Path(root) / name
                with open(path, "rb") as f:
                    head = f.read(4096)
                if b"X-Rcpt-Args: <" + SINK_RECIPIENT.encode() + b">" not in head and len(problems) < 5:
                    problems.append(f"{path.name}: not to <{SINK_RECIPIENT}>")
        return files, problems

    def sizes_below(self, size: int) -> int:
        """Dump files shorter than the message body smtp-source sent (a cut message)."""
        short = 0
        for root, _dirs, names in os.walk(self.dump):
            short += sum(1 for name in names if os.path.getsize(Path(root) / name) < size)
        return short

    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc is not None and self.proc.poll() is None else []

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self._reader is not None:
            self._reader.join(timeout=2)
        if self.proc is not None:
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()


def _accepts(host: str, port: int) -> bool:
    """Whether something accepts TCP on host:port (the connection is closed at once: no SMTP session
    is begun, so the sink's message counter is untouched)."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------------------------- relays


class Relay(Protocol):
    name: str
    port: int
    recipient: str

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def pids(self) -> list[int]: ...
    def queue_summary(self) -> dict[str, Any]: ...
    def log_lines(self) -> int: ...
    def describe(self) -> str: ...


class PostroomRelay(PostroomTarget):
    """Postroom set up by its CLI (mx_load.PostroomTarget) with the test DNS server and a mail contact
    `relay@bench.example` -> `user@sink.example`, or with `hybrid4` an OnPremises inbound connector
    for 127.0.0.1/32 and the sink's address itself; nothing else of the generated config is changed."""

    def __init__(self, exe: str, keep: bool, hybrid4: bool = False) -> None:
        super().__init__(exe, keep, "cli")
        self.hybrid4 = hybrid4
        self.recipient = SINK_RECIPIENT if hybrid4 else RELAY_ADDRESS

    def init_options(self) -> list[str]:
        return ["--nameserver", f"{DNS_HOST}:{DNS_PORT}"]

    def populate(self, config: str) -> None:
        from postroom.config import load_settings

        settings = load_settings(Path(config))
        if settings.delivery.smtp_port != SINK_PORT:
            raise RuntimeError(f"{config}: [delivery] smtp_port is {settings.delivery.smtp_port}, not 25")
        self._cli("-c", config, "tenant", "add", "bench")
        self._cli("-c", config, "domain", "add", RELAY_DOMAIN, "--tenant", "bench", "--verified")
        if self.hybrid4:
            self._cli(
                "-c",
                config,
                "connector",
                "inbound",
                "add",
                ON_PREMISES_CONNECTOR,
                "--tenant",
                "bench",
                "--type",
                "on-premises",
                "--sender-ip",
                f"{HOST}/32",
                "--no-require-tls",
            )
            return
        self._cli(
            "-c", config, "contact", "add", RELAY_ADDRESS, "--external", SINK_RECIPIENT, "--tenant", "bench"
        )

    def describe(self) -> str:
        route = f"OnPremises connector {HOST}/32" if self.hybrid4 else f"contact {RELAY_ADDRESS}"
        return f"Postroom ({self.exe}, log_level {self.log_level}, {route}), dir {self.base}"


def relay_main_cf(base: Path, uid: int, gid: int, transport: bool, alias: bool = True) -> str:
    """Debian's main.cf with the lab's changes, the lab's virtual mailbox replaced by one virtual alias
    that sends RELAY_ADDRESS on to SINK_RECIPIENT (bench/README.md lists every setting), or by nothing
    without `alias` (--hybrid4: the client sends to the sink's address, relayed for mynetworks); with
    `transport`, sink.example is routed to [SINK_HOST]:25 by transport_maps (no DNS lookups)."""
    settings = dict(DEBIAN_MAIN_CF)
    changes = {
        k: v
        for k, v in lab_main_cf(base, uid, gid, None, RELAY_DOMAIN).items()
        if not k.startswith("virtual_")
    }
    if alias:
        changes["virtual_alias_domains"] = RELAY_DOMAIN
        changes["virtual_alias_maps"] = f"texthash:{base / 'etc' / 'virtual'}"
    if transport:
        changes["transport_maps"] = f"texthash:{base / 'etc' / 'transport'}"
    settings.update(changes)
    return "".join(f"{k} = {v}\n" for k, v in settings.items())


@dataclass
class PostfixRelayLab(PostfixLab):
    """The lab Postfix as a relay: `relay_main_cf`, and its chroot resolving through the test DNS server."""

    transport: bool = False  # route the sink by transport_maps instead of its MX
    alias: bool = True  # relay@bench.example -> the sink (False: --hybrid4, the client names the sink)

    def setup(self) -> None:
        super().setup()
        owner = self.maildir.stat()  # the lab's Maildir belongs to `nobody`; the relay has no mailbox
        main_cf = relay_main_cf(self.base, owner.st_uid, owner.st_gid, self.transport, self.alias)
        (self.config_dir / "main.cf").write_text(main_cf)
        (self.config_dir / "virtual").write_text(f"{RELAY_ADDRESS} {SINK_RECIPIENT}\n")
        (self.config_dir / "transport").write_text(f"{SINK_DOMAIN} smtp:[{SINK_HOST}]:{SINK_PORT}\n")

    def _chroot(self) -> None:
        super()._chroot()
        # smtp(8) runs chrooted (Debian's master.cf) and reads the chroot's copy of resolv.conf.
        (self.base / "queue" / "etc" / "resolv.conf").write_text(f"nameserver {DNS_HOST}\n")


class PostfixRelay:
    """Postfix (tests/support/postfix.py) relaying RELAY_ADDRESS (or with `hybrid4` the sink's address,
    for its own networks) to the sink by MX lookup."""

    name = "postfix"

    def __init__(self, keep: bool, transport: bool, hybrid4: bool = False) -> None:
        self.lab = PostfixRelayLab(keep=keep, domain=RELAY_DOMAIN, transport=transport, alias=not hybrid4)
        self.port = 0
        self.recipient = SINK_RECIPIENT if hybrid4 else RELAY_ADDRESS

    def start(self) -> None:
        self.lab.start()
        self.port = self.lab.port

    def stop(self) -> None:
        self.lab.stop()

    def pids(self) -> list[int]:
        return self.lab.pids()

    def queue_summary(self) -> dict[str, Any]:
        return {"pending": self.lab.queue_size()}

    def log_lines(self) -> int:
        return _count_lines(self.lab.base / "log" / "maillog")

    def describe(self) -> str:
        v = subprocess.run(["postconf", "-h", "mail_version"], capture_output=True, text=True, check=False)
        route = f"transport_maps [{SINK_HOST}]:{SINK_PORT}" if self.lab.transport else "MX lookup"
        how = "virtual alias" if self.lab.alias else "relay for mynetworks"
        return f"Postfix {v.stdout.strip()} ({how} -> smtp(8) by {route}), dir {self.lab.base}"


# --------------------------------------------------------------------------------------------- a run


class TimedSmtpSource(SmtpSourceClient):
    """mx_load's smtp-source client, also keeping the time at which each 250 was counted."""

    def __init__(self, spec: LoadSpec) -> None:
        self.accepts: list[float] = []
        super().__init__(spec, reuse=False)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        buf = b""
        fd = self.proc.stdout.fileno()
        while chunk := os.read(fd, 4096):
            now = time.monotonic()
            buf += chunk
            *done, buf = re.split(rb"[\r\n]", buf)
            for tok in done:
                if tok.strip().isdigit() and int(tok) > self.counter:
                    self.accepts.extend([now] * (int(tok) - self.counter))
                    self.counter = int(tok)


@dataclass
class RunResult:
    run: int
    position: int  # 1 = this target went first in its run
    target: str
    messages: int
    size: int
    sessions: int
    server: str = ""
    error: str | None = None
    accepted: int = 0
    sink_count: int = 0  # the sink's own counter at the end
    sink_files: int | None = None  # dump files counted after the run
    sink_sessions: int | None = None  # SMTP sessions to the sink, counted after the relay stopped
    complete: bool = False
    accept_seconds: float | None = None
    relay_seconds: float | None = None
    accepted_per_s: float | None = None
    relayed_per_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    peak_pss_mb: float | None = None
    peak_processes: int = 0
    server_cpu_seconds: float | None = None
    sink_cpu_seconds: float | None = None
    client_cpu_seconds: float | None = None
    harness_cpu_seconds: float | None = None
    dns_queries: int = 0
    server_log_lines: int | None = None
    queue_after: dict[str, Any] | None = None
    server_cpu_by_command: dict[str, float] = field(default_factory=dict)
    startup_seconds: float | None = None


class _Pids:
    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    def pids(self) -> list[int]:
        return self.sink.pids()


def run_target(
    relay: Relay, dns: DnsTestServer, args: argparse.Namespace, run: int, position: int
) -> RunResult:
    res = RunResult(run, position, relay.name, args.messages, args.size, args.concurrency)
    tag = f"[run {run}/{args.runs} {relay.name}]"
    base = Path(tempfile.mkdtemp(prefix="relay-bench-sink-"))
    os.chmod(base, 0o755)
    sink = Sink(base)
    sampler: ProcSampler | None = None
    sink_sampler: ProcSampler | None = None
    client: TimedSmtpSource | None = None
    sessions0: int | None = None
    try:
        t = time.monotonic()
        print(f"{tag} setting up ...", flush=True)
        sink.start()
        relay.start()
        res.startup_seconds = time.monotonic() - t
        res.server = relay.describe()
        print(
            f"{tag} {res.server}; MX on {HOST}:{relay.port} (ready in {res.startup_seconds:.1f}s)", flush=True
        )
        dns.clear_queries()
        sessions0 = sink.sessions  # the readiness probes
        deadline = time.monotonic() + args.timeout
        cpu0 = _own_cpu()
        sampler = ProcSampler(relay)  # type: ignore[arg-type]  # needs only pids()
        sink_sampler = ProcSampler(_Pids(sink))  # type: ignore[arg-type]
        for s in (sampler, sink_sampler):
            s.baseline()
            s.start()
        spec = LoadSpec(
            HOST, relay.port, args.messages, args.size, args.concurrency, args.sender, relay.recipient
        )
        client = TimedSmtpSource(spec)
        print(f"{tag} client: {' '.join(client.cmd)}", flush=True)
        t_start = client.t_start
        next_print = t_start + 1.0
        done_at: float | None = None
        reached_at: float | None = None
        last_count, last_progress = -1, t_start
        while True:
            now = time.monotonic()
            if now > deadline:
                raise BenchTimeout(f"timeout after {args.timeout:g}s")
            if done_at is None and client.done():
                done_at = client.t_end
            if reached_at is None and sink.count >= args.messages:
                reached_at = sink.arrivals[args.messages - 1]
            if now >= next_print:
                next_print += 1.0
                print(
                    f"{tag} {now - t_start:6.1f}s  accepted {client.counter:6d}  "
                    f"at sink {sink.count:6d}/{args.messages}  rss {sampler.current_rss_kb / 1024:7.1f} MB",
                    flush=True,
                )
            if done_at is not None and reached_at is not None:
                break
            if sink.count != last_count:
                last_count, last_progress = sink.count, now
            elif done_at is not None and now - last_progress > STALL_SECONDS:
                last_progress = now
                q = relay.queue_summary()
                print(f"{tag} no arrival for {STALL_SECONDS:g}s; relay queue: {q}", flush=True)
                if not q.get("pending") and not q.get("deferred"):
                    raise RuntimeError(f"the relay's queue is empty but the sink holds {sink.count}")
            time.sleep(0.05)
        for s in (sampler, sink_sampler):
            s.sample()
        res.server_cpu_seconds = sampler.cpu_seconds()
        res.server_cpu_by_command = sampler.cpu_by_command()
        res.sink_cpu_seconds = sink_sampler.cpu_seconds()
        res.harness_cpu_seconds = _own_cpu() - cpu0
        res.dns_queries = dns.count()
        load = client.result(args.messages)
        res.accepted, res.client_cpu_seconds = load.accepted, load.cpu_seconds
        if load.errors:
            raise RuntimeError("; ".join(load.errors))
        res.accept_seconds = done_at - t_start
        res.accepted_per_s = load.accepted / res.accept_seconds if res.accept_seconds > 0 else None
        res.relay_seconds = reached_at - t_start
        res.relayed_per_s = args.messages / res.relay_seconds
        lat = sorted(s - a for s, a in zip(sink.arrivals, client.accepts, strict=False))
        if lat:
            res.p50_ms = percentile(lat, 50) * 1000
            res.p99_ms = percentile(lat, 99) * 1000
            res.max_ms = lat[-1] * 1000
        time.sleep(SETTLE_SECONDS)
        res.sink_count = sink.count
        res.sink_files, problems = sink.dumped()
        short = sink.sizes_below(args.size)
        if res.sink_count != args.messages or res.sink_files != args.messages:
            res.error = f"sink counted {res.sink_count}, dumped {res.sink_files} != N={args.messages}"
        elif problems or short:
            res.error = f"{short} cut message(s); " + "; ".join(problems)
        elif load.accepted != args.messages:
            res.error = f"smtp-source counted {load.accepted} 250s != N={args.messages}"
    except BenchTimeout as exc:
        res.error = str(exc)
        print(f"{tag} {exc}", flush=True)
    except Exception as exc:
        res.error = f"{exc.__class__.__name__}: {exc}"
        print(f"{tag} error: {res.error}", flush=True)
    finally:
        for s in (sampler, sink_sampler):
            if s is not None:
                s.stop_event.set()
        if client is not None:
            client.stop()
        for s in (sampler, sink_sampler):
            if s is not None and s.is_alive():
                s.join(timeout=35)
        if sampler is not None:
            res.peak_pss_mb = sampler.peak_pss_kb / 1024
            res.peak_processes = sampler.nprocs_peak
        res.sink_count = sink.count
        if res.startup_seconds is not None:
            try:
                res.queue_after = relay.queue_summary()
            except Exception as exc:
                res.queue_after = {"error": str(exc)[:200]}
            res.server_log_lines = relay.log_lines()
        res.complete = res.error is None
        print(f"{tag} stopping relay and sink ...", flush=True)
        try:
            relay.stop()
            if sessions0 is not None:  # a session counts when it ends: after the relay closed its cache
                time.sleep(0.3)
                res.sink_sessions = sink.sessions - sessions0
        finally:
            sink.stop()
            if not args.keep:
                shutil.rmtree(base, ignore_errors=True)
    verdict = "ok" if res.complete else f"FAILED: {res.error}"
    print(
        f"{tag} {verdict}: accepted {_fmt(res.accepted_per_s)} msg/s ({_fmt(res.accept_seconds, 2)} s),"
        f" relayed {_fmt(res.relayed_per_s)} msg/s ({_fmt(res.relay_seconds, 2)} s), sink {res.sink_count}"
        f"/{args.messages}, p99 {_fmt(res.p99_ms)} ms, server CPU {_fmt(res.server_cpu_seconds, 2)} s",
        flush=True,
    )
    return res


# --------------------------------------------------------------------------------------------- output

PER_RUN_COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("accepted msg/s", "accepted_per_s", 1),
    ("relayed msg/s", "relayed_per_s", 1),
    ("to relayed s", "relay_seconds", 2),
    ("p50 ms", "p50_ms", 1),
    ("p99 ms", "p99_ms", 1),
    ("server CPU s", "server_cpu_seconds", 2),
    ("sink CPU s", "sink_cpu_seconds", 2),
    ("client CPU s", "client_cpu_seconds", 2),
    ("harness CPU s", "harness_cpu_seconds", 2),
    ("DNS q", "dns_queries", 0),
    ("sink conns", "sink_sessions", 0),
    ("peak PSS MB", "peak_pss_mb", 1),
    ("procs", "peak_processes", 0),
    ("log lines", "server_log_lines", 0),
    ("at sink", "sink_count", 0),
)

SUMMARY_METRICS: tuple[tuple[str, str, int], ...] = (
    ("accepted msg/s", "accepted_per_s", 1),
    ("relayed msg/s", "relayed_per_s", 1),
    ("p50 ms", "p50_ms", 1),
    ("p99 ms", "p99_ms", 1),
    ("server CPU s", "server_cpu_seconds", 2),
    ("peak PSS MB", "peak_pss_mb", 1),
)


def summarise(runs: list[list[RunResult]], names: list[str]) -> dict[str, Any]:
    """Per relay median/range over the valid runs, and the per-run ratio Postroom/Postfix (mx_load's)."""
    return summarise_runs(runs, names, SUMMARY_METRICS, ("accepted_per_s", "relayed_per_s"))


def print_report(runs: list[list[RunResult]], summary: dict[str, Any], args: argparse.Namespace) -> None:
    print()
    what = "Hybrid-4 relay (on-premises as the client)" if args.hybrid4 else "Outbound relay"
    print(
        f"{what}: N={args.messages} x S={args.size} bytes, C={args.concurrency} sessions"
        f" (smtp-source, a connection per message) -> relay -> smtp-sink {SINK_HOST}:{SINK_PORT},"
        f" {len(runs)} run(s)"
    )
    print_runs(runs, PER_RUN_COLUMNS)
    print_summary(
        summary,
        SUMMARY_METRICS,
        {"accepted_per_s": "accepted", "relayed_per_s": "relayed"},
        "p50/p99: order-matched relay latency (k-th arrival at the sink minus k-th 250 at smtp-source)",
    )


# --------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("-n", "--messages", type=int, default=2000, help="messages in total (default 2000)")
    p.add_argument("-s", "--size", type=int, default=4096, help="message size in bytes (default 4096)")
    p.add_argument("-c", "--concurrency", type=int, default=10, help="concurrent SMTP sessions (default 10)")
    p.add_argument("--target", choices=["postroom", "postfix"], default="postroom", help="relay to measure")
    p.add_argument(
        "--vs-postfix", action="store_true", help="both relays, alternating order (overrides --target)"
    )
    p.add_argument("--runs", type=int, help="runs, each on fresh state (default 5 with --vs-postfix, else 1)")
    p.add_argument(
        "--timeout", type=float, default=300.0, help="hard timeout per target run, s (default 300)"
    )
    p.add_argument(
        "--postfix-transport",
        action="store_true",
        help=f"route {SINK_DOMAIN} in Postfix by transport_maps to [{SINK_HOST}]:{SINK_PORT} (no DNS);"
        " default: MX lookup through the test DNS server, as Postroom",
    )
    p.add_argument(
        "--hybrid4",
        action="store_true",
        help=f"the hybrid-4 path: smtp-source is the on-premises server sending {HYBRID4_SENDER} ->"
        f" {SINK_RECIPIENT}; Postroom relays for its OnPremises connector ({HOST}/32), Postfix for"
        " mynetworks",
    )
    p.add_argument(
        "--sender",
        help=f"envelope sender (default load@{SENDER_DOMAIN}; with --hybrid4 {HYBRID4_SENDER})",
    )
    p.add_argument("--postroom", default=str(REPO / ".venv" / "bin" / "postroom"), help="postroom executable")
    p.add_argument("--keep", action="store_true", help="keep the temp dirs (for inspection)")
    p.add_argument(
        "--json", metavar="PATH", help="also write every run and the summary as JSON ('-' = stdout)"
    )
    a = p.parse_args(argv)
    if a.sender is None:
        a.sender = HYBRID4_SENDER if a.hybrid4 else f"load@{SENDER_DOMAIN}"
    if a.runs is None:
        a.runs = 5 if a.vs_postfix else 1
    if min(a.messages, a.size, a.concurrency, a.runs) < 1 or a.timeout <= 0:
        p.error("--messages, --size, --concurrency, --runs and --timeout must be positive")
    if a.messages > 1_000_000 or a.concurrency > 1000 or a.size > 50_000_000 or a.runs > 50:
        p.error("bounded: at most 1,000,000 messages, 1000 sessions, 50 MB per message, 50 runs")
    for tool in (SMTP_SOURCE, SMTP_SINK):
        if not Path(tool).exists():
            p.error(f"{tool} not found (apt-get install postfix)")
    if os.geteuid() != 0:
        p.error("needs root: Postfix's master, the sink on port 25 and the DNS server on port 53")
    return a


def make_relay(name: str, args: argparse.Namespace) -> Relay:
    if name == "postfix":
        return PostfixRelay(args.keep, args.postfix_transport, args.hybrid4)
    return PostroomRelay(args.postroom, args.keep, args.hybrid4)


HYBRID4_ZONES = {
    "bench.example": 'mail A 127.0.0.1\n@ TXT "v=spf1 ip4:127.0.0.1 -all"\n',
    "127.in-addr.arpa": "1.0.0 PTR mail.bench.example.\n",
}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = ["postroom", "postfix"] if args.vs_postfix else [args.target]
    load_before = interruptible(names, args.runs, args.timeout)
    zones = {SINK_DOMAIN: SINK_ZONE, SENDER_DOMAIN: ""} | (HYBRID4_ZONES if args.hybrid4 else {})
    dns = DnsTestServer(zones, host=DNS_HOST)
    dns.port = DNS_PORT
    try:
        dns.start()
        runs = alternating(
            names,
            args.runs,
            lambda name: make_relay(name, args),
            lambda relay, k, position: run_target(relay, dns, args, k, position),
        )
    finally:
        dns.stop()
    if runs is None:
        return 130
    summary = summarise(runs, names)
    print_report(runs, summary, args)
    if args.json:
        params = {
            k: getattr(args, k)
            for k in ("messages", "size", "concurrency", "runs", "sender", "postfix_transport", "hybrid4")
        }
        params |= {
            "client": "smtp-source (a connection per message)",
            "sink": f"smtp-sink {SINK_HOST}:{SINK_PORT}",
        }
        write_json(args.json, params, runs, summary, load_before)
    return 0 if summary["valid_runs"] == len(runs) else 1


if __name__ == "__main__":
    sys.exit(main())
