"""A private, throwaway Dovecot IMAP server on one loopback address: the source server of the migration
tests and the IMAP benchmark's reference.

Everything lives in a temp directory: the configuration (written whole here, `-c`, so /etc/dovecot is
never read), base_dir, state_dir, the log, the passwd-file (`passdb` and `userdb`, plain passwords)
and the mail (`mail_location = maildir:<base>/mail/%u/Maildir`, Maildir++ with "." as the hierarchy
separator, so the migration's translation of a separator to "/" is exercised). Two listeners on
HOST: `port` (plain, STARTTLS offered; LOGIN allowed without TLS for the `plain` mode) and `tls_port`
(implicit TLS), with a certificate from tests/support/pki.py. The special-use folders are Dovecot's
own way: `mailbox X { special_use = ... }` in the inbox namespace (Sent, Drafts, Junk, Trash, Archive).
Dovecot runs as root here (the tests run as root); its login processes drop to dovenull and the
mail processes run as `nobody`, who owns the Maildirs.

`Dovecot.fill(user, folder, messages)` writes Maildir files directly (fast: 10,000 messages in about
a second): flags go into the file name (`:2,FRS`), keywords into `dovecot-keywords`, the internal date
is the file's mtime. `add_user(user, password)` adds a login at any time (the passwd-file is read per
login). Fails with RuntimeError, leaving nothing running, when Dovecot is missing or will not start.

Run it alone to try it: ``.venv/bin/python -m tests.support.dovecot`` starts one with a user
`alice`/`secret`, prints where, and stops on Enter.
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.pki import TestCa

DOVECOT = "/usr/sbin/dovecot"
HOST = "127.0.51.1"  # the migration tests' loopback block is 127.0.51.0/24
MAIL_USER = "nobody"
SPECIAL_USE = {
    "Sent": "\\Sent",
    "Drafts": "\\Drafts",
    "Junk": "\\Junk",
    "Trash": "\\Trash",
    "Archive": "\\Archive",
}
SEPARATOR = "."

# Maildir's info letters for the IMAP system flags (https://cr.yp.to/proto/maildir.html).
_FLAG_LETTERS = {"\\Draft": "D", "\\Flagged": "F", "\\Answered": "R", "\\Seen": "S", "\\Deleted": "T"}


@dataclass(frozen=True)
class Fixture:
    """One message to put in a folder."""

    raw: bytes
    flags: tuple[str, ...] = ()  # system flags and keywords
    internal_date: float = 1_700_000_000.0


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _config(base: Path, host: str, port: int, tls_port: int, certificate: Path, key: Path) -> str:
    mailboxes = "\n".join(
        f'  mailbox "{name}" {{\n    special_use = {use}\n    auto = subscribe\n  }}'
        for name, use in SPECIAL_USE.items()
    )
    return f"""
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/log/dovecot.log
info_log_path = {base}/log/dovecot.log
protocols = imap
listen = {host}
shutdown_clients = yes
ssl = yes
ssl_cert = <{certificate}
ssl_key = <{key}
ssl_dh = </usr/share/dovecot/dh.pem
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0  # a wrong password is answered at once: the tests try some
auth_master_user_separator = *
mail_location = maildir:{base}/mail/%u/Maildir
first_valid_uid = 1
mail_uid = {MAIL_USER}
mail_gid = nogroup
mail_max_userip_connections = 100
# listescape: a folder may have "/" in its name (stored escaped), as some real servers allow; the
# migration must skip and report such folders (spec §2).
mail_plugins = listescape
plugin {{
  listescape_char = "\\"
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {base}/etc/passwd
}}
passdb {{
  driver = passwd-file
  master = yes
  args = scheme=PLAIN {base}/etc/masters
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {base}/etc/passwd
  default_fields = home={base}/home/%u
}}
namespace inbox {{
  inbox = yes
  separator = {SEPARATOR}
{mailboxes}
}}
service imap-login {{
  inet_listener imap {{
    port = {port}
  }}
  inet_listener imaps {{
    port = {tls_port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
  # No growing penalty for an address after failed logins: the tests fail some on purpose.
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service imap-login {{
  chroot =
}}
"""


def _maildir_name(folder: str) -> str:
    """The Maildir++ directory of a folder: INBOX is the Maildir itself, "a.b" is ".a.b"."""
    return "" if folder.upper() == "INBOX" else "." + folder


@dataclass
class Dovecot:
    base: Path
    host: str
    port: int
    tls_port: int
    ca: Path  # the CA that signed the server's certificate: what a client must trust
    process: subprocess.Popen[bytes] | None = None
    _keywords: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    def add_user(self, user: str, password: str) -> None:
        with (self.base / "etc" / "passwd").open("a") as passwd:
            passwd.write(f"{user}:{password}:65534:65534::{self.base}/home/{user}::\n")

    def add_master(self, user: str, password: str) -> None:
        """A master login: `someone*user` logs in as someone with user's password (Dovecot SASL)."""
        with (self.base / "etc" / "masters").open("a") as masters:
            masters.write(f"{user}:{password}\n")

    def maildir(self, user: str, folder: str) -> Path:
        return self.base / "mail" / user / "Maildir" / _maildir_name(folder)

    def fill(self, user: str, folder: str, messages: Iterable[Fixture]) -> None:
        """Write messages into a user's folder (created when missing) as Dovecot's own Maildir files."""
        root = self.base / "mail" / user / "Maildir"
        target = self.maildir(user, folder)
        for sub in ("cur", "new", "tmp"):
            (target / sub).mkdir(parents=True, exist_ok=True)
            (root / sub).mkdir(parents=True, exist_ok=True)
        if target != root:
            (target / "maildirfolder").touch()
        keywords = self._keywords.setdefault((user, folder), self._read_keywords(target))
        for index, message in enumerate(messages):
            letters = sorted(_FLAG_LETTERS[f] for f in message.flags if f in _FLAG_LETTERS)
            for word in (f for f in message.flags if not f.startswith("\\")):
                if word not in keywords:
                    keywords.append(word)
                letters.append(chr(ord("a") + keywords.index(word)))
            name = f"{int(message.internal_date)}.M{index}P{uuid.uuid4().hex[:12]}.fixture"
            path = target / "cur" / f"{name},S={len(message.raw)}:2,{''.join(letters)}"
            path.write_bytes(message.raw)
            os.utime(path, (message.internal_date, message.internal_date))
        if keywords:
            (target / "dovecot-keywords").write_text("".join(f"{i} {w}\n" for i, w in enumerate(keywords)))
        self._own(self.base / "mail" / user)

    @staticmethod
    def _read_keywords(target: Path) -> list[str]:
        path = target / "dovecot-keywords"
        if not path.exists():
            return []
        return [line.split(" ", 1)[1] for line in path.read_text().splitlines() if " " in line]

    def _own(self, path: Path) -> None:
        uid, gid = 65534, 65534
        os.chown(path, uid, gid)
        for directory, dirs, files in os.walk(path):
            for name in dirs + files:
                os.chown(os.path.join(directory, name), uid, gid)

    def client(self, user: str, password: str) -> imaplib.IMAP4_SSL:
        """A logged-in imaplib client over implicit TLS (for fixtures made by APPEND, and checks)."""
        context = ssl.create_default_context(cafile=str(self.ca))
        client = imaplib.IMAP4_SSL(self.host, self.tls_port, ssl_context=context, timeout=10)
        client.login(user, password)
        return client

    def log(self) -> str:
        path = self.base / "log" / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None


def start(base: Path, host: str = HOST, timeout: float = 15.0) -> Dovecot:
    if not os.access(DOVECOT, os.X_OK):
        raise RuntimeError(f"{DOVECOT} is missing: install dovecot-imapd")
    for sub in ("run", "state", "log", "etc", "mail", "home", "pki"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    os.chown(base / "mail", 65534, 65534)
    os.chown(base / "home", 65534, 65534)
    base.chmod(0o755)
    ca = TestCa(base / "pki")
    issued = ca.issue("dovecot", ("imap.source.example",), ips=(host,))
    (base / "etc" / "passwd").touch()
    (base / "etc" / "masters").touch()
    port, tls_port = _free_port(host), _free_port(host)
    config = base / "etc" / "dovecot.conf"
    config.write_text(_config(base, host, port, tls_port, issued.certificate, issued.key))
    server = Dovecot(base, host, port, tls_port, ca.certificate)
    server.process = subprocess.Popen(
        [DOVECOT, "-F", "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            error = server.process.stderr.read().decode(errors="replace") if server.process.stderr else ""
            server.process = None
            raise RuntimeError(f"dovecot exited at start: {error}{server.log()}")
        with (
            contextlib.suppress(OSError),
            socket.create_connection((host, tls_port), timeout=0.5),
            socket.create_connection((host, port), timeout=0.5) as plain,
        ):
            if plain.recv(200).startswith(b"* OK"):
                return server
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"dovecot did not listen within {timeout} s: {server.log()}")


@contextlib.contextmanager
def running(host: str = HOST) -> Iterator[Dovecot]:
    """A Dovecot in a temp directory, stopped and removed at the end."""
    base = Path(tempfile.mkdtemp(prefix="postroom-dovecot-"))
    server = start(base, host)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    with running() as found:
        found.add_user("alice", "secret")
        found.fill("alice", "INBOX", [Fixture(b"Subject: hello\r\n\r\nhi\r\n", ("\\Seen",))])
        print(f"dovecot on {found.host}: {found.port} (STARTTLS), {found.tls_port} (TLS); alice/secret")
        print(f"CA {found.ca}; mail in {found.base / 'mail'}")
        input("Enter stops it. ")
