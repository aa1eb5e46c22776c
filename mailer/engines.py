"""The process's database Engines: one per database (and schema need), reused, disposed at the end.

    engine = engines.get(url)                  # both schemas (the store's, then mailer's) at head
    engine = engines.get(url, "subscribers")   # the store's schema only (`mailer lists`, ...)
    engines.dispose_all()                      # mailer.cli.main, when a command ends

An Engine keeps a pool of open connections: PostgreSQL counts each against its max_connections, and
SQLite folds its -wal file back into the database only when the last one closes. So a command makes
one Engine per database, every stage it runs shares it, and the CLI disposes them all when the
command ends, whatever happened. In `mailer serve` the web service is the command: it disposes
them when it stops (mailer/web/context.py). Tests that call the stages directly dispose them
after each test (tests/conftest.py).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy import Engine

_engines: dict[tuple[str, str], Engine] = {}
_lock = threading.Lock()


def get(url: str, schemas: str = "all") -> Engine:
    """The Engine for `url` in this process, made on first use and brought to head first: both
    histories ("all"), the store's only ("subscribers") or neither ("none")."""
    # SQLAlchemy and Alembic load here, not at the top: mailer.cli imports this module at start-up
    from mailer.migrate import connect
    from subscribers import db

    make = {"all": connect, "subscribers": db.connect, "none": db.create}[schemas]
    with _lock:
        engine = _engines.get((url, schemas))
        if engine is None:
            engine = _engines[url, schemas] = make(url)
        return engine


def dispose_all() -> None:
    """Close every pooled connection and forget the Engines; the next `get` makes new ones."""
    with _lock:
        made = list(_engines.values())
        _engines.clear()
    for engine in made:
        engine.dispose()


def open_count() -> int:
    """How many Engines this process holds now (the tests check it drops to 0 after a command)."""
    return len(_engines)
