"""`postroom node list`: the serving processes of every node sharing this database, from the node registry.

Each row is one process (a worker of a node): its node and worker number, pid, host, version,
listeners, load (SMTP connections, message octets held in memory, deliveries in flight), the queue
leases it holds now, its last heartbeat, and its state: `serving`, `stopped` (it stopped cleanly) or
`gone` (no heartbeat for three of its intervals: killed, hung or cut off from the database; its
leases expire and other nodes take its work).
"""

from __future__ import annotations

import time

import typer

from postroom.cli.context import JsonOption, node
from postroom.cli.output import emit_json, table, when
from postroom.cluster import NodeRecord, node_list

node_app = typer.Typer(help="The nodes and worker processes that share this database.", no_args_is_help=True)


def _json(record: NodeRecord, now: float) -> dict[str, object]:
    return {
        "id": record.id,
        "node": record.node,
        "worker": record.worker,
        "pid": record.pid,
        "host": record.host,
        "version": record.version,
        "listeners": record.listeners,
        "load": record.load,
        "leases": record.leases,
        "started_at": record.started_at,
        "heartbeat_at": record.heartbeat_at,
        "heartbeat_age": round(now - record.heartbeat_at, 3),
        "stopped_at": record.stopped_at,
        "state": record.state.value,
    }


@node_app.command("list")
def list_nodes(json_output: JsonOption = False) -> None:
    """Every registered process: serving, stopped or gone, with its load and the leases it holds."""
    now = time.time()
    with node().database.read() as conn:
        records = node_list(conn, now)
    if json_output:
        return emit_json([_json(record, now) for record in records])
    table(
        None,
        ["node", "worker", "pid", "host", "version", "listeners", "load", "leases", "heartbeat", "state"],
        [
            (
                r.node,
                r.worker,
                r.pid,
                r.host,
                r.version,
                ", ".join(f"{item.get('name', '?')} {item.get('address', '?')}" for item in r.listeners),
                ", ".join(f"{key} {value}" for key, value in sorted(r.load.items())),
                r.leases,
                f"{when(r.heartbeat_at)} ({now - r.heartbeat_at:.0f} s ago)",
                r.state.value,
            )
            for r in records
        ],
    )
