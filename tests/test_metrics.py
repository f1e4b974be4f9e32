"""The metrics module: the bounded `reason` label, and the exposition summed over worker processes
(prometheus_client's multiprocess mode: two real processes write into one directory, one scrape)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from postroom import metrics

WORKER = """
import os, sys
from postroom import metrics
metrics.MESSAGES_RECEIVED.labels("mx").inc(int(sys.argv[1]))
metrics.CONNECTIONS_OPEN.labels("mx").inc()
metrics.COMMIT_BATCH_SIZE.observe(4)
print(os.getpid())
"""


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition by (name, sorted labels)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
    }


@pytest.mark.parametrize(
    ("enhanced", "label"),
    [
        ("5.1.1", "5.1.1"),
        ("4.2.1", "4.2.1"),
        ("5.7.30", "5.7.30"),
        ("4.4.7", "4.4.7"),
        ("5.7.31", "other"),  # past the registry's range
        ("5.9.1", "other"),  # no such subject
        ("2.0.0", "other"),  # not a failure class
        ("5.01.1", "other"),  # no such spelling: would be a second label for 5.1.1
        ("5.1.1000", "other"),
        ("5.1", "other"),
        ("٥.1.1", "other"),  # a non-ASCII digit
        ("", "other"),
        (None, "other"),
    ],
)
def test_the_reason_label_is_a_registered_code_or_other(enhanced: str | None, label: str) -> None:
    assert metrics.reason(enhanced) == label


@pytest.mark.parametrize(
    ("reply", "label"),
    [
        ("550 5.1.1 The mailbox no longer exists", "5.1.1"),
        ("552 5.3.4 Message size exceeds the limit", "5.3.4"),
        ("550 no enhanced code here", "other"),
        ("garbage", "other"),
    ],
)
def test_a_stored_reply_gives_its_reason(reply: str, label: str) -> None:
    assert metrics.reason_of_reply(reply) == label


def test_a_scrape_sums_every_worker_and_forgets_the_open_connections_of_a_dead_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**os.environ, metrics.MULTIPROCESS_ENV: str(tmp_path)}
    pids = [
        int(
            subprocess.run(
                [sys.executable, "-c", WORKER, str(count)],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        for count in (3, 4)
    ]
    monkeypatch.setenv(metrics.MULTIPROCESS_ENV, str(tmp_path))
    body, content_type = metrics.exposition()
    found = samples(body)
    assert content_type.startswith("text/plain")
    assert found[("postroom_messages_received_total", (("listener", "mx"),))] == 7
    assert found[("postroom_commit_batch_jobs_count", ())] == 2
    assert found[("postroom_smtp_connections_open", (("listener", "mx"),))] == 2
    metrics.worker_exited(pids[0])
    found = samples(metrics.exposition()[0])
    assert found[("postroom_smtp_connections_open", (("listener", "mx"),))] == 1
    assert found[("postroom_messages_received_total", (("listener", "mx"),))] == 7  # counters stay


def test_a_single_process_scrapes_its_own_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(metrics.MULTIPROCESS_ENV, raising=False)
    before = samples(metrics.exposition()[0]).get(("postroom_worker_restarts_total", ()), 0.0)
    metrics.WORKER_RESTARTS.inc()
    assert samples(metrics.exposition()[0])[("postroom_worker_restarts_total", ())] == before + 1
