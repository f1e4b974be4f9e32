"""Blob store benchmark: what `[node] blob_store = "database"` costs against the files, at 4 KB and 1 MB.

Two parts, each a median over --runs runs (default 5), the stores alternating in every run:

- *store*: `put` then `get` of --count distinct blobs of each size, one after another in this process
  (latency: the median of one operation; throughput: blobs and MB a second over the whole batch), on
  the files store (a temp dir), the database store on SQLite (a temp file) and on PostgreSQL (a fresh
  database on 127.0.0.1:5432, see tests/support/postgres.py).
- *mx* (unless --no-mx): a node whose records are on PostgreSQL (`postroom init`, then `postroom serve`,
  as bench/mx_load.py sets it up) receives --mx-messages messages of each size from `smtp-source` (a
  connection per message, --sessions at once) into one mailbox, with `blob_store = "files"` and with
  `"database"`; messages/s from the start of the load until the mailbox holds them all (delivery to a
  mailbox is part of the commit, so that is also the last 250), and the server's CPU per message.

    .venv/bin/python bench/blob_store.py               # both parts, 5 runs
    .venv/bin/python bench/blob_store.py --no-mx --runs 3

Everything listens on and is sent to 127.0.0.1 only; temp dirs, databases and servers are removed at
the end; a run whose mailbox count is short fails the benchmark (exit 1).

Last measured (2026-11-30, the 2-core machine **busy**: up to 6 other helpers ran their tests at the
same time, so absolute figures are low and noisy; the ratios between stores within one run are what to
read). Median of 5 runs; store: 200 x 4 KB and 20 x 1 MB blobs; mx: 300 x 4 KB and 40 x 1 MB messages
over 10 sessions:

    store               size  put p50  get p50   (p50 of one operation; range of the 5 run medians)
    files               4 KB  11.3 ms  0.02 ms   (put 6.5-15.7)
    files               1 MB  15.8 ms  0.19 ms   (put 6.1-19.5; get from the page cache)
    database-sqlite     4 KB   7.9 ms  0.31 ms   (put 4.9-9.1)
    database-sqlite     1 MB  23.7 ms  8.0 ms    (put 13.0-44.7, get 1.3-20.7)
    database-postgresql 4 KB   9.3 ms  0.27 ms   (put 6.2-10.6)
    database-postgresql 1 MB  38.2 ms  8.2 ms    (put 17.7-71.9, get 3.1-44.3)

    mx, node on PostgreSQL  msg/s files  msg/s database  database/files per run: median (range)
    4 KB                    100 (81-228)  85 (69-99)      0.80 (0.40-1.23)
    1 MB                     34 (15-52)   23 (20-29)      0.60 (0.56-1.53)
    Postroom CPU per message (not PostgreSQL's): 4 KB 2.6 ms files, 3.4 ms database; 1 MB 9.8 vs 11.5 ms.

The load average was 11 on the 2 cores during the run. A put inside the group commit (instead of
its own transaction before it) would hold the writer for the 1 MB put time above (38 ms median on
PostgreSQL) on every 1 MB message, against a few ms for a whole batch: the store commits on its own.

Reading it: see docs/operations.md, "Where message content lives".
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # the repository: tests.support

from mx_load import HOST, SMTP_SOURCE, PostroomTarget, _cpu_ticks
from tests.support.postgres import fresh_database

from postroom.storage import BlobStore, Database, DatabaseBlobStore, FileBlobStore

SIZES = (4096, 1_000_000)
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _content(size: int, run: int, n: int) -> bytes:
    """Distinct content of `size` octets (a fresh blob, never a dedupe hit) that compresses like a
    message with an attachment: base64 lines of random octets (PostgreSQL tries to compress a value)."""
    tag = f"run {run} blob {n} {time.time_ns()}\r\n".encode()
    body = base64.encodebytes(os.urandom(size * 3 // 4 + 64)).replace(b"\n", b"\r\n")
    return (tag + body)[:size]


@dataclass
class StoreFigures:
    put_ms: float  # median latency of one put
    get_ms: float
    put_per_s: float  # blobs a second over the whole batch
    get_per_s: float


def measure_store(store: BlobStore, size: int, count: int, run: int) -> StoreFigures:
    contents = [_content(size, run, n) for n in range(count)]
    put_times, ids = [], []
    started = time.perf_counter()
    for content in contents:
        t = time.perf_counter()
        ids.append(store.put(content))
        put_times.append(time.perf_counter() - t)
    put_total = time.perf_counter() - started
    get_times = []
    started = time.perf_counter()
    for blob_id, content in zip(ids, contents, strict=True):
        t = time.perf_counter()
        got = store.get(blob_id)
        get_times.append(time.perf_counter() - t)
        assert len(got) == len(content)
    get_total = time.perf_counter() - started
    return StoreFigures(
        put_ms=statistics.median(put_times) * 1000,
        get_ms=statistics.median(get_times) * 1000,
        put_per_s=count / put_total,
        get_per_s=count / get_total,
    )


@contextlib.contextmanager
def stores() -> Iterator[dict[str, BlobStore]]:
    with contextlib.ExitStack() as stack:
        base = Path(tempfile.mkdtemp(prefix="postroom-blob-bench-"))
        stack.callback(shutil.rmtree, base, True)
        sqlite = Database(f"sqlite:///{base / 'postroom.db'}")
        stack.callback(sqlite.dispose)
        sqlite.migrate()
        postgresql = Database(stack.enter_context(fresh_database()))
        stack.callback(postgresql.dispose)
        postgresql.migrate()
        yield {
            "files": FileBlobStore(base / "blobs"),
            "database-sqlite": DatabaseBlobStore(sqlite),
            "database-postgresql": DatabaseBlobStore(postgresql),
        }


def store_part(runs: int, counts: dict[int, int]) -> dict[str, dict[int, list[StoreFigures]]]:
    results: dict[str, dict[int, list[StoreFigures]]] = {}
    with stores() as by_name:
        names = list(by_name)
        for run in range(runs):
            order = names[run % len(names) :] + names[: run % len(names)]  # rotate who goes first
            for size in SIZES:
                for name in order:
                    figures = measure_store(by_name[name], size, counts[size], run)
                    results.setdefault(name, {}).setdefault(size, []).append(figures)
                    print(
                        f"store run {run + 1} {name:20} {size:>8} B: put {figures.put_ms:7.2f} ms "
                        f"get {figures.get_ms:7.2f} ms",
                        flush=True,
                    )
    return results


class PostgresNode(PostroomTarget):
    """bench/mx_load.py's Postroom target with its records on PostgreSQL and the blob store chosen."""

    def __init__(self, exe: str, url: str, blob_store: str) -> None:
        super().__init__(exe, keep=False, count="api")
        self.url = url
        self.blob_store = blob_store

    def populate(self, config: str) -> None:
        text = Path(config).read_text()
        assert '\nurl = ""' in text and "\nblob_store = " in text, "postroom init writes both keys"
        text = text.replace('\nurl = ""', f'\nurl = "{self.url}"', 1)
        text = text.replace('\nblob_store = "files"', f'\nblob_store = "{self.blob_store}"', 1)
        Path(config).write_text(text)
        super().populate(config)


