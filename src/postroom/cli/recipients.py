"""What the mailbox, group and contact commands share: showing and listing recipients, options."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from postroom.cli.context import as_dict, node, refusals, scope_for
from postroom.cli.output import emit_json, fail, fields, table
from postroom.directory import Recipient, RecipientKind
from postroom.model.scope import Scope


# --- recipients -----------------------------------------------------------------------------------
def show_recipient(recipient: Recipient, json_output: bool, extra: dict[str, object] | None = None) -> None:
    if json_output:
        return emit_json({**as_dict(recipient), "address": recipient.primary_address, **(extra or {})})
    pairs: list[tuple[str, object]] = [
        ("address", recipient.primary_address),
        ("kind", recipient.kind.value),
        ("name", recipient.display_name or "-"),
        ("tenant", recipient.tenant),
        ("aliases", ", ".join(recipient.aliases) or "-"),
    ]
    if recipient.kind is RecipientKind.GROUP:
        pairs.append(("members", ", ".join(recipient.members) or "-"))
    if recipient.kind is RecipientKind.CONTACT:
        pairs.append(("external address", recipient.external_address or "-"))
    fields(pairs)


def list_recipients(kind: RecipientKind, tenant: str | None, domain: str | None, json_output: bool) -> None:
    with refusals():
        found = node().directory.list_recipients(scope_for(tenant), kind=kind, domain=domain)
    if json_output:
        return emit_json([{**as_dict(r), "address": r.primary_address} for r in found])
    table(
        None,
        ["address", "name", "tenant", "aliases"],
        [(r.primary_address, r.display_name, r.tenant, ", ".join(r.aliases)) for r in found],
    )


def mailbox_id(scope: Scope, address: str) -> int:
    """The id of the mailbox with this address, as the mailstore addresses it."""
    recipient = node().directory.get_recipient(scope, address)
    if recipient.kind is not RecipientKind.MAILBOX:
        raise fail(f"{address} is a {recipient.kind.value}, not a mailbox")
    return recipient.id


def read_password(password_stdin: bool) -> str | None:
    if not password_stdin:
        return None
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise fail("--password-stdin was given but standard input had no password", 2)
    return password


TenantFilter = Annotated[str | None, typer.Option(help="Only this tenant's (act for this tenant only).")]
DomainFilter = Annotated[str | None, typer.Option(help="Only addresses in this domain.")]
AliasOption = Annotated[
    list[str] | None, typer.Option("--alias", help="A secondary (proxy) address; repeat.")
]
