"""`postroom migrate imap`: copy mailboxes from an existing IMAP service into Postroom mailboxes.

Progress goes to standard error (rich bars on a terminal, one plain line per commit otherwise); the
summary (a table, or JSON with `--json`) to standard output. Exit status: 0 when every mailbox was
copied, 1 when any row failed (the others were still copied), 2 when the batch could not start (the
CSV file, the options).
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from postroom.cli.context import JsonOption, TenantScopeOption, node, scope_for
from postroom.cli.output import console, emit_json, errors, fail, table, visible
from postroom.migration import (
    BatchError,
    BatchReport,
    MailboxReport,
    Migration,
    Security,
    SourceServer,
    read_batch,
)

migrate_app = typer.Typer(help="Move mailboxes from an existing mail service.", no_args_is_help=True)

DEFAULT_PORTS = {Security.SSL: 993, Security.STARTTLS: 143, Security.PLAIN: 143}


class _Bars:
    """Rich progress bars: the batch (mailboxes) and the mailbox being copied (messages)."""

    def __init__(self, mailboxes: int) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=errors,
            transient=True,
        )
        self._batch = self._progress.add_task("mailboxes", total=mailboxes)
        self._mailbox: TaskID | None = None

    def __enter__(self) -> _Bars:
        self._progress.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._progress.stop()

    def mailbox_started(self, address: str, messages: int) -> None:
        self._mailbox = self._progress.add_task(visible(address).plain, total=messages)

    def copied(self, address: str, folder: str, messages: int, octets: int) -> None:
        if self._mailbox is not None:
            self._progress.advance(self._mailbox, messages)

    def mailbox_finished(self, report: MailboxReport) -> None:
        if self._mailbox is not None:
            self._progress.remove_task(self._mailbox)
            self._mailbox = None
        self._progress.advance(self._batch)
        if not report.ok:
            self._progress.console.print(
                visible(f"{report.address}: failed: {report.error}", newlines=True), markup=False
            )


class _Lines:
    """Plain progress lines, for a log or a pipe."""

    def __init__(self) -> None:
        self._done: dict[str, int] = {}
        self._total: dict[str, int] = {}

    def __enter__(self) -> _Lines:
        return self

    def __exit__(self, *_: object) -> None:
        pass

    def mailbox_started(self, address: str, messages: int) -> None:
        self._done[address], self._total[address] = 0, messages
        errors.print(visible(f"{address}: {messages} message(s) to copy"), markup=False)

    def copied(self, address: str, folder: str, messages: int, octets: int) -> None:
        self._done[address] = self._done.get(address, 0) + messages
        line = f"{address}: {self._done[address]} of {self._total.get(address, 0)} copied ({folder})"
        errors.print(visible(line), markup=False)

    def mailbox_finished(self, report: MailboxReport) -> None:
        result = "done" if report.ok else f"failed: {report.error}"
        errors.print(visible(f"{report.address}: {result}", newlines=True), markup=False)


@migrate_app.command("imap")
def migrate_imap(
    csv_file: Annotated[
        Path,
        typer.Option(
            "--csv",
            help="The batch: columns EmailAddress (Postroom mailbox), UserName, Password (on the source).",
        ),
    ],
    host: Annotated[str, typer.Option(help="The source IMAP server (the name its certificate has).")],
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Its port (default 993; 143 for starttls and plain).")
    ] = None,
    security: Annotated[
        Security, typer.Option(help="ssl: implicit TLS; starttls; plain: no TLS (passwords in clear, labs).")
    ] = Security.SSL,
    ca_file: Annotated[
        Path | None,
        typer.Option("--ca-file", help="Also trust this CA (PEM) for the source server's certificate."),
    ] = None,
    json_output: JsonOption = False,
    tenant: TenantScopeOption = None,
) -> None:
    """Copy mailboxes from an IMAP server: every folder, message, flag and internal date.

    Run it again to copy only what is new on the source (and to finish an interrupted run); switch
    the MX when the mailboxes are in sync. docs/migration.md has the steps."""
    try:
        rows = read_batch(csv_file)
    except BatchError as error:
        raise fail(str(error), 2) from None
    context = ssl.create_default_context()
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as error:
            raise fail(f"cannot read the CA file {ca_file} ({error}); give a PEM certificate", 2) from None
    if security is Security.PLAIN:
        errors.print("warning: --security plain sends the source passwords in clear", markup=False)
    scope = scope_for(tenant)
    current = node()
    server = SourceServer(host, port or DEFAULT_PORTS[security], security, context)
    watcher = _Bars(len(rows)) if errors.is_terminal and not json_output else _Lines()
    with watcher:
        report = Migration(
            database=current.database,
            blobs=current.blobs,
            directory=current.directory,
            scope=scope,
            server=server,
            max_message_size=current.settings.mx.limits.max_message_size,
            progress=watcher,
        ).run(rows)
    _summary(report, json_output)
    if report.failed_mailboxes:
        raise typer.Exit(1)


def _summary(report: BatchReport, json_output: bool) -> None:
    boxes = report.mailboxes
    totals = {
        "mailboxes": len(boxes),
        "failed_mailboxes": report.failed_mailboxes,
        "folders": sum(b.folders for b in boxes),
        "copied": sum(b.copied for b in boxes),
        "already": sum(b.already for b in boxes),
        "skipped": sum(b.skipped for b in boxes),
        "failed": sum(b.failed for b in boxes),
        "octets": sum(b.octets for b in boxes),
        "seconds": round(report.seconds, 3),
    }
    if json_output:
        return emit_json({"mailboxes": boxes, "total": totals})
    table(
        "migration",
        ["line", "mailbox", "result", "folders", "copied", "already", "skipped", "failed", "octets", "time"],
        [
            (
                b.line,
                b.address,
                "ok" if b.ok else f"failed: {b.error}",
                b.folders,
                b.copied,
                b.already,
                b.skipped,
                b.failed,
                f"{b.octets:,}",
                f"{b.seconds:.1f} s",
            )
            for b in boxes
        ]
        + [
            (
                "",
                f"{totals['mailboxes']} mailbox(es), {totals['failed_mailboxes']} failed",
                "",
                totals["folders"],
                totals["copied"],
                totals["already"],
                totals["skipped"],
                totals["failed"],
                f"{totals['octets']:,}",
                f"{report.seconds:.1f} s",
            )
        ],
    )
    for b in boxes:
        for note in b.notes:
            console.print(visible(f"{b.address}: {note}"), markup=False)
