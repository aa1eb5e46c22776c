"""Take-over races between real `mailer send` processes, on SQLite and PostgreSQL (docs/exactly-once.md,
"Liveness"): one lock order (the send's row, then its deliveries), a runner changes only its own
row, and a plain `mailer send` never takes over a live runner. Copies are counted at the local
SendGrid-compatible server."""

from __future__ import annotations

import re
import subprocess
from collections import Counter

import pytest
from sqlalchemy import select

from mailer.send import ledger
from tests.deliver.helpers import seed
from tests.servers.sendgrid_server import SendGridServer
from tests.test_workers import environment, mailer, project, wait_for

READERS, BATCH = 2000, 100


def batched(config, size: int = BATCH):
    text = config.read_text().replace("[delivery.sendgrid]\n", f"[delivery.sendgrid]\nbatch_size = {size}\n")
    config.write_text(text)
    return config


def start(config, cwd, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(mailer(config, "send", "2024-11", "--list", "crank", "--yes", *extra), cwd=cwd,
                            env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out, err


def send_row(engine):
    with engine.connect() as conn:
        return conn.execute(select(ledger.sends)).first()


def test_take_over_of_a_live_runner_no_deadlock_no_stolen_row_no_plain_take_over(tmp_path, repo, db_url):
    """A runs; B takes it over (--take-over) while A's batches are on the wire; C, a plain `mailer
    send` started while B runs, is refused. A stops on its own (exit 1, "taken over") without
    touching B's row, B finishes the send `done`, and only the batch A had on the wire may be doubled."""
    from mailer.migrate import connect

    seed(db_url, READERS)
    engine = connect(db_url)
    with SendGridServer(keep_bodies=False) as server:
        server.stall(0.4, accept=True, times=100_000)   # every request answered late (and taken)
        config = batched(project(tmp_path, repo, db_url, server=server))
        a = start(config, tmp_path)
        procs = [a]
        try:
            wait_for(lambda: server.stats.accepted >= 2, what="A's first batches")
            server.faults.clear()
            server.stall(2.0, accept=True, times=100_000)   # slow from now on: B and C start while A still sends
            a_runner = send_row(engine).runner
            b = start(config, tmp_path, "--take-over")
            procs.append(b)
            wait_for(lambda: send_row(engine).runner not in (None, a_runner), what="B to take the send over")
            c = start(config, tmp_path)
            procs.append(c)
            c_code, c_out, c_err = finished(c)
            assert b.poll() is None, "B ended before C was refused: the test proves nothing"
            b_code, _, b_err = finished(b)
            a_code, _, a_err = finished(a)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        copies = Counter({int(ref.split(".")[1]): n for ref, n in server.stats.copies.items()})
    row = send_row(engine)
    with engine.connect() as conn:
        c_states = ledger.counts(conn, row.id)
    engine.dispose()
    assert "deadlock" not in (a_err + b_err).lower()
    assert b_code == 0, b_err
    assert "taking send #1 over from" in b_err
    assert a_code == 1 and "taken over by another runner" in a_err and "Traceback" not in a_err, a_err
    assert c_code == 1 and "is running in another process" in c_err, c_out + c_err
    assert (row.status, row.last_error) == ("done", None)
    assert c_states["accepted"] == READERS
    assert len(copies) == READERS                                             # nobody lost
    doubled = {r for r, n in copies.items() if n > 1}
    assert max(copies.values()) <= 2 and len(doubled) <= BATCH             # at most A's batch on the wire


def test_a_runner_changes_only_its_own_row(db_url):
    """finish and claim are conditional on runner = me: after a take-over, the loser's `stopped`
    and its next claim change nothing; the compare-and-set take-over refuses a row read stale."""
    from mailer.migrate import connect
    from mailer.send import segments

    list_id = seed(db_url, 3)
    engine = connect(db_url)
    with engine.begin() as conn:
        send_id = ledger.create_send(conn, issue="2024-11", list_id=list_id, list_name="crank", subject="s",
                                     backend="outbox", recipients=segments.readers(conn, "2024-11", list_id, ""))
        stale = conn.execute(select(ledger.sends).where(ledger.sends.c.id == send_id)).one()
        conn.execute(ledger.sends.update().values(runner="elsewhere:1"))   # taken over by another runner
        assert ledger.take_over(conn, stale, "outbox") is False               # read before that: refused
        ids = list(conn.execute(select(ledger.deliveries.c.id)).scalars())
        assert ledger.claim(conn, send_id, ids) == (None, set())
        _, mine = ledger.finish(conn, send_id, ledger.SendStatus.STOPPED, "interrupted")
        assert mine is False
        row = conn.execute(select(ledger.sends)).one()
        assert (row.status, row.last_error, row.runner) == ("sending", None, "elsewhere:1")
        assert ledger.counts(conn, send_id)["pending"] == 3
        fresh = conn.execute(select(ledger.sends)).one()
        assert ledger.take_over(conn, fresh, "outbox") is True
    engine.dispose()


def test_status_tells_a_live_runner_from_a_dead_one(tmp_path, repo, db_url, cli):
    """`mailer send --status` names the runner and its heartbeat's age by the database's clock:
    alive while it runs (not "lease expired"), dead once killed, with its batch named in flight."""
    import os
    import signal

    seed(db_url, 600)
    with SendGridServer(keep_bodies=False) as server:
        server.stall(1.0, accept=True, times=100_000)
        config = batched(project(tmp_path, repo, db_url, server=server))
        a = start(config, tmp_path)
        try:
            wait_for(lambda: server.stats.accepted >= 1, what="the runner's first batch")
            alive = cli("--config", config, "send", "--status", "2024-11", "--list", "crank")
            os.kill(a.pid, signal.SIGKILL)
            a.wait()
            dead = cli("--config", config, "send", "--status", "2024-11")
        finally:
            finished(a)
    assert alive.code == 0 and dead.code == 0, alive.err + dead.err
    assert re.search(rf"runner \S+:{a.pid}: last heartbeat \d+ s ago \(database clock\): alive", alive.out), alive.out
    assert "lease expired" not in alive.out and "its runner's batch on the wire" in alive.out
    assert re.search(rf"runner \S+:{a.pid}: last heartbeat \d+ s ago \(database clock\): dead", dead.out), dead.out
    assert "in flight when its runner stopped" in dead.out


@pytest.mark.filterwarnings("ignore::UserWarning")   # http base_url on purpose
def test_a_take_over_waits_behind_the_live_runners_commit_and_never_deadlocks(settings, pg_url, monkeypatch):
    """The interleaving forced, on PostgreSQL: the live runner A is held inside the transaction that
    records its batch and claims the next (`BatchLoop._commit`), after its last statement, before
    COMMIT; then B takes the send over (`dispatch._start`: the send's row, then its deliveries).
    B must wait behind A's locks (checked with pg_blocking_pids, so the race really happened) and
    go on when A commits; A then finds the send taken over. With A's order reversed (the results
    before the claim: deliveries, then the send's row) PostgreSQL reports a deadlock here."""
    import dataclasses
    import threading
    import uuid

    import psycopg

    from mailer.compose.gate import compose_checked, issue_path
    from mailer.config import OnInterrupted
    from mailer.errors import SendTakenOver
    from mailer.send import dispatch
    from mailer.send.batches import BatchLoop

    name = f"i22c_lock_{uuid.uuid4().hex[:8]}"
    url = f"{pg_url}&application_name={name}"
    seed(url, 250)
    s = dataclasses.replace(settings, database=dataclasses.replace(settings.database, url=url))
    monkeypatch.setenv("MAILER_SECRET_KEY", "test-secret-key-0123456789abcdef")
    composed = compose_checked(issue_path("2024-11", s), s)
    runner_b = f"{ledger.socket.gethostname()}:b-{uuid.uuid4().hex[:6]}"   # B is another runner (a thread here)
    own = ledger.this_runner
    monkeypatch.setattr(ledger, "this_runner", lambda: runner_b if threading.current_thread().name == "B" else own())
    holding, go = threading.Event(), threading.Event()
    write = BatchLoop.write

    def held_write(self, conn, outcome):   # A's last statement of the transaction; then it waits for B
        write(self, conn, outcome)
        if not holding.is_set():
            holding.set()
            go.wait(60)
    monkeypatch.setattr(BatchLoop, "write", held_write)
    errors: dict[str, BaseException] = {}
    notes: list[str] = []

    def run(who: str, work) -> threading.Thread:
        def body() -> None:
            try:
                work()
            except BaseException as exc:  # noqa: BLE001 - asserted below
                errors[who] = exc
        thread = threading.Thread(target=body, name=who)
        thread.start()
        return thread

    a = run("A", lambda: dispatch.run_send(s, dispatch.plan_send(s, composed, "crank"), notice=notes.append))
    assert holding.wait(120), errors
    b = run("B", lambda: dispatch._start(dispatch.plan_send(s, composed, "crank"), OnInterrupted.RESEND,
                                         notes.append, take_over=True))
    plain = pg_url.split("?")[0].replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(plain, autocommit=True) as watch:
        def b_waits() -> bool:
            return bool(watch.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND "
                                      "cardinality(pg_blocking_pids(pid)) > 0", (name,)).fetchone()[0])
        wait_for(lambda: b_waits() or not b.is_alive(), what="B to reach A's locks")
        waited = b.is_alive()
    go.set()
    a.join(120)
    b.join(120)
    assert waited, "B was not blocked behind A: the interleaving did not happen"
    assert not any("deadlock" in str(e).lower() for e in errors.values()), errors
    assert not any("deadlock" in n.lower() for n in notes), notes   # not even one retried by the stall
    assert "B" not in errors, errors["B"]
    assert "A" not in errors or isinstance(errors["A"], SendTakenOver), errors["A"]
    assert any("taking send #1 over" in n for n in notes)
