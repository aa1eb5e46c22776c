"""The admin pages' fast queries (mailer/web/admin/search.py, subscribers/selection.py) on SQLite and
PostgreSQL."""

from __future__ import annotations

from datetime import UTC

import pytest

PEOPLE = [("ann@example.com", "Ann Lee"), ("anna@example.org", "Anna Berg"), ("bob@example.com", "Bob Annan"),
          ("zoe_x@test.net", "Zoë"), ("100%@test.net", ""), ("carl@annex.example", "carl")]
WORLD = [("kari@example.no", "Kari Ødegaard"), ("maria@example.ru", "Мария Иванова"),
         ("lukasz@example.pl", "Łukasz Nowak"), ("jose@bücher.example", "José")]
JOSE = "jose@bücher.example"   # stored as jose@xn--bcher-kva.example, shown in Unicode


@pytest.fixture
def people(engine, crank):
    from mailer.migrate import upgrade
    from subscribers import store

    upgrade(engine)
    with engine.begin() as conn:
        for email, name in PEOPLE:
            store.add_subscriber(conn, email, crank, name=name)
    return engine


@pytest.fixture
def everyone(people, crank):
    from subscribers import store

    with people.begin() as conn:
        for email, name in WORLD:
            store.add_subscriber(conn, email, crank, name=name)
    return people


# Any part of a name or an address, any case, any script (subscribers/search.py), ordered by address.
FOUND = [
    ("ann", ["ann@example.com", "anna@example.org", "bob@example.com", "carl@annex.example"]),
    ("ANN", ["ann@example.com", "anna@example.org", "bob@example.com", "carl@annex.example"]),
    ("anna", ["anna@example.org", "bob@example.com"]),         # "Bob Annan"
    ("Lee", ["ann@example.com"]),                               # inside "Ann Lee"
    ("bob", ["bob@example.com"]),
    ("zoe_", ["zoe_x@test.net"]),                               # _ and % are plain characters
    ("100%", ["100%@test.net"]),
    ("zoë", ["zoe_x@test.net"]),
    ("@example.com", ["ann@example.com", "bob@example.com"]),   # a domain
    ("@annex", ["carl@annex.example"]),
    ("  carl ", ["carl@annex.example"]),
    ("Ødegaard", ["kari@example.no"]),
    ("ødegaard", ["kari@example.no"]),
    ("Мария", ["maria@example.ru"]),
    ("МАРИЯ", ["maria@example.ru"]),
    ("Łukasz", ["lukasz@example.pl"]),
    ("łUKASZ", ["lukasz@example.pl"]),
    ("bücher", [JOSE]),                                         # inside an internationalized domain
    ("BÜCHER.example", [JOSE]),
    ("xn--bcher", [JOSE]),
    ("josé", [JOSE]),
    ("nobody", []),
    # One or two characters (subscribers/search.py): where a name, a word of it, an address or a
    # domain starts, not anywhere ("le" is inside every "example", but starts only "Lee").
    ("le", ["ann@example.com"]),
    ("An", ["ann@example.com", "anna@example.org", "bob@example.com", "carl@annex.example"]),  # Annan, @annex
    ("ød", ["kari@example.no"]),
    ("Ма", ["maria@example.ru"]),  # noqa: RUF001 (Cyrillic: "Мария" starts so)
    ("a", ["ann@example.com", "anna@example.org"]),
    ("@an", ["carl@annex.example"]),
    ("@a", []),                                                 # a domain's start needs two letters
]


@pytest.mark.parametrize("text, expected", FOUND)
def test_find(everyone, text, expected):
    from mailer.web.admin.search import with_lists
    from subscribers.selection import Selection

    view = Selection.of(text)
    with everyone.connect() as conn:
        rows = with_lists(conn, view.page(conn)[0])
        total = view.count(conn, cap=1000)
    assert [row[1] for row in rows] == expected
    assert total == len(expected)
    assert all(row[3] == "crank: active" for row in rows)


@pytest.mark.parametrize("text, expected", FOUND)
def test_the_clis_search_finds_the_same(everyone, text, expected):
    from subscribers import store
    from subscribers.normalize import display_email

    with everyone.connect() as conn:
        total, found = store.search(conn, text)
    assert ([display_email(row[1]) for row in found], total) == (expected, len(expected))


