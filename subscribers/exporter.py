"""List (+ status filter) -> CSV file: email, name, status, subscribed_at, tags, then one column per attribute.

`status` is the membership's effective status for that list (a bounce or complaint anywhere wins).
Streamed (a server-side cursor on PostgreSQL) and written to a temporary file that replaces the
target only when complete, so an interrupted export never leaves half a file. Every cell a
spreadsheet would run as a formula is neutralized (csvfile.neutralize, OWASP "CSV injection");
our importer undoes that, so an export imports back unchanged.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, literal_column, text

from subscribers import store
from subscribers.csvfile import neutralize
from subscribers.errors import SubscriberError
from subscribers.models import Status, utc_text

COLUMNS = ["email", "name", "status", "subscribed_at", "tags"]


@dataclass
class ExportSummary:
    list: str
    file: str
    rows: int = 0
    columns: int = 0


def export_csv(engine: Engine, list_name: str, out: str | Path, *, status: Status | str | None = None,
               on_progress: Callable[[int, int], None] | None = None, batch: int = 10_000) -> ExportSummary:
    """Write the list's members to `out` ("-" for standard output)."""
    status = Status(status) if status else None
    with engine.connect() as conn:
        found = store.get_list(conn, list_name)
        where, params = _where(found.id, status)
        keys = _attribute_keys(conn, where, params)
        total = conn.execute(text(f"SELECT count(*) FROM memberships m JOIN subscribers s "
                                  f"ON s.id = m.subscriber_id WHERE {where}"), params).scalar_one()
        summary = ExportSummary(list_name, str(out), columns=len(COLUMNS) + len(keys))
        # Untyped text(): rows come as the driver gives them, without per-value processing; the
        # database writes the consent time's text, the same on both (models.utc_text).
        when = utc_text(literal_column("m.consent_at")).compile(dialect=conn.dialect)
        query = text(f"SELECT s.email, s.name, COALESCE(s.global_status, m.status), {when}, s.attributes, "
                     f"{_TAGS[conn.dialect.name == 'postgresql']} FROM memberships m "
                     f"JOIN subscribers s ON s.id = m.subscriber_id WHERE {where} ORDER BY s.id")
        with _target(out) as fh:
            writer = csv.writer(fh, lineterminator="\r\n")  # RFC 4180 line ends, as spreadsheets expect
            writer.writerow([neutralize(c) for c in COLUMNS + keys])
            for row in conn.execution_options(yield_per=batch).execute(query, params):
                writer.writerow(_cells(row, keys))
                summary.rows += 1
                if on_progress and summary.rows % batch == 0:
                    on_progress(summary.rows, total)
        if on_progress:
            on_progress(summary.rows, total)
    return summary


# A subscriber's tags as one cell, "a,b" in order (the import reads it back).
_TAGS = ("(SELECT group_concat(tag, ',') FROM (SELECT tag FROM subscriber_tags t WHERE t.subscriber_id = s.id "
         "ORDER BY tag))",
         "(SELECT string_agg(tag, ',' ORDER BY tag) FROM subscriber_tags t WHERE t.subscriber_id = s.id)")


def _where(list_id: int, status: Status | None) -> tuple[str, dict]:
    if status is None:
        return "m.list_id = :list_id", {"list_id": list_id}
    return ("m.list_id = :list_id AND COALESCE(s.global_status, m.status) = :status",
            {"list_id": list_id, "status": status.value})


def _attribute_keys(conn, where: str, params: dict) -> list[str]:
    """Every attribute name used on the list, found by the database (no pass over the rows here)."""
    if conn.dialect.name == "postgresql":
        sql = (f"SELECT DISTINCT jsonb_object_keys(s.attributes) FROM memberships m "
               f"JOIN subscribers s ON s.id = m.subscriber_id WHERE {where}")
    else:
        sql = (f"SELECT DISTINCT j.key FROM memberships m JOIN subscribers s ON s.id = m.subscriber_id, "
               f"json_each(s.attributes) j WHERE {where}")
    keys = sorted(k for (k,) in conn.execute(text(sql), params))
    return [k for k in keys if k.lower() not in COLUMNS]  # cannot happen from our imports; be safe


_RISKY = frozenset("=+-@\t\r'")


def _cells(row, keys: list[str]) -> list[str]:
    email, name, status, when, attrs, tags = row
    cells = [email, name or "", status, when or "", tags or ""]
    if keys:
        if isinstance(attrs, str):
            attrs = json.loads(attrs)
        cells.extend(_text(attrs.get(k)) for k in keys)
    return [neutralize(c) if c and c[0] in _RISKY else c for c in cells]


def _text(value) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


class _target:
    """A temporary file beside `out`, renamed over it on success; or stdout for "-"."""

    def __init__(self, out: str | Path):
        self.out = out

    def __enter__(self):
        if str(self.out) == "-":
            self.fh = sys.stdout
            return self.fh
        path = Path(self.out)
        if not path.parent.is_dir():
            raise SubscriberError(f"cannot write {path}: folder {path.parent} does not exist")
        fd, self.tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        self.fh = os.fdopen(fd, "w", encoding="utf-8", newline="")
        return self.fh

    def __exit__(self, exc_type, *_):
        if self.fh is sys.stdout:
            self.fh.flush()
            return
        self.fh.close()
        if exc_type is None:
            os.replace(self.tmp, self.out)
        else:
            os.unlink(self.tmp)
