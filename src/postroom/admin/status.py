"""The node's status page (`GET /status` on the admin listener): the queue and the processes, drawn.

What an operator would rather see than read: the queue's recipients by state and the age of its
oldest message, and every process of every node (from the node registry: its state, its open SMTP
connections and the queue leases it holds), each as a horizontal bar in an inline SVG beside its
number, on one HTML page with no script, no style sheet and nothing fetched from elsewhere. The
numbers are the same as `postroom node list` and `/metrics` give.

The page is rendered from a `NodeStatus` (value types only: the admin room knows nothing of the
registry or the queue); every text from the database (node names, states) is HTML-escaped. Who may
see it is the route's business (`[admin] metrics_allow`, as for `/metrics`).
"""

from __future__ import annotations

import html
from dataclasses import dataclass

BAR_WIDTH = 320  # px of the longest bar
ROW_HEIGHT = 22


@dataclass(frozen=True, slots=True)
class ProcessStatus:
    node: str
    worker: int
    pid: int
    state: str  # serving | stopped | gone
    connections: int
    leases: int
    heartbeat_age: float  # seconds since its last heartbeat


@dataclass(frozen=True, slots=True)
class NodeStatus:
    queue: dict[str, int]  # recipients by queue state
    oldest_seconds: float | None  # age of the oldest queued message (None: the queue is empty)
    processes: list[ProcessStatus]


def _bars(rows: list[tuple[str, int]], colour: str) -> str:
    """An SVG of one labelled horizontal bar per row, scaled to the largest value."""
    largest = max((value for _, value in rows), default=0) or 1
    height = ROW_HEIGHT * max(len(rows), 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{BAR_WIDTH + 260}" height="{height}">']
    for index, (label, value) in enumerate(rows):
        y = index * ROW_HEIGHT
        width = round(BAR_WIDTH * value / largest)
        parts.append(
            f'<text x="0" y="{y + 15}" font-size="13">{html.escape(label)}</text>'
            f'<rect x="180" y="{y + 3}" width="{width}" height="{ROW_HEIGHT - 6}" fill="{colour}"/>'
            f'<text x="{186 + width}" y="{y + 15}" font-size="13">{value}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "the queue is empty"
    if seconds < 120:
        return f"the oldest queued message arrived {seconds:.0f} s ago"
    if seconds < 7200:
        return f"the oldest queued message arrived {seconds / 60:.0f} min ago"
    return f"the oldest queued message arrived {seconds / 3600:.1f} h ago"


def render_status(status: NodeStatus) -> str:
    """The status page's HTML."""
    queue = _bars(sorted(status.queue.items()), "#4a78b5")
    processes = [
        (f"{p.node} #{p.worker} ({p.state})", p.connections) for p in status.processes if p.state == "serving"
    ]
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(cell))}</td>"
            for cell in (
                p.node,
                p.worker,
                p.pid,
                p.state,
                p.connections,
                p.leases,
                f"{p.heartbeat_age:.0f} s",
            )
        )
        + "</tr>"
        for p in status.processes
    )
    return (
        '<!doctype html><html><head><meta charset="utf-8"><title>Postroom status</title></head><body>'
        f"<h1>Queue</h1><p>{html.escape(_age(status.oldest_seconds))}</p>{queue}"
        f"<h1>Processes</h1><h2>Open SMTP connections</h2>{_bars(processes, '#5a9e6f')}"
        '<table border="1" cellpadding="4"><tr><th>node</th><th>worker</th><th>pid</th><th>state</th>'
        f"<th>connections</th><th>leases</th><th>last heartbeat</th></tr>{rows}</table>"
        "</body></html>"
    )
