"""`postroom connector inbound|outbound ...`: a tenant's inbound and outbound connectors (spec §3).

`add`, `set`, `list`, `show`, `remove`, `enable`, `disable` for each direction, with `--tenant T`
and `--json` where something is shown. The options mirror the settings of `model.connectors`; a list
option is repeated (`--sender-ip 192.0.2.0/24 --sender-ip 198.51.100.7`) and replaces the list on
`set`, where `--clear-...` empties it. `set` changes only what is given; a `set` that gives nothing
is a usage mistake (exit 2). Every rule (which settings go with which type, the certificate name of an
on-premises connector, duplicate recipient domains) is the directory's: its refusal is printed with
the fix and exits 1, and nothing is written.

`show` prints every setting; for an inbound connector, what the operator should know (another
tenant's on-premises connector claiming the same IPs); for an outbound connector, its validation
state: "never validated", or the last run with each recipient's result and reply.

`connector_app`, `inbound_app` and `outbound_app` are module attributes so that other commands
(`postroom connector validate`) register beside these.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import Annotated, Any

import typer

from postroom.cli import connector_validation
from postroom.cli.context import JsonOption, as_dict, node, refusals
from postroom.cli.output import console, emit_json, fail, fields, table, when
from postroom.model.connectors import (
    ConnectorType,
    InboundConnector,
    OutboundConnector,
    OutboundTls,
    ValidationResult,
    last_validation_run,
    validation_state,
)
from postroom.model.scope import OPERATOR

connector_app = typer.Typer(
    help="Connectors: how mail flows between the service and partners or on-premises servers.",
    no_args_is_help=True,
)
inbound_app = typer.Typer(
    help="Inbound connectors: mail from a partner, a third-party filter or your on-premises servers.",
    no_args_is_help=True,
)
outbound_app = typer.Typer(
    help="Outbound connectors: mail to a partner or your on-premises servers, by smart host or MX.",
    no_args_is_help=True,
)
connector_app.add_typer(inbound_app, name="inbound")
connector_app.add_typer(outbound_app, name="outbound")
connector_validation.register(connector_app)

Texts = list[str] | None
TenantOption = Annotated[str, typer.Option("--tenant", help="The tenant whose connectors these are.")]
NameArgument = Annotated[str, typer.Argument(help="The connector's name (case does not matter).")]
TypeOption = Annotated[
    ConnectorType,
    typer.Option(
        "--type",
        help="partner (a partner or third-party filter) or on-premises (your servers).",
        case_sensitive=False,
    ),
]
NewType = Annotated[
    ConnectorType | None,
    typer.Option("--type", help="Change the type: partner or on-premises.", case_sensitive=False),
]
Comment = Annotated[str | None, typer.Option("--comment", help="A note for administrators.")]
Disabled = Annotated[bool, typer.Option("--disabled", help="Add it turned off (turn it on with `enable`).")]

# inbound
SenderDomains = Annotated[
    Texts,
    typer.Option(
        "--sender-domain", help="A sender domain it covers: *, contoso.com or *.contoso.com; repeat."
    ),
]
SenderIps = Annotated[
    Texts,
    typer.Option(
        "--sender-ip", help="A source address, a-b range or network (/24-/32, IPv6 /48-/128); repeat."
    ),
]
ClearSenderIps = Annotated[
    bool, typer.Option("--clear-sender-ips", help="Identify the source by certificate only.")
]
CertificateName = Annotated[
    str | None,
    typer.Option(
        "--tls-certificate-name",
        help="The name on the source's certificate (*.contoso.com; on-premises: your domain); '' for none.",
    ),
]
RequireTls = Annotated[
    bool | None,
    typer.Option("--require-tls/--no-require-tls", help="Refuse mail that does not come over TLS."),
]
RestrictToIps = Annotated[
    bool | None,
    typer.Option(
        "--restrict-to-ips/--no-restrict-to-ips", help="Partner: refuse its sender domains from other IPs."
    ),
]
RestrictToCertificate = Annotated[
    bool | None,
    typer.Option(
        "--restrict-to-certificate/--no-restrict-to-certificate",
        help="Partner: refuse its sender domains without its certificate.",
    ),
]
TreatAsInternal = Annotated[
    bool | None,
    typer.Option(
        "--treat-as-internal/--no-treat-as-internal",
        help="On-premises: mail from your accepted domains is internal (no anti-spam).",
    ),
]
AssociatedDomains = Annotated[
    Texts, typer.Option("--associated-domain", help="Only for these accepted domains of the tenant; repeat.")
]
ClearAssociatedDomains = Annotated[
    bool, typer.Option("--clear-associated-domains", help="For every accepted domain of the tenant.")
]
EfSkipLastIp = Annotated[
    bool | None,
    typer.Option(
        "--ef-skip-last-ip/--no-ef-skip-last-ip",
        help="Enhanced filtering: the last hop is the gateway; judge the IP before it.",
    ),
]
EfSkipIps = Annotated[
    Texts,
    typer.Option("--ef-skip-ip", help="Enhanced filtering: a gateway IP, range or network to skip; repeat."),
]
ClearEfSkipIps = Annotated[bool, typer.Option("--clear-ef-skip-ips", help="Skip no listed IPs.")]
EfUsers = Annotated[
    Texts, typer.Option("--ef-user", help="Enhanced filtering only when every recipient is listed; repeat.")
]
ClearEfUsers = Annotated[
    bool, typer.Option("--clear-ef-users", help="Enhanced filtering for every recipient.")
]

# outbound
RecipientDomains = Annotated[
    Texts,
    typer.Option("--recipient-domain", help="Recipients it routes: contoso.com or *.contoso.com; repeat."),
]
ClearRecipientDomains = Annotated[
    bool, typer.Option("--clear-recipient-domains", help="Route no listed domain.")
]
AllAccepted = Annotated[
    bool | None,
    typer.Option(
        "--all-accepted-domains/--no-all-accepted-domains",
        help="On-premises: route every accepted domain of the tenant.",
    ),
]
SmartHosts = Annotated[
    Texts,
    typer.Option(
        "--smart-host",
        help="Deliver to this host name or IP, with :port if not 25 ([2001:db8::7]:25); repeat.",
    ),
]
ClearSmartHosts = Annotated[bool, typer.Option("--clear-smart-hosts", help="Deliver by the domain's MX.")]
Tls = Annotated[
    str | None,
    typer.Option(
        "--tls",
        help="none (opportunistic), encryption-only, certificate-validation or domain-validation.",
        metavar="SETTING",
    ),
]
TlsDomain = Annotated[
    str | None, typer.Option("--tls-domain", help="Domain validation: the name the certificate must carry.")
]
RuleScoped = Annotated[
    bool | None, typer.Option("--rule-scoped/--no-rule-scoped", help="Used only by a mail flow rule.")
]
RouteAll = Annotated[
    bool | None,
    typer.Option(
        "--route-all-via-on-premises/--no-route-all-via-on-premises",
        help="On-premises: centralized mail transport (all mail through your servers).",
    ),
]
SenderRewriting = Annotated[
    bool | None,
    typer.Option("--sender-rewriting/--no-sender-rewriting", help="On-premises: rewrite senders (SRS)."),
]
ValidationRecipients = Annotated[
    Texts,
    typer.Option("--validation-recipient", help="An address at the destination to validate with; repeat."),
]
ClearValidationRecipients = Annotated[
    bool, typer.Option("--clear-validation-recipients", help="Forget the validation addresses.")
]


def _list(values: Texts, clear: bool, option: str) -> list[str] | None:
    """A list option: None when absent, [] with its `--clear-...`, else its values."""
    if clear and values:
        raise fail(f"give {option} or clear the list, not both", 2)
    if clear:
        return []
    return list(values) if values is not None else None


def _given(**settings: Any) -> dict[str, object]:
    return {key: value for key, value in settings.items() if value is not None}


def _tls(value: str | None) -> str | None:
    if value is None:
        return None
    return OutboundTls.OPPORTUNISTIC.value if value.strip().lower() == "none" else value


# --- showing -------------------------------------------------------------------------------------------
def _row(connector: InboundConnector | OutboundConnector, tenant: str) -> dict[str, object]:
    row = {key: value for key, value in as_dict(connector).items() if key != "ips"}
    row["tenant"] = tenant
    return row


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def _state(enabled: bool) -> str:
    return "on" if enabled else "off"


def _identified_by(connector: InboundConnector) -> str:
    parts = []
    if connector.sender_ips:
        parts.append("IP " + ", ".join(connector.sender_ips))
    if connector.tls_certificate_name:
        parts.append("certificate " + connector.tls_certificate_name)
    return "; ".join(parts) or "sender domain only"


def _restrictions(connector: InboundConnector) -> str:
    parts = []
    if connector.restrict_domains_to_ips:
        parts.append("domains to IPs")
    if connector.restrict_domains_to_certificate:
        parts.append("domains to certificate")
    if connector.treat_messages_as_internal:
        parts.append("internal")
    return ", ".join(parts) or "-"


def _enhanced_filtering(connector: InboundConnector) -> str:
    if connector.ef_skip_last_ip:
        how = "skips the last IP"
    elif connector.ef_skip_ips:
        how = "skips " + ", ".join(connector.ef_skip_ips)
    else:
        return "off"
    users = ", ".join(connector.ef_users) if connector.ef_users else "every recipient"
    return f"{how}; for {users}"


def _show_inbound(connector: InboundConnector, tenant: str, warnings: Sequence[str]) -> None:
    fields(
        [
            ("name", connector.name),
            ("tenant", tenant),
            ("direction", "inbound"),
            ("type", connector.type.value),
            ("state", _state(connector.enabled)),
            ("sender domains", ", ".join(connector.sender_domains)),
            ("sender IPs", ", ".join(connector.sender_ips) or "-"),
            ("certificate name", connector.tls_certificate_name or "-"),
            ("require TLS", _yes(connector.require_tls)),
            ("restrict domains to IPs", _yes(connector.restrict_domains_to_ips)),
            ("restrict domains to certificate", _yes(connector.restrict_domains_to_certificate)),
            ("treat messages as internal", _yes(connector.treat_messages_as_internal)),
            (
                "associated domains",
                ", ".join(connector.associated_accepted_domains) or "all accepted domains",
            ),
            ("enhanced filtering", _enhanced_filtering(connector)),
            ("comment", connector.comment or "-"),
            ("created", when(connector.created_at)),
        ]
    )
    for warning in warnings:
        console.print(f"warning: {warning}", markup=False)


def _routes(connector: OutboundConnector) -> str:
    parts = list(connector.recipient_domains)
    if connector.all_accepted_domains:
        parts.append("all accepted domains")
    if connector.rule_scoped:
        parts.append("mail flow rules only")
    return ", ".join(parts)


def _tls_text(connector: OutboundConnector) -> str:
    if connector.tls is OutboundTls.OPPORTUNISTIC:
        return "opportunistic"
    if connector.tls is OutboundTls.DOMAIN_VALIDATION:
        return f"domain-validation ({connector.tls_domain})"
    return connector.tls.value


def _show_outbound(connector: OutboundConnector, tenant: str, results: Sequence[ValidationResult]) -> None:
    fields(
        [
            ("name", connector.name),
            ("tenant", tenant),
            ("direction", "outbound"),
            ("type", connector.type.value),
            ("state", _state(connector.enabled)),
            ("recipient domains", ", ".join(connector.recipient_domains) or "-"),
            ("all accepted domains", _yes(connector.all_accepted_domains)),
            ("delivers to", ", ".join(connector.smart_hosts) or "the recipient domain's MX"),
            ("TLS", _tls_text(connector)),
            ("rule-scoped", _yes(connector.rule_scoped)),
            ("route all via on-premises", _yes(connector.route_all_via_on_premises)),
            ("sender rewriting", _yes(connector.sender_rewriting)),
            ("validation recipients", ", ".join(connector.validation_recipients) or "-"),
            ("comment", connector.comment or "-"),
            ("created", when(connector.created_at)),
            ("validation", validation_state(results)),
        ]
    )
    run = last_validation_run(results)
    if run:
        table(
            None,
            ["recipient", "result", "reply"],
            [(r.recipient, "ok" if r.ok else "failed", r.reply or "-") for r in run],
        )


def _outbound_json(
    connector: OutboundConnector, tenant: str, results: Sequence[ValidationResult]
) -> dict[str, object]:
    row = _row(connector, tenant)
    row["validation"] = validation_state(results)
    row["last_validation"] = last_validation_run(results)
    return row


# --- inbound commands ----------------------------------------------------------------------------------
@inbound_app.command("add")
def inbound_add(
    name: Annotated[str, typer.Argument(help="The new connector's name (1-64 characters).")],
    tenant: TenantOption,
    type: TypeOption,
    sender_domain: SenderDomains = None,
    sender_ip: SenderIps = None,
    tls_certificate_name: CertificateName = None,
    require_tls: RequireTls = None,
    restrict_to_ips: RestrictToIps = None,
    restrict_to_certificate: RestrictToCertificate = None,
    treat_as_internal: TreatAsInternal = None,
    associated_domain: AssociatedDomains = None,
    ef_skip_last_ip: EfSkipLastIp = None,
    ef_skip_ip: EfSkipIps = None,
    ef_user: EfUsers = None,
    comment: Comment = None,
    disabled: Disabled = False,
) -> None:
    """Add an inbound connector. Sender domains default to *, TLS is required unless --no-require-tls."""
    settings = _given(
        sender_domains=sender_domain,
        sender_ips=sender_ip,
        tls_certificate_name=tls_certificate_name,
        require_tls=require_tls,
        restrict_domains_to_ips=restrict_to_ips,
        restrict_domains_to_certificate=restrict_to_certificate,
        treat_messages_as_internal=treat_as_internal,
        associated_accepted_domains=associated_domain,
        ef_skip_last_ip=ef_skip_last_ip,
        ef_skip_ips=ef_skip_ip,
        ef_users=ef_user,
        comment=comment,
    )
    if disabled:
        settings["enabled"] = False
    directory = node().directory
    with refusals():
        added = directory.add_inbound_connector(OPERATOR, tenant, name, type, **settings)
        warnings = directory.inbound_connector_warnings(OPERATOR, tenant, added.name)
    console.print(
        f"inbound connector {added.name} ({added.type.value}, {_state(added.enabled)}) added to {tenant}",
        markup=False,
    )
    for warning in warnings:
        console.print(f"warning: {warning}", markup=False)


@inbound_app.command("set")
def inbound_set(
    name: NameArgument,
    tenant: TenantOption,
    type: NewType = None,
    sender_domain: SenderDomains = None,
    sender_ip: SenderIps = None,
    clear_sender_ips: ClearSenderIps = False,
    tls_certificate_name: CertificateName = None,
    require_tls: RequireTls = None,
    restrict_to_ips: RestrictToIps = None,
    restrict_to_certificate: RestrictToCertificate = None,
    treat_as_internal: TreatAsInternal = None,
    associated_domain: AssociatedDomains = None,
    clear_associated_domains: ClearAssociatedDomains = False,
    ef_skip_last_ip: EfSkipLastIp = None,
    ef_skip_ip: EfSkipIps = None,
    clear_ef_skip_ips: ClearEfSkipIps = False,
    ef_user: EfUsers = None,
    clear_ef_users: ClearEfUsers = False,
    comment: Comment = None,
) -> None:
    """Change an inbound connector: only what is given; a list option replaces the list."""
    settings = _given(
        type=type,
        sender_domains=sender_domain,
        sender_ips=_list(sender_ip, clear_sender_ips, "--sender-ip"),
        tls_certificate_name=tls_certificate_name,
        require_tls=require_tls,
        restrict_domains_to_ips=restrict_to_ips,
        restrict_domains_to_certificate=restrict_to_certificate,
        treat_messages_as_internal=treat_as_internal,
        associated_accepted_domains=_list(associated_domain, clear_associated_domains, "--associated-domain"),
        ef_skip_last_ip=ef_skip_last_ip,
        ef_skip_ips=_list(ef_skip_ip, clear_ef_skip_ips, "--ef-skip-ip"),
        ef_users=_list(ef_user, clear_ef_users, "--ef-user"),
        comment=comment,
    )
    if not settings:
        raise fail("nothing to change: give a setting such as --sender-ip or --require-tls (see --help)", 2)
    _set_inbound(name, tenant, settings)


def _set_inbound(name: str, tenant: str, settings: dict[str, object]) -> None:
    directory = node().directory
    with refusals():
        changed = directory.set_inbound_connector(OPERATOR, tenant, name, **settings)
        warnings = directory.inbound_connector_warnings(OPERATOR, tenant, changed.name)
    _show_inbound(changed, tenant, warnings)


@inbound_app.command("enable")
def inbound_enable(name: NameArgument, tenant: TenantOption) -> None:
    """Turn an inbound connector on."""
    _set_inbound(name, tenant, {"enabled": True})


@inbound_app.command("disable")
def inbound_disable(name: NameArgument, tenant: TenantOption) -> None:
    """Turn an inbound connector off: mail from its source is treated as from anywhere else."""
    _set_inbound(name, tenant, {"enabled": False})


@inbound_app.command("list")
def inbound_list(tenant: TenantOption, json_output: JsonOption = False) -> None:
    """List a tenant's inbound connectors."""
    with refusals():
        found = node().directory.inbound_connectors(OPERATOR, tenant)
    if json_output:
        return emit_json([_row(c, tenant) for c in found])
    table(
        None,
        ["name", "type", "state", "sender domains", "identified by", "TLS", "restrictions"],
        [
            (
                c.name,
                c.type.value,
                _state(c.enabled),
                ", ".join(c.sender_domains),
                _identified_by(c),
                "required" if c.require_tls else "optional",
                _restrictions(c),
            )
            for c in found
        ],
    )


