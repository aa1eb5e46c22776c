"""The database stalls while `mailer send` runs (a real process, a slow SMTP sink): a SQLite writer
holding the lock past the busy timeout, PostgreSQL connections terminated from another session.
A short outage is survived; a long one ends in one line, the provider's answers kept in the journal
the rerun applies. Every reader's copies are counted at the sink (docs/exactly-once.md, "Database stalls")."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime

import psycopg
import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError

from mailer.errors import DatabaseUnavailable
from mailer.send import ledger
from mailer.send.ledger import Deferral, Mark
from mailer.send.stall import Stall, apply, journal_file, keep
from tests.servers.smtp_sink import SmtpSink
from tests.test_send_signals import BATCH, READERS, copies, counts, finish, project, rerun, start, wait_for

LOCKER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""


def test_a_sqlite_writer_holding_the_lock_past_the_busy_timeout_is_waited_out(tmp_path, repo):
    with SmtpSink(data_delay=0.2) as sink:
        config, url = project(tmp_path, repo, sink.port)
        proc = start(config, tmp_path)
        wait_for(lambda: len(sink.messages) >= BATCH + 1, what="the second batch on the wire")
        locker = subprocess.Popen([sys.executable, "-c", LOCKER, str(tmp_path / "mailer.db"), "36"],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
            _, err = finish(proc, timeout=300)
        finally:
            locker.kill()
            locker.wait()
        assert proc.returncode == 0, err
        said = " ".join(err.split())   # the console wraps long lines
        assert re.search(r"the database failed while \S+ .*\(database is locked\); trying again", said), err
        assert "Traceback" not in err
        got = copies(sink)
    assert len(got) == READERS and set(got.values()) == {1}
    assert counts(url) == {**counts(url), "accepted": READERS, "sending": 0, "pending": 0}


class Terminator:
    """Terminates every PostgreSQL backend of one application_name, again and again, from its own
    session: the send's connections die mid-statement, and so do the new ones it opens."""

    def __init__(self, plain_url: str, name: str, schema_url: str | None = None):
        self.plain, self.name, self.schema_url = plain_url, name, schema_url
        self.stopping = threading.Event()
        self.killed = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with psycopg.connect(self.plain, autocommit=True) as conn:
            holder = self._hold(conn)
            try:
                while not self.stopping.wait(0.02):
                    self._kill(conn)
            finally:
                if holder is not None:
                    holder.close()

    def _kill(self, conn) -> None:
        self.killed += len(conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                        "WHERE application_name = %s", (self.name,)).fetchall())

    def _hold(self, conn):
        """With `schema_url`, also hold the send's tables locked (ACCESS EXCLUSIVE) from another
        session for the whole outage, so not one of the send's statements slips in between two
        rounds of terminations: the database is away until the outage ends."""
        if self.schema_url is None:
            return None
        holder = psycopg.connect(self.schema_url)
        lock = "LOCK TABLE sends, deliveries IN ACCESS EXCLUSIVE MODE"
        locking = threading.Thread(target=holder.execute, args=(lock,))
        locking.start()
        while locking.is_alive():   # the send's open transaction is in the way until terminated
            self._kill(conn)
            locking.join(0.02)
        return holder

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.thread.join()


@pytest.mark.parametrize("outage, retry_seconds, survives", [(2.0, 300, True), (None, 1, False)])
def test_postgresql_connections_terminated_mid_send(tmp_path, repo, pg_url, outage, retry_seconds, survives):
    name = f"i22a_{uuid.uuid4().hex[:8]}"
    url = f"{pg_url}&application_name={name}"
    plain = pg_url.split("?")[0].replace("postgresql+psycopg", "postgresql")
    with SmtpSink(data_delay=0.2) as sink:
        config, _ = project(tmp_path, repo, sink.port, url=url,
                            retry_seconds=retry_seconds)
        proc = start(config, tmp_path)
        wait_for(lambda: len(sink.messages) >= BATCH + 1 or proc.poll() is not None, what="the second batch")
        assert proc.poll() is None, finish(proc)
        with Terminator(plain, name, pg_url.replace("postgresql+psycopg", "postgresql")) as terminator:
            if outage is not None:
                time.sleep(outage)
            else:   # the database stays away until the send gives up
                wait_for(lambda: proc.poll() is not None, what="the send to give up")
        _, err = finish(proc, timeout=300)
        assert terminator.killed > 0 and "Traceback" not in err
        if survives:
            assert proc.returncode == 0, err
        else:
            assert proc.returncode == 1
            last = err.strip().splitlines()[-1]
            assert last.startswith("error: send stopped after") and "database_retry_seconds" in last
            assert "are kept in" in last and "journal/send-1.jsonl" in last
            assert (tmp_path / "journal" / "send-1.jsonl").is_file()
            again = rerun(config, tmp_path)
            assert again.returncode == 0, again.stderr
            assert "applied from" in again.stderr and "was in flight" not in again.stderr
            assert not (tmp_path / "journal" / "send-1.jsonl").exists()
        got = copies(sink)
    assert len(got) == READERS and set(got.values()) == {1}
    assert counts(url)["accepted"] == READERS


