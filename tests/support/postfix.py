"""A private, throwaway Postfix instance on one loopback address: the benchmark's peer and the tests'
real receiving MTA (tests of delivery.remote).

Builds its own config_directory, queue_directory and data_directory in a temp directory. main.cf is
Debian's as its postinst writes it (``DEBIAN_MAIN_CF``) with only the changes of ``lab_main_cf()``
(private directories, the loopback address ``host``, virtual(8) delivery of ``user@<domain>`` into one
Maildir, a log file); master.cf is Debian's shipped ``master.cf.dist`` with only smtpd moved from port
25 to HOST:PORT; the chroot is filled by Debian's own ``configure-instance.sh``. No other tuning: notably
``in_flow_delay`` stays at its shipped 1s unless asked. The system's /etc/postfix and port 25 are never
touched. Needs root (Postfix's master runs as root and drops to ``mail_owner``). Fails with
RuntimeError (and leaves nothing running) when the package files are missing or Postfix will not start.

Run it alone to try it: ``.venv/bin/python -m tests.support.postfix`` starts an instance, prints its port
and Maildir, and stops it on Enter or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

POSTFIX = "/usr/sbin/postfix"
MASTER_CF_DIST = Path("/usr/share/postfix/master.cf.dist")  # Debian's master.cf, as shipped
CONFIGURE_INSTANCE = Path("/usr/lib/postfix/configure-instance.sh")  # Debian's chroot set-up
DOMAIN = "bench.example"  # the benchmark's; tests give their own
USER = "user"
HOST = "127.0.0.1"

# main.cf exactly as Debian's postinst writes it for an "Internet Site" (Postfix 3.7, bookworm),
# minus the host name it takes from the machine; everything not named here is Postfix's default.
DEBIAN_MAIN_CF: tuple[tuple[str, str], ...] = (
    ("smtpd_banner", "$myhostname ESMTP $mail_name (Debian/GNU)"),
    ("biff", "no"),
    ("append_dot_mydomain", "no"),
    ("readme_directory", "no"),
    ("compatibility_level", "3.6"),
    ("smtpd_relay_restrictions", "permit_mynetworks permit_sasl_authenticated defer_unauth_destination"),
    ("alias_maps", "hash:/etc/aliases"),
    ("alias_database", "hash:/etc/aliases"),
    ("mydestination", "$myhostname, localhost.localdomain, , localhost"),
    ("relayhost", ""),
    ("mynetworks", "127.0.0.0/8 [::ffff:127.0.0.0]/104 [::1]/128"),
    ("mailbox_size_limit", "0"),
    ("recipient_delimiter", "+"),
    ("inet_interfaces", "all"),
    ("inet_protocols", "all"),
)


def lab_main_cf(
    base: Path, uid: int, gid: int, in_flow_delay: str | None, domain: str = DOMAIN
) -> dict[str, str]:
    """What the lab changes in Debian's main.cf, and nothing else (bench/README.md says why)."""
    changes = {
        # A private instance: its own queue and data, so the system's Postfix is never touched.
        "queue_directory": str(base / "queue"),
        "data_directory": str(base / "data"),
        # Loopback only. Postfix wants these to be interface addresses (127.0.0.21 is only routed to
        # lo), so they stay 127.0.0.1 and master.cf binds smtpd to `host` itself.
        "inet_interfaces": "127.0.0.1",
        # The one recipient, delivered by virtual(8) into a Maildir as `nobody`, like Postroom's mailbox.
        "virtual_mailbox_domains": domain,
        "virtual_mailbox_base": str(base / "mail"),
        "virtual_mailbox_maps": f"texthash:{base / 'etc' / 'vmailbox'}",
        "virtual_uid_maps": f"static:{uid}",
        "virtual_gid_maps": f"static:{gid}",
        "virtual_minimum_uid": str(min(uid, 100)),
        # One log line per message stage into a file (there is no syslog here), as Postroom logs at info.
        "maillog_file": str(base / "log" / "maillog"),
        "maillog_file_prefixes": str(base / "log"),
    }
    if in_flow_delay is not None:
        changes["in_flow_delay"] = in_flow_delay  # only on request; the shipped default is 1s
    return changes


def main_cf(
    base: Path,
    uid: int,
    gid: int,
    in_flow_delay: str | None,
    domain: str = DOMAIN,
    extra: dict[str, str] | None = None,
) -> str:
    """Debian's main.cf with the lab's changes applied in place (each key written once), then a
    test's `extra` settings (an on-premises server's relayhost and client certificate, say)."""
    settings = dict(DEBIAN_MAIN_CF)
    settings.update(lab_main_cf(base, uid, gid, in_flow_delay, domain))
    settings.update(extra or {})
    return "".join(f"{k} = {v}\n" for k, v in settings.items())