@inbound_app.command("show")
def inbound_show(name: NameArgument, tenant: TenantOption, json_output: JsonOption = False) -> None:
    """Show an inbound connector with every setting, and what the operator should know about it."""
    directory = node().directory
    with refusals():
        found = directory.inbound_connector(OPERATOR, tenant, name)
        warnings = directory.inbound_connector_warnings(OPERATOR, tenant, name)
    if json_output:
        return emit_json({**_row(found, tenant), "warnings": warnings})
    _show_inbound(found, tenant, warnings)


@inbound_app.command("remove")
def inbound_remove(name: NameArgument, tenant: TenantOption) -> None:
    """Remove an inbound connector."""
    with refusals():
        node().directory.remove_inbound_connector(OPERATOR, tenant, name)
    console.print(f"inbound connector {name} removed from {tenant}", markup=False)


# --- outbound commands ---------------------------------------------------------------------------------
@outbound_app.command("add")
def outbound_add(
    name: Annotated[str, typer.Argument(help="The new connector's name (1-64 characters).")],
    tenant: TenantOption,
    type: TypeOption,
    recipient_domain: RecipientDomains = None,
    all_accepted_domains: AllAccepted = None,
    smart_host: SmartHosts = None,
    tls: Tls = None,
    tls_domain: TlsDomain = None,
    rule_scoped: RuleScoped = None,
    route_all_via_on_premises: RouteAll = None,
    sender_rewriting: SenderRewriting = None,
    validation_recipient: ValidationRecipients = None,
    comment: Comment = None,
    disabled: Disabled = False,
) -> None:
    """Add an outbound connector. Without --smart-host it delivers by MX; --tls defaults to none."""
    settings = _given(
        recipient_domains=recipient_domain,
        all_accepted_domains=all_accepted_domains,
        smart_hosts=smart_host,
        tls=_tls(tls),
        tls_domain=tls_domain,
        rule_scoped=rule_scoped,
        route_all_via_on_premises=route_all_via_on_premises,
        sender_rewriting=sender_rewriting,
        validation_recipients=validation_recipient,
        comment=comment,
    )
    if disabled:
        settings["enabled"] = False
    with refusals():
        added = node().directory.add_outbound_connector(OPERATOR, tenant, name, type, **settings)
    console.print(
        f"outbound connector {added.name} ({added.type.value}, {_state(added.enabled)}) added to {tenant}; "
        f"validate it with `postroom connector validate {shlex.quote(added.name)} --tenant {tenant}`",
        markup=False,
    )


