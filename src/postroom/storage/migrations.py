"""Schema migrations: the ordered steps that bring an existing database up to `SCHEMA_VERSION`.

`STEPS[n]` upgrades a database at schema version n - 1 to version n. `Database.migrate()` creates a
fresh database from the current metadata (`create_all`) and stamps it `SCHEMA_VERSION`; on an
existing one at version k it runs steps k + 1 .. `SCHEMA_VERSION` in order, each in its own
transaction together with the `schema_version` row that records it, so a failed step leaves the
database at the last version that completed and the next start resumes there. A database newer than
the code is refused (`SchemaTooNewError`), never written. Each step is logged when it starts and ends,
and long work inside a step reports progress with `Ops.progress`.

Why a table of steps and not Alembic: the schema is one SQLAlchemy Core metadata and the steps are few
and small (add a column, create a table or an index, now and then fill rows). A step here is a plain
function of the connection, run by the same code on SQLite and PostgreSQL, with no script directory,
`env.py`, revision graph or second version table to keep in step with `schema_version`. Alembic's
autogenerate would still need a human to check each script, and its SQLite batch mode (copy the table)
is available to a step here by writing that copy out when a step ever needs it.

Writing a step (when you change `schema.py`):

1. Bump `SCHEMA_VERSION` in `schema.py` (with a comment naming what the version adds).
2. Write `def _n_what(ops: Ops) -> None` below and register it as `STEPS[n]`. Use the `Ops` helpers:
   `ops.create_table(schema.some_table)`, `ops.add_column("table", Column(...))`,
   `ops.create_index(schema.some_index)`; `ops.conn` for anything else (data: update rows in batches
   and call `ops.progress`). The helpers skip what already exists, which is what makes it safe to
   create a table from its *current* definition in step n while a later step adds a column to it.
3. SQLite's ALTER TABLE can only add columns (and rename): a new NOT NULL column needs
   `server_default` for the rows already there (`add_column` refuses it otherwise); a new unique rule
   goes in as a unique `Index` in `schema.py` (an index can be created later, a constraint cannot).
   Changing or dropping a column means copying the table: create the new one, copy, drop, rename
   (`never_reuse_ids` does exactly that to make a table AUTOINCREMENT). On SQLite every step runs with
   foreign keys off (they cannot change inside a transaction, and dropping the copied table would
   cascade) and `PRAGMA foreign_key_check` must find nothing before the step commits.
4. `tests/storage/test_migrations.py` upgrades a database made by schema 2, with mail in it, and
   requires the result to equal a freshly created schema: it fails until the step is right.

Failure: a step that raises rolls back its own transaction and `migrate()` raises; the database
stays at the previous version. A missing step (a version bump without one) is refused before any
step runs, naming the version.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    false,
    inspect,
    select,
    true,
    update,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import CreateColumn, CreateTable

from postroom.model.address import destination_of
from postroom.storage import schema

log = logging.getLogger(__name__)

_PROGRESS_SECONDS = 5.0  # long work reports at most this often


class MigrationError(RuntimeError):
    """The database cannot be brought to this code's schema version."""


