"""What the schedule looks like now, told truthfully to `schedule show`, `mailer issues` and /admin:

- whether a scheduler is running: `mailer schedule run` keeps its tick job in APScheduler's job
  table (mailer/schedule/scheduler.py JOB_TABLE) and APScheduler moves the job's next run time on
  at every tick (every TICK_SECONDS, even while a send holds the previous tick), so that time is
  the scheduler's heartbeat: more than two ticks behind now, no scheduler is running;
- how many readers the next slot's issue will reach (the list's active readers not already in a
  send of it; for a send already started, its unfinished readers) and how many already have it;
- an issue whose slot has passed with nobody to send it: "due" within the grace time, "missed"
  beyond it, before any scheduler starts and marks it failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Column, Float, LargeBinary, MetaData, Table, Unicode, func, inspect, select

from mailer.config import ScheduleSettings
from mailer.schedule.slots import shown
from mailer.schedule.states import IssueState
from mailer.send import ledger, segments
from mailer.send.ledger import State, deliveries, sends
from subscribers.models import lists

JOB_TABLE = "mailer_scheduler_jobs"   # as scheduler.JOB_TABLE (APScheduler's SQLAlchemyJobStore table)
TICK_SECONDS = 30                     # as scheduler.TICK_SECONDS
STALE = timedelta(seconds=2 * TICK_SECONDS + 15)

# APScheduler 3's SQLAlchemyJobStore table, as it creates it: only the two columns read here matter.
jobs = Table(JOB_TABLE, MetaData(), Column("id", Unicode(191), primary_key=True),
             Column("next_run_time", Float(25), index=True), Column("job_state", LargeBinary, nullable=False))


@dataclass(frozen=True)
class Heartbeat:
    running: bool
    last: datetime | None          # the last tick (None: no scheduler ever ran on this database)

    def said(self, now: datetime, schedule: ScheduleSettings) -> str:
        if self.running:
            return "Scheduler: running (`mailer schedule run`; last tick " \
                   f"{max(0, int((now - self.last).total_seconds())) if self.last else 0} s ago)."
        if self.last is None:
            return "Scheduler: not running (none has ever run on this database); nothing goes out on its own."
        return f"Scheduler: not running (last seen {shown(self.last, schedule)}); nothing goes out on its own."


def heartbeat(conn, now: datetime) -> Heartbeat:
    """The scheduler's heartbeat: its tick job's next run time in the job table."""
    if not inspect(conn).has_table(JOB_TABLE):   # no scheduler ever started here
        return Heartbeat(False, None)
    at = conn.execute(select(jobs.c.next_run_time).where(jobs.c.id == "tick")).scalar()
    if at is None:
        return Heartbeat(False, None)
    last = datetime.fromtimestamp(at, UTC) - timedelta(seconds=TICK_SECONDS)
    return Heartbeat(now - last <= STALE, last)


@dataclass(frozen=True)
class Reach:
    readers: int       # the slot's send will try this many
    have: int          # readers of the list who have it already (accepted)


def reach(conn, issue: str, list_name: str) -> Reach | None:
    """Who the issue's send to `list_name` will reach and who has it; None when there is no such list."""
    list_id = conn.execute(select(lists.c.id).where(lists.c.name == list_name)).scalar()
    if list_id is None:
        return None
    have = conn.execute(select(func.count()).select_from(deliveries).join(sends, sends.c.id == deliveries.c.send_id)
                        .where(sends.c.issue == issue, sends.c.list_id == list_id,
                               deliveries.c.state == State.ACCEPTED.value)).scalar_one()
    found = ledger.find_send(conn, issue, list_id)
    if found is not None:
        return Reach(ledger.unfinished(ledger.counts(conn, found.id)), have)
    chosen = segments.readers(conn, issue, list_id, "").subquery()
    return Reach(conn.execute(select(func.count()).select_from(chosen)).scalar_one(), have)


def state_now(row, now: datetime, schedule: ScheduleSettings) -> tuple[str, str | None]:
    """(state, reason) as people should read it: a scheduled issue whose time has passed is "due"
    (within the grace time: a scheduler starting now still sends it) or "missed"."""
    if row.state != IssueState.SCHEDULED.value or row.send_at is None or row.send_at > now:
        return row.state, row.reason
    grace = timedelta(minutes=schedule.misfire_grace_minutes)
    if now - row.send_at <= grace:
        return "due", (f"its time {shown(row.send_at, schedule)} has come and no scheduler has sent it yet; "
                       "`mailer schedule run` sends it if started within the grace time")
    return "missed", (f"its time {shown(row.send_at, schedule)} passed with no scheduler running; nothing was "
                      f"sent. Schedule it again: `mailer issue schedule {row.issue}`")


def proof_time(send_at: datetime, schedule: ScheduleSettings, now: datetime) -> str | None:
    """When the editors' proof goes, in words; None when no proof is due."""
    hours = schedule.proof_hours_before
    if not hours or not schedule.editors:
        return None
    at = send_at - timedelta(hours=hours)
    if at > now:
        return f"from {shown(at, schedule)}"
    return f"at the scheduler's next tick (its time, {shown(at, schedule)}, has passed)"
