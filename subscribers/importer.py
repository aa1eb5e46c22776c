"""CSV file + list -> chunked bulk upserts + history rows -> ImportSummary.

Built for a million rows at a steady memory: the file streams through in chunks; a reader process
parses and validates the next chunks (parse.py) while this one is merged with the store in a few
queries and written with one bulk statement per table (bulk.py), in one transaction, committed per
chunk. Every chunk's writes are idempotent, so a crash leaves whole chunks behind and a rerun
finishes the job, and importing the same file twice changes nothing the second time.

Merge rules: the file's non-empty values override the store's (name; attributes key by key), or
only fill blanks with `overwrite=False`. Duplicates within the file (the same address in any case)
merge into their first occurrence: later ones only fill what is still blank. That is what keeps a
second import a no-op even when duplicates disagree. Addresses seen earlier in this run are known
by their `created_at` (new ones) or by a connection-local temporary table (the others), so memory
does not grow with the file.

Suppression: an address unsubscribed from this list, bounced or complained anywhere, or
forgotten is left exactly as it is and counted as `suppressed`.
"""

from __future__ import annotations

import builtins
import dataclasses
import fcntl
import json
import os
import pickle
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import NamedTuple

from sqlalchemy import Column, Connection, Engine, MetaData, String, Table, select, text
from sqlalchemy.exc import SQLAlchemyError

from subscribers import pg_copy, store
from subscribers.bulk import Bulk
from subscribers.csvfile import CsvSource
from subscribers.errors import (
    CsvImportError,
    ImportInterrupted,
    SecretRequired,
    SubscriberError,
)
from subscribers.models import (
    GLOBAL_STATUSES,
    SUPPRESSED,
    Action,
    ConsentSource,
    Status,
    forgotten,
    history,
    memberships,
    subscriber_tags,
    subscribers,
    utcnow,
)
from subscribers.parse import Row, RowParser, membership_consent
from subscribers.tokens import forget_hash

CHUNK = 5000
READER = "subscribers._reader"  # the parsing child's module (python -m)
PARALLEL_FROM = 4 << 20  # bytes
MAX_INVALID_KEPT = 100_000  # a file of garbage must not grow memory without bound either

_seen = Table("import_seen", MetaData(), Column("email", String(320), primary_key=True))


class Stored(NamedTuple):
    """A subscriber row already in the store, as the SQLite merge reads it."""
    id: int
    name: str | None
    attributes: str | None     # JSON text, compared as is before parsing
    global_status: str | None
    ours: bool                 # created during this run (see _Job.run)


@dataclass(frozen=True)
class InvalidRow:
    line: int
    email: str
    reason: str


@dataclass
class ImportSummary:
    file: str
    list: str
    dry_run: bool = False
    rows: int = 0
    imported: int = 0      # new to this list
    updated: int = 0       # on the list already; name, attributes or status changed
    unchanged: int = 0
    invalid: int = 0
    suppressed: int = 0    # unsubscribed here, bounced/complained anywhere, or forgotten: left as is
    duplicates: int = 0    # rows merged into an earlier row of the same file
    invalid_rows: builtins.list[InvalidRow] = field(default_factory=builtins.list)   # (`list` names the list here)

    def as_dict(self) -> dict:
        return asdict(self)

    def headline(self) -> str:
        """The one-line report (`mailer subscribers import` and the admin pages print it)."""
        head = "Dry run, nothing was written. Read" if self.dry_run else "Read"
        return (f"{head} {self.rows:,} rows from {self.file} into {self.list}: {self.imported:,} new, "
                f"{self.updated:,} updated, {self.unchanged:,} unchanged, {self.invalid:,} invalid, "
                f"{self.suppressed:,} suppressed, {self.duplicates:,} duplicates merged.")

    def add_invalid(self, line: int, email: str, reason: str) -> None:
        self.invalid += 1
        if len(self.invalid_rows) < MAX_INVALID_KEPT:
            self.invalid_rows.append(InvalidRow(line, email, reason))


Progress = Callable[[int, int, ImportSummary], None]


