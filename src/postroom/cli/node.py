"""`postroom init`, `check-config` and `serve`: create a node, check its configuration, run it."""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer

from postroom.app import App, InitOptions, Listening, SetupError, StartupError, check, init_node
from postroom.app.workers import Supervisor, WorkersFailedError, run_worker
from postroom.cli.context import JsonOption, settings
from postroom.cli.output import console, emit_json, fail, fields
from postroom.config import ConfigError, ListenAddress, Settings

_DEFAULTS = Settings(source=Path("postroom.toml"))


def _listen_help(what: str, default: tuple[ListenAddress, ...]) -> str:
    return f"HOST:PORT of {what} (default {', '.join(map(str, default))})."


# --- node -----------------------------------------------------------------------------------------
def init(
    directory: Annotated[Path, typer.Argument(help="Where to put postroom.toml and the data.")],
    service_domain: Annotated[
        str, typer.Option(help="The service's domain; tenants get NAME.<domain>.")
    ] = _DEFAULTS.service.domain,
    hostname: Annotated[
        str | None, typer.Option(help="This node's host name (default mx.<service domain>).")
    ] = None,
    mx_listen: Annotated[
        str | None, typer.Option(help=_listen_help("the MX endpoint", _DEFAULTS.mx.listen))
    ] = None,
    submission_listen: Annotated[
        str | None, typer.Option(help=_listen_help("message submission", _DEFAULTS.submission.listen))
    ] = None,
    submission_tls_listen: Annotated[
        str | None,
        typer.Option(help=_listen_help("submission over implicit TLS", _DEFAULTS.submission.tls_listen)),
    ] = None,
    imap_listen: Annotated[
        str | None, typer.Option(help=_listen_help("IMAP with STARTTLS", _DEFAULTS.imap.listen))
    ] = None,
    imap_tls_listen: Annotated[
        str | None, typer.Option(help=_listen_help("IMAP over implicit TLS", _DEFAULTS.imap.tls_listen))
    ] = None,
    admin_listen: Annotated[
        str | None, typer.Option(help=_listen_help("the admin listener", _DEFAULTS.admin.listen))
    ] = None,
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
        submission_tls_listen=submission_tls_listen,
        imap_listen=imap_listen,
        imap_tls_listen=imap_tls_listen,
        admin_listen=admin_listen,
        nameservers=tuple(nameserver or ()),
    )
    try:
        created = init_node(directory, options)
    except (SetupError, ConfigError, StartupError) as error:
        raise fail(str(error), 2) from None
    config = created.source
    # Name the command as this user can run it: bare `postroom` only when it is on PATH.
    program = "postroom" if shutil.which("postroom") == str(Path(sys.argv[0]).resolve()) else sys.argv[0]
    console.print(f"Created {config}\n", markup=False)
    steps = [
        "Next steps:",
        f"  1. Start the node:        {program} -c {config} serve",
        f"  2. Add an organization:   {program} -c {config} tenant add contoso",
        f"  3. Add its domain:        {program} -c {config} domain add contoso.com --tenant contoso",
        "  4. Prove ownership:       publish the TXT record that "
        f"`{program} -c {config} domain show contoso.com` prints,",
        f"                            then `{program} -c {config} domain verify contoso.com`",
        "                            (a lab without public DNS: `domain add ... --verified` skips the proof)",
        f"  5. Create mailboxes:      {program} -c {config} mailbox add alice@contoso.com --name 'Alice'",
        f"  6. Publish DNS records:   {program} -c {config} domain records contoso.com --zone"
        " (MX, SPF, DKIM, DMARC, ...)",
        f"                            then `{program} -c {config} domain check contoso.com`",
    ]
    for line in steps:
        console.print(line, markup=False)


def check_config(json_output: JsonOption = False) -> None:
    """Check the configuration file and what it points at (data directory, TLS files, database)."""
    loaded = settings()
    try:
        check(loaded)
    except StartupError as error:
        raise fail(str(error), 2) from None
    if json_output:
        return emit_json(loaded)
    console.print(f"{loaded.source}: OK", markup=False)
    fields(
        [
            ("service domain", loaded.service.domain),
            ("host name", loaded.service.hostname),
            ("data directory", loaded.data_dir),
            ("database", "SQLite (embedded)" if not loaded.database.url else "external, answering"),
            ("TLS certificate", loaded.tls.certificate),
            ("MX listens on", ", ".join(map(str, loaded.mx.listen))),
            ("admin listens on", ", ".join(map(str, loaded.admin.listen)) or "-"),
            ("DNS servers", ", ".join(map(str, loaded.dns.nameservers)) or "the system's"),
        ]
    )


def serve(
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=1,
            help="Worker processes, each serving every listener (default: \\[node] workers, where "
            "0 means one per core). 1 serves in this process, without a supervisor.",
        ),
    ] = None,
    worker: Annotated[int | None, typer.Option("--worker", hidden=True, min=1)] = None,
) -> None:
    """Run every listener until SIGTERM or SIGINT, then drain and stop."""
    loaded = settings()
    label = f"[worker {worker}]" if worker is not None else ""
    logging.basicConfig(
        level=loaded.log_level.upper(),
        format=f"%(asctime)s %(levelname)s %(name)s{label}: %(message)s",
        stream=sys.stderr,
    )
    # httpx logs every request at info: with Rspamd as the spam engine, a second line per message
    # (the mail log has its own); its warnings and errors still show.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))
    if worker is not None:
        try:
            run_worker(loaded, worker)
        except StartupError as error:
            raise fail(str(error), 2) from None
        return

    def ready(listening: list[Listening]) -> None:
        for item in listening:
            console.print(f"{item.name:12} {item.protocol:6} {item.address}", markup=False)
        console.print(f"serving{served_by}; Ctrl-C or SIGTERM stops after draining", markup=False)

    count = workers if workers is not None else loaded.worker_count
    served_by = f" with {count} worker processes" if count > 1 else ""
    if count > 1:
        try:
            Supervisor(loaded, count).run(ready)
        except StartupError as error:
            raise fail(str(error), 2) from None
        except WorkersFailedError as error:
            raise fail(str(error), 1) from None
        console.print("stopped")
        return
    try:
        running = App.open(loaded)
    except StartupError as error:
        raise fail(str(error), 2) from None
    try:
        running.run(ready)
    except StartupError as error:
        raise fail(str(error), 2) from None
    finally:
        running.close()
    console.print("stopped")


def register(app: typer.Typer) -> None:
    """Add the node commands to the root `postroom` command."""
    app.command()(init)
    app.command("check-config")(check_config)
    app.command()(serve)
