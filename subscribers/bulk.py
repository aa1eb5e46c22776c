"""Rows as tuples -> one fast statement per chunk, on SQLite and on PostgreSQL.

The importer's hot path. SQLAlchemy's per-parameter processing costs more than the database
itself at a million rows (docs/decisions.md), and psycopg's text-array
dumping (`unnest(%s[])`) is pure Python, so
these helpers hand plain values straight to the driver:

- SQLite: `executemany` with `?` placeholders (sqlite3 loops in C); new subscribers (`insert_ids`)
  as one `INSERT ... SELECT ... FROM json_each(?)` per chunk, for the search index's trigger;
- PostgreSQL: COPY (psycopg's C row writer) into the table, or into a temporary staging table
  followed by one `INSERT ... SELECT ... ON CONFLICT DO NOTHING` / `UPDATE ... FROM` when the
  statement needs a conflict rule, RETURNING or a join.

Callers pass values as SQLAlchemy itself would store them (`Bulk.time` for timestamps: the column
type's own conversion, models.driver_value; JSON as text), so rows written in bulk read back
through the models.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from functools import cache

from sqlalchemy import JSON, BigInteger, Connection, Integer, Row, Table

from subscribers.models import UtcDateTime, driver_value


class Bulk:
    """Bulk statements on one connection; `table` is a Table whose name is trusted (ours)."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self.pg = conn.dialect.name == "postgresql"
        self._stages: set[str] = set()
        # a timestamp as this driver should receive it for a UtcDateTime column
        self.time = driver_value(conn.dialect)

    def insert(self, table: Table, columns: Sequence[str], rows: list[tuple], *,
               conflict: Sequence[str] | None = None, returning: Sequence[str] | None = None,
               fixed: dict | None = None) -> Sequence[Row]:
        """INSERT rows (tuples in `columns` order); ON CONFLICT (conflict) DO NOTHING when given.
        `fixed`: {column: value} shared by every row (see `_fixed`). `returning` works on
        PostgreSQL only (sqlite3's executemany cannot return rows)."""
        if not rows:
            return []
        columns, rows, values = self._fixed(columns, rows, fixed)
        cols = ", ".join(columns)
        tail = f" ON CONFLICT ({', '.join(conflict)}) DO NOTHING" if conflict else ""
        if not self.pg:
            if returning:
                raise ValueError("RETURNING with executemany needs PostgreSQL")
            sql = f"INSERT INTO {table.name} ({cols}) VALUES ({values}){tail}"
            self.conn.exec_driver_sql(sql, rows)
            return []
        if not conflict and not returning:
            self._copy(table, columns, rows)
            return []
        stage = self._staged(table, columns, rows)
        sql = f"INSERT INTO {table.name} ({cols}) SELECT {cols} FROM {stage}{tail}"
        if returning:
            sql += f" RETURNING {', '.join(returning)}"
        result = self.conn.exec_driver_sql(sql)
        found = result.fetchall() if returning else []
        self.conn.exec_driver_sql(f"TRUNCATE {stage}")
        return found

    def _fixed(self, columns: Sequence[str], rows: list[tuple], fixed: dict | None) -> tuple[list, list, str]:
        """(all columns, rows, SQLite VALUES list). SQLite: `fixed` values become SQL literals
        in the statement, not parameters: binding the same few values again on every row cost
        a large share of an import's insert time (docs/decisions.md). PostgreSQL: appended to each row
        for COPY."""
        marks = ["?"] * len(columns)
        if not fixed:
            return list(columns), rows, ", ".join(marks)
        if self.pg:
            tail = tuple(fixed.values())
            return [*columns, *fixed], [row + tail for row in rows], ""
        return [*columns, *fixed], rows, ", ".join([*marks, *map(_literal, fixed.values())])

    def insert_ids(self, table: Table, columns: Sequence[str], rows: list[tuple], *, key: str,
                   fixed: dict | None = None) -> dict:
        """INSERT ... ON CONFLICT (key) DO NOTHING; returns {key value: new id} for rows inserted.

        SQLite cannot return rows from executemany, but it gives the rows consecutive ids in
        insertion order while our transaction holds the write lock (AUTOINCREMENT: from the
        table's sequence, so the new rows hold the highest ids); that is checked at both ends,
        else the ids are looked up."""
        if not rows:
            return {}
        if self.pg:
            return {k: i for i, k in self.insert(table, columns, rows, conflict=[key], returning=["id", key],
                                                 fixed=fixed)}
        at, n = columns.index(key), len(rows)  # `fixed` columns go after: `at` holds
        width = len(columns)
        columns, rows, _ = self._fixed(columns, rows, fixed)
        # One statement for the chunk (the rows as one JSON array), not executemany's statement per
        # row: SQLite's trigram index of subscribers (0016_i24c, fed by a trigger) writes its pending
        # entries out at the end of every statement, which per row cost 5 times the whole insert.
        picked = ", ".join([f"json_extract(value, '$[{i}]')" for i in range(width)] +
                           [_literal(v) for v in (fixed or {}).values()])
        sql = (f"INSERT INTO {table.name} ({', '.join(columns)}) SELECT {picked} FROM json_each(?) WHERE true "
               f"ON CONFLICT ({key}) DO NOTHING")
        inserted = self.conn.exec_driver_sql(sql, (json.dumps(rows),)).rowcount
        if inserted == n:
            last = self.conn.exec_driver_sql(f"SELECT max(id) FROM {table.name}").scalar_one()
            ends: dict[int, str] = dict(self.conn.exec_driver_sql(
                f"SELECT id, {key} FROM {table.name} WHERE id IN (?, ?)", (last - n + 1, last)).fetchall())
            if ends.get(last - n + 1) == rows[0][at] and ends.get(last) == rows[-1][at]:
                return {row[at]: last - n + 1 + i for i, row in enumerate(rows)}
        return {k: i for i, k in self.select_in(f"SELECT id, {key} FROM {table.name} WHERE {key} {{in_}}",
                                                [row[at] for row in rows])}

    def update(self, table: Table, key: str, columns: Sequence[str], rows: list[tuple]) -> None:
        """UPDATE table SET columns WHERE key = ?; each row is (*values, key)."""
        if not rows:
            return
        if not self.pg:
            sets = ", ".join(f"{c} = ?" for c in columns)
            self.conn.exec_driver_sql(f"UPDATE {table.name} SET {sets} WHERE {key} = ?", rows)
            return
        stage = self._staged(table, [*columns, key], rows)
        sets = ", ".join(f"{c} = v.{c}" for c in columns)
        self.conn.exec_driver_sql(f"UPDATE {table.name} AS t SET {sets} FROM {stage} AS v WHERE t.{key} = v.{key}")
        self.conn.exec_driver_sql(f"TRUNCATE {stage}")

    def select_in(self, sql: str, values: Sequence, *, ints: bool = False, params: Sequence = ()) -> Sequence[Row]:
        """Run `sql`, whose placeholder `{in_}` stands for "IN (values)" and each `{param}` for one
        of `params`, in order (all before `{in_}` in the statement). On PostgreSQL the values
        travel as one newline-joined string (addresses and hashes hold no newline)."""
        if not values:
            return []
        mark = "%s" if self.pg else "?"
        if self.pg:
            cast = "::int[]" if ints else ""
            joined = "\n".join(map(str, values))
            return self.conn.exec_driver_sql(
                sql.format(in_=f"= ANY(string_to_array(%s, E'\\n'){cast})", param=mark),
                (*params, joined)).fetchall()
        in_ = ", ".join("?" * len(values))
        return self.conn.exec_driver_sql(sql.format(in_=f"IN ({in_})", param=mark),
                                         (*params, *values)).fetchall()

    # ---- PostgreSQL

    def _raw(self):
        return self.conn.connection.driver_connection  # the psycopg Connection, same transaction

    def _copy(self, table: Table, columns: Sequence[str], rows: list[tuple], name: str | None = None) -> None:
        self.copy_into(name or table.name, columns, [_copy_type(table.c[c].type) for c in columns], rows)

    def copy_into(self, name: str, columns: Sequence[str], types: Sequence[str], rows) -> None:
        """Binary COPY of an iterable of tuples into table `name` (PostgreSQL type names in
        `types`; jsonb values as JSON text): psycopg's C writer, faster than the text format
        (docs/decisions.md), and nothing to quote or escape."""
        with self._raw().cursor() as cur:
            cur.adapters.register_dumper(str, _json_text_dumper())  # used for jsonb columns only (by OID)
            with cur.copy(f"COPY {name} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(list(types))
                write = copy.write_row
                for row in rows:
                    write(row)

    def _staged(self, table: Table, columns: Sequence[str], rows: list[tuple]) -> str:
        """COPY rows into a temporary table shaped like `table`'s `columns`; returns its name."""
        digest = hashlib.sha1(",".join(columns).encode()).hexdigest()[:8]
        stage = f"stage_{table.name}_{digest}"
        if stage not in self._stages:
            self.conn.exec_driver_sql(
                f"CREATE TEMPORARY TABLE IF NOT EXISTS {stage} AS SELECT {', '.join(columns)} "
                f"FROM {table.name} WITH NO DATA")
            self.conn.exec_driver_sql(f"TRUNCATE {stage}")
            self._stages.add(stage)
        self._copy(table, columns, rows, name=stage)
        return stage


def _literal(value) -> str:
    """A value as an SQLite literal: None, int, or text (quotes doubled, SQL's escape)."""
    if value is None:
        return "NULL"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise TypeError(f"no SQL literal for {type(value).__name__}")


def _copy_type(sa_type) -> str:
    if isinstance(sa_type, UtcDateTime):
        return "timestamptz"
    if isinstance(sa_type, JSON):
        return "jsonb"
    if isinstance(sa_type, BigInteger):
        return "int8"
    if isinstance(sa_type, Integer):
        return "int4"
    return "text"  # VARCHAR and TEXT share one binary form


@cache
def _json_text_dumper():
    """Binary jsonb from JSON that is already text (jsonb's binary form: version 1, then text)."""
    from psycopg.adapt import Dumper  # PostgreSQL only: SQLite runs never load psycopg
    from psycopg.pq import Format

    class JsonTextDumper(Dumper):
        format = Format.BINARY
        oid = 3802  # jsonb

        def dump(self, obj: str) -> bytes:
            return b"\x01" + obj.encode()

    return JsonTextDumper
