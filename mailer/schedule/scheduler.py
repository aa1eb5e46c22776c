"""The monthly slot: scheduled issue -> sent on its day, once, through the ledger (APScheduler 3).

    schedule_issue(settings, "2024-12", None, now)     # compose + lint gate, next free slot
    Scheduler(settings).tick(now)                       # what is due at `now`: send, miss, proof, resume
    run(settings)                                       # `mailer schedule run`: BlockingScheduler until SIGTERM

Every decision takes `now` as an argument (the scheduler's clock), so tests drive a month in
microseconds. The sending itself is mailer.send.dispatch (plan_send/run_send): exactly once per reader,
resumable. Two schedulers on one database are kept apart by the issue's conditional state change
(mailer/schedule/states.py), on PostgreSQL also by an advisory lock held for the whole send, and
below both by the ledger's own claim. docs/schedule.md has the reasons.
"""

from __future__ import annotations

import _thread
import html
import logging
import signal
import socket
import threading
import time
import warnings
import zlib
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

from sqlalchemy import select, text
from sqlalchemy.exc import SQLAlchemyError

from mailer.compose.gate import compose_checked, issue_path
from mailer.config import ConfigError, Settings
from mailer.errors import LintFailed, MailerError, ScheduleError, SendBusy, SendTakenOver
from mailer.model import ComposedIssue, as_written
from mailer.schedule import states
from mailer.schedule.slots import (
    last_slot,
    next_slots,
    parse_at,
    shown,
    slot_trigger,
    zone,
)
from mailer.schedule.states import IssueState
from mailer.send import dispatch, ledger, warmup
from mailer.send.ledger import State
from subscribers.errors import SubscriberError
from subscribers.models import lists
from subscribers.store import get_list

log = logging.getLogger("mailer.schedule")
JOB_TABLE = "mailer_scheduler_jobs"   # APScheduler's SQLAlchemyJobStore table
TICK_SECONDS = 30                     # how often due --at times, proofs and resumable sends are looked at
DEFERRED_RETRY = timedelta(minutes=15)  # a send left with only deferred readers is rerun this long after
LOCK_NAMESPACE = 0x5CB5               # first key of pg_try_advisory_lock(int, int); the second names the issue
SLOTS_AHEAD = 36                      # how many slots `schedule` looks through for a free one


def utcnow() -> datetime:
    return datetime.now(UTC)


def store(settings: Settings):
    """The project's database (migrated on first use): the process's one Engine for it, disposed
    when the command ends (mailer/engines.py)."""
    return dispatch.open_store(settings)


def schedule_list(settings: Settings) -> str:
    if not settings.schedule.list:
        raise ConfigError("[schedule] list is not set: name the list that gets each scheduled issue")
    return settings.schedule.list


# --- the editors' commands ----------------------------------------------------------------------

@dataclass
class Scheduled:
    issue: str
    subject: str
    list_name: str
    send_at: datetime
    pinned: bool
    previous: str


def schedule_issue(settings: Settings, ref: str, at_text: str | None, now: datetime) -> Scheduled:
    """draft | scheduled | failed -> scheduled, for `at_text` or the next slot no other issue holds."""
    path = issue_path(ref, settings)
    composed = compose_checked(path, settings)
    list_name, engine = schedule_list(settings), store(settings)
    with engine.begin() as conn:
        found = get_list(conn, list_name)
        row = states.find(conn, composed.slug)
        previous = row.state if row else IssueState.DRAFT.value
        _check_can_schedule(conn, composed.slug, previous, found)
        if at_text:
            send_at, pinned = parse_at(at_text, settings.schedule, now), True
            _check_free(conn, send_at, composed.slug, settings)
        else:
            send_at, pinned = _free_slot(conn, settings, now, composed.slug), False
        states.put_scheduled(conn, issue=composed.slug, source=_stored_path(path, settings), subject=composed.subject,
                             list_name=found.name, send_at=send_at, pinned=pinned, now=now)
    return Scheduled(composed.slug, composed.subject, found.name, send_at, pinned, previous)


