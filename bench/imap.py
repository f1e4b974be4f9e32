"""IMAP benchmark: a folder of 10,000 messages, served by Postroom and by Dovecot on the same machine.

One corpus (``--messages`` N, default 10,000; realistic plain and multipart messages of about 2 to
50 KB, a fixed seed) is written into a private Dovecot's Maildir (tests/support/dovecot.py, Dovecot as
the distribution ships it plus only a private base directory) and copied into a fresh Postroom node's
mailbox by ``postroom migrate imap`` from that Dovecot (the migration's time is reported too: an
end-to-end use of it). Then the same client (imaplib, one logged-in connection per server, plain
IMAP on 127.0.0.1 so that neither side pays for TLS) times, on each server:

- ``SELECT INBOX``
- ``FETCH 1:* (FLAGS ENVELOPE)``
- ``UID SEARCH HEADER Subject <word>`` and ``UID SEARCH FROM <address>``

The time of a command is from its send to its tagged answer, parsed by imaplib (the same client on
both sides). R runs (default 5), alternating which server goes first. The first run on a server is
*cold* (Dovecot builds its index of the Maildir at the first SELECT; Postroom's caches are empty) and
is shown apart; the median and range are over the warm runs. Counts are verified on every run: SELECT
must report N messages, FETCH must return N envelopes, and each SEARCH must find exactly the UIDs the
corpus says (compared by Message-ID order); a run that fails a check is reported and the exit status
is 1.

    .venv/bin/python bench/imap.py                     # both servers, 5 runs, N=10,000
    .venv/bin/python bench/imap.py --target dovecot    # Dovecot only (no Postroom IMAP server)
    .venv/bin/python bench/imap.py --messages 2000 --runs 3 --json out.json

Everything listens on loopback only; both servers and their temp directories are removed at the end.
Needs root (Dovecot's login processes drop to dovenull) and ``dovecot-imapd``.
"""

from __future__ import annotations

import argparse
import imaplib
import json
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository: tests.support

from tests.support import dovecot
from tests.support.dovecot import Dovecot, Fixture
from tests.support.postfix import free_port, wait_port

HOST = "127.0.0.1"
USER, PASSWORD = "bench", "bench-password-1"
ADDRESS = "bench@bench.example"
SEARCH_WORD = "quarterly"  # in about one subject in 50
WORDS = [
    "meeting",
    "notes",
    "project",
    "update",
    "invoice",
    "review",
    "draft",
    "report",
    "budget",
    "plan",
    "schedule",
    "team",
    "launch",
    "customer",
    "feedback",
    "release",
    "design",
    "proposal",
    "contract",
    "summary",
    "agenda",
    "follow-up",
    "request",
    "question",
]
FIRST = [
    "anna",
    "ben",
    "carla",
    "david",
    "eva",
    "felix",
    "gina",
    "hugo",
    "ines",
    "jonas",
    "karin",
    "lars",
    "mia",
    "nils",
    "olga",
    "paul",
]
DOMAINS = ("example.org", "example.net", "partner.example", "vendor.example", "mail.example")


@dataclass(frozen=True)
class Corpus:
    fixtures: list[Fixture]
    subject_hits: list[int]  # indexes (in delivery order) of messages whose Subject has SEARCH_WORD
    from_address: str
    from_hits: list[int]


def corpus(count: int, seed: int = 12) -> Corpus:
    rng = random.Random(seed)
    senders = [f"{rng.choice(FIRST)}.{n}@{rng.choice(DOMAINS)}" for n in range(200)]
    fixtures, subject_hits, from_hits = [], [], []
    start = 1_700_000_000.0
    for index in range(count):
        sender = rng.choice(senders)
        words = rng.sample(WORDS, rng.randint(3, 7))
        if rng.random() < 0.02:
            words.insert(rng.randint(0, len(words)), SEARCH_WORD)
            subject_hits.append(index)
        if sender == senders[0]:
            from_hits.append(index)
        size = int(min(50_000, max(2_000, rng.lognormvariate(8.8, 0.8))))
        fixtures.append(
            Fixture(
                _message(rng, index, sender, " ".join(words).capitalize(), size),
                _flags(rng),
                start + index * 60,
            )
        )
    return Corpus(fixtures, subject_hits, senders[0], from_hits)


def _flags(rng: random.Random) -> tuple[str, ...]:
    flags = ["\\Seen"] if rng.random() < 0.8 else []
    if rng.random() < 0.1:
        flags.append("\\Answered")
    if rng.random() < 0.05:
        flags.append("\\Flagged")
    return tuple(flags)


