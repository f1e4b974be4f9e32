"""Prepared statements for the hot path: compiled once by SQLAlchemy, run through the driver.

The spool commit and the delivery round run a handful of INSERTs per message. Through SQLAlchemy's
execution layer each costs 70-270 µs of Python; through the DBAPI cursor about 6 µs. A
`PreparedInsert` keeps SQLAlchemy's portability (the SQL and the parameter style are compiled for the
connection's dialect, so SQLite and PostgreSQL both work) and skips only the per-call machinery. It
runs inside the caller's transaction on the same DBAPI connection.

`PreparedInsert(table, columns, on_conflict=(keys, updated))` renders an upsert
(`ON CONFLICT (keys) DO UPDATE SET ...`), which both SQLite and PostgreSQL speak.
`PreparedStatement(statement)` does the same for any UPDATE or DELETE written with `bindparam`s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Table, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.expression import Executable


class PreparedInsert:
    """An INSERT (or upsert) of fixed columns, compiled per dialect on first use."""

    def __init__(
        self,
        table: Table,
        columns: Sequence[str],
        *,
        on_conflict: tuple[Sequence[str], Sequence[str]] | None = None,
    ) -> None:
        self._table = table
        self._columns = tuple(columns)
        self._on_conflict = on_conflict
        self._compiled: dict[str, tuple[str, tuple[str, ...] | None]] = {}

    def _compile(self, dialect: Dialect) -> tuple[str, tuple[str, ...] | None]:
        found = self._compiled.get(dialect.name)
        if found is None:
            if self._on_conflict is None:
                statement: Any = insert(self._table)
            else:
                keys, updated = self._on_conflict
                module: Any = postgresql if dialect.name == "postgresql" else sqlite
                statement = module.insert(self._table)
                statement = statement.on_conflict_do_update(
                    index_elements=list(keys), set_={c: statement.excluded[c] for c in updated}
                )
            compiled = statement.compile(dialect=dialect, column_keys=list(self._columns))
            order = tuple(compiled.positiontup) if compiled.positional and compiled.positiontup else None
            found = (str(compiled), order)
            self._compiled[dialect.name] = found
        return found

    def run(self, conn: Connection, rows: Sequence[Mapping[str, object]]) -> None:
        """Insert `rows` (dicts keyed by column) in the caller's transaction."""
        if rows:
            _execute_many(conn, *self._compile(conn.dialect), rows)


class PreparedStatement:
    """A SELECT, UPDATE or DELETE with named `bindparam`s, compiled per dialect on first use."""

    def __init__(self, statement: Executable) -> None:
        self._statement = statement
        self._compiled: dict[str, tuple[str, tuple[str, ...] | None]] = {}

    def _compile(self, conn: Connection) -> tuple[str, tuple[str, ...] | None]:
        found = self._compiled.get(conn.dialect.name)
        if found is None:
            compiled: Any = self._statement.compile(dialect=conn.dialect)  # type: ignore[attr-defined]
            order = tuple(compiled.positiontup) if compiled.positional and compiled.positiontup else None
            found = (str(compiled), order)
            self._compiled[conn.dialect.name] = found
        return found

    def run(self, conn: Connection, rows: Sequence[Mapping[str, object]]) -> None:
        """Execute once per row of parameters (an UPDATE or DELETE)."""
        if rows:
            _execute_many(conn, *self._compile(conn), rows)

    def fetch(self, conn: Connection, params: Mapping[str, object]) -> list[tuple[Any, ...]]:
        """Execute a SELECT with `params`; the rows as tuples."""
        sql, order = self._compile(conn)
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(sql, params if order is None else tuple(params[name] for name in order))
            return [tuple(row) for row in cursor.fetchall()]
        finally:
            cursor.close()


def _execute_many(
    conn: Connection, sql: str, order: tuple[str, ...] | None, rows: Sequence[Mapping[str, object]]
) -> None:
    """Run compiled `sql` once per row on the connection's DBAPI cursor, in its transaction.

    `order` is the positional parameter order (SQLite's qmark style); None means named parameters
    (psycopg's pyformat), which take the dicts as they are.
    """
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        if order is None:
            cursor.executemany(sql, rows)
        else:
            cursor.executemany(sql, [tuple(row[name] for name in order) for row in rows])
    finally:
        cursor.close()
