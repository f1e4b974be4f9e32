"""`postroom mailbox ...`: create and change mailboxes, read their messages."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from postroom.cli.context import JsonOption, TenantScopeOption, node, refusals, scope_for
from postroom.cli.output import console, emit_json, fail, fields, table, when
from postroom.cli.recipients import (
    AliasOption,
    DomainFilter,
    TenantFilter,
    list_recipients,
    mailbox_id,
    read_password,
    show_recipient,
)
from postroom.directory import MAX_QUOTA, MAX_RECIPIENTS_LIMIT, MailboxForwarding, RecipientKind, Switch
from postroom.mailstore import FolderSummary

mailbox_app = typer.Typer(help="Mailboxes: create, change, read their messages.", no_args_is_help=True)


@mailbox_app.command("add")
def mailbox_add(
    address: str,
    name: Annotated[str, typer.Option(help="Display name.")] = "",
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    alias: AliasOption = None,
    tenant: TenantScopeOption = None,
) -> None:
    """Create a mailbox (Inbox, Sent, Drafts, Junk, Trash, Archive) with its addresses."""
    password = read_password(password_stdin)
    with refusals():
        created = node().directory.add_mailbox(
            scope_for(tenant), address, display_name=name, password=password, aliases=alias or ()
        )
    console.print(f"mailbox {created.primary_address} created in tenant {created.tenant}", markup=False)


@mailbox_app.command("list")
def mailbox_list(
    tenant: TenantFilter = None, domain: DomainFilter = None, json_output: JsonOption = False
) -> None:
    """List mailboxes."""
    list_recipients(RecipientKind.MAILBOX, tenant, domain, json_output)


@mailbox_app.command("show")
def mailbox_show(address: str, json_output: JsonOption = False, tenant: TenantScopeOption = None) -> None:
    """Show a mailbox with its folders, forwarding, quota and usage."""
    scope = scope_for(tenant)
    with refusals():
        recipient = node().directory.get_recipient(scope, address)
        folders = node().mailstore.folders(scope, mailbox_id(scope, address))
        forwarding = node().directory.forwarding(scope, address)
        quota = node().directory.mailbox_quota(scope, address)
    usage = _usage(folders)
    storage = {"quota": quota, "usage": usage, "usage_percent": _percent(usage, quota)}
    show_recipient(recipient, json_output, {"folders": folders, "forwarding": forwarding, **storage})
    if not json_output:
        fields([("forwarding", _forwarding_text(forwarding)), ("quota", _quota_text(quota, usage))])
    if not json_output:
        table(
            "folders",
            ["folder", "messages", "unseen", "size", "uidvalidity", "uidnext"],
            [(f.name, f.messages, f.unseen, f.size, f.uidvalidity, f.uidnext) for f in folders],
        )


@mailbox_app.command("set")
def mailbox_set(
    address: str,
    name: Annotated[str | None, typer.Option(help="New display name.")] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read a new password from standard input.")
    ] = False,
    add_alias: Annotated[list[str] | None, typer.Option(help="Add a proxy address; repeat.")] = None,
    remove_alias: Annotated[list[str] | None, typer.Option(help="Remove a proxy address; repeat.")] = None,
    primary: Annotated[
        str | None, typer.Option(help="Make this address the primary (reply) address.")
    ] = None,
    # --- sending (spec §5, §8): one block ---
    max_send_size: Annotated[
        int | None, typer.Option(help="Largest message it may send, in octets; 0: the tenant's.")
    ] = None,
    max_receive_size: Annotated[
        int | None, typer.Option(help="Largest message it may receive, in octets; 0: the tenant's.")
    ] = None,
    max_recipients: Annotated[
        int | None, typer.Option(help=f"Recipients per message, 1 to {MAX_RECIPIENTS_LIMIT}; 0: the default.")
    ] = None,
    smtp_auth: Annotated[
        Switch | None, typer.Option(help="SMTP AUTH for this mailbox: on, off, or the tenant's (inherit).")
    ] = None,
    # --- end of sending ---
    tenant: TenantScopeOption = None,
    # --- forwarding (issue 8) ---
    forward_to: Annotated[
        str | None, typer.Option(help="Forward the mailbox's mail to this address (any address).")
    ] = None,
    keep_copy: Annotated[
        bool, typer.Option("--keep-copy", help="With --forward-to: also deliver to the mailbox.")
    ] = False,
    no_forward: Annotated[bool, typer.Option("--no-forward", help="Stop forwarding.")] = False,
    # --- end forwarding ---
    quota: Annotated[
        int | None,
        typer.Option(
            help=f"The mailbox's size limit in octets (no unit suffixes: 2 GiB is 2147483648), "
            f"up to {MAX_QUOTA} (1 TiB); 0: no limit. Mail for a full mailbox is refused (552 5.2.2)."
        ),
    ] = None,
) -> None:
    """Change a mailbox: name, password, addresses, forwarding, sending limits, quota."""
    # --- forwarding ---
    if forward_to is not None and no_forward:
        raise fail("give either --forward-to ADDRESS or --no-forward, not both", 2)
    if keep_copy and forward_to is None:
        raise fail("--keep-copy goes with --forward-to ADDRESS", 2)
    # --- end forwarding ---
    password = read_password(password_stdin)
    scope = scope_for(tenant)
    with refusals():
        changed = node().directory.set_recipient(
            scope,
            address,
            display_name=name,
            password=password,
            add_aliases=add_alias or (),
            remove_aliases=remove_alias or (),
            primary=primary,
        )
        sending = (max_send_size, max_receive_size, max_recipients, smtp_auth)
        if any(value is not None for value in sending):
            node().directory.set_mailbox_sending(
                scope,
                address,
                smtp_auth=smtp_auth,
                max_send_size=max_send_size,
                max_receive_size=max_receive_size,
                max_recipients=max_recipients,
            )
        # --- forwarding ---
        if forward_to is not None or no_forward:
            node().directory.set_forwarding(scope, address, forward_to or None, keep_copy=keep_copy)
        forwarding = node().directory.forwarding(scope, changed.primary_address)
        # --- end forwarding ---
        if quota is not None:
            node().directory.set_mailbox_quota(scope, changed.primary_address, quota)
        limit = node().directory.mailbox_quota(scope, changed.primary_address)
        usage = _usage(node().mailstore.folders(scope, mailbox_id(scope, changed.primary_address)))
    show_recipient(changed, False)
    fields([("forwarding", _forwarding_text(forwarding)), ("quota", _quota_text(limit, usage))])


def _forwarding_text(forwarding: MailboxForwarding | None) -> str:
    if forwarding is None:
        return "-"
    return forwarding.forward_to + (" (and keeps a copy)" if forwarding.keep_copy else "")


def _usage(folders: list[FolderSummary]) -> int:
    """Octets of all the mailbox's messages: what its quota counts (every folder, Junk included)."""
    return sum(folder.size for folder in folders)