def unschedule_issue(settings: Settings, ref: str, now: datetime) -> str | None:
    """scheduled | failed -> draft; returns the state it left, None if it was not scheduled."""
    slug = Path(ref).stem if ref.endswith(".md") else ref
    engine = store(settings)
    with engine.begin() as conn:
        row = states.find(conn, slug)
        if row is None or row.state == IssueState.DRAFT.value:
            return None
        if row.state == IssueState.SENDING.value:
            raise ScheduleError(f"{slug} is being sent to {row.list_name}; a send cannot be taken back. Stopping "
                                "the scheduler pauses it (the ledger keeps its place) until it runs again")
        if row.state == IssueState.SENT.value:
            raise ScheduleError(f"{slug} was already sent to {row.list_name}")
        states.to_draft(conn, slug, now)
    return row.state


def _check_can_schedule(conn, slug: str, state: str, found) -> None:
    if state == IssueState.SENDING.value:
        raise ScheduleError(f"{slug} is being sent now; it cannot be scheduled again")
    if state == IssueState.SENT.value:
        raise ScheduleError(f"{slug} was already sent to {found.name}; nothing scheduled")
    send = ledger.find_send(conn, slug, found.id)
    if send is not None:
        c = ledger.counts(conn, send.id)
        if not ledger.unfinished(c):
            raise ScheduleError(f"{slug} was already sent to {found.name} (send #{send.id}: {c[State.ACCEPTED]:,} "
                                "sent); nothing scheduled")


def _check_free(conn, send_at: datetime, slug: str, settings: Settings) -> None:
    other = [r.issue for r in states.at(conn, send_at) if r.issue != slug]
    if other:
        raise ScheduleError(f"{shown(send_at, settings.schedule)} already holds {other[0]}: unschedule it "
                            "or pick another time")


def _free_slot(conn, settings: Settings, now: datetime, slug: str) -> datetime:
    for slot in next_slots(settings.schedule, now + timedelta(seconds=1), SLOTS_AHEAD):
        if not [r for r in states.at(conn, slot) if r.issue != slug]:
            return slot.astimezone(UTC)
    raise ScheduleError(f"the next {SLOTS_AHEAD} slots all hold an issue; use --at")


def _stored_path(path: Path, settings: Settings) -> str:
    resolved = path.resolve()
    try:
        return str(resolved.relative_to(settings.root))
    except ValueError:
        return str(resolved)


# --- what the commands show ---------------------------------------------------------------------

def upcoming(settings: Settings, now: datetime, count: int) -> list[tuple[datetime, list]]:
    """The next `count` slots, each with the issues scheduled for it, plus --at times among them."""
    slots = [s.astimezone(UTC) for s in next_slots(settings.schedule, now, count)]
    with store(settings).connect() as conn:
        waiting = [r for r in states.in_state(conn, IssueState.SCHEDULED) if r.send_at >= now]
    times = sorted(set(slots) | {r.send_at for r in waiting if r.pinned and slots and r.send_at <= slots[-1]})
    return [(t, [r for r in waiting if r.send_at == t]) for t in times]


def overview(settings: Settings) -> list[SimpleNamespace]:
    """Every issue file and every issue the schedule knows: state, send time, and its figures
    (mailer/reports/figures.py, every send of it: each list and segment)."""
    from mailer.reports import figures as issue_figures

    with store(settings).connect() as conn:
        rows = {r.issue: r for r in states.every(conn)}
        sent: dict[str, list] = {}
        for s in conn.execute(select(ledger.sends).order_by(ledger.sends.c.id)).all():
            sent.setdefault(s.issue, []).append(s)
        figures = {f.issue: f for f in issue_figures.of_issues(conn, list(sent))} if sent else {}
    files = {p.stem for p in settings.compose.issues_dir.glob("*.md")}
    out = []
    for slug in sorted(files | set(rows) | set(sent)):
        row, sends = rows.get(slug), sent.get(slug, [])
        if row is not None and row.send_id is not None:
            sends = [s for s in sends if s.id == row.send_id]
        state = row.state if row else (IssueState.SENT.value if any(s.status == ledger.SendStatus.DONE for s in sends)
                                       else IssueState.DRAFT.value)
        out.append(SimpleNamespace(issue=slug, state=state, send_at=row.send_at if row else None,
                                   list_name=row.list_name if row else None, reason=row.reason if row else None,
                                   pinned=bool(row and row.pinned), sends=sends, figures=figures.get(slug)))
    return out


# --- the scheduler's decisions ------------------------------------------------------------------