@dataclass
class MxFigures:
    per_s: float
    cpu_ms_per_message: float


def server_cpu(node: PostroomTarget) -> float:
    return sum(_cpu_ticks(pid)[1] for pid in node.pids()) / CLK_TCK


def measure_mx(exe: str, blob_store: str, size: int, messages: int, sessions: int) -> MxFigures:
    with fresh_database() as url:
        node = PostgresNode(exe, url, blob_store)
        try:
            node.start()
            assert node.delivered() == 0  # opens the mailstore in this process before the clock starts
            cpu_before = server_cpu(node)
            started = time.monotonic()
            load = ["-l", str(size), "-m", str(messages), "-s", str(sessions), "-f", "load@sender.example"]
            source = subprocess.run(
                [SMTP_SOURCE, *load, "-t", node.recipient, f"{HOST}:{node.port}"],
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            if source.returncode != 0:
                raise RuntimeError(f"smtp-source failed: {source.stderr[-400:]}")
            deadline = time.monotonic() + 120
            while node.delivered() < messages:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {node.delivered()} of {messages} messages in the mailbox")
                time.sleep(0.02)
            elapsed = time.monotonic() - started
            cpu = server_cpu(node) - cpu_before
            if node.final_count() != messages:
                raise RuntimeError(f"the mailbox holds {node.final_count()} messages, not {messages}")
            return MxFigures(per_s=messages / elapsed, cpu_ms_per_message=cpu / messages * 1000)
        finally:
            node.stop()


def mx_part(
    exe: str, runs: int, counts: dict[int, int], sessions: int
) -> dict[str, dict[int, list[MxFigures]]]:
    results: dict[str, dict[int, list[MxFigures]]] = {}
    for run in range(runs):
        order = ["files", "database"] if run % 2 == 0 else ["database", "files"]
        for size in SIZES:
            for blob_store in order:
                figures = measure_mx(exe, blob_store, size, counts[size], sessions)
                results.setdefault(blob_store, {}).setdefault(size, []).append(figures)
                print(
                    f"mx run {run + 1} {blob_store:9} {size:>8} B: {figures.per_s:7.1f} msg/s, "
                    f"{figures.cpu_ms_per_message:6.2f} ms CPU/msg",
                    flush=True,
                )
    return results


def _median(values: list[float]) -> float:
    return statistics.median(values)


def summary(
    store_results: dict[str, dict[int, list[StoreFigures]]], mx_results: dict[str, dict[int, list[MxFigures]]]
) -> list[str]:
    lines = ["store              size   put p50   get p50    puts/s    gets/s   put MB/s"]
    for name, by_size in store_results.items():
        for size, runs in by_size.items():
            put_per_s = _median([r.put_per_s for r in runs])
            lines.append(
                f"{name:19} {_size(size):>5} {_median([r.put_ms for r in runs]):6.2f} ms "
                f"{_median([r.get_ms for r in runs]):6.2f} ms {put_per_s:9.0f} "
                f"{_median([r.get_per_s for r in runs]):9.0f} {put_per_s * size / 1e6:9.1f}"
            )
    if mx_results:
        lines.append("")
        lines.append(
            "mx (PostgreSQL)   size      msg/s   CPU ms/msg   database/files msg/s, per run: median (range)"
        )
        for name, by_size in mx_results.items():
            for size, runs in by_size.items():
                paired = [
                    r.per_s / f.per_s for r, f in zip(runs, mx_results["files"][size], strict=True)
                ]  # the two stores ran back to back in each run: the ratio of a pair is the reading
                lines.append(
                    f"{name:17} {_size(size):>5} {_median([r.per_s for r in runs]):10.1f} "
                    f"{_median([r.cpu_ms_per_message for r in runs]):12.2f}    "
                    f"{_median(paired):.2f} ({min(paired):.2f}-{max(paired):.2f})"
                )
    return lines


def _size(octets: int) -> str:
    return "4 KB" if octets < 10_000 else "1 MB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--count-4k", type=int, default=200, help="blobs of 4 KB per store and run")
    parser.add_argument("--count-1m", type=int, default=20, help="blobs of 1 MB per store and run")
    parser.add_argument("--no-mx", action="store_true", help="only the store part")
    parser.add_argument("--mx-messages-4k", type=int, default=300)
    parser.add_argument("--mx-messages-1m", type=int, default=40)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--postroom", default=str(Path(sys.executable).with_name("postroom")))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    store_results = store_part(args.runs, {4096: args.count_4k, 1_000_000: args.count_1m})
    mx_results: dict[str, dict[int, list[MxFigures]]] = {}
    if not args.no_mx:
        counts = {4096: args.mx_messages_4k, 1_000_000: args.mx_messages_1m}
        mx_results = mx_part(args.postroom, args.runs, counts, args.sessions)
    lines = summary(store_results, mx_results)
    print("\n".join(lines))
    if args.json:
        document: dict[str, object] = {
            "store": {n: {s: [vars(r) for r in rs] for s, rs in b.items()} for n, b in store_results.items()},
            "mx": {n: {s: [vars(r) for r in rs] for s, rs in b.items()} for n, b in mx_results.items()},
        }
        args.json.write_text(json.dumps(document, indent=2))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