class Ops:
    """What a step can do to the database, on SQLite and PostgreSQL alike."""

    def __init__(self, conn: Connection, version: int) -> None:
        self.conn = conn
        self.version = version
        self._reported = time.monotonic()

    def _has_table(self, name: str) -> bool:
        return inspect(self.conn).has_table(name)

    def create_table(self, table: Table) -> None:
        """Create `table` with its indexes, as `schema.py` defines it now; nothing if it exists."""
        if not self._has_table(table.name):
            table.create(self.conn)

    def add_column(self, table: str, column: Column[object]) -> None:
        """ALTER TABLE ... ADD COLUMN; nothing if the column exists.

        A NOT NULL column needs `server_default`: it is what the rows already there get."""
        if column.name in {c["name"] for c in inspect(self.conn).get_columns(table)}:
            return
        if not column.nullable and column.server_default is None:
            raise MigrationError(
                f"step {self.version}: NOT NULL column {table}.{column.name} needs a server_default "
                "for the rows already in the table"
            )
        ddl = CreateColumn(column).compile(dialect=self.conn.dialect)
        preparer = self.conn.dialect.identifier_preparer
        self.conn.exec_driver_sql(f"ALTER TABLE {preparer.quote(table)} ADD COLUMN {ddl}")

    def create_index(self, index: Index) -> None:
        """Create `index` (of a table in the metadata); nothing if an index of that name exists."""
        table = index.table
        assert table is not None, "an index of a table in schema.py"
        if self.conn.dialect.name == "sqlite":  # its reflection skips expression indexes: ask by name
            exists = (
                self.conn.exec_driver_sql(
                    "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?", (index.name,)
                ).first()
                is not None
            )
        else:
            exists = index.name in {ix["name"] for ix in inspect(self.conn).get_indexes(table.name)}
        if not exists:
            index.create(self.conn)

    def never_reuse_ids(self, table: Table) -> None:
        """SQLite: copy `table` into a new one declared AUTOINCREMENT, so the id of a removed row is never
        handed out again (PostgreSQL's sequences never reuse one: nothing to do). Needs the step to
        run with SQLite's foreign keys off (`Database.migrate` does), or the DROP would cascade."""
        if self.conn.dialect.name != "sqlite":
            return
        created = self.conn.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table.name,)
        ).scalar_one()
        if "AUTOINCREMENT" in created.upper():
            return
        preparer = self.conn.dialect.identifier_preparer
        name, staging = preparer.quote(table.name), preparer.quote(f"_upgrade_{table.name}")
        ddl = str(CreateTable(table).compile(dialect=self.conn.dialect)).strip()
        prefix = f"CREATE TABLE {name} ("
        assert ddl.startswith(prefix), ddl
        self.conn.exec_driver_sql(f"CREATE TABLE {staging} (" + ddl[len(prefix) :])
        # The table as schema.py has it now may have columns a later step adds: copy those that exist.
        existing = {column["name"] for column in inspect(self.conn).get_columns(table.name)}
        columns = ", ".join(
            preparer.quote(column.name) for column in table.columns if column.name in existing
        )
        self.conn.exec_driver_sql(f"INSERT INTO {staging} ({columns}) SELECT {columns} FROM {name}")
        self.conn.exec_driver_sql(f"DROP TABLE {name}")
        self.conn.exec_driver_sql(f"ALTER TABLE {staging} RENAME TO {name}")
        for index in table.indexes:
            index.create(self.conn)

    def progress(self, what: str, done: int, total: int) -> None:
        """Log how far long work inside the step is (at most every few seconds, and at the end)."""
        now = time.monotonic()
        if done >= total or now - self._reported >= _PROGRESS_SECONDS:
            self._reported = now
            log.info("schema step %d: %s %d/%d", self.version, what, done, total)


Step = Callable[[Ops], None]


def _2_dkim_keys(ops: Ops) -> None:
    """DKIM key pairs of the hosted domains."""
    ops.create_table(schema.dkim_keys)


def _3_tenant_isolation(ops: Ops) -> None:
    """Ids never reused (SQLite AUTOINCREMENT), the directory change log, organization settings, group
    delivery restrictions, and the address a trace row resolved to."""
    for table in (schema.tenants, schema.domains, schema.recipients, schema.folders):
        ops.never_reuse_ids(table)
    ops.create_table(schema.directory_changes)
    ops.create_table(schema.organization_settings)
    ops.create_table(schema.group_delivery_restrictions)
    ops.add_column("trace_recipients", Column("resolved", String(320), nullable=False, server_default=""))


