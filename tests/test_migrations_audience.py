"""0005_audience and m0005_segments on a database that already holds subscribers and a send:
nothing is lost on the way up (SQLite rebuilds `sends` without cascading into `deliveries`) or
back down, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic import command
from sqlalchemy import text

from mailer.migrate import HISTORY as MAILER
from mailer.migrate import upgrade
from subscribers.db import MIGRATIONS_HISTORY as STORE
from subscribers.db import create

BEFORE = {STORE: "0002_events", MAILER: "m0001_ledger"}
# Down again only past the two revisions under test (the ones before them have their own tests).
UNDER_TEST = {STORE: "0005_audience", MAILER: "m0005_segments"}


def just_before(history, revision: str) -> str:
    from alembic.script import ScriptDirectory

    with create("sqlite://").connect() as conn:
        return ScriptDirectory.from_config(history.config(conn)).get_revision(revision).down_revision
SEED = [
    "INSERT INTO lists (id, name, title, description, created_at) VALUES (1, 'crank', 'CRANK Call', '', '2024-11-01')",
    "INSERT INTO subscribers (id, email, name, attributes, created_at, updated_at) "
    "VALUES (1, 'ann@example.com', 'Ann', '{}', '2024-11-01', '2024-11-01')",
    "INSERT INTO memberships (id, list_id, subscriber_id, status, consent_at, consent_source, created_at, updated_at) "
    "VALUES (1, 1, 1, 'active', '2024-11-01', 'admin', '2024-11-01', '2024-11-01')",
    "INSERT INTO sends (id, issue, list_id, list_name, subject, backend, status, total, sent, failed, skipped, "
    "batches, started_at) VALUES (1, '2024-11', 1, 'crank', 'November', 'outbox', 'done', 1, 1, 0, 0, 1, '2024-11-01')",
    "INSERT INTO deliveries (id, send_id, subscriber_id, state, batch, attempts) VALUES (7, 1, 1, 'accepted', 1, 1)",
]


def migrate(engine, to: dict, down: bool = False) -> None:
    for history in ((MAILER, STORE) if down else (STORE, MAILER)):
        with engine.begin() as conn:
            (command.downgrade if down else command.upgrade)(history.config(conn), to.get(history, "head"))


def rows(engine, sql: str) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql))]


def test_up_and_down_keep_every_row(db_url):
    engine = create(db_url)
    migrate(engine, BEFORE)
    with engine.begin() as conn:
        for statement in SEED:
            conn.execute(text(statement))
    upgrade(engine)   # the real first-use path (SQLite's foreign keys off while tables are rebuilt)
    assert rows(engine, "SELECT id, send_id, subscriber_id, state FROM deliveries") == [(7, 1, 1, "accepted")]
    assert rows(engine, "SELECT issue, segment FROM sends") == [("2024-11", "")]
    assert rows(engine, "SELECT name, private FROM lists") in ([("crank", False)], [("crank", 0)])
    assert rows(engine, "SELECT optin_at, optin_ip FROM memberships") == [(None, None)]
    with engine.begin() as conn:    # a segmented send of the same issue and list is now its own row
        conn.execute(text("INSERT INTO sends (id, issue, list_id, list_name, subject, backend, status, total, sent, "
                          "failed, skipped, batches, started_at, segment) VALUES (2, '2024-11', 1, 'crank', 'N', "
                          "'outbox', 'done', 0, 0, 0, 0, 0, '2024-11-02', 'tag:press')"))
        conn.execute(text("INSERT INTO subscriber_tags (subscriber_id, tag) VALUES (1, 'press')"))
        conn.execute(text("DELETE FROM sends WHERE segment = 'tag:press'"))
    migrate(engine, {h: just_before(h, r) for h, r in UNDER_TEST.items()}, down=True)
    assert rows(engine, "SELECT id, send_id, state FROM deliveries") == [(7, 1, "accepted")]
    assert rows(engine, "SELECT count(*) FROM memberships") == [(1,)]
    engine.dispose()