@outbound_app.command("set")
def outbound_set(
    name: NameArgument,
    tenant: TenantOption,
    type: NewType = None,
    recipient_domain: RecipientDomains = None,
    clear_recipient_domains: ClearRecipientDomains = False,
    all_accepted_domains: AllAccepted = None,
    smart_host: SmartHosts = None,
    clear_smart_hosts: ClearSmartHosts = False,
    tls: Tls = None,
    tls_domain: TlsDomain = None,
    rule_scoped: RuleScoped = None,
    route_all_via_on_premises: RouteAll = None,
    sender_rewriting: SenderRewriting = None,
    validation_recipient: ValidationRecipients = None,
    clear_validation_recipients: ClearValidationRecipients = False,
    comment: Comment = None,
) -> None:
    """Change an outbound connector: only what is given; a list option replaces the list."""
    settings = _given(
        type=type,
        recipient_domains=_list(recipient_domain, clear_recipient_domains, "--recipient-domain"),
        all_accepted_domains=all_accepted_domains,
        smart_hosts=_list(smart_host, clear_smart_hosts, "--smart-host"),
        tls=_tls(tls),
        tls_domain=tls_domain,
        rule_scoped=rule_scoped,
        route_all_via_on_premises=route_all_via_on_premises,
        sender_rewriting=sender_rewriting,
        validation_recipients=_list(
            validation_recipient, clear_validation_recipients, "--validation-recipient"
        ),
        comment=comment,
    )
    if tls is not None and tls.strip().lower() != OutboundTls.DOMAIN_VALIDATION.value and tls_domain is None:
        settings["tls_domain"] = ""  # leaving domain validation: its name goes with it
    if not settings:
        raise fail("nothing to change: give a setting such as --smart-host or --tls (see --help)", 2)
    _set_outbound(name, tenant, settings)