def _4_sending(ops: Ops) -> None:
    """Sending: submission settings and send-as, sender counters and restrictions, remote domains,
    mailbox forwarding, the organization's external postmaster and forwarding policy, the outbound
    queue's columns, and the retirement time of a rotated DKIM key."""
    for table in (
        schema.tenant_sending,
        schema.mailbox_sending,
        schema.send_as_grants,
        schema.sender_counters,
        schema.restricted_senders,
        schema.remote_domains,
        schema.mailbox_forwarding,
    ):
        ops.create_table(table)
    ops.add_column("organization_settings", Column("external_postmaster", String(320)))
    ops.add_column("organization_settings", Column("auto_forward", String(20)))
    queue = "queue_recipients"
    ops.add_column(queue, Column("destination", String(255), nullable=False, server_default=""))
    ops.add_column(queue, Column("envelope_sender", String(320)))
    ops.add_column(queue, Column("lease_owner", String(120)))
    ops.add_column(queue, Column("expires_at", Float))
    ops.add_column(queue, Column("delay_notified", Boolean, nullable=False, server_default=false()))
    ops.add_column(queue, Column("remote_mta", String(255), nullable=False, server_default=""))
    ops.add_column(queue, Column("last_attempt_at", Float))
    ops.create_index(next(ix for ix in schema.queue_recipients.indexes if ix.name == "ix_queue_destination"))
    _fill_destinations(ops)
    ops.add_column("dkim_keys", Column("retired_at", Float))


def _fill_destinations(ops: Ops) -> None:
    """Rows queued by schema 3 had no destination: it is their recipient's domain (ASCII, lower case)."""
    q = schema.queue_recipients
    rows = ops.conn.execute(select(q.c.id, q.c.recipient).where(q.c.destination == "")).all()
    for done, (row_id, recipient) in enumerate(rows, 1):
        ops.conn.execute(update(q).where(q.c.id == row_id).values(destination=destination_of(recipient)))
        if done % 1000 == 0 or done == len(rows):
            ops.progress("queue destinations", done, len(rows))


def _5_scale_out(ops: Ops) -> None:
    """Scale-out: the node registry (heartbeats of every serving process); the database blob store;
    the spool's receipt index; indexes for trace search and the scheduler's turn at scale."""
    ops.create_table(schema.nodes)
    ops.create_table(schema.blobs)
    ops.create_table(schema.blob_chunks)
    ops.create_index(_index(schema.spool_messages, "ix_spool_received"))
    ops.add_column("queue_recipients", Column("received_at", Float, nullable=False, server_default="0"))
    q, m = schema.queue_recipients, schema.spool_messages
    ops.conn.execute(
        update(q).values(
            received_at=select(m.c.received_at).where(m.c.id == q.c.message_id).scalar_subquery()
        )
    )
    for index in (
        "ix_queue_leased",
        "ix_queue_delay_unnotified",
    ):
        ops.create_index(_index(schema.queue_recipients, index))
    ops.create_index(_index(schema.trace_messages, "ix_trace_messages_message_id_header"))
    for index in ("ix_trace_recipients_recipient_lower", "ix_trace_recipients_resolved_lower"):
        ops.create_index(_index(schema.trace_recipients, index))


def _6_protection(ops: Ops) -> None:
    """Protection: tenants' policies, mailboxes' safe and blocked senders, the quarantine."""
    for table in (
        schema.protection_policies,
        schema.mailbox_sender_lists,
        schema.quarantine,
        schema.quarantine_recipients,
    ):
        ops.create_table(table)
    ops.add_column("queue_recipients", Column("headers", LargeBinary, nullable=False, server_default=""))
    ops.add_column("sender_counters", Column("spam", Integer, nullable=False, server_default="0"))


def _7_connectors(ops: Ops) -> None:
    """Connectors: inbound and outbound connectors, validation history, a tenant's scenario; the
    outbound connector a queued recipient leaves by."""
    for table in (
        schema.inbound_connectors,
        schema.outbound_connectors,
        schema.connector_validations,
        schema.tenant_scenarios,
    ):
        ops.create_table(table)
    ops.add_column("queue_recipients", Column("connector_id", Integer))


def _8_api_tokens(ops: Ops) -> None:
    """The admin API: tenant administrators' bearer tokens."""
    ops.create_table(schema.api_tokens)


