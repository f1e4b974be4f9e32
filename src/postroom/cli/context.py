"""What every command group shares: the node it opens, the config it reads, common options and
how a service refusal becomes an exit status."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Annotated

import typer

from postroom.app import App, StartupError
from postroom.cli.output import fail
from postroom.config import ConfigError, Settings, find_config, load_settings
from postroom.directory import DirectoryError
from postroom.mailstore import MailboxNotFoundError
from postroom.model.scope import OPERATOR, Scope, TenantScope

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


class _State:
    config: str | None = None
    node: App | None = None


state = _State()


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
        try:
            state.node = App.open(settings())
        except StartupError as error:
            raise fail(str(error), 2) from None
    return state.node


ZoneOption = Annotated[bool, typer.Option("--zone", help="Print a BIND zone-file fragment.")]


@contextlib.contextmanager
def refusals() -> Iterator[None]:
    """Turn a service refusal into its message and exit status 1."""
    try:
        yield
    except (DirectoryError, MailboxNotFoundError) as error:
        raise fail(str(error)) from None


TenantScopeOption = Annotated[
    str | None, typer.Option("--tenant", help="Act for this tenant only (default: the service operator).")
]


def scope_for(tenant: str | None) -> Scope:
    """The scope a command acts in: the operator, or the one tenant `--tenant` names."""
    if tenant is None:
        return OPERATOR
    with refusals():
        return TenantScope(node().directory.get_tenant(OPERATOR, tenant).id)


def as_dict(value: object) -> dict[str, object]:
    assert dataclasses.is_dataclass(value) and not isinstance(value, type)
    return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
