"""`mailer send --workers 2` under the faults of issue 22 items 1 and 2, with the real processes, a
slow SMTP sink and PostgreSQL: every backend of the send (the parent's and both workers') terminated
from another session for 2 s (survived) and until they give up (one line each, the workers' journals,
the rerun applies them); SIGTERM and SIGINT to the parent alone (each worker records its batch on the
wire, the parent exits 128 + the signal saying how to continue), and a second signal (at once).
Copies counted per reader at the sink (docs/exactly-once.md)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid

import pytest
from sqlalchemy import create_engine
from sqlalchemy.exc import OperationalError

from mailer.send import leases
from tests.servers.smtp_sink import SmtpSink
from tests.test_send_signals import (
    BATCH,
    READERS,
    command,
    copies,
    counts,
    environment,
    finish,
    project,
    rerun,
    stopped_between_batches,
    wait_for,
)
from tests.test_send_stalls import Terminator
from tests.test_workers_faults import gone

WORKERS = ("--workers", "2")


def start_shared(config, cwd, group: bool = False) -> subprocess.Popen:
    """`mailer send --workers 2`; `group`: in a process group of its own, as a terminal's job is."""
    return subprocess.Popen(command(config, *WORKERS), cwd=cwd, env=environment(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, process_group=0 if group else None)


def live_workers(url: str) -> list[int]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [int(w.rpartition(":")[2]) for w, _, _ in leases.live_workers(conn)]
    finally:
        engine.dispose()


# Three processes and a rerun on a loaded machine: more than the suite's 120 s at times.
@pytest.mark.timeout(300)
@pytest.mark.parametrize("outage, retry_seconds, survives", [(2.0, 300, True), (None, 1, False)])
def test_workers_and_their_parent_through_a_postgresql_outage(tmp_path, repo, pg_url, outage, retry_seconds,
                                                              survives):
    name = f"i22c_{uuid.uuid4().hex[:8]}"
    url = f"{pg_url}&application_name={name}"
    plain = pg_url.split("?")[0].replace("postgresql+psycopg", "postgresql")
    with SmtpSink(data_delay=0.3) as sink:
        config, _ = project(tmp_path, repo, sink.port, url=url, retry_seconds=retry_seconds)
        proc = start_shared(config, tmp_path)
        wait_for(lambda: len(sink.messages) >= 2 * BATCH or proc.poll() is not None, what="both workers sending")
        assert proc.poll() is None, finish(proc)
        with Terminator(plain, name, pg_url.replace("postgresql+psycopg", "postgresql")) as terminator:
            if outage is not None:
                time.sleep(outage)
            else:   # the database stays away until the parent gives up, after its workers did
                wait_for(lambda: proc.poll() is not None, timeout=300, what="the send to give up")
        _, err = finish(proc, timeout=300)
        assert terminator.killed > 0 and "Traceback" not in err, err
        said = " ".join(err.split())   # the console wraps long lines
        assert "the database failed while" in said and "trying again" in said, err
        if survives:
            assert proc.returncode == 0, err
        else:
            assert proc.returncode == 1, err
            errors = [line for line in err.splitlines() if line.startswith("error:")]
            assert len(errors) == 3, err   # one line per process: each worker, then the parent
            assert all("database_retry_seconds" in line for line in errors), err
            assert sum(line.startswith("error: worker ") for line in errors) == 2, err
            last = err.strip().splitlines()[-1]
            assert last.startswith("error: send #1 stopped") and "run the same command again" in last, err
            journals = sorted((tmp_path / "journal").glob("send-1.*.jsonl"))
            assert journals and all(str(j.relative_to(tmp_path)) in last for j in journals), err
            assert not (tmp_path / "journal" / "send-1.jsonl").exists()   # a file per worker, none shared
            again = rerun(config, tmp_path)    # the plain command: the workers are gone (their pids)
            assert again.returncode == 0, again.stderr
            assert "applied from" in again.stderr and "was in flight" not in again.stderr, again.stderr
            assert not list((tmp_path / "journal").glob("send-1*.jsonl"))
        got = copies(sink)
    assert len(got) == READERS and set(got.values()) == {1}
    assert counts(url)["accepted"] == READERS


@pytest.mark.timeout(300)
@pytest.mark.parametrize("sig, code, group", [(signal.SIGTERM, 143, False), (signal.SIGINT, 130, False),
                                              (signal.SIGINT, 130, True)])
def test_a_signal_to_the_parent_stops_each_worker_after_its_batch_on_the_wire(tmp_path, repo, pg_url, sig, code,
                                                                               group):
    """The signal goes to the parent's pid only (a service manager's or `kill`'s): it asks its
    workers to stop; each records its batch; the rerun sends the rest once. Or (`group`) to the
    whole process group, as Ctrl-C at a terminal does: each worker gets it too, once, and the
    parent's word is not taken for a second signal."""
    with SmtpSink(data_delay=0.15) as sink:
        config, url = project(tmp_path, repo, sink.port, url=pg_url)
        proc = start_shared(config, tmp_path, group)
        wait_for(lambda: len(sink.messages) >= BATCH + 2 or proc.poll() is not None, what="batches on the wire")
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        _, err = finish(proc)
        assert proc.returncode == code, err
        stopped_between_batches(url, sink, err, sig, "mailer send 2024-11 --list crank --workers 2")
        assert live_workers(pg_url) == []                              # the workers ended with their parent
        assert "Traceback" not in err and "again: stopping at once" not in err
        again = subprocess.run(command(config, *WORKERS), cwd=tmp_path, env=environment(), capture_output=True,
                               text=True, timeout=120, check=False)
        assert again.returncode == 0, again.stderr
        got = copies(sink)
    assert len(got) == READERS and set(got.values()) == {1}
    assert counts(url)["accepted"] == READERS


@pytest.mark.timeout(300)
def test_a_second_signal_to_the_parent_stops_it_and_its_workers_at_once(tmp_path, repo, pg_url):
    """The workers are killed with their batches on the wire: in flight for the rerun, which names
    them and applies on_interrupted ("skip": nobody gets two copies)."""
    with SmtpSink(data_delay=0.3) as sink:
        config, url = project(tmp_path, repo, sink.port, url=pg_url, on_interrupted="skip")
        proc = start_shared(config, tmp_path)
        wait_for(lambda: len(sink.messages) >= BATCH + 1 or proc.poll() is not None, what="batches on the wire")
        workers = live_workers(pg_url)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = finish(proc)
        assert proc.returncode == 143, err
        assert "again: stopping at once" in err
        for pid in workers:
            wait_for(lambda pid=pid: gone(pid), what="the workers to end")
        assert counts(url)["sending"] > 0                    # their batches on the wire: in flight
        again = rerun(config, tmp_path)
        assert again.returncode == 0, again.stderr
        assert "was in flight when the last run stopped" in again.stderr
        got = copies(sink)
    assert set(got.values()) == {1}
    after = counts(url)
    assert after["accepted"] + after["skipped"] == READERS and after["sending"] == after["pending"] == 0


def test_a_peer_applies_a_dead_workers_journal_before_it_settles_its_batch(tmp_path, db_url):
    """A worker gave up on the database (its journal on this host) and exited without releasing
    its lease; a peer that survived reclaims its batch: the journaled results first (accepted and
    refused readers keep them, never resent), on_interrupted only for the rest, the file deleted.
    Its pid being gone makes it dead at once, before its lease runs out."""
    import socket

    from sqlalchemy import select

    from mailer.config import OnInterrupted
    from mailer.migrate import connect
    from mailer.send import ledger, workers
    from mailer.send.ledger import Mark
    from mailer.send.stall import keep
    from tests.deliver.helpers import seed
    from tests.test_workers import fixed_send

    ended = subprocess.Popen(["true"])
    ended.wait()
    dead = f"{socket.gethostname()}:{ended.pid}"   # a pid of this host that no longer runs
    list_id = seed(db_url, 6)
    engine = connect(db_url)
    with engine.begin() as conn:
        send_id = fixed_send(conn, list_id)
        conn.execute(ledger.sends.update().values(workers=2))
        leases.acquire(conn, dead, 60)                                 # its lease is still live
        batch, ids = leases.claim_next(conn, send_id, dead, 4, 0)
        assert leases.hand(conn, send_id, batch, dead, 60) == 4        # on the wire when it gave up
    journal = tmp_path / "journal"
    keep(journal, send_id, [Mark(ids[0], "accepted", "m1", None), Mark(ids[1], "failed", None, "550 no")], [],
         writer=dead)
    with engine.connect() as conn:
        row = conn.execute(select(ledger.sends)).one()
    notes: list[str] = []
    workers._reclaim(engine, row, OnInterrupted.SKIP, workers.WorkerReport("peer:1"), notes.append, journal)
    with engine.connect() as conn:
        states = dict(conn.execute(select(ledger.deliveries.c.id, ledger.deliveries.c.state)).all())
    engine.dispose()
    assert [states[i] for i in ids] == ["accepted", "failed", "skipped", "skipped"]   # the rest: on_interrupted
    assert not list(journal.glob("*.jsonl"))
    assert "2 readers' results that dead workers could not record were applied" in notes[0], notes
    assert f"batch {batch} (2 readers) was in flight on worker {dead}" in notes[1], notes


def test_after_an_outage_longer_than_the_lease_nobody_reclaims_a_peer_that_is_still_coming_back(
        tmp_path, repo, db_url):
    """Every lease looks expired after such an outage. A worker whose own lease expired settles
    nobody's batches (it is the one taken for dead, and stops); one whose database just came back
    waits a lease (plus the longest retry wait) before it judges others, so a peer still retrying
    can find its own lease lost and record its batch on the wire instead of having it resent."""
    import time as clock
    from datetime import timedelta

    from sqlalchemy import select, update

    from mailer.config import load_settings
    from mailer.migrate import connect
    from mailer.send import ledger, workers
    from mailer.send.stall import LONGEST_WAIT, Stall
    from subscribers.models import utcnow
    from tests.deliver.helpers import seed
    from tests.test_workers import fixed_send, project

    list_id = seed(db_url, 6)
    engine = connect(db_url)
    with engine.begin() as conn:
        send_id = fixed_send(conn, list_id)
        conn.execute(ledger.sends.update().values(workers=2))
        leases.acquire(conn, "peer.example:1", 60)
        leases.acquire(conn, "me.example:2", 60)
        batch, _ = leases.claim_next(conn, send_id, "peer.example:1", 3, 0)
        leases.hand(conn, send_id, batch, "peer.example:1", 60)
        conn.execute(update(leases.worker_leases).values(lease_until=utcnow() - timedelta(seconds=5)))  # both
        row = conn.execute(select(ledger.sends)).one()
    settings = load_settings(project(tmp_path, repo, db_url))
    notes: list[str] = []
    busy = workers._work_on(settings, engine, row, "me.example:2", workers.WorkerReport("me.example:2"),
                            notes.append, lambda: False, lambda: False, 60, Stall(0))
    with engine.connect() as conn:
        still = ledger.counts(conn, send_id)["sending"]
    engine.dispose()
    assert busy is False and still == 3 and notes == []    # the peer's batch on the wire left alone

    stall = Stall(10, sleep=lambda s: None)
    assert workers._may_reclaim(stall, 60)                 # the database never went away
    failures = [OperationalError("UPDATE ...", {}, Exception("terminating connection"))]

    def once(attempt: int) -> None:
        if failures:
            raise failures.pop()
    stall(once, "renewing the worker's lease")             # it came back just now
    assert not workers._may_reclaim(stall, 60)
    stall.recovered = clock.monotonic() - 60 - LONGEST_WAIT
    assert workers._may_reclaim(stall, 60)
