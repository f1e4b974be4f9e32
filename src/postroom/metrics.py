"""The node's Prometheus metrics: what every room counts, served at the admin listener's `/metrics`.

Each metric is defined here once, under the name an operator scrapes, and the rooms count through
these objects (`metrics.MESSAGES_RECEIVED.inc()`); nothing else creates metrics. Names follow the
Prometheus conventions (`postroom_` prefix, `_total` for counters, seconds and octets as base units).

Several worker processes: the supervisor sets `PROMETHEUS_MULTIPROC_DIR` (a directory under the data
directory, emptied when the node starts) in every worker's environment before the worker imports
anything, so prometheus_client keeps each process's values in a file there and `/metrics`, whichever
worker answers it, sums them (`prometheus_client.multiprocess.MultiProcessCollector`). A single
process (tests, `--workers 1` in the foreground) uses the default registry. `exposition()` renders
whichever applies; the supervisor calls `worker_exited(pid)` when a worker ends, so the open-connection
gauge (`livesum`) stops counting it while its counters stay in the sums.

*Security:* label values never come from the network as they are. The `reason` of a deferral or a
failure is an enhanced status code, which a remote server chooses: `reason()` keeps the codes of the
registry (class 4 or 5, a known subject, a detail within its range: about 160 values) and maps anything
else to "other", so a hostile server cannot grow the set of time series without bound.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

CONNECTIONS = Counter("postroom_smtp_connections", "SMTP connections accepted, by listener.", ["listener"])
CONNECTIONS_OPEN = Gauge(
    "postroom_smtp_connections_open",
    "SMTP connections open now, by listener.",
    ["listener"],
    multiprocess_mode="livesum",
)
MESSAGES_RECEIVED = Counter(
    "postroom_messages_received",
    "Messages accepted (250 after DATA or BDAT LAST), by listener.",
    ["listener"],
)
RECIPIENTS_DELIVERED = Counter(
    "postroom_recipients_delivered", "Recipients delivered, by route (local, remote).", ["route"]
)
RECIPIENTS_DEFERRED = Counter(
    "postroom_recipients_deferred",
    "Remote delivery attempts deferred (4xx), by enhanced status code.",
    ["reason"],
)
RECIPIENTS_FAILED = Counter(
    "postroom_recipients_failed", "Recipients failed (5xx or expired), by enhanced status code.", ["reason"]
)
COMMIT_BATCH_SIZE = Histogram(
    "postroom_commit_batch_jobs",
    "Jobs per group commit.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
COMMIT_SECONDS = Histogram(
    "postroom_commit_seconds",
    "Time of one group commit (run the batch and commit it durably).",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
QUEUE_DEPTH = Gauge(
    "postroom_queue_recipients",
    "Queued recipients by state (pending, deferred, held, failed), read from the database at scrape.",
    ["state"],
    multiprocess_mode="mostrecent",
)
QUEUE_OLDEST_SECONDS = Gauge(
    "postroom_queue_oldest_seconds",
    "Age of the oldest queued message, read from the database at scrape.",
    multiprocess_mode="mostrecent",
)
DNS_QUERY_SECONDS = Histogram(
    "postroom_dns_query_seconds",
    "DNS queries sent by the resolver (cache misses), by record type.",
    ["rdtype"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
WORKER_RESTARTS = Counter(
    "postroom_worker_restarts", "Worker processes the supervisor restarted after they died."
)
CONNECTION_FILTER_REFUSALS = Counter(
    "postroom_connection_filter_refusals",
    "Connections, messages and recipients the connection filter refused, by what refused them "
    "(service-block, tenant-block, blocklist, connection-rate, message-rate).",
    ["refusal"],
)
RATE_LIMITED_CLIENTS = Gauge(
    "postroom_rate_limited_clients",
    "Client addresses (IPv6: /64 networks) whose connections and messages of the minute are counted.",
    multiprocess_mode="livesum",
)

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
OTHER_REASON = "other"

# The highest detail number of each subject of the enhanced status codes (RFC 3463 and the IANA
# registry's later additions, e.g. X.7.30): a `reason` label outside these is "other", so a remote
# server cannot grow the label set by answering with made-up codes.
_HIGHEST_DETAIL = {0: 0, 1: 10, 2: 4, 3: 6, 4: 7, 5: 6, 6: 10, 7: 30}


def reason(enhanced: str | None) -> str:
    """The `reason` label for an enhanced status code: the code itself when it is one of the bounded
    set (class 4 or 5, a registered subject, detail within the registry's range), else "other"."""
    if enhanced is None or len(enhanced) > 7:
        return OTHER_REASON
    parts = enhanced.split(".")
    # RFC 3463 digits: ASCII, no leading zero, so each code has one spelling and one label.
    if len(parts) != 3 or not all(
        part.isascii() and part.isdigit() and str(int(part)) == part for part in parts
    ):
        return OTHER_REASON
    klass, subject, detail = (int(part) for part in parts)
    highest = _HIGHEST_DETAIL.get(subject)
    if klass not in (4, 5) or highest is None or detail > highest:
        return OTHER_REASON
    return enhanced


def reason_of_reply(text: str) -> str:
    """The `reason` label of a reply as the queue and the trace store it ("550 5.1.1 ...")."""
    code, _, rest = text.partition(" ")
    return reason(rest.partition(" ")[0]) if len(code) == 3 else OTHER_REASON


def exposition() -> tuple[bytes, str]:
    """The `/metrics` body and its content type: every worker's values summed when `PROMETHEUS_MULTIPROC_DIR`
    is set (several worker processes), else this process's registry. Blocking (reads the files)."""
    if os.environ.get(MULTIPROCESS_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def worker_exited(pid: int) -> None:
    """The supervisor saw worker `pid` end: its open-connection gauge no longer counts (its counters
    and histograms stay in the sum, as Prometheus counters must). No-op with a single process."""
    if os.environ.get(MULTIPROCESS_ENV):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
