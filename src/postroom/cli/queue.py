"""`postroom queue ...`: the delivery queue."""

from __future__ import annotations

import typer

from postroom.cli.context import JsonOption, as_dict, node
from postroom.cli.output import emit_json, fields, when

queue_app = typer.Typer(help="The delivery queue.", no_args_is_help=True)


@queue_app.command("summary")
def queue_summary(json_output: JsonOption = False) -> None:
    """How many recipients wait in the queue."""
    summary = node().queue_summary()
    if json_output:
        return emit_json({**as_dict(summary), "failed": 0})
    fields(
        [
            ("pending", summary.pending),
            ("deferred", summary.deferred),
            ("messages", summary.messages),
            ("oldest", when(summary.oldest_received_at)),
        ]
    )