def master_cf(port: int, host: str = HOST) -> str:
    """Debian's master.cf as shipped, with smtpd listening on host:port instead of port 25."""
    lines = MASTER_CF_DIST.read_text().splitlines(keepends=True)
    smtpd = [i for i, line in enumerate(lines) if re.match(r"smtp\s+inet\s", line)]
    if len(smtpd) != 1:
        raise RuntimeError(f"{MASTER_CF_DIST}: expected one `smtp inet` line, found {len(smtpd)}")
    fields = lines[smtpd[0]].split()
    lines[smtpd[0]] = " ".join([f"{host}:{port}", *fields[1:]]) + "\n"
    return "".join(lines)


def free_port(host: str = HOST) -> int:
    """Return a TCP port on `host` that was free a moment ago (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float, host: str = HOST) -> bool:
    """Wait until something accepts TCP connections on host:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1.0) as s:
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
    keep: bool = False
    in_flow_delay: str | None = None  # None: as shipped (1s)
    host: str = HOST  # the loopback address it listens on
    domain: str = DOMAIN  # the domain of its one mailbox, user@<domain>
    extra: dict[str, str] = field(default_factory=dict)  # main.cf settings a test adds (`main_cf`)
    base: Path = field(default_factory=lambda: Path())
    started: bool = False

    @property
    def config_dir(self) -> Path:
        return self.base / "etc"

    @property
    def maildir(self) -> Path:
        return self.base / "mail" / self.domain / USER

    @property
    def recipient(self) -> str:
        return f"{USER}@{self.domain}"

    def setup(self) -> None:
        if os.geteuid() != 0:
            raise RuntimeError("the Postfix lab needs root (Postfix's master runs as root)")
        if not Path(POSTFIX).exists():
            raise RuntimeError(f"{POSTFIX} not found: apt-get install -y postfix")
        self.base = Path(tempfile.mkdtemp(prefix="postfix-lab-"))
        os.chmod(self.base, 0o755)  # daemons running as postfix/nobody must traverse it
        if not self.port:
            self.port = free_port(self.host)
        nobody = pwd.getpwnam("nobody")
        uid, gid = nobody.pw_uid, nobody.pw_gid
        etc = self.config_dir
        for d in (etc, self.base / "queue", self.base / "data", self.base / "log"):
            d.mkdir(mode=0o755)
        (self.base / "data").chmod(0o700)
        shutil.chown(self.base / "data", "postfix")
        (etc / "main.cf").write_text(
            main_cf(self.base, uid, gid, self.in_flow_delay, self.domain, self.extra)
        )
        (etc / "master.cf").write_text(master_cf(self.port, self.host))
        (etc / "vmailbox").write_text(f"{self.recipient} {self.domain}/{USER}/\n")
        for sub in ("tmp", "new", "cur"):
            (self.maildir / sub).mkdir(parents=True, mode=0o700)
        mail = self.base / "mail"
        for d in (mail, mail / self.domain, self.maildir, *self.maildir.iterdir()):
            os.chown(d, uid, gid)

    def _chroot(self) -> None:
        """Fill the instance's chroot (its queue directory) as Debian's start-up does for /etc/postfix."""
        env = {**os.environ, "MAIL_CONFIG": str(self.config_dir)}
        res = subprocess.run(
            ["sh", str(CONFIGURE_INSTANCE), "-"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        if res.returncode != 0:
            raise RuntimeError(f"{CONFIGURE_INSTANCE} failed: {(res.stderr or res.stdout).strip()[-400:]}")

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

    def flush(self) -> None:
        """Try the deferred mail now (`postfix flush`), not at its next retry time."""
        result = self._postfix("flush")
        if result.returncode != 0:
            raise RuntimeError(f"postfix flush failed: {result.stderr.strip() or result.stdout.strip()}")

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of this instance's maillog (empty when logging is off)."""
        try:
            return "\n".join((self.base / "log" / "maillog").read_text().splitlines()[-lines:])
        except OSError:
            return ""

    def start(self, timeout: float = 30.0) -> None:
        self.setup()
        self._chroot()
        check = self._postfix("check")
        if check.returncode != 0:
            detail = check.stderr.strip() or check.stdout.strip() or self.log_tail()
            raise RuntimeError(f"postfix check failed: {detail}")
        res = self._postfix("start")
        if res.returncode != 0:
            detail = res.stderr.strip() or res.stdout.strip() or self.log_tail()
            raise RuntimeError(f"postfix start failed: {detail}")
        self.started = True
        if not wait_port(self.port, timeout, self.host):
            raise RuntimeError(f"Postfix did not listen on {self.host}:{self.port} within {timeout:.0f}s")

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
        """Messages in the Maildir: files in new/ and cur/ (virtual(8) renames into new/ when done)."""
        n = 0
        for sub in ("new", "cur"):
            with os.scandir(self.maildir / sub) as it:
                n += sum(1 for _ in it)
        return n

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
        print(f"Postfix listening on {lab.host}:{lab.port}; recipient {lab.recipient}")
        print(f"config {lab.config_dir}; Maildir {lab.maildir}; pids {lab.pids()}")
        with contextlib.suppress(KeyboardInterrupt, EOFError):
            input("Enter to stop... ")


if __name__ == "__main__":
    main()
