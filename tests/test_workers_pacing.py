"""[delivery.pacing] and warm-up across `mailer send --workers N`: real worker processes on PostgreSQL,
sending to the real SMTP sink. The per-provider limits are shared (a rate_budget row per send and
provider, by the database's clock), a `421 4.7.0` to any worker slows that provider for all, and a
warm-up's daily cap holds for the workers together (their claims are cut to what is left today;
the claims themselves also on SQLite)."""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from mailer.send import ledger, warmup
from mailer.send.ratelimit import rate_budget
from subscribers.models import subscribers, utcnow
from tests.servers.smtp_sink import SmtpSink
from tests.test_pacing import seed
from tests.test_workers import environment, mailer

pytestmark = pytest.mark.timeout(240)

GMAIL = [f"g{i}@gmail.com" for i in range(20)]
OTHERS = [f"y{i}@yahoo.com" for i in range(10)] + [f"o{i}@other.example" for i in range(10)]


def project(tmp_path, repo, url: str, sink: SmtpSink, **pacing) -> object:
    """config.toml: PostgreSQL at `url`, SMTP to the sink (batches of 2, one connection), `pacing` in
    [delivery.pacing] (no MX look-ups: the domains here are well known or `other`)."""
    for folder in ("templates", "issues"):
        (tmp_path / folder).symlink_to(repo / folder)
    config = (repo / "config.toml").read_text(encoding="utf-8")
    changes = {r'url = "sqlite:///mailer.db"': f'url = "{url}"', r'backend = "outbox"': 'backend = "smtp"',
               r"port = 587": f"port = {sink.port}", r"starttls = true": "starttls = false",
               r"batch_size = 20": "batch_size = 2", r"connections = 2": "connections = 1",
               r"retry_first_seconds = 60": "retry_first_seconds = 1", r"lookups = 500": "lookups = 0"}
    changes.update({rf"{name} = \S+": f"{name} = {value}" for name, value in pacing.items()})
    for old, new in changes.items():
        config, n = re.subn(rf"(?m)^{old}", new, config, count=1)
        assert n == 1, old
    config = config.replace('[delivery.smtp]\n', '[delivery.smtp]\nreturn_path = "bounces@example.org"\n', 1)
    path = tmp_path / "config.toml"
    path.write_text(config, encoding="utf-8")
    return path


