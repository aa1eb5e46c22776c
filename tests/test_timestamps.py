"""Timestamps through every way we write them, read back the same on SQLite and PostgreSQL.

One table: each instant (whole seconds, another zone with microseconds, a naive value, a local
time whose UTC day is the day before) goes in through each path (the ORM, a Core insert, raw SQL
text, the bulk writer (sqlite3's executemany; PostgreSQL's COPY, straight or through a staging
table) and a mailer table) and must come back from every kind of read (typed select, typed raw
text, max(), comparison in SQL, models.utc_text, models.utc_date) as the same aware UTC value,
stored in the same form whatever the path (on SQLite the text existing databases hold). The
PostgreSQL session runs in a time zone far from UTC, which none of it may depend on.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from sqlalchemy import Text, bindparam, cast, column, func, insert, select, text
from sqlalchemy.orm import Session

from mailer.admin_users import admin_users
from mailer.migrate import connect
from subscribers.bulk import Bulk
from subscribers.models import (
    List,
    UtcDateTime,
    history,
    lists,
    subscribers,
    utc_date,
    utc_text,
)

# (name, value written, the UTC instant it means)
INSTANTS = [
    ("whole seconds", datetime(2024, 11, 5, 9, 30, tzinfo=UTC), datetime(2024, 11, 5, 9, 30, tzinfo=UTC)),
    ("zone -05:00, microseconds", datetime(2024, 11, 5, 4, 30, 0, 250, tzinfo=timezone(timedelta(hours=-5))),
     datetime(2024, 11, 5, 9, 30, 0, 250, tzinfo=UTC)),
    ("naive, taken as UTC", datetime(2024, 12, 31, 23, 59, 59, 999999),  # noqa: DTZ001 - the case under test
     datetime(2024, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
    ("local new year, UTC day before", datetime(2025, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1))),
     datetime(2024, 12, 31, 23, 30, tzinfo=UTC)),
]


def _orm(conn, key, at):
    with Session(bind=conn) as session:
        session.add(List(name=key, title="", created_at=at))
        session.flush()
    return lists.c.created_at, lists.c.name


def _core(conn, key, at):
    conn.execute(insert(history).values(action="t", source=key, at=at))
    return history.c.at, history.c.source


def _raw_text(conn, key, at):
    statement = text("INSERT INTO history (action, source, at) VALUES ('t', :key, :at)")
    conn.execute(statement.bindparams(bindparam("at", type_=UtcDateTime)), {"key": key, "at": at})
    return history.c.at, history.c.source


def _bulk(conn, key, at):
    """sqlite3's executemany; PostgreSQL: COPY into the table itself."""
    bulk = Bulk(conn)
    bulk.insert(history, ["action", "source", "at"], [("t", key, bulk.time(at))])
    return history.c.at, history.c.source


def _bulk_staged(conn, key, at):
    """PostgreSQL: COPY into a staging table, then INSERT ... SELECT ... ON CONFLICT."""
    bulk = Bulk(conn)
    bulk.insert_ids(subscribers, ["email", "name", "attributes", "created_at", "updated_at"],
                    [(key, "", "{}", bulk.time(at), bulk.time(at))], key="email")
    return subscribers.c.created_at, subscribers.c.email


def _mailer_table(conn, key, at):
    conn.execute(insert(admin_users).values(name=key, password_hash="-", created_at=at))
    return admin_users.c.created_at, admin_users.c.name


PATHS = {"orm": _orm, "core": _core, "raw text": _raw_text, "bulk": _bulk, "bulk staged": _bulk_staged,
         "mailer table": _mailer_table}


def _read(conn, at_column, key_column, key, at):
    """What every kind of read gives for the row: (typed, typed raw text, max, rows equal in SQL,
    ISO text, UTC day, zone of the typed value)."""
    table, name = at_column.table.name, at_column.name
    typed = conn.execute(select(at_column).where(key_column == key)).scalar_one()
    raw = conn.execute(text(f"SELECT {name} FROM {table} WHERE {key_column.name} = :key")
                       .columns(column(name, UtcDateTime)), {"key": key}).scalar_one()
    most = conn.execute(select(func.max(at_column)).where(key_column == key)).scalar_one()
    equal = conn.execute(select(func.count()).where(key_column == key, at_column == at)).scalar_one()
    iso, day = conn.execute(select(utc_text(at_column), utc_date(at_column)).where(key_column == key)).one()
    return typed, raw, most, equal, iso, day, typed.tzinfo


def _stored(conn, at_column, key_column, key) -> str:
    return conn.execute(select(cast(at_column, Text)).where(key_column == key)).scalar_one()


def test_timestamps_round_trip_on_every_path(db_url):
    engine = connect(db_url)
    got, expected, stored = {}, {}, {}
    try:
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":   # a session far from UTC: nothing may depend on it
                conn.exec_driver_sql("SET LOCAL TIME ZONE 'Pacific/Kiritimati'")   # UTC+14
            for label, written, instant in INSTANTS:
                for path, write in PATHS.items():
                    key = f"t{len(got)}@example.com"   # a name and an address alike
                    at_column, key_column = write(conn, key, written)
                    got[label, path] = _read(conn, at_column, key_column, key, written)
                    expected[label, path] = (instant, instant, instant, 1,
                                             instant.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), instant.date(), UTC)
                    stored.setdefault(label, {})[path] = _stored(conn, at_column, key_column, key)
    finally:
        engine.dispose()
    assert got == expected
    for label, by_path in stored.items():
        assert len(set(by_path.values())) == 1, (label, by_path)   # one stored form, whatever the path
    if engine.dialect.name == "sqlite":   # the text SQLAlchemy always stored: existing databases keep it
        assert [by_path["core"] for by_path in stored.values()] == [
            "2024-11-05 09:30:00.000000", "2024-11-05 09:30:00.000250", "2024-12-31 23:59:59.999999",
            "2024-12-31 23:30:00.000000"]