def _message(rng: random.Random, index: int, sender: str, subject: str, size: int) -> bytes:
    head = (
        f"Return-Path: <{sender}>\r\nFrom: {sender.split('@')[0].title()} <{sender}>\r\n"
        f"To: Bench User <{ADDRESS}>\r\nSubject: {subject}\r\n"
        f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime(1_700_000_000 + index * 60))}\r\n"
        f"Message-ID: <bench.{index}@{sender.split('@')[1]}>\r\nMIME-Version: 1.0\r\n"
    )
    line = " ".join(rng.choice(WORDS) for _ in range(12))
    text = "\r\n".join(line for _ in range(max(1, size // (len(line) + 2))))
    if rng.random() < 0.3:
        boundary = f"b{index}"
        body = (
            f"Content-Type: multipart/alternative; boundary={boundary}\r\n\r\n--{boundary}\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\n{text[: size // 2]}\r\n--{boundary}\r\n"
            f"Content-Type: text/html; charset=utf-8\r\n\r\n<p>{text[: size // 2]}</p>\r\n--{boundary}--\r\n"
        )
    else:
        body = f"Content-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n"
    return (head + body).encode()


@dataclass
class Timings:
    server: str
    run: int
    seconds: dict[str, float] = field(default_factory=dict)
    found: dict[str, list[int]] = field(default_factory=dict)  # the UIDs each SEARCH answered
    problems: list[str] = field(default_factory=list)


COMMANDS = ("select", "fetch_envelopes", "search_subject", "search_from")


def measure(client: imaplib.IMAP4, name: str, run: int, data: Corpus) -> Timings:
    timings = Timings(name, run)
    n = len(data.fixtures)

    def timed(command: str, call: Callable[[], tuple[str, list[Any]]]) -> list[Any]:
        started = time.perf_counter()
        status, answer = call()
        timings.seconds[command] = time.perf_counter() - started
        if status != "OK":
            timings.problems.append(f"{command}: {status} {answer!r:.200}")
        return answer

    exists = timed("select", lambda: client.select("INBOX", readonly=True))
    if exists != [str(n).encode()]:
        timings.problems.append(f"SELECT reports {exists!r}, not {n}")
    fetched = timed("fetch_envelopes", lambda: client.fetch("1:*", "(FLAGS ENVELOPE)"))
    envelopes = sum(
        1
        for item in fetched
        if isinstance(item, bytes | tuple) and b"ENVELOPE" in (item[0] if isinstance(item, tuple) else item)
    )
    if envelopes != n:
        timings.problems.append(f"FETCH returned {envelopes} envelopes, not {n}")
    for command, criteria in (
        ("search_subject", ("HEADER", "Subject", SEARCH_WORD)),
        ("search_from", ("FROM", data.from_address)),
    ):
        found = timed(command, lambda criteria=criteria: client.uid("SEARCH", *criteria))
        timings.found[command] = [int(uid) for uid in found[0].split()] if found and found[0] else []
    client.close()
    return timings


def check_searches(timings: list[Timings], uid_of: dict[str, dict[int, int]], data: Corpus) -> None:
    """Each SEARCH must have found exactly the corpus's hits (mapped to each server's UIDs afterwards,
    so that the mapping's own FETCH does not warm the first run)."""
    for t in timings:
        for command, hits in (("search_subject", data.subject_hits), ("search_from", data.from_hits)):
            if t.found.get(command) != sorted(uid_of[t.server][index] for index in hits):
                t.problems.append(
                    f"{command} found {len(t.found.get(command, []))} UIDs, expected {len(hits)}"
                )


class PostroomNode:
    """A fresh node (`postroom init`), its mailbox filled by `postroom migrate imap` from Dovecot."""

    def __init__(self, exe: str) -> None:
        self.exe = exe
        self.base = Path(tempfile.mkdtemp(prefix="postroom-bench-imap-"))
        self.config = self.base / "node" / "postroom.toml"
        self.imap_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.migration_seconds = 0.0

    def cli(self, *args: str, stdin: str | None = None, timeout: float = 3600) -> str:
        done = subprocess.run([self.exe, *args], input=stdin, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"postroom {' '.join(args[:4])} failed: {(done.stderr or done.stdout)[-800:]}")
        return done.stdout

    def set_up(self, source: Dovecot) -> None:
        ports = [free_port() for _ in range(5)]
        self.cli(
            "init",
            str(self.base / "node"),
            "--service-domain",
            "bench.test",
            "--mx-listen",
            f"{HOST}:{ports[0]}",
            "--submission-listen",
            f"{HOST}:{ports[1]}",
            "--submission-tls-listen",
            f"{HOST}:{ports[2]}",
            "--imap-listen",
            f"{HOST}:{self.imap_port}",
            "--imap-tls-listen",
            f"{HOST}:{ports[4]}",
            "--admin-listen",
            f"{HOST}:{ports[3]}",
        )
        # Plain LOGIN on loopback, as Dovecot allows here: neither side pays for TLS.
        text = self.config.read_text()
        self.config.write_text(
            text.replace("allow_plaintext_login = false", "allow_plaintext_login = true", 1)
        )
        c = str(self.config)
        self.cli("-c", c, "tenant", "add", "bench")
        self.cli("-c", c, "domain", "add", "bench.example", "--tenant", "bench", "--verified")
        self.cli("-c", c, "mailbox", "add", ADDRESS, "--password-stdin", stdin=PASSWORD + "\n")
        batch = self.base / "batch.csv"
        batch.write_text(f"EmailAddress,UserName,Password\n{ADDRESS},{USER},{PASSWORD}\n")
        started = time.monotonic()
        summary = json.loads(
            self.cli(
                "-c",
                c,
                "migrate",
                "imap",
                "--csv",
                str(batch),
                "--host",
                source.host,
                "--port",
                str(source.tls_port),
                "--ca-file",
                str(source.ca),
                "--json",
            )
        )
        self.migration_seconds = time.monotonic() - started
        self.migrated = summary["total"]

    def serve(self) -> tuple[str, int]:
        log = (self.base / "serve.log").open("wb")
        self.process = subprocess.Popen(
            [self.exe, "-c", str(self.config), "serve"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"postroom serve exited: {(self.base / 'serve.log').read_text()[-800:]}")
            if wait_port(self.imap_port, 0.5):
                return HOST, self.imap_port
        raise RuntimeError("postroom serve did not listen for IMAP within 60 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(60)
        shutil.rmtree(self.base, ignore_errors=True)


def summarize(timings: list[Timings]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for server in sorted({t.server for t in timings}):
        mine = [t for t in timings if t.server == server]
        warm = [t for t in mine if t.run > 1] or mine
        result[server] = {
            command: {
                "cold_ms": round(mine[0].seconds.get(command, float("nan")) * 1000, 1),
                "median_ms": round(statistics.median(t.seconds[command] for t in warm) * 1000, 1),
                "min_ms": round(min(t.seconds[command] for t in warm) * 1000, 1),
                "max_ms": round(max(t.seconds[command] for t in warm) * 1000, 1),
            }
            for command in COMMANDS
        }
    if {"postroom", "dovecot"} <= set(result):
        result["ratio_postroom_over_dovecot"] = {
            command: round(
                result["postroom"][command]["median_ms"] / result["dovecot"][command]["median_ms"], 2
            )
            for command in COMMANDS
        }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--target", choices=("both", "dovecot", "postroom"), default="both")
    parser.add_argument("--postroom", default=str(Path(sys.executable).parent / "postroom"))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    data = corpus(args.messages)
    print(
        f"corpus: {args.messages} messages, {sum(len(f.raw) for f in data.fixtures) / 1e6:.1f} MB; "
        f"{len(data.subject_hits)} subjects with {SEARCH_WORD!r}, "
        f"{len(data.from_hits)} from {data.from_address}"
    )
    timings: list[Timings] = []
    notes: dict[str, Any] = {}
    with ExitStack() as stack:
        source = stack.enter_context(dovecot.running(HOST))
        source.add_user(USER, PASSWORD)
        started = time.monotonic()
        source.fill(USER, "INBOX", data.fixtures)
        notes["dovecot_fill_seconds"] = round(time.monotonic() - started, 2)
        servers: dict[str, tuple[str, int]] = {}
        if args.target in ("both", "dovecot"):
            servers["dovecot"] = (source.host, source.port)
        if args.target in ("both", "postroom"):
            node = PostroomNode(args.postroom)
            stack.callback(node.stop)
            node.set_up(source)
            notes["migration_seconds"] = round(node.migration_seconds, 2)
            notes["migration"] = node.migrated
            print(f"postroom: migrated {node.migrated['copied']} messages in {node.migration_seconds:.1f} s")
            servers["postroom"] = node.serve()
        clients = {}
        for name, address in servers.items():
            client = imaplib.IMAP4(*address, timeout=600)
            client.login(ADDRESS if name == "postroom" else USER, PASSWORD)
            stack.callback(client.logout)
            clients[name] = client
        for run in range(1, args.runs + 1):
            order = list(clients) if run % 2 else list(reversed(clients))
            for name in order:
                t = measure(clients[name], name, run, data)
                timings.append(t)
                shown = "  ".join(f"{c} {t.seconds.get(c, 0) * 1000:8.1f} ms" for c in COMMANDS)
                print(f"run {run} {name:9} {shown}")
        uid_of = {name: _uids_by_index(client, data) for name, client in clients.items()}
        check_searches(timings, uid_of, data)
        for t in timings:
            if t.problems:
                print(f"run {t.run} {t.server}: PROBLEMS: {'; '.join(t.problems)}")
    figures = summarize(timings)
    print(json.dumps({"figures": figures, "notes": notes}, indent=2))
    if args.json:
        args.json.write_text(
            json.dumps({"figures": figures, "notes": notes, "runs": [t.__dict__ for t in timings]}, indent=2)
        )
    return 1 if any(t.problems for t in timings) else 0


def _uids_by_index(client: imaplib.IMAP4, data: Corpus) -> dict[int, int]:
    """UID of each corpus message on this server, by its Message-ID (the servers number them apart)."""
    client.select("INBOX", readonly=True)
    _status, answer = client.uid("FETCH", "1:*", "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
    found: dict[int, int] = {}
    for item in answer:
        if isinstance(item, tuple):
            uid = re.search(rb"UID (\d+)", item[0])
            index = re.search(rb"<bench\.(\d+)@", item[1])
            if uid and index:
                found[int(index.group(1))] = int(uid.group(1))
    client.close()
    return found


if __name__ == "__main__":
    sys.exit(main())
