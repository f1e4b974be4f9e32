"""IMAP server benchmark: a folder of 10,000 messages served by Postroom and by Dovecot, through imaplib.

The messages are imap_message.py's (a fixed seed; Received chains, DKIM, multipart bodies, 3-15 KB).
Postroom: a node in a temporary directory (tests/support/node.py, in this process, its own thread),
the messages stored in alice's Inbox through the mailstore (blobs and rows, as delivery stores them),
served on its STARTTLS listener with plaintext logins allowed (Dovecot is timed without TLS too).
Dovecot (when `/usr/sbin/dovecot` is installed): the same messages in a Maildir, a throwaway instance
configured as imap_message.py configures it. The same imaplib client times, best of --runs:

- `SELECT INBOX`;
- `FETCH 1:* (FLAGS ENVELOPE)`: Postroom's first one (ENVELOPE from the bytes), then, once its
  background task has cached every ENVELOPE on the rows, the best of the later ones; Dovecot's after
  one warm-up FETCH that builds its index cache;
- `UID SEARCH HEADER Subject quarterly` (a header search: both read every header).

    .venv/bin/python bench/imap_server.py               # 10,000 messages, best of 3
    .venv/bin/python bench/imap_server.py --count 2000

Last measured: see bench/README.md ("IMAP server").
"""

from __future__ import annotations

import argparse
import dataclasses
import imaplib
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from imap_message import DOVECOT_CONF, best, free_port, make_message
from tests.conftest import populate
from tests.support.node import make_node, running

from postroom.app import App
from postroom.mailstore import mailbox as store
from postroom.model.message import summarize
from postroom.model.scope import OPERATOR

SEARCH = ("HEADER", "Subject", "quarterly")


def connect(host: str, port: int, user: str, password: str) -> imaplib.IMAP4:
    deadline = time.monotonic() + 10
    while True:
        try:
            client = imaplib.IMAP4(host, port)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    client.login(user, password)
    return client


def timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def figures(client: imaplib.IMAP4, runs: int, first_fetch: float | None) -> dict[str, float]:
    found = {"SELECT INBOX": best(runs, lambda: client.select("INBOX"))}
    if first_fetch is not None:
        found["FETCH 1:* (FLAGS ENVELOPE), first"] = first_fetch
    found["FETCH 1:* (FLAGS ENVELOPE)"] = best(runs, lambda: client.fetch("1:*", "(FLAGS ENVELOPE)"))
    found["UID SEARCH HEADER Subject"] = best(runs, lambda: client.uid("SEARCH", *SEARCH))
    return found


def postroom(messages: list[bytes], runs: int) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="bench-imap-"))
    try:
        settings = make_node(root / "node")
        settings = dataclasses.replace(
            settings, imap=dataclasses.replace(settings.imap, allow_plaintext_login=True)
        )
        app = App.open(settings)
        populate(app)
        owner = app.directory.get_recipient(OPERATOR, "alice@contoso.com")
        with app.database.write() as conn:
            inbox = store.find_folder(conn, owner.id, store.INBOX)
            assert inbox is not None
            for content in messages:
                blob_id = app.blobs.put(content)
                store.append(
                    conn,
                    owner.id,
                    inbox.id,
                    blob_id=blob_id,
                    size=len(content),
                    flags=(),
                    internal_date=time.time(),
                    summary=summarize(content),
                )
        app.close()
        with running(settings) as node:
            client = connect(*node.address("imap"), "alice@contoso.com", "alice-pw")
            client.select("INBOX")
            first = timed(lambda: client.fetch("1:*", "(FLAGS ENVELOPE)"))
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:  # the cache is filled in the background
                with node.app.database.read() as conn:
                    if all(record.envelope is not None for record in store.folder_messages(conn, inbox.id)):
                        break
                time.sleep(0.2)
            found = figures(client, runs, first)
            client.logout()
            return found
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def dovecot_serving(messages: list[bytes]) -> Iterator[int]:
    """The messages in a Maildir served by a throwaway Dovecot on 127.0.0.1; yields its port."""
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
        yield port
    finally:
        subprocess.run(["/usr/sbin/dovecot", "-c", str(root / "dovecot.conf"), "stop"], check=False)
        deadline = time.monotonic() + 10
        while (root / "run" / "master.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        shutil.rmtree(root, ignore_errors=True)


def dovecot(messages: list[bytes], runs: int) -> dict[str, float]:
    with dovecot_serving(messages) as port:
        client = connect("127.0.0.1", port, "u", "p")
        client.select("INBOX")
        client.fetch("1:*", "(FLAGS ENVELOPE BODYSTRUCTURE)")  # Dovecot builds its index cache
        found = figures(client, runs, None)
        client.logout()
        return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10_000, help="messages in the folder")
    parser.add_argument("--runs", type=int, default=3, help="runs; the best is reported")
    options = parser.parse_args()
    generator = random.Random(2026)
    messages = [make_message(generator, number) for number in range(1, options.count + 1)]
    print(f"{options.count} messages, {sum(map(len, messages)) / 1e6:.1f} MB; best of {options.runs} runs, s")
    ours = postroom(messages, options.runs)
    theirs = dovecot(messages, options.runs) if Path("/usr/sbin/dovecot").exists() else {}
    print(f"{'':40} {'Postroom':>9} {'Dovecot':>9} {'ratio':>6}")
    for name, seconds in ours.items():
        other = theirs.get(name)
        extra = f"{other:9.3f} {seconds / other:6.2f}" if other else ""
        print(f"{name:40} {seconds:9.3f} {extra}")


if __name__ == "__main__":
    main()
