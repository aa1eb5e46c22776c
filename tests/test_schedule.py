"""The monthly slot with a controlled clock, on SQLite and PostgreSQL: every decision takes `now`.

Each case is a timeline: schedule the issue at one moment, then run the scheduler's jobs (`slot`,
`tick`) at given moments, and look at what reached the outbox and what the issue's state says.
"""

from __future__ import annotations

import dataclasses
import email
import email.policy
import logging
import os
import re
import shutil
import socket
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from mailer.errors import LintFailed, ScheduleError
from mailer.schedule import states as issue_states
from mailer.schedule.scheduler import (
    Scheduler,
    overview,
    schedule_issue,
    unschedule_issue,
    upcoming,
)
from mailer.send import ledger
from tests.conftest import REPO
from tests.deliver.helpers import seed

SECRET = "test-secret-key-0123456789abcdef"
EDITOR = "editor@example.org"
READERS = 5
# "1st tue" 09:00 America/New_York: 2026-12-01 14:00 UTC (EST) ... 2027-04-06 13:00 UTC (EDT)
DEC_SLOT = datetime(2026, 12, 1, 14, 0, tzinfo=UTC)
BEFORE = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(autouse=True)
def secret_in_env(monkeypatch):
    monkeypatch.setenv("MAILER_SECRET_KEY", SECRET)


@pytest.fixture
def sched(settings, db_url, tmp_path):
    """Settings on `db_url` with the list `crank` of READERS readers and issue 2024-12 in issues/."""
    issues = tmp_path / "issues"
    issues.mkdir()
    shutil.copy(REPO / "tests/fixtures/issues/minimal.md", issues / "2024-12.md")
    s = dataclasses.replace(
        settings, database=dataclasses.replace(settings.database, url=db_url),
        compose=dataclasses.replace(settings.compose, issues_dir=issues),
        schedule=dataclasses.replace(settings.schedule, list="crank", editors=(EDITOR,), proof_hours_before=0))
    seed(db_url, READERS)
    return s


def with_schedule(settings, **changes):
    return dataclasses.replace(settings, schedule=dataclasses.replace(settings.schedule, **changes))


def mail(settings) -> list:
    return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
            for p in sorted(settings.delivery.outbox_dir.glob("*.eml"))]


def readers_got(settings) -> Counter:
    """How many copies of the issue each reader got."""
    return Counter(m["To"].addresses[0].addr_spec for m in mail(settings)
                   if m["Subject"] == "Test Review | January 2025")


def editors_got(settings) -> list[str]:
    return [m["Subject"] for m in mail(settings) if m["To"].addresses[0].addr_spec == EDITOR]


def state(settings, issue="2024-12"):
    with Scheduler(settings).engine.connect() as conn:
        return issue_states.find(conn, issue)


EVERYONE_ONCE = Counter({f"r{i}@example.org": 1 for i in range(READERS)})


def test_fires_once_at_the_slot(sched, caplog):
    caplog.set_level(logging.INFO, "mailer.schedule")
    done = schedule_issue(sched, "2024-12", None, BEFORE)
    assert done.send_at == DEC_SLOT and not done.pinned
    runner = Scheduler(sched)
    runner.tick(DEC_SLOT - timedelta(seconds=1))
    assert readers_got(sched) == Counter() and state(sched).state == "scheduled"
    runner.slot(DEC_SLOT + timedelta(seconds=1))
    for later in (DEC_SLOT + timedelta(seconds=30), DEC_SLOT + timedelta(days=1)):
        runner.tick(later)
        runner.slot(later)
    assert readers_got(sched) == EVERYONE_ONCE
    row = state(sched)
    assert row.state == "sent" and row.send_id is not None and row.reason is None
    lines = [r.getMessage() for r in caplog.records]
    assert "2026-12-01T14:00:01Z issue=2024-12 list=crank sending (slot 2026-12-01 09:00 EST " \
           "(2026-12-01 14:00 UTC))" in lines
    assert any(line.startswith("2026-12-01T14:00:01Z issue=2024-12 list=crank sent (send #") and
               line.endswith(f"{READERS} sent, 0 failed, 0 skipped") for line in lines)
    assert editors_got(sched) == []  # the slot held an issue: no "nothing scheduled" notice
    [listed] = [r for r in overview(sched) if r.issue == "2024-12"]
    assert (listed.state, listed.send_at, [(s.sent, s.failed) for s in listed.sends]) == ("sent", DEC_SLOT, [(5, 0)])