def import_csv(engine: Engine, path: str | Path, list_name: str, *, secret: str | None = None,
               status: Status = Status.ACTIVE, dry_run: bool = False, check_dns: bool = False,
               overwrite: bool = True, chunk_size: int | None = None, on_progress: Progress | None = None,
               parallel: bool | None = None, lock: AbstractContextManager | None = None) -> ImportSummary:
    """Import a CSV into an existing list (ListNotFound otherwise: a typo never creates one).

    `status`: what new members get (active, or unconfirmed); a `status` column overrides it per
    row. `dry_run`: everything in one transaction, rolled back. `secret` (MAILER_SECRET_KEY) is
    needed only once the store has forgotten addresses to check against. `parallel`: parse in a
    second process (default: for files over 4 MB, where it pays for its start-up). `lock`: held
    around each chunk's writes and commit only, never while the file is read (the web service's
    writer lock, mailer/web/context.py). On SQLite a dry run reads the whole file before its one
    transaction (rolled back) begins, so no import holds SQLite's writer lock while it parses.
    """
    path = Path(path)
    if not path.is_file():
        raise CsvImportError("no such file", path=str(path))
    with CsvSource(path):  # encoding and header problems surface before anything is written
        pass
    size = path.stat().st_size
    parallel = size > PARALLEL_FROM if parallel is None else parallel
    summary = ImportSummary(file=str(path), list=list_name, dry_run=dry_run)
    with engine.connect() as conn:
        list_id = store.get_list(conn, list_name).id
        pg = conn.dialect.name == "postgresql"
        chunk_size = chunk_size or (pg_copy.CHUNK if pg else CHUNK)
        job = _Job(conn, list_id, path.name, summary, secret, overwrite, copy_merge=_plain(path))
        reader = _read_in_process if parallel else _read_here
        saved = dataclasses.replace(summary)   # the counts as of the last commit
        try:
            _seen_reset(conn)
            _tune(conn, True)
            chunks: Iterable = reader(path, summary, Status(status), check_dns, chunk_size)
            if dry_run and not pg:
                chunks = list(chunks)    # parsed first: the one transaction then only writes
            held = lock or nullcontext()
            with held if dry_run else nullcontext():      # a dry run: one transaction, held throughout
                for rows, position in chunks:
                    with nullcontext() if dry_run else held:
                        job.run(rows)
                        if not dry_run:
                            conn.commit()
                    if not dry_run:
                        saved = dataclasses.replace(summary, invalid_rows=[])
                    if on_progress:
                        on_progress(position, size, summary)
        except (SubscriberError, SQLAlchemyError) as exc:
            if saved.rows:   # chunks were committed: say so, and that a rerun finishes the job
                raise ImportInterrupted(exc, saved) from exc
            raise
        finally:
            conn.rollback()  # dry run: everything; otherwise only what an error interrupted
            if pg:
                pg_copy.drop(conn)
            _seen_drop(conn)
            _tune(conn, False)
    return summary


def _chunks(rows: Iterator, size: int) -> Iterator[list]:
    while chunk := list(islice(rows, size)):
        yield chunk


def _read_here(path: Path, summary: ImportSummary, status: Status, check_dns: bool,
               chunk_size: int) -> Iterator[tuple[dict[str, Row], int]]:
    with CsvSource(path, check_encoding=False) as source:
        parser = RowParser(source.columns, summary, status, check_dns)
        for chunk in _chunks(source.rows(), chunk_size):
            yield parser.merge(chunk), source.position()  # Row objects with their attrs dicts


def _read_in_process(path: Path, summary: ImportSummary, status: Status, check_dns: bool,
                     chunk_size: int) -> Iterator[tuple[dict[str, Row], int]]:
    """Parse in a child process (subscribers._reader), a pipe's worth ahead, while this one
    writes: the two halves of an import cost about the same, and a thread would only fight
    over the GIL (docs/decisions.md: slower than no thread at all)."""
    package_root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    # a file, not a pipe: a chatty child can never block on it (closed in the `finally` below)
    errors = tempfile.TemporaryFile()  # noqa: SIM115
    child = subprocess.Popen(
        [sys.executable, "-m", READER, str(path), status.value, "1" if check_dns else "0",
         str(chunk_size)], stdout=subprocess.PIPE, stderr=errors, env=env)
    out = child.stdout
    assert out is not None   # stdout=PIPE
    _widen_pipe(out)
    try:
        while True:
            try:
                message = pickle.load(out)
            except (EOFError, pickle.UnpicklingError):
                code = child.wait()
                raise CsvImportError(f"the reader process stopped unexpectedly (exit code {code})"
                                     f"{_tail(errors)}", path=str(path)) from None
            if message[0] == "error":
                raise CsvImportError(message[1], path=message[2], line=message[3])
            if message[0] == "done":
                return
            _, rows, counted, duplicates, invalid, position = message
            summary.rows += counted
            summary.duplicates += duplicates
            for line, email, reason in invalid:
                summary.add_invalid(line, email, reason)
            yield {r[1]: Row(*r) for r in rows}, position
    finally:
        out.close()
        if child.poll() is None:
            child.kill()
        child.wait()
        errors.close()


