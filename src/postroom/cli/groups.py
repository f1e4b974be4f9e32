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

ExternalSenders = Annotated[
    bool | None,
    typer.Option(
        "--allow-external-senders/--internal-only",
        help="Accept mail from senders outside the organization, or only from inside (the default).",
    ),
]


def _show_group(address: str, json_output: bool, tenant: str | None) -> None:
    scope = scope_for(tenant)
    with refusals():
        group = node().directory.get_recipient(scope, address)
        allowed = (
            node().directory.allows_external_senders(scope, address)
            if group.kind is RecipientKind.GROUP
            else None
        )
    if allowed is None:
        return show_recipient(group, json_output)
    if json_output:
        return show_recipient(group, True, {"allow_external_senders": allowed})
    show_recipient(group, False)
    console.print(
        f"senders: {'inside and outside the organization' if allowed else 'inside the organization only'}"
    )


@group_app.command("add")
def group_add(
    address: str,
    member: Annotated[
        list[str], typer.Option(help="A member: a mailbox, group or mail contact of the tenant; repeat.")
    ],
    name: Annotated[str, typer.Option(help="Display name.")] = "",
    alias: AliasOption = None,
    allow_unknown: AllowUnknownOption = False,
    external_senders: ExternalSenders = None,
    tenant: TenantScopeOption = None,
) -> None:
    """Create a distribution group. External addresses join as mail contacts (`postroom contact add`).
    The group accepts mail only from inside the organization unless --allow-external-senders."""
    with refusals():
        created = node().directory.add_group(
            scope_for(tenant),
            address,
            members=member,
            display_name=name,
            aliases=alias or (),
            allow_unknown=allow_unknown,
        )
        if external_senders is not None:
            node().directory.set_external_senders(
                scope_for(tenant), created.primary_address, external_senders
            )
    console.print(
        f"group {created.primary_address} created with {len(created.members)} member(s)", markup=False
    )


@group_app.command("list")
def group_list(
    tenant: TenantFilter = None, domain: DomainFilter = None, json_output: JsonOption = False
) -> None:
    """List distribution groups."""
    list_recipients(RecipientKind.GROUP, tenant, domain, json_output)


@group_app.command("show")
def group_show(address: str, json_output: JsonOption = False, tenant: TenantScopeOption = None) -> None:
    """Show a group, its members and who may send to it."""
    _show_group(address, json_output, tenant)


@group_app.command("set")
def group_set(
    address: str,
    name: Annotated[str | None, typer.Option(help="New display name.")] = None,
    add_member: Annotated[list[str] | None, typer.Option(help="Add a member; repeat.")] = None,
    remove_member: Annotated[list[str] | None, typer.Option(help="Remove a member; repeat.")] = None,
    allow_unknown: AllowUnknownOption = False,
    external_senders: ExternalSenders = None,
    tenant: TenantScopeOption = None,
) -> None:
    """Change a group: name, members, who may send to it."""
    with refusals():
        changed = node().directory.set_recipient(
            scope_for(tenant),
            address,
            display_name=name,
            add_members=add_member or (),
            remove_members=remove_member or (),
            allow_unknown=allow_unknown,
        )
        if external_senders is not None:
            node().directory.set_external_senders(
                scope_for(tenant), changed.primary_address, external_senders
            )
    _show_group(changed.primary_address, False, tenant)


@group_app.command("remove")
def group_remove(address: str, tenant: TenantScopeOption = None) -> None:
    """Remove a group (its members stay)."""
    with refusals():
        node().directory.remove_recipient(scope_for(tenant), address)
    console.print(f"{address} removed", markup=False)