class Scheduler:
    """What `mailer schedule run` does at each slot and tick; every method takes the clock's `now`."""

    def __init__(self, settings: Settings, *, clock: Callable[[], datetime] = utcnow,
                 stop: threading.Event | None = None):
        self.settings, self.clock = settings, clock
        self.stop = stop or threading.Event()
        self.engine = store(settings)
        self.runner = ledger.this_runner()
        self.grace = timedelta(minutes=settings.schedule.misfire_grace_minutes)
        self._lock, self._active = threading.Lock(), set[str]()   # issues this process is handling now

    # the two jobs
    def slot(self, now: datetime | None = None) -> None:
        """The slot's job: send what is due, or tell the editors that nothing was scheduled."""
        now = now or self.clock()
        self.run_due(now)
        self.check_empty_slot(now)

    def tick(self, now: datetime | None = None) -> None:
        """Every TICK_SECONDS: --at times that came, proofs, sends to resume, and the slot's check
        again (in case the slot job itself could not run, e.g. the database was down for a moment)."""
        now = now or self.clock()
        self.run_due(now)
        self.send_proofs(now)
        self.resume(now)
        self.check_empty_slot(now)

    # scheduled -> sending | failed (missed)
    def run_due(self, now: datetime) -> None:
        with self.engine.connect() as conn:
            due = [r for r in states.in_state(conn, IssueState.SCHEDULED) if r.send_at <= now]
        for row in due:
            with self._handling(row.issue) as mine:
                if mine:
                    self.fire(row, now)

    def fire(self, row, now: datetime) -> None:
        late = now - row.send_at
        if late > self.grace:
            return self._missed(row, now, late)
        with self._exclusive(row.issue) as got:
            if not got:
                return self.decide(now, row, "left to another scheduler (it holds the issue's lock)")
            with self.engine.begin() as conn:
                won = states.claim(conn, row.issue, row.send_at, self.runner, now)
            if not won:
                return self.decide(now, row, "left to another scheduler (it claimed the issue first)")
            kind = "--at" if row.pinned else "slot"
            self.decide(now, row, f"sending ({kind} {shown(row.send_at, self.settings.schedule)}"
                                  f"{', late by ' + _span(late) if late >= timedelta(minutes=1) else ''})")
            self._send(row, now)

    def _missed(self, row, now: datetime, late: timedelta) -> None:
        reason = (f"missed: no scheduler ran at {shown(row.send_at, self.settings.schedule)}, and it is now "
                  f"{_span(late)} later, beyond the {self.settings.schedule.misfire_grace_minutes}-minute grace "
                  f"time; nothing was sent. Schedule it again: `mailer issue schedule {row.issue}`")
        with self.engine.begin() as conn:
            if not states.miss(conn, row.issue, row.send_at, reason, now):
                return
        self.decide(now, row, f"not sent: {reason}")
        self.notify(now, f"{row.issue} missed its slot", f"{as_written(row.subject)} ({row.issue}) was not sent to "
                    f"{row.list_name}.\n\n{reason}.")

    # sending -> sent | failed | still sending (stopped, deferred readers)
    def _send(self, row, now: datetime) -> None:
        started = time.monotonic()

        def later() -> datetime:  # `now` moved on by the time the send took (the clock may be a test's)
            return now + timedelta(seconds=time.monotonic() - started)

        try:
            composed = compose_checked(self.source(row), self.settings,
                                       dispatch.list_language(self.settings, row.list_name))
            plan = dispatch.plan_send(self.settings, composed, row.list_name)
            summary = dispatch.run_send(self.settings, plan, sleep=self.stop.wait, stop=self.stop.is_set,
                                        notice=lambda message: self.decide(later(), row, f"note: {message}"))
        except SendTakenOver as exc:   # another runner took the send over (this process was frozen): its now
            return self.decide(later(), row, f"left to the runner that took the send over: {exc}")
        except SendBusy as exc:   # a manual `mailer send` (or its workers) runs it now: not a failure
            why = f"another process is sending it now; the scheduler follows it ({exc})"
            self._settle(row, later(), IssueState.SENDING, why)
            return self.decide(later(), row, why)
        except (MailerError, SubscriberError, ConfigError) as exc:
            return self._failed(row, later(), str(exc))
        except BaseException:
            self._settle(row, later(), IssueState.SENDING, "interrupted; the scheduler resumes it")
            raise
        figures = f"{summary.sent:,} sent, {summary.failed:,} failed, {summary.skipped:,} skipped"
        if summary.status == ledger.SendStatus.DONE.value:
            self._settle(row, later(), IssueState.SENT, None, summary.send_id)
            return self.decide(later(), row, f"sent (send #{summary.send_id}): {figures}")
        if self.stop.is_set():
            why = f"stopped with {figures} so far; resumes when the scheduler runs again"
        elif summary.deferred:
            why = (f"{summary.deferred:,} readers deferred ({figures}); retried "
                   f"{_span(DEFERRED_RETRY)} after this run")
        else:
            why = f"unfinished ({figures}); resumes on the next tick"
        self._settle(row, later(), IssueState.SENDING, why, summary.send_id)
        self.decide(later(), row, why)

    def _failed(self, row, now: datetime, reason: str) -> None:
        self._settle(row, now, IssueState.FAILED, reason)
        self.decide(now, row, f"failed: {reason}")
        self.notify(now, f"{row.issue} failed", f"{as_written(row.subject)} ({row.issue}) to {row.list_name} "
                    f"failed:\n\n{reason}\n\nFix it, then `mailer issue schedule {row.issue}` (a partial send "
                    "continues where it stopped).")

    def _settle(self, row, now: datetime, state: IssueState, reason: str | None, send_id: int | None = None) -> None:
        with self.engine.begin() as conn:
            if send_id is None:
                found = _send_of(conn, row.issue, row.list_name)
                send_id = found.id if found else None
            states.settle(conn, row.issue, self.runner, state, reason, now, send_id)

    def resume(self, now: datetime) -> None:
        """Sends whose runner is gone (stopped, crashed) continue; deferred readers get their retry."""
        with self.engine.connect() as conn:
            rows = [(r, _send_of(conn, r.issue, r.list_name))
                    for r in states.in_state(conn, IssueState.SENDING)]
            at = ledger.db_now(conn)   # heartbeats are judged by the database's clock, which stamps them
        for row, send in rows:
            if _alive(row, send, self.runner, at) or (send is not None and ledger.runner_alive(send, at)):
                continue   # its runner (this scheduler's other thread, another one, a manual send) is at work
            if not self._resumable(row, send, now):
                continue
            if self._past_grace(row, send, now):
                continue
            with self._handling(row.issue) as mine, self._exclusive(row.issue) as got:
                if not (mine and got):
                    continue
                with self.engine.begin() as conn:
                    if not states.take_over(conn, row.issue, row.runner, self.runner, now):
                        continue
                self.decide(now, row, "resuming the send (" + (row.reason or "its last run stopped") + ")")
                self._send(row, now)

    def _past_grace(self, row, send, now: datetime) -> bool:
        """A send interrupted (readers pending or in flight, its runner gone) longer ago than
        misfire_grace_minutes is not resumed by the scheduler: the issue is marked failed and the
        editors told, and an operator reruns it (`mailer send`, or `mailer issue schedule`)."""
        if send is None:
            return False
        with self.engine.connect() as conn:
            c = ledger.counts(conn, send.id)
        if not (c[State.PENDING] or c[State.SENDING]):
            return False   # only deferred readers left: their retry is not a resume
        last = max(t for t in (row.updated_at, send.heartbeat_at) if t is not None)
        if now - last <= self.grace:
            return False
        reason = (f"interrupted {_span(now - last)} ago with {c[State.PENDING] + c[State.SENDING]:,} readers left, "
                  f"beyond the {self.settings.schedule.misfire_grace_minutes}-minute grace time: not resumed "
                  f"automatically. Continue it with `mailer send {row.issue} --list {row.list_name}` or "
                  f"`mailer issue schedule {row.issue}` (the ledger keeps its place)")
        with self.engine.begin() as conn:
            if not states.take_over(conn, row.issue, row.runner, self.runner, now):
                return True
        self._failed(row, now, reason)
        return True

    def _resumable(self, row, send, now: datetime) -> bool:
        if send is not None and warmup.capped_today(self.engine, send.id, now):
            return False    # a warm-up send has used today's cap: tomorrow (mailer/send/warmup.py)
        if send is None or row.runner is not None:
            return True
        with self.engine.connect() as conn:
            c = ledger.counts(conn, send.id)
        if c[State.PENDING] or c[State.SENDING]:
            return True
        return (send.heartbeat_at or send.started_at) + DEFERRED_RETRY <= now

    # editors
    def send_proofs(self, now: datetime) -> None:
        hours = self.settings.schedule.proof_hours_before
        if not hours:
            return
        with self.engine.connect() as conn:
            rows = [r for r in states.in_state(conn, IssueState.SCHEDULED)
                    if r.proof_sent_at is None and r.send_at - timedelta(hours=hours) <= now < r.send_at]
        for row in rows:
            with self.engine.begin() as conn:
                if not states.claim_proof(conn, row.issue, now):
                    continue
            self._proof(row, now)

    def _proof(self, row, now: datetime) -> None:
        editors = list(self.settings.schedule.editors)
        if not editors:
            return self.decide(now, row, "no proof: [schedule] editors is empty")
        try:
            composed = compose_checked(self.source(row), self.settings,   # as the list will get it
                                       dispatch.list_language(self.settings, schedule_list(self.settings)))
            results = dispatch.send_proof(self.settings, composed, editors)
        except (ScheduleError, LintFailed, SubscriberError) as exc:   # (SubscriberError: the list is gone)
            self.decide(now, row, f"no proof: {exc}")
            return self.notify(now, f"{row.issue} cannot go out as it is", f"{exc}\n\nIt is scheduled for "
                               f"{shown(row.send_at, self.settings.schedule)} and fails then unless fixed.")
        except (MailerError, ConfigError) as exc:
            with self.engine.begin() as conn:
                states.unclaim_proof(conn, row.issue)  # the next tick tries again
            return self.decide(now, row, f"proof not sent, retrying: {exc}")
        took = sum(1 for r in results if r.ok)
        where = "; ".join(f"{editor} {dispatch.proof_where(r, self.settings.delivery.backend)}"
                          for editor, r in zip(editors, results, strict=True))
        self.decide(now, row, f"proof sent to {took} of {len(editors)} editors for the slot "
                              f"{shown(row.send_at, self.settings.schedule)}: {where}")

    def check_empty_slot(self, now: datetime) -> None:
        slot = last_slot(self.settings.schedule, now)
        if slot is None:
            return
        with self.engine.connect() as conn:
            if states.at(conn, slot.astimezone(UTC)):
                return
        late = now - slot
        outcome = "empty" if late <= self.grace else "empty, scheduler down"
        if not states.decide_slot(self.engine, slot, outcome, self.runner, now):
            return
        where = SimpleNamespace(issue=None, list_name=self.settings.schedule.list)
        if late > self.grace:
            return self.decide(now, where, f"slot {shown(slot, self.settings.schedule)} passed while no scheduler "
                                           "ran; nothing was scheduled for it")
        self.decide(now, where, f"nothing scheduled for the slot {shown(slot, self.settings.schedule)}; "
                                "nothing sent, editors told")
        self.notify(now, "nothing scheduled", f"No issue was scheduled for the slot "
                    f"{shown(slot, self.settings.schedule)}, so nothing was sent to {where.list_name}.\n\n"
                    "Schedule one with `mailer issue schedule ISSUE` (next slot) or `--at \"YYYY-MM-DD HH:MM\"`.")

    def notify(self, now: datetime, subject: str, body: str) -> None:
        """Tell the editors (what happened is already in the log: each caller's `decide` line) with a
        plain mail outside the ledger through the configured backend; if that one fails (a SendGrid
        401 is also why a send failed), through SMTP, then into the outbox folder, so the notice never
        rides only on the backend that failed. Each backend that fails is one `error` line."""
        editors = list(self.settings.schedule.editors)
        if not editors:
            return
        notice = ComposedIssue(slug=f"notice-{now:%Y%m%dT%H%M%S}", subject=f"[{self.settings.newsletter.name} "
                               f"scheduler] {subject}", preheader="", mjml="",
                               html=f"<pre>{html.escape(body)}</pre>", text=body)
        for name in _notice_backends(self.settings.delivery.backend):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")   # a notice has no unsubscribe link: it goes to staff only
                    results = dispatch.send_proof(self.settings, notice, editors, backend=_quick(self.settings, name),
                                                  proof=False)
                if all(r.ok for r in results):
                    return
                problem = "; ".join(r.detail or r.status.value for r in results if not r.ok)
            except (MailerError, ConfigError) as exc:
                problem = str(exc)
            log.error("%s could not mail the editors (%s) through %s: %s", _stamp(now), subject, name, problem)

    # helpers
    def decide(self, now: datetime, row, what: str) -> None:
        """One line per decision on stderr (journald): time, issue, list, what was done."""
        log.info("%s issue=%s list=%s %s", _stamp(now), row.issue or "-", row.list_name or "-", what)

    def source(self, row) -> Path:
        path = Path(row.source)
        return path if path.is_absolute() else self.settings.root / path

    @contextmanager
    def _handling(self, issue: str):
        with self._lock:
            mine = issue not in self._active
            self._active.add(issue)
        try:
            yield mine
        finally:
            if mine:
                with self._lock:
                    self._active.discard(issue)

    @contextmanager
    def _exclusive(self, issue: str):
        """On PostgreSQL, a session advisory lock on the issue for as long as this process works on
        it: another scheduler's try fails at once, and the lock goes with a dead process's session."""
        if self.engine.dialect.name != "postgresql":
            yield True
            return
        key = {"ns": LOCK_NAMESPACE, "k": zlib.crc32(issue.encode()) & 0x7FFFFFFF}
        with self.engine.connect() as conn:
            got = conn.execute(text("SELECT pg_try_advisory_lock(:ns, :k)"), key).scalar_one()
            conn.commit()
            try:
                yield got
            finally:
                if got:
                    conn.execute(text("SELECT pg_advisory_unlock(:ns, :k)"), key)
                    conn.commit()


