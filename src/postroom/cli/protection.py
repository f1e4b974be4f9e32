"""`postroom protection ...` and `postroom mailbox junk ...`: a tenant's anti-spam and anti-malware
policies, its connection filter (IP Allow and Block lists), and mailboxes' safe and blocked senders.

A list option is repeated (`--users a@x --users b@x`); the domain, file type, ARC sealer and IP
options also take commas (`--file-types exe,js`). A list option replaces the list; `''` alone clears
it (`--domains ''`). Settings of the other kind (`--spam-action` with `--kind antimalware`) are a
usage mistake (exit 2), as is a command that changes nothing.
"""

from __future__ import annotations

from dataclasses import fields as dataclass_fields
from typing import Annotated, Any

import typer

from postroom.cli.context import JsonOption, TenantScopeOption, node, refusals, scope_for
from postroom.cli.output import console, emit_json, fail, fields, table
from postroom.directory import (
    ALLOWED_ACTIONS,
    AntiMalwareChange,
    AntiSpamChange,
    ConnectionChange,
    ConnectionFilter,
    MailboxJunkLists,
    PolicyChange,
    PolicyKind,
    ProtectionPolicy,
    SenderListName,
)
from postroom.model.policy import AntiMalwarePolicy, AntiSpamPolicy, SenderList
from postroom.model.scope import OPERATOR
from postroom.model.verdicts import FilterAction

protection_app = typer.Typer(
    help="Protection: anti-spam and anti-malware policies, the connection filter.", no_args_is_help=True
)
policy_app = typer.Typer(
    help="Anti-spam and anti-malware policies: custom ones by priority, the Default last.",
    no_args_is_help=True,
)
connection_app = typer.Typer(
    help="The connection filter: a tenant's IP Allow and Block lists.", no_args_is_help=True
)
junk_app = typer.Typer(
    help="A mailbox's safe and blocked senders (addresses or domains).", no_args_is_help=True
)
protection_app.add_typer(policy_app, name="policy")
protection_app.add_typer(connection_app, name="connection")

TenantOption = Annotated[str, typer.Option("--tenant", help="The tenant whose policies these are.")]
KindOption = Annotated[PolicyKind, typer.Option("--kind", help="The kind of policy.", case_sensitive=False)]
NameArgument = Annotated[str, typer.Argument(help="The policy's name (Default: the built-in one).")]
Texts = list[str] | None


def _in(panel: str, help_text: str, *flags: str, metavar: str | None = None) -> Any:
    """An option shown in `panel` of the command's help (actions case-insensitive)."""
    return typer.Option(*flags, help=help_text, rich_help_panel=panel, case_sensitive=False, metavar=metavar)


def _action(panel: str, what: str, setting: str) -> Any:
    allowed = ", ".join(a.value for a in FilterAction if a in ALLOWED_ACTIONS[setting])
    return _in(panel, f"{what}: {allowed}.", metavar="ACTION")


