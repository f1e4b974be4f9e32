"""`postroom connector validate NAME --tenant T [--to ADDRESS ...] [--json]`: validate an outbound
connector (spec §3.5) by sending a test message over it to each address, step by step.

The addresses are the given `--to`s, else the connector's stored validation recipients. For each, the
command prints the steps a delivery takes (`dns`, `tcp`, `tls`, `message`, see `delivery.validation`)
with their result and, on failure, the reply with the spec's code (4.4.312 DNS, 4.4.315 timeout,
4.4.316 refused, 4.4.317 no TLS or no connection, 4.4.318 closed, 4.7.320 certificate). The run is
kept in the connector's validation history (`connector_validations`), and the command exits 1 when
any address failed, so a script can gate on it.

`register(connector_app)` adds the command to the `postroom connector` group.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Annotated

import typer

from postroom.app.sending import helo_name, local_endpoints
from postroom.cli.context import JsonOption, node, refusals
from postroom.cli.output import emit_json, fail, table, when
from postroom.delivery.validation import validate_connector
from postroom.model import Address, AddressError
from postroom.model.connectors import OutboundConnector, ValidationResult
from postroom.model.scope import OPERATOR


def register(connector_app: typer.Typer) -> None:
    """Add `validate` to the `postroom connector` command group."""
    connector_app.command("validate")(validate)


def validate(
    name: Annotated[str, typer.Argument(help="The outbound connector's name.")],
    tenant: Annotated[str, typer.Option("--tenant", help="The tenant whose connector it is.")],
    to: Annotated[
        list[str] | None,
        typer.Option(
            "--to",
            help="An address at the connector's destination to send a test message to (repeatable; "
            "default: the connector's validation recipients).",
        ),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Validate an outbound connector: DNS, TCP, TLS and a test message to each address, step by step."""
    app = node()
    with refusals():
        tenant_id = app.directory.get_tenant(OPERATOR, tenant).id
        connector = app.directory.outbound_connector(OPERATOR, tenant, name)
    recipients = list(to or connector.validation_recipients)
    if not recipients:
        raise fail(
            "no address to validate with: give --to ADDRESS (an address the connector's destination "
            f"accepts), or store some with `postroom connector outbound set {name} --tenant {tenant} "
            "--validation-recipient ADDRESS`",
            2,
        )
    for recipient in recipients:
        try:
            Address.parse(recipient)
        except AddressError as error:
            raise fail(f"--to {recipient!r} is not an address: {error}", 2) from None
    settings = app.settings
    results = asyncio.run(
        validate_connector(
            connector,
            recipients,
            settings=settings.delivery,
            resolver=app.resolver,
            helo_name=helo_name(settings),
            local=local_endpoints(settings),
            sender=app.directory.external_postmaster(tenant_id),
        )
    )
    with refusals():
        app.directory.record_validation(OPERATOR, tenant, connector.name, results)
    if json_output:
        emit_json(results)
    else:
        _print(connector, results)
    if not all(result.ok for result in results):
        raise typer.Exit(1)


def _print(connector: OutboundConnector, results: Sequence[ValidationResult]) -> None:
    for result in results:
        verdict = "passed" if result.ok else f"failed: {result.reply}"
        table(
            f"{connector.name} -> {result.recipient}: {verdict} ({when(result.at)})",
            ["step", "result", "detail"],
            [(s.step, "ok" if s.ok else _code(s.reply), s.detail) for s in result.steps],
        )


def _code(reply: str) -> str:
    """`failed 450 4.4.316` from a stored reply (its text is in the run's heading)."""
    return " ".join(["failed", *reply.split(" ", 2)[:2]])
