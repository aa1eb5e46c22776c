"""Stage 5, inner loop: pending readers -> claimed batch -> backend -> recorded results.

One batch is on the wire at a time (a crash leaves at most that one `sending`). While it is, the
next one is read from the ledger and personalized, so the provider's own time overlaps ours:

    prepared = prepare()                  # read-only: readers, suppression, messages
    loop:  record(last) + claim(prepared)  ->  send it in the worker thread  ->  prepare() the next

Readers suppressed since the start (unsubscribed, bounced, forgotten) are skipped when their batch
is prepared; an address that cannot be written safely fails alone. A reader refused temporarily is
deferred with a next attempt (`Retry`); once no reader is pending, the loop waits for deferred
readers due soon and passes again. A batch sent without an answer stays `sending` (in doubt).
"""

from __future__ import annotations

import gc
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import NamedTuple

from mailer.compose.personalize import Recipient, personalize
from mailer.errors import AmbiguousDelivery, DatabaseUnavailable, DeliveryError, PermanentDelivery, SendTakenOver
from mailer.send import ledger
from mailer.send.deliver.base import ResultStatus
from mailer.send.deliver.refusals import refusal_kind, sender_refusal
from mailer.send.ledger import Deferral, Mark, State
from mailer.send.stall import Stall, keep
from subscribers.models import utcnow

PREFETCH = 50              # readers read and personalized ahead at once (SMTP batches are single)
MAX_BACKOFF = 3600.0       # seconds: the longest wait between two tries of a deferred reader
STOP_CHECK = 1.0           # seconds: how often a wait for deferred readers asks whether to stop


@dataclass
class Prepared:
    ids: list = field(default_factory=list)       # every delivery id to claim, in order
    outs: list = field(default_factory=list)      # messages for the readers still wanted
    readers: dict = field(default_factory=dict)   # ref -> ledger.Reader
    marks: list = field(default_factory=list)     # ledger.Mark: the readers skipped or failed already
    last_id: int = 0
    encoded: object = None                        # backend.encode(outs), made ahead of sending
    batch: int | None = None                      # set when claimed before it is read (workers.WorkerLoop)


class Outcome(NamedTuple):
    """A batch's results as the ledger will take them (BatchLoop.outcome)."""
    batch: int
    ids: list                      # every delivery id of the batch
    marks: list                    # Mark: what this batch counts as (failed, deferred, in doubt)
    others: list                   # Mark: failed and in doubt, written one by one
    deferrals: list                # Deferral
    each: list                     # Mark: each accepted reader (written as one UPDATE when `one_id`)
    one_id: str | None             # SendGrid took the whole batch under this message id
    refused: list                  # (Reader, detail): permanent refusals, for the bounce policy


class Claimed(NamedTuple):
    batch: int | None              # the ledger's batch number; None when nothing was claimed
    prepared: Prepared | None      # what is left to send of it (a rival may have taken some)