RECIPIENTS, SPAM, MALWARE = "Priority and recipients", "Anti-spam settings", "Anti-malware settings"
Action = FilterAction | None
Priority = Annotated[int | None, _in(RECIPIENTS, "0 is the highest; the policy there and below move down.")]
Users = Annotated[
    Texts, _in(RECIPIENTS, "Apply to this mailbox or contact of the tenant; repeat ('' clears).")
]
Groups = Annotated[
    Texts, _in(RECIPIENTS, "Apply to the members of this group of the tenant; repeat ('' clears).")
]
Domains = Annotated[
    Texts, _in(RECIPIENTS, "Apply to recipients in this accepted domain; repeat ('' clears).")
]
SpamAction = Annotated[Action, _action(SPAM, "Spam (SCL 5-6)", "spam_action")]
HcsAction = Annotated[Action, _action(SPAM, "High-confidence spam (SCL 8-9)", "high_confidence_spam_action")]
PhishAction = Annotated[Action, _action(SPAM, "Phishing", "phish_action")]
HphishAction = Annotated[Action, _action(SPAM, "High-confidence phishing", "high_confidence_phish_action")]
BulkAction = Annotated[Action, _action(SPAM, "Bulk (inbox: no action)", "bulk_action")]
SpoofAction = Annotated[Action, _action(SPAM, "Spoofed senders", "spoof_action")]
DmarcRejectAction = Annotated[
    Action, _action(SPAM, "With --honor-dmarc, p=reject failures", "dmarc_reject_action")
]
DmarcQuarantineAction = Annotated[
    Action, _action(SPAM, "With --honor-dmarc, p=quarantine failures", "dmarc_quarantine_action")
]
BulkThreshold = Annotated[
    int | None, _in(SPAM, "BCL at or over it is bulk, 1-9 (Default 7, Standard 6, Strict 5).")
]
MarkBulk = Annotated[
    bool | None,
    _in(SPAM, "Bulk over the threshold becomes spam.", "--mark-bulk-as-spam/--no-mark-bulk-as-spam"),
]
JunkThreshold = Annotated[int | None, _in(SPAM, "SCL at or over it goes to Junk, 1-9.")]
XHeader = Annotated[str | None, _in(SPAM, "The X-header action's field name (not a name: X-This-Is-Spam).")]
SubjectPrefix = Annotated[str | None, _in(SPAM, "The prepend-subject action's text.")]
RedirectTo = Annotated[str | None, _in(SPAM, "The redirect action's address ('' for none).")]
Retention = Annotated[int | None, _in(SPAM, "Days a quarantined message is kept, 1-30 (both kinds).")]
AllowedSenders = Annotated[Texts, _in(SPAM, "Allowed sender address; repeat ('' clears).")]
AllowedDomains = Annotated[Texts, _in(SPAM, "Allowed sender domain; repeat or commas ('' clears).")]
BlockedSenders = Annotated[Texts, _in(SPAM, "Blocked sender address; repeat ('' clears).")]
BlockedDomains = Annotated[Texts, _in(SPAM, "Blocked sender domain; repeat or commas ('' clears).")]
HonorDmarc = Annotated[
    bool | None, _in(SPAM, "Apply senders' DMARC p=reject/quarantine.", "--honor-dmarc/--no-honor-dmarc")
]
ArcSealers = Annotated[Texts, _in(SPAM, "Trusted ARC sealer domain; repeat or commas ('' clears).")]
FileFilter = Annotated[
    bool | None, _in(MALWARE, "The common attachments filter.", "--file-filter/--no-file-filter")
]
FileTypes = Annotated[
    Texts, _in(MALWARE, "Blocked file types (extensions); repeat or commas; replaces the list.")
]
FileAction = Annotated[Action, _action(MALWARE, "A blocked file type", "file_action")]


def _texts(values: Texts, *, commas: bool = False) -> list[str] | None:
    """An option's list: None when absent, [] for `''`, else its entries (split at commas if asked)."""
    if values is None:
        return None
    if commas:
        values = [part for value in values for part in value.split(",")]
    return [value.strip() for value in values if value.strip()]


def _settings(
    kind: PolicyKind, spam: AntiSpamChange, malware: AntiMalwareChange
) -> AntiSpamChange | AntiMalwareChange:
    """The settings change of `kind`; a setting of the other kind is a usage mistake."""
    other = malware if kind is PolicyKind.ANTISPAM else spam
    shared = {"quarantine_retention_days"}  # both kinds have it
    given = [
        f.name for f in dataclass_fields(other) if f.name not in shared and getattr(other, f.name) is not None
    ]
    if given:
        flag = "--" + given[0].replace("_", "-")
        other_kind = PolicyKind.ANTIMALWARE if kind is PolicyKind.ANTISPAM else PolicyKind.ANTISPAM
        raise fail(f"{flag} is an {other_kind.label} setting; it does not apply to --kind {kind.value}", 2)
    return spam if kind is PolicyKind.ANTISPAM else malware


def _change(
    kind: PolicyKind,
    *,
    name: str | None,
    priority: int | None,
    users: Texts,
    groups: Texts,
    domains: Texts,
    spam: AntiSpamChange,
    malware: AntiMalwareChange,
) -> PolicyChange:
    settings = _settings(kind, spam, malware)
    return PolicyChange(
        name=name,
        priority=priority,
        users=_texts(users),
        groups=_texts(groups),
        domains=_texts(domains, commas=True),
        settings=settings if settings != type(settings)() else None,
    )


