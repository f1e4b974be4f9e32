"""SMTP load generator: raw SMTP over asyncio sockets, run in its own process.

Each of C sessions opens one connection, sends EHLO, then its share of the N transactions back to back
(MAIL, RCPT, DATA as one pipelined group when the server offers PIPELINING, then the body and the final
dot), then QUIT. The latency of a transaction is from writing MAIL to reading the reply after the body.
Progress is published through shared counters so the parent can print it without touching the
generator's event loop; the result (latencies, timings, errors, CPU used) comes back through a queue.

``run_in_process()`` starts it with multiprocessing so its CPU does not compete with the parent for
a GIL; the server under test still shares the machine's cores with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import os
import queue
import resource
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.sharedctypes import Synchronized
from typing import Any

SENT, ACCEPTED, FAILED = 0, 1, 2
MAX_LINE = 65536


@dataclass
class LoadSpec:
    host: str
    port: int
    messages: int
    size: int
    sessions: int
    sender: str
    recipient: str
    helo: str = "loadgen.bench.test"
    message_file: str | None = None  # smtp-source -F: this pre-formatted message instead of -l size


@dataclass
class LoadResult:
    t_start: float = 0.0  # time.monotonic() before the first connect (system-wide clock)
    t_last_accept: float = 0.0  # time.monotonic() of the last 250 after DATA
    t_end: float = 0.0
    accepted: int = 0
    failed: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds, accepted transactions only
    errors: dict[str, int] = field(default_factory=dict)
    cpu_seconds: float = 0.0
    pipelining: bool = False


def build_message(size: int, recipient: str, sender: str) -> tuple[bytes, bytes]:
    """A message of about `size` bytes (CRLF, no line starting with a dot) split as (head, tail).

    The Message-ID goes between head and tail so each message is unique without copying the body.
    """
    head = f"From: <{sender}>\r\nTo: <{recipient}>\r\nSubject: mx load\r\nMessage-ID: <".encode()
    tail_hdr = b"@loadgen.bench.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n"
    body = bytearray()
    room = max(0, size - len(head) - len(tail_hdr) - 12)
    line = b"The quick brown fox jumps over the lazy dog 0123456789 abcdefghijklmnopq\r\n"
    while len(body) + len(line) <= room:
        body += line
    if len(body) < room:
        body += b"x" * max(0, room - len(body) - 2) + b"\r\n"
    return head, tail_hdr + bytes(body) + b".\r\n"


async def _reply(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Read one (possibly multi-line) SMTP reply; return (code, last line)."""
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("connection closed by server")
        if len(line) < 4 or line[3:4] != b"-":
            try:
                return int(line[:3]), line
            except ValueError as exc:
                raise ConnectionError(f"bad reply {line[:40]!r}") from exc


class _Gen:
    def __init__(self, spec: LoadSpec, counters: Any, result: LoadResult) -> None:
        self.spec = spec
        self.counters = counters
        self.result = result
        self.errors: Counter[str] = Counter()
        self.head, self.tail = build_message(spec.size, spec.recipient, spec.sender)
        self.mail = f"MAIL FROM:<{spec.sender}>\r\n".encode()
        self.rcpt = f"RCPT TO:<{spec.recipient}>\r\n".encode()
        self.seq = 0

    def _fail(self, n: int, why: str) -> None:
        self.counters[FAILED] += n
        self.result.failed += n
        self.errors[why[:80]] += n

    async def session(self, sid: int, count: int) -> None:
        if count <= 0:
            return
        spec = self.spec
        try:
            reader, writer = await asyncio.open_connection(spec.host, spec.port, limit=MAX_LINE)
        except OSError as exc:
            self._fail(count, f"connect: {exc.__class__.__name__}")
            return
        done = 0
        try:
            code, line = await _reply(reader)
            if code != 220:
                raise ConnectionError(f"greeting {line[:60]!r}")
            writer.write(f"EHLO {spec.helo}\r\n".encode())
            pipelining = False
            while True:
                line = await reader.readline()
                if not line:
                    raise ConnectionError("closed after EHLO")
                if line[4:14].upper() == b"PIPELINING":
                    pipelining = True
                if line[3:4] != b"-":
                    break
            if not line.startswith(b"250"):
                raise ConnectionError(f"EHLO {line[:60]!r}")
            self.result.pipelining = pipelining
            group = self.mail + self.rcpt + b"DATA\r\n"
            lat = self.result.latencies
            ctr = self.counters
            clock = time.monotonic
            for _ in range(count):
                self.seq += 1
                msg = self.head + f"{self.seq}.{sid}.{os.getpid()}".encode() + self.tail
                t0 = clock()
                if pipelining:
                    writer.write(group)
                    ctr[SENT] += 1
                    c_mail = (await _reply(reader))[0]
                    c_rcpt = (await _reply(reader))[0]
                    c_data, _ = await _reply(reader)
                else:
                    ctr[SENT] += 1
                    writer.write(self.mail)
                    c_mail = (await _reply(reader))[0]
                    writer.write(self.rcpt)
                    c_rcpt = (await _reply(reader))[0]
                    writer.write(b"DATA\r\n")
                    c_data, _ = await _reply(reader)
                if c_data != 354:
                    done += 1
                    self._fail(1, f"MAIL {c_mail} RCPT {c_rcpt} DATA {c_data}")
                    continue
                writer.write(msg)
                c_end, l_end = await _reply(reader)
                done += 1
                if c_end == 250 and c_mail == 250 and c_rcpt == 250:
                    t1 = clock()
                    lat.append(t1 - t0)
                    ctr[ACCEPTED] += 1
                    self.result.accepted += 1
                    self.result.t_last_accept = t1
                else:
                    self._fail(1, f"after DATA: {l_end[:60].decode('ascii', 'replace').strip()}")
            writer.write(b"QUIT\r\n")
            with contextlib.suppress(TimeoutError, ConnectionError):
                await asyncio.wait_for(_reply(reader), 5.0)
        except (OSError, ConnectionError) as exc:
            self._fail(count - done, f"session: {exc}")
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def run(self, session_ids: list[int], shares: list[int]) -> None:
        self.result.t_start = time.monotonic()
        await asyncio.gather(*(self.session(s, n) for s, n in zip(session_ids, shares, strict=True)))
        self.result.t_end = time.monotonic()


