"""IMAP message parsing benchmark: what `imap.message` and `imap.fetch` cost per FETCH over a folder.

A folder of --count messages (default 10,000) like the mail a mailbox holds (Received chains, a folded
DKIM-Signature, ARC and list headers, multipart/alternative bodies with an attachment in one of five,
3-15 KB), made in memory from a fixed seed. Timed, each the best of --runs runs, in this process:

- `FETCH 1:* (FLAGS ENVELOPE)` rendered from the bytes (no cache: the first FETCH of a folder);
- the same with every ENVELOPE cached on its record (each later FETCH: what the mailstore keeps);
- `FETCH 1:* BODYSTRUCTURE` from the bytes;
- `SEARCH SUBJECT <word>` and `SEARCH BODY <word>` over the bytes.

With --dovecot (and `/usr/sbin/dovecot` installed) the same messages are put in a Maildir served by a
throwaway Dovecot on 127.0.0.1 (run as the `dovecot`/`dovenull` users, removed at the end) and
imaplib times `FETCH 1:* (FLAGS ENVELOPE)`, `FETCH 1:* BODYSTRUCTURE` and `SEARCH SUBJECT` there,
after one warm-up FETCH that builds Dovecot's cache, so Dovecot's figures include the socket and
imaplib's reading, and Postroom's do not: the ratio is a floor for what the server will show.

    .venv/bin/python bench/imap_message.py                 # 10,000 messages, 3 runs
    .venv/bin/python bench/imap_message.py --dovecot --count 2000

Last measured: see bench/README.md ("IMAP message parsing").
"""

from __future__ import annotations

import argparse
import imaplib
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from postroom.imap.fetch import parse_fetch, render_fetch
from postroom.imap.message import MessageView
from postroom.imap.search import parse_search
from postroom.imap.syntax import Atom, String

WORDS = [
    "invoice",
    "meeting",
    "report",
    "budget",
    "travel",
    "lunch",
    "quarterly",
    "review",
    "project",
    "update",
    "draft",
    "contract",
]
NAMES = ["Ann Lee", "Bob Stone", "Doe, Carol", "Dave Ng", "Eve Kurz", "Frank Olsen"]


def make_message(generator: random.Random, number: int) -> bytes:
    sender = generator.choice(NAMES)
    local = sender.split()[-1].lower().strip(",")
    subject = " ".join(generator.choice(WORDS) for _ in range(generator.randrange(2, 8)))
    received = b"".join(
        b"Received: from relay%d.fabrikam.test (relay%d.fabrikam.test [192.0.2.%d])\r\n"
        b"\tby mx%d.contoso.test with ESMTPS id %08X; Mon, 30 Nov 2026 09:%02d:00 +0000\r\n"
        % (hop, hop, hop, hop, generator.getrandbits(32), hop)
        for hop in range(generator.randrange(2, 6))
    )
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    signature = b"\r\n\t".join(bytes(generator.choice(alphabet) for _ in range(70)) for _ in range(4))
    header = (
        b"Return-Path: <%s@fabrikam.test>\r\n" % local.encode()
        + received
        + b"DKIM-Signature: v=1; a=rsa-sha256; d=fabrikam.test; s=s1; c=relaxed/relaxed;\r\n\tb="
        + signature
        + b"\r\n"
        + b"ARC-Authentication-Results: i=1; mx.contoso.test; dkim=pass header.d=fabrikam.test\r\n"
        + b"Date: Mon, %d Nov 2026 09:%02d:00 +0100\r\n" % (1 + number % 28, number % 60)
        + b'From: "%s" <%s@fabrikam.test>\r\n' % (sender.encode(), local.encode())
        + b"To: Ann Lee <ann@contoso.test>, team@contoso.test\r\n"
        + (b"Cc: Bob Stone <bob@contoso.test>\r\n" if number % 3 == 0 else b"")
        + b"Subject: %s #%d\r\n" % (subject.encode(), number)
        + b"Message-ID: <%d.%08x@fabrikam.test>\r\n" % (number, generator.getrandbits(32))
        + (b"In-Reply-To: <%d.0@contoso.test>\r\n" % (number - 1) if number % 2 else b"")
        + b"List-Id: <news.fabrikam.test>\r\nList-Unsubscribe: <mailto:leave@fabrikam.test>\r\n"
        + b"MIME-Version: 1.0\r\n"
        + b'Content-Type: multipart/%s; boundary="b%d"\r\n\r\n'
        % (b"mixed" if number % 5 == 0 else b"alternative", number)
    )
    text = " ".join(generator.choice(WORDS) for _ in range(generator.randrange(100, 1000))).encode()
    lines = b"\r\n".join(text[i : i + 72] for i in range(0, len(text), 72))
    body = (
        b"--b%d\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        % number
        + lines
        + b"\r\n--b%d\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>" % number
        + lines
        + b"</p>\r\n"
    )
    if number % 5 == 0:
        body += (
            b'--b%d\r\nContent-Type: application/pdf; name="a.pdf"\r\nContent-Transfer-Encoding: base64\r\n'
            b'Content-Disposition: attachment; filename="a.pdf"\r\n\r\n'
            % number
            + b"JVBERi0xLjQKJcOkw7zDtsOfCjIgMCBvYmoK\r\n" * 100
        )
    return header + body + b"--b%d--\r\n" % number


@dataclass(frozen=True, slots=True)
class Record:
    uid: int
    flags: frozenset[str]
    internal_date: float
    size: int
    modseq: int
    envelope: bytes | None = None
    bodystructure: bytes | None = None