def _spam_change(
    spam_action: FilterAction | None,
    high_confidence_spam_action: FilterAction | None,
    phish_action: FilterAction | None,
    high_confidence_phish_action: FilterAction | None,
    bulk_action: FilterAction | None,
    spoof_action: FilterAction | None,
    bulk_threshold: int | None,
    mark_bulk_as_spam: bool | None,
    junk_threshold: int | None,
    x_header: str | None,
    subject_prefix: str | None,
    redirect_to: str | None,
    quarantine_retention_days: int | None,
    allowed_senders: Texts,
    allowed_domains: Texts,
    blocked_senders: Texts,
    blocked_domains: Texts,
    honor_dmarc: bool | None,
    dmarc_reject_action: FilterAction | None,
    dmarc_quarantine_action: FilterAction | None,
    trusted_arc_sealers: Texts,
) -> AntiSpamChange:
    return AntiSpamChange(
        spam_action=spam_action,
        high_confidence_spam_action=high_confidence_spam_action,
        phish_action=phish_action,
        high_confidence_phish_action=high_confidence_phish_action,
        bulk_action=bulk_action,
        spoof_action=spoof_action,
        bulk_threshold=bulk_threshold,
        mark_bulk_as_spam=mark_bulk_as_spam,
        junk_threshold=junk_threshold,
        x_header=x_header,
        subject_prefix=subject_prefix,
        redirect_to=redirect_to,
        quarantine_retention_days=quarantine_retention_days,
        allowed_senders=_texts(allowed_senders),
        allowed_domains=_texts(allowed_domains, commas=True),
        blocked_senders=_texts(blocked_senders),
        blocked_domains=_texts(blocked_domains, commas=True),
        honor_dmarc=honor_dmarc,
        dmarc_reject_action=dmarc_reject_action,
        dmarc_quarantine_action=dmarc_quarantine_action,
        trusted_arc_sealers=_texts(trusted_arc_sealers, commas=True),
    )


def _malware_change(
    file_filter: bool | None, file_types: Texts, file_action: FilterAction | None, retention: int | None
) -> AntiMalwareChange:
    return AntiMalwareChange(
        file_filter=file_filter,
        file_types=_texts(file_types, commas=True),
        file_action=file_action,
        quarantine_retention_days=retention,
    )


# --- showing ----------------------------------------------------------------------------------------
def _senders(senders: SenderList) -> list[str]:
    return sorted(senders.addresses) + sorted(senders.domains)


def _applies_to(policy: ProtectionPolicy) -> str:
    if policy.is_default:
        return "everyone else"
    r = policy.policy.recipients
    parts = [
        f"{label}: {', '.join(sorted(values))}"
        for label, values in (("users", r.users), ("groups", r.groups), ("domains", r.domains))
        if values
    ]
    return " and ".join(parts)


def _row(policy: ProtectionPolicy) -> dict[str, object]:
    p = policy.policy
    row: dict[str, object] = {
        "name": policy.name,
        "tenant": policy.tenant,
        "kind": policy.kind.value,
        "priority": p.priority,
        "enabled": policy.enabled,
        "default": policy.is_default,
        "users": sorted(p.recipients.users),
        "groups": sorted(p.recipients.groups),
        "domains": sorted(p.recipients.domains),
    }
    if isinstance(p, AntiSpamPolicy):
        row.update(
            {
                "spam_action": p.spam_action.value,
                "high_confidence_spam_action": p.high_confidence_spam_action.value,
                "phish_action": p.phish_action.value,
                "high_confidence_phish_action": p.high_confidence_phish_action.value,
                "bulk_action": p.bulk_action.value,
                "spoof_action": p.spoof_action.value,
                "bulk_threshold": p.bulk_threshold,
                "mark_bulk_as_spam": p.mark_bulk_as_spam,
                "junk_threshold": p.junk_threshold,
                "x_header": p.x_header,
                "subject_prefix": p.subject_prefix,
                "redirect_to": p.redirect_to,
                "quarantine_retention_days": p.quarantine_retention_days,
                "allowed_senders": sorted(p.allowed.addresses),
                "allowed_domains": sorted(p.allowed.domains),
                "blocked_senders": sorted(p.blocked.addresses),
                "blocked_domains": sorted(p.blocked.domains),
                "honor_dmarc": p.honor_dmarc,
                "dmarc_reject_action": p.dmarc_reject_action.value,
                "dmarc_quarantine_action": p.dmarc_quarantine_action.value,
                "trusted_arc_sealers": sorted(p.trusted_arc_sealers),
            }
        )
    else:
        row.update(
            {
                "file_filter": p.file_filter,
                "file_types": list(p.file_types),
                "file_action": p.file_action.value,
                "quarantine_retention_days": p.quarantine_retention_days,
            }
        )
    return row