def _tail(errors, limit: int = 8000) -> str:
    """What the reader process wrote on stderr (its traceback), for the error message."""
    errors.seek(0, os.SEEK_END)
    errors.seek(max(0, errors.tell() - limit))
    text = errors.read().decode("utf-8", "replace").strip()
    return f"; it said:\n{text}" if text else ""


def _widen_pipe(pipe) -> None:
    """Let the reader run a whole chunk ahead: a pickled 5,000-row chunk is about 640 kB, a
    pipe holds 64 kB by default (Linux, pipe(7)), so without this the reader stalls on every
    chunk until this process has written the previous one, and any uneven chunk (a WAL
    checkpoint) costs wall time. 1 MB is the default ceiling for unprivileged processes; the
    buffer is fixed, so memory still does not grow with the file. Elsewhere: no-op."""
    try:
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, 1 << 20)
    except (ImportError, AttributeError, OSError):
        pass  # not Linux, or above /proc/sys/fs/pipe-max-size / a pipe quota: keep the default


def _seen_reset(conn: Connection) -> None:
    conn.execute(text("CREATE TEMPORARY TABLE IF NOT EXISTS import_seen (email VARCHAR(320) PRIMARY KEY)"))
    conn.execute(_seen.delete())


def _tune(conn: Connection, importing: bool) -> None:
    """SQLite's page cache is 2 MB by default; a million-row import's indexes want more (64 MB,
    a fixed ceiling, so memory still does not grow with the file). Reset when done: the
    connection goes back to the pool."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql(f"PRAGMA cache_size = {-65536 if importing else -2000}")


def _seen_drop(conn: Connection) -> None:
    conn.execute(text("DROP TABLE IF EXISTS import_seen"))
    conn.commit()


def _plain(path: Path) -> bool:
    """Whether the file's header has no tags column (the PostgreSQL merge writes no tags)."""
    try:
        with CsvSource(path, check_encoding=False) as source:   # the header only: the reader checks the file
            cols = source.columns
    except UnicodeDecodeError:
        return False   # not UTF-8: the reader names the byte and line
    return cols.tags is None


