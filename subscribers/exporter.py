"""List (+ status and tags) or a selection -> CSV file: email, name, status, subscribed_at, tags,
then one column per attribute.

With a list, `status` is the membership's effective status for that list (a bounce or complaint
anywhere wins) and `subscribed_at` its consent time. Without one (`export_selection`: the admin's
/admin/subscribers.csv, `mailer subscribers export --tag T` without --list), each subscriber is one
row: `status` is the status the view asked for, or else the one that matters most (suppressed
everywhere; else active on some list; else unconfirmed; else unsubscribed; empty when on no list),
and `subscribed_at` the earliest consent of their memberships.
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
from typing import Any

from sqlalchemy import Engine, case, exists, func, literal, literal_column, select, text

from subscribers import store
from subscribers.csvfile import neutralize
from subscribers.errors import SubscriberError
from subscribers.models import Status, memberships, subscribers, utc_text
from subscribers.selection import Selection

COLUMNS = ["email", "name", "status", "subscribed_at", "tags"]


@dataclass
class ExportSummary:
    list: str
    file: str
    rows: int = 0
    columns: int = 0


def export_csv(engine: Engine, list_name: str, out: str | Path, *, status: Status | str | None = None,
               tags: tuple[str, ...] = (), on_progress: Callable[[int, int], None] | None = None,
               batch: int = 10_000) -> ExportSummary:
    """Write the list's members (with `tags`: those with every one of them) to `out` ("-" for
    standard output)."""
    status = Status(status) if status else None
    with engine.connect() as conn:
        found = store.get_list(conn, list_name)
        where, params = _where(found.id, status, tags)
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


def _where(list_id: int, status: Status | None, tags: tuple[str, ...] = ()) -> tuple[str, dict]:
    where: list[str] = ["m.list_id = :list_id"]
    params: dict[str, object] = {"list_id": list_id}
    if status is not None:
        where.append("COALESCE(s.global_status, m.status) = :status")
        params["status"] = status.value
    for i, tag in enumerate(tags):
        where.append(f"EXISTS (SELECT 1 FROM subscriber_tags t WHERE t.subscriber_id = s.id AND t.tag = :tag{i})")
        params[f"tag{i}"] = tag
    return " AND ".join(where), params


def export_selection(engine: Engine, view: Selection, out: str | Path, *,
                     on_progress: Callable[[int, int], None] | None = None, batch: int = 10_000) -> ExportSummary:
    """Write the subscribers of a view (subscribers.selection) to `out`, one row each, in id order."""
    with engine.connect() as conn:
        where = view.where(conn.dialect.name)
        keys = _selection_keys(conn, where)
        total = view.count(conn)
        summary = ExportSummary("", str(out), columns=len(COLUMNS) + len(keys))
        first = select(func.min(memberships.c.consent_at)).where(
            memberships.c.subscriber_id == subscribers.c.id).scalar_subquery()
        tags: Any = literal_column(_TAGS[conn.dialect.name == "postgresql"].replace("= s.id", "= subscribers.id"))
        query = (select(subscribers.c.email, subscribers.c.name, _overall(view), utc_text(first),
                        subscribers.c.attributes, tags)
                 .where(where).order_by(subscribers.c.id))
        with _target(out) as fh:
            writer = csv.writer(fh, lineterminator="\r\n")
            writer.writerow([neutralize(c) for c in COLUMNS + keys])
            for row in conn.execution_options(yield_per=batch).execute(query):
                writer.writerow(_cells(row, keys))
                summary.rows += 1
                if on_progress and summary.rows % batch == 0:
                    on_progress(summary.rows, total)
        if on_progress:
            on_progress(summary.rows, total)
    return summary


def _overall(view: Selection):
    """A subscriber's one status for a view (the module's docstring)."""
    if view.status is not None:
        return literal(view.status.value)

    def on_some_list(status: Status):
        return exists().where(memberships.c.subscriber_id == subscribers.c.id, memberships.c.status == status.value)

    return func.coalesce(subscribers.c.global_status, case(
        *((on_some_list(s), s.value) for s in (Status.ACTIVE, Status.UNCONFIRMED, Status.UNSUBSCRIBED)), else_=""))


def _selection_keys(conn, where) -> list[str]:
    if conn.dialect.name == "postgresql":
        query = select(func.jsonb_object_keys(subscribers.c.attributes)).where(where).distinct()
    else:
        each = func.json_each(subscribers.c.attributes).table_valued("key")
        query = select(each.c.key).select_from(subscribers).join(each, literal(True)).where(where).distinct()
    keys = sorted(k for (k,) in conn.execute(query))
    return [k for k in keys if k.lower() not in COLUMNS]


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