def _show(policy: ProtectionPolicy) -> None:
    p = policy.policy
    pairs: list[tuple[str, object]] = [
        ("name", policy.name),
        ("tenant", policy.tenant),
        ("kind", policy.kind.label),
        ("priority", "lowest (runs last)" if p.priority is None else p.priority),
        ("state", "on" if policy.enabled else "off"),
        ("applies to", _applies_to(policy)),
    ]
    if isinstance(p, AntiSpamPolicy):
        pairs += [
            ("spam", p.spam_action.value),
            ("high-confidence spam", p.high_confidence_spam_action.value),
            ("phishing", p.phish_action.value),
            ("high-confidence phishing", p.high_confidence_phish_action.value),
            ("bulk", p.bulk_action.value),
            ("spoof", p.spoof_action.value),
            (
                "bulk threshold",
                f"BCL {p.bulk_threshold}" + (", marked as spam" if p.mark_bulk_as_spam else ""),
            ),
            ("junk threshold", f"SCL {p.junk_threshold}"),
            ("x-header", p.x_header),
            ("subject prefix", repr(p.subject_prefix)),
            ("redirect to", p.redirect_to or "-"),
            ("quarantine retention", f"{p.quarantine_retention_days} days"),
            ("allowed senders", ", ".join(_senders(p.allowed)) or "-"),
            ("blocked senders", ", ".join(_senders(p.blocked)) or "-"),
            ("DMARC", _dmarc(p)),
            ("trusted ARC sealers", ", ".join(sorted(p.trusted_arc_sealers)) or "-"),
        ]
    else:
        pairs += [
            ("attachment filter", "on" if p.file_filter else "off"),
            ("file types", " ".join(p.file_types) or "-"),
            ("file action", p.file_action.value),
            ("quarantine retention", f"{p.quarantine_retention_days} days"),
        ]
    fields(pairs)


def _dmarc(p: AntiSpamPolicy) -> str:
    if not p.honor_dmarc:
        return "p=reject failures marked spoof (oreject)"
    return (
        f"honoured (p=reject: {p.dmarc_reject_action.value}, p=quarantine: {p.dmarc_quarantine_action.value})"
    )


def _summary(policy: ProtectionPolicy) -> tuple[object, ...]:
    p = policy.policy
    head = ("-" if p.priority is None else p.priority, policy.name, "on" if policy.enabled else "off")
    if isinstance(p, AntiSpamPolicy):
        actions = (p.spam_action, p.high_confidence_spam_action, p.phish_action, p.bulk_action)
        return (*head, *(a.value for a in actions), f"BCL {p.bulk_threshold}", _applies_to(policy))
    assert isinstance(p, AntiMalwarePolicy)
    return (*head, "on" if p.file_filter else "off", p.file_action.value, _applies_to(policy))


def _x_header_note(given: str | None, policy: ProtectionPolicy) -> None:
    if (
        given is not None
        and isinstance(policy.policy, AntiSpamPolicy)
        and policy.policy.x_header != given.strip()
    ):
        console.print(
            f"note: {given!r} is not a header field name (a space or a colon in it); "
            f"the X-header action adds {policy.policy.x_header}",
            markup=False,
        )


