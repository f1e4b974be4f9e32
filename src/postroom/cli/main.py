"""The `postroom` command line: set up a node, manage the directory and its DNS, read mailboxes and trace.

Every command that lists or shows takes `--json`. The config file comes from `-c FILE` or
$POSTROOM_CONFIG. Errors print what is wrong and what to do, and exit non-zero: 1 for a request the
service refused, 2 for a usage or configuration problem.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import logging
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import Progress

from postroom import __version__
from postroom.app import App, InitOptions, Listening, ProofOutcome, SetupError, init_node, verify_ownership
from postroom.app.domain_dns import check_domains_dns, dkim_selector, domain_facts, service_dns_records
from postroom.cli.output import console, emit_json, errors, fail, fields, table, when
from postroom.config import ConfigError, Settings, find_config, load_settings
from postroom.directory import DirectoryError, DomainType, Recipient, RecipientKind
from postroom.dns import (
    DnsRecord,
    DomainDiagnosis,
    Severity,
    check_dkim_selector,
    dkim_record,
    domain_records,
)
from postroom.model.flow import TraceStatus
from postroom.trace import TraceQuery

app = typer.Typer(
    name="postroom",
    help="Postroom: a self-hosted, multi-tenant hosted mail flow service.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
tenant_app = typer.Typer(help="Tenants: the organizations this service hosts.", no_args_is_help=True)
domain_app = typer.Typer(
    help="Accepted domains: add, prove ownership, the DNS records to publish, check DNS, remove.",
    no_args_is_help=True,
)
mailbox_app = typer.Typer(help="Mailboxes: create, change, read their messages.", no_args_is_help=True)
group_app = typer.Typer(help="Distribution groups.", no_args_is_help=True)
contact_app = typer.Typer(help="Mail contacts: external addresses in the directory.", no_args_is_help=True)
trace_app = typer.Typer(help="Message trace: what happened to a message.")
queue_app = typer.Typer(help="The delivery queue.", no_args_is_help=True)
service_app = typer.Typer(help="The service itself: the DNS records of its own zone.", no_args_is_help=True)
dkim_app = typer.Typer(help="DKIM keys of a domain: two selectors, one signing.", no_args_is_help=True)
app.add_typer(tenant_app, name="tenant")
app.add_typer(domain_app, name="domain")
app.add_typer(mailbox_app, name="mailbox")
app.add_typer(group_app, name="group")
app.add_typer(contact_app, name="contact")
app.add_typer(trace_app, name="trace")
app.add_typer(queue_app, name="queue")
app.add_typer(service_app, name="service")
domain_app.add_typer(dkim_app, name="dkim")

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


class _State:
    config: str | None = None
    node: App | None = None


state = _State()


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


def settings() -> Settings:
    path = find_config(state.config)
    if path is None:
        raise fail(
            "no configuration: pass -c FILE or set POSTROOM_CONFIG (create one with `postroom init DIR`)", 2
        )
    try:
        return load_settings(path)
    except ConfigError as error:
        raise fail(str(error), 2) from None


def node() -> App:
    if state.node is None:
        state.node = App.open(settings())
    return state.node


# --- node -----------------------------------------------------------------------------------------
@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Where to put postroom.toml and the data.")],
    service_domain: Annotated[
        str, typer.Option(help="The service's domain; tenants get NAME.<domain>.")
    ] = "postroom.test",
    hostname: Annotated[
        str | None, typer.Option(help="This node's host name (default mx.<service domain>).")
    ] = None,
    mx_listen: Annotated[str, typer.Option(help="HOST:PORT of the MX endpoint.")] = "127.0.0.1:2525",
    submission_listen: Annotated[
        str, typer.Option(help="HOST:PORT of message submission.")
    ] = "127.0.0.1:2587",
    imap_listen: Annotated[str, typer.Option(help="HOST:PORT of IMAP.")] = "127.0.0.1:2143",
    admin_listen: Annotated[str, typer.Option(help="HOST:PORT of the admin center.")] = "127.0.0.1:8080",
    nameserver: Annotated[
        list[str] | None, typer.Option(help="DNS server HOST:PORT (repeat); default: the system's.")
    ] = None,
) -> None:
    """Create a node: postroom.toml, the data directory, the database and a TLS certificate."""
    options = InitOptions(
        service_domain=service_domain,
        hostname=hostname,
        mx_listen=mx_listen,
        submission_listen=submission_listen,
        imap_listen=imap_listen,
        admin_listen=admin_listen,
        nameservers=tuple(nameserver or ()),
    )
    try:
        created = init_node(directory, options)
    except (SetupError, ConfigError) as error:
        raise fail(str(error), 2) from None
    App.open(created).close()
    config = created.source
    # Name the command as this user can run it: bare `postroom` only when it is on PATH.
    program = "postroom" if shutil.which("postroom") == str(Path(sys.argv[0]).resolve()) else sys.argv[0]
    console.print(f"Created {config}\n")
    console.print("Next steps:")
    console.print(f"  1. Start the node:        {program} -c {config} serve")
    console.print(f"  2. Add an organization:   {program} -c {config} tenant add contoso")
    console.print(
        f"  3. Add its domain:        {program} -c {config} domain add contoso.com --tenant contoso"
    )
    console.print(
        "  4. Prove ownership:       publish the TXT record that "
        f"`{program} -c {config} domain show contoso.com` prints,"
    )
    console.print(f"                            then `{program} -c {config} domain verify contoso.com`")
    console.print(
        f"  5. Create mailboxes:      {program} -c {config} mailbox add alice@contoso.com --name 'Alice'"
    )
    console.print(
        f"  6. Publish DNS records:   {program} -c {config} domain records contoso.com --zone"
        " (MX, SPF, DKIM, DMARC, ...)"
    )
    console.print(f"                            then `{program} -c {config} domain check contoso.com`")


@app.command("check-config")
def check_config(json_output: JsonOption = False) -> None:
    """Check the configuration file and report every problem at once."""
    loaded = settings()
    if json_output:
        return emit_json(loaded)
    console.print(f"{loaded.source}: OK")
    fields(
        [
            ("service domain", loaded.service.domain),
            ("host name", loaded.service.hostname),
            ("data directory", loaded.data_dir),
            ("database", "SQLite (embedded)" if not loaded.database.url else "external"),
            ("MX listens on", ", ".join(map(str, loaded.mx.listen))),
            ("DNS servers", ", ".join(map(str, loaded.dns.nameservers)) or "the system's"),
        ]
    )


@app.command()
def serve() -> None:
    """Run every listener until SIGTERM or SIGINT, then drain and stop."""
    loaded = settings()
    logging.basicConfig(
        level=loaded.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    running = App.open(loaded)

    def ready(listening: list[Listening]) -> None:
        for item in listening:
            console.print(f"{item.name:12} {item.protocol:6} {item.address}")
        console.print("serving; Ctrl-C or SIGTERM stops after draining")

    try:
        running.run(ready)
    finally:
        running.close()
    console.print("stopped")


# --- tenants --------------------------------------------------------------------------------------
@tenant_app.command("add")
def tenant_add(
    name: Annotated[str, typer.Argument(help="Short name; the default domain is NAME.<service domain>.")],
) -> None:
    """Create a tenant with its default domain (authoritative, verified)."""
    with _refusals():
        tenant = node().directory.add_tenant(name)
    console.print(
        f"tenant {tenant.name} created; default domain {tenant.name}.{node().directory.service_domain}"
    )


@tenant_app.command("list")
def tenant_list(json_output: JsonOption = False) -> None:
    """List tenants."""
    tenants = node().directory.list_tenants()
    if json_output:
        return emit_json(tenants)
    table(None, ["name", "created"], [(t.name, when(t.created_at)) for t in tenants])


@tenant_app.command("show")
def tenant_show(name: str, json_output: JsonOption = False) -> None:
    """Show a tenant with its domains and recipient counts."""
    with _refusals():
        tenant = node().directory.get_tenant(name)
        domains = node().directory.list_domains(tenant.name)
        recipients = node().directory.list_recipients(tenant=tenant.name)
    counts = {kind.value: sum(1 for r in recipients if r.kind is kind) for kind in RecipientKind}
    if json_output:
        return emit_json({"tenant": tenant, "domains": [d.name for d in domains], "recipients": counts})
    fields(
        [
            ("tenant", tenant.name),
            ("created", when(tenant.created_at)),
            ("domains", ", ".join(f"{d.name} ({d.status.value})" for d in domains)),
            ("recipients", ", ".join(f"{n} {k}(s)" for k, n in counts.items())),
        ]
    )


@tenant_app.command("remove")
def tenant_remove(
    name: str,
    yes: Annotated[
        bool, typer.Option("--yes", help="Confirm: removes its domains, recipients and mail.")
    ] = False,
) -> None:
    """Remove a tenant with all its domains, recipients and stored mail."""
    if not yes:
        raise fail(f"removing tenant {name} deletes its domains, recipients and mail; repeat with --yes", 2)
    with _refusals():
        node().directory.remove_tenant(name)
    console.print(f"tenant {name} removed")


# --- domains --------------------------------------------------------------------------------------
@domain_app.command("add")
def domain_add(
    domain: str,
    tenant: Annotated[str, typer.Option(help="The tenant that owns the domain.")],
    type_: Annotated[
        DomainType,
        typer.Option("--type", help="authoritative: unknown recipients are refused (DBEB); internal-relay."),
    ] = DomainType.AUTHORITATIVE,
    verified: Annotated[
        bool,
        typer.Option("--verified", help="Skip the ownership proof (service administrator owns the DNS)."),
    ] = False,
) -> None:
    """Add an accepted domain; it receives mail once its ownership is verified."""
    with _refusals():
        added = node().directory.add_domain(domain, tenant, type_, verified=verified)
    console.print(f"{added.name} added to tenant {added.tenant} as {added.type.value}, {added.status.value}")
    if not added.receives_mail:
        console.print("To prove you own it, publish this TXT record, then run `postroom domain verify`:")
        console.print(f'  {added.name}.  3600  IN  TXT  "{added.verification_record}"')
    console.print(
        f"Every record the domain needs (MX, SPF, DKIM, DMARC, ...): `postroom domain records {added.name}`;"
        f" check them with `postroom domain check {added.name}`.",
        markup=False,
    )


@domain_app.command("list")
def domain_list(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's domains.")] = None,
    json_output: JsonOption = False,
) -> None:
    """List accepted domains."""
    with _refusals():
        domains = node().directory.list_domains(tenant)
    if json_output:
        return emit_json(domains)
    table(
        None,
        ["domain", "tenant", "type", "status", "default"],
        [(d.name, d.tenant, d.type.value, d.status.value, "yes" if d.is_default else "") for d in domains],
    )


@domain_app.command("show")
def domain_show(domain: str, json_output: JsonOption = False) -> None:
    """Show a domain: its type, status, the ownership records, its MX host and its history."""
    with _refusals():
        found = node().directory.get_domain(domain)
        history = node().directory.domain_history(domain)
    mx_host = node().settings.service.mx_host(found.domain_key)
    if json_output:
        return emit_json(
            {
                **_as_dict(found),
                "verification_record": found.verification_record,
                "verification_mx": found.verification_mx,
                "mx_host": mx_host,
                "history": history,
            }
        )
    pairs: list[tuple[str, object]] = [
        ("domain", found.name),
        ("tenant", found.tenant),
        ("type", found.type.value),
        (
            "status",
            found.status.value + ("" if found.receives_mail else " (receives no mail until verified)"),
        ),
        ("ownership TXT", f'{found.name}.  3600  IN  TXT  "{found.verification_record}"'),
        ("or ownership MX", f"{found.name}.  3600  IN  MX  100 {found.verification_mx}.  (no TXT possible)"),
        ("MX host", mx_host),
    ]
    fields(pairs)
    table("history", ["time", "event", "detail"], [(when(h.at), h.event, h.detail) for h in history])


@domain_app.command("verify")
def domain_verify(domain: str, json_output: JsonOption = False) -> None:
    """Look up the ownership TXT record (or its MX fallback) in DNS and verify the domain when it is there."""
    current = node()
    with _refusals():
        result = asyncio.run(verify_ownership(current.directory, current.resolver, domain))
    if json_output:
        emit_json(result)
    else:
        console.print(result.message)
        if result.outcome not in (ProofOutcome.VERIFIED, ProofOutcome.ALREADY_VERIFIED):
            console.print(f"expected a TXT record: {result.expected}", markup=False)
            console.print(
                f"(or, where the DNS host allows no TXT at the apex, an MX record "
                f"{result.domain.verification_mx} with a larger priority number than every other MX)",
                markup=False,
            )
            for value in result.found:
                console.print(f"  found: {value}", markup=False)
    if result.outcome not in (ProofOutcome.VERIFIED, ProofOutcome.ALREADY_VERIFIED):
        raise typer.Exit(1)


ZoneOption = Annotated[bool, typer.Option("--zone", help="Print a BIND zone-file fragment.")]


def _show_records(records: list[DnsRecord], zone: bool, json_output: bool, title: str) -> None:
    if json_output:
        return emit_json([record.as_json() for record in records])
    if zone:
        for record in records:
            typer.echo(f"; {record.purpose}" if record.purpose else ";")
            typer.echo(record.zone_line())
        return
    table(
        title,
        ["type", "name", "value", "TTL", "why"],
        [
            (
                r.type,
                r.name,
                f"{r.priority} {r.value}" if r.priority is not None else r.value,
                r.ttl,
                r.purpose,
            )
            for r in records
        ],
    )


@domain_app.command("records")
def domain_records_command(domain: str, zone: ZoneOption = False, json_output: JsonOption = False) -> None:
    """The DNS records the domain must publish: MX, SPF, DKIM, DMARC, client set-up, MTA-STS, TLS-RPT."""
    current = node()
    with _refusals():
        facts = domain_facts(current.directory, domain)
    records = domain_records(current.settings.service, facts)
    _show_records(records, zone, json_output, f"DNS records for {facts.name}")


@domain_app.command("check")
def domain_check(
    domain: Annotated[
        str | None, typer.Argument(help="The domain; none: every domain (or --tenant's).")
    ] = None,
    tenant: Annotated[str | None, typer.Option(help="Without DOMAIN: only this tenant's domains.")] = None,
    json_output: JsonOption = False,
    mta_sts_port: Annotated[
        int, typer.Option(help="Port to fetch the MTA-STS policy from (a lab's policy host).")
    ] = 443,
    mta_sts_http: Annotated[
        bool,
        typer.Option("--mta-sts-http", help="Fetch the MTA-STS policy over plain HTTP (a lab without TLS)."),
    ] = False,
) -> None:
    """Ask DNS what a domain publishes and report each problem with its fix; exit 1 on any error.

    Without DOMAIN, every accepted domain is checked and summed up in one table.
    """
    current = node()
    with _refusals():
        names = [domain] if domain else [d.name for d in current.directory.list_domains(tenant)]
        with Progress(console=errors, transient=True, disable=len(names) < 2 or json_output) as progress:
            task = progress.add_task("checking DNS", total=len(names))
            diagnoses = asyncio.run(
                check_domains_dns(
                    current.directory,
                    current.settings,
                    current.resolver,
                    names,
                    policy_port=mta_sts_port,
                    policy_tls=not mta_sts_http,
                    on_checked=lambda _: progress.advance(task),
                )
            )
    if json_output:
        reports = [diagnosis.as_json() for diagnosis in diagnoses]
        emit_json(reports[0] if domain else reports)
    elif domain:
        _show_diagnosis(diagnoses[0])
    else:
        table(
            None,
            ["domain", "errors", "warnings", "problems"],
            [
                (
                    d.domain,
                    len(d.errors),
                    len(d.warnings),
                    ", ".join(dict.fromkeys(f.code.value for f in (*d.errors, *d.warnings))),
                )
                for d in diagnoses
            ],
        )
        console.print("Details and fixes: `postroom domain check DOMAIN`.")
    if any(d.errors for d in diagnoses):
        raise typer.Exit(1)


def _show_diagnosis(diagnosis: DomainDiagnosis) -> None:
    marks = {Severity.ERROR: "[red]error[/red]", Severity.WARNING: "[yellow]warning[/yellow]"}
    for finding in diagnosis.findings:
        # Messages quote what DNS holds: never read as markup.
        mark = marks.get(finding.severity, "[green]ok[/green]")
        console.print(f"{mark}  {finding.code.value}  {escape(finding.message)}")
        for value in finding.found:
            console.print(f"    found: {value}", markup=False)
        if finding.severity is not Severity.OK and finding.fix:
            console.print(f"    fix:   {finding.fix}", markup=False)
            for record in finding.publish:
                console.print(f"           {record.zone_line()}", markup=False)
    console.print(
        f"{diagnosis.domain}: {len(diagnosis.errors)} error(s), {len(diagnosis.warnings)} warning(s)"
    )


@dkim_app.command("show")
def dkim_show(domain: str, json_output: JsonOption = False) -> None:
    """The domain's DKIM selectors, which one signs, and the TXT record each must publish."""
    with _refusals():
        keys = node().directory.dkim_keys(domain)
    records = [dkim_record(k.domain, dkim_selector(k)) for k in keys]
    if json_output:
        return emit_json(
            [
                {**_as_dict(k), "record_name": r.name, "record_value": r.value}
                for k, r in zip(keys, records, strict=True)
            ]
        )
    table(
        None,
        ["selector", "state", "created", "publish TXT at"],
        [
            (k.selector, "signs" if k.active else "next", when(k.created_at), r.name)
            for k, r in zip(keys, records, strict=True)
        ],
    )


