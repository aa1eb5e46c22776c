"""The web process's writes on SQLite: another process holding the write lock ("database is
locked") is waited out by retrying, a few times, then reported (mailer/web/context.py)."""

from __future__ import annotations

import logging
import sqlite3

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import OperationalError

from mailer.web.context import SQLITE_RETRIES, WebContext
from subscribers.models import history


@pytest.mark.parametrize("released_at, attempts, written", [
    (2, 2, True),                                  # the other process commits before our retry
    (SQLITE_RETRIES, SQLITE_RETRIES, True),        # ... before our last one
    (None, SQLITE_RETRIES, False),                 # never: the error reaches the caller
])
def test_a_write_locked_by_another_process_is_retried(web_settings, caplog, released_at, attempts, written):
    web = WebContext(web_settings)
    path = web.engine.url.database
    other = sqlite3.connect(path, isolation_level=None)   # another process's `mailer send`, mid-write
    other.execute("BEGIN IMMEDIATE")
    tries = []

    def log_one(conn):
        tries.append(1)
        if len(tries) == released_at:
            other.execute("COMMIT")
        conn.exec_driver_sql("PRAGMA busy_timeout = 20")   # SQLite's own wait, short here (30 s in use)
        conn.execute(insert(history).values(action="status", source="web"))

    caplog.set_level(logging.WARNING, logger="mailer.web")
    try:
        if written:
            web.write(log_one)
        else:
            with pytest.raises(OperationalError, match="database is locked"):
                web.write(log_one)
    finally:
        other.close()
        with web.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA busy_timeout = 30000")
            stored = conn.execute(select(func.count()).select_from(history)).scalar_one()
        web.engine.dispose()
    assert (len(tries), stored) == (attempts, int(written))
    assert [r.getMessage() for r in caplog.records] == ["database locked by another process; retrying"] * (attempts - 1)


def test_other_database_errors_are_not_retried(web_settings):
    web = WebContext(web_settings)
    tries = []

    def broken(conn):
        tries.append(1)
        conn.exec_driver_sql("INSERT INTO no_such_table VALUES (1)")

    try:
        with pytest.raises(OperationalError, match="no such table"):
            web.write(broken)
    finally:
        web.engine.dispose()
    assert tries == [1]
