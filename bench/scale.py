"""Scale figures on PostgreSQL: RCPT lookups, trace search and the scheduler's tick, on large tables.

Three harnesses, one subcommand each, every one against its own database on the PostgreSQL server of
the machine (`postroom_bench_<kind>_<random>`, created from the maintenance database and dropped at the
end, `--keep` leaves it for a look with psql). The schema is the product's (`Database.migrate()`, so
its indexes are the ones a node has); the data is loaded server-side in large multi-row
`INSERT ... SELECT FROM generate_series` chunks (no row crosses the wire), with a rich progress bar,
then `ANALYZE`d. What is timed is the product's own functions, on its own connections:

    .venv/bin/python bench/scale.py rcpt         # 1,000,000 addresses: directory lookups, RCPT over SMTP
    .venv/bin/python bench/scale.py trace        # 1,200,000 messages, ~5,000,000 trace events
    .venv/bin/python bench/scale.py scheduler    # 10k, 100k, 1M deferred recipients, 100 due
    .venv/bin/python bench/scale.py trace --messages 100000 --samples 50  # a quicker look

- `rcpt`: `directory.lookups.find_domain` + `find_address` (what `CachedDirectory` runs on a miss:
  cache cold, so every sample goes to the database) for random existing and unknown addresses; then a
  real node (`App.serve` with `[database] url` on the loaded database) answers RCPT over SMTP
  (smtplib), reply latency of random existing (250) and unknown (550 5.4.1) recipients.
- `trace`: `TraceService.search` by recipient (exact address, `*@domain`), by Message-ID, tenant-scoped
  and operator-scoped.
- `scheduler`: the queries of one scheduler turn (`queue.leases.lease_due` with its "next due" query,
  `queue.bounce.report_failures` and `report_delays`), each in a transaction rolled back after the
  timing so every sample sees the same queue.

Each prints p50/p95/p99 (milliseconds) per measurement and, with `--explain`, the plan of the
statements that matter (EXPLAIN ANALYZE). Failure: an error drops the database (unless `--keep`) and
exits non-zero; Ctrl-C the same. Figures and plans of the last runs are in bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import secrets
import smtplib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository: tests.support

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import Connection, create_engine, event, text
from sqlalchemy.pool import NullPool

from postroom.directory.lookups import find_address, find_domain
from postroom.model.scope import OPERATOR, TenantScope
from postroom.queue.bounce import Reporter, report_delays, report_failures
from postroom.queue.leases import lease_due
from postroom.storage import Database
from postroom.trace import TraceQuery, TraceService

console = Console(width=160)
MAINTENANCE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
CHUNK = 100_000  # rows per INSERT ... SELECT
SERIES = "generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) i"  # one chunk's row numbers
DAY = 86_400.0
NOW = 1_800_000_000.0  # the benchmark's "now": fixed, so every run loads the same data


# --- the database --------------------------------------------------------------------------------
@contextlib.contextmanager
def bench_database(kind: str, maintenance_url: str, keep: bool) -> Iterator[Database]:
    """A fresh database for one harness, migrated by the product; dropped afterwards unless `keep`."""
    admin = create_engine(maintenance_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    name = f"postroom_bench_{kind}_{secrets.token_hex(4)}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    database = Database(url)
    try:
        database.migrate()
        yield database
    finally:
        database.dispose()
        if keep:
            console.print(f"kept the database [bold]{name}[/] ({url})")
        else:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def load(database: Database, steps: Sequence[tuple[str, int, str]]) -> None:
    """Run each (label, rows, INSERT ... SELECT ... FROM SERIES) in chunks of CHUNK rows, one
    transaction per chunk, with a progress bar; then ANALYZE."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        for label, rows, statement in steps:
            task = progress.add_task(label, total=rows)
            for lo in range(1, rows + 1, CHUNK):
                hi = min(lo + CHUNK - 1, rows)
                with database.read_engine.begin() as conn:
                    conn.execute(text(statement), {"lo": lo, "hi": hi})
                progress.update(task, completed=hi)
    with database.read_engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")