def _notice_backends(configured: str) -> list[str]:
    """The configured backend first, then SMTP, then the outbox folder (which cannot fail for the
    network's reasons), each once."""
    return list(dict.fromkeys([configured, "smtp", "outbox"]))


def _quick(settings: Settings, name: str):
    """The backend `name` for a notice: an unreachable SMTP relay is not retried for a minute."""
    from dataclasses import replace

    from mailer.send.deliver.registry import create_backend

    if name == "smtp":
        smtp = replace(settings.delivery.smtp, connect_retry_seconds=0.0)
        settings = replace(settings, delivery=replace(settings.delivery, smtp=smtp))
    return create_backend(name, settings)


def _alive(row, send, runner: str, at=None) -> bool:
    """Is the issue's runner still at work? Its send's heartbeat says (mailer.send.ledger.runner_alive);
    before its send row exists (claimed, composing), a runner on this host is judged by its pid, one
    elsewhere by how recently it touched the issue's row."""
    if row.runner is None:
        return False
    if row.runner == ledger.this_runner():  # this process: its other Scheduler, if any, is at work
        return runner != row.runner
    if send is not None and send.runner == row.runner:
        return ledger.runner_alive(send, at)
    if row.runner.rpartition(":")[0] == socket.gethostname():
        return not ledger.pid_gone(row.runner)
    return ledger.runner_alive(SimpleNamespace(status=ledger.SendStatus.SENDING.value, runner=row.runner,
                                               heartbeat_at=row.updated_at))


