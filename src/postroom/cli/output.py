"""How the CLI shows things: rich tables for people, JSON (`--json`) for scripts.

*Security:* table cells, field values and error messages often hold text from the network (a message's
From, Subject and Message-ID, what DNS returned). They reach the terminal only through `visible`: every
C0 and C1 control character and DEL is shown as an escape (`\\x1b`, `\\n`), so a Subject cannot move the
cursor, retitle the window or hide text; and they are printed as rich `Text`, so `[red]` in a value is
printed as it is, never read as markup. JSON output escapes controls by itself.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from postroom.config import ListenAddress

_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROLS_BUT_NEWLINE = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}

console = Console(highlight=False, soft_wrap=True)
errors = Console(stderr=True, highlight=False, soft_wrap=True)


def _plain(value: Any) -> Any:
    if isinstance(value, Path | ListenAddress):
        return str(value)  # a path, or host:port as the config file writes it
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def visible(value: object, *, newlines: bool = False) -> Text:
    """`value` as text that is safe to print: controls escaped (`newlines` keeps line breaks), no markup."""
    pattern = _CONTROLS_BUT_NEWLINE if newlines else _CONTROLS
    text = pattern.sub(lambda match: _NAMED.get(match[0], f"\\x{ord(match[0]):02x}"), str(value))
    return Text(text)


def emit_json(value: Any) -> None:
    typer.echo(json.dumps(_plain(value), indent=2, ensure_ascii=False))


def when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


def moment(text: str | None, option: str) -> float | None:
    """The time an option names (ISO 8601, UTC unless it says otherwise); exit 2 saying how to write one."""
    if text is None:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise fail(
            f"{option} {text!r} is not a date; use ISO 8601, e.g. 2026-11-27 or 2026-11-27T08:00", 2
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.timestamp()


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    shown = Table(title=None if title is None else visible(title), show_lines=False, header_style="bold")
    for column in columns:
        shown.add_column(column, overflow="fold")  # a value is never cut short: people copy from it
    for row in rows:
        shown.add_row(*(visible("" if cell is None else cell) for cell in row))
    console.print(shown)


def fields(pairs: Sequence[tuple[str, object]]) -> None:
    width = max(len(name) for name, _ in pairs)
    for name, value in pairs:
        console.print(Text.assemble((name.ljust(width), "bold"), "  ", visible(value)))


def fail(message: str, code: int = 1) -> typer.Exit:
    errors.print(Text.assemble(("error:", "red"), " ", visible(message, newlines=True)))
    return typer.Exit(code)
