"""`postroom contact ...`: mail contacts, external addresses in the directory."""

from __future__ import annotations

from typing import Annotated

import typer

from postroom.cli.context import JsonOption, TenantScopeOption, node, refusals, scope_for
from postroom.cli.output import console
from postroom.cli.recipients import (
    TenantFilter,
    list_recipients,
    show_recipient,
)
from postroom.directory import RecipientKind

contact_app = typer.Typer(help="Mail contacts: external addresses in the directory.", no_args_is_help=True)


@contact_app.command("add")
def contact_add(
    address: Annotated[str, typer.Argument(help="The contact's address in one of the tenant's domains.")],
    external: Annotated[str, typer.Option(help="The external address mail for the contact goes to.")],
    name: Annotated[str, typer.Option(help="Display name.")] = "",
    tenant: TenantScopeOption = None,
) -> None:
    """Create a mail contact."""
    with refusals():
        created = node().directory.add_contact(
            scope_for(tenant), address, external_address=external, display_name=name
        )
    console.print(f"contact {created.primary_address} -> {created.external_address} created", markup=False)


@contact_app.command("list")
def contact_list(tenant: TenantFilter = None, json_output: JsonOption = False) -> None:
    """List mail contacts."""
    list_recipients(RecipientKind.CONTACT, tenant, None, json_output)


@contact_app.command("show")
def contact_show(address: str, json_output: JsonOption = False, tenant: TenantScopeOption = None) -> None:
    """Show a mail contact."""
    with refusals():
        show_recipient(node().directory.get_recipient(scope_for(tenant), address), json_output)


@contact_app.command("remove")
def contact_remove(address: str, tenant: TenantScopeOption = None) -> None:
    """Remove a mail contact."""
    with refusals():
        node().directory.remove_recipient(scope_for(tenant), address)
    console.print(f"{address} removed", markup=False)
