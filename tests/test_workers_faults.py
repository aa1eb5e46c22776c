"""Workers under the faults an operator meets (issue 22, docs/workers.md): a coordinator killed while
its workers run, a worker paused past its lease (SIGSTOP/SIGCONT), a worker killed with batches
claimed ahead under on_interrupted = "skip", an ambiguous SendGrid answer on one worker, and an
issue file that is not the workers' to read. Real processes on PostgreSQL, copies counted per reader
at the local SendGrid-compatible server."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections import Counter

import pytest
from sqlalchemy import select

from mailer.send import ledger
from tests.servers.sendgrid_server import SendGridServer
from tests.test_workers import environment, mailer, project, seed_many, wait_for

BATCH = 100


def configured(tmp_path, repo, url, server, *, on_interrupted="resend", lease=3, batch=BATCH):
    config = project(tmp_path, repo, url, server=server, on_interrupted=on_interrupted, lease=lease)
    text = config.read_text().replace("[delivery.sendgrid]\n", f"[delivery.sendgrid]\nbatch_size = {batch}\n")
    config.write_text(text)
    return config


def start(config, cwd, *args: str) -> subprocess.Popen:
    return subprocess.Popen(mailer(config, *args), cwd=cwd, env=environment(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def send_args(*extra: str, issue: str = "2024-11") -> tuple[str, ...]:
    return ("send", issue, "--list", "crank", "--yes", *extra)


def ended(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out, err


def workers_of(engine) -> list[int]:
    """The pids of the workers holding a lease now."""
    from mailer.send import leases

    with engine.connect() as conn:
        return [int(w.rpartition(":")[2]) for w, _, _ in leases.live_workers(conn)]


def copies_of(server) -> Counter:
    return Counter({int(ref.split(".")[1]): n for ref, n in server.stats.copies.items()})


def holding(engine, pid: int, *, handed: bool | None = None) -> set[int]:
    q = select(ledger.deliveries.c.subscriber_id).where(ledger.deliveries.c.state == "sending",
                                                        ledger.deliveries.c.worker.like(f"%:{pid}"))
    if handed is not None:
        q = q.where(ledger.deliveries.c.handed_at.is_not(None) if handed else ledger.deliveries.c.handed_at.is_(None))
    with engine.connect() as conn:
        return set(conn.execute(q).scalars())


def gone(pid: int) -> bool:
    """The process ended (a zombie whose parent was killed counts: init reaps it)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


def cleanup(*procs) -> None:
    for proc in procs:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_rerun_after_the_coordinator_died_joins_the_live_workers_and_settles_nothing_of_theirs(
        tmp_path, repo, pg_url):
    from mailer.migrate import connect

    readers = 3000
    seed_many(pg_url, readers)
    engine = connect(pg_url)
    extra = None
    with SendGridServer(keep_bodies=False) as server:
        server.stall(0.3, accept=True, times=100_000)
        config = configured(tmp_path, repo, pg_url, server)
        parent = start(config, tmp_path, *send_args("--workers", "2"))
        try:
            wait_for(lambda: server.stats.accepted >= 2 and len(workers_of(engine)) == 2, what="two busy workers")
            orphans = workers_of(engine)
            parent.send_signal(signal.SIGKILL)
            parent.wait()
            server.faults.clear()
            server.stall(1.0, accept=True, times=100_000)   # the orphaned workers go on, slowly
            plain_code, _, plain_err = ended(start(config, tmp_path, *send_args()))
            extra = start(config, tmp_path, *send_args("--workers", "2"))
            code, out, err = ended(extra, timeout=600)
            for pid in orphans:
                wait_for(lambda pid=pid: gone(pid), what="the orphaned workers to end")
        finally:
            cleanup(parent, extra)
        copies = copies_of(server)
    with engine.connect() as conn:
        row = conn.execute(select(ledger.sends)).one()
    engine.dispose()
    assert plain_code == 1 and "is shared by workers that are still sending" in plain_err, plain_err
    assert code == 0, err
    assert "was in flight" not in err and "Sent 'CRANK Call | November 2024'" in out
    assert row.status == "done"
    assert len(copies) == readers and set(copies.values()) == {1}   # everyone once: nothing of theirs resent