@dataclass
class Subject:
    seq: int
    uid: int
    flags: frozenset[str]
    internal_date: float
    size: int
    modseq: int
    raw: bytes

    def view(self) -> MessageView:
        return MessageView(self.raw)


def best(runs: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def postroom(messages: list[bytes], runs: int) -> dict[str, float]:
    records = [Record(n, frozenset({"\\Seen"}), 1.7e9, len(raw), n) for n, raw in enumerate(messages, 1)]
    envelopes = parse_fetch(((Atom("FLAGS"), Atom("ENVELOPE")),))
    structure = parse_fetch((Atom("BODYSTRUCTURE"),))
    cached = [
        Record(r.uid, r.flags, r.internal_date, r.size, r.modseq, MessageView(raw).envelope())
        for r, raw in zip(records, messages, strict=True)
    ]
    subjects = [
        Subject(r.uid, r.uid, r.flags, r.internal_date, r.size, r.modseq, raw)
        for r, raw in zip(records, messages, strict=True)
    ]
    by_subject = parse_search((Atom("SUBJECT"), String(b"quarterly")), utf8=False)
    by_body = parse_search((Atom("BODY"), String(b"zebra")), utf8=False)
    return {
        "FETCH 1:* (FLAGS ENVELOPE)": best(
            runs,
            lambda: [
                render_fetch(envelopes, r.uid, r, MessageView(raw))
                for r, raw in zip(records, messages, strict=True)
            ],
        ),
        "  the same, ENVELOPE cached": best(
            runs, lambda: [render_fetch(envelopes, r.uid, r, None) for r in cached]
        ),
        "FETCH 1:* BODYSTRUCTURE": best(
            runs,
            lambda: [
                render_fetch(structure, r.uid, r, MessageView(raw))
                for r, raw in zip(records, messages, strict=True)
            ],
        ),
        "SEARCH SUBJECT quarterly": best(runs, lambda: [by_subject.matches(s) for s in subjects]),
        "SEARCH BODY zebra": best(runs, lambda: [by_body.matches(s) for s in subjects]),
    }


DOVECOT_CONF = """\
base_dir = {root}/run
log_path = {root}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
protocols = imap
listen = 127.0.0.1
default_internal_user = dovecot
default_internal_group = dovecot
default_login_user = dovenull
first_valid_uid = 1
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
passdb {{
  driver = passwd-file
  args = {root}/passwd
}}
userdb {{
  driver = static
  args = uid=dovecot gid=dovecot home={root}/home/%u
}}
mail_location = maildir:~/Maildir
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def dovecot(messages: list[bytes], runs: int) -> dict[str, float]:
    """The same folder served by a throwaway Dovecot, timed through imaplib."""
    root = Path(tempfile.mkdtemp(prefix="bench-dovecot-"))
    os.chmod(root, 0o755)
    port = free_port()
    maildir = root / "home" / "u" / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    for number, raw in enumerate(messages, 1):
        (maildir / "cur" / f"{1700000000 + number}.M{number}P1.bench,S={len(raw)}:2,S").write_bytes(raw)
    (root / "passwd").write_text("u:{PLAIN}p\n")
    (root / "dovecot.conf").write_text(DOVECOT_CONF.format(root=root, port=port))
    subprocess.run(["chown", "-R", "dovecot:dovecot", str(root / "home")], check=True)
    subprocess.run(["/usr/sbin/dovecot", "-c", str(root / "dovecot.conf")], check=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                client = imaplib.IMAP4("127.0.0.1", port)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.login("u", "p")
        client.select("INBOX")
        client.fetch("1:*", "(FLAGS ENVELOPE BODYSTRUCTURE)")  # Dovecot builds its index cache
        figures = {
            "FETCH 1:* (FLAGS ENVELOPE)": best(runs, lambda: client.fetch("1:*", "(FLAGS ENVELOPE)")),
            "FETCH 1:* BODYSTRUCTURE": best(runs, lambda: client.fetch("1:*", "BODYSTRUCTURE")),
            "SEARCH SUBJECT quarterly": best(runs, lambda: client.search(None, "SUBJECT", "quarterly")),
            "SEARCH BODY zebra": best(runs, lambda: client.search(None, "BODY", "zebra")),
        }
        client.logout()
        return figures
    finally:
        subprocess.run(["/usr/sbin/dovecot", "-c", str(root / "dovecot.conf"), "stop"], check=False)
        deadline = time.monotonic() + 10
        while (root / "run" / "master.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10_000, help="messages in the folder")
    parser.add_argument("--runs", type=int, default=3, help="runs; the best is reported")
    parser.add_argument("--dovecot", action="store_true", help="also time a throwaway Dovecot")
    options = parser.parse_args()
    generator = random.Random(2026)
    messages = [make_message(generator, number) for number in range(1, options.count + 1)]
    megabytes = sum(map(len, messages)) / 1e6
    print(f"{options.count} messages, {megabytes:.1f} MB; best of {options.runs} runs, seconds")
    ours = postroom(messages, options.runs)
    theirs = dovecot(messages, options.runs) if options.dovecot else {}
    print(f"{'':30} {'Postroom (parsing)':>18} {'Dovecot (IMAP)':>15} {'ratio':>6}")
    for name, seconds in ours.items():
        other = theirs.get(name)
        extra = f"{other:15.3f} {seconds / other:6.2f}" if other else ""
        print(f"{name:30} {seconds:18.3f} {extra}")


if __name__ == "__main__":
    main()
