"""`postroom service ...`: the DNS records of the service's own zone."""

from __future__ import annotations

import typer

from postroom.app.domain_dns import service_dns_records
from postroom.cli.context import JsonOption, ZoneOption, node
from postroom.cli.domains import show_records
from postroom.cli.output import errors

service_app = typer.Typer(help="The service itself: the DNS records of its own zone.", no_args_is_help=True)


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
    show_records(
        records, zone, json_output, f"DNS records for the service zone {current.settings.service.domain}"
    )
