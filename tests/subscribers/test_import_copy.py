"""Import edges the PostgreSQL path (COPY into a staging table, merge in SQL: subscribers/pg_copy.py)
could get wrong; each runs on both databases, so both paths must agree."""

from __future__ import annotations

from datetime import UTC

import pytest
from sqlalchemy import func, select, text

from subscribers import pg_copy, store
from subscribers.importer import import_csv
from subscribers.models import history, memberships, subscribers

from .test_import import _snapshot, _subscriber, _summary

TRICKY = [  # (name cell, city cell) -> stored (name, city): what COPY's text format would mangle
    ('"O\'Brien, ""Bob"""', "\\N", "O'Brien, \"Bob\"", "\\N"),
    ("back\\slash", "\\.", "back\\slash", "\\."),
    ('"tab\there"', '"new\nline"', "tab here", "new line"),
    ("Zoë 東京", "a\\tb", "Zoë 東京", "a\\tb"),
]


def _csv(tmp_path, lines: list[str], name: str = "in.csv"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_quotes_tabs_backslashes_newlines_arrive_as_written(engine, crank, tmp_path):
    rows = [f"r{i}@example.com,{name},{city}" for i, (name, city, _, _) in enumerate(TRICKY)]
    summary = import_csv(engine, _csv(tmp_path, ["email,name,city", *rows]), "crank")
    assert (summary.imported, summary.invalid) == (len(TRICKY), 0)
    for i, (_, _, name, city) in enumerate(TRICKY):
        stored = _subscriber(engine, f"r{i}@example.com")
        assert (stored.name, stored.attributes) == (name, {"city": city})


@pytest.mark.parametrize("chunk_size", [2, 1000])
def test_a_bad_row_in_the_middle_is_reported_and_the_rest_imported(engine, crank, tmp_path, chunk_size):
    lines = ["email,name", "a@example.com,A", "b@example.com,B", "not-an-address,X", "c@example.com,C",
             "e@example.com,E"]
    summary = import_csv(engine, _csv(tmp_path, lines), "crank", chunk_size=chunk_size)
    assert (summary.rows, summary.imported, summary.invalid) == (5, 4, 1)
    assert [(r.line, r.email) for r in summary.invalid_rows] == [(4, "not-an-address")]
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(memberships)).scalar() == 4


