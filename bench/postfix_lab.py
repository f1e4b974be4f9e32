"""A private, throwaway Postfix instance for benchmarks, on 127.0.0.1 only.

Builds its own config_directory (main.cf + master.cf), queue_directory and data_directory in a temp
directory, listens for SMTP on a given high port, and delivers every recipient of ``bench.example``
with the virtual(8) agent into one Maildir. The system's /etc/postfix and port 25 are never touched.
Needs root (Postfix's master runs as root and drops to ``mail_owner``).

Run it alone to try it: ``.venv/bin/python bench/postfix_lab.py`` starts an instance, prints its port
and Maildir, and stops it on Enter or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

POSTFIX = "/usr/sbin/postfix"
DOMAIN = "bench.example"
USER = "user"

MASTER_CF = """\
# service type  private unpriv  chroot  wakeup  maxproc command + args
{listen} inet  n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def _main_cf(base: Path, uid: int, gid: int, log: bool) -> str:
    lines = [
        "compatibility_level = 3.6",
        f"queue_directory = {base / 'queue'}",
        f"data_directory = {base / 'data'}",
        "mail_owner = postfix",
        "setgid_group = postdrop",
        "myhostname = postfix-bench.localdomain",
        "mydomain = localdomain",
        "myorigin = $myhostname",
        "mydestination =",
        "inet_interfaces = 127.0.0.1",
        "inet_protocols = ipv4",
        "mynetworks = 127.0.0.0/8",
        "mynetworks_style = host",
        "relay_domains =",
        "relayhost =",
        # No local delivery, no aliases.
        "alias_maps =",
        "alias_database =",
        "local_recipient_maps =",
        "local_transport = error:local delivery is disabled",
        "biff = no",
        "append_dot_mydomain = no",
        # Offline: no DNS anywhere.
        "smtp_host_lookup = native",
        "lmtp_host_lookup = native",
        "smtp_dns_support_level = disabled",
        "smtpd_peername_lookup = no",
        # No restrictions beyond "not an open relay".
        "smtpd_client_restrictions =",
        "smtpd_helo_restrictions =",
        "smtpd_sender_restrictions =",
        "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination",
        "smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination",
        "smtpd_tls_security_level = none",
        "smtp_tls_security_level = none",
        "virtual_mailbox_limit = 0",
        # Maildir delivery via virtual(8).
        f"virtual_mailbox_domains = {DOMAIN}",
        f"virtual_mailbox_base = {base / 'mail'}",
        f"virtual_mailbox_maps = texthash:{base / 'etc' / 'vmailbox'}",
        f"virtual_uid_maps = static:{uid}",
        f"virtual_gid_maps = static:{gid}",
        f"virtual_minimum_uid = {min(uid, 100)}",
        "virtual_alias_maps =",
    ]
    if log:
        lines.append(f"maillog_file_prefixes = {base / 'log'}")
        lines.append(f"maillog_file = {base / 'log' / 'maillog'}")
    return "\n".join(lines) + "\n"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float) -> bool:
    """Wait until something accepts TCP connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
                s.recv(512)  # read the greeting, so smtpd does not log a lost connection before it
                return True
        except OSError:
            time.sleep(0.1)
    return False


def proc_tree(root: int) -> list[int]:
    """PIDs of root and all its descendants (via /proc/<pid>/task/<tid>/children)."""
    out: list[int] = []
    stack = [root]
    while stack:
        pid = stack.pop()
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        out.append(pid)
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    stack.extend(int(c) for c in f.read().split())
            except OSError:
                pass
    return out


@dataclass
class PostfixLab:
    """One private Postfix instance; use as a context manager or call start()/stop()."""

    port: int = 0
    log: bool = True
    keep: bool = False
    base: Path = field(default_factory=lambda: Path())
    started: bool = False

    @property
    def config_dir(self) -> Path:
        return self.base / "etc"

    @property
    def maildir(self) -> Path:
        return self.base / "mail" / DOMAIN / USER

    @property
    def recipient(self) -> str:
        return f"{USER}@{DOMAIN}"

    def setup(self) -> None:
        if os.geteuid() != 0:
            raise RuntimeError("the Postfix lab needs root (Postfix's master runs as root)")
        if not Path(POSTFIX).exists():
            raise RuntimeError(f"{POSTFIX} not found: apt-get install -y postfix")
        self.base = Path(tempfile.mkdtemp(prefix="postfix-bench-"))
        os.chmod(self.base, 0o755)  # daemons running as postfix/nobody must traverse it
        if not self.port:
            self.port = free_port()
        nobody = pwd.getpwnam("nobody")
        uid, gid = nobody.pw_uid, nobody.pw_gid
        etc = self.config_dir
        for d in (etc, self.base / "queue", self.base / "data", self.base / "log"):
            d.mkdir(mode=0o755)
        (self.base / "data").chmod(0o700)
        shutil.chown(self.base / "data", "postfix")
        (etc / "main.cf").write_text(_main_cf(self.base, uid, gid, self.log))
        (etc / "master.cf").write_text(MASTER_CF.format(listen=f"127.0.0.1:{self.port}"))
        (etc / "vmailbox").write_text(f"{self.recipient} {DOMAIN}/{USER}/\n")
        for sub in ("tmp", "new", "cur"):
            (self.maildir / sub).mkdir(parents=True, mode=0o700)
        for d in (self.base / "mail", self.base / "mail" / DOMAIN, self.maildir, *self.maildir.iterdir()):
            os.chown(d, uid, gid)

    def _postfix(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "MAIL_CONFIG"}
        return subprocess.run(
            [POSTFIX, "-c", str(self.config_dir), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of this instance's maillog (empty when logging is off)."""
        try:
            return "\n".join((self.base / "log" / "maillog").read_text().splitlines()[-lines:])
        except OSError:
            return ""

    def start(self, timeout: float = 30.0) -> None:
        self.setup()
        check = self._postfix("check")
        if check.returncode != 0:
            detail = check.stderr.strip() or check.stdout.strip() or self.log_tail()
            raise RuntimeError(f"postfix check failed: {detail}")
        res = self._postfix("start")
        if res.returncode != 0:
            detail = res.stderr.strip() or res.stdout.strip() or self.log_tail()
            raise RuntimeError(f"postfix start failed: {detail}")
        self.started = True
        if not wait_port(self.port, timeout):
            raise RuntimeError(f"Postfix did not listen on 127.0.0.1:{self.port} within {timeout:.0f}s")

    def master_pid(self) -> int | None:
        try:
            return int((self.base / "queue" / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def pids(self) -> list[int]:
        """The master and every process under it (smtpd, cleanup, qmgr, virtual, ...)."""
        pid = self.master_pid()
        return proc_tree(pid) if pid else []

    def delivered(self) -> int:
        """Messages delivered so far: files in the Maildir's new/."""
        try:
            with os.scandir(self.maildir / "new") as it:
                return sum(1 for _ in it)
        except OSError:
            return 0

    def last_delivery_time(self) -> float | None:
        """Wall-clock time (time.time()) of the newest file in new/, or None if empty."""
        newest: float | None = None
        try:
            with os.scandir(self.maildir / "new") as it:
                for e in it:
                    m = e.stat().st_mtime
                    if newest is None or m > newest:
                        newest = m
        except OSError:
            return None
        return newest

    def queue_size(self) -> int:
        """Files still in the incoming/active/deferred queues."""
        n = 0
        for q in ("incoming", "active", "deferred", "maildrop"):
            for _root, _dirs, files in os.walk(self.base / "queue" / q):
                n += len(files)
        return n

    def stop(self) -> None:
        if self.started:
            pids = self.pids()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._postfix("stop", timeout=30.0)
            deadline = time.monotonic() + 10.0
            while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
                time.sleep(0.1)
            for p in pids:  # anything left of *our* instance only
                with contextlib.suppress(OSError):
                    os.kill(p, signal.SIGKILL)
            self.started = False
        if self.base != Path() and not self.keep:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> PostfixLab:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    with PostfixLab(keep=False) as lab:
        print(f"Postfix listening on 127.0.0.1:{lab.port}; recipient {lab.recipient}")
        print(f"config {lab.config_dir}; Maildir {lab.maildir}; pids {lab.pids()}")
        with contextlib.suppress(KeyboardInterrupt, EOFError):
            input("Enter to stop... ")


if __name__ == "__main__":
    main()
