"""The notification channel: processes and nodes tell each other that something changed.

One shape, two engines. `Notifications.publish(topic, payload)` may be called from any thread (the event
loop, the writer thread, a synchronous CLI command) and never blocks on I/O: it records the notification
and a publisher thread sends it, coalescing identical ones still waiting (a burst of spool commits is
one `queue` notification, never zero after the last); it gathers what is published within
`COALESCE_SECONDS` of the first into one send, so a peer wakes once per burst. `subscribe(topic,
callback)` registers a callback run on the event loop of the process that runs `listen()` (a serving
process); the callback is given the payload, or None when notifications may have been missed (the
channel reconnected): refresh fully. `close()` sends what is still waiting (bounded by `FLUSH_SECONDS`),
so a CLI command's change reaches the serving nodes before the command exits.

Topics: `queue` (work was queued: wake the scheduler), `directory` (a directory generation moved:
refresh the cache now); IMAP IDLE will add `mailbox:<id>`. A topic is a word without spaces; a
payload is short text on one line (at most `MAX_PAYLOAD` characters).

Engines:

- `PostgresChannel` (several nodes on one database): `LISTEN/NOTIFY` on channel `postroom` of the
  node's database. One dedicated psycopg connection per process listens (async, TCP keepalives, so a
  dead server is noticed); it reconnects after any failure with a growing pause, and after each
  reconnect tells every subscriber "you may have missed something". Publishing uses a second,
  synchronous connection of the publisher thread (`pg_notify`), reopened after a failure.
- `LocalChannel` (SQLite: the processes of one machine sharing one data directory): Unix datagram
  sockets in `<data_dir>/run/notify/` (mode 0700: only the node's user may send). A listening
  process binds `<pid>-<random>.sock` there; publishing sends one datagram to every socket of the
  directory, this process's own included, without waiting (`MSG_DONTWAIT`): a peer whose queue is
  full drops the hint, and a socket nobody listens on (its process died) is removed. Datagrams need
  no connection and no framing, a dead peer costs one refused `sendto`, and the directory listing is
  the list of peers: simpler than a broker process or pipes between siblings, and it works for
  unrelated processes (the CLI) as well as for workers of one supervisor. Paths go through
  `/proc/self/fd/<dir>/` so a deep data directory never exceeds the 108-byte socket path limit
  (Linux).

Failure: notifications are hints. A lost one only costs latency: the directory cache still polls the
generation every second and the scheduler still wakes on its timer. A failure to send is logged (at
most once per `LOG_EVERY` seconds) and the notification dropped; `publish` never raises for it.

*Security:* what arrives is bounded (`MAX_DATAGRAM` octets; PostgreSQL caps payloads at 8000) and
only ever selects callbacks by topic; a payload is never trusted beyond being text. On PostgreSQL
anyone who can connect to the database can notify, as they could change its rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import psycopg
import sqlalchemy
from psycopg.conninfo import make_conninfo

from postroom.storage import Database

QUEUE = "queue"
DIRECTORY = "directory"

MAX_PAYLOAD = 200  # characters of a payload
MAX_DATAGRAM = 512  # octets a local notification may have; longer ones are cut
FLUSH_SECONDS = 2.0  # how long close() waits for notifications still to send
# A burst of publishes within this window goes out as one send: one wake-up per peer, not one per
# commit (at hundreds of deliveries a second every commit announces its mailbox).
COALESCE_SECONDS = 0.02
LOG_EVERY = 60.0  # seconds between two warnings about failed sends
RECONNECT_SECONDS = (0.2, 5.0)  # first and longest pause before the listener reconnects
POSTGRES_CHANNEL = "postroom"
# A server that vanished without a word (a cut network) is noticed within about 20 s.
KEEPALIVES = {"keepalives": "1", "keepalives_idle": "10", "keepalives_interval": "3", "keepalives_count": "3"}

Callback = Callable[[str | None], None]  # the payload; None: notifications may have been missed
Deliver = Callable[[str | None, str], None]  # (topic, payload); topic None: everything may be missed

log = logging.getLogger(__name__)


class Channel(Protocol):
    """An engine: sends batches (from the publisher thread) and listens (on the event loop)."""

    def send(self, notifications: list[tuple[str, str]]) -> None: ...

    async def listen(self, deliver: Deliver, ready: Callable[[], None]) -> None: ...

    def close(self) -> None: ...


def _line(topic: str, payload: str) -> str:
    return f"{topic} {payload}"


def _parse(line: str) -> tuple[str, str]:
    topic, _, payload = line.partition(" ")
    return topic, payload


class Notifications:
    """Publish and subscribe over one channel (see the module docstring)."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self._subscribers: dict[str, list[Callback]] = {}
        self._pending: dict[tuple[str, str], None] = {}  # ordered set of notifications to send
        self._lock = threading.Condition()
        self._closing = False
        self._publisher: threading.Thread | None = None
        self._last_warning = 0.0
        self.listening = threading.Event()  # set once the channel listens (for tests and readiness)

    def publish(self, topic: str, payload: str = "") -> None:
        """Send `topic` to every subscriber of every process; returns at once, never raises for I/O."""
        if not topic or " " in topic or "\n" in topic:
            raise ValueError(f"not a notification topic: {topic!r}")
        payload = payload.replace("\n", " ")[:MAX_PAYLOAD]
        with self._lock:
            if self._closing:
                return
            self._pending[(topic, payload)] = None
            if self._publisher is None:
                self._publisher = threading.Thread(
                    target=self._publish_waiting, name="postroom-notify", daemon=True
                )
                self._publisher.start()
            self._lock.notify()

    def subscribe(self, topic: str, callback: Callback) -> Callable[[], None]:
        """Call `callback` (on the listening loop) for each notification of `topic`; returns the
        function that ends the subscription."""
        self._subscribers.setdefault(topic, []).append(callback)
        return lambda: self._subscribers.get(topic, []).remove(callback)

    async def listen(self) -> None:
        """Receive and dispatch notifications until cancelled (a serving process runs this as a task)."""
        try:
            await self.channel.listen(self._deliver, self.listening.set)
        finally:
            self.listening.clear()

    def close(self) -> None:
        """Send what is waiting (within FLUSH_SECONDS), then stop publishing."""
        with self._lock:
            self._closing = True
            self._lock.notify()
            publisher = self._publisher
        if publisher is not None:
            publisher.join(FLUSH_SECONDS)
        self.channel.close()

    def _deliver(self, topic: str | None, payload: str) -> None:
        targets: list[tuple[Callback, str | None]]
        if topic is None:
            targets = [(callback, None) for callbacks in self._subscribers.values() for callback in callbacks]
        else:
            targets = [(callback, payload) for callback in self._subscribers.get(topic, ())]
        for callback, given in targets:
            try:
                callback(given)
            except Exception:
                log.exception("a notification subscriber of %s failed", topic or "every topic")

    def _publish_waiting(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._closing:
                    self._lock.wait()
                deadline = time.monotonic() + COALESCE_SECONDS
                while not self._closing and (left := deadline - time.monotonic()) > 0:
                    self._lock.wait(left)  # what else is published meanwhile goes in this send
                batch = list(self._pending)
                self._pending.clear()
                closing = self._closing
            if batch:
                try:
                    self.channel.send(batch)
                except Exception as error:
                    now = time.monotonic()
                    if now - self._last_warning >= LOG_EVERY:
                        self._last_warning = now
                        log.warning(
                            "could not send %d notification(s) (hints; dropped): %s", len(batch), error
                        )
            if closing:
                return


class PostgresChannel:
    """`LISTEN/NOTIFY` on the node's PostgreSQL database (see the module docstring)."""

    def __init__(self, url: str) -> None:
        # SQLAlchemy's URL names the driver; libpq wants the plain scheme.
        self._conninfo = (
            sqlalchemy.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        )
        self._sender: psycopg.Connection[tuple[object, ...]] | None = None

    def _conninfo_for(self, application: str) -> str:
        return make_conninfo(self._conninfo, connect_timeout="5", application_name=application, **KEEPALIVES)

    def send(self, notifications: list[tuple[str, str]]) -> None:
        if self._sender is None or self._sender.closed:
            self._sender = psycopg.connect(self._conninfo_for("postroom notify"), autocommit=True)
        try:
            with self._sender.cursor() as cursor:
                cursor.executemany(
                    "SELECT pg_notify(%s, %s)",
                    [(POSTGRES_CHANNEL, _line(topic, payload)) for topic, payload in notifications],
                )
        except psycopg.Error:
            self.close()
            raise

    async def listen(self, deliver: Deliver, ready: Callable[[], None]) -> None:
        pause = RECONNECT_SECONDS[0]
        listened_before = False
        while True:
            try:
                connection = await psycopg.AsyncConnection.connect(
                    self._conninfo_for("postroom listen"), autocommit=True
                )
                async with connection:
                    await connection.execute(f"LISTEN {POSTGRES_CHANNEL}")
                    if listened_before:
                        log.info("notifications: listening again; every cache refreshes")
                        deliver(None, "")  # whatever was sent while we were away is lost: refresh
                    listened_before = True
                    pause = RECONNECT_SECONDS[0]
                    ready()
                    async for notify in connection.notifies():
                        topic, payload = _parse(notify.payload)
                        deliver(topic, payload)
            except psycopg.Error as error:
                log.warning(
                    "notifications: the listening connection failed (%s); reconnecting in %.1f s",
                    str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__,
                    pause,
                )
            await asyncio.sleep(pause)
            pause = min(pause * 2, RECONNECT_SECONDS[1])

    def close(self) -> None:
        sender, self._sender = self._sender, None
        if sender is not None:
            with contextlib.suppress(psycopg.Error):
                sender.close()


class LocalChannel:
    """Unix datagram sockets in one directory, one per listening process (see the module docstring)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.name = f"{os.getpid()}-{os.urandom(4).hex()}.sock"  # this process's socket, once listening
        self._directory_fd: int | None = None
        self._fd_lock = threading.Lock()

    def _fd(self, *, create: bool) -> int | None:
        """A descriptor of the directory (paths through it stay short); None when it does not exist."""
        with self._fd_lock:
            if self._directory_fd is None:
                if create:
                    self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                try:
                    self._directory_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                except FileNotFoundError:
                    return None
            return self._directory_fd

    def send(self, notifications: list[tuple[str, str]]) -> None:
        directory = self._fd(create=False)
        if directory is None:
            return  # nobody ever listened here
        datagrams = [_line(topic, payload).encode("utf-8")[:MAX_DATAGRAM] for topic, payload in notifications]
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            for name in os.listdir(directory):
                if not name.endswith(".sock"):
                    continue
                path = f"/proc/self/fd/{directory}/{name}"
                for datagram in datagrams:
                    try:
                        sender.sendto(datagram, socket.MSG_DONTWAIT, path)
                    except (ConnectionRefusedError, FileNotFoundError):
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(name, dir_fd=directory)  # its process is gone
                        break
                    except BlockingIOError:
                        break  # the peer is behind: it misses this hint, its timers cover it
                    except OSError as error:
                        log.debug("notifications: cannot send to %s: %s", name, error)
                        break

    async def listen(self, deliver: Deliver, ready: Callable[[], None]) -> None:
        directory = self._fd(create=True)
        assert directory is not None
        receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        receiver.setblocking(False)
        loop = asyncio.get_running_loop()
        try:
            receiver.bind(f"/proc/self/fd/{directory}/{self.name}")

            def readable() -> None:
                while True:
                    try:
                        datagram = receiver.recv(MAX_DATAGRAM)
                    except (BlockingIOError, InterruptedError):
                        return
                    topic, payload = _parse(datagram.decode("utf-8", "replace"))
                    deliver(topic, payload)

            loop.add_reader(receiver.fileno(), readable)
            try:
                ready()
                await asyncio.Future()  # until cancelled
            finally:
                loop.remove_reader(receiver.fileno())
        finally:
            receiver.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.name, dir_fd=directory)

    def close(self) -> None:
        with self._fd_lock:
            if self._directory_fd is not None:
                os.close(self._directory_fd)
                self._directory_fd = None


def notifications_for(database: Database, data_dir: Path) -> Notifications:
    """The channel a node uses: PostgreSQL's when its database is PostgreSQL, else the local one."""
    if database.is_sqlite:
        return Notifications(LocalChannel(data_dir / "run" / "notify"))
    return Notifications(PostgresChannel(database.url))