def shares(total: int, parts: int) -> list[int]:
    """Split total into `parts` near-equal integers."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _child(spec: LoadSpec, session_ids: list[int], share: list[int], counters: Any, out: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
    result = LoadResult()
    gen = _Gen(spec, counters, result)
    try:
        asyncio.run(gen.run(session_ids, share))
    except Exception as exc:
        gen.errors[f"generator: {exc!r}"[:80]] += 1
    result.errors = dict(gen.errors)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    result.cpu_seconds = ru.ru_utime + ru.ru_stime
    out.put(result)


@dataclass
class GeneratorHandle:
    procs: list[mp.process.BaseProcess]
    counters: list[Any]
    queue: Any
    results: list[LoadResult] = field(default_factory=list)

    def progress(self) -> tuple[int, int, int]:
        s = a = f = 0
        for c in self.counters:
            s, a, f = s + c[SENT], a + c[ACCEPTED], f + c[FAILED]
        return s, a, f

    def done(self) -> bool:
        """True once every worker has reported (or died). Drains the result queue as it goes, so a
        worker never blocks on a full pipe while exiting."""
        while len(self.results) < len(self.procs):
            try:
                self.results.append(self.queue.get_nowait())
            except queue.Empty:
                break
        if len(self.results) == len(self.procs):
            for p in self.procs:  # they exit right after reporting; reap them (CPU accounting)
                p.join(timeout=5)
            return True
        if any(p.is_alive() for p in self.procs):
            return False
        try:  # all exited: pick up what is still in flight
            while len(self.results) < len(self.procs):
                self.results.append(self.queue.get(timeout=2.0))
        except queue.Empty:
            pass
        return True

    def stop(self) -> None:
        for p in self.procs:
            if p.is_alive():
                p.terminate()
        for p in self.procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join(timeout=2)


def run_in_process(spec: LoadSpec, processes: int = 1) -> GeneratorHandle:
    """Start the generator in `processes` worker processes (sessions split between them)."""
    ctx = mp.get_context("spawn")  # the parent has threads; do not fork them
    results = ctx.Queue()
    processes = max(1, min(processes, spec.sessions))
    per_proc_sessions = shares(spec.sessions, processes)
    all_shares = shares(spec.messages, spec.sessions)
    procs: list[mp.process.BaseProcess] = []
    counters: list[Synchronized[int] | Any] = []
    sid = 0
    for k in range(processes):
        ids = list(range(sid, sid + per_proc_sessions[k]))
        sid += per_proc_sessions[k]
        ctr = ctx.RawArray("q", 3)
        procs.append(
            ctx.Process(
                target=_child, args=(spec, ids, [all_shares[i] for i in ids], ctr, results), daemon=True
            )
        )
        counters.append(ctr)
    handle = GeneratorHandle(procs, counters, results)
    for proc in procs:
        proc.start()
    return handle