@pytest.mark.parametrize("late, sent", [(timedelta(minutes=59), True), (timedelta(minutes=61), False),
                                        (timedelta(days=3), False)])
def test_restart_within_and_beyond_the_grace_time(sched, caplog, late, sent):
    """The scheduler was down at the slot; it starts `late` after it (grace: 60 minutes)."""
    caplog.set_level(logging.INFO, "mailer.schedule")
    schedule_issue(sched, "2024-12", None, BEFORE)
    restarted = Scheduler(sched)
    restarted.slot(DEC_SLOT + late)        # APScheduler runs the missed slot job once at start-up
    restarted.tick(DEC_SLOT + late)
    restarted.tick(DEC_SLOT + late + timedelta(minutes=1))
    row = state(sched)
    if sent:
        assert readers_got(sched) == EVERYONE_ONCE and row.state == "sent"
        assert editors_got(sched) == []
    else:
        assert readers_got(sched) == Counter() and row.state == "failed"
        assert row.reason.startswith("missed: no scheduler ran at 2026-12-01 09:00 EST (2026-12-01 14:00 UTC)")
        assert "beyond the 60-minute grace time; nothing was sent" in row.reason
        assert editors_got(sched) == ["[CRANK Call scheduler] 2024-12 missed its slot"]
        assert any("issue=2024-12 list=crank not sent: missed" in r.getMessage() for r in caplog.records)
        # scheduling it again sends it at the next slot, through the same ledger
        again = schedule_issue(sched, "2024-12", None, DEC_SLOT + late)
        assert again.send_at > DEC_SLOT + late and again.previous == "failed"


def test_two_schedulers_at_once_send_once(sched, caplog):
    caplog.set_level(logging.INFO, "mailer.schedule")
    schedule_issue(sched, "2024-12", None, BEFORE)
    a, b = Scheduler(sched), Scheduler(sched)
    # as if another process on this host (a live pid, not ours): only the database stands between them
    b.runner = f"{socket.gethostname()}:{os.getppid()}"
    start = threading.Barrier(2)
    errors = []

    def fire(scheduler):
        try:
            start.wait()
            scheduler.slot(DEC_SLOT + timedelta(milliseconds=5))
            scheduler.tick(DEC_SLOT + timedelta(seconds=30))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=fire, args=(s,)) for s in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert readers_got(sched) == EVERYONE_ONCE
    assert state(sched).state == "sent"
    lines = [r.getMessage() for r in caplog.records]
    assert sum(" sending (slot " in line for line in lines) == 1
    assert sum(" sent (send #1)" in line for line in lines) == 1
    assert all(re.search(r" (sending \(slot |sent \(send #1\):|left to another scheduler )", line) for line in lines)
    with a.engine.connect() as conn:
        assert conn.execute(ledger.sends.select()).all().__len__() == 1


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_on_postgresql_the_issues_advisory_lock_decides_who_fires_the_slot(sched, db_url, caplog):
    """A second scheduler (here: a bare session) holding the issue's advisory lock keeps this one from
    the slot's decision altogether: nothing claimed, nothing sent, until the lock is let go."""
    import zlib

    import psycopg

    from mailer.schedule.scheduler import LOCK_NAMESPACE

    caplog.set_level(logging.INFO, "mailer.schedule")
    schedule_issue(sched, "2024-12", None, BEFORE)
    plain, _, _options = db_url.replace("postgresql+psycopg", "postgresql").partition("?")
    key = (LOCK_NAMESPACE, zlib.crc32(b"2024-12") & 0x7FFFFFFF)
    with psycopg.connect(plain, autocommit=True) as other:
        assert other.execute("SELECT pg_try_advisory_lock(%s, %s)", key).fetchone()[0]
        Scheduler(sched).slot(DEC_SLOT + timedelta(milliseconds=5))
        assert state(sched).state == "scheduled" and readers_got(sched) == Counter()
        assert any("left to another scheduler (it holds the issue's lock)" in r.getMessage() for r in caplog.records)
        other.execute("SELECT pg_advisory_unlock(%s, %s)", key)
    Scheduler(sched).slot(DEC_SLOT + timedelta(seconds=1))
    assert readers_got(sched) == EVERYONE_ONCE and state(sched).state == "sent"


