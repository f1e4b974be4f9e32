"""`postroom sender restricted ...`: senders restricted for passing their daily recipient limit."""

from __future__ import annotations

import typer

from postroom.cli.context import JsonOption, TenantScopeOption, node, refusals, scope_for
from postroom.cli.output import console, emit_json, table, when
from postroom.cli.recipients import TenantFilter
from postroom.model.scope import OPERATOR

sender_app = typer.Typer(help="Senders: who is restricted from sending.", no_args_is_help=True)
restricted_app = typer.Typer(
    help="Restricted senders: blocked until the next UTC day or an administrator's release.",
    no_args_is_help=True,
)
sender_app.add_typer(restricted_app, name="restricted")


@restricted_app.command("list")
def restricted_list(tenant: TenantFilter = None, json_output: JsonOption = False) -> None:
    """List the senders restricted now."""
    with refusals():
        found = node().directory.restricted_senders(OPERATOR, tenant)
    if json_output:
        return emit_json(found)
    table(
        None,
        ["sender", "tenant", "restricted", "until", "reason"],
        [(r.address, r.tenant, when(r.restricted_at), when(r.until), r.reason) for r in found],
    )


@restricted_app.command("release")
def restricted_release(address: str, tenant: TenantScopeOption = None) -> None:
    """Let a restricted sender send again now (its count for the day starts from zero)."""
    with refusals():
        node().directory.release_sender(scope_for(tenant), address)
    console.print(f"{address} released: it can send again", markup=False)
