"""The node's log while it serves: records go through a queue to a thread that writes them.

`serving_log(level)` sets the root logger up for `postroom serve` (the format of `logging.basicConfig`,
to standard error) with a `QueueHandler` in front: the thread that logs (the event loop, for the mail
log line of every message) formats the record and hands it over, and a `QueueListener` thread does the
write. Why: a write to standard error releases the GIL, and on the event loop's thread, with the blob
and writer threads waiting for the GIL, each one cost a hand-over and a wait to get it back, once per
message (stdlib `logging.handlers`, no library needed).

Failure behaviour: a record is written shortly after it was logged, in the order logged; leaving the
context (the node stopped, or failed) writes every record still queued before it returns, and gives
the root logger back its level and handlers. A process
killed with -9 loses what was queued and not yet written (the lines of the last moments).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import sys
from collections.abc import Iterator
from logging.handlers import QueueHandler, QueueListener

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@contextlib.contextmanager
def serving_log(level: str) -> Iterator[None]:
    """Log at `level` to standard error, written by a thread of its own, while the context is open."""
    writer = logging.StreamHandler(sys.stderr)
    writer.setFormatter(logging.Formatter(LOG_FORMAT))
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    handler = QueueHandler(records)
    listener = QueueListener(records, writer)
    root = logging.getLogger()
    level_before = root.level
    root.setLevel(level.upper())
    root.addHandler(handler)
    listener.start()
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level_before)
        listener.stop()  # writes what is still queued
        writer.close()