def test_dst_change_between_scheduling_and_the_slot(sched):
    """Scheduled in winter (EST, UTC-5) for April's slot (EDT, UTC-4): still 09:00 local."""
    march = datetime(2027, 3, 10, 15, 0, tzinfo=UTC)     # after March's slot, before the 14 March change
    done = schedule_issue(sched, "2024-12", None, march)
    assert done.send_at == datetime(2027, 4, 6, 13, 0, tzinfo=UTC)
    [(when, [row])] = upcoming(sched, march, 1)
    assert (when, row.issue) == (datetime(2027, 4, 6, 13, 0, tzinfo=UTC), "2024-12")
    runner = Scheduler(sched)
    runner.tick(datetime(2027, 4, 6, 12, 59, 59, tzinfo=UTC))   # 08:59:59 EDT: not yet
    assert readers_got(sched) == Counter()
    runner.slot(datetime(2027, 4, 6, 13, 0, 1, tzinfo=UTC))
    assert readers_got(sched) == EVERYONE_ONCE


@pytest.mark.parametrize("day, time, after, expected", [
    # 09:00 local on the first Tuesday, from winter into summer time
    ("1st tue", "09:00", datetime(2027, 2, 10, tzinfo=UTC),
     ["2027-03-02 09:00 EST (2027-03-02 14:00 UTC)", "2027-04-06 09:00 EDT (2027-04-06 13:00 UTC)"]),
    # a wall time the fall-back night passes twice is one slot, the first
    ("1st sun", "01:30", datetime(2027, 10, 20, tzinfo=UTC),
     ["2027-11-07 01:30 EDT (2027-11-07 05:30 UTC)", "2027-12-05 01:30 EST (2027-12-05 06:30 UTC)"]),
    # a wall time the spring-forward night skips goes out an hour on the clock later, once
    ("2nd sun", "02:30", datetime(2027, 3, 1, tzinfo=UTC),
     ["2027-03-14 03:30 EDT (2027-03-14 07:30 UTC)", "2027-04-11 02:30 EDT (2027-04-11 06:30 UTC)"]),
    ("last fri", "17:45", datetime(2026, 12, 1, tzinfo=UTC),
     ["2026-12-25 17:45 EST (2026-12-25 22:45 UTC)", "2027-01-29 17:45 EST (2027-01-29 22:45 UTC)"]),
])
def test_slots_across_dst(day, time, after, expected):
    from mailer.config import ScheduleSettings
    from mailer.schedule.slots import next_slots, shown

    schedule = ScheduleSettings(day=day, time=time, timezone="America/New_York")
    assert [shown(s, schedule) for s in next_slots(schedule, after, 2)] == expected


@pytest.mark.parametrize("at, expected", [
    ("2027-04-06 10:00", datetime(2027, 4, 6, 14, 0, tzinfo=UTC)),          # EDT
    ("2027-02-02 10:00", datetime(2027, 2, 2, 15, 0, tzinfo=UTC)),          # EST
    ("2027-11-07 01:30", datetime(2027, 11, 7, 5, 30, tzinfo=UTC)),         # passed twice: the first (EDT)
    ("2027-04-06T10:00+02:00", datetime(2027, 4, 6, 8, 0, tzinfo=UTC)),     # its own offset wins
    ("2027-04-06T10:00Z", datetime(2027, 4, 6, 10, 0, tzinfo=UTC)),
])
def test_at_is_local_time_unless_it_has_an_offset(sched, at, expected):
    done = schedule_issue(sched, "2024-12", at, BEFORE)
    assert (done.send_at, done.pinned) == (expected, True)


