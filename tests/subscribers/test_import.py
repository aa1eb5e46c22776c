"""CSV import on SQLite and PostgreSQL: hostile files, merging, suppression, idempotence, crashes."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from subscribers import importer, store
from subscribers.errors import CsvImportError, ListNotFound, SecretRequired
from subscribers.importer import import_csv
from subscribers.models import Status, history, memberships, subscribers

from .conftest import CSV, SECRET


def _summary(s) -> dict:
    d = s.as_dict()
    d["invalid_rows"] = [(r["line"], r["reason"][:30]) for r in d["invalid_rows"]]
    del d["file"], d["list"], d["dry_run"]
    return d


def _snapshot(engine):
    """Everything an import could change, in a comparable form."""
    with engine.connect() as conn:
        subs = conn.execute(select(subscribers.c.email, subscribers.c.name, subscribers.c.attributes,
                                   subscribers.c.global_status, subscribers.c.updated_at).order_by("email")).all()
        mems = conn.execute(select(memberships.c.list_id, memberships.c.subscriber_id, memberships.c.status,
                                   memberships.c.updated_at).order_by("id")).all()
        return [tuple(r) for r in subs], [tuple(r) for r in mems], conn.execute(
            select(func.count()).select_from(history)).scalar()


def _subscriber(engine, email):
    with engine.connect() as conn:
        return store.get_subscriber(conn, email)


MAILCHIMP = {"rows": 12, "imported": 8, "updated": 0, "unchanged": 0, "invalid": 3, "suppressed": 0,
             "duplicates": 1, "invalid_rows": [(6, "An email address must have an "),
                                               (13, "The part after the @-sign is a"), (14, "no address")]}


def test_mailchimp_export_imports_as_it_is(engine, crank):
    assert _summary(import_csv(engine, CSV / "mailchimp.csv", "crank")) == MAILCHIMP


@pytest.mark.parametrize("email, name, attributes", [
    # a duplicate filled a blank; OPTIN_* and TAGS are not attributes
    # MEMBER_RATING is Mailchimp's bookkeeping, never stored (subscribers/csvfile.py)
    ("ann.lee@example.com", "Ann Lee", {"Address": "1 Main St, Springfield", "Phone Number": "555-0199"}),
    ("bob@example.org", "Bob", {}),
    ("carol@example.net", "Carol Smith", {"Phone Number": "555-0100"}),
    ("dora@xn--bcher-kva.example", "Dora Müller", {"Address": "Königsallee 1"}),
    ("eve@example.com", '=HYPERLINK("http://evil.example","click")',  # stored as text; export neutralizes
     {"Address": "@SUM(1+1)", "Phone Number": "+1 555 0100"}),
    ("frank@example.com", "Frank Multi O'Line", {}),          # quoted CR/LF inside a name: cleaned
    ("gina@example.com", "Gi na [31m Tabbed Sep", {}),        # BEL, ESC, tab, U+2028: cleaned
    ("hank@example.com", "Hank", {}),
])
def test_mailchimp_rows_are_stored_clean(engine, crank, email, name, attributes):
    import_csv(engine, CSV / "mailchimp.csv", "crank")
    found = _subscriber(engine, email)
    assert (found.name, found.attributes) == (name, attributes)


def test_importing_twice_changes_nothing(engine, crank):
    import_csv(engine, CSV / "mailchimp.csv", "crank")
    before = _snapshot(engine)
    second = import_csv(engine, CSV / "mailchimp.csv", "crank")
    assert (second.imported, second.updated, second.unchanged, second.duplicates) == (0, 0, 8, 1)
    assert _snapshot(engine) == before


def test_semicolons_blank_lines_quoted_delimiters(engine, crank):
    summary = import_csv(engine, CSV / "semicolon.csv", "crank")
    assert _summary(summary) == {"rows": 4, "imported": 2, "updated": 0, "unchanged": 0, "invalid": 1,
                                 "suppressed": 0, "duplicates": 1,
                                 "invalid_rows": [(6, "5 fields but the header has 4 ")]}
    assert _subscriber(engine, "ivy@example.com").attributes == {"City": "Oslo; Norway", "Note": 'says "hi", twice'}


def test_status_and_subscribed_at_columns(engine, crank, digest):
    store_rows = import_csv(engine, CSV / "status.csv", "crank")
    assert [(r.line, r.email) for r in store_rows.invalid_rows] == [(6, "pat@example.com")]
    with engine.connect() as conn:
        got = {m.email: (m.status, m.consent_at) for m in conn.execute(
            select(subscribers.c.email, func.coalesce(subscribers.c.global_status, memberships.c.status)
                   .label("status"), memberships.c.consent_at).join_from(memberships, subscribers))}
    assert got["liz@example.com"][0] == "active"
    assert got["liz@example.com"][1].isoformat() == "2024-03-01T12:00:00+00:00"
    assert {e: s for e, (s, _) in got.items()} == {"liz@example.com": "active", "max@example.com": "unsubscribed",
                                                   "ned@example.com": "bounced", "oli@example.com": "unconfirmed"}
    assert _subscriber(engine, "oli@example.com").attributes == {"subscribed_at (as given)": "not a date"}
    assert _subscriber(engine, "ned@example.com").global_status == "bounced"  # suppressed on every list


def test_dry_run_changes_nothing(engine, crank):
    before = _snapshot(engine)
    summary = import_csv(engine, CSV / "mailchimp.csv", "crank", dry_run=True)
    assert _summary(summary) == MAILCHIMP and summary.dry_run
    assert _snapshot(engine) == before


@pytest.mark.parametrize("name, line, message", [
    ("latin1.csv", 2, "not UTF-8"),
    ("no_email_column.csv", 1, "no address column"),
    ("empty.csv", None, "empty"),
    ("blank_cells.csv", None, "empty"),   # a header of empty cells is no header
    ("missing.csv", None, "no such file"),
])
def test_unreadable_files_are_refused_before_anything_is_written(engine, crank, name, line, message):
    before = _snapshot(engine)
    with pytest.raises(CsvImportError, match=message) as err:
        import_csv(engine, CSV / name, "crank")
    assert err.value.line == line and name in str(err.value)
    assert _snapshot(engine) == before


def test_a_typo_in_the_list_name_creates_nothing(engine, crank):
    with pytest.raises(ListNotFound):
        import_csv(engine, CSV / "mailchimp.csv", "crnak")
    with engine.connect() as conn:
        assert [lst.name for lst in store.all_lists(conn)] == ["crank"]


def test_suppressed_addresses_are_left_alone(engine, crank, digest):
    with engine.begin() as conn:
        bob = store.add_subscriber(conn, "bob@example.org", crank, name="Robert").subscriber_id
        store.unsubscribe(conn, bob, crank)
        carol = store.add_subscriber(conn, "carol@example.net", digest).subscriber_id
        store.set_status(conn, carol, None, Status.COMPLAINED, "sendgrid-webhook")
        store.forget(conn, "hank@example.com", SECRET)
    with pytest.raises(SecretRequired):
        import_csv(engine, CSV / "mailchimp.csv", "crank")  # forgotten addresses exist: the key is needed
    summary = import_csv(engine, CSV / "mailchimp.csv", "crank", secret=SECRET)
    assert (summary.imported, summary.suppressed) == (5, 3)
    assert _subscriber(engine, "bob@example.org").name == "Robert"
    with engine.connect() as conn:
        assert store.membership_status(conn, bob, crank) is Status.UNSUBSCRIBED
        assert store.membership_status(conn, carol, crank) is None
        assert store.find_subscriber(conn, "hank@example.com") is None


def test_existing_subscribers_are_updated_or_only_filled(engine, crank, tmp_path):
    with engine.begin() as conn:
        store.add_subscriber(conn, "ann@example.com", crank, name="Old Name", status=Status.UNCONFIRMED)
    csv = tmp_path / "update.csv"
    csv.write_text("email,name,city\nann@example.com,New Name,Oslo\n", encoding="utf-8")
    kept = import_csv(engine, csv, "crank", overwrite=False)
    assert (kept.updated, _subscriber(engine, "ann@example.com").name) == (1, "Old Name")  # city filled, active
    assert _subscriber(engine, "ann@example.com").attributes == {"city": "Oslo"}
    changed = import_csv(engine, csv, "crank")
    assert (changed.updated, _subscriber(engine, "ann@example.com").name) == (1, "New Name")
    with engine.connect() as conn:
        sid = _subscriber(engine, "ann@example.com").id
        assert store.membership_status(conn, sid, crank) is Status.ACTIVE
        assert [h.action for h in store.history_of(conn, sid)] == ["subscribe", "status", "update", "update"]


def test_unconfirmed_import(engine, crank):
    import_csv(engine, CSV / "semicolon.csv", "crank", status=Status.UNCONFIRMED)
    with engine.connect() as conn:
        assert {r.status for r in conn.execute(select(memberships.c.status))} == {"unconfirmed"}


def test_reader_process_gives_the_same_result(engine, crank, digest):
    here = import_csv(engine, CSV / "mailchimp.csv", "crank", parallel=False)
    there = import_csv(engine, CSV / "mailchimp.csv", "digest", parallel=True, chunk_size=3)
    assert _summary(here) == _summary(there)
    with engine.connect() as conn:
        by_list = {lid: sorted(conn.execute(select(memberships.c.subscriber_id).where(memberships.c.list_id == lid))
                               .scalars()) for lid in (crank, digest)}
    assert by_list[crank] == by_list[digest]


def test_duplicates_across_chunks_merge_like_within_one(engine, crank, digest, tmp_path):
    csv = tmp_path / "dups.csv"
    csv.write_text("email,name,city\nann@example.com,Ann,\nbob@example.com,Bob,\nANN@example.com,Annie,Oslo\n",
                   encoding="utf-8")
    one = import_csv(engine, csv, "crank", chunk_size=100)
    two = import_csv(engine, csv, "digest", chunk_size=1)
    assert (one.imported, one.duplicates) == (2, 1) and _summary(two)["duplicates"] == 1
    ann = _subscriber(engine, "ann@example.com")
    assert (ann.name, ann.attributes) == ("Ann", {"city": "Oslo"})  # first wins, later fills blanks
    before = _snapshot(engine)
    import_csv(engine, csv, "crank", chunk_size=1)
    assert _snapshot(engine) == before


def test_a_crash_mid_import_leaves_whole_chunks_and_a_rerun_finishes(engine, crank, monkeypatch):
    real_run, calls = importer._Job.run, []

    def crash_on_third_chunk(self, rows):
        calls.append(len(rows))
        if len(calls) == 3:
            raise KeyboardInterrupt  # as if the process were stopped mid-write
        real_run(self, rows)

    monkeypatch.setattr(importer._Job, "run", crash_on_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        import_csv(engine, CSV / "mailchimp.csv", "crank", chunk_size=3)
    with engine.connect() as conn:
        half = conn.execute(select(func.count()).select_from(memberships)).scalar()
        logged = conn.execute(select(func.count()).select_from(history).where(history.c.action == "subscribe")).scalar()
    assert 0 < half < 8 and logged == half  # whole chunks only: every membership has its history row
    monkeypatch.setattr(importer._Job, "run", real_run)
    rerun = import_csv(engine, CSV / "mailchimp.csv", "crank", chunk_size=3)
    assert rerun.imported == 8 - half and rerun.imported + rerun.unchanged == 8


def test_a_failure_part_way_says_what_was_saved_and_that_a_rerun_finishes(engine, crank, monkeypatch, mailer):
    from subscribers.errors import ImportInterrupted, StoreError

    real_run, calls = importer._Job.run, []

    def fail_on_third_chunk(self, rows):
        calls.append(len(rows))
        if len(calls) == 3:
            raise StoreError("the database went away")
        real_run(self, rows)

    monkeypatch.setattr(importer._Job, "run", fail_on_third_chunk)
    with pytest.raises(ImportInterrupted) as caught:
        import_csv(engine, CSV / "mailchimp.csv", "crank", chunk_size=3)
    saved = caught.value.summary
    assert saved.rows == 6 and saved.imported > 0
    assert str(caught.value) == (
        f"the database went away; the first 6 rows are saved ({saved.imported} new, {saved.updated} updated, "
        "0 unchanged, 0 suppressed); run the same import again to finish the job (rows already saved are not "
        "added twice)")
    calls.clear()
    monkeypatch.setitem(importer.import_csv.__kwdefaults__, "chunk_size", 3)
    result = mailer("subscribers", "import", CSV / "mailchimp.csv", "--list", "crank")
    assert result.code == 1 and "run the same import again to finish the job" in result.err
    assert len(result.err.strip().splitlines()) == 1
    monkeypatch.setattr(importer._Job, "run", real_run)
    rerun = import_csv(engine, CSV / "mailchimp.csv", "crank")
    assert rerun.imported + rerun.unchanged == 8


def test_a_reader_process_that_dies_reports_its_traceback(engine, crank, monkeypatch):
    monkeypatch.setattr(importer, "READER", "tests.subscribers.crashing_reader")
    with pytest.raises(CsvImportError) as caught:
        import_csv(engine, CSV / "mailchimp.csv", "crank", parallel=True)
    text = str(caught.value)
    assert "exit code 1" in text and "Traceback" in text
    assert "RuntimeError: the reader broke while starting" in text


def test_a_bad_header_closes_the_file(tmp_path):
    from subscribers.csvfile import CsvSource

    path = tmp_path / "no-address.csv"
    path.write_text("name,city\nAnn,Oslo\n", encoding="utf-8")
    source = CsvSource(path)
    with pytest.raises(CsvImportError, match="no address column"):
        source.__enter__()
    assert source._raw.closed


QUOTED_CELLS = [
    # (cell in the file, name stored) - a leading ' goes only where our export put it: before a
    # character a spreadsheet would run (= + - @ tab CR)
    ("'Neill", "'Neill"),
    ("'Brien Co", "'Brien Co"),
    ("'=SUM(A1)", "=SUM(A1)"),
    ("'+1 555", "+1 555"),
    ("'-x", "-x"),
    ("'@home", "@home"),
    ("''=x", "'=x"),
    ("'''y", "'''y"),
    ("'", "'"),
]


@pytest.mark.parametrize("cell, stored", QUOTED_CELLS)
def test_a_leading_quote_is_kept_unless_our_export_added_it(engine, crank, tmp_path, cell, stored):
    import csv

    path = tmp_path / "quotes.csv"
    with path.open("w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows([["email", "name", "note"], ["ann@example.com", cell, cell]])
    import_csv(engine, path, "crank")
    ann = _subscriber(engine, "ann@example.com")
    assert (ann.name, ann.attributes) == (stored, {"note": stored})


def test_a_header_that_is_not_utf8_is_named_like_any_other_line(engine, crank, tmp_path):
    bad = tmp_path / "latin1.csv"
    bad.write_bytes("em\u00e9ail,name\nann@example.com,Ann\n".encode("latin-1"))
    with pytest.raises(CsvImportError, match=r"not UTF-8 \(byte 0xe9\)") as caught:
        import_csv(engine, bad, "crank")
    assert caught.value.line == 1
