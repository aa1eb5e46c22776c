"""`mailer send --workers N` and `mailer worker`: one send shared by real worker processes on PostgreSQL,
through the local SendGrid-compatible server, one worker killed with SIGKILL mid-send."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from sqlalchemy import select, text

from mailer.send import leases, ledger
from tests.deliver.helpers import seed
from tests.servers.sendgrid_server import SendGridServer

SECRET = "test-secret-key-0123456789abcdef"
READERS = int(os.environ.get("MAILER_TEST_WORKER_READERS", "20000"))   # docs/workers.md; fewer by hand for a quick run


@pytest.fixture(autouse=True)
def secrets_in_env(monkeypatch):
    monkeypatch.setenv("MAILER_SECRET_KEY", SECRET)
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.test")


def project(tmp_path, repo, url: str, *, server=None, on_interrupted="resend", lease=3):
    """A config.toml for `url`, SendGrid at `server`, with the repo's templates and issues beside it."""
    for folder in ("templates", "issues"):
        (tmp_path / folder).symlink_to(repo / folder)
    config = (repo / "config.toml").read_text(encoding="utf-8")
    config = re.sub(r'(?m)^url = "sqlite:///mailer.db"', f'url = "{url}"', config)
    config = re.sub(r'(?m)^backend = "outbox"', 'backend = "sendgrid"', config)
    config = re.sub(r'(?m)^on_interrupted = "resend"', f'on_interrupted = "{on_interrupted}"', config)
    config = re.sub(r"(?m)^worker_lease_seconds = \d+", f"worker_lease_seconds = {lease}", config)
    if server is not None:
        config = re.sub(r'(?m)^host = "https://api.sendgrid.com"', f'host = "{server.url}"', config)
    path = tmp_path / "config.toml"
    path.write_text(config, encoding="utf-8")
    return path


def seed_many(url: str, n: int) -> None:
    """n active readers of list "crank", one INSERT ... SELECT each (PostgreSQL)."""
    from subscribers.db import connect
    from subscribers.store import create_list

    engine = connect(url)
    with engine.begin() as conn:
        list_id = create_list(conn, "crank").id
        conn.execute(text("INSERT INTO subscribers (id, email, name, attributes, created_at, updated_at) "
                          "SELECT i, 'reader' || i || '@example.org', 'Reader ' || i, '{}', now(), now() "
                          "FROM generate_series(1, :n) AS i"), {"n": n})
        conn.execute(text("INSERT INTO memberships (list_id, subscriber_id, status, consent_at, consent_source, "
                          "created_at, updated_at) SELECT :list, i, 'active', now(), 'import', now(), now() "
                          "FROM generate_series(1, :n) AS i"), {"n": n, "list": list_id})
    engine.dispose()


def fixed_send(conn, list_id: int) -> int:
    """A send of 2024-11 to the whole list, its readers fixed (no worker, no backend)."""
    from mailer.send import segments

    return ledger.create_send(conn, issue="2024-11", list_id=list_id, list_name="crank", subject="s",
                              backend="outbox", recipients=segments.readers(conn, "2024-11", list_id, ""))


def mailer(config, *args: str) -> list[str]:
    return [sys.executable, "-m", "mailer", "--config", str(config), *args]


def environment() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MAILER_CONFIG"}
    env.update(MAILER_SECRET_KEY=SECRET, SENDGRID_API_KEY="SG.test", PYTHONUNBUFFERED="1")
    return env