def _send_of(conn, issue: str, list_name: str):
    """The send of `issue` to the list of that name; None if there is none, or no such list (the
    sends of a deleted list keep no list id: they are no list's)."""
    list_id = conn.execute(select(lists.c.id).where(lists.c.name == list_name)).scalar()
    return None if list_id is None else ledger.find_send(conn, issue, list_id)


def _stamp(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _span(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes < 120:
        return f"{minutes} min"
    hours = minutes // 60
    return f"{hours} h" if hours < 48 else f"{hours // 24} days"


# --- `mailer schedule run` ----------------------------------------------------------------------

_service: Scheduler | None = None   # the process's Scheduler, which the stored jobs call


def _running() -> Scheduler:
    if _service is None:
        raise RuntimeError("the schedule's jobs run inside `mailer schedule run` only")
    return _service


def slot_job() -> None:
    _guarded(_running().slot, "slot")


def tick_job() -> None:
    _guarded(_running().tick, "tick")


def _guarded(job: Callable[[], None], name: str) -> None:
    """A database that is down for a moment is one line, and the next tick tries again."""
    try:
        job()
    except (SQLAlchemyError, SubscriberError, MailerError) as exc:
        log.error("%s %s failed, retried on the next tick: %s", _stamp(_running().clock()), name,
                  str(exc).splitlines()[0])


def run(settings: Settings, *, clock: Callable[[], datetime] = utcnow) -> None:
    """A BlockingScheduler with its jobs in the project's database, until SIGTERM or Ctrl-C."""
    global _service  # noqa: PLW0603 - the one Scheduler of this process, for the stored jobs
    schedule_list(settings)
    trigger = slot_trigger(settings.schedule)
    service = Scheduler(settings, clock=clock)
    with _sqlite_lease(service):
        _service = service
        _run(settings, service, trigger, clock)


LEASE_SECONDS = 60.0   # SQLite: a scheduler silent this long has lost the one scheduler's lease


@contextmanager
def _sqlite_lease(service: Scheduler):
    """On SQLite, which has no advisory lock, one scheduler at a time: the lease row is taken
    atomically at start (a second `mailer schedule run` is refused, naming the first) and renewed
    by a heartbeat thread; a scheduler that finds it lost (it was frozen past the lease and another
    took it) stops as on SIGTERM. PostgreSQL's advisory lock per issue lets several run."""
    engine, me = service.engine, service.runner
    if engine.dialect.name != "sqlite":
        yield
        return
    with engine.begin() as conn:
        holder = states.take_lease(conn, me, ledger.db_now(conn), LEASE_SECONDS)
    if holder is not None:
        raise ScheduleError(f"another scheduler ({holder}) runs on this SQLite database: SQLite has no advisory "
                            "lock, so one `mailer schedule run` at a time there (use PostgreSQL to run several)")

    def renew(conn) -> bool:
        if states.take_lease(conn, me, ledger.db_now(conn), LEASE_SECONDS) is None:
            return True
        log.error("%s another scheduler took the lease (this one was silent past %.0f s): stopping",
                  _stamp(service.clock()), LEASE_SECONDS)
        _thread.interrupt_main()   # as Ctrl-C: the send in progress ends after its batch
        return False

    try:
        with ledger.Heartbeat(engine, None, every=LEASE_SECONDS / 4, beat=renew):
            yield
    finally:
        with engine.begin() as conn:
            states.drop_lease(conn, me)


def _run(settings: Settings, service: Scheduler, trigger, clock: Callable[[], datetime]) -> None:
    # APScheduler only for `mailer schedule run`: the editors' schedule commands import this module too
    from apscheduler.events import EVENT_SCHEDULER_STARTED
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.blocking import BlockingScheduler

    global _service  # noqa: PLW0603 - cleared when the scheduler stops
    scheduler = BlockingScheduler(
        jobstores={"default": SQLAlchemyJobStore(engine=service.engine, tablename=JOB_TABLE)},
        executors={"default": ThreadPoolExecutor(4)}, timezone=zone(settings.schedule),
        # the jobs decide lateness themselves (misfire_grace_minutes, with a report): APScheduler's
        # own grace would drop a late run with only a log line
        job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 1})

    def add_jobs(_event) -> None:
        stored = scheduler.get_job("slot")
        if stored is None or repr(stored.trigger) != repr(trigger):  # keep a stored run time: a missed slot runs
            scheduler.add_job(slot_job, trigger, id="slot", name="the slot", replace_existing=True)
        scheduler.add_job(tick_job, "interval", seconds=TICK_SECONDS, id="tick", name="the tick",
                          replace_existing=True, next_run_time=clock())

    scheduler.add_listener(add_jobs, EVENT_SCHEDULER_STARTED)
    logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)  # its per-run chatter is not a decision
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)   # SIGTERM stops like Ctrl-C
    shown_before = warnings.showwarning   # a warning (e.g. a non-https base_url) is one line too
    warnings.showwarning = lambda message, *a, **k: log.warning("%s warning: %s", _stamp(clock()), message)
    now = clock()
    upcoming_slot = next_slots(settings.schedule, now, 1)
    log.info("%s scheduler started (%s): list=%s, next slot %s, grace %s min", _stamp(now), service.runner,
             settings.schedule.list, shown(upcoming_slot[0], settings.schedule) if upcoming_slot else "none",
             settings.schedule.misfire_grace_minutes)
    try:
        scheduler.start()
    except KeyboardInterrupt:
        pass
    finally:
        service.stop.set()          # a send in progress ends after its batch, resumable
        if scheduler.running:
            scheduler.shutdown(wait=True)
        signal.signal(signal.SIGTERM, previous)
        warnings.showwarning = shown_before
        _service = None
        log.info("%s scheduler stopped", _stamp(clock()))