# --- the parts, on their own ----------------------------------------------------------------------

def _locked() -> OperationalError:
    return OperationalError("UPDATE deliveries ...", {}, Exception("database is locked"))


@pytest.mark.parametrize("failures, seconds, outcome", [
    ([_locked()], 10, "second try"),                                        # a short outage: retried
    ([InterfaceError("SELECT 1", {}, Exception("connection already closed"))] * 2, 10, "third try"),
    ([IntegrityError("INSERT ...", {}, Exception("UNIQUE constraint failed"))], 10, IntegrityError),  # a bug
    ([_locked()] * 3, 0, DatabaseUnavailable),                              # stays away: gives up
])
def test_stall_retries_what_an_outage_causes_and_nothing_else(failures, seconds, outcome):
    sleeps: list[float] = []
    notes: list[str] = []
    pending = list(failures)

    def work(attempt: int) -> str:
        if pending:
            raise pending.pop(0)
        return ["first try", "second try", "third try"][attempt]

    stall = Stall(seconds, sleep=sleeps.append, notice=notes.append)
    if isinstance(outcome, str):
        assert stall(work, "recording batch 3") == outcome
        assert sleeps == [0.5, 1.0][:len(failures)] and len(notes) == 1 and "recording batch 3" in notes[0]
        return
    with pytest.raises(outcome) as raised:
        stall(work, "recording batch 3")
    if outcome is DatabaseUnavailable:
        assert str(raised.value) == ("the database failed while recording batch 3, and on every try for 0 s "
                                     "([delivery] database_retry_seconds): database is locked")


def test_the_journal_is_applied_to_readers_still_in_flight_only_and_a_cut_line_is_skipped(tmp_path):
    from mailer.migrate import connect
    from tests.deliver.helpers import seed
    from tests.test_workers import fixed_send

    url = f"sqlite:///{tmp_path / 'store.db'}"
    list_id = seed(url, 4)
    engine = connect(url)
    with engine.begin() as conn:
        send_id = fixed_send(conn, list_id)
        ids = [r.delivery_id for r in ledger.peek(conn, send_id, list_id, 0, 10)]
        batch, _ = ledger.claim(conn, send_id, ids)
        assert ledger.claimed_before(conn, send_id, ids) == (batch, set(ids))   # a COMMIT that took effect
        ledger.mark(conn, [Mark(ids[3], "accepted", "m4", None)])              # the database took this one
    at = datetime(2030, 1, 1, tzinfo=UTC)
    keep(tmp_path / "journal", send_id, [Mark(ids[0], "accepted", "m1", None), Mark(ids[3], "failed", None, "550")],
         [Deferral(ids[1], "450 busy", at)])
    with journal_file(tmp_path / "journal", send_id).open("a") as f:
        f.write('{"marks": [[')   # cut short by a crash
    worker = keep(tmp_path / "journal", send_id, [Mark(ids[2], "failed", None, "550 no")], [], writer="box:42")
    other = keep(tmp_path / "journal", send_id + 10, [Mark(ids[2], "accepted", "m9", None)], [])  # send #11's
    assert worker.name == f"send-{send_id}.box-42.jsonl"   # a worker's own file: none shared
    with engine.begin() as conn:
        applied, path = apply(conn, tmp_path / "journal", send_id)
        assert apply(conn, None, send_id) == (0, []) and apply(conn, tmp_path / "none", send_id) == (0, [])
        rows = {r.id: (r.state, r.provider_id, r.next_attempt_at)
                for r in conn.execute(select(ledger.deliveries).order_by(ledger.deliveries.c.id))}
        assert ledger.claimed_before(conn, send_id, ids[3:]) is None
    engine.dispose()
    assert applied == 3 and path == [worker, journal_file(tmp_path / "journal", send_id)]   # every file of the send
    assert other.is_file() and other not in path
    assert rows == {ids[0]: ("accepted", "m1", None), ids[1]: ("deferred", None, at),
                    ids[2]: ("failed", None, None), ids[3]: ("accepted", "m4", None)}


@pytest.mark.parametrize("error, one_line", [
    (_locked(), True),
    (ValueError("a bug"), False),
])
def test_a_command_meeting_a_database_gone_away_says_so_in_one_line(cli, monkeypatch, error, one_line):
    from mailer import cli as cli_module

    def fail(*args, **kwargs):   # what a command outside a send meets when the database goes away
        raise error

    monkeypatch.setattr(cli_module, "app", fail)
    if not one_line:
        with pytest.raises(ValueError):
            cli("db", "current")
        return
    result = cli("db", "current")
    assert result.code == 1 and result.err.startswith("error: the database failed: database is locked;")