def reset_sequences(database: Database, tables: Sequence[str]) -> None:
    """Ids were given explicitly: move each table's sequence past them, as the product's inserts expect."""
    with database.read_engine.begin() as conn:
        for table in tables:
            conn.exec_driver_sql(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT coalesce(max(id), 0) + 1 FROM {table}), false)"
            )


# --- measuring -----------------------------------------------------------------------------------
def percentiles(samples_ms: Sequence[float]) -> tuple[float, float, float, float]:
    ordered = sorted(samples_ms)
    cuts = statistics.quantiles(ordered, n=100, method="inclusive") if len(ordered) > 1 else ordered * 99
    return cuts[49], cuts[94], cuts[98], ordered[-1]


class Report:
    """The figures of one harness: one row per measurement."""

    def __init__(self, title: str) -> None:
        self.table = Table(title=title)
        for column in ("measurement", "samples", "p50 ms", "p95 ms", "p99 ms", "max ms"):
            self.table.add_column(column, justify="left" if column == "measurement" else "right")

    def add(self, label: str, samples_ms: Sequence[float]) -> None:
        p50, p95, p99, worst = percentiles(samples_ms)
        self.table.add_row(label, str(len(samples_ms)), *(f"{v:.3f}" for v in (p50, p95, p99, worst)))
        console.print(f"  {label}: p50 {p50:.3f} ms, p95 {p95:.3f} ms, p99 {p99:.3f} ms")

    def show(self) -> None:
        console.print(self.table)