class BatchLoop:
    """One run's loop; `summary` (a dispatch.SendSummary) holds the running counts."""

    def __init__(self, engine, send_id, list_id, edition, tokens, backend, summary, on_progress, started, *,
                 retry: Retry, ref_key: str, refused=None, lost=lambda: False, stop=lambda: False,
                 stall: Stall | None = None, journal: Path | None = None, pacer=None):
        self.stop = stop  # asked between batches: True ends the run with the rest pending (resumable)
        self.stall = stall or Stall()     # a database briefly away: each step retried (stall.py)
        self.journal = journal            # where results go when it stays away (None: left in flight)
        self.writer: str | None = None    # a worker's own journal file (stall.journal_file); None: the send's
        self.engine, self.send_id, self.list_id, self.ref_key = engine, send_id, list_id, ref_key
        self.edition, self.tokens, self.backend = edition, tokens, backend
        self.summary, self.on_progress, self.started = summary, on_progress, started
        self.retry = retry
        self.refused = refused or (lambda conn, reader, detail: None)  # a permanent refusal, for the policy
        self.lost = lost                                                # the heartbeat says: taken over
        self.ahead: deque[Prepared] = deque()
        self.accepted_any = False   # a reader of this run was accepted: a refusal is about readers from now on
        # [delivery.pacing]: a pacing.Pacer (or a warm-up's day in front of it) between the loop and the backend
        self.deliver = (self.backend.send_batch if pacer is None else
                        partial(pacer.deliver, self.backend.send_batch, self.backend.encode))

    def run(self, sleep) -> None:
        """Every pending reader once; then deferred readers due within [delivery]
        retry_wait_seconds are waited for and tried again, until none is due that soon."""
        with _fewer_collections(), ThreadPoolExecutor(max_workers=1, thread_name_prefix="deliver") as wire:
            while True:
                self.one_pass(wire)
                if self.stop():
                    return
                wait = self.stall_step(lambda: self.retry.wait_for(self.engine, self.send_id, self.summary),
                                       "looking for deferred readers")
                if wait is None:
                    return
                if not self._wait(sleep, wait):  # a greylisting server's few minutes: waited out by the run itself
                    return                           # ... unless it is asked to stop meanwhile
                self.summary.deferred -= self.stall_step(self._requeue_due, "requeueing deferred readers")

    def _requeue_due(self) -> int:
        with self.engine.begin() as conn:
            return ledger.requeue_due(conn, self.send_id)

    def _step(self, change, batch: int, error: str, what: str, unsent: Prepared | None = None) -> None:
        """note_in_doubt or release, retried while the database is briefly away; a batch that provably
        did not go is journaled back to pending when it stays away (else it would look in flight)."""
        def write() -> None:
            with self.engine.begin() as conn:
                change(conn, self.send_id, batch, error)
        try:
            self.stall_step(write, what)
        except DatabaseUnavailable as exc:
            if unsent is None or self.journal is None:
                raise
            path = keep(self.journal, self.send_id, [Mark(i, State.PENDING.value, None, error) for i in unsent.ids], [],
                        self.writer)
            raise DatabaseUnavailable(f"{exc}. Batch {batch} did not go; that is kept in {path} for the next run"
                                      ) from exc

    def _wait(self, sleep, seconds: float) -> bool:
        """Sleep `seconds` in steps of at most STOP_CHECK, so a stop (a signal) ends the wait; False if stopped."""
        end = time.monotonic() + seconds
        while not self.stop():
            left = end - time.monotonic()
            if left <= 0:
                return True
            sleep(min(left, STOP_CHECK))
        return False

    def one_pass(self, wire) -> None:
        ready, done, stalled = self.prepare(0), None, None
        while ready is not None:
            if self.lost():
                self.commit(done, None)  # what was sent is recorded; nothing more is claimed
                raise SendTakenOver(f"send #{self.send_id} was taken over by another runner (mailer send "
                                "--take-over); this one stops")
            if self.stop():
                break                    # the batch on the wire is recorded below; nothing more is claimed
            batch, current = self.commit(done, ready)  # record the last batch, claim this one
            sending = (wire.submit(self.deliver, current.outs, current.encoded)
                       if current.outs else None)
            try:
                ready = self.prepare(current.last_id)     # overlaps the request
            except DatabaseUnavailable as exc:  # the batch on the wire is still answered and recorded below
                ready, stalled = None, exc
            try:
                done = (batch, current, self._accepting(batch, sending.result() if sending else []))
            except AmbiguousDelivery as exc:  # may have been taken: it stays `sending`, named next run
                self.summary.in_doubt += len(current.outs)
                self._step(ledger.note_in_doubt, batch, str(exc), f"noting batch {batch} in doubt")
                raise
            except DeliveryError as exc:  # provably not sent: back to pending
                self._step(ledger.release, batch, str(exc), f"putting batch {batch} back to pending", current)
                raise
        self.commit(done, None)
        if stalled is not None:
            raise stalled

    def _accepting(self, batch: int, results: list) -> list:
        """The results, unless they say the relay refuses *us*: until a reader of this run was accepted,
        a batch whose every reader was refused the same way about the sender (refusals.sender_refusal:
        relay access denied, client host rejected, 530) goes back to pending and the run stops, naming
        the cause, instead of marking the list failed (docs/exactly-once.md, "A relay that refuses us")."""
        if self.accepted_any or not results:
            return results
        if any(r.ok for r in results):
            self.accepted_any = True
            return results
        kinds = {refusal_kind(r.detail) for r in results}
        if len(kinds) != 1 or not all(r.status is ResultStatus.REJECTED and sender_refusal(r.detail)
                                      for r in results):
            return results
        cause = (f"the relay refused every reader of the run's first batch with \"{results[0].detail}\": a refusal "
                 "of the sender, not of the readers (is this host allowed to relay? do [delivery.smtp] username "
                 "and password_env log in?); nobody was marked failed")
        raise PermanentDelivery(cause, backend=self.backend.name)   # one_pass puts the batch back to pending

    def commit(self, done: tuple | None, ready: Prepared | None):
        """One transaction: the claim of the next batch, then the results of the batch just sent.

        The claim goes first because it starts on the send's row (its batch number): every
        transaction that changes a send's row and its deliveries locks them in that order, so a
        runner taking over (dispatch._start) never deadlocks with this one. A claim refused because
        the send is no longer ours still lets the results be written (they are facts), then stops.
        The results are worked out once, in memory; the transaction is retried while the database is
        briefly away (stall.Stall), and when it stays away they go to the journal (stall.keep)."""
        result = self.outcome(*done) if done else None
        what = f"recording batch {done[0]}" if done else "claiming the next batch"
        try:
            claimed = self.stall(lambda attempt: self._commit(result, ready, attempt), what)
        except DatabaseUnavailable as exc:
            raise self._kept(exc, result, ready) from exc
        counted = (result.marks if result else []) + (claimed.prepared.marks if claimed.prepared else [])
        for mark in counted:
            self._count(mark.state)
        if done:
            self.progress()
        if ready and claimed.batch is None:
            raise SendTakenOver(f"send #{self.send_id} was taken over by another runner (mailer send "
                                "--take-over); this one stops")
        return claimed

    def _commit(self, result: Outcome | None, ready: Prepared | None, attempt: int) -> Claimed:
        with self.engine.begin() as conn:   # the claim first: the send's row, then the deliveries
            claimed = self.claim(conn, ready, again=attempt > 0) if ready else Claimed(None, None)
            if result:
                self.write(conn, result)
            return claimed

    def _kept(self, exc: DatabaseUnavailable, result: Outcome | None, ready: Prepared | None) -> DatabaseUnavailable:
        """The run gives up on the database: the batch's results go to the journal, if there is one,
        and so does the claim being made, as never handed over (a COMMIT that took effect unseen
        would otherwise leave it looking in flight, for on_interrupted)."""
        unsent = [Mark(i, State.PENDING.value, None, "claimed as the database went away; never handed over")
                  for i in (ready.ids if ready else [])]
        if (result is None and not unsent) or self.journal is None:
            return exc if result is None else DatabaseUnavailable(f"{exc}; batch {result.batch} stays in flight "
                                                                  "for the next run")
        path = keep(self.journal, self.send_id, (result.others + result.each if result else []) + unsent,
                    result.deferrals if result else [], self.writer)
        if result is None:
            return exc
        return DatabaseUnavailable(f"{exc}. The results of batch {result.batch} ({len(result.ids):,} readers) are "
                                   f"kept in {path}: the next run of this send applies them")

    def stall_step(self, work, what: str):
        """A database step of the loop, retried while the database is briefly away."""
        return self.stall(lambda attempt: work(), what)

    def prepare(self, after: int) -> Prepared | None:
        """The next batch, read and personalized but not claimed; None when none is pending.

        Readers are read PREFETCH at a time and cut into batches of `max_batch`, so a backend
        that sends one message per batch (SMTP) does not pay a query per message."""
        if not self.ahead:
            self.ahead.extend(self._read_ahead(after))
        return self.ahead.popleft() if self.ahead else None

    def _read_ahead(self, after: int) -> list[Prepared]:
        step = self.backend.max_batch
        size = step * -(-PREFETCH // step)  # whole batches only: never a short one mid-send
        rows = self.stall_step(lambda: self._peek(after, size), "reading the next readers")
        return [self._personalize(rows[k:k + step]) for k in range(0, len(rows), step)]

    def _peek(self, after: int, size: int) -> list:
        with self.engine.connect() as conn:
            rows = ledger.peek(conn, self.send_id, self.list_id, after, size)
            if not rows and after:  # readers put back behind us (another worker's released batch)
                rows = ledger.peek(conn, self.send_id, self.list_id, 0, size)
        return rows

    def _personalize(self, rows: list) -> Prepared:
        p = Prepared(ids=[r.delivery_id for r in rows], last_id=rows[-1].delivery_id)
        for reader in rows:
            if reader.suppressed:
                p.marks.append(Mark(reader.delivery_id, State.SKIPPED.value, None, reader.suppressed))
                continue
            try:
                ref = ledger.delivery_ref(self.send_id, reader.subscriber_id, self.ref_key)
                out = personalize(self.edition, Recipient(ref, reader.email, reader.name or "",
                                                          self.tokens(reader.subscriber_id, reader.key),
                                                          reader.subscriber_id or 0, not reader.no_tracking))
            except DeliveryError as exc:  # an address that cannot be written safely
                p.marks.append(Mark(reader.delivery_id, State.FAILED.value, None, str(exc)))
                continue
            p.outs.append(out)
            p.readers[out.ref] = reader
        if p.outs:
            p.encoded = self.backend.encode(p.outs)
        return p

    def claim(self, conn, p: Prepared, again: bool = False) -> Claimed:
        """Claim the prepared readers (committed before anything is sent); drop any lost to a rival.
        `again`: an earlier try failed, maybe after its COMMIT took effect; readers it claimed then
        are ours (one runner claims a send's readers: nobody else could have)."""
        earlier = ledger.claimed_before(conn, self.send_id, p.ids) if again else None
        batch, mine = earlier or ledger.claim(conn, self.send_id, p.ids)
        if batch is None:   # the send is no longer ours (taken over): nothing claimed
            return Claimed(None, None)
        if mine is not None:  # a rival took some: re-encode what is left to us
            outs = [o for o in p.outs if p.readers[o.ref].delivery_id in mine]
            p = Prepared(p.ids, outs, p.readers, [m for m in p.marks if m.delivery_id in mine], p.last_id,
                         self.backend.encode(outs) if outs else None)
        ledger.mark(conn, p.marks)
        return Claimed(batch, p)

    def outcome(self, batch: int, p: Prepared, results: list) -> Outcome:
        """A batch's results as ledger changes, worked out once (the counts are the summary's now)."""
        accepted = [r for r in results if r.ok]
        others: list[Mark] = []
        deferred: list[Deferral] = []
        refused: list = []
        for r in results:
            if not r.ok:
                self._settle(p.readers[r.ref], r, others, deferred, refused)
        shared = {r.provider_id for r in accepted}
        # (a reader in doubt stays `sending`)
        one_id = len(shared) == 1 and not any(r.status is ResultStatus.IN_DOUBT for r in results)
        each = [Mark(p.readers[r.ref].delivery_id, State.ACCEPTED.value, r.provider_id, None) for r in accepted]
        self.summary.sent += len(accepted)
        return Outcome(batch, p.ids, others + [Mark(d.delivery_id, State.DEFERRED.value, None, d.error)
                                               for d in deferred],
                       others, deferred, each, shared.pop() if one_id else None, refused)

    def write(self, conn, o: Outcome) -> None:
        """Write a batch's results; one UPDATE when SendGrid took it all under one message id."""
        ledger.mark(conn, o.others + ([] if o.one_id else o.each))
        ledger.defer(conn, o.deferrals)
        if o.one_id:
            ledger.accept_rest(conn, self.send_id, o.batch, o.ids, o.one_id)
        for reader, detail in o.refused:
            self.refused(conn, reader, detail)

    def _settle(self, reader, result, others: list[Mark], deferred: list[Deferral], refused: list) -> None:
        """One refused or unanswered reader: deferred with a next attempt, failed, or in doubt."""
        if result.status is ResultStatus.IN_DOUBT:  # stays `sending`: the next run applies on_interrupted
            others.append(Mark(reader.delivery_id, State.SENDING.value, None, result.detail))
            self.summary.in_doubt += 1
            return
        if result.status is ResultStatus.RETRY_LATER:
            at = self.retry.next_attempt(reader.attempts)
            if at is not None:
                deferred.append(Deferral(reader.delivery_id, result.detail, at))
                return
            detail = f"{result.detail} (still refused after {self.retry.hours:g} hours of retries)"
        else:
            detail = result.detail
            refused.append((reader, detail))
        others.append(Mark(reader.delivery_id, State.FAILED.value, None, detail))

    def progress(self) -> None:
        self.summary.duration = time.monotonic() - self.started
        self.on_progress(self.summary)

    def _count(self, state: str) -> None:
        s = self.summary
        if state == State.FAILED.value:
            s.failed += 1
        elif state == State.SKIPPED.value:
            s.skipped += 1
        elif state == State.DEFERRED.value:
            s.deferred += 1


@contextmanager
def _fewer_collections():
    """A send makes millions of short-lived, acyclic objects (rows, messages, JSON pieces): collect
    young garbage less often and leave the long-lived heap (compose, SQLAlchemy) out of it."""
    threshold = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(50_000, threshold[1], threshold[2])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


class Retry:
    """When a reader refused temporarily is tried again: after retry_first_seconds, doubling up to
    an hour, until retry_hours after the send started (an MTA's queue lifetime); then failed."""

    def __init__(self, started_at, hours: float, first_seconds: float, wait_seconds: float, clock=None):
        self.hours, self.first, self.wait = hours, first_seconds, wait_seconds
        self.until = started_at + timedelta(hours=hours)
        self.clock = clock or utcnow

    def next_attempt(self, attempts: int):
        """The time of the next try after `attempts` tries, or None when the window is over."""
        at = self.clock()
        if at >= self.until:
            return None
        delay = min(MAX_BACKOFF, self.first * 2 ** max(0, attempts - 1))
        return min(at + timedelta(seconds=delay), self.until)

    def wait_for(self, engine, send_id: int, summary) -> float | None:
        """Seconds until the next deferred reader is due, if this run should wait for it; else
        None (and summary.retry_at says when a rerun will find them due)."""
        with engine.connect() as conn:
            due = ledger.next_due(conn, send_id)
        summary.retry_at = due.isoformat() if due is not None else None
        if due is None:
            return None
        wait = max(0.0, (due - self.clock()).total_seconds())
        return wait if wait <= self.wait else None