@dkim_app.command("rotate")
def dkim_rotate(
    domain: str,
    force: Annotated[
        bool, typer.Option("--force", help="Rotate even though DNS does not publish the next key yet.")
    ] = False,
) -> None:
    """Sign with the other selector from now on; the retired selector gets a new key to publish."""
    current = node()
    with _refusals():
        keys = current.directory.dkim_keys(domain)
        successor = next(k for k in keys if not k.active)
        if not force:
            # Checked as if it signed already: anything but the right key refuses the rotation.
            signing = dataclasses.replace(dkim_selector(successor), active=True)
            finding = asyncio.run(check_dkim_selector(current.resolver, signing, successor.domain))
            if finding.severity is not Severity.OK:
                wanted = dkim_record(successor.domain, signing)
                raise fail(
                    f"not rotated: {finding.message}. Publish {wanted.name} TXT "
                    f'"{wanted.value}" first, wait for its TTL and run this again (or --force)'
                )
        rotated = current.directory.rotate_dkim(domain)
    retired = next(k for k in rotated if not k.active)
    console.print(f"{successor.selector} signs {successor.domain}'s mail now.")
    console.print(f"Before the next rotation, publish the new key of {retired.selector}:", markup=False)
    console.print(dkim_record(retired.domain, dkim_selector(retired)).zone_line(), markup=False)