# --- policy commands ------------------------------------------------------------------------------
@policy_app.command("list")
def policy_list(kind: KindOption, tenant: TenantOption, json_output: JsonOption = False) -> None:
    """List a tenant's policies of a kind in the order they apply (the Default last)."""
    with refusals():
        found = node().directory.protection_policies(OPERATOR, tenant, kind)
    if json_output:
        return emit_json([_row(p) for p in found])
    if kind is PolicyKind.ANTISPAM:
        columns = ["priority", "name", "state", "spam", "HCS", "phish", "bulk", "bulk at", "applies to"]
    else:
        columns = ["priority", "name", "state", "file filter", "file action", "applies to"]
    table(None, columns, [_summary(p) for p in found])


@policy_app.command("show")
def policy_show(
    name: NameArgument, kind: KindOption, tenant: TenantOption, json_output: JsonOption = False
) -> None:
    """Show one policy with every setting."""
    with refusals():
        found = node().directory.get_protection_policy(OPERATOR, tenant, kind, name)
    if json_output:
        return emit_json(_row(found))
    _show(found)


@policy_app.command("add")
def policy_add(
    name: Annotated[str, typer.Argument(help="The new policy's name.")],
    kind: KindOption,
    tenant: TenantOption,
    priority: Priority = None,
    users: Users = None,
    groups: Groups = None,
    domains: Domains = None,
    spam_action: SpamAction = None,
    high_confidence_spam_action: HcsAction = None,
    phish_action: PhishAction = None,
    high_confidence_phish_action: HphishAction = None,
    bulk_action: BulkAction = None,
    spoof_action: SpoofAction = None,
    bulk_threshold: BulkThreshold = None,
    mark_bulk_as_spam: MarkBulk = None,
    junk_threshold: JunkThreshold = None,
    x_header: XHeader = None,
    subject_prefix: SubjectPrefix = None,
    redirect_to: RedirectTo = None,
    quarantine_retention_days: Retention = None,
    allowed_senders: AllowedSenders = None,
    allowed_domains: AllowedDomains = None,
    blocked_senders: BlockedSenders = None,
    blocked_domains: BlockedDomains = None,
    honor_dmarc: HonorDmarc = None,
    dmarc_reject_action: DmarcRejectAction = None,
    dmarc_quarantine_action: DmarcQuarantineAction = None,
    trusted_arc_sealers: ArcSealers = None,
    file_filter: FileFilter = None,
    file_types: FileTypes = None,
    file_action: FileAction = None,
) -> None:
    """Add a custom policy for some recipients (users, groups, domains: each list OR-ed, the lists AND-ed)."""
    if _texts(users) is None and _texts(groups) is None and _texts(domains, commas=True) is None:
        raise fail(
            "a custom policy needs recipients: give --users, --groups or --domains (the Default policy "
            "applies to everyone else)",
            2,
        )
    spam = _spam_change(
        spam_action,
        high_confidence_spam_action,
        phish_action,
        high_confidence_phish_action,
        bulk_action,
        spoof_action,
        bulk_threshold,
        mark_bulk_as_spam,
        junk_threshold,
        x_header,
        subject_prefix,
        redirect_to,
        quarantine_retention_days,
        allowed_senders,
        allowed_domains,
        blocked_senders,
        blocked_domains,
        honor_dmarc,
        dmarc_reject_action,
        dmarc_quarantine_action,
        trusted_arc_sealers,
    )
    malware = _malware_change(file_filter, file_types, file_action, quarantine_retention_days)
    change = _change(
        kind,
        name=None,
        priority=priority,
        users=users,
        groups=groups,
        domains=domains,
        spam=spam,
        malware=malware,
    )
    with refusals():
        added = node().directory.add_protection_policy(OPERATOR, tenant, kind, name, change)
    console.print(
        f"{kind.label} policy {added.name} added to {added.tenant} at priority {added.policy.priority}",
        markup=False,
    )
    _x_header_note(x_header, added)


