"""`postroom blobs sweep`: remove the message blobs no stored or spooled message points at."""

from __future__ import annotations

from typing import Annotated

import typer

from postroom.app import BlobSweep, sweep_blobs
from postroom.app.blob_sweep import SWEEP_GRACE_SECONDS
from postroom.cli.context import node
from postroom.cli.output import console

blob_app = typer.Typer(help="The blob store (message content).", no_args_is_help=True)


def _what(sweep: BlobSweep) -> str:
    return f"{sweep.unused} of {sweep.examined} blob(s) stored before the grace period are used by no message"


@blob_app.command("sweep")
def blobs_sweep(
    yes: Annotated[bool, typer.Option("--yes", help="Remove them (without it: only count).")] = False,
    grace: Annotated[
        float,
        typer.Option(
            min=60.0, help="Keep blobs stored within this many seconds (a commit may be on its way)."
        ),
    ] = SWEEP_GRACE_SECONDS,
) -> None:
    """Remove the blobs that no stored or spooled message points at (a remotely delivered message's
    body, a put whose message never committed). Safe while nodes serve."""
    current = node()
    sweep = sweep_blobs(current.database, current.blobs, apply=yes, grace=grace)
    if not yes:
        console.print(f"{_what(sweep)}; repeat with --yes to remove them", markup=False)
        return
    console.print(f"{_what(sweep)}; removed {sweep.removed}", markup=False)
