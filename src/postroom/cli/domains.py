"""`postroom domain ...`: accepted domains and their type, ownership proof, the DNS records to publish,
live checks, DKIM."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import Progress

from postroom.app import ProofOutcome, verify_ownership
from postroom.app.domain_dns import check_domains_dns, dkim_selector, domain_facts
from postroom.cli.context import JsonOption, ZoneOption, as_dict, node, refusals
from postroom.cli.output import console, emit_json, errors, fail, fields, table, when
from postroom.directory import RETIRED_KEY_SECONDS, DkimKey, DomainType
from postroom.dns import (
    DnsRecord,
    DomainDiagnosis,
    Finding,
    NotADomainName,
    Severity,
    check_dkim_selector,
    dkim_record,
    domain_records,
)
from postroom.model.scope import OPERATOR

domain_app = typer.Typer(
    help="Accepted domains: add, prove ownership, the DNS records to publish, check DNS, remove.",
    no_args_is_help=True,
)
dkim_app = typer.Typer(help="DKIM keys of a domain: two selectors, one signing.", no_args_is_help=True)
domain_app.add_typer(dkim_app, name="dkim")


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
    with refusals():
        added = node().directory.add_domain(OPERATOR, domain, tenant, type_, verified=verified)
    console.print(
        f"{added.name} added to tenant {added.tenant} as {added.type.value}, {added.status.value}",
        markup=False,
    )
    if not added.receives_mail:
        console.print("To prove you own it, publish this TXT record, then run `postroom domain verify`:")
        console.print(f'  {added.name}.  3600  IN  TXT  "{added.verification_record}"', markup=False)
    console.print(
        f"Every record the domain needs (MX, SPF, DKIM, DMARC, ...): `postroom domain records {added.name}`;"
        f" check them with `postroom domain check {added.name}`.",
        markup=False,
    )


@domain_app.command("set")
def domain_set(
    domain: str,
    type_: Annotated[
        DomainType,
        typer.Option(
            "--type",
            help="authoritative: unknown recipients are refused (DBEB); internal-relay: they go to the "
            "on-premises connector.",
        ),
    ],
) -> None:
    """Change a domain's type (a scenario sets it for you: `postroom scenario apply`)."""
    with refusals():
        changed = node().directory.set_domain_type(OPERATOR, domain, type_)
    console.print(f"{changed.name} is {changed.type.value}", markup=False)


@domain_app.command("list")
def domain_list(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's domains.")] = None,
    json_output: JsonOption = False,
) -> None:
    """List accepted domains."""
    with refusals():
        domains = node().directory.list_domains(OPERATOR, tenant)
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
    with refusals():
        found = node().directory.get_domain(OPERATOR, domain)
        history = node().directory.domain_history(OPERATOR, domain)
    mx_host = node().settings.service.mx_host(found.domain_key)
    if json_output:
        return emit_json(
            {
                **as_dict(found),
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
    with refusals():
        result = asyncio.run(verify_ownership(current.directory, current.resolver, OPERATOR, domain))
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


def show_records(records: list[DnsRecord], zone: bool, json_output: bool, title: str) -> None:
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
    with refusals():
        facts = domain_facts(current.directory, domain)
    try:
        records = domain_records(current.settings.service, facts)
    except NotADomainName as error:  # stored before the directory refused such names
        raise fail(str(error)) from None
    show_records(records, zone, json_output, f"DNS records for {facts.name}")


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
    with refusals():
        names = [domain] if domain else [d.name for d in current.directory.list_domains(OPERATOR, tenant)]
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
    show_findings(diagnosis.findings)
    console.print(
        f"{diagnosis.domain}: {len(diagnosis.errors)} error(s), {len(diagnosis.warnings)} warning(s)"
    )


def show_findings(findings: Sequence[Finding]) -> None:
    """Findings as `domain check` prints them: mark, code, message, what was found, the fix."""
    marks = {Severity.ERROR: "[red]error[/red]", Severity.WARNING: "[yellow]warning[/yellow]"}
    for finding in findings:
        # Messages quote what DNS holds: never read as markup.
        mark = marks.get(finding.severity, "[green]ok[/green]")
        console.print(f"{mark}  {finding.code.value}  {escape(finding.message)}")
        for value in finding.found:
            console.print(f"    found: {value}", markup=False)
        if finding.severity is not Severity.OK and finding.fix:
            console.print(f"    fix:   {finding.fix}", markup=False)
            for record in finding.publish:
                console.print(f"           {record.zone_line()}", markup=False)


@dkim_app.command("show")
def dkim_show(domain: str, json_output: JsonOption = False) -> None:
    """The domain's DKIM selectors, which one signs, and the TXT record each must publish."""
    with refusals():
        keys = node().directory.dkim_keys(OPERATOR, domain)
    records = [dkim_record(k.domain, dkim_selector(k)) for k in keys]
    if json_output:
        return emit_json(
            [
                {**as_dict(k), "record_name": r.name, "record_value": r.value}
                for k, r in zip(keys, records, strict=True)
            ]
        )
    table(
        None,
        ["selector", "state", "created", "publish TXT at"],
        [
            (k.selector, _dkim_state(k), when(k.created_at), r.name)
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
    """Sign with the other selector from now on; the retired selector's key stays published for mail in
    flight, then it gets a new key to publish."""
    current = node()
    with refusals():
        keys = current.directory.dkim_keys(OPERATOR, domain)
        successor = next(k for k in keys if not k.active)
        if not force and successor.retired_at is not None:
            since, until = when(successor.retired_at), when(successor.retired_at + RETIRED_KEY_SECONDS)
            raise fail(
                f"not rotated: {successor.selector} still holds the key retired {since}, "
                f"kept published for mail in flight until {until}; "
                "it gets a new key to publish then (or --force: a new key at once, to publish before "
                "mail verifies)"
            )
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
        rotated = current.directory.rotate_dkim(OPERATOR, domain)
    retired = next(k for k in rotated if not k.active)
    console.print(f"{successor.selector} signs {successor.domain}'s mail now.", markup=False)
    until = when((retired.retired_at or 0.0) + RETIRED_KEY_SECONDS)
    console.print(
        f"Keep {retired.selector}'s record published until {until}: mail signed with it may still be in "
        f"flight. Then it gets a new key; `postroom domain dkim show {retired.domain}` shows it to publish "
        "before the next rotation.",
        markup=False,
    )


def _dkim_state(key: DkimKey) -> str:
    if key.retired_at is not None and not key.active:
        return f"retired (published until {when(key.retired_at + RETIRED_KEY_SECONDS)})"
    return key.state


@domain_app.command("remove")
def domain_remove(domain: str) -> None:
    """Remove an accepted domain that no address uses."""
    with refusals():
        node().directory.remove_domain(OPERATOR, domain)
    console.print(f"{domain} removed", markup=False)
