"""A private, throwaway Rspamd on loopback (with its own Redis), for the spam engine's tests and labs.

`RspamdLab` runs Debian's `rspamd` (3.x) with the distribution's rule set (`/etc/rspamd`: every rule
and score as shipped) and a local configuration of its own in a temp directory:

- a top-level `rspamd.conf` that includes Debian's `common.conf` (metrics, actions, groups,
  statistic, modules) with `LOCAL_CONFDIR`, `DBDIR`, `RUNDIR` and `LOGDIR` pointing into the temp
  directory, and only the workers asked for, on free 127.0.0.1 ports: `normal` (/checkv2) and
  `controller` (/learnspam, /learnham; with a password, and no secure_ip, so the password is checked),
  and with `milter=True` an `rspamd_proxy` in milter mode that scans itself (Postfix's peer in the
  benchmark);
- no internet: its DNS is the given loopback server (`nameserver`), and the modules that ask the
  world (RBL/SURBL/email lists, DCC, fuzzy storage, ASN, MX checks, reputation, the update check,
  external scanners, exporters) are disabled; maps with https:// sources resolve nothing and fall
  back to the shipped files;
- the Bayes classifier on a Redis server it starts on a free port (no persistence), with
  `min_learns` lowered to `min_learns` so a few reports are enough to see it classify;
- a short URL suffix list: every top-level domain of the shipped Public Suffix List, the common
  second-level registries (co.uk ...) and the names reserved for tests (example, test ...). Rspamd
  compiles its suffix list into a Hyperscan database at start; the full list (9,628 suffixes) takes
  about 13 s on a 2-core machine, this one about 3 s. URLs under a multi-label suffix not listed
  are seen one label short (no test depends on it).

`start()` returns when `/ping` answers on the normal worker and records how long that took
(`start_seconds`). Runs as the current user (`-u`/`-g` when that is root, which Rspamd otherwise
refuses). Fails with RuntimeError (and leaves nothing running) when a binary is missing or Rspamd does
not come up; the message names the package `.ci/run` must install.

Run it alone to try it: ``.venv/bin/python -m tests.support.rspamd`` starts one (its DNS a silent
port) and prints its URLs until Enter.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from postroom.config.settings import ListenAddress
from tests.support.sink import free_port

RSPAMD = "/usr/bin/rspamd"
REDIS = "/usr/bin/redis-server"
DEBIAN_CONFDIR = Path("/etc/rspamd")
SHIPPED_SUFFIXES = Path("/usr/share/rspamd/effective_tld_names.dat")
HOST = "127.0.0.1"
PASSWORD = "lab-controller-password"

# Modules that would reach the internet (DNS lists, hash clouds, feeds) or need what a lab has not.
NETWORK_MODULES = (
    "rbl",
    "surbl",
    "emails",
    "dcc",
    "fuzzy_check",
    "asn",
    "mx_check",
    "greylist",
    "ratelimit",
    "neural",
    "reputation",
    "url_redirector",
    "rspamd_update",
    "spamassassin",
    "p0f",
    "antivirus",
    "external_services",
    "clickhouse",
    "elastic",
    "metadata_exporter",
    "bimi",
    "aws_s3",
    "replies",
    "spamtrap",
    "history_redis",
)
_SECOND_LEVEL = """co.uk org.uk ac.uk gov.uk me.uk com.au net.au org.au co.nz co.jp ne.jp or.jp co.kr com.br
com.cn com.mx com.ar co.za co.in com.tr com.ua com.pl co.il com.sg com.hk"""
RESERVED_SUFFIXES = ("example", "test", "invalid", "localhost")  # RFC 2606, RFC 6761: test mail uses them
SECOND_LEVEL_SUFFIXES = tuple(_SECOND_LEVEL.split())


class RspamdLab:
    """One Rspamd with its Redis; see the module docstring."""

    def __init__(self, nameserver: ListenAddress, *, milter: bool = False, min_learns: int = 1) -> None:
        self.nameserver = nameserver
        self.milter = milter
        self.min_learns = min_learns
        self.password = PASSWORD
        self.base = Path()
        self.normal_port = self.controller_port = self.proxy_port = self.redis_port = 0
        self.start_seconds = 0.0
        self._rspamd: subprocess.Popen[bytes] | None = None
        self._redis: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.normal_port}"

    @property
    def controller_url(self) -> str:
        return f"http://{HOST}:{self.controller_port}"

    @property
    def milter_address(self) -> tuple[str, int]:
        return (HOST, self.proxy_port)

    def start(self, timeout: float = 60.0) -> RspamdLab:
        for binary, package in ((RSPAMD, "rspamd"), (REDIS, "redis-server")):
            if not Path(binary).exists():
                raise RuntimeError(f"{binary} not found: .ci/run must install {package}")
        self.base = Path(tempfile.mkdtemp(prefix="rspamd-lab-"))
        try:
            self._start_redis()
            self._write_config()
            begin = time.monotonic()
            self._rspamd = subprocess.Popen(
                [RSPAMD, "-f", "-c", str(self.base / "rspamd.conf"), *self._user(), *self._vars()],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # its workers share its process group: stop() ends them all
            )
            self._wait_ping(timeout)
            self.start_seconds = time.monotonic() - begin
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop Rspamd (its whole process group) and Redis; remove the temp directory."""
        if self._rspamd is not None:
            _end_group(self._rspamd)
            self._rspamd = None
        if self._redis is not None:
            _end_group(self._redis)
            self._redis = None
        if self.base != Path() and self.base.exists():
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> RspamdLab:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join((self.base / "log" / "rspamd.log").read_text().splitlines()[-lines:])
        except OSError:
            return ""

    # -- set-up

    def _start_redis(self) -> None:
        self.redis_port = free_port(HOST)
        self._redis = subprocess.Popen(
            [
                *(REDIS, "--port", str(self.redis_port), "--bind", HOST, "--protected-mode", "no"),
                *("--save", "", "--appendonly", "no", "--dir", str(self.base)),
                *("--logfile", str(self.base / "redis.log")),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                socket.create_connection((HOST, self.redis_port), timeout=1).close()
                return
            if self._redis.poll() is not None:
                break
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not listen on {HOST}:{self.redis_port}")

    def _write_config(self) -> None:
        self.normal_port, self.controller_port = free_port(HOST), free_port(HOST)
        self.proxy_port = free_port(HOST) if self.milter else 0
        for sub in ("local.d", "override.d", "db", "run", "log"):
            (self.base / sub).mkdir()
        if os.geteuid() == 0:
            os.chmod(self.base, 0o755)
        shipped = [
            line.strip()
            for line in SHIPPED_SUFFIXES.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("//") and "." not in line
        ]
        (self.base / "suffixes.dat").write_text(
            "\n".join([*shipped, *SECOND_LEVEL_SUFFIXES, *RESERVED_SUFFIXES]) + "\n"
        )
        proxy = ""
        if self.milter:
            proxy = f"""
worker "rspamd_proxy" {{
    bind_socket = "{HOST}:{self.proxy_port}";
    milter = yes;
    timeout = 120s;
    upstream "local" {{ default = yes; self_scan = yes; }}
    count = 1;
}}
"""
        (self.base / "rspamd.conf").write_text(
            f"""\
.include "$CONFDIR/common.conf"
options {{
    pidfile = "$RUNDIR/rspamd.pid";
    .include "$CONFDIR/options.inc"
    .include(try=true; priority=1,duplicate=merge) "$LOCAL_CONFDIR/local.d/options.inc"
}}
logging {{
    type = "file";
    filename = "$LOGDIR/rspamd.log";
    level = "notice";
}}
worker "normal" {{
    bind_socket = "{HOST}:{self.normal_port}";
    mime = true;
    count = 1;
}}
worker "controller" {{
    bind_socket = "{HOST}:{self.controller_port}";
    count = 1;
    password = "{self.password}";
    enable_password = "{self.password}";
}}
{proxy}"""
        )
        local = self.base / "local.d"
        (local / "options.inc").write_text(
            f'dns {{ nameserver = ["{self.nameserver.host}:{self.nameserver.port}"]; '
            "timeout = 1s; retransmits = 1; }\n"
            f'url_tld = "{self.base / "suffixes.dat"}";\n'
        )
        (local / "redis.conf").write_text(f'servers = "{HOST}:{self.redis_port}";\n')
        (local / "classifier-bayes.conf").write_text(f"min_learns = {self.min_learns};\n")
        for module in NETWORK_MODULES:
            (local / f"{module}.conf").write_text("enabled = false;\n")

    def _vars(self) -> list[str]:
        values = {
            "CONFDIR": DEBIAN_CONFDIR,
            "LOCAL_CONFDIR": self.base,
            "DBDIR": self.base / "db",
            "RUNDIR": self.base / "run",
            "LOGDIR": self.base / "log",
        }
        return [f"--var={name}={value}" for name, value in values.items()]

    @staticmethod
    def _user() -> list[str]:
        if os.geteuid() != 0:
            return []
        return ["-u", pwd.getpwuid(os.geteuid()).pw_name, "-g", grp.getgrgid(os.getegid()).gr_name]

    def _wait_ping(self, timeout: float) -> None:
        assert self._rspamd is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._rspamd.poll() is not None:
                raise RuntimeError(f"rspamd exited with {self._rspamd.returncode}: {self.log_tail()}")
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(f"{self.url}/ping", timeout=1) as answer,
            ):
                if answer.read().strip() == b"pong":
                    return
            time.sleep(0.05)
        raise RuntimeError(f"rspamd did not answer /ping within {timeout:.0f}s: {self.log_tail()}")


def _end_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group this lab started, then SIGKILL what is left after 10 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
    # Workers exit with their main process; a straggler still in the group is killed.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


if __name__ == "__main__":
    from tests.support.dns_server import silent_nameserver

    with silent_nameserver() as address, RspamdLab(address) as lab:
        print(f"rspamd up in {lab.start_seconds:.2f}s: {lab.url} (controller {lab.controller_url})")
        input("Enter stops it. ")
