"""The node's Prometheus metrics: what every room counts, served at the admin listener's `/metrics`.

Each metric is defined here once, under the name an operator scrapes, and the rooms count through
these objects (`metrics.MESSAGES_RECEIVED.inc()`); nothing else creates metrics. Names follow the
Prometheus conventions (`postroom_` prefix, `_total` for counters, seconds and octets as base units).

Several worker processes: the supervisor sets `PROMETHEUS_MULTIPROC_DIR` (a directory under the data
directory, emptied when the node starts) in every worker's environment before the worker imports
anything, so prometheus_client keeps each process's values in a file there and `/metrics`, whichever
worker answers it, sums them (`prometheus_client.multiprocess.MultiProcessCollector`). A single
process (tests, `--workers 1` in the foreground) uses the default registry.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
