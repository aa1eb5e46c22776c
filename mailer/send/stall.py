"""Stage 5, the database's short outages during a send: retry a statement, or keep what the provider said.

    stall = Stall(settings.delivery.database_retry_seconds)
    claimed = stall(lambda: write(...), "recording batch 3")   # retried with backoff while the database fails
    keep(journal_dir, send_id, marks, deferrals)              # given up: a file the next run applies (apply)

A statement that fails because the database is briefly away (a PostgreSQL restart or a terminated
connection: OperationalError, InterfaceError, or any error SQLAlchemy saw invalidate the connection;
SQLite locked past its busy timeout, or its disk full: OperationalError) is tried again in a new
transaction after 0.5 s, doubling up to 15 s, for `seconds` in all; then DatabaseUnavailable, one
line. Other errors (a constraint, a bug) are not retried. The argument: docs/exactly-once.md,
"Database stalls".
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TypeVar, cast

from sqlalchemy import and_, update
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from mailer.errors import DatabaseUnavailable
from mailer.send import ledger
from mailer.send.ledger import Deferral, Mark, State

T = TypeVar("T")
FIRST_WAIT = 0.5     # seconds before the first retry; doubling ...
LONGEST_WAIT = 15.0  # ... up to this


def transient(exc: BaseException) -> bool:
    """Is this a database error a short outage causes (worth trying again)?"""
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class Stall:
    """Run a database step, retrying it while the database is briefly away (see the module's doc)."""

    def __init__(self, seconds: float = 300.0, *, sleep=time.sleep, notice: Callable[[str], None] = lambda m: None):
        self.seconds, self.sleep, self.notice = seconds, sleep, notice
        self.recovered: float | None = None   # time.monotonic() when a step last went through after failing

    def since_recovered(self) -> float:
        """Seconds since the database last came back for this process (inf: it never went away)."""
        return float("inf") if self.recovered is None else time.monotonic() - self.recovered

    def __call__(self, work: Callable[[int], T], what: str) -> T:
        """work(attempt) until it returns; attempt is 0, 1, ... (a retry may find its own earlier try committed)."""
        deadline = time.monotonic() + self.seconds
        delay, attempt = FIRST_WAIT, 0
        while True:
            try:
                done = work(attempt)
                if attempt:
                    self.recovered = time.monotonic()
                return done
            except DBAPIError as exc:
                if not transient(exc):
                    raise
                if time.monotonic() + delay > deadline:
                    raise DatabaseUnavailable(f"the database failed while {what}, and on every try for "
                                              f"{self.seconds:g} s ([delivery] database_retry_seconds): "
                                              f"{first_line(exc)}") from exc
                if attempt == 0:
                    self.notice(f"the database failed while {what} ({first_line(exc)}); trying again for up to "
                                f"{self.seconds:g} s")
            self.sleep(delay)
            delay, attempt = min(delay * 2, LONGEST_WAIT), attempt + 1


# --- the journal: results the database would not take ---------------------------------------------

def journal_file(folder: Path, send_id: int, writer: str | None = None) -> Path:
    """`send-ID.jsonl` for a single run; a worker (`writer`: its host:pid) keeps its own file,
    `send-ID.HOST-PID.jsonl`, so two workers never write one file."""
    if writer is None:
        return Path(folder) / f"send-{send_id}.jsonl"
    own = re.sub(r"[^A-Za-z0-9_.-]", "-", writer)
    return Path(folder) / f"send-{send_id}.{own}.jsonl"


def journal_files(folder: Path, send_id: int) -> list[Path]:
    """Every journal of a send: the single run's and each worker's."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob(f"send-{send_id}*.jsonl")
                  if p.name == f"send-{send_id}.jsonl" or p.name.startswith(f"send-{send_id}."))


def keep(folder: Path, send_id: int, marks: list[Mark], deferrals: list[Deferral], writer: str | None = None) -> Path:
    """Append these results to the send's journal (one JSON line, one write, flushed to disk): the
    provider's answers for readers the ledger still has `sending`, for the next run to apply."""
    path = journal_file(folder, send_id, writer)
    path.parent.mkdir(parents=True, exist_ok=True)
    later = [[d.delivery_id, d.error, cast(datetime, d.next_attempt_at).isoformat()] for d in deferrals]
    line = (json.dumps({"marks": [list(m) for m in marks], "deferrals": later}) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        while line:   # one write for a line of any usual size; the rest, if the kernel took less
            line = line[os.write(fd, line):]
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def apply(conn, folder: Path | None, send_id: int) -> tuple[int, list[Path]]:
    """Write a send's journals (the single run's and every worker's) into the ledger, for readers
    still `sending` only (a result the database took after all is not overwritten). (readers
    updated, the files to delete once committed)."""
    if folder is None:
        return 0, []
    paths = journal_files(folder, send_id)
    return apply_files(conn, paths, send_id), paths


def apply_files(conn, paths: list[Path], send_id: int) -> int:
    """`apply` for these journal files (a dead worker's own, when a peer reclaims its batches)."""
    done = 0
    d = ledger.deliveries
    still = d.c.state == State.SENDING.value
    for path in paths:
        for raw in path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(raw)
            except ValueError:   # a line cut short by a crash while it was written: its batch stays in flight
                continue
            for delivery_id, state, provider_id, error in entry["marks"]:
                done += conn.execute(update(d).where(and_(d.c.id == delivery_id, d.c.send_id == send_id, still))
                                     .values(state=state, provider_id=provider_id, last_error=error,
                                             updated_at=ledger.now())).rowcount
            for delivery_id, error, at in entry["deferrals"]:
                done += conn.execute(update(d).where(and_(d.c.id == delivery_id, d.c.send_id == send_id, still))
                                     .values(state=State.DEFERRED.value, last_error=error,
                                             next_attempt_at=datetime.fromisoformat(at),
                                             updated_at=ledger.now())).rowcount
    return done
