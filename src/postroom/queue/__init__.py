"""Queue: the durable spool, per-recipient queue state, and the scheduler of delivery rounds."""

from postroom.queue.scheduler import DeliveryRound, RemoteAgent, Scheduler
from postroom.queue.spool import (
    QueueState,
    QueueSummary,
    RemovedQueue,
    SpoolEntry,
    new_message_id,
    queue_summary,
    remove_tenant_queue,
    settle,
    spooled_blobs,
    write_spool,
)

__all__ = [
    "DeliveryRound",
    "QueueState",
    "QueueSummary",
    "RemoteAgent",
    "RemovedQueue",
    "Scheduler",
    "SpoolEntry",
    "new_message_id",
    "queue_summary",
    "remove_tenant_queue",
    "settle",
    "spooled_blobs",
    "write_spool",
]