# A worker frozen inside a transaction keeps its locks until PostgreSQL ends that session
# (subscribers/db.py IDLE_IN_TRANSACTION_SECONDS, 30 s), so about half the runs wait that long on
# top of the send: more than the suite's 120 s under a loaded CI.
@pytest.mark.timeout(240)
def test_a_worker_paused_past_its_lease_never_sends_a_batch_that_was_reclaimed(tmp_path, repo, pg_url):
    """SIGSTOP one worker of two for longer than its lease, SIGCONT it: the batch it had claimed
    ahead was given back and sent by the other; on waking it checks its claim in the database
    before the request and sends nothing more. Under "skip" every reader gets exactly one copy."""
    from mailer.migrate import connect

    readers = 3000
    seed_many(pg_url, readers)
    engine = connect(pg_url)
    with SendGridServer(keep_bodies=False) as server:
        server.stall(0.4, accept=True, times=100_000)
        config = configured(tmp_path, repo, pg_url, server, on_interrupted="skip")
        parent = start(config, tmp_path, *send_args("--workers", "2"))
        try:
            def paused_with_a_batch_ahead():
                for pid in workers_of(engine):
                    if holding(engine, pid, handed=False):
                        os.kill(pid, signal.SIGSTOP)
                        if holding(engine, pid, handed=False):
                            return pid
                        os.kill(pid, signal.SIGCONT)
                return None
            victim = wait_for(paused_with_a_batch_ahead, what="a worker with a batch claimed ahead")
            ahead = holding(engine, victim, handed=False)
            wait_for(lambda: not holding(engine, victim), what="its batches reclaimed by the other worker")
            os.kill(victim, signal.SIGCONT)
            code, _, err = ended(parent, timeout=600)
        finally:
            cleanup(parent)
        copies = copies_of(server)
    engine.dispose()
    assert code == 0, err
    assert ahead and {r: copies[r] for r in ahead if copies[r] != 1} == {}
    assert len(copies) == readers and set(copies.values()) == {1}, Counter(copies.values())
    assert "never handed to the provider: back to pending" in err


def test_a_killed_workers_batch_claimed_ahead_is_sent_even_under_skip(tmp_path, repo, pg_url):
    from mailer.migrate import connect

    readers = 3000
    seed_many(pg_url, readers)
    engine = connect(pg_url)
    with SendGridServer(keep_bodies=False) as server:
        server.stall(0.4, accept=True, times=100_000)
        config = configured(tmp_path, repo, pg_url, server, on_interrupted="skip")
        parent = start(config, tmp_path, *send_args("--workers", "2"))
        try:
            def killed_with_a_batch_ahead():   # paused, its batch ahead read, then killed: once its pid is
                for pid in workers_of(engine):  # gone a peer may reclaim it at once (leases.alive)
                    if holding(engine, pid, handed=False):
                        os.kill(pid, signal.SIGSTOP)
                        ahead = holding(engine, pid, handed=False)
                        if ahead:
                            os.kill(pid, signal.SIGKILL)
                            return pid, ahead
                        os.kill(pid, signal.SIGCONT)
                return None
            _, ahead = wait_for(killed_with_a_batch_ahead, what="a worker with a batch claimed ahead")
            code, _, err = ended(parent, timeout=600)
        finally:
            cleanup(parent)
        copies = copies_of(server)
    with engine.connect() as conn:
        skipped = set(conn.execute(select(ledger.deliveries.c.subscriber_id)
                                   .where(ledger.deliveries.c.state == "skipped")).scalars())
    engine.dispose()
    assert code == 0, err
    assert ahead and all(copies[r] == 1 for r in ahead) and not ahead & skipped   # never handed over: sent
    assert len(copies) == readers and max(copies.values()) == 1   # the batch on the wire was taken: once


def test_an_ambiguous_answer_on_one_worker_stops_the_run_and_nobody_resends_it(tmp_path, repo, pg_url):
    """SendGrid reads one request and hangs up (it took it): that batch stays in doubt, the send
    stops for the operator (exit 1, named), no other worker resends it; the rerun names it and
    applies on_interrupted."""
    from mailer.migrate import connect

    readers = 2000
    seed_many(pg_url, readers)
    engine = connect(pg_url)
    with SendGridServer(keep_bodies=False) as server:
        server.stall(0.2, accept=True, times=3)
        server.drop(accept=True)
        server.stall(0.2, accept=True, times=100_000)
        config = configured(tmp_path, repo, pg_url, server, on_interrupted="skip")
        code, _, err = ended(start(config, tmp_path, *send_args("--workers", "2")), timeout=600)
        first = copies_of(server)
        with engine.connect() as conn:
            row = conn.execute(select(ledger.sends)).one()
            doubt = ledger.counts(conn, row.id)["sending"]
        server.faults.clear()
        again, _, again_err = ended(start(config, tmp_path, *send_args("--workers", "2")), timeout=600)
        copies = copies_of(server)
    engine.dispose()
    assert code == 1 and "batch in doubt on worker" in err and "Traceback" not in err, err
    assert row.status == "stopped" and "in doubt" in row.last_error
    assert 0 < doubt <= BATCH and max(first.values()) == 1       # in doubt, taken once, resent by nobody
    assert again == 0, again_err
    assert "may or may not have taken it; skipping it" in again_err
    assert len(copies) == readers and max(copies.values()) == 1


