"""`postroom tenant ...`: the organizations this service hosts."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from postroom.app import TenantRemoval, remove_tenant
from postroom.cli.context import JsonOption, node, refusals
from postroom.cli.output import console, emit_json, fail, fields, table, when
from postroom.directory import AutoForward, OutboundSettings, Postmaster, RecipientKind, SendingSettings
from postroom.model.scope import OPERATOR

tenant_app = typer.Typer(help="Tenants: the organizations this service hosts.", no_args_is_help=True)


# --- tenants --------------------------------------------------------------------------------------
@tenant_app.command("add")
def tenant_add(
    name: Annotated[str, typer.Argument(help="Short name; the default domain is NAME.<service domain>.")],
) -> None:
    """Create a tenant with its default domain (authoritative, verified)."""
    with refusals():
        tenant = node().directory.add_tenant(OPERATOR, name)
    console.print(
        f"tenant {tenant.name} created; default domain {tenant.name}.{node().directory.service_domain}"
    )


@tenant_app.command("list")
def tenant_list(json_output: JsonOption = False) -> None:
    """List tenants."""
    tenants = node().directory.list_tenants(OPERATOR)
    if json_output:
        return emit_json(tenants)
    table(None, ["name", "created"], [(t.name, when(t.created_at)) for t in tenants])


@tenant_app.command("show")
def tenant_show(name: str, json_output: JsonOption = False) -> None:
    """Show a tenant with its domains and recipient counts."""
    with refusals():
        tenant = node().directory.get_tenant(OPERATOR, name)
        domains = node().directory.list_domains(OPERATOR, tenant.name)
        recipients = node().directory.list_recipients(OPERATOR, tenant=tenant.name)
        postmaster = node().directory.postmaster(OPERATOR, tenant.name)
        outbound = node().directory.outbound_settings(OPERATOR, tenant.name)
    counts = {kind.value: sum(1 for r in recipients if r.kind is kind) for kind in RecipientKind}
    if json_output:
        return emit_json(
            {
                "tenant": tenant,
                "domains": [d.name for d in domains],
                "recipients": counts,
                "postmaster": postmaster.address,
                "postmaster_chosen": postmaster.chosen,
                "external_postmaster": outbound.external_postmaster,
                "external_postmaster_chosen": outbound.external_postmaster_chosen,
                "auto_forward": outbound.auto_forward.value,
            }
        )
    fields(
        [
            ("tenant", tenant.name),
            ("created", when(tenant.created_at)),
            ("domains", ", ".join(f"{d.name} ({d.status.value})" for d in domains)),
            ("recipients", ", ".join(f"{n} {k}(s)" for k, n in counts.items())),
            ("postmaster", _postmaster_text(postmaster)),
            ("external postmaster", _external_postmaster_text(outbound)),
            ("auto forward", _auto_forward_text(outbound)),
        ]
    )


def _what(removal: TenantRemoval) -> str:
    return (
        f"{removal.domains} domain(s), {removal.recipients} recipient(s), {removal.messages} stored "
        f"message(s), trace of {removal.trace_messages} message(s), {removal.queue_recipients} queued "
        f"recipient(s), {removal.quarantined} quarantined message(s), {removal.blobs} message file(s)"
    )


def _postmaster_text(postmaster: Postmaster) -> str:
    if postmaster.chosen:
        return postmaster.chosen
    if postmaster.address:
        return f"{postmaster.address} (not chosen: the first mailbox; set it with --postmaster)"
    return "none yet (not chosen, and the tenant has no mailbox)"


def _external_postmaster_text(outbound: OutboundSettings) -> str:
    if outbound.external_postmaster_chosen:
        return outbound.external_postmaster_chosen
    return f"{outbound.external_postmaster} (the default; set it with --external-postmaster)"


def _auto_forward_text(outbound: OutboundSettings) -> str:
    policy = outbound.auto_forward
    if policy is AutoForward.AUTOMATIC:
        return "automatic (off: forwarding to external domains is refused with 5.7.520)"
    return policy.value


@tenant_app.command("set")
def tenant_set(
    name: str,
    postmaster: Annotated[
        str | None,
        typer.Option(
            help="The mailbox or group that receives postmaster@ the tenant's domains; "
            '"" goes back to the first mailbox.'
        ),
    ] = None,
    max_send_size: Annotated[
        int | None, typer.Option(help="Largest message a mailbox sends, in octets; 0: the node's default.")
    ] = None,
    max_receive_size: Annotated[
        int | None, typer.Option(help="Largest message a mailbox receives, in octets; 0: the node's default.")
    ] = None,
    smtp_auth: Annotated[
        OnOff | None, typer.Option(help="SMTP AUTH for the tenant's mailboxes (each may say otherwise).")
    ] = None,
    external_postmaster: Annotated[
        str | None,
        typer.Option(
            help="The sender of the tenant's NDRs to outside senders (any address); "
            '"" goes back to postmaster@<default domain>.'
        ),
    ] = None,
    auto_forward: Annotated[
        str | None,
        typer.Option(help="Automatic forwarding to external domains: automatic (= off), on, off."),
    ] = None,
) -> None:
    """Change a tenant's organization settings."""
    sending = (max_send_size, max_receive_size, smtp_auth)
    forwarding = (external_postmaster, auto_forward)
    if postmaster is None and all(value is None for value in (*sending, *forwarding)):
        raise fail(
            "nothing to change: give --postmaster, --max-send-size, --max-receive-size, --smtp-auth, "
            "--external-postmaster or --auto-forward",
            2,
        )
    with refusals():
        if postmaster is not None:
            chosen = node().directory.set_postmaster(OPERATOR, name, postmaster or None)
            console.print(f"postmaster of {name}: {_postmaster_text(chosen)}", markup=False)
        if any(value is not None for value in sending):
            changed = node().directory.set_tenant_sending(
                OPERATOR,
                name,
                smtp_auth=None if smtp_auth is None else smtp_auth is OnOff.ON,
                max_send_size=max_send_size,
                max_receive_size=max_receive_size,
            )
            console.print(f"sending settings of {name}: {_sending_text(changed)}", markup=False)
        if external_postmaster is not None:
            outbound = node().directory.set_external_postmaster(OPERATOR, name, external_postmaster or None)
            console.print(
                f"external postmaster of {name}: {_external_postmaster_text(outbound)}", markup=False
            )
        if auto_forward is not None:
            outbound = node().directory.set_auto_forward(OPERATOR, name, auto_forward)
            console.print(f"automatic forwarding of {name}: {_auto_forward_text(outbound)}", markup=False)


class OnOff(StrEnum):
    ON = "on"
    OFF = "off"


def _sending_text(settings: SendingSettings) -> str:
    def size(value: int | None) -> str:
        return "default" if value is None else f"{value} octets"

    smtp_auth = "off" if settings.smtp_auth is False else "on"
    return (
        f"SMTP AUTH {smtp_auth}, send size {size(settings.max_send_size)}, "
        f"receive size {size(settings.max_receive_size)}"
    )


@tenant_app.command("remove")
def tenant_remove(
    name: str,
    yes: Annotated[
        bool, typer.Option("--yes", help="Confirm: removes its domains, recipients, mail, queue and trace.")
    ] = False,
) -> None:
    """Remove a tenant with all its domains, recipients, stored mail, queued mail and trace."""
    current = node()
    with refusals():
        removal = remove_tenant(current.database, current.blobs, current.directory, OPERATOR, name, apply=yes)
    if not yes:
        raise fail(f"removing tenant {removal.tenant.name} deletes {_what(removal)}; repeat with --yes", 2)
    console.print(f"tenant {removal.tenant.name} removed: deleted {_what(removal)}", markup=False)