@domain_app.command("remove")
def domain_remove(domain: str) -> None:
    """Remove an accepted domain that no address uses."""
    with _refusals():
        node().directory.remove_domain(domain)
    console.print(f"{domain} removed")


# --- recipients -----------------------------------------------------------------------------------
def _show_recipient(recipient: Recipient, json_output: bool, extra: dict[str, object] | None = None) -> None:
    if json_output:
        return emit_json({**_as_dict(recipient), "address": recipient.primary_address, **(extra or {})})
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


def _list_recipients(kind: RecipientKind, tenant: str | None, domain: str | None, json_output: bool) -> None:
    with _refusals():
        found = node().directory.list_recipients(tenant=tenant, kind=kind, domain=domain)
    if json_output:
        return emit_json([{**_as_dict(r), "address": r.primary_address} for r in found])
    table(
        None,
        ["address", "name", "tenant", "aliases"],
        [(r.primary_address, r.display_name, r.tenant, ", ".join(r.aliases)) for r in found],
    )


def _read_password(password_stdin: bool) -> str | None:
    if not password_stdin:
        return None
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise fail("--password-stdin was given but standard input had no password", 2)
    return password


TenantFilter = Annotated[str | None, typer.Option(help="Only this tenant's.")]
DomainFilter = Annotated[str | None, typer.Option(help="Only addresses in this domain.")]
AliasOption = Annotated[
    list[str] | None, typer.Option("--alias", help="A secondary (proxy) address; repeat.")
]