@pytest.mark.parametrize("at, message", [
    ("2027-03-14 02:30", "does not exist in America/New_York"),
    ("2026-11-01 09:00", "is in the past"),
    ("next tuesday", "is not a date and time"),
])
def test_bad_at_is_refused(sched, at, message):
    with pytest.raises(ScheduleError, match=message):
        schedule_issue(sched, "2024-12", at, BEFORE)
    assert state(sched) is None


def test_an_at_time_sends_on_the_tick_after_it(sched, caplog):
    caplog.set_level(logging.INFO, "mailer.schedule")
    schedule_issue(sched, "2024-12", "2026-11-25 16:45", BEFORE)
    runner = Scheduler(sched)
    runner.tick(datetime(2026, 11, 25, 21, 44, 59, tzinfo=UTC))
    assert readers_got(sched) == Counter()
    runner.tick(datetime(2026, 11, 25, 21, 45, 20, tzinfo=UTC))
    assert readers_got(sched) == EVERYONE_ONCE
    assert ("2026-11-25T21:45:20Z issue=2024-12 list=crank sending (--at 2026-11-25 16:45 EST (2026-11-25 21:45 "
            "UTC))") in [r.getMessage() for r in caplog.records]


def test_nothing_scheduled_mails_the_editors_once(sched, caplog):
    caplog.set_level(logging.INFO, "mailer.schedule")
    a, b = Scheduler(sched), Scheduler(sched)
    a.slot(DEC_SLOT + timedelta(seconds=1))
    b.slot(DEC_SLOT + timedelta(seconds=2))     # a second scheduler, or the same one again
    a.tick(DEC_SLOT + timedelta(seconds=30))
    assert readers_got(sched) == Counter()
    assert editors_got(sched) == ["[CRANK Call scheduler] nothing scheduled"]
    assert [r.getMessage() for r in caplog.records] == [
        "2026-12-01T14:00:01Z issue=- list=crank nothing scheduled for the slot 2026-12-01 09:00 EST "
        "(2026-12-01 14:00 UTC); nothing sent, editors told"]


def test_an_issue_with_lint_errors_cannot_be_scheduled(sched):
    path = sched.compose.issues_dir / "2024-12.md"
    path.write_text(path.read_text(encoding="utf-8").replace("First story paragraph.", "Dear {{ nmae }},"),
                    encoding="utf-8")
    with pytest.raises(LintFailed, match=r"2024-12 has 1 lint error\(s\), fix them first .*unresolved "
                                            r"template variable \{\{ nmae \}\}"):
        schedule_issue(sched, "2024-12", None, BEFORE)
    assert state(sched) is None
    assert [r.state for r in overview(sched)] == ["draft"]


def test_lint_errors_after_scheduling_fail_the_slot_with_the_reason(sched):
    schedule_issue(sched, "2024-12", None, BEFORE)
    path = sched.compose.issues_dir / "2024-12.md"
    path.write_text(path.read_text(encoding="utf-8").replace("First story paragraph.", "Dear {{ nmae }},"),
                    encoding="utf-8")
    Scheduler(sched).slot(DEC_SLOT)
    row = state(sched)
    assert row.state == "failed" and "unresolved template variable" in row.reason
    assert readers_got(sched) == Counter()
    assert editors_got(sched) == ["[CRANK Call scheduler] 2024-12 failed"]


def test_proof_goes_to_the_editors_before_the_slot_once(sched):
    s = with_schedule(sched, proof_hours_before=24)
    schedule_issue(s, "2024-12", None, BEFORE)
    runner = Scheduler(s)
    runner.tick(DEC_SLOT - timedelta(hours=24, seconds=1))
    assert editors_got(s) == []
    runner.tick(DEC_SLOT - timedelta(hours=23, minutes=59))
    runner.tick(DEC_SLOT - timedelta(hours=1))
    assert editors_got(s) == ["[PROOF] Test Review | January 2025"]
    assert readers_got(s) == Counter() and state(s).proof_sent_at is not None


class StopAfter(threading.Event):
    """A stop flag that goes up after `n` batches were let through (as SIGTERM would, mid-send)."""

    def __init__(self, n: int):
        super().__init__()
        self.left = n

    def is_set(self) -> bool:
        self.left -= 1
        return self.left < 0 or super().is_set()