def _set_outbound(name: str, tenant: str, settings: dict[str, object]) -> None:
    directory = node().directory
    with refusals():
        changed = directory.set_outbound_connector(OPERATOR, tenant, name, **settings)
        results = directory.connector_validations(OPERATOR, tenant, changed.name)
    _show_outbound(changed, tenant, results)


@outbound_app.command("enable")
def outbound_enable(name: NameArgument, tenant: TenantOption) -> None:
    """Turn an outbound connector on (validate it first: `postroom connector validate`)."""
    _set_outbound(name, tenant, {"enabled": True})


@outbound_app.command("disable")
def outbound_disable(name: NameArgument, tenant: TenantOption) -> None:
    """Turn an outbound connector off: its recipients are delivered by MX."""
    _set_outbound(name, tenant, {"enabled": False})


@outbound_app.command("list")
def outbound_list(tenant: TenantOption, json_output: JsonOption = False) -> None:
    """List a tenant's outbound connectors with their validation state."""
    directory = node().directory
    with refusals():
        found = directory.outbound_connectors(OPERATOR, tenant)
        results = {c.id: directory.connector_validations(OPERATOR, tenant, c.name) for c in found}
    if json_output:
        return emit_json([_outbound_json(c, tenant, results[c.id]) for c in found])
    table(
        None,
        ["name", "type", "state", "routes", "delivers to", "TLS", "validation"],
        [
            (
                c.name,
                c.type.value,
                _state(c.enabled),
                _routes(c),
                ", ".join(c.smart_hosts) or "MX",
                _tls_text(c),
                validation_state(results[c.id]),
            )
            for c in found
        ],
    )


@outbound_app.command("show")
def outbound_show(name: NameArgument, tenant: TenantOption, json_output: JsonOption = False) -> None:
    """Show an outbound connector with every setting and its last validation."""
    directory = node().directory
    with refusals():
        found = directory.outbound_connector(OPERATOR, tenant, name)
        results = directory.connector_validations(OPERATOR, tenant, name)
    if json_output:
        return emit_json(_outbound_json(found, tenant, results))
    _show_outbound(found, tenant, results)


@outbound_app.command("remove")
def outbound_remove(name: NameArgument, tenant: TenantOption) -> None:
    """Remove an outbound connector and its validation history (queued mail for it goes by MX)."""
    with refusals():
        node().directory.remove_outbound_connector(OPERATOR, tenant, name)
    console.print(f"outbound connector {name} removed from {tenant}", markup=False)
