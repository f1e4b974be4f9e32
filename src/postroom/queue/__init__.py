"""Queue: the durable spool, per-recipient queue state, and the scheduler of delivery rounds."""

from postroom.queue.scheduler import DeliveryRound, Scheduler
from postroom.queue.spool import (
    QueueState,
    QueueSummary,
    SpoolEntry,
    new_message_id,
    queue_summary,
    settle,
    write_spool,
)

__all__ = [
    "DeliveryRound",
    "QueueState",
    "QueueSummary",
    "Scheduler",
    "SpoolEntry",
    "new_message_id",
    "queue_summary",
    "settle",
    "write_spool",
]