def stopped_at_the_slot(sched, db_url):
    """The slot's send stopped after its first batch (as by SIGTERM), its last heartbeat at the slot."""
    seed(db_url, 150, start=READERS)              # 155 readers: two outbox batches of 100
    schedule_issue(sched, "2024-12", None, BEFORE)
    Scheduler(sched, stop=StopAfter(1)).slot(DEC_SLOT)
    row = state(sched)
    assert row.state == "sending" and row.runner is None and "resumes when the scheduler runs again" in row.reason
    assert sum(readers_got(sched).values()) == 100
    with Scheduler(sched).engine.begin() as conn:   # the database's clock, on the test's timeline
        conn.execute(ledger.sends.update().values(heartbeat_at=DEC_SLOT + timedelta(seconds=5)))


def test_a_stopped_send_resumes_within_the_grace_time_and_everyone_gets_it_once(sched, db_url, caplog):
    caplog.set_level(logging.INFO, "mailer.schedule")
    stopped_at_the_slot(sched, db_url)
    Scheduler(sched).tick(DEC_SLOT + timedelta(minutes=59))   # restarted within misfire_grace_minutes
    got = readers_got(sched)
    assert len(got) == 155 and set(got.values()) == {1}
    assert state(sched).state == "sent"
    assert any("resuming the send" in r.getMessage() for r in caplog.records)


def test_a_send_interrupted_beyond_the_grace_time_waits_for_an_operator(sched, db_url, caplog):
    """Restarted 5 hours later: not resumed by itself; failed, the editors told how to continue;
    scheduling it again continues the same ledger, everyone once."""
    caplog.set_level(logging.INFO, "mailer.schedule")
    stopped_at_the_slot(sched, db_url)
    Scheduler(sched).tick(DEC_SLOT + timedelta(hours=5))
    row = state(sched)
    assert sum(readers_got(sched).values()) == 100 and row.state == "failed"
    assert "beyond the 60-minute grace time: not resumed automatically" in row.reason
    assert "`mailer send 2024-12 --list crank`" in row.reason
    assert editors_got(sched) == ["[CRANK Call scheduler] 2024-12 failed"]
    again = schedule_issue(sched, "2024-12", "2026-12-01 15:00", DEC_SLOT + timedelta(hours=5))
    Scheduler(sched).tick(again.send_at + timedelta(seconds=1))
    got = readers_got(sched)
    assert len(got) == 155 and set(got.values()) == {1} and state(sched).state == "sent"


def test_a_manual_send_running_at_the_slot_is_not_a_failure(sched, db_url, caplog):
    """An editor's `mailer send` (another live process: fresh heartbeat) runs the issue when the slot
    comes: the scheduler leaves it alone, the issue stays `sending`, nobody is told it failed."""
    from mailer.send import segments
    from subscribers.models import lists

    caplog.set_level(logging.INFO, "mailer.schedule")
    schedule_issue(sched, "2024-12", None, BEFORE)
    runner = Scheduler(sched)
    with runner.engine.begin() as conn:
        list_id = conn.execute(lists.select()).first().id
        ledger.create_send(conn, issue="2024-12", list_id=list_id, list_name="crank", subject="s", backend="outbox",
                           recipients=segments.readers(conn, "2024-12", list_id, ""))
        conn.execute(ledger.sends.update().values(runner="editors-laptop:4242"))   # alive: heartbeat just now
    runner.slot(DEC_SLOT + timedelta(seconds=1))
    runner.tick(DEC_SLOT + timedelta(seconds=31))
    row = state(sched)
    assert row.state == "sending" and "another process is sending it now" in row.reason
    assert editors_got(sched) == [] and readers_got(sched) == Counter()
    assert not any("failed" in r.getMessage() for r in caplog.records)


def test_unschedule_and_move(sched):
    schedule_issue(sched, "2024-12", None, BEFORE)
    moved = schedule_issue(sched, "2024-12", "2026-12-03 10:00", BEFORE)
    assert moved.previous == "scheduled" and moved.send_at == datetime(2026, 12, 3, 15, 0, tzinfo=UTC)
    assert unschedule_issue(sched, "2024-12", BEFORE) == "scheduled"
    assert unschedule_issue(sched, "2024-12", BEFORE) is None
    Scheduler(sched).tick(datetime(2026, 12, 3, 15, 1, tzinfo=UTC))
    assert readers_got(sched) == Counter() and state(sched).state == "draft"