def test_rows_written_before_the_search_column_are_filled_by_the_migration(engine, crank):
    """0014_i24b fills `search` for rows already there (SQLite's; PostgreSQL needs none)."""
    from sqlalchemy import update

    from mailer.migrate import upgrade
    from subscribers import store
    from subscribers.models import subscribers
    from subscribers.selection import Selection

    upgrade(engine)
    with engine.begin() as conn:
        store.add_subscriber(conn, "kari@example.no", crank, name="Kari Ødegaard")
        conn.execute(update(subscribers).values(search=None))
    with engine.connect() as conn:
        assert store.search(conn, "kari")[0] == 1          # found by its address meanwhile
    if engine.dialect.name == "sqlite":
        from alembic import command

        from subscribers.db import MIGRATIONS_HISTORY as STORE

        with engine.begin() as conn:
            command.downgrade(STORE.config(conn), "0008_tag_order")
            command.upgrade(STORE.config(conn), "head")
    with engine.connect() as conn:
        assert [row[1] for row in Selection.of("ØDEGAARD").page(conn)[0]] == ["kari@example.no"]


def test_members_pages_forward_and_back_with_a_status(people, crank):
    from mailer.web.admin.search import members
    from subscribers import store
    from subscribers.models import Status

    with people.begin() as conn:
        bob = store.get_subscriber(conn, "bob@example.com").id
        store.unsubscribe(conn, bob, crank, source="admin")
        store.set_status(conn, store.get_subscriber(conn, "carl@annex.example").id, None, Status.BOUNCED, "test")
    with people.connect() as conn:
        first = members(conn, crank, limit=2)
        assert [r[1] for r in first.rows] == ["ann@example.com", "anna@example.org"]
        assert (first.has_before, first.has_after) == (False, True)
        second = members(conn, crank, after=first.last_id, limit=2)
        assert [r[1] for r in second.rows] == ["bob@example.com", "zoe_x@test.net"]
        assert second.has_before and second.has_after
        back = members(conn, crank, before=second.first_id, limit=2)
        assert back.rows == first.rows
        assert [r[1] for r in members(conn, crank, status=Status.UNSUBSCRIBED).rows] == ["bob@example.com"]
        assert [r[1] for r in members(conn, crank, status=Status.BOUNCED).rows] == ["carl@annex.example"]
        assert len(members(conn, crank, status=Status.ACTIVE).rows) == 4
        last = members(conn, crank, after=second.last_id, limit=2)
        assert (len(last.rows), last.has_after) == (2, False)


def test_status_counts_match_the_stores_counts(people, crank, digest):
    from mailer.web.admin.search import status_counts
    from subscribers import store
    from subscribers.models import Status

    with people.begin() as conn:
        ids = {e: store.get_subscriber(conn, e).id for e, _ in PEOPLE}
        store.add_subscriber(conn, "ann@example.com", digest)
        store.unsubscribe(conn, ids["bob@example.com"], crank, source="admin")
        store.set_status(conn, ids["carl@annex.example"], None, Status.BOUNCED, "test")     # everywhere
        store.set_status(conn, ids["ann@example.com"], digest, Status.COMPLAINED, "test")   # and on digest
        store.add_subscriber(conn, "dora@example.com", crank, status=Status.UNCONFIRMED)
    with people.connect() as conn:
        expected = {row.id: counts for row, counts in store.list_counts(conn)}
        for list_id in (crank, digest):
            assert status_counts(conn, list_id) == expected[list_id]
    assert expected[crank] == {Status.ACTIVE: 3, Status.UNSUBSCRIBED: 1, Status.BOUNCED: 1,
                               Status.COMPLAINED: 1, Status.UNCONFIRMED: 1}


def test_events_by_day_and_issue_figures(people, crank):
    from datetime import date, datetime, timedelta

    from sqlalchemy import insert, select

    from mailer.send.ledger import deliveries, sends
    from mailer.web.admin import figures
    from subscribers import store
    from subscribers.policy import events

    day = date(2024, 11, 5)
    late = datetime(2024, 11, 5, 23, 30, tzinfo=UTC)          # late evening UTC: still the 5th
    with people.begin() as conn:
        who = store.get_subscriber(conn, "ann@example.com").id
        conn.execute(insert(sends).values(issue="2024-11", list_id=crank, list_name="crank", subject="November",
                                          backend="outbox", status="done", total=6, sent=5, failed=1, skipped=0,
                                          batches=1, started_at=late - timedelta(days=1)))
        send_id = conn.execute(select(sends.c.id)).scalar_one()
        others = [store.add_subscriber(conn, f"r{i}@example.com", crank).subscriber_id for i in range(5)]
        conn.execute(insert(deliveries), [{"send_id": send_id, "subscriber_id": sid, "state": state, "attempts": 1}
                                          for sid, state in zip([who, *others], ["accepted"] * 5 + ["failed"],
                                                                strict=True)])
        rows = [("delivered", late), ("delivered", late - timedelta(days=1)), ("bounced", late),
                ("complained", late), ("unsubscribed", late), ("opened", late), ("delivered", late - timedelta(days=9))]
        conn.execute(insert(events), [dict(source="test", event_id=f"e{i}", subscriber_id=who, type=kind, at=at,
                                           severity="hard" if kind == "bounced" else None, issue="2024-11",
                                           received_at=at) for i, (kind, at) in enumerate(rows)])
    with people.connect() as conn:
        by_day = figures.events_by_day(conn, days=3, today=day)
        [fig] = figures.issues_sent(conn)
    assert list(by_day) == [day - timedelta(days=2), day - timedelta(days=1), day]
    assert by_day[day] == {"delivered": 1, "opened": 1, "bounced": 1, "unsubscribed or complained": 2}
    assert by_day[day - timedelta(days=1)]["delivered"] == 1
    assert (fig.issue, fig.readers, fig.accepted, fig.failed, fig.hard_bounces, fig.complaints, fig.unsubscribes,
            fig.opens) == ("2024-11", 6, 5, 1, 1, 1, 1, 1)
    chart = figures.chart(by_day)
    assert [line[4] for line in chart.lines] == [2, 1, 1, 2]


