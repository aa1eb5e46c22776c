"""Stage 5, shared: one send, several `mailer worker` processes, on any machines that reach the database.

    mailer send ISSUE --list NAME --workers 4    # starts the send (ledger rows as ever), runs 4 workers
    mailer worker [--forever]                    # on another machine: joins any shared running send

A worker holds a lease (mailer/send/leases.py) renewed by its heartbeat, claims one batch at a time with
`SELECT ... FOR UPDATE SKIP LOCKED`, commits it `sending` under its name, then reads, personalizes and
sends it through the same loop as a single-process send (batches.BatchLoop). A batch left `sending`
by a worker whose lease expired is reclaimed by any other, with [delivery] on_interrupted applied to
it as to any batch in flight at a crash. SQLite has one writer: one worker at a time there.
The argument: docs/workers.md.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError

from mailer.config import OnInterrupted, Settings, database_url
from mailer.errors import AmbiguousDelivery, DatabaseUnavailable, SendError, SendTakenOver
from mailer.reports.figures import failure_lines
from mailer.send import dispatch, leases, ledger, pacing, warmup
from mailer.send.batches import BatchLoop, Claimed, Prepared, Retry
from mailer.send.deliver.registry import create_backend
from mailer.send.ledger import SendStatus, State
from mailer.send.ratelimit import SharedBudget
from mailer.send.stall import LONGEST_WAIT, Stall, apply_files, journal_file, journal_files, transient

POLL = 1.0   # seconds between looks at the ledger while waiting (for other workers, or --forever)
PROGRESS_SHARE = 0.02   # at most this share of the time counting readers for `send --workers`'s bar


def sqlite_refusal(what: str) -> str:
    return (f"{what} needs PostgreSQL ([database] url = \"postgresql+psycopg://...\"): SQLite lets one "
            "process write at a time, so one worker sends there")


def refuse_on_sqlite(settings: Settings, what: str) -> None:
    if database_url(settings).startswith("sqlite"):
        raise SendError(sqlite_refusal(what))


class WorkerLoop(BatchLoop):
    """BatchLoop that claims before it reads: each batch is taken with SKIP LOCKED under this
    worker's name, then personalized (other workers never see it pending meanwhile)."""

    def __init__(self, *args, worker: str, lease: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.worker, self.lease = worker, lease
        self.writer = worker             # its own journal file (stall.journal_file): never shared with a peer
        self.unsent: set[int] = set()   # batches claimed and prepared, not yet handed to the backend

    def give_back(self, stall: Stall | None = None) -> None:
        """Batches claimed ahead but never sent (the run stopped first) go back to pending: nobody
        may have them, so on_interrupted does not apply. Retried while the database is briefly away;
        if it stays away they stay claimed, never handed over, and whoever settles them (a peer's
        reclaim, the next run) puts them back to pending all the same."""
        if not self.unsent:
            return

        def back(attempt: int) -> None:
            with self.engine.begin() as conn:
                for batch in sorted(self.unsent):
                    ledger.release(conn, self.send_id, batch, "claimed by a worker that stopped before sending it")
        (stall or self.stall)(back, "giving back the batches claimed ahead")
        self.unsent.clear()

    def _read_ahead(self, after: int) -> list[Prepared]:
        claimed = self.stall(lambda attempt: self._claim_next(after, attempt), "claiming the next batch")
        if claimed is None:
            return []
        batch, ids = claimed
        self.unsent.add(batch)   # from now on given back if the run stops before it is handed over
        rows = self.stall_step(lambda: self._batch_readers(batch, ids), f"reading batch {batch}")
        if not rows:  # reclaimed under us (our lease had expired): nothing of it is ours
            self.unsent.discard(batch)
            return self._read_ahead(after)
        p = self._personalize(rows)
        p.batch = batch
        return [p]

    def _claim_next(self, after: int, attempt: int) -> tuple[int, list[int]] | None:
        """leases.claim_next; a retry first takes back a batch an earlier try claimed (its COMMIT took
        effect although the worker saw it fail), which would otherwise sit claimed under a live lease."""
        with self.engine.begin() as conn:
            earlier = leases.claimed_unhanded(conn, self.send_id, self.worker, self.unsent) if attempt else None
            return earlier or leases.claim_next(conn, self.send_id, self.worker, self.backend.max_batch, after)

    def _batch_readers(self, batch: int, ids: list[int]) -> list:
        with self.engine.connect() as conn:
            return ledger.batch_readers(conn, self.send_id, self.list_id, batch, ids)

    def claim(self, conn, p: Prepared, again: bool = False) -> Claimed:
        """Claimed already, in _read_ahead; it leaves now, if it is still ours: checked in the
        database (leases.hand) in the transaction just before the request, which also stamps it as
        handed over. A batch reclaimed meanwhile (this worker was paused past its lease) or of a
        send stopped for the operator is not sent (None: the loop stops)."""
        assert p.batch is not None
        if leases.hand(conn, self.send_id, p.batch, self.worker, self.lease) < len(p.outs):
            return Claimed(None, None)
        ledger.mark(conn, p.marks)
        self.unsent.discard(p.batch)
        return Claimed(p.batch, p)


@dataclass
class WorkerReport:
    worker: str
    sends: dict = field(default_factory=dict)       # send id -> readers this worker sent
    reclaimed: list = field(default_factory=list)   # (send id, batch, readers, dead worker)
    stopped: list = field(default_factory=list)     # (send id, why): a batch in doubt stopped the send
    editions: dict = field(default_factory=dict, repr=False)  # send id -> the issue prepared for it


def _nap(seconds: float) -> None:
    """Wait between polls. Python sleeps until an absolute time on the monotonic clock; under a
    shifted clock (libfaketime, as tests/test_workers_faults.py runs a worker 5 minutes fast) that
    call can fail with EINVAL, and a nap cut short only means the next poll comes sooner."""
    try:
        time.sleep(seconds)
    except OSError:
        pass


def run_worker(settings: Settings, *, forever: bool = False, only: int | None = None,
               lease: float | None = None, notice=lambda message: None, poll: float = POLL,
               stop=lambda: False) -> WorkerReport:
    """Claim batches of running shared sends until none has work left (or, `forever`, until stopped)."""
    engine = dispatch.open_store(settings)
    lease = lease or settings.delivery.worker_lease_seconds
    me = ledger.this_runner()
    report = WorkerReport(me)
    current: list = [None]
    # the database briefly away: every step retried ([delivery] database_retry_seconds), as a single run's (stall.py)
    stall = Stall(settings.delivery.database_retry_seconds, notice=notice)
    stall(lambda attempt: _register(engine, me, lease), "registering the worker's lease")
    beat = ledger.Heartbeat(engine, None, every=lease / 4, beat=leases.renewer(me, lease, lambda: current[0]))
    gave_up = False
    try:
        with beat:
            while not stop() and not beat.lost:
                busy = False
                running = stall(lambda attempt: _shared_sends(engine, only), "looking for shared sends")
                for row in running:
                    current[0] = row.id
                    busy |= _work_on(settings, engine, row, me, report, notice, lambda: beat.lost, stop, lease,
                                     stall)
                if not busy and not forever:
                    break
                _nap(poll)
    except DatabaseUnavailable as exc:   # one line: what is known was recorded or journaled
        gave_up = True
        raise DatabaseUnavailable(f"worker {me} stopped after {sum(report.sends.values()):,} sent: {exc}") from exc
    finally:
        _release(engine, me, Stall(0) if gave_up else stall)
    return report


def _register(engine, me: str, lease: float) -> None:
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite" and leases.live_workers(conn, besides=me):
            raise SendError(sqlite_refusal("a second worker") + f"; {leases.live_workers(conn)[0][0]} is running")
        leases.acquire(conn, me, lease)


def _shared_sends(engine, only: int | None) -> list:
    with engine.connect() as conn:
        return list(leases.shared_sends(conn, only))


def _release(engine, me: str, stall: Stall) -> None:
    """Drop the worker's lease; a database that stays away lets it expire by itself (and on this
    host a peer or the next run sees its pid gone at once: leases.alive)."""
    def drop(attempt: int) -> None:
        with engine.begin() as conn:
            leases.release(conn, me)
    try:
        stall(drop, "releasing the worker's lease")
    except DatabaseUnavailable:
        pass


def _work_on(settings: Settings, engine, row, me: str, report: WorkerReport, notice, lost, stop,
             lease: float, stall: Stall) -> bool:
    """One pass over a send: reclaim dead workers' batches, send what is pending. True while the
    send still has work (pending, or in flight on another worker whose lease may yet expire).
    Every database step is retried while the database is briefly away (`stall`); when it stays
    away, DatabaseUnavailable, the batch's results in this worker's journal (BatchLoop.commit)."""
    if not stall(lambda attempt: _renew(engine, me, lease, row.id), "renewing the worker's lease"):
        return False   # our lease expired: we are the one taken for dead, and stop
    if _may_reclaim(stall, lease):
        stall(lambda attempt: _reclaim(engine, row, settings.delivery.on_interrupted, report, notice,
                                       settings.delivery.journal_dir), "settling dead workers' batches")
    summary = dispatch.SendSummary(row.issue, row.list_name, row.backend, send_id=row.id)
    loop = stall(lambda attempt: _loop(settings, engine, row, me, summary, lost, stop, report.editions, lease, stall),
                 "preparing the send")
    gave_up = False
    try:
        with loop.backend:
            loop.run(time.sleep)
    except SendTakenOver:
        return False   # our lease expired, or the send was stopped: what we held is not ours to send
    except AmbiguousDelivery as exc:   # in doubt: it stays so, and the run stops for the operator
        why = (f"batch in doubt on worker {me}: {exc}. The provider may or may not have taken it: it stays in "
               "flight, and the next `mailer send --workers N` names it and applies [delivery] on_interrupted")
        stall(lambda attempt: _finish(engine, row.id, SendStatus.STOPPED, why), "stopping the send")
        notice(f"send #{row.id} stopped: {why}")
        report.stopped.append((row.id, why))
        return False
    except DatabaseUnavailable:
        gave_up = True
        raise
    finally:
        report.sends[row.id] = report.sends.get(row.id, 0) + summary.sent
        try:   # after giving up, one try: never handed over, they go back to pending at the next settling anyway
            loop.give_back(Stall(0) if gave_up else stall)
        except DatabaseUnavailable:
            if not gave_up:
                raise
    c, others, left_today = stall(lambda attempt: _left(engine, row.id, me), "counting what is left of the send")
    if left_today == 0:   # a warm-up send at today's cap: the rest waits for tomorrow
        return bool(others)
    return bool(c[State.PENDING] or others)


def _renew(engine, me: str, lease: float, send_id: int) -> bool:
    """Renew this worker's lease, committed, before it judges others' (False: it had expired)."""
    with engine.begin() as conn:
        return leases.renewer(me, lease, lambda: send_id)(conn)


def _may_reclaim(stall: Stall, lease: float) -> bool:
    """May this worker (its own lease just renewed) settle dead workers' batches now? Not within a
    lease, plus the longest wait between two retries, of the database coming back: after an outage
    longer than the lease every lease looks expired, and the peers, still retrying, must first find
    theirs lost and record their batches on the wire, rather than have them reclaimed and resent."""
    return stall.since_recovered() >= lease + LONGEST_WAIT


def _finish(engine, send_id: int, status: SendStatus, why: str | None = None) -> None:
    with engine.begin() as conn:
        ledger.finish(conn, send_id, status, why, shared=True)


def _left(engine, send_id: int, me: str) -> tuple[dict, int, int | None]:
    """The send's counts, the readers in flight on other workers, and what a warm-up send may still
    claim today (None: no cap); the send is marked done when nothing is left."""
    with engine.begin() as conn:
        c = ledger.counts(conn, send_id)
        others = leases.others_in_flight(conn, send_id, me)
        if not ledger.unfinished(c):
            ledger.finish(conn, send_id, SendStatus.DONE, shared=True)
        left_today = warmup.left_today(conn, send_id, ledger.db_now(conn))
    return c, others, left_today


def _reclaim(engine, row, on_interrupted: OnInterrupted, report: WorkerReport, notice,
             journal: Path | None = None) -> None:
    """Settle the batches of the send held by dead workers: first what a dead worker journaled on
    this host (it gave up on the database: its results are facts, applied to readers still
    `sending`), then what is left: never handed over -> pending; handed over -> on_interrupted, named."""
    with engine.begin() as conn:
        dead = leases.dead_batches(conn, row.id)
        whose = {b: w for b, _, w, _ in dead}
        kept = [path for path in (journal_file(journal, row.id, w) for w in sorted({w for w in whose.values() if w}))
                if path.is_file()] if journal is not None else []
        applied = apply_files(conn, kept, row.id)
        if kept:   # what is still in flight of those batches once their journals are applied
            dead = [(b, n, whose[b], h) for b, n, h in ledger.in_flight_batches(conn, row.id, list(whose))]
        leases.reclaim(conn, row.id, [b for b, _, _, _ in dead], resend=on_interrupted == OnInterrupted.RESEND)
    for path in kept:   # committed: the journal's results are the ledger's now
        path.unlink(missing_ok=True)
    if kept:
        notice(f"send #{row.id}: {applied:,} readers' results that dead workers could not record were applied "
               f"from {', '.join(map(str, kept))}")
    for batch, readers, worker, handed in dead:
        state = (f"was in flight on worker {worker}, whose lease expired:" if handed
                 else f"was claimed by worker {worker}, whose lease expired, and")
        notice(f"send #{row.id}: batch {batch} ({readers:,} readers) {state} "
               f"{dispatch.fate_of_interrupted(handed, on_interrupted)}")
        if handed:
            report.reclaimed.append((row.id, batch, readers, worker))


def _loop(settings: Settings, engine, row, me: str, summary, lost, stop, editions: dict,
          lease: float, stall: Stall) -> WorkerLoop:
    if row.id not in editions:  # prepared once per worker and send, from what the coordinator composed
        if row.composed is None:
            raise SendError(f"send #{row.id} has no stored composed issue (started before workers read it from "
                            f"the database): run `mailer send {row.issue} --list {row.list_name} --workers N` "
                            "again, which stores it")
        composed = ledger.stored_issue(row.composed)
        editions[row.id] = dispatch.edition_for(settings, engine, composed, row.id)  # same Message-IDs, links
    edition = editions[row.id]
    ref_key = dispatch.ref_key_of(settings)
    d = settings.delivery
    retry = Retry(row.started_at, d.retry_hours, d.retry_first_seconds, d.retry_wait_seconds)
    return WorkerLoop(engine, row.id, row.list_id, edition, dispatch._token_maker(settings, row.list_id, engine),
                      _backend(settings, engine, row.backend, stall), summary, lambda s: None, time.monotonic(),
                      retry=retry, ref_key=ref_key, refused=dispatch._bounce_policy(settings, row.id, ref_key),
                      lost=lost, stop=stop, worker=me, lease=lease, stall=stall, journal=d.journal_dir,
                      pacer=pacing.for_worker(settings, engine, row.id, stall))   # limits shared by the workers


def _backend(settings: Settings, engine, name: str, stall: Stall):
    """The send's backend; SendGrid draws on the budget all workers share (mailer/send/ratelimit.py)."""
    rate = settings.delivery.sendgrid.requests_per_second
    if name != "sendgrid" or not rate:
        return create_backend(name, settings)
    return create_backend(name, settings, budget=SharedBudget(engine, "sendgrid", rate, stall=stall))


# --- mailer send --workers N ---------------------------------------------------------------------

def run_shared(settings: Settings, plan: dispatch.Plan, workers: int, *, config=None, on_progress=None,
               notice=lambda message: None, take_over: bool = False, stopping=None) -> dispatch.SendSummary:
    """Start (or resume) the send, mark it shared, run `workers` local `mailer worker` processes on it
    and wait for them; the parent keeps the send's heartbeat, so a plain `mailer send` waits.

    `stopping` (commands.common.StopOnSignal, held by the caller): the first SIGINT or SIGTERM to
    this parent asks each worker, through its stdin, to stop after its batch on the wire is recorded
    (Coordinated); the parent then ends the send `stopped`. A second one kills the workers and this
    process at once, their batches left in flight for the next run (docs/exactly-once.md)."""
    if workers > 1:
        refuse_on_sqlite(settings, f"--workers {workers}")
    started = time.monotonic()
    summary = dispatch.SendSummary(plan.issue.slug, plan.list_name, plan.backend, segment=plan.segment)
    if plan.send_id is None and plan.readers == 0:
        return dispatch.run_send(settings, plan)   # its one-line refusal: nobody to send to
    archive = None if plan.already_sent else dispatch.archive_copy(plan.issue, settings.newsletter)
    if not plan.already_sent:  # settings and secrets fail here, before the ledger is touched
        dispatch.ref_key_of(settings)
        dispatch.check_tracking(settings)
        create_backend(plan.backend, settings)
    paced = dispatch._paced(settings, plan, time.sleep) if not plan.already_sent else None
    send_id, summary.interrupted, finished = dispatch._start(plan, settings.delivery.on_interrupted, notice,
                                                             take_over=take_over, archive=archive,
                                                             journal=settings.delivery.journal_dir, join=True,
                                                             order=paced.order if paced else None)
    summary.send_id = send_id
    if settings.delivery.pacing.warmup and not finished:   # the cap is the send's: the workers' claims keep it
        with plan.engine.begin() as conn:
            warmup.begin(conn, send_id, settings.delivery.pacing.warmup_first_day)
    if finished:
        with plan.engine.connect() as conn:
            dispatch._fill(summary, ledger.counts(conn, send_id))
        summary.already_sent, summary.status = True, SendStatus.DONE.value
        return summary
    stall = Stall(settings.delivery.database_retry_seconds, notice=notice)   # the database briefly away (stall.py)
    stall(lambda attempt: _share(plan, send_id, workers), "marking the send shared")
    command = [sys.executable, "-m", "mailer"] + (["--config", str(config)] if config else []) + [
        "worker", "--send", str(send_id), "--coordinated"]
    crew = Coordinated(command)
    if stopping is not None:
        stopping.on_first, stopping.on_again = crew.stop, crew.kill
    halted = stopping or (lambda: False)
    with ledger.Heartbeat(plan.engine, send_id):
        crew.start(workers, halted)
        shown = Progress(plan.engine, summary, started, on_progress)
        while any(p.poll() is None for p in crew.procs):
            shown.now()
            _wait_for_one(crew.procs, POLL)
    crew.close()
    failed = [p.returncode for p in crew.procs if p.returncode]
    error = f"{len(failed)} of {workers} workers failed (exit {failed})" if failed else None
    try:
        return _ended(plan, summary, send_id, error, stall, started, halted, notice)
    except DatabaseUnavailable as exc:   # one line; what the workers could not record is in their journals
        kept = journal_files(settings.delivery.journal_dir, send_id)
        where = (f"; the workers kept the results the database would not take in {', '.join(map(str, kept))}"
                 if kept else "")
        raise DatabaseUnavailable(f"send #{send_id} stopped{' (' + error + ')' if error else ''}: {exc}{where}; "
                                  "run the same command again once the database is back: it applies them and "
                                  "continues").told(summary) from exc


def _share(plan: dispatch.Plan, send_id: int, workers: int) -> None:
    with plan.engine.begin() as conn:   # what every worker sends: composed here, once (an older send gets it now)
        conn.execute(ledger.sends.update().where(ledger.sends.c.id == send_id).values(
            workers=workers, composed=func.coalesce(ledger.sends.c.composed, ledger.composed_json(plan.issue))))


def _ended(plan: dispatch.Plan, summary, send_id: int, error: str | None, stall: Stall, started: float,
           halted, notice) -> dispatch.SendSummary:
    """The workers are gone: end the send's run, `done`, or `stopped` (readers left, a batch in doubt,
    a signal). Readers left pending or in flight with no signal and no failed worker (each worker
    found its lease lost) stop it too, saying so: never an exit 0 with readers unsent."""
    c = stall(lambda attempt: _counts(plan, send_id), "counting the readers left")
    left = ledger.unfinished(c)
    stopped = stall(lambda attempt: _status(plan, send_id), "reading the send's state")
    if stopped.status == SendStatus.STOPPED.value and stopped.last_error:   # a worker stopped it: in doubt
        dispatch._finish(plan, summary, SendStatus.STOPPED, stopped.last_error, stall)
        summary.in_doubt = stall(lambda attempt: _counts(plan, send_id), "counting the readers in doubt")[State.SENDING]
        raise SendError(f"send #{send_id} stopped after {summary.sent:,} sent: {stopped.last_error}").told(summary)
    capped = bool(left) and not error and stall(lambda attempt: _capped(plan.engine, send_id, left, notice),
                                                "checking the day's warm-up cap")
    dispatch._finish(plan, summary, SendStatus.STOPPED if left else SendStatus.DONE, error, stall)
    summary.duration = time.monotonic() - started
    unsent = c[State.PENDING] + c[State.SENDING]
    if (left and error) or (unsent and not halted() and not capped):
        raise SendError(f"send #{send_id} stopped with {left:,} readers left: {error or 'the workers ended first'}; "
                        "run the same command again to continue").told(summary)
    return summary


def _capped(engine, send_id: int, left: int, notice) -> bool:
    """A warm-up send whose workers stopped at today's cap: marked so (the scheduler continues it tomorrow)."""
    with engine.connect() as conn:
        at = ledger.db_now(conn)
        if warmup.left_today(conn, send_id, at) != 0:
            return False
        day = warmup.today(conn, send_id, at)
    assert day is not None   # a warm-up send
    warmup.stopped_at_cap(engine, send_id, day, left, notice)
    return True


def _counts(plan: dispatch.Plan, send_id: int) -> dict:
    with plan.engine.connect() as conn:
        return ledger.counts(conn, send_id)


def _status(plan: dispatch.Plan, send_id: int):
    with plan.engine.connect() as conn:
        return conn.execute(select(ledger.sends.c.status, ledger.sends.c.last_error)
                            .where(ledger.sends.c.id == send_id)).one()


class Coordinated:
    """The local `mailer worker --coordinated` processes of `mailer send --workers N`. A stop is asked
    through each worker's stdin ("stop"), not by a signal: a worker that also got the signal itself
    (Ctrl-C reaches the terminal's whole process group, a service manager may signal every process of
    the unit) must not count the parent's word as a second signal and drop its batch on the wire."""

    def __init__(self, command: list[str]):
        self.command = command
        self.procs: list[subprocess.Popen] = []
        self.told: set[int] = set()
        self.stopping = False

    def start(self, workers: int, halted) -> None:
        for _ in range(workers):
            if halted():   # stopped before every worker started: the others are not started
                break
            self.procs.append(subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL))
            if self.stopping:
                self.stop()

    def stop(self) -> None:
        """Ask every worker to stop after its batch on the wire (called from a signal handler too)."""
        self.stopping = True
        for p in list(self.procs):
            if p.pid in self.told or p.stdin is None:
                continue
            self.told.add(p.pid)
            try:
                os.write(p.stdin.fileno(), b"stop\n")
            except (OSError, ValueError):   # it ended already (a broken pipe, a closed file)
                pass

    def kill(self) -> None:
        """Stop every worker at once, like kill -9: its batch on the wire stays in flight."""
        for p in list(self.procs):
            if p.returncode is None:
                try:
                    os.kill(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def close(self) -> None:
        for p in self.procs:
            if p.stdin is not None:
                try:
                    p.stdin.close()
                except OSError:
                    pass


def _wait_for_one(procs: list, most: float) -> None:
    """Sleep up to `most` seconds, waking as soon as a worker exits (the send's end is not delayed)."""
    alive = [p for p in procs if p.poll() is None]
    try:
        if alive:
            alive[0].wait(timeout=most)   # the others are looked at by the caller's next pass
    except subprocess.TimeoutExpired:
        pass


class Progress:
    """The parent's progress bar, from counts in the ledger. Counting reads every reader of the send,
    so it is done at most once per PROGRESS_SHARE of the time the last count took: the bar must not
    take the database's CPU from the workers (a million readers take a few hundred ms to count)."""

    def __init__(self, engine, summary, started: float, on_progress):
        self.engine, self.summary, self.started, self.on_progress = engine, summary, started, on_progress
        self.next = 0.0

    def now(self) -> None:
        if self.on_progress is None or time.monotonic() < self.next:
            return
        began = time.monotonic()
        try:
            with self.engine.connect() as conn:
                dispatch._fill(self.summary, ledger.counts(conn, self.summary.send_id))
        except DBAPIError as exc:   # the database briefly away: the bar waits (the workers retry their own steps)
            if not transient(exc):
                raise
            self.next = began + POLL
            return
        done = time.monotonic()
        self.next = done + (done - began) / PROGRESS_SHARE
        self.summary.duration = done - self.started
        self.on_progress(self.summary)


# --- mailer send --status ------------------------------------------------------------------------

def _runner_line(row, at, lines: list[str]) -> bool:
    """The send's runner, its heartbeat's age by the database's clock, alive or dead; True if alive."""
    if row.status != SendStatus.SENDING.value:
        if row.status == SendStatus.STOPPED.value and row.last_error:
            lines.append(f"  stopped: {row.last_error}")
        return False
    age = ledger.heartbeat_age(row, at)
    alive = age is not None and age < ledger.HEARTBEAT_STALE and not ledger.pid_gone(row.runner or "")
    beat = "never" if age is None else f"{max(0.0, age.total_seconds()):.0f} s ago"
    verdict = "alive" if alive else "dead: the same `mailer send` resumes it"
    lines.append(f"  runner {row.runner or '(none)'}: last heartbeat {beat} (database clock): {verdict}")
    return alive


def status_lines(settings: Settings, issue: str, list_name: str | None) -> list[str]:
    """Progress of every send of ISSUE (to one list): counts by state, workers holding batches."""
    engine = dispatch.open_store(settings)
    with engine.connect() as conn:
        q = select(ledger.sends).where(ledger.sends.c.issue == issue)
        if list_name:
            q = q.where(ledger.sends.c.list_name == list_name)
        rows = conn.execute(q.order_by(ledger.sends.c.id)).all()
        if not rows:
            where = f" to {list_name}" if list_name else ""
            raise SendError(f"no send of {issue}{where} yet (`mailer send {issue} --list NAME` starts one)")
        live = {w: until for w, _, until in leases.live_workers(conn)}
        at = ledger.db_now(conn)
        lines = []
        for row in rows:
            c = ledger.counts(conn, row.id)
            done = c[State.ACCEPTED] + c[State.FAILED] + c[State.SKIPPED]
            total = sum(c.values())
            shown = ", ".join(f"{n:,} {state}" for state, n in c.items() if n)
            segment = f" ({row.segment})" if row.segment else ""
            lines.append(f"send #{row.id} {row.issue} to {row.list_name}{segment}: "
                         f"{row.status}, {done:,}/{total:,} done ({shown or 'no readers'})")
            alive = _runner_line(row, at, lines)
            for worker, n in leases.holders(conn, row.id):
                if worker is None:
                    state = ("its runner's batch on the wire" if alive else
                             "in flight when its runner stopped: the next run names it and applies on_interrupted")
                    lines.append(f"  {n:,} readers in flight: {state}")
                    continue
                state = (f"lease {(live[worker] - at).total_seconds():.0f} s left" if worker in live
                         else "lease expired: reclaimed next")
                lines.append(f"  worker {worker}: {n:,} readers in flight, {state}")
            holding = dict(leases.holders(conn, row.id))
            idle = [w for w, s, _ in leases.live_workers(conn) if s == row.id and w not in holding]
            for worker in idle:
                lines.append(f"  worker {worker}: live, nothing in flight")
        lines += failure_lines(conn, issue, list_name)
    return lines