def _percent(usage: int, quota: int | None) -> float | None:
    return None if quota is None else round(100 * usage / quota, 1)


def _quota_text(quota: int | None, usage: int) -> str:
    if quota is None:
        return f"none ({usage} octets used)"
    return f"{quota} octets ({usage} used, {_percent(usage, quota)}%)"


send_as_app = typer.Typer(help="Send-as: who may send as a mailbox or group.", no_args_is_help=True)
mailbox_app.add_typer(send_as_app, name="send-as")


@send_as_app.command("add")
def send_as_add(identity: str, grantee: str, tenant: TenantScopeOption = None) -> None:
    """Let the mailbox GRANTEE send as IDENTITY (a mailbox or group of the same tenant)."""
    with refusals():
        node().directory.grant_send_as(scope_for(tenant), identity, grantee)
    console.print(f"{grantee} may send as {identity}", markup=False)


@send_as_app.command("remove")
def send_as_remove(identity: str, grantee: str, tenant: TenantScopeOption = None) -> None:
    """Take GRANTEE's send-as permission on IDENTITY away."""
    with refusals():
        node().directory.revoke_send_as(scope_for(tenant), identity, grantee)
    console.print(f"{grantee} may no longer send as {identity}", markup=False)


@send_as_app.command("list")
def send_as_list(identity: str, json_output: JsonOption = False, tenant: TenantScopeOption = None) -> None:
    """List the mailboxes that may send as IDENTITY."""
    with refusals():
        grantees = node().directory.send_as_grantees(scope_for(tenant), identity)
    if json_output:
        return emit_json(grantees)
    table(f"send as {identity}", ["mailbox"], [(grantee,) for grantee in grantees])


@mailbox_app.command("remove")
def mailbox_remove(
    address: str,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm: deletes its mail.")] = False,
    tenant: TenantScopeOption = None,
) -> None:
    """Remove a mailbox and its mail."""
    if not yes:
        raise fail(f"removing {address} deletes its mail; repeat with --yes", 2)
    with refusals():
        node().directory.remove_recipient(scope_for(tenant), address)
    console.print(f"{address} removed", markup=False)


@mailbox_app.command("messages")
def mailbox_messages(
    address: str,
    folder: Annotated[str, typer.Option(help="Folder name.")] = "Inbox",
    json_output: JsonOption = False,
    tenant: TenantScopeOption = None,
) -> None:
    """List the messages in a mailbox folder."""
    scope = scope_for(tenant)
    with refusals():
        found = node().mailstore.list_messages(scope, mailbox_id(scope, address), folder)
    if json_output:
        return emit_json(found)
    table(
        f"{address} / {folder}",
        ["uid", "from", "subject", "date", "size"],
        [(m.uid, m.from_header, m.subject, m.date or when(m.internal_date), m.size) for m in found],
    )


@mailbox_app.command("export")
def mailbox_export(
    address: str,
    uid: int,
    folder: Annotated[str, typer.Option(help="Folder name.")] = "Inbox",
    tenant: TenantScopeOption = None,
) -> None:
    """Write one message, raw, to standard output."""
    scope = scope_for(tenant)
    with refusals():
        raw = node().mailstore.export(scope, mailbox_id(scope, address), uid, folder)
    sys.stdout.buffer.write(raw)
    sys.stdout.buffer.flush()
