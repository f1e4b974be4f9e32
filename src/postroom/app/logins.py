"""SMTP AUTH logins: failed-login throttling per client IP and per account, the per-minute message rate,
and a short-lived cache of verified logins.

`FailedLogins` counts failures per key (a client IP, an account) over a sliding window. The
submission session asks it before it checks a password: at `throttle_after` failures or more for the
client IP or for the account it answers 454 4.7.0 without checking (the right password too), at
`disconnect_after` 421 and the connection closes; each of those answers counts as another failure,
so a client that keeps trying stays refused until it stops for a window.

`VerifiedLogins` remembers a login that Argon2 verified for `seconds`, so a device that logs in for
every message costs one hash check a minute, not one per message. It keeps no password: an entry is
keyed by HMAC-SHA256 of the account and the password under a random key made at start (a memory
dump shows neither), and holds the stamp of the stored password hash it was verified against; a
changed password has a new stamp, so the entry no longer matches and is dropped.

Bounds: each holds at most `MAX_KEYS` entries; past that, expired entries go first and then the
least recently failed ones (a flood of failures from many addresses cannot grow memory without
bound, and it cannot wipe the count of an account it is attacking at the same time: that key is the
most recently failed).

Shared between the worker processes of a node: `SharedCounts` is the same sliding window count
(`WindowCounts`) kept in a small SQLite file under `<data_dir>/run/` that every worker opens, so N
workers allow what one allows, not N times it (an attacker's connections land on every worker). The
serving node uses it for failed logins and for the per-minute submission rate; `FailedLogins` is its
in-memory twin. Why a SQLite file: it is already the node's engine, it is safe across processes
without a process of its own to keep alive (a Unix-socket store would be one more thing the
supervisor restarts), and with `synchronous=OFF` a count or an insert costs tens of microseconds
(no fsync: these counts are not worth a durable write, a crash of the machine forgets the last
window, as a restart of a single process did). Calls block on SQLite's lock briefly, so callers
run them off the event loop. A node's workers share it; several nodes on one PostgreSQL do not
(each node counts its own). Bound: past `MAX_KEYS` keys (checked every `CLEAN_EVERY` adds of a
process) the keys least recently counted are dropped, as in `FailedLogins`.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
import sqlite3
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

MAX_KEYS = 100_000
CLEAN_EVERY = 1000  # `SharedCounts`: adds by one process between two clean-ups of its file


class WindowCounts(Protocol):
    """Events per key (a failed login of a client IP, a message of a mailbox) within a sliding window."""

    def count(self, key: str) -> int: ...

    def add(self, key: str) -> None: ...

    def take(self, key: str, limit: int) -> bool:
        """Count one more event for `key` if it has fewer than `limit` in the window; False if not."""
        ...


class FailedLogins:
    """Failed logins (or any events) per key within the last `window` seconds, in this process."""

    def __init__(self, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()  # least recently failed first

    def count(self, key: str) -> int:
        failures = self._failures.get(key)
        if failures is None:
            return 0
        self._expire(failures, self._clock())
        if not failures:
            del self._failures[key]
            return 0
        return len(failures)

    def add(self, key: str) -> None:
        now = self._clock()
        if key not in self._failures and len(self._failures) >= MAX_KEYS:
            self._make_room(now)
        failures = self._failures.setdefault(key, deque())
        self._failures.move_to_end(key)
        self._expire(failures, now)
        failures.append(now)

    def take(self, key: str, limit: int) -> bool:
        if self.count(key) >= limit:
            return False
        self.add(key)
        return True

    def _expire(self, failures: deque[float], now: float) -> None:
        while failures and failures[0] <= now - self.window:
            failures.popleft()

    def _make_room(self, now: float) -> None:
        for key in [k for k, failures in self._failures.items() if failures[-1] <= now - self.window]:
            del self._failures[key]
        while len(self._failures) >= MAX_KEYS:
            self._failures.popitem(last=False)


SETUP_SECONDS = 10.0  # how long opening the shared counts may wait for the other workers' set-up


class SharedCounts:
    """`WindowCounts` in a SQLite file that every process of the node opens (see the module docstring).

    `table` names the count (a constant of the caller, not input); several counts share one file."""

    def __init__(self, path: Path, table: str, window: float, clock: Callable[[], float] = time.time) -> None:
        if not table.isidentifier():
            raise ValueError(f"not a table name: {table!r}")
        self.window = window
        self._table = table
        self._clock = clock
        self._guard = threading.Lock()  # one connection, used from the lookup threads in turn
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
        # Every worker of a new node opens the file at the same moment, and switching a new file to
        # WAL can fail with "database is locked" without waiting for the busy timeout: retry for a while.
        deadline = time.monotonic() + SETUP_SECONDS
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=OFF")
                self._db.execute(f"CREATE TABLE IF NOT EXISTS {table} (key TEXT NOT NULL, at REAL NOT NULL)")
                self._db.execute(f"CREATE INDEX IF NOT EXISTS {table}_key ON {table} (key, at)")
                break
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        self._adds = 0

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._guard:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _count(self, db: sqlite3.Connection, key: str, now: float) -> int:
        row = db.execute(
            f"SELECT count(*) FROM {self._table} WHERE key = ? AND at > ?", (key, now - self.window)
        ).fetchone()
        return int(row[0])

    def _add(self, db: sqlite3.Connection, key: str, now: float) -> None:
        table = self._table
        db.execute(f"DELETE FROM {table} WHERE key = ? AND at <= ?", (key, now - self.window))
        db.execute(f"INSERT INTO {table} (key, at) VALUES (?, ?)", (key, now))
        self._adds += 1
        if self._adds % CLEAN_EVERY == 0:  # now and then: the keys nobody counted for a window
            db.execute(f"DELETE FROM {table} WHERE at <= ?", (now - self.window,))
            (keys,) = db.execute(f"SELECT count(DISTINCT key) FROM {table}").fetchone()
            if keys > MAX_KEYS:  # a flood from many keys: keep the most recently counted ones
                db.execute(
                    f"DELETE FROM {table} WHERE key NOT IN (SELECT key FROM {table} GROUP BY key "
                    "ORDER BY max(at) DESC LIMIT ?)",
                    (MAX_KEYS * 9 // 10,),
                )

    def count(self, key: str) -> int:
        with self._guard:
            return self._count(self._db, key, self._clock())

    def add(self, key: str) -> None:
        with self._transaction() as db:
            self._add(db, key, self._clock())

    def take(self, key: str, limit: int) -> bool:
        now = self._clock()
        with self._transaction() as db:
            if self._count(db, key, now) >= limit:
                return False
            self._add(db, key, now)
            return True

    def close(self) -> None:
        self._db.close()


class VerifiedLogins:
    """Logins verified within the last `seconds`, keyed without the password (see the module docstring)."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._secret = secrets.token_bytes(32)
        self._entries: dict[bytes, tuple[float, str]] = {}  # key -> (expires, password stamp)

    def _key(self, account: str, password: str) -> bytes:
        message = account.encode("utf-8") + b"\0" + password.encode("utf-8", "surrogatepass")
        return hmac.new(self._secret, message, hashlib.sha256).digest()

    def holds(self, account: str, password: str, stamp: str) -> bool:
        """True when this account logged in with this password, against the same stored hash, lately."""
        key = self._key(account, password)
        entry = self._entries.get(key)
        if entry is None:
            return False
        expires, verified_stamp = entry
        if expires <= self._clock() or not hmac.compare_digest(verified_stamp, stamp):
            self._entries.pop(key, None)  # expired, or the password changed since
            return False
        return True

    def remember(self, account: str, password: str, stamp: str) -> None:
        now = self._clock()
        if len(self._entries) >= MAX_KEYS:
            for key in [k for k, (expires, _) in self._entries.items() if expires <= now]:
                del self._entries[key]
            if len(self._entries) >= MAX_KEYS:
                self._entries.clear()
        self._entries[self._key(account, password)] = (now + self.seconds, stamp)