@mailbox_app.command("add")
def mailbox_add(
    address: str,
    name: Annotated[str, typer.Option(help="Display name.")] = "",
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    alias: AliasOption = None,
) -> None:
    """Create a mailbox (Inbox, Sent, Drafts, Junk, Trash, Archive) with its addresses."""
    password = _read_password(password_stdin)
    with _refusals():
        created = node().directory.add_mailbox(
            address, display_name=name, password=password, aliases=alias or ()
        )
    console.print(f"mailbox {created.primary_address} created in tenant {created.tenant}")


@mailbox_app.command("list")
def mailbox_list(
    tenant: TenantFilter = None, domain: DomainFilter = None, json_output: JsonOption = False
) -> None:
    """List mailboxes."""
    _list_recipients(RecipientKind.MAILBOX, tenant, domain, json_output)


@mailbox_app.command("show")
def mailbox_show(address: str, json_output: JsonOption = False) -> None:
    """Show a mailbox with its folders."""
    with _refusals():
        recipient = node().directory.get_recipient(address)
        folders = node().mailstore.folders(address)
    _show_recipient(recipient, json_output, {"folders": folders})
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
) -> None:
    """Change a mailbox: name, password, addresses."""
    password = _read_password(password_stdin)
    with _refusals():
        changed = node().directory.set_recipient(
            address,
            display_name=name,
            password=password,
            add_aliases=add_alias or (),
            remove_aliases=remove_alias or (),
            primary=primary,
        )
    _show_recipient(changed, False)


