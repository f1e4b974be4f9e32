"""Message trace: typed events on every step, per-recipient status, search and detail."""

from postroom.model.flow import EventKind, TraceEvent, TraceRecipient, TraceStatus
from postroom.trace.service import (
    StoredTraceEvent,
    TraceDetail,
    TraceMessage,
    TraceQuery,
    TraceRow,
    TraceService,
    purge,
    record_events,
    record_message,
    remove_tenant_trace,
    set_statuses,
)

__all__ = [
    "EventKind",
    "StoredTraceEvent",
    "TraceDetail",
    "TraceEvent",
    "TraceMessage",
    "TraceQuery",
    "TraceRecipient",
    "TraceRow",
    "TraceService",
    "TraceStatus",
    "purge",
    "record_events",
    "record_message",
    "remove_tenant_trace",
    "set_statuses",
]