def wait_for(check, timeout: float = 120.0, what: str = "it"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("on_interrupted, most", [("resend", 2), ("skip", 1)])
def test_four_workers_one_killed_every_reader_once_but_the_dead_workers_batch(tmp_path, repo, pg_url,
                                                                               on_interrupted, most):
    from mailer.migrate import connect

    seed_many(pg_url, READERS)
    engine = connect(pg_url)
    with SendGridServer(keep_bodies=False) as server:
        server.stall(0.15, accept=True, times=10_000)   # every request answered late (taken): time to kill one
        config = project(tmp_path, repo, pg_url, server=server, on_interrupted=on_interrupted)
        parent = subprocess.Popen(mailer(config, "send", "2024-11", "--list", "crank", "--workers", "4", "--yes"),
                                  cwd=tmp_path, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        try:
            def busy_worker():
                if server.stats.accepted < 3:
                    return None
                with engine.connect() as conn:
                    return conn.execute(select(ledger.deliveries.c.worker).where(
                        ledger.deliveries.c.state == "sending", ledger.deliveries.c.worker.is_not(None)).limit(1)
                    ).scalar()
            victim = wait_for(busy_worker, what="a worker with a batch on the wire")
            # paused first, its batches read, then killed: once its pid is gone a peer on this host may
            # reclaim them at once (leases.alive), without waiting out the lease
            os.kill(int(victim.rpartition(":")[2]), signal.SIGSTOP)
            with engine.connect() as conn:
                in_flight = set(conn.execute(select(ledger.deliveries.c.subscriber_id).where(
                    ledger.deliveries.c.worker == victim, ledger.deliveries.c.state == "sending")).scalars())
            os.kill(int(victim.rpartition(":")[2]), signal.SIGKILL)
            out, err = parent.communicate(timeout=600)
        finally:
            if parent.poll() is None:
                parent.kill()
                parent.wait()
        assert parent.returncode == 0, err
        assert "Sent 'CRANK Call | November 2024' to crank via sendgrid" in out
        assert in_flight and len(in_flight) <= 2 * 1000   # its batch on the wire, and the next one claimed
        copies = Counter({int(ref.split(".")[1]): n for ref, n in server.stats.copies.items()})

    with engine.connect() as conn:
        states = dict(conn.execute(text("SELECT state, count(*) FROM deliveries GROUP BY state")).all())
        skipped = set(conn.execute(select(ledger.deliveries.c.subscriber_id).where(
            ledger.deliveries.c.state == "skipped")).scalars())
        status = conn.execute(select(ledger.sends.c.status)).scalar_one()
        leftover = conn.execute(select(leases.worker_leases)).all()
    engine.dispose()
    assert status == "done" and "sending" not in states and "pending" not in states
    assert [row.worker for row in leftover] == [victim]  # every live worker gave its lease back
    others = set(range(1, READERS + 1)) - in_flight
    assert {r: copies[r] for r in others if copies[r] != 1} == {}          # everyone else exactly once
    assert max(copies[r] for r in in_flight) <= most
    if on_interrupted == "resend":
        assert min(copies[r] for r in in_flight) >= 1 and skipped == set()
        assert states == {"accepted": READERS}
    else:
        assert skipped <= in_flight and states["accepted"] + states.get("skipped", 0) == READERS
    assert "was in flight on worker" in err and victim in err     # named, with on_interrupted applied


def test_status_shows_progress_across_workers(cli, tmp_path, repo, pg_url):
    seed(pg_url, 30)
    with SendGridServer() as server:
        config = project(tmp_path, repo, pg_url, server=server)
        done = subprocess.run(mailer(config, "send", "2024-11", "--list", "crank", "--workers", "2", "--yes"),
                              cwd=tmp_path, env=environment(), capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr
        assert sorted(Counter(server.recipients()).values()) == [1] * 30
    result = cli("--config", config, "send", "--status", "2024-11", "--list", "crank")
    assert result.code == 0, result.err
    assert re.search(r"send #1 2024-11 to crank: done, 30/30 done \(30 accepted\)", result.out)
    missing = cli("--config", config, "send", "--status", "2024-12")
    assert missing.code == 1 and "no send of 2024-12 yet" in missing.err


def sqlite_project(tmp_path, repo):
    url = f"sqlite:///{tmp_path / 'mailer.db'}"
    seed(url, 3)
    return project(tmp_path, repo, url), url


def test_sqlite_refuses_more_than_one_worker(cli, tmp_path, repo):
    config, url = sqlite_project(tmp_path, repo)
    result = cli("--config", config, "send", "2024-11", "--list", "crank", "--workers", "2", "--yes")
    assert result.code == 1
    assert result.err.strip() == ('error: --workers 2 needs PostgreSQL ([database] url = "postgresql+psycopg://...")'
                                  ": SQLite lets one process write at a time, so one worker sends there")
    from mailer.migrate import connect

    engine = connect(url)
    with engine.connect() as conn:
        assert conn.execute(select(ledger.sends)).all() == []     # refused before the ledger is touched
    with engine.begin() as conn:
        leases.acquire(conn, "elsewhere:1", 60)                    # a worker already running
    engine.dispose()
    second = cli("--config", config, "worker")
    assert second.code == 1
    assert "a second worker needs PostgreSQL" in second.err and "elsewhere:1 is running" in second.err
    assert len(second.err.strip().splitlines()) == 1


def test_mailer_send_without_list_names_the_option(cli, tmp_path, repo):
    config, _ = sqlite_project(tmp_path, repo)
    result = cli("--config", config, "send", "2024-11", "--yes")
    assert result.code == 2 and "--list" in result.err


def test_a_lease_that_expired_is_not_renewed_and_its_batch_is_reclaimed(db_url):
    """The lease's edges, on both databases: renewed while live; once expired, never renewed again
    (that worker stops), and its batch is another worker's to reclaim, named and settled."""
    from datetime import timedelta

    from sqlalchemy import update

    from mailer.migrate import connect
    from subscribers.models import utcnow

    list_id = seed(db_url, 5)
    engine = connect(db_url)
    with engine.begin() as conn:
        send_id = fixed_send(conn, list_id)
        leases.acquire(conn, "a:1", 60)
        leases.acquire(conn, "b:2", 60)
        first, first_ids = leases.claim_next(conn, send_id, "a:1", 3, 0)
        second, second_ids = leases.claim_next(conn, send_id, "b:2", 3, 0)
        assert len(first_ids) == 3 and len(second_ids) == 2 and not set(first_ids) & set(second_ids)
    with engine.begin() as conn:
        assert leases.renewer("a:1", 60)(conn) is True
        assert leases.orphaned(conn, send_id) == []
        conn.execute(update(leases.worker_leases).where(leases.worker_leases.c.worker == "a:1")
                     .values(lease_until=utcnow() - timedelta(seconds=1)))        # a:1 went silent
        assert leases.renewer("a:1", 60)(conn) is False
        assert leases.orphaned(conn, send_id) == [(first, 3, "a:1")]
        assert leases.reclaim(conn, send_id, [first], resend=True) == 3
        assert leases.holders(conn, send_id) == [("b:2", 2)]
        c = ledger.counts(conn, send_id)
    engine.dispose()
    assert (second, c["pending"], c["sending"]) == (2, 3, 2)


# (after, what a claim of 3 takes: delivery ids by position, 1-based, and its batch number) in order,
# each row seeing what the rows before it left; "release 1" puts batch 1 back to pending.
CLAIMS = [(0, [1, 2, 3], 1), (3, [4, 5, 6], 2), (6, [7], 3), (7, None, None), ("release 1", None, None),
          (7, [1, 2, 3], 4), (3, None, None)]


def test_claims_take_the_next_pending_readers_wrap_around_and_number_only_real_batches(db_url):
    """leases.claim_next, on both databases (PostgreSQL claims in one statement with SKIP LOCKED):
    ids above `after` first, then from the start; nothing pending is None and spends no batch number."""
    from mailer.migrate import connect

    list_id = seed(db_url, 7)
    engine = connect(db_url)
    with engine.begin() as conn:
        send_id = fixed_send(conn, list_id)
        ids = list(conn.execute(select(ledger.deliveries.c.id).where(ledger.deliveries.c.send_id == send_id)
                                .order_by(ledger.deliveries.c.id)).scalars())
    for after, wanted, batch in CLAIMS:
        with engine.begin() as conn:
            if after == "release 1":
                ledger.release(conn, send_id, 1, "given back")
                continue
            got = leases.claim_next(conn, send_id, "a:1", 3, ids[after - 1] if after else 0)
        assert got == (None if wanted is None else (batch, [ids[k - 1] for k in wanted])), after
    with engine.connect() as conn:
        assert conn.execute(select(ledger.sends.c.batches).where(ledger.sends.c.id == send_id)).scalar() == 4
        assert ledger.counts(conn, send_id)["sending"] == 7
    engine.dispose()


def test_two_workers_claiming_at_once_on_postgresql_skip_each_others_readers(pg_url):
    """While one worker's claim is not yet committed, another's picks the next readers (SKIP
    LOCKED), then waits only for the batch counter on the send's row: no reader twice."""
    import threading

    from mailer.migrate import connect

    list_id = seed(pg_url, 7)
    engine = connect(pg_url)
    with engine.begin() as conn:
        send_id = fixed_send(conn, list_id)
    got, pid = {}, {}

    def rival():
        with engine.begin() as two:
            pid["b"] = two.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            got["second"] = leases.claim_next(two, send_id, "b:2", 3, 0)

    with engine.begin() as one:
        got["first"] = leases.claim_next(one, send_id, "a:1", 3, 0)
        thread = threading.Thread(target=rival)
        thread.start()
        wait_for(lambda: pid.get("b") and one.exec_driver_sql(
            f"SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = {pid['b']}").scalar(),
            what="the rival's claim to wait for the batch counter")
    thread.join()
    with engine.begin() as conn:
        got["third"] = leases.claim_next(conn, send_id, "a:1", 3, 0)
    first, second, third = got["first"], got["second"], got["third"]
    assert (len(first[1]), len(second[1]), len(third[1])) == (3, 3, 1)
    assert len(set(first[1]) | set(second[1]) | set(third[1])) == 7
    assert (first[0], second[0], third[0]) == (1, 2, 3)
    engine.dispose()


def test_sigterm_stops_a_worker_after_the_batch_on_the_wire_and_gives_back_what_it_had_not_sent(
        tmp_path, repo, pg_url):
    from mailer.compose.gate import compose_checked, issue_path
    from mailer.config import load_settings
    from mailer.migrate import connect
    from mailer.send import dispatch

    seed_many(pg_url, 3000)
    with SendGridServer(keep_bodies=False) as server:
        server.stall(0.3, accept=True, times=10_000)
        config = project(tmp_path, repo, pg_url, server=server)
        config.write_text(config.read_text().replace("[delivery.sendgrid]\n",
                                                     "[delivery.sendgrid]\nbatch_size = 100\n"))
        settings = load_settings(config)
        plan = dispatch.plan_send(settings, compose_checked(issue_path("2024-11", settings), settings), "crank")
        send_id, _, _ = dispatch._start(plan, "resend", lambda message: None)     # a shared send, no worker yet
        engine = connect(pg_url)
        with engine.begin() as conn:
            conn.execute(ledger.sends.update().values(workers=1))
        worker = subprocess.Popen(mailer(config, "worker", "--forever"), cwd=tmp_path, env=environment(),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: server.stats.accepted >= 2, what="two batches taken")
            worker.send_signal(signal.SIGTERM)
            out, err = worker.communicate(timeout=120)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        copies = server.stats.copies
    assert worker.returncode == 0, err
    assert re.search(r"worker \S+: [\d,]+ sent in 1 send\(s\)", out)
    with engine.connect() as conn:
        c = ledger.counts(conn, send_id)
        left = conn.execute(select(leases.worker_leases)).all()
    engine.dispose()
    assert c["sending"] == 0 and c["pending"] > 0 and left == []
    assert c["accepted"] == len(copies) and set(copies.values()) == {1}
    assert c["accepted"] + c["pending"] == 3000