@mailbox_app.command("remove")
def mailbox_remove(
    address: str, yes: Annotated[bool, typer.Option("--yes", help="Confirm: deletes its mail.")] = False
) -> None:
    """Remove a mailbox and its mail."""
    if not yes:
        raise fail(f"removing {address} deletes its mail; repeat with --yes", 2)
    with _refusals():
        node().directory.remove_recipient(address)
    console.print(f"{address} removed")


@mailbox_app.command("messages")
def mailbox_messages(
    address: str,
    folder: Annotated[str, typer.Option(help="Folder name.")] = "Inbox",
    json_output: JsonOption = False,
) -> None:
    """List the messages in a mailbox folder."""
    with _refusals():
        found = node().mailstore.list_messages(address, folder)
    if json_output:
        return emit_json(found)
    table(
        f"{address} / {folder}",
        ["uid", "from", "subject", "date", "size"],
        [(m.uid, m.from_header, m.subject, m.date or when(m.internal_date), m.size) for m in found],
    )


@mailbox_app.command("export")
def mailbox_export(
    address: str, uid: int, folder: Annotated[str, typer.Option(help="Folder name.")] = "Inbox"
) -> None:
    """Write one message, raw, to standard output."""
    with _refusals():
        raw = node().mailstore.export(address, uid, folder)
    sys.stdout.buffer.write(raw)
    sys.stdout.buffer.flush()


