"""The PostgreSQL pool pings a connection only after it sat idle (subscribers/db.py): a connection
the server dropped meanwhile is replaced, not handed to the caller."""

from __future__ import annotations

import psycopg
from sqlalchemy import text

from subscribers import db


def _pid(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT pg_backend_pid()")).scalar()


def test_a_connection_dropped_while_idle_is_replaced(pg_url, monkeypatch):
    engine = db.connect(pg_url)
    first = _pid(engine)
    assert _pid(engine) == first  # in steady use: the same connection, straight back
    plain = pg_url.replace("postgresql+psycopg", "postgresql").split("?")[0]
    with psycopg.connect(plain, autocommit=True) as admin:  # as a server restart or a firewall would
        admin.execute("SELECT pg_terminate_backend(%s, 5000)", (first,))  # waits until it is gone
    monkeypatch.setattr(db, "IDLE_PING_SECONDS", 0.0)
    second = _pid(engine)
    assert second != first
    engine.dispose()
