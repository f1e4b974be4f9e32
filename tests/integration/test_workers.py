"""`postroom serve --workers 2` on SQLite, a real process: load, a worker killed, stop, supervisor killed."""

from __future__ import annotations

import base64
import contextlib
import os
import re
import signal
import smtplib
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, multiprocess

from postroom.app import App
from postroom.config import Settings
from tests.conftest import populate, wait_for
from tests.support.node import make_node

SENDER = "news@partner.example"
RECIPIENT = "bob@contoso.com"
_LISTENING = re.compile(r"^(\w+)\s+(SMTPS?|HTTPS?|IMAPS?)\s+(\S+):(\d+)\s*$")


def _children(pid: int) -> set[int]:
    """The pids whose parent is `pid` (the workers of a supervisor)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if int(stat.rpartition(")")[2].split()[1]) == pid:
                    found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


@dataclass
class Served:
    """A supervisor serving a node with two workers; `log` holds what every process logged."""

    settings: Settings
    process: subprocess.Popen[str]
    log: Path
    listeners: dict[str, tuple[str, int]] = field(default_factory=dict)

    @property
    def mx(self) -> tuple[str, int]:
        return self.listeners["mx"]

    def workers(self) -> set[int]:
        return _children(self.process.pid)

    def logged(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                for pid in self.workers():
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
                self.process.kill()
                self.process.wait()


def _serve(directory: Path, workers: int = 2) -> Served:
    settings = make_node(directory)
    app = App.open(settings)
    populate(app)
    app.close()
    log = directory / "serve.log"
    env = {k: v for k, v in os.environ.items() if k != "POSTROOM_CONFIG"}
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "postroom",
                "-c",
                str(settings.source),
                "serve",
                "--workers",
                str(workers),
            ],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env={**env, "COLUMNS": "200"},
        )
    served = Served(settings, process, log)
    assert process.stdout is not None
    for line in process.stdout:
        match = _LISTENING.match(line.strip())
        if match:
            served.listeners[match.group(1)] = (match.group(3).strip("[]"), int(match.group(4)))
        if line.startswith("serving"):
            assert f"with {workers} worker processes" in line
            return served
    served.stop()
    raise AssertionError(f"postroom serve exited ({process.wait()}): {served.logged()[-2000:]}")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    served = _serve(tmp_path_factory.mktemp("workers") / "node")
    yield served
    served.stop()


def _delivered(settings: Settings) -> Counter[str]:
    """Message-IDs in the mailboxes, with how many copies of each."""
    with contextlib.closing(sqlite3.connect(settings.data_dir / "postroom.db")) as db:
        rows = db.execute("SELECT message_id_header FROM messages").fetchall()
    return Counter(value.strip().strip("<>") for (value,) in rows)


@dataclass
class Load:
    """`threads` clients each sending `each` messages, a new connection every `per_connection`; a
    message that did not get its 250 is sent again under a new Message-ID."""

    mx: tuple[str, int]
    threads: int = 8
    each: int = 50
    per_connection: int = 5
    acknowledged: list[str] = field(default_factory=list)
    retries: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def client(self, number: int) -> None:
        sent = 0
        deadline = time.monotonic() + 120
        while sent < self.each and time.monotonic() < deadline:
            try:
                with smtplib.SMTP(*self.mx, timeout=30) as smtp:
                    for _ in range(self.per_connection):
                        if sent >= self.each:
                            break
                        message_id = f"{number}.{sent}.{uuid.uuid4().hex}@load.example"
                        body = f"Message-ID: <{message_id}>\r\nSubject: load\r\n\r\n{'x' * 2000}\r\n"
                        smtp.sendmail(SENDER, [RECIPIENT], body.encode())
                        with self._lock:
                            self.acknowledged.append(message_id)
                        sent += 1
            except (OSError, smtplib.SMTPException):
                with self._lock:
                    self.retries += 1

    def start(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self.client, args=(n,)) for n in range(self.threads)]
        for thread in threads:
            thread.start()
        return threads


def _finish(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(150)
        assert not thread.is_alive()


def test_every_message_of_a_load_lands_once_and_every_worker_takes_some(served: Served) -> None:
    before = _delivered(served.settings)
    load = Load(served.mx)
    _finish(load.start())
    assert len(load.acknowledged) == 400 and load.retries == 0
    delivered = _delivered(served.settings) - before
    assert sorted(delivered) == sorted(load.acknowledged)
    assert set(delivered.values()) == {1}
    workers_that_queued = set(re.findall(r"\[worker (\d)\]: queued id=", served.logged()))
    assert workers_that_queued == {"1", "2"}


def test_a_worker_killed_mid_load_is_restarted_and_nothing_acknowledged_is_lost(served: Served) -> None:
    before = _delivered(served.settings)
    workers = served.workers()
    assert len(workers) == 2
    victim = min(workers)
    load = Load(served.mx)
    threads = load.start()
    wait_for(lambda: len(load.acknowledged) >= 100, timeout=60)
    os.kill(victim, signal.SIGKILL)
    _finish(threads)
    assert len(load.acknowledged) == 400  # the other worker, then the new one, kept serving
    delivered = _delivered(served.settings) - before
    assert all(delivered[message_id] == 1 for message_id in load.acknowledged)
    wait_for(lambda: len(served.workers()) == 2 and victim not in served.workers(), timeout=30)
    assert "killed by SIGKILL" in served.logged()
    wait_for(lambda: _scrape(served, "postroom_worker_restarts_total") == 1.0, timeout=30)


def _scrape(served: Served, name: str) -> float | None:
    """A value as /metrics sums it over the workers' files in <data_dir>/run/metrics."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(served.settings.data_dir / "run" / "metrics"))  # type: ignore[no-untyped-call]
    return registry.get_sample_value(name)


