"""`postroom scenario ...`: the rows of the overview table (spec §4) as templates: list, apply, check."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.text import Text

from postroom.app.scenarios import (
    Applied,
    ScenarioDirectory,
    apply_scenario,
    check_scenario,
)
from postroom.cli.context import JsonOption, node, refusals
from postroom.cli.domains import show_findings
from postroom.cli.output import console, emit_json, table, visible
from postroom.directory.scenarios import SCENARIOS, ScenarioParameters
from postroom.model.scope import OPERATOR

scenario_app = typer.Typer(
    help="Scenarios: the mail flows Postroom serves (hosted, third-party filtering, hybrid 1-4, devices, "
    "filtering only) as templates that create the connectors and domain types and print the DNS records.",
    no_args_is_help=True,
)

TenantOption = Annotated[str, typer.Option("--tenant", help="The tenant.")]


def _directory() -> ScenarioDirectory:
    directory: ScenarioDirectory = node().directory
    return directory


@scenario_app.command("list")
def scenario_list(json_output: JsonOption = False) -> None:
    """The scenarios of the overview table: MX, SPF, connectors, domain type and flow of each."""
    if json_output:
        emit_json([s.as_json() for s in SCENARIOS.values()])
        return
    table(
        None,
        ["name", "MX", "SPF", "connectors", "domain type", "flow", "needs"],
        [
            (
                s.name if s.supported else f"{s.name} (unsupported)",
                s.mx.value,
                s.spf,
                s.connectors,
                s.domain_type.value if s.domain_type is not None else "unchanged",
                s.flow,
                s.needs,
            )
            for s in SCENARIOS.values()
        ],
    )
    console.print("Apply one with `postroom scenario apply NAME --tenant T ... [--dry-run]`.", markup=False)


@scenario_app.command("apply")
def scenario_apply(
    name: Annotated[str, typer.Argument(help="The scenario (`postroom scenario list`).")],
    tenant: TenantOption,
    domain: Annotated[
        list[str] | None,
        typer.Option(
            "--domain", help="A domain it applies to (repeatable; default: every verified custom one)."
        ),
    ] = None,
    on_premises_host: Annotated[
        str,
        typer.Option(
            help="The on-premises server Postroom delivers to: host[:port] or IP (hybrid-3/4: its MX)."
        ),
    ] = "",
    on_premises_ip: Annotated[
        list[str] | None,
        typer.Option("--on-premises-ip", help="An on-premises sending address or CIDR (repeatable)."),
    ] = None,
    on_premises_certificate_name: Annotated[
        str,
        typer.Option(
            help="The name in the on-premises server's TLS certificate, e.g. *.contoso.com (preferred)."
        ),
    ] = "",
    third_party_host: Annotated[
        str, typer.Option(help="The MX host the third-party filtering service gave you.")
    ] = "",
    third_party_ip: Annotated[
        list[str] | None,
        typer.Option("--third-party-ip", help="An address or CIDR the third party relays from (repeatable)."),
    ] = None,
    third_party_certificate_name: Annotated[
        str, typer.Option(help="The name in the third party's TLS client certificate.")
    ] = "",
    device_ip: Annotated[
        list[str] | None, typer.Option("--device-ip", help="A device's static address (repeatable).")
    ] = None,
    spf_include: Annotated[
        list[str] | None,
        typer.Option("--spf-include", help="Another sender's SPF host to keep in the record (repeatable)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the plan and the DNS records; change nothing.")
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Create the connectors, domain types and settings a scenario needs, and print the DNS records
    to publish (MX, and the one SPF record). Applying again updates; another scenario replaces it."""
    parameters = ScenarioParameters(
        domains=tuple(domain or ()),
        on_premises_host=on_premises_host,
        on_premises_ips=tuple(on_premises_ip or ()),
        on_premises_certificate_name=on_premises_certificate_name,
        third_party_host=third_party_host,
        third_party_ips=tuple(third_party_ip or ()),
        third_party_certificate_name=third_party_certificate_name,
        device_ips=tuple(device_ip or ()),
        spf_includes=tuple(spf_include or ()),
    )
    with refusals():  # an interrupted apply's message names the refused step and what was done before it
        applied = apply_scenario(
            _directory(), node().settings.service, OPERATOR, tenant, name, parameters, dry_run=dry_run
        )
    if json_output:
        emit_json(applied.as_json())
        return
    _show_applied(applied)


def _show_applied(applied: Applied) -> None:
    plan = applied.plan
    row = plan.scenario
    if applied.dry_run:
        console.print(
            f"Dry run: {plan.recorded_name} for tenant {applied.tenant}; nothing was changed.", markup=False
        )
    else:
        console.print(
            f"Scenario {plan.recorded_name} applied to tenant {applied.tenant}: {row.title}.", markup=False
        )
    console.print(f"Flow: {row.flow}", markup=False)
    table(
        "would change" if applied.dry_run else "changes",
        ["what", "name", "action", "detail"],
        [(c.what, c.name, c.action, c.detail) for c in applied.changes],
    )
    for warning in plan.warnings:
        console.print(Text.assemble(("warning", "yellow"), "  ", visible(warning)))
    console.print(
        "Publish these DNS records (then `postroom scenario check --tenant " + applied.tenant + "`):",
        markup=False,
    )
    for dns in applied.dns:
        for record in dns.records:  # zone-file lines, tabs kept: people paste them
            typer.echo(f"; {record.purpose}")
            typer.echo(record.zone_line())
        for note in dns.notes:
            console.print(f"note: {note}", markup=False)


@scenario_app.command("check")
def scenario_check(tenant: TenantOption, json_output: JsonOption = False) -> None:
    """Check DNS (MX, SPF), domain types and connectors (validation included) against the tenant's
    scenario; exit 1 on any error."""
    current = node()
    with refusals():
        diagnosis = asyncio.run(
            check_scenario(_directory(), current.resolver, current.settings.service, OPERATOR, tenant)
        )
    if json_output:
        emit_json(diagnosis.as_json())
    else:
        shown = diagnosis.scenario or "none"
        console.print(f"Tenant {diagnosis.tenant}, scenario {shown}:", markup=False)
        show_findings(diagnosis.findings)
        console.print(f"{len(diagnosis.errors)} error(s), {len(diagnosis.warnings)} warning(s)", markup=False)
    if diagnosis.errors:
        raise typer.Exit(1)
