"""Protection benchmarks: Postroom with its filtering stack on, against Postfix, on the mx_load harness.

Two comparisons, each the harness of bench/mx_load.py (smtp-source with a new connection per message,
both targets in the same run, the order alternating, fresh state every target run, the mailbox counted),
and one in-process measurement:

``builtin`` (``make bench BENCH=protection``): Postroom with ``[protection]`` on and its built-in
engines (as ``postroom init`` writes it) against Postfix as shipped, without filters. Every message is
the same DKIM-signed message (``smtp-source -F``) from ``load@loadgen.bench.test``, sent by the host
``mx.loadgen.bench.test``; the harness's loopback DNS server holds that domain's SPF (``v=spf1
ip4:127.0.0.1 -all``), its DKIM key (``s1._domainkey``, RSA 2048), its DMARC record (``p=reject``), the
sending host's A and MX records and the PTR of 127.0.0.1. A Postroom run is complete only when all N
messages are in the Inbox (none in Junk) and a delivered copy says ``spf=pass``, ``dkim=pass``,
``dmarc=pass`` and ``SFV:NSPM``.

``production`` (``make bench BENCH=protection-production``): the production engines on both sides, each
target run with its own private Rspamd (tests/support/rspamd.py: Debian's rule set, its own Redis) and
clamd (tests/support/clamd.py: a test signature database), started before the target:

- Postroom: ``spam_engine = "rspamd"`` (``/checkv2`` on Rspamd's normal worker) and ``malware_engine
  = "clamd"`` (one INSTREAM of the whole message on clamd's Unix socket), besides its own SPF, DKIM,
  DMARC, ARC, attachment filter and verdict. Rspamd's antivirus module is off here (Postroom calls
  clamd itself), but Rspamd still runs all its other modules on the message, its own SPF, DKIM and
  DMARC included: authentication is done twice on this side.
- Postfix as shipped plus ``smtpd_milters = inet:127.0.0.1:<port>``: Rspamd's proxy worker in milter
  mode (scanning itself) and, in that Rspamd, the antivirus module with a clamav scanner on the same
  kind of clamd's socket that sends the whole message (``scan_mime_parts = false``) and never answers
  from its Redis cache (``no_cache``: every message here is the same). Rspamd does SPF, DKIM, DMARC,
  spam scoring and the clamd scan; Postfix nothing else.

Both Rspamds are told to check senders on loopback as they check a stranger (``check_local = true``:
every client here is 127.0.0.1, which Rspamd otherwise exempts from SPF, DKIM and DMARC). A run is
complete only when clamd logged N clean scans and Rspamd logged N tasks whose symbols include
``R_SPF_ALLOW``, ``R_DKIM_ALLOW`` and ``DMARC_POLICY_ALLOW`` on each side, Postroom's N messages are in
its Inbox and no Postfix message carries ``X-Spam: Yes``. Server CPU and memory are the sum over the
target's processes and its Rspamd, Redis and clamd.

``stages``: CPU per message of each stage of Postroom's stack, in this process, on the same signed
message and DNS data: the foreign-header strip, the MIME walk, the client's verified reverse name,
SPF, DKIM/DMARC/ARC, each malware engine, the attachment filter, each spam engine, and the whole
``Protection.inspect`` as ``build_protection`` composes it (built-in engines); -n messages each,
process CPU time (``time.process_time``), the resolver's cache warm as in a node. For clamd and
Rspamd the wall time and the engine process's own CPU are given too.

    .venv/bin/python bench/protection_load.py builtin --vs-postfix            # 3 runs, N=3000, 2 workers
    .venv/bin/python bench/protection_load.py production --vs-postfix
    .venv/bin/python bench/protection_load.py builtin --target postroom -n 300
    .venv/bin/python bench/protection_load.py stages [-n 2000]

Every option of mx_load.py applies (``--runs``, ``--workers``, ``--json`` ...), with N=3000, 3 runs with
``--vs-postfix`` and ``--workers 2`` as the defaults; only the smtp-source client can send the signed
file. Guarantees, clean-up and exit status are mx_load.py's: everything listens on 127.0.0.1, each
target run is bounded, the engines and servers this run started are stopped on exit, Ctrl-C and
SIGTERM. See bench/README.md, "Protection".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # the repository: tests.support

import dns.exception
import dns.message
import dns.query
from mx_load import (
    CLK_TCK,
    HOST,
    PER_RUN_COLUMNS,
    SUMMARY_METRICS,
    PostfixTarget,
    PostroomTarget,
    RunResult,
    Target,
    _cpu_ticks,
    _fmt,
    alternating,
    harness_dns,
    interruptible,
    parser,
    print_runs,
    print_summary,
    run_target,
    sender_domain,
    sender_zones,
    sending_host,
    summarise,
    write_json,
)
from mx_load import parse_args as parse_harness_args
from tests.support.clamd import Clamd
from tests.support.dns_server import DnsTestServer
from tests.support.mail_auth import SigningKey, rsa_key
from tests.support.postfix import PostfixLab, free_port, proc_tree
from tests.support.rspamd import RspamdLab

from postroom.config.settings import ListenAddress

UNBOUND = "/usr/sbin/unbound"
ROUNDS = 5  # stages: each stack is measured in this many rounds, the stacks taking turns
T = TypeVar("T")
SELECTOR = "s1"
AUTH_PASS = ("spf=pass", "dkim=pass", "dmarc=pass")
RSPAMD_PASS = ("R_SPF_ALLOW", "R_DKIM_ALLOW", "DMARC_POLICY_ALLOW")
PARAGRAPHS = (
    "Hello team,",
    "The minutes of Tuesday's planning meeting are below. Please read them before Thursday and send "
    "corrections to the list by the end of the week.",
    "1. The release of the reporting module moves to the second week of next month, after the review "
    "of the export formats with the finance department.",
    "2. Maria will look at the translation of the help pages; Jonas takes the accessibility review of "
    "the new forms and reports back at the next meeting.",
    "3. The office will be closed on the public holiday; the support rota for that day is in the shared "
    "calendar, as usual.",
    "Thanks to everyone who joined, and to Priya for taking the notes.",
)


# --------------------------------------------------------------------------------------------- the mail


def sender_records(key: SigningKey) -> str:
    """The sender's domain as a legitimate sender publishes it (BIND text relative to the domain): SPF
    allowing 127.0.0.1, DMARC p=reject, the DKIM key, and its mail host as MX."""
    return (
        '@ TXT "v=spf1 ip4:127.0.0.1 -all"\n'
        '_dmarc TXT "v=DMARC1; p=reject"\n'
        f"@ MX 10 mx\n{key.selector}._domainkey TXT {_txt(key.record)}\n"
    )


def _txt(value: str) -> str:
    """A TXT value in zone-file syntax, split into strings of at most 255 octets."""
    return " ".join(f'"{value[i : i + 255]}"' for i in range(0, len(value), 255))


def signed_message(key: SigningKey, sender: str, recipient: str, size: int) -> bytes:
    """A plain-text message of about `size` octets (CRLF) from `sender`, DKIM-signed by `key`."""
    domain = sender_domain(sender)
    head = (
        f"From: Loadgen Team <{sender}>\r\nTo: <{recipient}>\r\nSubject: Minutes of the planning meeting\r\n"
        f"Date: {format_datetime(datetime.now().astimezone())}\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@{domain}>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
    ).encode()
    room = max(200, size - len(head) - 520)  # the DKIM-Signature field takes about 500 octets
    body = bytearray()
    while len(body) < room:
        for paragraph in PARAGRAPHS:
            body += _wrap(paragraph) + b"\r\n"
    return key.sign(head + bytes(body[:room]).rpartition(b"\r\n")[0] + b"\r\n")


def _wrap(text: str, width: int = 76) -> bytes:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    return "".join(f"{x}\r\n" for x in lines).encode()


def write_message_file(message: bytes, directory: Path) -> Path:
    """The message as smtp-source -F wants it: LF line ends (it sends each line with CRLF)."""
    path = directory / "signed.eml"
    path.write_bytes(message.replace(b"\r\n", b"\n"))
    return path


# --------------------------------------------------------------------------------------------- engines


class LoggingClamd(Clamd):
    """The tests' clamd (stream limit 25 MiB, Postroom's default) logging every clean scan, so the
    harness can count the scans each side made."""

    def __init__(self) -> None:
        super().__init__(stream_max_length="25M")

    def write_config(self) -> Path:
        config = super().write_config()
        config.write_text(config.read_text() + "LogClean yes\n")
        return config

    def scans(self) -> tuple[int, int]:
        """(clean scans, detections) in its log."""
        log = _read(self.base / "clamd.log")
        return len(re.findall(r": OK$", log, re.MULTILINE)), len(re.findall(r" FOUND$", log, re.MULTILINE))


class BenchRspamd(RspamdLab):
    """The tests' Rspamd lab, checking loopback senders like strangers (`check_local`), with its
    antivirus module on `clamd_socket` when given (whole message, no cache)."""

    def __init__(self, nameserver: ListenAddress, *, milter: bool, clamd_socket: str | None) -> None:
        super().__init__(nameserver, milter=milter)
        self.clamd_socket = clamd_socket

    def _write_config(self) -> None:
        super()._write_config()
        local = self.base / "local.d"
        with open(local / "options.inc", "a") as options:
            options.write("check_local = true;\n")
        if self.clamd_socket is not None:
            (local / "antivirus.conf").write_text(
                f'clamav {{ type = "clamav"; servers = "{self.clamd_socket}"; scan_mime_parts = false; '
                'no_cache = true; symbol = "CLAM_VIRUS"; action = "reject"; }\n'
            )

    def pids(self) -> list[int]:
        out = []
        for process in (self._rspamd, self._redis):
            if process is not None and process.poll() is None:
                out += proc_tree(process.pid)
        return out

    def tasks(self) -> list[str]:
        """Rspamd's log line of every message it scanned."""
        return [
            line for line in _read(self.base / "log" / "rspamd.log").splitlines() if "task_write_log" in line
        ]