def _login(submission: tuple[str, int], password: str) -> int:
    """One connection to the submission listener: STARTTLS, AUTH PLAIN; the reply code to AUTH."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP(*submission, timeout=30) as smtp:
        smtp.starttls(context=context)
        smtp.ehlo()
        plain = base64.b64encode(f"\0alice@contoso.com\0{password}".encode()).decode()
        try:
            code, _ = smtp.docmd("AUTH", f"PLAIN {plain}")
        except smtplib.SMTPServerDisconnected:
            return 421
        return code


def test_failed_logins_are_counted_by_the_node_not_by_each_worker(served: Served) -> None:
    limits = served.settings.submission
    throttle, disconnect = limits.auth_failures_before_throttle, limits.auth_failures_before_disconnect
    codes = [_login(served.listeners["submission"], "guess") for _ in range(disconnect + 2)]
    # Each connection went to either worker; together they allowed what one process allows.
    assert codes == [535] * throttle + [454] * (disconnect - throttle) + [421] * 2
    assert _login(served.listeners["submission"], "alice-pw") == 421  # the right password too

    def workers_that_refused() -> set[str]:
        return set(re.findall(r"\[worker (\d)\]: SMTP AUTH failed", served.logged()))

    # The kernel gives each connection to whichever worker accepts first, and one worker may win a
    # short run of them: more attempts (every one refused, by either worker) until both have refused.
    for _ in range(50):
        if workers_that_refused() == {"1", "2"}:
            break
        assert _login(served.listeners["submission"], "guess") == 421
    assert workers_that_refused() == {"1", "2"}


def test_idle_sessions_on_every_worker_are_woken_by_one_delivery(served: Served) -> None:
    """The IMAP listeners are shared by the workers; a delivery committed by whichever worker took
    the SMTP connection wakes IDLE sessions on both (the notification channel between processes)."""
    host, port = served.listeners["imaps"]
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    sessions = []
    for _ in range(6):  # spread over the workers by whichever accepts first
        sock = context.wrap_socket(socket.create_connection((host, port), timeout=15), server_hostname=host)
        sock.sendall(b"a LOGIN alice@contoso.com alice-pw\r\nb SELECT INBOX\r\nc IDLE\r\n")
        answer = b""
        while not answer.endswith(b"+ idling\r\n"):
            answer += sock.recv(65536)
        sessions.append(sock)
    with smtplib.SMTP(*served.mx, timeout=15) as smtp:
        smtp.sendmail(SENDER, ["alice@contoso.com"], b"Subject: wake\r\n\r\nup\r\n")
    for sock in sessions:
        woken = b""
        while b" EXISTS\r\n" not in woken:
            woken += sock.recv(65536)
        sock.sendall(b"DONE\r\n")
        sock.close()


def test_a_second_node_on_the_same_port_is_refused_in_one_line(served: Served, tmp_path: Path) -> None:
    other = make_node(tmp_path / "other")
    text = other.source.read_text()
    other.source.write_text(text.replace('"127.0.0.1:0"', f'"127.0.0.1:{served.mx[1]}"', 1))
    env = {k: v for k, v in os.environ.items() if k != "POSTROOM_CONFIG"}
    result = subprocess.run(
        [sys.executable, "-m", "postroom", "-c", str(other.source), "serve", "--workers", "2"],
        capture_output=True,
        text=True,
        env={**env, "COLUMNS": "200"},
        timeout=60,
    )
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "[mx] listen" in line and "in use" in line and str(served.mx[1]) in line


def test_sigterm_drains_every_worker_and_exits_0(tmp_path: Path) -> None:
    served = _serve(tmp_path / "node")
    try:
        workers = served.workers()
        smtp = smtplib.SMTP(*served.mx, timeout=30)
        smtp.ehlo("client.example")
        assert smtp.mail(SENDER)[0] == 250
        assert smtp.rcpt(RECIPIENT)[0] == 250
        served.process.send_signal(signal.SIGTERM)
        wait_for(lambda: served.logged().count("stopping: draining") == 2, timeout=30)
        code, _ = smtp.data(b"Message-ID: <drained@load.example>\r\nSubject: drain\r\n\r\nhi\r\n")
        assert code == 250  # the transaction in flight finished before its worker stopped
        assert smtp.docmd("NOOP")[0] == 421  # and then the connection is closed: 4.3.2
        smtp.close()
        assert served.process.wait(60) == 0
        assert not any(_alive(pid) for pid in workers)
        assert _delivered(served.settings)["drained@load.example"] == 1
    finally:
        served.stop()


def test_a_supervisor_killed_with_sigkill_leaves_no_worker_serving(tmp_path: Path) -> None:
    served = _serve(tmp_path / "node")
    try:
        workers = served.workers()
        assert len(workers) == 2
        served.process.kill()
        served.process.wait(10)
        wait_for(lambda: not any(_alive(pid) for pid in workers), timeout=30)
        with pytest.raises(ConnectionRefusedError), socket.create_connection(served.mx, timeout=5):
            pass
    finally:
        for pid in served.workers():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def test_a_worker_that_cannot_start_again_stops_the_node_without_spinning(tmp_path: Path) -> None:
    served = _serve(tmp_path / "node")
    try:
        served.settings.tls.key.unlink()  # the running workers hold it; a new one cannot start
        victim = min(served.workers())
        started = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        assert served.process.wait(120) == 1
        elapsed = time.monotonic() - started
        log = served.logged()
        slot = re.search(rf"worker (\d) started \(pid {victim}\)", log)
        assert slot is not None
        assert f"error: worker {slot.group(1)} died 5 times in a row" in log
        assert "[tls] key: there is no file" in log  # each try's own error, above it
        restarts = log.count("restarting it in")
        assert restarts == 4  # then it gave up: no spinning
        assert elapsed >= 0.25 + 0.5 + 1 + 2  # with a growing pause between the tries
        assert not served.workers()
    finally:
        served.stop()