def _9_mailbox_access(ops: Ops) -> None:
    """IMAP and migration: folders' special use, subscription and modseq; messages' modseq and structure
    cache; a mailbox's quota; the migration's record. The standard folders get their special use."""
    ops.add_column("recipients", Column("quota_bytes", BigInteger))
    ops.add_column("folders", Column("special_use", String(20), nullable=False, server_default=""))
    ops.add_column("folders", Column("subscribed", Boolean, nullable=False, server_default=true()))
    ops.add_column("folders", Column("highestmodseq", BigInteger, nullable=False, server_default="1"))
    ops.add_column("messages", Column("modseq", BigInteger, nullable=False, server_default="1"))
    ops.add_column("messages", Column("envelope", LargeBinary))
    ops.add_column("messages", Column("bodystructure", LargeBinary))
    ops.add_column("messages", Column("search_headers", Text))
    ops.create_index(_index(schema.messages, "ix_messages_folder_modseq"))
    ops.create_index(_index(schema.messages, "ix_messages_folder_flags"))
    ops.create_table(schema.migrated_messages)
    ops.create_table(schema.mailbox_uidvalidity)
    for name in ("Sent", "Drafts", "Junk", "Trash", "Archive"):
        ops.conn.execute(
            update(schema.folders)
            .where((schema.folders.c.name == name) & (schema.folders.c.special_use == ""))
            .values(special_use="\\" + name)
        )


def _index(table: Table, name: str) -> Index:
    return next(index for index in table.indexes if index.name == name)


# PostgreSQL only: the indexes of trace search by an address suffix (`*@contoso.com`): the reversed,
# lower-cased address, so the suffix becomes a prefix that a btree serves (`text_pattern_ops`: any
# collation). Not in the metadata: SQLite has no reverse() (there such a search reads the tenant's
# rows, or scans for the operator). pg_trgm GIN indexes were measured and not kept: every address
# shares the trigrams of its domain's tail, so a suffix search read most of both indexes (330 ms over
# 1.4 M rows, bench/README.md), and they cost a GIN update on every trace row written.
SUFFIX_INDEXES = {
    "ix_trace_recipients_recipient_reversed": ("trace_recipients", "recipient"),
    "ix_trace_recipients_resolved_reversed": ("trace_recipients", "resolved"),
}


def create_suffix_indexes(conn: Connection) -> bool:
    """Create `SUFFIX_INDEXES` on PostgreSQL (nothing on SQLite), in a savepoint of the caller's
    transaction; True when they are in place. If another node creates them at the same moment and
    this one loses the race, nothing fails: the log says so and the next start looks again."""
    if conn.dialect.name != "postgresql":
        return False
    try:
        with conn.begin_nested():
            for name, (table, column) in SUFFIX_INDEXES.items():
                key = f"reverse(lower({column})) text_pattern_ops"
                conn.exec_driver_sql(f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({key})")
    except DBAPIError as error:
        log.warning(
            "the suffix indexes of trace search were not created (%s): a search by *@domain scans the "
            "trace rows until the next start creates them",
            str(getattr(error, "orig", error)).strip().splitlines()[0],
        )
        return False
    return True


STEPS: Mapping[int, Step] = {
    2: _2_dkim_keys,
    3: _3_tenant_isolation,
    4: _4_sending,
    5: _5_scale_out,
    6: _6_protection,
    7: _7_connectors,
    8: _8_api_tokens,
    9: _9_mailbox_access,
}

FIRST_VERSION = 1  # the oldest schema an upgrade starts from


def steps_from(found: int, target: int = schema.SCHEMA_VERSION) -> list[tuple[int, Step]]:
    """The steps that take a database at `found` to `target`, in order; refuses a gap."""
    if found < FIRST_VERSION:
        raise MigrationError(f"the database is at schema version {found}, older than any Postroom release")
    missing = [version for version in range(found + 1, target + 1) if version not in STEPS]
    if missing:
        raise MigrationError(f"no upgrade step to schema version {missing[0]}: write one in migrations.py")
    return [(version, STEPS[version]) for version in range(found + 1, target + 1)]
