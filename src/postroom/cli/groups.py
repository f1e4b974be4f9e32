"""`postroom group ...`: distribution groups."""

from __future__ import annotations

from typing import Annotated

import typer

from postroom.cli.context import JsonOption, TenantScopeOption, node, refusals, scope_for
from postroom.cli.output import console
from postroom.cli.recipients import (
    AliasOption,
    DomainFilter,
    TenantFilter,
    list_recipients,
    show_recipient,
)
from postroom.directory import RecipientKind

AllowUnknownOption = Annotated[
    bool,
    typer.Option(
        "--allow-unknown",
        help="Accept members in the tenant's own domains that no recipient has yet (on-premises users).",
    ),
]

group_app = typer.Typer(help="Distribution groups.", no_args_is_help=True)


@group_app.command("add")
def group_add(
    address: str,
    member: Annotated[
        list[str], typer.Option(help="A member: a mailbox, group or mail contact of the tenant; repeat.")
    ],
    name: Annotated[str, typer.Option(help="Display name.")] = "",
    alias: AliasOption = None,
    allow_unknown: AllowUnknownOption = False,
    tenant: TenantScopeOption = None,
) -> None:
    """Create a distribution group. External addresses join as mail contacts (`postroom contact add`)."""
    with refusals():
        created = node().directory.add_group(
            scope_for(tenant),
            address,
            members=member,
            display_name=name,
            aliases=alias or (),
            allow_unknown=allow_unknown,
        )
    console.print(f"group {created.primary_address} created with {len(created.members)} member(s)")


@group_app.command("list")
def group_list(
    tenant: TenantFilter = None, domain: DomainFilter = None, json_output: JsonOption = False
) -> None:
    """List distribution groups."""
    list_recipients(RecipientKind.GROUP, tenant, domain, json_output)


@group_app.command("show")
def group_show(address: str, json_output: JsonOption = False, tenant: TenantScopeOption = None) -> None:
    """Show a group and its members."""
    with refusals():
        show_recipient(node().directory.get_recipient(scope_for(tenant), address), json_output)


@group_app.command("set")
def group_set(
    address: str,
    name: Annotated[str | None, typer.Option(help="New display name.")] = None,
    add_member: Annotated[list[str] | None, typer.Option(help="Add a member; repeat.")] = None,
    remove_member: Annotated[list[str] | None, typer.Option(help="Remove a member; repeat.")] = None,
    allow_unknown: AllowUnknownOption = False,
    tenant: TenantScopeOption = None,
) -> None:
    """Change a group: name, members."""
    with refusals():
        changed = node().directory.set_recipient(
            scope_for(tenant),
            address,
            display_name=name,
            add_members=add_member or (),
            remove_members=remove_member or (),
            allow_unknown=allow_unknown,
        )
    show_recipient(changed, False)


@group_app.command("remove")
def group_remove(address: str, tenant: TenantScopeOption = None) -> None:
    """Remove a group (its members stay)."""
    with refusals():
        node().directory.remove_recipient(scope_for(tenant), address)
    console.print(f"{address} removed")
