"""CSV export: effective statuses, formula cells neutralized, and a round trip through import."""

from __future__ import annotations

import csv

import pytest
from sqlalchemy import select

from subscribers import store
from subscribers.csvfile import neutralize, restore
from subscribers.exporter import export_csv
from subscribers.importer import import_csv
from subscribers.models import Status, memberships, subscribers

from .conftest import CSV


@pytest.mark.parametrize("value, cell", [
    ("=SUM(A1)", "'=SUM(A1)"), ("+1 555", "'+1 555"), ("-2", "'-2"), ("@cmd", "'@cmd"),
    ("\tx", "'\tx"), ("\rx", "'\rx"), ("'=x", "''=x"), ("Ann", "Ann"), ("", ""), ("a=b", "a=b"),
    ("'plain", "'plain"),
])
def test_neutralize_and_restore(value, cell):
    assert neutralize(value) == cell
    assert restore(cell) == value


def _read(path):
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def _members(engine, list_id):
    with engine.connect() as conn:
        rows = conn.execute(select(subscribers.c.email, subscribers.c.name, subscribers.c.attributes,
                                   memberships.c.status, subscribers.c.global_status)
                            .join_from(memberships, subscribers).where(memberships.c.list_id == list_id)
                            .order_by(subscribers.c.email)).all()
    return [(r.email, r.name, r.attributes, r.global_status or r.status) for r in rows]


def test_export_neutralizes_formulas(engine, crank, tmp_path):
    import_csv(engine, CSV / "mailchimp.csv", "crank")
    summary = export_csv(engine, "crank", tmp_path / "out.csv")
    rows = {r["email"]: r for r in _read(tmp_path / "out.csv")}
    assert summary.rows == 8 and list(rows["eve@example.com"])[:4] == ["email", "name", "status", "subscribed_at"]
    eve = rows["eve@example.com"]
    assert (eve["name"], eve["Address"], eve["Phone Number"]) == (
        "'=HYPERLINK(\"http://evil.example\",\"click\")", "'@SUM(1+1)", "'+1 555 0100")
    for row in rows.values():
        assert not any(cell.startswith(("=", "+", "-", "@", "\t", "\r")) for cell in row.values())


def test_round_trip(engine, crank, digest, tmp_path):
    import_csv(engine, CSV / "mailchimp.csv", "crank")
    import_csv(engine, CSV / "status.csv", "crank")
    with engine.begin() as conn:
        store.unsubscribe(conn, store.get_subscriber(conn, "bob@example.org").id, crank)
    export_csv(engine, "crank", tmp_path / "crank.csv")
    again = import_csv(engine, tmp_path / "crank.csv", "digest")
    # ned bounced (suppressed on every list), so he is not added to another list; all else arrives
    assert (again.invalid, again.suppressed, again.imported) == (0, 1, 11)
    assert _members(engine, digest) == [m for m in _members(engine, crank) if m[0] != "ned@example.com"]
    export_csv(engine, "digest", tmp_path / "digest.csv")

    def comparable(name):
        return [{k: v for k, v in r.items() if k != "subscribed_at"} for r in _read(tmp_path / name)
                if r["email"] != "ned@example.com"]

    assert comparable("crank.csv") == comparable("digest.csv")


@pytest.mark.parametrize("status, emails", [
    (Status.ACTIVE, ["liz@example.com"]), (Status.BOUNCED, ["ned@example.com"]),
    (Status.UNSUBSCRIBED, ["max@example.com"]), (Status.COMPLAINED, []),
])
def test_status_filter(engine, crank, tmp_path, status, emails):
    import_csv(engine, CSV / "status.csv", "crank")
    export_csv(engine, "crank", tmp_path / "out.csv", status=status)
    assert [r["email"] for r in _read(tmp_path / "out.csv")] == emails


def test_an_interrupted_export_leaves_no_half_file(engine, crank, tmp_path, monkeypatch):
    import subscribers.exporter as exporter

    import_csv(engine, CSV / "mailchimp.csv", "crank")
    (tmp_path / "out").mkdir()
    target = tmp_path / "out" / "out.csv"
    target.write_text("previous export\n")
    monkeypatch.setattr(exporter, "_cells", lambda row, keys: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        export_csv(engine, "crank", target)
    assert target.read_text() == "previous export\n" and list(target.parent.iterdir()) == [target]