def test_a_crash_inside_a_chunk_keeps_none_of_it_and_a_rerun_finishes(engine, crank, tmp_path, monkeypatch):
    lines = ["email,name,city"] + [f"p{i}@example.com,P{i},Oslo" for i in range(10)]
    path = _csv(tmp_path, lines)
    real, calls = store.set_status, []

    def crash_on_second_chunk(*args, **kwargs):  # the import's status moves run mid-chunk, both paths
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    with engine.begin() as conn:  # unconfirmed members whom the file makes active: a status move each
        for i in (1, 6):
            store.add_subscriber(conn, f"p{i}@example.com", crank, status="unconfirmed")
    monkeypatch.setattr(store, "set_status", crash_on_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        import_csv(engine, path, "crank", chunk_size=5)
    with engine.connect() as conn:
        kept = conn.execute(select(func.count()).select_from(memberships)).scalar()
        logged = conn.execute(select(func.count()).select_from(history).where(history.c.action == "subscribe")).scalar()
    assert (kept, logged) == (2 + 4, 2 + 4)  # the first chunk whole, nothing of the second
    monkeypatch.setattr(store, "set_status", real)
    rerun = import_csv(engine, path, "crank", chunk_size=5)
    assert (rerun.imported, rerun.updated, rerun.unchanged) == (4, 1, 5)  # p6 moves to active now
    again = import_csv(engine, path, "crank", chunk_size=5)
    assert (again.imported, again.updated, again.unchanged) == (0, 0, 10)


def test_dry_run_across_chunks_changes_nothing(engine, crank, tmp_path):
    path = _csv(tmp_path, ["email,name"] + [f"d{i}@example.com,D{i}" for i in range(7)] + ["D3@example.com,x"])
    before = _snapshot(engine)
    summary = import_csv(engine, path, "crank", dry_run=True, chunk_size=3)
    assert (summary.imported, summary.duplicates) == (7, 1)
    assert _snapshot(engine) == before


# A Mailchimp-style consent record without tags goes through the PostgreSQL merge too: (address,
# cells after it) -> the membership's (consent_at, consent_ip, optin_at, optin_ip) after the import;
# "now" is the import's time (no record), "kept" the membership from before (never rewritten).
# joined@ is stored already, on another list only.
CONSENT = [
    ("new@example.com", "2023-03-05 10:22:31,203.0.113.5,2023-03-05 10:25:02,203.0.113.9",
     ("2023-03-05 10:25:02", "203.0.113.9", "2023-03-05 10:22:31", "203.0.113.5")),
    ("asked@example.com", "2023-03-05 10:22:31,203.0.113.5,,",
     ("2023-03-05 10:22:31", "203.0.113.5", "2023-03-05 10:22:31", "203.0.113.5")),
    ("blank@example.com", ",,,", ("now", None, None, None)),
    ("joined@example.com", "2023-04-01 08:00:00,198.51.100.7,,",
     ("2023-04-01 08:00:00", "198.51.100.7", "2023-04-01 08:00:00", "198.51.100.7")),
    ("member@example.com", "2023-04-01 08:00:00,198.51.100.7,,", "kept"),  # on the list before
]


def test_a_consent_record_without_tags_is_kept_on_both_paths(engine, crank, tmp_path):
    from datetime import datetime

    with engine.begin() as conn:
        store.add_subscriber(conn, "joined@example.com", store.create_list(conn, "other").id)
        store.add_subscriber(conn, "member@example.com", crank)
    before = _consents(engine, crank)["member@example.com"]
    lines = ["Email Address,OPTIN_TIME,OPTIN_IP,CONFIRM_TIME,CONFIRM_IP"] + [f"{a},{cells}" for a, cells, _ in CONSENT]
    started = datetime.now(UTC)
    summary = import_csv(engine, _csv(tmp_path, lines), "crank")
    assert (summary.imported, summary.unchanged) == (4, 1)
    got = _consents(engine, crank)
    for address, _, wanted in CONSENT:
        if wanted == "kept":
            assert got[address] == before, address
            continue
        at, *rest = got[address]
        at = "now" if at >= started else at.strftime("%Y-%m-%d %H:%M:%S")
        optin = rest[1].strftime("%Y-%m-%d %H:%M:%S") if rest[1] else None
        assert (at, rest[0], optin, rest[2]) == wanted, address


def _consents(engine, list_id: int) -> dict:
    with engine.connect() as conn:
        return {r.email: (r.consent_at, r.consent_ip, r.optin_at, r.optin_ip) for r in conn.execute(
            select(subscribers.c.email, memberships.c.consent_at, memberships.c.consent_ip, memberships.c.optin_at,
                   memberships.c.optin_ip).join_from(memberships, subscribers).where(memberships.c.list_id == list_id))}


def test_without_the_right_to_skip_foreign_key_checks_the_result_is_the_same(pg_url, tmp_path, monkeypatch):
    from subscribers.db import connect

    engine = connect(pg_url)
    def path(domain):  # a file of addresses new to the store
        return _csv(tmp_path, ["email,name,city", f"a@{domain},A,", f"b@{domain},B,Oslo", f"A@{domain},,Rome"], domain)

    with engine.begin() as conn:
        fast_list, slow_list = store.create_list(conn, "fast").id, store.create_list(conn, "slow").id
    fast = import_csv(engine, path("fast.example"), "fast", chunk_size=1)
    monkeypatch.setattr(pg_copy, "may_skip_fk_checks", lambda conn: False)
    slow = import_csv(engine, path("slow.example"), "slow", chunk_size=1)
    assert _summary(fast) == _summary(slow)
    with engine.connect() as conn:
        for lid in (fast_list, slow_list):
            assert conn.execute(select(func.count()).select_from(memberships).where(memberships.c.list_id == lid)
                                ).scalar() == 2
        assert conn.execute(select(subscribers.c.attributes).where(subscribers.c.email == "a@slow.example")
                            ).scalar() == {"city": "Rome"}  # the duplicate filled the blank
    engine.dispose()


def test_a_signup_between_plan_and_insert_is_kept_and_the_rest_imported(pg_url, tmp_path, monkeypatch):
    """Someone signs up with an address of the file while the import runs: the fast insert meets a
    unique violation, and the chunk's new rows go again around that address."""
    from subscribers.db import connect

    engine = connect(pg_url)
    with engine.begin() as conn:
        store.create_list(conn, "crank")
    path = _csv(tmp_path, ["email,name", "a@example.com,A", "b@example.com,B", "c@example.com,C"])
    real = pg_copy.PgMerge._drop_forgotten

    def signup_then_continue(self):  # runs right after the plan is made
        with engine.begin() as other:
            other.execute(text("INSERT INTO subscribers (email, name, attributes, created_at, updated_at) "
                               "VALUES ('b@example.com', 'Signed Up', '{}', now(), now())"))
        real(self)

    monkeypatch.setattr(pg_copy.PgMerge, "_drop_forgotten", signup_then_continue)
    summary = import_csv(engine, path, "crank")
    assert summary.imported == 2
    with engine.connect() as conn:
        names = dict(conn.execute(select(subscribers.c.email, subscribers.c.name)).all())
    assert names == {"a@example.com": "A", "b@example.com": "Signed Up", "c@example.com": "C"}
    monkeypatch.setattr(pg_copy.PgMerge, "_drop_forgotten", real)
    assert import_csv(engine, path, "crank").imported == 1  # the next run joins b to the list
    engine.dispose()