@group_app.command("add")
def group_add(
    address: str,
    member: Annotated[list[str], typer.Option(help="A member address (mailbox, group, external); repeat.")],
    name: Annotated[str, typer.Option(help="Display name.")] = "",
    alias: AliasOption = None,
) -> None:
    """Create a distribution group."""
    with _refusals():
        created = node().directory.add_group(address, members=member, display_name=name, aliases=alias or ())
    console.print(f"group {created.primary_address} created with {len(created.members)} member(s)")


@group_app.command("list")
def group_list(
    tenant: TenantFilter = None, domain: DomainFilter = None, json_output: JsonOption = False
) -> None:
    """List distribution groups."""
    _list_recipients(RecipientKind.GROUP, tenant, domain, json_output)


@group_app.command("show")
def group_show(address: str, json_output: JsonOption = False) -> None:
    """Show a group and its members."""
    with _refusals():
        _show_recipient(node().directory.get_recipient(address), json_output)


@group_app.command("set")
def group_set(
    address: str,
    name: Annotated[str | None, typer.Option(help="New display name.")] = None,
    add_member: Annotated[list[str] | None, typer.Option(help="Add a member; repeat.")] = None,
    remove_member: Annotated[list[str] | None, typer.Option(help="Remove a member; repeat.")] = None,
) -> None:
    """Change a group: name, members."""
    with _refusals():
        changed = node().directory.set_recipient(
            address, display_name=name, add_members=add_member or (), remove_members=remove_member or ()
        )
    _show_recipient(changed, False)