@policy_app.command("set")
def policy_set(
    name: NameArgument,
    kind: KindOption,
    tenant: TenantOption,
    rename: Annotated[str | None, typer.Option(help="A new name (custom policies).")] = None,
    priority: Priority = None,
    users: Users = None,
    groups: Groups = None,
    domains: Domains = None,
    spam_action: SpamAction = None,
    high_confidence_spam_action: HcsAction = None,
    phish_action: PhishAction = None,
    high_confidence_phish_action: HphishAction = None,
    bulk_action: BulkAction = None,
    spoof_action: SpoofAction = None,
    bulk_threshold: BulkThreshold = None,
    mark_bulk_as_spam: MarkBulk = None,
    junk_threshold: JunkThreshold = None,
    x_header: XHeader = None,
    subject_prefix: SubjectPrefix = None,
    redirect_to: RedirectTo = None,
    quarantine_retention_days: Retention = None,
    allowed_senders: AllowedSenders = None,
    allowed_domains: AllowedDomains = None,
    blocked_senders: BlockedSenders = None,
    blocked_domains: BlockedDomains = None,
    honor_dmarc: HonorDmarc = None,
    dmarc_reject_action: DmarcRejectAction = None,
    dmarc_quarantine_action: DmarcQuarantineAction = None,
    trusted_arc_sealers: ArcSealers = None,
    file_filter: FileFilter = None,
    file_types: FileTypes = None,
    file_action: FileAction = None,
) -> None:
    """Change a policy (Default: the tenant's defaults); a list option replaces the list."""
    spam = _spam_change(
        spam_action,
        high_confidence_spam_action,
        phish_action,
        high_confidence_phish_action,
        bulk_action,
        spoof_action,
        bulk_threshold,
        mark_bulk_as_spam,
        junk_threshold,
        x_header,
        subject_prefix,
        redirect_to,
        quarantine_retention_days,
        allowed_senders,
        allowed_domains,
        blocked_senders,
        blocked_domains,
        honor_dmarc,
        dmarc_reject_action,
        dmarc_quarantine_action,
        trusted_arc_sealers,
    )
    malware = _malware_change(file_filter, file_types, file_action, quarantine_retention_days)
    change = _change(
        kind,
        name=rename,
        priority=priority,
        users=users,
        groups=groups,
        domains=domains,
        spam=spam,
        malware=malware,
    )
    if change == PolicyChange():
        raise fail(
            "nothing to change: give a setting such as --spam-action quarantine, --priority 0 or --domains "
            "(`postroom protection policy set --help` lists them)",
            2,
        )
    with refusals():
        changed = node().directory.set_protection_policy(OPERATOR, tenant, kind, name, change)
    _show(changed)
    _x_header_note(x_header, changed)


@policy_app.command("remove")
def policy_remove(name: NameArgument, kind: KindOption, tenant: TenantOption) -> None:
    """Remove a custom policy (the ones below it move up)."""
    with refusals():
        node().directory.remove_protection_policy(OPERATOR, tenant, kind, name)
    console.print(f"{kind.label} policy {name} removed from {tenant}", markup=False)


@policy_app.command("enable")
def policy_enable(name: NameArgument, kind: KindOption, tenant: TenantOption) -> None:
    """Turn a custom policy on."""
    with refusals():
        changed = node().directory.enable_protection_policy(OPERATOR, tenant, kind, name, True)
    console.print(f"{kind.label} policy {changed.name} of {changed.tenant} is on", markup=False)


@policy_app.command("disable")
def policy_disable(name: NameArgument, kind: KindOption, tenant: TenantOption) -> None:
    """Turn a custom policy off (it keeps its priority and applies to no one)."""
    with refusals():
        changed = node().directory.enable_protection_policy(OPERATOR, tenant, kind, name, False)
    console.print(f"{kind.label} policy {changed.name} of {changed.tenant} is off", markup=False)


# --- the connection filter ----------------------------------------------------------------------------
def _show_connection(found: ConnectionFilter, json_output: bool) -> None:
    if json_output:
        return emit_json(
            {
                "tenant": found.tenant,
                "ip_allow": list(found.policy.ip_allow),
                "ip_block": list(found.policy.ip_block),
            }
        )
    fields(
        [
            ("tenant", found.tenant),
            ("IP Allow list", ", ".join(found.policy.ip_allow) or "-"),
            ("IP Block list", ", ".join(found.policy.ip_block) or "-"),
        ]
    )


IpEntries = list[str] | None


@connection_app.command("show")
def connection_show(tenant: TenantOption, json_output: JsonOption = False) -> None:
    """Show the tenant's IP Allow and Block lists (allow beats block)."""
    with refusals():
        found = node().directory.connection_filter(OPERATOR, tenant)
    _show_connection(found, json_output)