def dns_notes(dns: DnsTestServer) -> dict[str, Any]:
    """The questions the harness's DNS server answered since the target started, by type and name."""
    queries = dns.queries
    return {
        "dns_queries": len(queries),
        "dns_by_question": dict(Counter(f"{q.rdtype} {q.name}" for q in queries).most_common(12)),
    }


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


class CachingResolver:
    """A private unbound on a free 127.0.0.1 port, forwarding every question to the harness's DNS
    server and caching the answers: the local caching resolver a production Rspamd runs beside (Rspamd
    caches no DNS answer itself: it asks about 9 questions a message). No DNSSEC validation (the test
    zones are unsigned), `test.` and `127.in-addr.arpa.` are not answered locally."""

    def __init__(self, upstream: DnsTestServer) -> None:
        self.upstream = upstream
        self.address = ListenAddress(HOST, free_port())
        self.base = Path()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        if not Path(UNBOUND).exists():
            raise RuntimeError(f"{UNBOUND} not found: apt-get install unbound (make bench installs it)")
        self.base = Path(tempfile.mkdtemp(prefix="unbound-bench-"))
        config = self.base / "unbound.conf"
        config.write_text(
            f"""server:
    interface: {HOST}
    port: {self.address.port}
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "{self.base}"
    pidfile: ""
    use-syslog: no
    logfile: "{self.base / "unbound.log"}"
    num-threads: 1
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    do-ip6: no
    module-config: "iterator"
    qname-minimisation: no
    local-zone: "test." nodefault
    local-zone: "127.in-addr.arpa." nodefault
forward-zone:
    name: "."
    forward-addr: {HOST}@{self.upstream.port}
remote-control:
    control-enable: no
"""
        )
        self.process = subprocess.Popen(
            [UNBOUND, "-d", "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        query = dns.message.make_query("localhost.", "A")  # answered by unbound itself: it is up
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"unbound exited ({self.process.returncode}): {_read(self.base / 'unbound.log')}"
                )
            with contextlib.suppress(OSError, dns.exception.Timeout):
                dns.query.udp(query, HOST, timeout=0.5, port=self.address.port)
                return
            time.sleep(0.05)
        raise RuntimeError(f"unbound did not answer on {self.address} within {timeout:g}s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self.base != Path():
            shutil.rmtree(self.base, ignore_errors=True)

    def pids(self) -> list[int]:
        return [self.process.pid] if self.process is not None and self.process.poll() is None else []


class Engines:
    """One target run's caching resolver, clamd and Rspamd (with its Redis): started before the
    target, stopped after it; the target's process set includes them."""

    def __init__(self, dns: DnsTestServer, *, milter: bool) -> None:
        self.resolver = CachingResolver(dns)
        self.clamd = LoggingClamd()
        self.milter = milter
        self.dns = dns
        self.rspamd: BenchRspamd | None = None

    def start(self) -> None:
        self.resolver.start()
        self.clamd.start()
        socket = str(self.clamd.socket_path) if self.milter else None  # Postroom calls clamd itself
        self.rspamd = BenchRspamd(self.resolver.address, milter=self.milter, clamd_socket=socket)
        self.rspamd.start()

    def stop(self) -> None:
        try:
            if self.rspamd is not None:
                self.rspamd.stop()
            self.clamd.stop()
        finally:
            self.resolver.stop()

    def pids(self) -> list[int]:
        clamd = self.clamd.process
        own = self.resolver.pids()
        own += proc_tree(clamd.pid) if clamd is not None and clamd.poll() is None else []
        return own + (self.rspamd.pids() if self.rspamd is not None else [])

    def check(self, messages: int) -> str | None:
        """None when clamd scanned every message clean and Rspamd scanned every message and saw
        SPF, DKIM and DMARC pass; else what is wrong."""
        clean, found = self.clamd.scans()
        if clean != messages or found:
            return f"clamd logged {clean} clean scans and {found} detections, not {messages} clean"
        tasks = self.rspamd.tasks() if self.rspamd is not None else []
        if len(tasks) != messages:
            return f"rspamd logged {len(tasks)} scans, not {messages}"
        missing = [symbol for symbol in RSPAMD_PASS if symbol not in tasks[0]]
        if missing or "CLAM_VIRUS" in tasks[0]:
            return f"rspamd's first scan lacks {missing}: {tasks[0][-600:]}"
        return None

    def describe(self) -> str:
        assert self.rspamd is not None
        antivirus = f"antivirus -> clamd {self.clamd.socket_path}" if self.milter else "antivirus off"
        via = (
            f"milter proxy on {HOST}:{self.rspamd.proxy_port}" if self.milter else f"normal {self.rspamd.url}"
        )
        return f"Rspamd ({via}, {antivirus}), clamd ({self.clamd.socket_path})"


# --------------------------------------------------------------------------------------------- targets


class ProtectedPostroom(PostroomTarget):
    """mx_load's Postroom with protection on (the built-in engines, or with `engines` Rspamd and clamd);
    complete when every message is in the Inbox and a delivered copy passed SPF, DKIM and DMARC."""

    def __init__(self, args: argparse.Namespace, dns: DnsTestServer, engines: Engines | None = None) -> None:
        nameserver = str(engines.resolver.address if engines is not None else dns.address)
        super().__init__(args.postroom, args.keep, args.postroom_count, args.workers, nameserver=nameserver)
        self.dns = dns
        self.engines = engines

    def start(self) -> None:
        if self.engines is not None:
            self.engines.start()
        super().start()
        self.dns.clear_queries()

    def notes(self) -> dict[str, Any]:
        return super().notes() | dns_notes(self.dns)

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            if self.engines is not None:
                self.engines.stop()

    def config_changes(self) -> dict[str, dict[str, Any]]:
        changes = super().config_changes()
        if self.engines is not None and self.engines.rspamd is not None:
            lab = self.engines.rspamd
            changes["protection"] |= {
                "spam_engine": "rspamd",
                "rspamd_url": lab.url,
                "rspamd_controller_url": lab.controller_url,
                "rspamd_password": lab.password,
                "malware_engine": "clamd",
                "clamd_socket": str(self.engines.clamd.socket_path),
            }
        return changes

    def pids(self) -> list[int]:
        return super().pids() + (self.engines.pids() if self.engines is not None else [])

    def check(self, messages: int) -> str | None:
        from postroom.model.scope import OPERATOR

        folders = self.folder_counts()
        if folders.get("Inbox", 0) != messages:
            return f"{folders.get('Inbox', 0)} of {messages} in the Inbox: {folders}"
        app = self.app()
        first = app.mailstore.list_messages(OPERATOR, self._mailbox_id, "Inbox")[0]
        raw: bytes = app.mailstore.export(OPERATOR, self._mailbox_id, first.uid, "Inbox")
        head = (
            raw.partition(b"\r\n\r\n")[0]
            .decode(errors="replace")
            .replace("\r\n\t", " ")
            .replace("\r\n ", " ")
        )
        missing = [v for v in (*AUTH_PASS, "SFV:NSPM") if v not in head]
        if missing:
            return f"a delivered copy lacks {missing}: {head[:800]}"
        return self.engines.check(messages) if self.engines is not None else None

    def describe(self) -> str:
        stack = "built-in engines" if self.engines is None else self.engines.describe()
        return f"{super().describe().replace('built-in engines', stack)}"


@dataclass
class MilterPostfixLab(PostfixLab):
    """The lab Postfix with one setting more: `smtpd_milters` (Rspamd's proxy worker)."""

    milter: str = ""

    def setup(self) -> None:
        super().setup()
        with open(self.config_dir / "main.cf", "a") as main_cf:
            main_cf.write(f"smtpd_milters = {self.milter}\n")


class MilterPostfix(PostfixTarget):
    """Postfix as shipped with Rspamd as its milter (and Rspamd's clamd); complete when the engines
    scanned every message and none was marked spam."""

    def __init__(self, args: argparse.Namespace, engines: Engines) -> None:
        super().__init__(args.keep, args.postfix_in_flow_delay)
        self.engines = engines
        self.milter = ""  # smtpd_milters, once Rspamd's proxy is up

    def notes(self) -> dict[str, Any]:
        return dns_notes(self.engines.dns)

    def start(self) -> None:
        self.engines.start()
        assert self.engines.rspamd is not None
        host, port = self.engines.rspamd.milter_address
        self.milter = f"inet:{host}:{port}"
        self.lab = MilterPostfixLab(
            keep=self.lab.keep, in_flow_delay=self.lab.in_flow_delay, milter=self.milter
        )
        super().start()
        self.engines.dns.clear_queries()

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            self.engines.stop()

    def pids(self) -> list[int]:
        return super().pids() + self.engines.pids()

    def check(self, messages: int) -> str | None:
        spam = 0
        for sub in ("new", "cur"):
            for path in (self.lab.maildir / sub).iterdir():
                with open(path, "rb") as f:
                    head = f.read(8192).partition(b"\n\n")[0]
                spam += b"\nX-Spam: Yes" in head
        if spam:
            return f"{spam} messages marked X-Spam: Yes"
        return self.engines.check(messages)

    def describe(self) -> str:
        return f"{super().describe()}, smtpd_milters {self.milter}: {self.engines.describe()}"


# --------------------------------------------------------------------------------------------- stages


class Seams:
    """The CPU this process spends in each seam of a `Protection` (what its constructor takes: SPF,
    the reverse name, authentication, the engines, the attachment filter, the header strip), summed
    over calls; `time.process_time` around each call, the event loop running nothing else."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = {}

    def timed(self, name: str, work: Callable[..., Awaitable[T]]) -> Callable[..., Coroutine[Any, Any, T]]:
        async def call(*args: Any, **kwargs: Any) -> T:
            began = time.process_time()
            try:
                return await work(*args, **kwargs)
            finally:
                self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - began

        return call

    def timed_sync(self, name: str, work: Callable[..., T]) -> Callable[..., T]:
        def call(*args: Any, **kwargs: Any) -> T:
            began = time.process_time()
            try:
                return work(*args, **kwargs)
            finally:
                self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - began

        return call


class _TimedAuthentication:
    def __init__(self, inner: Any, seams: Seams) -> None:
        self.authenticate = seams.timed("DKIM, DMARC, ARC", inner.authenticate)
        self.trusting = inner.trusting


class _TimedMalware:
    def __init__(self, inner: Any, seams: Seams) -> None:
        self.name = inner.name
        self.scan = seams.timed(f"malware: {inner.name}", inner.scan)


class _TimedSpam:
    def __init__(self, inner: Any, seams: Seams) -> None:
        self.name = inner.name
        self.check = seams.timed(f"spam: {inner.name}", inner.check)
        self.learn = inner.learn
        self.aclose = inner.aclose


def timed_protection(settings: Any, resolver: Any, seams: Seams) -> Any:
    """A `Protection` composed from `settings` as `app.filtering.build_protection` composes it, with
    each seam timed into `seams` (the MIME walk, the verdict and the headers are the rest)."""
    from functools import partial

    from postroom.app.filtering import spam_engine, verified_ptr
    from postroom.app.sending import authserv_id
    from postroom.protection.authentication import Authenticator, strip_foreign
    from postroom.protection.malware import (
        ArchiveLimits,
        BuiltinMalwareEngine,
        ClamdEngine,
        attachment_filter,
    )
    from postroom.protection.mime import MimeLimits
    from postroom.protection.pipeline import Protection
    from postroom.protection.spf import check_spf

    config = settings.protection
    receiver, server_id = settings.service.hostname, authserv_id(settings)

    async def spf(client_ip: str, mail_from: str, helo: str) -> Any:
        return await check_spf(resolver, client_ip, mail_from, helo, receiver=receiver)

    async def reverse(client_ip: str) -> str:
        return await verified_ptr(resolver, client_ip)

    if config.malware_engine == "clamd":
        malware: Any = ClamdEngine(config.clamd_socket, timeout=config.engine_timeout)
    else:
        malware = BuiltinMalwareEngine()
    limits = ArchiveLimits(config.max_archive_depth, config.max_archive_members, config.max_archive_octets)
    return Protection(
        authserv_id=server_id,
        spf=seams.timed("SPF (answers cached)", spf),
        authentication=_TimedAuthentication(Authenticator(resolver, server_id), seams),
        malware=_TimedMalware(malware, seams),
        spam=_TimedSpam(spam_engine(settings), seams),
        attachments=seams.timed_sync("attachment filter", partial(attachment_filter, limits=limits)),
        strip=seams.timed_sync("foreign headers removed", strip_foreign),
        mime_limits=MimeLimits(max_depth=config.max_mime_depth, max_parts=config.max_mime_parts),
        engine_timeout=config.engine_timeout,
        reverse=seams.timed("client's verified reverse name (cached)", reverse),
    )


@dataclass
class StackFigures:
    """One stack's figures per message: the whole `inspect` (this process's CPU and the wall time),
    each seam's CPU, and the engine processes' own CPU (clamd, Rspamd, Redis)."""

    stack: str
    inspect_cpu_us: float
    wall_us: float
    seams_us: dict[str, float]
    engine_cpu_us: float | None = None
    mime_walk_us: float = 0.0  # `parse_message` alone (inside the rest)


async def stage_figures(args: argparse.Namespace, message: bytes, dns: DnsTestServer) -> list[StackFigures]:
    """Postroom's stack on `message` (built-in engines; with --engines also Rspamd and clamd), -n
    inspections each in ROUNDS rounds, the stacks taking turns; each figure the median round."""
    from postroom.config.settings import DnsSettings, ProtectionSettings, Settings
    from postroom.dns import DnsResolver
    from postroom.model.policy import MailboxSenderLists, TenantProtection
    from postroom.model.verdicts import MessageFacts
    from postroom.protection.mime import MimeLimits, parse_message
    from postroom.protection.pipeline import RecipientFacts

    work = Path(tempfile.mkdtemp(prefix="protection-stages-"))
    settings = Settings(source=work / "postroom.toml", data_dir=work, dns=DnsSettings((dns.address,)))
    recipient = "user@bench.example"
    facts = MessageFacts(
        client_ip=HOST, helo=sending_host(args.sender), mail_from=args.sender, recipients=(recipient,)
    )
    inputs = ([RecipientFacts(recipient, 1, 1)], {1: TenantProtection(1)}, {1: MailboxSenderLists()})
    stacks: list[tuple[str, Any, Seams, list[int]]] = []
    seams = Seams()
    stacks.append(
        ("built-in engines", timed_protection(settings, DnsResolver(settings.dns), seams), seams, [])
    )
    engines = Engines(dns, milter=False) if args.engines else None
    try:
        if engines is not None:
            engines.start()
            assert engines.rspamd is not None and engines.clamd.process is not None
            lab = engines.rspamd
            production = replace(
                settings,
                dns=DnsSettings((engines.resolver.address,)),
                protection=ProtectionSettings(
                    spam_engine="rspamd",
                    rspamd_url=lab.url,
                    rspamd_controller_url=lab.controller_url,
                    rspamd_password=lab.password,
                    malware_engine="clamd",
                    clamd_socket=str(engines.clamd.socket_path),
                ),
            )
            seams = Seams()
            stack = timed_protection(production, DnsResolver(production.dns), seams)
            stacks.append(("Rspamd and clamd", stack, seams, engines.pids()))
        limits = MimeLimits()
        rounds: dict[str, list[StackFigures]] = {name: [] for name, *_ in stacks}
        for _name, stack, _seams, _pids in stacks:
            await stack.inspect(message, facts, *inputs)  # warms the caches and the connections
        per_round = max(1, args.messages // ROUNDS)
        for _ in range(ROUNDS):
            for name, stack, seams, pids in stacks:
                seams.cpu.clear()
                ticks = sum(_cpu_ticks(pid)[1] for pid in pids)
                cpu, wall = time.process_time(), time.perf_counter()
                for _ in range(per_round):
                    await stack.inspect(message, facts, *inputs)
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                engine = (sum(_cpu_ticks(pid)[1] for pid in pids) - ticks) / CLK_TCK if pids else None
                mime = time.process_time()
                for _ in range(per_round):
                    parse_message(message, limits)
                mime = time.process_time() - mime
                rounds[name].append(
                    StackFigures(
                        name,
                        cpu / per_round * 1e6,
                        wall / per_round * 1e6,
                        {seam: spent / per_round * 1e6 for seam, spent in seams.cpu.items()},
                        None if engine is None else engine / per_round * 1e6,
                        mime / per_round * 1e6,
                    )
                )
        for _name, stack, _seams, _pids in stacks:
            await stack.spam_engine.aclose()
    finally:
        if engines is not None:
            engines.stop()
        shutil.rmtree(work, ignore_errors=True)
    return [_median_round(figures) for figures in rounds.values()]


def _median_round(figures: list[StackFigures]) -> StackFigures:
    engine = [f.engine_cpu_us for f in figures if f.engine_cpu_us is not None]
    return StackFigures(
        figures[0].stack,
        statistics.median(f.inspect_cpu_us for f in figures),
        statistics.median(f.wall_us for f in figures),
        {seam: statistics.median(f.seams_us.get(seam, 0.0) for f in figures) for seam in figures[0].seams_us},
        statistics.median(engine) if engine else None,
        statistics.median(f.mime_walk_us for f in figures),
    )


def stages(args: argparse.Namespace, message: bytes, dns: DnsTestServer) -> int:
    """Print (and with --json write) the CPU per message of each stage."""
    load_before = os.getloadavg()
    figures = asyncio.run(stage_figures(args, message, dns))
    print(
        f"Protection stages: {args.messages} inspections a stack ({ROUNDS} rounds, the median) of one"
        f" signed message of {len(message)} octets; load average {' '.join(f'{x:.2f}' for x in load_before)}"
    )
    for f in figures:
        print(f"\n{f.stack}: Protection.inspect {f.inspect_cpu_us:.0f} µs CPU a message", end="")
        print(f" ({f.wall_us:.0f} µs wall)")
        for seam, us in sorted(f.seams_us.items(), key=lambda kv: -kv[1]):
            print(f"  {seam:52}{us:>8.0f} µs")
        rest = f.inspect_cpu_us - sum(f.seams_us.values())
        label = "the rest: MIME walk, verdict, headers, tasks"
        print(f"  {label:52}{rest:>8.0f} µs (MIME walk alone {f.mime_walk_us:.0f})")
        if f.engine_cpu_us is not None:
            print(f"  {'engine processes (Rspamd, Redis, clamd, unbound)':52}{f.engine_cpu_us:>8.0f} µs")
    if args.json:
        doc = {"stacks": [asdict(f) for f in figures], "loadavg_before": load_before, "octets": len(message)}
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
    return 0


# --------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = parser(__doc__.split("\n\n")[0] if __doc__ else None, messages=3000)
    p.add_argument(
        "comparison",
        choices=("builtin", "production", "stages"),
        help="builtin: built-in engines vs Postfix; production: Rspamd and clamd on both sides; "
        "stages: CPU per message of each protection stage, in process",
    )
    p.add_argument(
        "--engines",
        action="store_true",
        help="stages: also clamd, Rspamd and the whole stack with them (starts a private clamd and Rspamd)",
    )
    p.set_defaults(workers=2)
    args = parse_harness_args(argv, p, runs_vs_postfix=3)
    if args.client != "smtp-source":
        p.error("only smtp-source sends the signed message (-F)")
    if args.no_protection:
        p.error("--no-protection: this benchmark is about protection (bench/mx_load.py has it)")
    return args


def make_target(name: str, args: argparse.Namespace, dns: DnsTestServer) -> Target:
    production = args.comparison == "production"
    if name == "postfix":
        return (
            MilterPostfix(args, Engines(dns, milter=True))
            if production
            else PostfixTarget(args.keep, args.postfix_in_flow_delay)
        )
    engines = Engines(dns, milter=False) if production else None
    return ProtectedPostroom(args, dns, engines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    key = rsa_key(sender_domain(args.sender), SELECTOR)
    message = signed_message(key, args.sender, "user@bench.example", args.size)
    names = ["postroom", "postfix"] if args.vs_postfix else [args.target]
    work = Path(tempfile.mkdtemp(prefix="protection-bench-"))
    args.message_file = str(write_message_file(message, work))
    dns = harness_dns(sender_zones(args.sender, sender_records(key)))
    try:
        if args.comparison == "stages":
            return stages(args, message, dns)
        load_before = interruptible(names, args.runs, args.timeout)
        runs = alternating(
            names,
            args.runs,
            lambda name: make_target(name, args, dns),
            lambda t, k, p: run_target(t, args, k, p),
        )
    finally:
        dns.stop()
        with contextlib.suppress(OSError):
            os.unlink(args.message_file)
            work.rmdir()
    if runs is None:
        return 130
    summary = summarise(runs, names)
    print_report(runs, summary, args, len(message))
    if args.json:
        params = {
            k: getattr(args, k) for k in ("comparison", "messages", "size", "concurrency", "runs", "workers")
        }
        params |= {"message_octets": len(message), "client": "smtp-source -F (a connection per message)"}
        write_json(args.json, params, runs, summary, load_before)
    return 0 if summary["valid_runs"] == len(runs) else 1


def print_report(
    runs: list[list[RunResult]], summary: dict[str, Any], args: argparse.Namespace, octets: int
) -> None:
    print()
    print(
        f"Protection ({args.comparison}): N={args.messages} signed messages of {octets} octets,"
        f" C={args.concurrency} sessions, smtp-source -F (a connection per message), {len(runs)} run(s),"
        f" Postroom workers {args.workers}"
    )
    print_runs(runs, PER_RUN_COLUMNS)
    for run in runs:
        for r in run:
            print(f"  run {r.run} {r.target}: folders {r.folders}; {r.notes}")
            print(f"    CPU s by process {r.server_cpu_by_command}")
            print(f"    at the peak, PSS MB by process {r.peak_pss_by_command_mb}")
            rss = r.peak_rss_by_command_mb
            print(f"    at the peak, RSS MB by process {rss} (peak sum {_fmt(r.peak_rss_mb)})")
    print_summary(summary, SUMMARY_METRICS, {"accepted_per_s": "accepted", "delivered_per_s": "delivered"})


if __name__ == "__main__":
    sys.exit(main())