def test_the_next_free_slot_skips_taken_ones_and_a_sent_issue_is_refused(sched):
    shutil.copy(sched.compose.issues_dir / "2024-12.md", sched.compose.issues_dir / "2025-01.md")
    schedule_issue(sched, "2024-12", None, BEFORE)
    january = schedule_issue(sched, "2025-01", None, BEFORE)
    assert january.send_at == datetime(2027, 1, 5, 14, 0, tzinfo=UTC)
    with pytest.raises(ScheduleError, match="already holds 2024-12"):
        schedule_issue(sched, "2025-01", "2026-12-01 09:00", BEFORE)
    Scheduler(sched).slot(DEC_SLOT)
    with pytest.raises(ScheduleError, match="2024-12 was already sent to crank"):
        schedule_issue(sched, "2024-12", None, DEC_SLOT)
    with pytest.raises(ScheduleError, match="already sent"):
        unschedule_issue(sched, "2024-12", DEC_SLOT)


def test_a_failed_slots_notice_goes_through_smtp_when_the_backend_that_failed_is_sendgrid(sched, monkeypatch, caplog):
    """SendGrid refuses the key (401): the send fails, and the editors' "failed" notice, which the
    same 401 would swallow, goes out through SMTP; each refusal is a line in the log."""
    from tests.servers.sendgrid_server import SendGridServer
    from tests.servers.smtp_sink import SmtpSink

    caplog.set_level(logging.INFO, "mailer.schedule")
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.revoked")
    schedule_issue(sched, "2024-12", None, BEFORE)
    with SendGridServer() as server, SmtpSink() as sink:
        d = sched.delivery
        settings = dataclasses.replace(sched, delivery=dataclasses.replace(
            d, backend="sendgrid", sendgrid=dataclasses.replace(d.sendgrid, host=server.url, max_retries=0),
            smtp=dataclasses.replace(d.smtp, port=sink.port, starttls=False)))
        Scheduler(settings).slot(DEC_SLOT + timedelta(seconds=1))
        notices = [email.message_from_bytes(m.data, policy=email.policy.default) for m in sink.messages]
    assert state(sched).state == "failed" and "401" in state(sched).reason
    assert [(m["To"], m["Subject"]) for m in notices] == [(EDITOR, "[CRANK Call scheduler] 2024-12 failed")]
    assert any("could not mail the editors (2024-12 failed) through sendgrid" in r.getMessage()
               for r in caplog.records)


class TakenOverAfter(threading.Event):
    """Between batches, after `n` of them, another runner takes the send over (as a second scheduler
    does with one frozen past its heartbeat)."""

    def __init__(self, engine, n: int):
        super().__init__()
        self.engine, self.left = engine, n

    def is_set(self) -> bool:
        self.left -= 1
        if self.left == 0:
            with self.engine.begin() as conn:
                conn.execute(ledger.sends.update().values(runner="other-scheduler:7", heartbeat_at=ledger.db_now(conn)))
        return super().is_set()


def test_a_scheduler_whose_send_was_taken_over_tells_nobody_it_failed(sched, db_url, caplog):
    caplog.set_level(logging.INFO, "mailer.schedule")
    seed(db_url, 150, start=READERS)              # two outbox batches of 100
    schedule_issue(sched, "2024-12", None, BEFORE)
    runner = Scheduler(sched)
    runner.stop = TakenOverAfter(runner.engine, 2)
    runner.slot(DEC_SLOT)
    row = state(sched)
    assert row.state == "sending" and row.reason is None         # the issue is the other runner's to settle
    assert editors_got(sched) == [] and sum(readers_got(sched).values()) == 100
    assert any("left to the runner that took the send over" in r.getMessage() for r in caplog.records)
    with runner.engine.connect() as conn:
        send = conn.execute(ledger.sends.select()).one()
    assert (send.runner, send.status) == ("other-scheduler:7", "sending")   # its row untouched by the loser