def send(config, tmp_path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(mailer(config, "send", "2024-11", "--list", "crank", "--yes", "--workers", "2", *extra),
                          check=False, cwd=tmp_path, env=environment(), capture_output=True, text=True,
                          timeout=200)


def attempts_by_address(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return dict(conn.execute(select(subscribers.c.email, ledger.deliveries.c.attempts).join_from(
            ledger.deliveries, subscribers, subscribers.c.id == ledger.deliveries.c.subscriber_id)).all())


def test_the_limits_hold_for_the_workers_together(tmp_path, repo, pg_url):
    """gmail = 4 a second between two workers: 20 Gmail readers span about 4 s at the sink (a
    second's burst, then 16 at 4 a second); two workers pacing alone would send them in about 1.5 s
    (two bursts, then 8 a second). The other providers have no limit. A lower bound of 3 s: a loaded
    machine makes the span longer, or shorter only by how late the first message arrives."""
    from mailer.migrate import connect

    seed(pg_url, GMAIL + OTHERS)
    with SmtpSink() as sink:
        config = project(tmp_path, repo, pg_url, sink, gmail=4)
        done = send(config, tmp_path)
        received = list(sink.messages)
    assert done.returncode == 0, done.stderr
    assert Counter(r for m in received for r in m.rcpt_tos) == Counter(GMAIL + OTHERS)   # each once
    at = sorted(m.at for m in received if m.rcpt_tos[0].endswith("@gmail.com"))
    assert at[-1] - at[0] >= 3.0
    engine = connect(pg_url)
    with engine.connect() as conn:
        rows = {name.rpartition(":")[2]: rate for name, rate in conn.execute(select(rate_budget.c.name,
                                                                                    rate_budget.c.rate))}
    assert rows.get("gmail", "missing") is None        # shared row made, never slowed down
    assert "yahoo" not in rows and "other" not in rows  # no limit: no budget row to wait on
    order = [r for m in sorted(received, key=lambda m: m.at) for r in m.rcpt_tos]
    assert any(not a.endswith("@gmail.com") for a in order[:10])   # interleaved, not Gmail's burst first


def test_a_421_to_one_worker_slows_that_provider_for_all(tmp_path, repo, pg_url):
    """The sink answers `421 4.7.0` (and closes) for gmail.com for 1.5 s: the send finishes, every
    reader is received once, Gmail's shared rate is halved, the other providers go on their first try."""
    from mailer.migrate import connect

    seed(pg_url, GMAIL + OTHERS)
    with SmtpSink(rate_limit={"gmail.com": 1.5}) as sink:
        config = project(tmp_path, repo, pg_url, sink, gmail=100, hold_seconds=1)
        done = send(config, tmp_path)
        received = list(sink.messages)
        tries = dict(sink.state.rcpt_tries)
        limited = dict(sink.state.rate_limited)
    assert done.returncode == 0, done.stderr
    assert Counter(r for m in received for r in m.rcpt_tos) == Counter(GMAIL + OTHERS)
    assert limited["gmail.com"] >= 1
    engine = connect(pg_url)
    attempts = attempts_by_address(engine)
    assert all(tries[a] == 1 and attempts[a] == 1 for a in OTHERS)
    assert sum(attempts[a] > 1 for a in GMAIL) >= 1
    with engine.connect() as conn:
        rates = {name.rpartition(":")[2]: rate for name, rate in conn.execute(select(rate_budget.c.name,
                                                                                     rate_budget.c.rate))}
    assert rates["gmail"] is not None and rates["gmail"] <= 50      # halved at least once, for every worker
    assert rates.get("yahoo") is None and rates.get("other") is None


def test_the_warmup_cap_holds_across_workers(tmp_path, repo, pg_url):
    """warmup_first_day = 5 with two workers and batches of 2: 5 readers the first day (the last
    claim cut to 1), 10 more the next, then the rest; every reader once."""
    from mailer.migrate import connect

    readers = GMAIL[:8] + OTHERS[:8]
    seed(pg_url, readers)
    engine = connect(pg_url)
    with SmtpSink() as sink:
        config = project(tmp_path, repo, pg_url, sink, warmup_first_day=5)
        first = send(config, tmp_path, "--warmup")
        assert first.returncode == 0, first.stderr
        assert len(sink.messages) == 5
        said = " ".join(first.stderr.split())   # the terminal's width wraps the note
        assert "warm-up day 1: today's cap of 5 is reached; the other 11 readers go on the next days" in said
        with engine.connect() as conn:
            send_id = conn.execute(select(ledger.sends.c.id)).scalar_one()
            assert conn.execute(select(ledger.sends.c.status)).scalar_one() == "stopped"
        assert warmup.capped_today(engine, send_id)

        again = send(config, tmp_path)                  # the same day: nothing more
        assert again.returncode == 0, again.stderr
        assert len(sink.messages) == 5

        yesterday(engine)
        second = send(config, tmp_path)                 # day 2: 10 (the send remembers it warms up)
        assert second.returncode == 0, second.stderr
        assert len(sink.messages) == 15

        yesterday(engine)
        third = send(config, tmp_path)
        assert third.returncode == 0, third.stderr
        received = Counter(r for m in sink.messages for r in m.rcpt_tos)
    assert received == Counter(readers)
    with engine.connect() as conn:
        assert conn.execute(select(ledger.sends.c.status)).scalar_one() == "done"


def yesterday(engine) -> None:
    """Move the warm-up and what it sent back one day (as tests/test_warmup.py does)."""
    with engine.begin() as conn:
        row = conn.execute(select(warmup.send_warmups)).one()
        conn.execute(update(warmup.send_warmups).values(
            first_day=row.first_day - timedelta(days=1),
            capped_on=row.capped_on - timedelta(days=1) if row.capped_on else None,
            claimed_on=row.claimed_on - timedelta(days=1) if row.claimed_on else None))
        conn.execute(update(ledger.deliveries).where(ledger.deliveries.c.updated_at.is_not(None))
                     .values(updated_at=utcnow() - timedelta(days=1)))


def test_claims_of_a_warmup_send_stop_at_the_days_cap(db_url):
    """leases.claim_next on both databases: a warm-up send whose day 1 cap is 5 gives claims of 2, 2,
    then 1 (cut to what is left), then none; a batch given back still counts (never over the cap);
    the next day's claims count again, from the ledger."""
    from mailer.migrate import connect
    from mailer.send import leases
    from tests.deliver.helpers import seed as seed_readers
    from tests.test_workers import fixed_send

    list_id = seed_readers(db_url, 20)
    engine = connect(db_url)
    with engine.begin() as conn:
        send_id = fixed_send(conn, list_id)
        warmup.begin(conn, send_id, 5)
    sizes = []
    for _ in range(4):
        with engine.begin() as conn:
            got = leases.claim_next(conn, send_id, "a:1", 2, 0)
        sizes.append(len(got[1]) if got else None)
    assert sizes == [2, 2, 1, None]
    with engine.begin() as conn:
        ledger.release(conn, send_id, 1, "given back")
        assert leases.claim_next(conn, send_id, "a:1", 2, 0) is None   # counted when claimed: not again today
    yesterday(engine)
    with engine.begin() as conn:
        got = leases.claim_next(conn, send_id, "a:1", 20, 0)
    assert got is not None and len(got[1]) == 10                       # day 2: twice the first
    engine.dispose()