def test_workers_send_what_the_coordinator_composed_not_their_issues_folder(tmp_path, repo, pg_url):
    """An issue file outside issues_dir: the coordinator composes it once and stores it on the send;
    the workers send that (they never read the file by name)."""
    from mailer.migrate import connect

    seed_many(pg_url, 300)
    drafts = tmp_path / "drafts"
    drafts.mkdir()
    source = (repo / "issues" / "2024-11.md").read_text(encoding="utf-8")
    edited = source.replace('subject = "CRANK Call | November 2024"', 'subject = "CRANK Call | Special edition"')
    (drafts / "special-edition.md").write_text(edited, encoding="utf-8")
    with SendGridServer() as server:
        config = configured(tmp_path, repo, pg_url, server)
        code, _, err = ended(start(config, tmp_path, *send_args("--workers", "2",
                                                                  issue=str(drafts / "special-edition.md"))))
        subjects = {body["subject"] for body in server.accepted}
        to = Counter(server.recipients())
    engine = connect(pg_url)
    with engine.connect() as conn:
        stored = conn.execute(select(ledger.sends.c.composed)).scalar_one()
    engine.dispose()
    assert code == 0, err
    assert len(to) == 300 and set(to.values()) == {1}
    assert ledger.stored_issue(stored).slug == "special-edition"
    assert subjects == {ledger.stored_issue(stored).subject}


def test_a_worker_whose_clock_is_five_minutes_fast_reclaims_nobody_and_stalls_nobody(tmp_path, repo, pg_url):
    """Two `mailer worker`s on one shared send, one under libfaketime 5 minutes ahead: leases,
    heartbeats and the shared SendGrid budget are compared with PostgreSQL's clock, so the fast one
    neither takes its peer's live batches as dead nor holds the budget 5 minutes ahead of it."""
    from mailer.compose.gate import compose_checked, issue_path
    from mailer.config import load_settings
    from mailer.migrate import connect
    from mailer.send import dispatch
    from tests.services import missing
    from tests.test_schedule_process import libfaketime

    lib = libfaketime()
    if lib is None:
        missing("Debian's faketime (libfaketime.so.1) is not installed: apt-get install faketime")
    readers = 3000
    seed_many(pg_url, readers)
    with SendGridServer(keep_bodies=False) as server:
        server.stall(0.3, accept=True, times=100_000)
        config = configured(tmp_path, repo, pg_url, server)
        settings = load_settings(config)
        plan = dispatch.plan_send(settings, compose_checked(issue_path("2024-11", settings), settings), "crank")
        send_id, _, _ = dispatch._start(plan, "resend", lambda message: None)   # a shared send, no coordinator
        engine = connect(pg_url)
        with engine.begin() as conn:
            conn.execute(ledger.sends.update().values(workers=2))
        fast_env = {**environment(), "LD_PRELOAD": str(lib), "FAKETIME": "+5m", "FAKETIME_DONT_FAKE_MONOTONIC": "1",
                    "FAKETIME_NO_CACHE": "1"}
        command = mailer(config, "worker", "--send", str(send_id))
        procs = [subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for env in (environment(), fast_env)]
        try:
            results = [ended(p, timeout=240) for p in procs]
        finally:
            cleanup(*procs)
        copies = copies_of(server)
    with engine.connect() as conn:
        row = conn.execute(select(ledger.sends)).one()
    engine.dispose()
    for code, _, err in results:
        assert code == 0, err
        assert "in flight on worker" not in err                        # nobody's live batch taken as dead
    assert row.status == "done"
    assert len(copies) == readers and set(copies.values()) == {1}
    assert all(re.search(r": [1-9][\d,]* sent", out) for _, out, _ in results)   # both worked, neither stalled


def test_a_shared_send_without_a_stored_issue_is_refused_by_the_workers(tmp_path, repo, db_url):
    """A send started before the composed issue was stored: no worker reads an issues/ folder
    instead; each says how to store it."""
    import pytest

    from mailer.config import load_settings
    from mailer.errors import SendError
    from mailer.migrate import connect
    from mailer.send.workers import run_worker
    from tests.deliver.helpers import seed
    from tests.test_workers import fixed_send

    list_id = seed(db_url, 3)
    engine = connect(db_url)
    with engine.begin() as conn:
        send_id = fixed_send(conn, list_id)
        conn.execute(ledger.sends.update().values(workers=1))
    engine.dispose()
    settings = load_settings(project(tmp_path, repo, db_url))
    with pytest.raises(SendError, match=r"send #1 has no stored composed issue .* `mailer send 2024-11 --list crank "
                                        r"--workers N` again, which stores it"):
        run_worker(settings, only=send_id)


def test_the_schedulers_lease_is_taken_atomically_renewed_and_lost_when_it_expires(db_url):
    from datetime import timedelta

    from mailer.migrate import connect
    from mailer.schedule import states
    from subscribers.models import utcnow

    engine = connect(db_url)
    now = utcnow()
    steps = [("a:1", now, None), ("b:2", now, "a:1"), ("a:1", now + timedelta(seconds=30), None),
             ("b:2", now + timedelta(seconds=89), "a:1"), ("b:2", now + timedelta(seconds=91), None),
             ("a:1", now + timedelta(seconds=92), "b:2")]
    for runner, at, holder in steps:      # each row sees what the rows before it left; leases of 60 s
        with engine.begin() as conn:
            assert states.take_lease(conn, runner, at, 60) == holder, (runner, at - now)
    with engine.begin() as conn:
        states.drop_lease(conn, "b:2")
        assert states.take_lease(conn, "a:1", now + timedelta(seconds=93), 60) is None
    engine.dispose()
