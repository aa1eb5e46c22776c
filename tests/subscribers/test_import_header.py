"""CSV import (issue 23): a header of 20,000 columns of one name maps each to its own attribute
(in time linear in the header; no test times it), and no import holds the writer lock while it
reads the file. On SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from subscribers import store
from subscribers.csvfile import map_columns
from subscribers.importer import import_csv

WIDE = 20_000


@pytest.mark.parametrize("header, attributes", [
    (["email", "x", "x", "x"], ["x", "x (2)", "x (3)"]),
    (["email", "x", "x", "x (2)"], ["x", "x (2)", "x (2) (2)"]),          # a given name taken already
    (["email", "x (2)", "x", "x"], ["x (2)", "x", "x (3)"]),
    (["email", "", "", "x"], ["column 2", "column 3", "x"]),
    (["email", "X", "x", " x "], ["X", "x", "x (2)"]),                     # names keep their case; trimmed
])
def test_duplicate_column_names_all_kept(header, attributes):
    assert [key for _, key in map_columns(header, Path("f.csv")).attributes] == attributes


def test_twenty_thousand_columns_of_one_name():
    cols = map_columns(["email"] + ["x"] * WIDE, Path("f.csv"))
    keys = [key for _, key in cols.attributes]
    assert keys == ["x"] + [f"x ({n})" for n in range(2, WIDE + 1)]
    assert [i for i, _ in cols.attributes] == list(range(1, WIDE + 1))


def test_a_wide_file_imports_every_column(engine, crank, tmp_path):
    path = tmp_path / "wide.csv"
    cells = [""] * WIDE
    cells[0], cells[1], cells[-1] = "first", "second", "last"
    path.write_text("email," + ",".join(["x"] * WIDE) + "\nann@example.com," + ",".join(cells) + "\n",
                    encoding="utf-8")
    summary = import_csv(engine, path, "crank")
    assert (summary.imported, summary.invalid) == (1, 0)
    with engine.connect() as conn:
        attributes = store.get_subscriber(conn, "ann@example.com").attributes
    assert {k: v for k, v in attributes.items() if v} == {"x": "first", "x (2)": "second", f"x ({WIDE})": "last"}


class Recording:
    """A lock that notes each time it is taken, and whether it is held now."""

    def __init__(self) -> None:
        self.lock, self.taken = threading.Lock(), 0

    def __enter__(self):
        self.lock.acquire()
        self.taken += 1

    def __exit__(self, *exc):
        self.lock.release()


@pytest.mark.parametrize("dry_run, parallel, taken", [
    (False, False, 4), (False, True, 4),     # each chunk's write alone: free while the next is read
    (True, False, 1),                         # a dry run: its one transaction, once the file is read
])
def test_the_lock_is_held_only_around_the_writes(engine, crank, tmp_path, dry_run, parallel, taken):
    path = tmp_path / "people.csv"
    path.write_text("email,name\n" + "".join(f"p{i}@example.com,P {i}\n" for i in range(8)), encoding="utf-8")
    lock = Recording()
    held = []
    summary = import_csv(engine, path, "crank", chunk_size=2, parallel=parallel, lock=lock, dry_run=dry_run,
                         on_progress=lambda *_: held.append(lock.lock.locked()))
    assert summary.imported == 8
    assert lock.taken == (1 if dry_run else taken) and not lock.lock.locked()
    assert held == [dry_run] * 4             # between chunks (the next one is read): free, unless a dry run


def test_a_broken_line_deep_in_the_file_is_named_as_the_first_thing_to_fix(engine, crank, tmp_path, mailer,
                                                                           monkeypatch):
    """A quote never closed swallows the rest of the file into one field, past the csv module's
    limit: the rows before it are saved, and the advice is to fix that line before running again."""
    from subscribers.errors import ImportInterrupted

    path = tmp_path / "broken.csv"
    good = "".join(f"p{i}@example.com,P {i}\n" for i in range(12))
    path.write_text("email,name\n" + good + 'q@example.com,"never closed\n' + "x" * 200_000 + "\n", encoding="utf-8")
    with pytest.raises(ImportInterrupted) as caught:
        import_csv(engine, path, "crank", chunk_size=5, parallel=False)
    message = str(caught.value)
    assert message.startswith(f"{path}:14: not readable as CSV")
    assert message.endswith("fix line 14 of the file first, then run the same import again to finish the job "
                            "(rows already saved are not added twice)")
    from subscribers import importer

    monkeypatch.setitem(importer.import_csv.__kwdefaults__, "chunk_size", 5)
    result = mailer("subscribers", "import", path, "--list", "crank")
    assert result.code == 1 and "fix line 14 of the file first" in result.err