def timed(action: Callable[[], object], samples: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        action()
    result = []
    for _ in range(samples):
        started = time.perf_counter()
        action()
        result.append((time.perf_counter() - started) * 1000)
    return result


def explain(conn: Connection, label: str, statement: str, parameters: dict[str, Any] | None = None) -> None:
    plan = conn.execute(text(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {statement}"), parameters or {})
    console.print(f"[bold]EXPLAIN {label}[/]")
    for (line,) in plan:
        console.print(f"    {line}", highlight=False, markup=False)


def compiled(conn: Connection, statement: Any) -> str:
    """A SQLAlchemy statement as PostgreSQL SQL with its literals inlined (for EXPLAIN)."""
    return str(statement.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))


# --- 1. RCPT lookups -----------------------------------------------------------------------------
def rcpt(args: argparse.Namespace) -> None:
    tenants, per_tenant = args.tenants, args.domains_per_tenant
    domains = tenants * per_tenant
    mailbox_domain = domain_of("i", tenants, per_tenant)
    with bench_database("rcpt", args.maintenance_url, args.keep) as database:
        load(
            database,
            [
                (
                    "tenants",
                    tenants,
                    f"INSERT INTO tenants (id, name, created_at) SELECT i, 'tenant' || i, 0 FROM {SERIES}",
                ),
                (
                    "accepted domains",
                    domains,
                    "INSERT INTO domains (id, tenant_id, name, type, status, is_default, verification_token,"
                    " domain_key, created_at, verified_at) "
                    f"SELECT i, (i - 1) % {tenants} + 1, 'd' || i || '.bench.test', 'authoritative',"
                    f" 'verified', i <= {tenants}, 'token' || i, 'd' || i, 0, 0"
                    f" FROM {SERIES}",
                ),
                (
                    "mailboxes",
                    args.recipients,
                    "INSERT INTO recipients (id, tenant_id, kind, display_name, created_at) "
                    f"SELECT i, (i - 1) % {tenants} + 1, 'mailbox', 'User ' || i, 0"
                    f" FROM {SERIES}",
                ),
                (
                    "addresses",
                    args.recipients,
                    # mailbox i is user<i>@ one of its tenant's domains
                    "INSERT INTO addresses (id, key, address, recipient_id, domain_id, is_primary) "
                    f"SELECT i, 'user' || i || '@d' || {mailbox_domain} || '.bench.test',"
                    f" 'User' || i || '@d' || {mailbox_domain} || '.bench.test', i, {mailbox_domain}, true"
                    f" FROM {SERIES}",
                ),
            ],
        )
        reset_sequences(database, ["tenants", "domains", "recipients", "addresses"])
        rng = random.Random(9)

        def address(i: int) -> str:
            domain = (i - 1) % tenants + 1 + tenants * ((i - 1) // tenants % per_tenant)
            return f"user{i}@d{domain}.bench.test"

        existing = [address(rng.randint(1, args.recipients)) for _ in range(args.samples)]
        unknown = [
            f"nobody{rng.randint(1, 10**9)}@d{rng.randint(1, domains)}.bench.test"
            for _ in range(args.samples)
        ]
        report = Report(
            f"RCPT lookups, {args.recipients:,} addresses, {domains:,} domains, {tenants:,} tenants"
        )

        def lookups(keys: list[str]) -> list[float]:
            """find_domain + find_address per key, each on a pooled read connection (what
            CachedDirectory does on a miss)."""
            result = []
            for key in keys:
                started = time.perf_counter()
                with database.read() as conn:
                    domain = find_domain(conn, key.rpartition("@")[2])
                with database.read() as conn:
                    owner = find_address(conn, key)
                result.append((time.perf_counter() - started) * 1000)
                assert domain is not None and (owner is not None) == key.startswith("user")
            return result

        lookups(existing[:20])
        report.add("directory: domain + address, existing", lookups(existing))
        report.add("directory: domain + address, unknown", lookups(unknown))
        if args.explain:
            with database.read() as conn:
                [statement] = statements_of(conn, lambda: find_address(conn, existing[0]))
                explain(conn, "find_address", statement)
        if not args.no_smtp:
            smtp_rcpt(database, report, existing[: args.smtp_samples], unknown[: args.smtp_samples])
        report.show()


def domain_of(i: str, tenants: int, per_tenant: int) -> str:
    """The SQL of mailbox i's domain id: a domain of its own tenant."""
    return f"(({i} - 1) % {tenants} + 1 + {tenants} * ((({i} - 1) / {tenants}) % {per_tenant}))"


def statements_of(conn: Connection, action: Callable[[], object]) -> list[str]:
    """The SELECT statements `action` runs on `conn`, with their parameters inlined (for EXPLAIN)."""
    captured: list[str] = []

    def capture(_c: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, _many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            captured.append(statement % {k: _literal(v) for k, v in parameters.items()})

    event.listen(conn, "before_cursor_execute", capture)
    try:
        action()
    finally:
        event.remove(conn, "before_cursor_execute", capture)
    return captured


def smtp_rcpt(database: Database, report: Report, existing: list[str], unknown: list[str]) -> None:
    """A real node on the loaded database answers RCPT; reply latency per RCPT, cache cold (every
    address is asked once, so every lookup misses the node's directory cache)."""
    from tests.support.node import make_node, running

    from postroom.config import DatabaseSettings

    with tempfile.TemporaryDirectory(prefix="postroom-bench-") as directory:
        settings = make_node(Path(directory) / "node")
        settings = replace(settings, database=DatabaseSettings(url=database.url))
        with running(settings) as node:
            for label, keys, code in (("existing", existing, 250), ("unknown", unknown, 550)):
                latencies: list[float] = []
                for start in range(0, len(keys), 10):  # under the refused-recipient limit per session
                    with smtplib.SMTP(*node.mx, timeout=30) as client:
                        client.ehlo("bench.example")
                        client.mail("sender@bench.example")
                        for key in keys[start : start + 10]:
                            started = time.perf_counter()
                            answer = client.rcpt(key)[0]
                            latencies.append((time.perf_counter() - started) * 1000)
                            assert answer == code, (key, answer)
                report.add(f"SMTP RCPT over a real node, {label} ({code})", latencies)


# --- 2. trace search -----------------------------------------------------------------------------
def trace(args: argparse.Namespace) -> None:
    messages, tenants = args.messages, args.tenants
    # Every 5th message has a second recipient (in another tenant): ~1.2 recipients a message;
    # 4 events per message and recipient: Receive, Resolve, Deliver for each, + one Receive.
    seconds = 30 * DAY
    with bench_database("trace", args.maintenance_url, args.keep) as database:
        recipient_sql = (
            "'user' || (i * 7919 % 1000003) || '@d' || ((i + {shift}) % {tenants} + 1) || '.bench.test'"
        )
        tenant_sql = "((i + {shift}) % {tenants} + 1)"
        steps = [
            (
                "trace messages",
                messages,
                "INSERT INTO trace_messages (id, message_id_header, sender, subject, size, client_ip,"
                " received_at) SELECT 'msg' || i, '<' || i || '.' || (i * 31 % 997) || '@sender.example>',"
                " 'sender' || (i % 5000) || '@partner' || (i % 300) || '.example', 'Subject ' || i, 4096,"
                f" '192.0.2.' || (i % 250), {NOW} - {seconds} + i * {seconds / messages}"
                f" FROM {SERIES}",
            ),
        ]
        for shift, every in ((0, 1), (1, 5)):
            recipient = recipient_sql.format(shift=shift, tenants=tenants)
            tenant = tenant_sql.format(shift=shift, tenants=tenants)
            where = "" if every == 1 else f" WHERE i % {every} = 0"
            steps.append(
                (
                    f"trace recipients ({'first' if shift == 0 else 'second, every 5th message'})",
                    messages,
                    "INSERT INTO trace_recipients (message_id, tenant_id, recipient, resolved, status,"
                    f" updated_at) SELECT 'msg' || i, {tenant}, {recipient}, lower({recipient}), 'delivered',"
                    f" {NOW} FROM {SERIES}{where}",
                )
            )
            for event in ("Receive", "Resolve", "Deliver", "Receive"):
                if event == "Receive" and shift == 1:
                    continue
                steps.append(
                    (
                        f"trace events: {event}" + (" (second recipients)" if shift else ""),
                        messages,
                        "INSERT INTO trace_events (message_id, tenant_id, at, event, recipient, detail)"
                        f" SELECT 'msg' || i, {tenant}, {NOW}, '{event}', {recipient}, '{{}}'"
                        f" FROM {SERIES}{where}",
                    )
                )
        load(database, steps)
        with database.read() as conn:
            counts = {
                table: conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
                for table in ("trace_messages", "trace_recipients", "trace_events")
            }
        console.print(f"loaded {counts}")
        service = TraceService(database)
        rng = random.Random(9)
        picks = [rng.randint(1, messages) for _ in range(args.samples)]

        def recipient_of(i: int) -> str:
            return f"user{i * 7919 % 1000003}@d{i % tenants + 1}.bench.test"

        def tenant_of(i: int) -> int:
            return i % tenants + 1

        def header_of(i: int) -> str:
            return f"<{i}.{i * 31 % 997}@sender.example>"

        report = Report(
            f"Trace search, {counts['trace_messages']:,} messages, {counts['trace_events']:,} events,"
            f" {tenants:,} tenants"
        )
        cases: list[tuple[str, Callable[[int], tuple[TraceQuery, Any]]]] = [
            ("by recipient (exact), operator", lambda i: (TraceQuery(recipient=recipient_of(i)), OPERATOR)),
            (
                "by recipient (exact, other case), tenant",
                lambda i: (TraceQuery(recipient=recipient_of(i).upper()), TenantScope(tenant_of(i))),
            ),
            (
                "by recipient (*@domain), tenant",
                lambda i: (
                    TraceQuery(recipient="*@" + recipient_of(i).partition("@")[2], limit=100),
                    TenantScope(tenant_of(i)),
                ),
            ),
            (
                "by recipient (*@domain), operator",
                lambda i: (
                    TraceQuery(recipient="*@" + recipient_of(i).partition("@")[2], limit=100),
                    OPERATOR,
                ),
            ),
            ("by Message-ID, operator", lambda i: (TraceQuery(message_id_header=header_of(i)), OPERATOR)),
            (
                "by Message-ID (no brackets), tenant",
                lambda i: (TraceQuery(message_id_header=header_of(i).strip("<>")), TenantScope(tenant_of(i))),
            ),
        ]
        for label, case in cases:
            samples = []
            for i in picks:
                query, scope = case(i)
                started = time.perf_counter()
                rows = service.search(query, scope)
                samples.append((time.perf_counter() - started) * 1000)
                assert any(row.message_id == f"msg{i}" for row in rows) or "domain" in label, (label, i)
            report.add(label, samples)
        if args.explain:
            with database.read() as conn:
                explain(
                    conn,
                    "by recipient (exact), operator",
                    _search_sql(conn, TraceQuery(recipient=recipient_of(picks[0])), OPERATOR),
                )
                wildcard = "*@" + recipient_of(picks[0]).partition("@")[2]
                for scope in (TenantScope(tenant_of(picks[0])), OPERATOR):
                    explain(
                        conn,
                        f"by recipient ({wildcard}), {scope}",
                        _search_sql(conn, TraceQuery(recipient=wildcard, limit=100), scope),
                    )
                explain(
                    conn,
                    "by Message-ID, tenant",
                    _search_sql(conn, TraceQuery(message_id_header=header_of(picks[0])), TenantScope(1)),
                )
        report.show()


def _search_sql(conn: Connection, query: TraceQuery, scope: Any) -> str:
    """The statement TraceService.search runs for `query`, captured from the product itself."""
    service = TraceService(_Borrowed(conn))  # type: ignore[arg-type]
    [statement] = statements_of(conn, lambda: service.search(query, scope))
    return statement


def _literal(value: Any) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, list | tuple):
        return "ARRAY[" + ", ".join(_literal(v) for v in value) + "]"
    return str(value)


class _Borrowed:
    """A stand-in Database whose read() lends one open connection (to capture a statement)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self.is_sqlite = conn.dialect.name == "sqlite"

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        yield self._conn


# --- 3. the scheduler's turn ---------------------------------------------------------------------
def _refuse(*_: object) -> Any:
    raise AssertionError("the benchmark's queue has nothing to report")


def _no_reports() -> Reporter:
    """The DSN rounds' reporter: the loaded queue has nothing to report, so it is never called."""
    return Reporter("bench.example", _refuse, _refuse, _refuse)


def scheduler(args: argparse.Namespace) -> None:
    report = Report(f"Scheduler turn, {args.due} due")
    for deferred in args.sizes:
        with bench_database("queue", args.maintenance_url, args.keep) as database:
            # One message per 4 recipients, received over the last 2 days (`message_expiration`), one
            # a minute round the clock; rows received more than 4 h ago (`delay_notification`) were
            # told of their delay already. Deferred rows: next attempt within the next day; `due` rows
            # are due now. All remote.
            rows = deferred + args.due
            load(
                database,
                [
                    (
                        "spool messages",
                        (rows + 3) // 4,
                        "INSERT INTO spool_messages (id, sender, blob_id, prefix, size, received_at,"
                        " from_header, subject, date_header, message_id_header)"
                        " SELECT 'msg' || i, 'sender@bench.example', md5(i::text), ''::bytea, 4096,"
                        f" {NOW} - (i % 2880) * 60,"
                        f" '', 'Subject ' || i, '', '<' || i || '@bench.example>' FROM {SERIES}",
                    ),
                    (
                        f"queue recipients ({deferred:,} deferred, {args.due} due)",
                        rows,
                        "INSERT INTO queue_recipients (id, message_id, tenant_id, recipient,"
                        " original_recipient, route, state, attempts, next_attempt_at, destination,"
                        " expires_at, delay_notified, last_reply, also_settles, received_at)"
                        " SELECT i, 'msg' || ((i + 3) / 4), i % 100 + 1, 'rcpt' || i || '@remote.example',"
                        " 'rcpt' || i || '@remote.example', 'remote', 'deferred', 1,"
                        f" CASE WHEN i % {max(rows // args.due, 1)} = 0 THEN {NOW} - 60"
                        f" ELSE {NOW} + 60 + i % {int(DAY)} END, 'remote.example', {NOW} + 4 * {DAY},"
                        f" ((i + 3) / 4) % 2880 * 60 >= 4 * 3600, '451 4.3.0 try later', '',"
                        f" {NOW} - ((i + 3) / 4) % 2880 * 60 FROM {SERIES}",
                    ),
                ],
            )
            reset_sequences(database, ["queue_recipients"])

            def lease() -> int:
                with database.write_engine.connect() as conn, conn.begin() as transaction:
                    taken = lease_due(conn, token="bench/1", now=NOW, lease_seconds=300, limit=256)
                    transaction.rollback()
                assert len(taken.recipients) == args.due, len(taken.recipients)
                return len(taken.recipients)

            def dsn_rounds() -> None:
                with database.write_engine.connect() as conn, conn.begin() as transaction:
                    found = report_failures(conn, NOW, _no_reports())
                    found.extend(report_delays(conn, NOW, _no_reports(), 4 * 3600))
                    transaction.rollback()
                assert not found.events

            report.add(f"{deferred:>9,} deferred: lease_due + next due", timed(lease, args.samples))
            report.add(
                f"{deferred:>9,} deferred: DSN rounds (failed, delayed)", timed(dsn_rounds, args.samples)
            )
            if args.explain:
                _explain_turn(database)
    report.show()


def _explain_turn(database: Database) -> None:
    """The plans of a turn's statements, captured from the product's functions."""

    def turn(conn: Connection) -> None:
        lease_due(conn, token="bench/1", now=NOW, lease_seconds=300, limit=256)
        report_failures(conn, NOW, _no_reports())
        report_delays(conn, NOW, _no_reports(), 4 * 3600)

    with database.write_engine.connect() as conn, conn.begin() as transaction:
        captured = statements_of(conn, lambda: turn(conn))
        transaction.rollback()
    with database.read() as conn:
        for number, statement in enumerate(captured, 1):
            explain(conn, f"turn statement {number}", statement)


# --- the command ---------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--maintenance-url", default=MAINTENANCE_URL, help="where CREATE DATABASE runs")
    common.add_argument("--keep", action="store_true", help="leave the database for a look with psql")
    common.add_argument("--explain", action="store_true", help="print EXPLAIN ANALYZE of the key statements")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", required=True)
    rcpt_parser = commands.add_parser("rcpt", parents=[common], help="RCPT lookups over 1,000,000 addresses")
    rcpt_parser.add_argument("--recipients", type=int, default=1_000_000)
    rcpt_parser.add_argument("--tenants", type=int, default=2_000)
    rcpt_parser.add_argument("--domains-per-tenant", type=int, default=3)
    rcpt_parser.add_argument("--samples", type=int, default=2000, help="lookups per measurement")
    rcpt_parser.add_argument("--smtp-samples", type=int, default=1000, help="RCPTs over SMTP, each kind")
    rcpt_parser.add_argument("--no-smtp", action="store_true", help="skip the real node")
    trace_parser = commands.add_parser("trace", parents=[common], help="trace search over ~5,000,000 events")
    trace_parser.add_argument("--messages", type=int, default=1_200_000)
    trace_parser.add_argument("--tenants", type=int, default=1_000)
    trace_parser.add_argument("--samples", type=int, default=200, help="searches per measurement")
    scheduler_parser = commands.add_parser(
        "scheduler", parents=[common], help="a scheduler turn with 10k, 100k, 1M deferred"
    )
    scheduler_parser.add_argument(
        "--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000], help="deferred rows, per run"
    )
    scheduler_parser.add_argument("--due", type=int, default=100)
    scheduler_parser.add_argument("--samples", type=int, default=50, help="turns timed per size")
    args = parser.parse_args(argv)
    {"rcpt": rcpt, "trace": trace, "scheduler": scheduler}[args.command](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
