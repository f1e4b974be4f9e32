"""`postroom api-token ...`: the tokens a tenant's administrator presents to the admin API.

`add` prints the new token once (only its hash is kept: a lost token is removed and a new one made);
`list` shows names and creation times, never tokens; `remove` refuses the token from then on. The
operator makes tokens; the API acts for the token's tenant only (`admin.api`).
"""

from __future__ import annotations

from typing import Annotated

import typer

from postroom.cli.context import JsonOption, node, refusals
from postroom.cli.output import console, emit_json, table, when
from postroom.model.scope import OPERATOR

api_token_app = typer.Typer(
    help="Admin API tokens: each acts for one tenant (Authorization: Bearer <token>).", no_args_is_help=True
)

TenantOption = Annotated[str, typer.Option("--tenant", help="The tenant the token acts for.")]
NameArgument = Annotated[str, typer.Argument(help="The token's name (who or what holds it).")]


@api_token_app.command("add")
def api_token_add(name: NameArgument, tenant: TenantOption, json_output: JsonOption = False) -> None:
    """Make a token for a tenant's administrator; it is printed once, here."""
    with refusals():
        token, secret = node().directory.add_api_token(OPERATOR, tenant, name)
    if json_output:
        return emit_json({"name": token.name, "tenant": token.tenant, "token": secret})
    console.print(
        f"API token {token.name} for {token.tenant} (shown only now, keep it secret):", markup=False
    )
    typer.echo(secret)


@api_token_app.command("list")
def api_token_list(tenant: TenantOption, json_output: JsonOption = False) -> None:
    """List a tenant's API tokens (their names, never the tokens)."""
    with refusals():
        found = node().directory.api_tokens(OPERATOR, tenant)
    if json_output:
        return emit_json([{"name": t.name, "tenant": t.tenant, "created_at": t.created_at} for t in found])
    table(None, ["name", "created"], [(t.name, when(t.created_at)) for t in found])


@api_token_app.command("remove")
def api_token_remove(name: NameArgument, tenant: TenantOption) -> None:
    """Remove a token: the API refuses it from now on."""
    with refusals():
        node().directory.remove_api_token(OPERATOR, tenant, name)
    console.print(f"API token {name} of {tenant} removed", markup=False)
