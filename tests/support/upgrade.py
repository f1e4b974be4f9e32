"""A node's data at an older schema version, loaded into SQLite or PostgreSQL; a schema's shape, reflected.

`load_schema_2` builds the tables of schema version 2 (from the frozen module in
tests/storage/fixtures/schema_2) on an empty database, fills them with the rows a version-2 node wrote
(`rows.json`, made by `make_schema_2.py`) and copies its blobs. `shape` reflects a database's schema
(tables, columns with types and nullability, primary keys, indexes, unique constraints, foreign keys)
into plain values two databases can be compared by.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import shutil
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

from sqlalchemy import Connection, MetaData, create_engine, func, insert, inspect, select, text
from sqlalchemy.pool import NullPool

SCHEMA_2 = Path(__file__).parent.parent / "storage" / "fixtures" / "schema_2"


def _schema_2_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("postroom_schema_2", SCHEMA_2 / "schema_2.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _value(value: Any) -> Any:
    return base64.b64decode(value["base64"]) if isinstance(value, dict) else value


def load_schema_2(url: str, blob_dir: Path, *, as_version_1: bool = False) -> None:
    """The version-2 node's database at `url` and its blobs in `blob_dir`.

    `as_version_1`: without the table version 2 added (dkim_keys), stamped 1: a version-1 node."""
    metadata: MetaData = _schema_2_module().metadata
    rows: dict[str, list[dict[str, Any]]] = json.loads((SCHEMA_2 / "rows.json").read_text())
    tables = [t for t in metadata.sorted_tables if not (as_version_1 and t.name == "dkim_keys")]
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            metadata.create_all(conn, tables=tables)
            for table in tables:
                found = [{k: _value(v) for k, v in row.items()} for row in rows[table.name]]
                if table.name == "schema_version" and as_version_1:
                    found = [{"version": 1, "applied_at": 1.0}]
                if found:
                    conn.execute(insert(table), found)
                if conn.dialect.name == "postgresql" and "id" in table.c and table.c.id.primary_key:
                    sequence = conn.execute(
                        select(func.pg_get_serial_sequence(table.name, "id"))
                    ).scalar_one()
                    if sequence is not None and found:
                        conn.execute(
                            text("SELECT setval(:s, :n)"), {"s": sequence, "n": max(r["id"] for r in found)}
                        )
    finally:
        engine.dispose()
    shutil.copytree(SCHEMA_2 / "blobs", blob_dir, dirs_exist_ok=True)


def _index_definitions(conn: Connection, table: str) -> list[tuple[str, str]]:
    if conn.dialect.name == "sqlite":
        query = "SELECT name, coalesce(sql, '') FROM sqlite_master WHERE type = 'index' AND tbl_name = :t"
    else:
        query = "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = :t"
    return sorted((row[0], row[1]) for row in conn.execute(text(query), {"t": table}))


def shape(url: str) -> dict[str, dict[str, Any]]:
    """Every table's columns, keys, indexes and constraints, as comparable values."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn, warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression-based index")
            inspector = inspect(conn)
            tables = {}
            for name in sorted(inspector.get_table_names()):
                tables[name] = {
                    "columns": [
                        (c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(name)
                    ],
                    "primary key": inspector.get_pk_constraint(name)["constrained_columns"],
                    "indexes": sorted(
                        (ix["name"], tuple(ix["column_names"]), bool(ix["unique"]))
                        for ix in inspector.get_indexes(name)
                    ),
                    "unique": sorted(
                        tuple(uc["column_names"]) for uc in inspector.get_unique_constraints(name)
                    ),
                    # SQLite: whether a removed row's id may come back (AUTOINCREMENT says never).
                    "autoincrement": conn.dialect.name == "sqlite"
                    and "AUTOINCREMENT"
                    in conn.exec_driver_sql(
                        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
                    ).scalar_one(),
                    "foreign keys": sorted(
                        (
                            tuple(fk["constrained_columns"]),
                            fk["referred_table"],
                            tuple(fk["referred_columns"]),
                            fk["options"].get("ondelete"),
                        )
                        for fk in inspector.get_foreign_keys(name)
                    ),
                    # Every index by name and definition: SQLite's reflection skips expression
                    # indexes (lower(recipient)); PostgreSQL's includes them, and partial ones.
                    "index definitions": _index_definitions(conn, name),
                }
            return tables
    finally:
        engine.dispose()
