"""The cluster: who is alive, and how processes tell each other what changed.

Every serving process (a worker of a node, or a node run as one process) shares one database with
the others. This room holds what they need beyond the database itself:

- `notify`: the notification channel. `publish(topic, payload)` from any thread (the event loop,
  the writer thread, a CLI command); `subscribe(topic, callback)` in a serving process. PostgreSQL
  `LISTEN/NOTIFY` between nodes, Unix datagram sockets between the processes of one data directory
  on SQLite. Notifications are hints: one lost costs latency only (the directory cache's generation
  poll and the scheduler's timer remain the safety net).
- `registry`: the node registry (`nodes` table): each serving process's row, its heartbeat with its
  load, listeners and version, and `node_list` for `postroom node list` (serving, stopped, gone).

It imports storage, model and config only; `app` wires it.
"""

from postroom.cluster.notify import (
    DIRECTORY,
    QUEUE,
    LocalChannel,
    Notifications,
    PostgresChannel,
    notifications_for,
)
from postroom.cluster.registry import (
    HEARTBEAT_SECONDS,
    NodeLoad,
    NodeRecord,
    NodeRegistry,
    NodeState,
    node_list,
)

__all__ = [
    "DIRECTORY",
    "HEARTBEAT_SECONDS",
    "QUEUE",
    "LocalChannel",
    "NodeLoad",
    "NodeRecord",
    "NodeRegistry",
    "NodeState",
    "Notifications",
    "PostgresChannel",
    "node_list",
    "notifications_for",
]
