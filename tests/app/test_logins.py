"""Failed-login counting under a flood: bounded memory, and the attacked account keeps its count."""

from __future__ import annotations

import pytest

from postroom.app import logins
from postroom.app.logins import FailedLogins


def test_a_flood_of_failures_from_other_keys_does_not_wipe_the_attacked_account(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(logins, "MAX_KEYS", 50)
    now = [0.0]
    failed = FailedLogins(window=300.0, clock=lambda: now[0])
    for attempt in range(200):
        now[0] += 0.1
        failed.add(f"ip:198.51.100.{attempt}")  # a new address each time...
        failed.add("account:alice@contoso.com")  # ...all guessing alice's password
    assert failed.count("account:alice@contoso.com") == 200
    assert len(failed._failures) <= 50  # bounded: the oldest addresses were forgotten
    assert failed.count("ip:198.51.100.0") == 0 and failed.count("ip:198.51.100.199") == 1


def test_failures_expire_after_the_window() -> None:
    now = [0.0]
    failed = FailedLogins(window=60.0, clock=lambda: now[0])
    failed.add("ip:192.0.2.1")
    now[0] = 59.0
    assert failed.count("ip:192.0.2.1") == 1
    now[0] = 60.5
    assert failed.count("ip:192.0.2.1") == 0
