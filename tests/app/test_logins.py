"""Failed-login counting: bounded under a flood, the attacked account keeps its count, shared by processes."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from postroom.app import logins
from postroom.app.logins import FailedLogins, SharedCounts


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


def test_processes_sharing_the_counts_file_see_each_others_failures(tmp_path: Path) -> None:
    now = [1000.0]
    path = tmp_path / "run" / "counts.sqlite"
    first, second = (SharedCounts(path, "failed_logins", 60.0, clock=lambda: now[0]) for _ in range(2))
    first.add("ip:192.0.2.1")
    second.add("ip:192.0.2.1")
    assert first.count("ip:192.0.2.1") == second.count("ip:192.0.2.1") == 2
    assert first.count("ip:192.0.2.2") == 0
    now[0] += 60.5
    assert second.count("ip:192.0.2.1") == 0  # the window passed
    first.close()
    second.close()


def test_take_counts_up_to_the_limit_across_processes(tmp_path: Path) -> None:
    path = tmp_path / "counts.sqlite"
    first, second = (SharedCounts(path, "submitted_messages", 60.0) for _ in range(2))
    taken = [counts.take("mailbox:7", 3) for counts in (first, second, first, second, first)]
    assert taken == [True, True, True, False, False]
    assert second.take("mailbox:8", 3)  # another mailbox has its own minute
    first.close()
    second.close()


def test_a_flood_of_keys_is_bounded_and_the_attacked_account_keeps_its_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logins, "MAX_KEYS", 50)
    now = [0.0]
    counts = SharedCounts(tmp_path / "counts.sqlite", "failed_logins", 3600.0, clock=lambda: now[0])
    for attempt in range(1500):
        now[0] += 0.1
        counts.add(f"ip:198.51.100.{attempt}")
        counts.add("account:alice@contoso.com")
    assert counts.count("account:alice@contoso.com") == 1500
    assert counts.count("ip:198.51.100.0") == 0  # forgotten: among the least recently failed
    assert counts.count("ip:198.51.100.1499") == 1
    with sqlite3.connect(tmp_path / "counts.sqlite") as db:
        (keys,) = db.execute("SELECT count(DISTINCT key) FROM failed_logins").fetchone()
    assert keys <= 50 + logins.CLEAN_EVERY  # bounded: at most the adds since the last clean-up over
    counts.close()


def _open_at_once(path: Path, workers: int) -> list[BaseException]:
    """`workers` threads open the counts file at one moment, as a new node's workers do; their errors."""
    barrier = threading.Barrier(workers)
    opened: list[SharedCounts] = []
    errors: list[BaseException] = []

    def open_counts(table: str) -> None:
        barrier.wait()
        try:
            opened.append(SharedCounts(path, table, 60.0))
        except BaseException as error:
            errors.append(error)

    tables = ["failed_logins" if n % 2 else "submitted_messages" for n in range(workers)]
    threads = [threading.Thread(target=open_counts, args=(table,)) for table in tables]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for counts in opened:
        counts.close()
    return errors


def test_workers_opening_a_new_counts_file_at_once_all_start(tmp_path: Path) -> None:
    """Every worker of a new node opens the file at the same moment (it once failed one of them
    with "database is locked" while another switched the new file to WAL)."""
    for trial in range(20):
        assert _open_at_once(tmp_path / str(trial) / "counts.sqlite", 6) == []