@connection_app.command("set")
def connection_set(
    tenant: TenantOption,
    ip_allow: Annotated[
        IpEntries, typer.Option(help="Replace the IP Allow list; repeat or commas ('' clears).")
    ] = None,
    ip_block: Annotated[
        IpEntries, typer.Option(help="Replace the IP Block list; repeat or commas ('' clears).")
    ] = None,
    add_ip_allow: Annotated[IpEntries, typer.Option(help="Add to the IP Allow list; repeat.")] = None,
    remove_ip_allow: Annotated[IpEntries, typer.Option(help="Remove from the IP Allow list; repeat.")] = None,
    add_ip_block: Annotated[IpEntries, typer.Option(help="Add to the IP Block list; repeat.")] = None,
    remove_ip_block: Annotated[IpEntries, typer.Option(help="Remove from the IP Block list; repeat.")] = None,
    json_output: JsonOption = False,
) -> None:
    """Change the IP Allow and Block lists: an address, a range a-b, or a network /24-/32 (IPv6 /48-/128)."""
    change = ConnectionChange(
        ip_allow=_texts(ip_allow, commas=True),
        ip_block=_texts(ip_block, commas=True),
        add_ip_allow=_texts(add_ip_allow, commas=True) or (),
        remove_ip_allow=_texts(remove_ip_allow, commas=True) or (),
        add_ip_block=_texts(add_ip_block, commas=True) or (),
        remove_ip_block=_texts(remove_ip_block, commas=True) or (),
    )
    if change == ConnectionChange():
        raise fail("nothing to change: give --ip-allow, --ip-block, --add-ip-block ENTRY, ...", 2)
    with refusals():
        changed = node().directory.set_connection_filter(OPERATOR, tenant, change)
    _show_connection(changed, json_output)


# --- mailbox junk lists -----------------------------------------------------------------------------------
Safe = Annotated[list[str] | None, typer.Option(help="A safe sender: an address or a domain; repeat.")]
Blocked = Annotated[list[str] | None, typer.Option(help="A blocked sender: an address or a domain; repeat.")]


def _show_junk(found: MailboxJunkLists, json_output: bool) -> None:
    if json_output:
        return emit_json(
            {
                "mailbox": found.mailbox,
                "safe": _senders(found.lists.safe),
                "blocked": _senders(found.lists.blocked),
            }
        )
    rows = [("safe", entry) for entry in _senders(found.lists.safe)]
    rows += [("blocked", entry) for entry in _senders(found.lists.blocked)]
    table(found.mailbox, ["list", "sender"], rows)


def _entries(
    safe: list[str] | None, blocked: list[str] | None, verb: str
) -> list[tuple[SenderListName, str]]:
    entries = [(SenderListName.SAFE, e) for e in safe or ()] + [
        (SenderListName.BLOCKED, e) for e in blocked or ()
    ]
    if not entries:
        raise fail(f"nothing to {verb}: give --safe ENTRY or --blocked ENTRY (an address or a domain)", 2)
    return entries


@junk_app.command("list")
def junk_list(address: str, json_output: JsonOption = False, tenant: TenantScopeOption = None) -> None:
    """List a mailbox's safe and blocked senders."""
    with refusals():
        found = node().directory.junk_senders(scope_for(tenant), address)
    _show_junk(found, json_output)


@junk_app.command("add")
def junk_add(
    address: str, safe: Safe = None, blocked: Blocked = None, tenant: TenantScopeOption = None
) -> None:
    """Add safe or blocked senders to a mailbox (a domain covers its subdomains)."""
    entries = _entries(safe, blocked, "add")
    with refusals():
        found = node().directory.change_junk_senders(scope_for(tenant), address, add=entries)
    _show_junk(found, False)


@junk_app.command("remove")
def junk_remove(
    address: str, safe: Safe = None, blocked: Blocked = None, tenant: TenantScopeOption = None
) -> None:
    """Remove safe or blocked senders from a mailbox."""
    entries = _entries(safe, blocked, "remove")
    with refusals():
        found = node().directory.change_junk_senders(scope_for(tenant), address, remove=entries)
    _show_junk(found, False)