class _Job:
    """One import's write side: merge each chunk of parsed rows with the store and write it."""

    def __init__(self, conn: Connection, list_id: int, file_name: str, summary: ImportSummary,
                 secret: str | None, overwrite: bool, copy_merge: bool = True):
        self.conn, self.list_id, self.file_name, self.summary = conn, list_id, file_name, summary
        self.secret, self.overwrite = secret, overwrite
        self.bulk = Bulk(conn)
        self.started = utcnow()  # rows created at or after this were created by this run
        # PostgreSQL: COPY + set-based merges (pg_copy.py), for files without tags (those take the
        # general path below, every chunk alike, so the counts agree)
        self.pg = pg_copy.PgMerge(self) if self.bulk.pg and copy_merge else None

    def run(self, rows: dict[str, Row]) -> None:
        if not rows:
            return
        emails = self._drop_forgotten(list(rows))
        if self.pg is not None:
            return self.pg.run({e: rows[e] for e in emails})
        bulk = self.bulk
        # Created during this run, hence by an earlier row of this file (or, harmlessly, by a
        # signup meanwhile: its data then only gets blanks filled); compared by the database.
        found = bulk.select_in("SELECT id, email, name, attributes, global_status, created_at >= {param} "
                               "FROM subscribers WHERE email {in_}", emails, params=[bulk.time(self.started)])
        existing = {email: Stored(sid, name, attrs, glob, bool(ours)) for sid, email, name, attrs, glob, ours in found}
        seen = {e for e, stored in existing.items() if stored.ours}
        if len(seen) < len(existing):
            seen.update(e for (e,) in bulk.select_in("SELECT email FROM import_seen WHERE email {in_}",
                                                     [e for e in existing if e not in seen]))
        new = [rows[e] for e in emails if e not in existing]
        self._insert_new(new)
        if existing:
            self._merge_existing(rows, existing, seen)
            bulk.insert(_seen, ["email"], [(e,) for e in existing if e not in seen])

    def _drop_forgotten(self, emails: list[str]) -> list[str]:
        """The chunk's addresses minus forgotten ones, new or (from before every path checked
        the forget hash) still stored: a forgotten address comes back only through --resubscribe
        or its owner's confirmation."""
        if self.conn.execute(select(forgotten.c.id).limit(1)).first() is None:
            return emails
        if not self.secret:
            raise SecretRequired("this database has forgotten addresses; MAILER_SECRET_KEY must be set "
                                 "so that the import can skip them")
        hashes = {forget_hash(self.secret, e): e for e in emails}
        gone = {h for (h,) in self.bulk.select_in("SELECT email_hash FROM forgotten WHERE email_hash {in_}",
                                                  list(hashes))}
        self.summary.suppressed += len(gone)
        return [e for h, e in hashes.items() if h not in gone]

    def _insert_new(self, new: list[Row]) -> None:
        if not new:
            return
        now, bulk = utcnow(), self.bulk
        at = bulk.time(now)
        columns = ["email", "name", "attributes", "global_status"]
        values = [(r.email, r.name, r.attrs_json, r.status if r.status in GLOBAL_STATUSES else None) for r in new]
        ids = bulk.insert_ids(subscribers, columns, values, key="email", fixed={"created_at": at, "updated_at": at})
        joined = [(ids[r.email], r) for r in new if r.email in ids]
        self._join(joined, now, fresh=True)
        self._tag([(sid, t) for sid, r in joined for t in r.tags])
        self.summary.imported += len(joined)

    def _join(self, joined: list[tuple[int, Row]], now: datetime, fresh: bool = False) -> None:
        """Memberships for these subscribers. `fresh`: created by this transaction, so no one
        else can have joined them to the list: no conflict rule (PostgreSQL: straight COPY)."""
        if not joined:
            return
        source, list_id, bulk = ConsentSource.IMPORT.value, self.list_id, self.bulk
        at = bulk.time(now)
        bulk.insert(
            memberships, ["subscriber_id", "status", "consent_at", "consent_ip", "optin_at", "optin_ip"],
            [(sid, r.status, bulk.time(r.consent_at) if r.consent_at else at, *_consent(bulk, r.consent))
             for sid, r in joined],
            conflict=None if fresh else ["list_id", "subscriber_id"],
            fixed={"list_id": list_id, "consent_source": source, "created_at": at, "updated_at": at})
        self._history([(sid, r.status, r.line, None) for sid, r in joined], now, list_id, Action.SUBSCRIBE)

    def _merge_existing(self, rows: dict[str, Row], existing: dict, seen: set[str]) -> None:
        summary, now = self.summary, utcnow()
        member = dict(self.bulk.select_in(
            f"SELECT subscriber_id, status FROM memberships WHERE list_id = {int(self.list_id)} "
            "AND subscriber_id {in_}", [v.id for v in existing.values()], ints=True))
        joins: list[tuple[int, Row]] = []
        data_updates: list[tuple] = []
        tag_rows: list[tuple[int, str]] = []
        have = self._tags_of([v.id for e, v in existing.items() if rows[e].tags])
        for email, stored in existing.items():
            sid, glob = stored.id, stored.global_status
            row, current, again = rows[email], member.get(sid), email in seen
            if glob or current in SUPPRESSED:
                summary.suppressed += not again
                summary.duplicates += again
                continue
            new_tags = [(sid, t) for t in row.tags if (sid, t) not in have]
            tag_rows += new_tags
            changed = self._data_update(row, stored, again, data_updates) or bool(new_tags)
            if current is None:
                joins.append((sid, row))
                continue
            changed = self._status_change(sid, Status(current), row) or changed
            summary.updated += changed and not again  # a later row of the file: a duplicate, even
            summary.unchanged += not changed and not again  # when it filled blanks (as within a chunk)
            summary.duplicates += again
        self._write_updates(data_updates, now)
        self._tag(tag_rows)
        if tag_rows:
            lines = {stored.id: rows[e].line for e, stored in existing.items()}
            self._history([(sid, None, lines[sid], ["tags"]) for sid in dict.fromkeys(s for s, _t in tag_rows)],
                          now, None, Action.UPDATE)
        self._join(joins, now)
        summary.imported += len(joins)
        for sid, row in joins:  # a file that says bounced/complained: suppressed on every list
            if row.status in GLOBAL_STATUSES:
                store.set_status(self.conn, sid, None, row.status, "import", {"file": self.file_name, "line": row.line})

    def _tags_of(self, sids: list[int]) -> set[tuple[int, str]]:
        return set(self.bulk.select_in("SELECT subscriber_id, tag FROM subscriber_tags WHERE subscriber_id {in_}",
                                       sids, ints=True))

    def _tag(self, pairs: list[tuple[int, str]]) -> None:
        """Give tags (subscriber id, tag); ones already there stay as they are."""
        self.bulk.insert(subscriber_tags, ["subscriber_id", "tag"], list(dict.fromkeys(pairs)),
                         conflict=["subscriber_id", "tag"])

    def _data_update(self, row: Row, stored: Stored, seen: bool, out: list) -> bool:
        sid, old_name, raw_attrs = stored.id, stored.name, stored.attributes
        if (not row.name or row.name == old_name) and raw_attrs == row.attrs_json:
            return False  # the common re-import case, decided without parsing JSON
        old_attrs = _attrs(raw_attrs)
        fill_only = seen or not self.overwrite
        name = old_name if (fill_only and old_name) or not row.name else row.name
        new_attrs = row.attributes()
        attrs = {**new_attrs, **old_attrs} if fill_only else {**old_attrs, **new_attrs}
        fields = (["name"] if name != old_name else []) + (["attributes"] if attrs != old_attrs else [])
        if fields:
            out.append((sid, name, attrs, fields, row.line))
        return bool(fields)

    def _status_change(self, subscriber_id: int, current: Status, row: Row) -> bool:
        """Only moves allowed without an override: unconfirmed -> active, and into suppression.
        Rare, so it takes the store's own (row-by-row) path."""
        target = row.status
        if target == current or target == Status.UNCONFIRMED:
            return False
        detail = {"file": self.file_name, "line": row.line}
        return store.set_status(self.conn, subscriber_id, self.list_id, target, "import", detail)

    def _write_updates(self, updates: list, now: datetime) -> None:
        if not updates:
            return
        at = self.bulk.time(now)
        self.bulk.update(subscribers, "id", ["name", "attributes", "updated_at"],
                         [(name, _json(attrs), at, sid) for sid, name, attrs, _f, _l in updates])
        self._history([(sid, None, line, fields) for sid, _n, _a, fields, line in updates], now, None, Action.UPDATE)

    def _history(self, entries: list[tuple], now: datetime, list_id: int | None, action: Action) -> None:
        """History rows in bulk, entries (subscriber id, new status, line, fields); `detail`
        JSON is built as text (json.dumps per row is the slowest part of a million-row import
        otherwise)."""
        prefix = '{"file":' + json.dumps(self.file_name, ensure_ascii=False) + ',"line":'
        rows = [(sid, new, f"{prefix}{line}}}" if not fields else f'{prefix}{line},"fields":{json.dumps(fields)}}}')
                for sid, new, line, fields in entries]
        self.bulk.insert(history, ["subscriber_id", "new_status", "detail"], rows,
                         fixed={"list_id": list_id, "at": self.bulk.time(now), "action": action.value,
                                "old_status": None, "source": "import"})


def _consent(bulk: Bulk, consent: tuple | None) -> tuple:
    """parse.membership_consent, its time as this driver takes it."""
    consent_ip, optin_at, optin_ip = membership_consent(consent)
    return (consent_ip, bulk.time(optin_at) if optin_at else None, optin_ip)


def _json(value: dict) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _attrs(value) -> dict:
    if value is None:
        return {}
    return json.loads(value) if isinstance(value, str) else value