@group_app.command("remove")
def group_remove(address: str) -> None:
    """Remove a group (its members stay)."""
    with _refusals():
        node().directory.remove_recipient(address)
    console.print(f"{address} removed")


@contact_app.command("add")
def contact_add(
    address: Annotated[str, typer.Argument(help="The contact's address in one of the tenant's domains.")],
    external: Annotated[str, typer.Option(help="The external address mail for the contact goes to.")],
    name: Annotated[str, typer.Option(help="Display name.")] = "",
) -> None:
    """Create a mail contact."""
    with _refusals():
        created = node().directory.add_contact(address, external_address=external, display_name=name)
    console.print(f"contact {created.primary_address} -> {created.external_address} created")


@contact_app.command("list")
def contact_list(tenant: TenantFilter = None, json_output: JsonOption = False) -> None:
    """List mail contacts."""
    _list_recipients(RecipientKind.CONTACT, tenant, None, json_output)


@contact_app.command("show")
def contact_show(address: str, json_output: JsonOption = False) -> None:
    """Show a mail contact."""
    with _refusals():
        _show_recipient(node().directory.get_recipient(address), json_output)


@contact_app.command("remove")
def contact_remove(address: str) -> None:
    """Remove a mail contact."""
    with _refusals():
        node().directory.remove_recipient(address)
    console.print(f"{address} removed")


