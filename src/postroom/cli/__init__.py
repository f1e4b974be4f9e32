"""The `postroom` command: an adapter over the node's services (see `postroom --help`)."""

from postroom.cli.main import app, main

__all__ = ["app", "main"]
