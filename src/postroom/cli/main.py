"""The `postroom` command line: set up a node, manage the directory and its DNS, read mailboxes and trace.

Every command that lists or shows takes `--json`. The config file comes from `-c FILE` or
$POSTROOM_CONFIG. Errors print what is wrong and what to do, and exit non-zero: 1 for a request the
service refused, 2 for a usage or configuration problem.
"""

from __future__ import annotations

from typing import Annotated

import typer

from postroom import __version__
from postroom.cli import (
    api_tokens,
    blobs,
    connectors,
    contacts,
    domains,
    explain,
    groups,
    mailboxes,
    migrate,
    node,
    nodes,
    protection,
    quarantine,
    queue,
    remote_domains,
    scenarios,
    senders,
    service,
    tenants,
    trace,
)
from postroom.cli.context import state

app = typer.Typer(
    name="postroom",
    help="Postroom: a self-hosted, multi-tenant hosted mail flow service.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

app.add_typer(tenants.tenant_app, name="tenant")
app.add_typer(domains.domain_app, name="domain")
app.add_typer(mailboxes.mailbox_app, name="mailbox")
app.add_typer(groups.group_app, name="group")
app.add_typer(contacts.contact_app, name="contact")
app.add_typer(remote_domains.remote_domain_app, name="remote-domain")
app.add_typer(protection.protection_app, name="protection")
app.add_typer(connectors.connector_app, name="connector")
app.add_typer(api_tokens.api_token_app, name="api-token")
mailboxes.mailbox_app.add_typer(protection.junk_app, name="junk")
app.add_typer(trace.trace_app, name="trace")
app.add_typer(queue.queue_app, name="queue")
app.add_typer(quarantine.quarantine_app, name="quarantine")
app.add_typer(senders.sender_app, name="sender")
app.add_typer(service.service_app, name="service")
app.add_typer(nodes.node_app, name="node")
app.add_typer(blobs.blob_app, name="blobs")
app.add_typer(scenarios.scenario_app, name="scenario")
app.add_typer(migrate.migrate_app, name="migrate")
node.register(app)
explain.register(app)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"postroom {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    config: Annotated[
        str | None,
        typer.Option(
            "--config", "-c", envvar="POSTROOM_CONFIG", help="The node's postroom.toml.", show_envvar=True
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Postroom: a self-hosted, multi-tenant hosted mail flow service."""
    state.config = config


def main() -> None:
    try:
        app()
    finally:
        if state.node is not None:
            state.node.close()