# --- trace and queue ------------------------------------------------------------------------------
def _timestamp(text: str | None, option: str) -> float | None:
    if text is None:
        return None
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise fail(
            f"{option} {text!r} is not a date; use ISO 8601, e.g. 2026-11-27 or 2026-11-27T08:00", 2
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


@trace_app.callback(invoke_without_command=True)
def trace_search(
    ctx: typer.Context,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's recipients.")] = None,
    sender: Annotated[
        str | None, typer.Option(help="Sender address; one wildcard allowed: *@contoso.com.")
    ] = None,
    recipient: Annotated[str | None, typer.Option(help="Recipient address; one wildcard allowed.")] = None,
    message_id: Annotated[str | None, typer.Option(help="The Message-ID header, with or without <>.")] = None,
    since: Annotated[str | None, typer.Option(help="From this time (ISO 8601, UTC).")] = None,
    until: Annotated[str | None, typer.Option(help="Up to this time (ISO 8601, UTC).")] = None,
    status: Annotated[TraceStatus | None, typer.Option(help="Only rows with this status.")] = None,
    json_output: JsonOption = False,
) -> None:
    """Search message trace: one row per recipient. `postroom trace show ID` shows the events."""
    if ctx.invoked_subcommand is not None:
        return
    current = node()
    with _refusals():
        tenant_id = current.directory.get_tenant(tenant).id if tenant else None
    rows = current.trace.search(
        TraceQuery(
            tenant_id=tenant_id,
            sender=sender,
            recipient=recipient,
            message_id_header=message_id,
            since=_timestamp(since, "--since"),
            until=_timestamp(until, "--until"),
            status=status,
        )
    )
    if json_output:
        return emit_json(rows)
    table(
        None,
        ["time (UTC)", "sender", "recipient", "subject", "status", "id"],
        [
            (when(r.received_at), r.sender or "<>", r.recipient, r.subject, r.status.value, r.message_id)
            for r in rows
        ],
    )


@trace_app.command("show")
def trace_show(
    message: Annotated[
        str, typer.Argument(help="The internal message id (the id column of `postroom trace`).")
    ],
    tenant: Annotated[str | None, typer.Option(help="As this tenant sees it.")] = None,
    json_output: JsonOption = False,
) -> None:
    """Show one message's trace: its recipients and every event."""
    current = node()
    with _refusals():
        tenant_id = current.directory.get_tenant(tenant).id if tenant else None
    detail = current.trace.detail(message, tenant_id)
    if detail is None:
        raise fail(f"no traced message {message}; search with `postroom trace --sender ...`")
    if json_output:
        return emit_json(detail)
    m = detail.message
    fields(
        [
            ("message", m.id),
            ("Message-ID", m.message_id_header or "-"),
            ("sender", m.sender or "<>"),
            ("subject", m.subject),
            ("size", m.size),
            ("client IP", m.client_ip),
            ("received", when(m.received_at)),
        ]
    )
    table("recipients", ["recipient", "status"], [(r.recipient, r.status.value) for r in detail.recipients])
    table(
        "events",
        ["time (UTC)", "event", "recipient", "detail"],
        [
            (when(e.at), e.event, e.recipient, ", ".join(f"{k}={v}" for k, v in e.detail.items()))
            for e in detail.events
        ],
    )


@queue_app.command("summary")
def queue_summary(json_output: JsonOption = False) -> None:
    """How many recipients wait in the queue."""
    summary = node().queue_summary()
    if json_output:
        return emit_json({**_as_dict(summary), "failed": 0})
    fields(
        [
            ("pending", summary.pending),
            ("deferred", summary.deferred),
            ("messages", summary.messages),
            ("oldest", when(summary.oldest_received_at)),
        ]
    )


# --- service --------------------------------------------------------------------------------------
@service_app.command("records")
def service_records_command(zone: ZoneOption = False, json_output: JsonOption = False) -> None:
    """The records of the service's own zone: host addresses, the SPF host, PTR advice, default domains."""
    current = node()
    records = service_dns_records(current.directory, current.settings)
    if not current.settings.service.addresses and not json_output:
        errors.print(
            "[yellow]note:[/yellow] service.addresses is empty in the config, so the host, MX and "
            "SPF-host records cannot be given: list the nodes' public IP addresses there"
        )
    _show_records(
        records, zone, json_output, f"DNS records for the service zone {current.settings.service.domain}"
    )


# --- helpers --------------------------------------------------------------------------------------
@contextlib.contextmanager
def _refusals() -> Iterator[None]:
    """Turn a service refusal into its message and exit status 1."""
    try:
        yield
    except DirectoryError as error:
        raise fail(str(error)) from None


def _as_dict(value: object) -> dict[str, object]:
    assert dataclasses.is_dataclass(value) and not isinstance(value, type)
    return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}


def main() -> None:
    try:
        app()
    finally:
        if state.node is not None:
            state.node.close()
