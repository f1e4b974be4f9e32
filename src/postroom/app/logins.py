"""SMTP AUTH logins: failed-login throttling per client IP and per account, and a short-lived cache of
verified logins.

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
most recently failed). Memory is per process: several processes each
count their own failures (the scale-out issue shares them).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable

MAX_KEYS = 100_000


class FailedLogins:
    """Failed logins per key within the last `window` seconds."""

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

    def _expire(self, failures: deque[float], now: float) -> None:
        while failures and failures[0] <= now - self.window:
            failures.popleft()

    def _make_room(self, now: float) -> None:
        for key in [k for k, failures in self._failures.items() if failures[-1] <= now - self.window]:
            del self._failures[key]
        while len(self._failures) >= MAX_KEYS:
            self._failures.popitem(last=False)


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