def test_count_cache_serves_a_minute_then_refreshes_behind_the_scenes(people, crank):
    import threading

    from mailer.web.admin.search import CountCache
    from subscribers import store
    from subscribers.models import Status

    def read(fn, *args):
        with people.connect() as conn:
            return fn(conn, *args)

    def add(email: str) -> None:
        with people.begin() as conn:
            store.add_subscriber(conn, email, crank)

    cache = CountCache(read)
    with people.connect() as conn:
        assert cache.get(conn, crank) == {Status.ACTIVE: 6}
        add("new1@example.com")
        assert cache.get(conn, crank) == {Status.ACTIVE: 6}            # within the minute: as counted
        cache.clear()                                                   # an admin action
        assert cache.get(conn, crank) == {Status.ACTIVE: 7}
        cache.ttl = 0                                                   # the minute is over
        add("new2@example.com")
        assert cache.get(conn, crank) == {Status.ACTIVE: 7}            # served stale, recount started
        for thread in threading.enumerate():
            if thread.name == f"admin-counts-{crank}":
                thread.join(10)
        cache.ttl = 60
        assert cache.get(conn, crank) == {Status.ACTIVE: 8}


def test_every_writer_keeps_the_search_index_in_step(everyone, crank, tmp_path):
    """Added, renamed, imported (new and updated), forgotten: the search finds the rows as they
    are now, never as they were (SQLite's trigram index follows `search` by triggers, 0016_i24c)."""
    from subscribers import store
    from subscribers.importer import import_csv
    from subscribers.selection import Selection

    def found(text: str) -> list[str]:
        with everyone.connect() as conn:
            return [row[1] for row in Selection.of(text).page(conn)[0]]

    with everyone.begin() as conn:
        store.rename(conn, store.get_subscriber(conn, "ann@example.com").id, "Ann Þórsdóttir", source="test")
    assert (found("þórs"), found("Lee")) == (["ann@example.com"], [])
    data = tmp_path / "people.csv"
    data.write_text("email,name\nbob@example.com,Robert Quill\nnew@example.com,Wilhelmina Oyelaran\n",
                    encoding="utf-8")
    import_csv(everyone, data, "crank")
    assert (found("quill"), found("Annan"), found("oyelaran")) == (["bob@example.com"], [], ["new@example.com"])
    with everyone.begin() as conn:
        store.forget(conn, "new@example.com", "secret", source="test")
    assert found("oyelaran") == [] and found("wilh") == []


def test_a_search_with_more_than_a_thousand_matches_sorts_a_thousand(engine, crank):
    """Past SORTED (1,000) matches the page is 50 of the first 1,001 found, by address, and says
    "more than" (the count stops there): sorting every match is what a million rows cannot afford."""
    from sqlalchemy import insert

    from mailer.migrate import upgrade
    from subscribers.models import subscribers
    from subscribers.search import search_text
    from subscribers.selection import SORTED, Selection

    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(insert(subscribers), [
            {"email": f"reader{i:05d}@example.com", "name": "Ann Reader", "attributes": {},
             "search": search_text(f"reader{i:05d}@example.com", "Ann Reader")} for i in range(1200)])
    with engine.connect() as conn:
        for text in ("reader", "ann r", "re"):
            rows = Selection.of(text).page(conn)[0]
            assert len(rows) == 50 and rows[0].matched == SORTED + 1
            assert [row.email for row in rows] == sorted(row.email for row in rows)
            assert Selection.of(text).count(conn, cap=SORTED) == SORTED + 1
        assert Selection.of("reader00007").page(conn)[0][0].matched == 1
