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
from typing import NamedTuple

from mailer.compose.personalize import Recipient, personalize
from mailer.errors import AmbiguousDelivery, DeliveryError, SendTakenOver
from mailer.send import ledger
from mailer.send.deliver.base import ResultStatus
from mailer.send.ledger import Deferral, Mark, State
from subscribers.models import utcnow

PREFETCH = 50              # readers read and personalized ahead at once (SMTP batches are single)
MAX_BACKOFF = 3600.0       # seconds: the longest wait between two tries of a deferred reader


@dataclass
class Prepared:
    ids: list = field(default_factory=list)       # every delivery id to claim, in order
    outs: list = field(default_factory=list)      # messages for the readers still wanted
    readers: dict = field(default_factory=dict)   # ref -> ledger.Reader
    marks: list = field(default_factory=list)     # ledger.Mark: the readers skipped or failed already
    last_id: int = 0
    encoded: object = None                        # backend.encode(outs), made ahead of sending
    batch: int | None = None                      # set when claimed before it is read (workers.WorkerLoop)


class Claimed(NamedTuple):
    batch: int | None              # the ledger's batch number; None when nothing was claimed
    prepared: Prepared | None      # what is left to send of it (a rival may have taken some)


class BatchLoop:
    """One run's loop; `summary` (a dispatch.SendSummary) holds the running counts."""

    def __init__(self, engine, send_id, list_id, edition, tokens, backend, summary, on_progress, started, *,
                 retry: Retry, ref_key: str, refused=None, lost=lambda: False, stop=lambda: False):
        self.stop = stop  # asked between batches: True ends the run with the rest pending (resumable)
        self.engine, self.send_id, self.list_id, self.ref_key = engine, send_id, list_id, ref_key
        self.edition, self.tokens, self.backend = edition, tokens, backend
        self.summary, self.on_progress, self.started = summary, on_progress, started
        self.retry = retry
        self.refused = refused or (lambda conn, reader, detail: None)  # a permanent refusal, for the policy
        self.lost = lost                                                # the heartbeat says: taken over
        self.ahead: deque[Prepared] = deque()

    def run(self, sleep) -> None:
        """Every pending reader once; then deferred readers due within [delivery]
        retry_wait_seconds are waited for and tried again, until none is due that soon."""
        with _fewer_collections(), ThreadPoolExecutor(max_workers=1, thread_name_prefix="deliver") as wire:
            while True:
                self.one_pass(wire)
                if self.stop():
                    return
                wait = self.retry.wait_for(self.engine, self.send_id, self.summary)
                if wait is None:
                    return
                sleep(wait)  # a greylisting server's few minutes: waited out by the run itself
                with self.engine.begin() as conn:
                    self.summary.deferred -= ledger.requeue_due(conn, self.send_id)

    def one_pass(self, wire) -> None:
        ready, done = self.prepare(0), None
        while ready is not None:
            if self.lost():
                self.commit(done, None)  # what was sent is recorded; nothing more is claimed
                raise SendTakenOver(f"send #{self.send_id} was taken over by another runner (mailer send "
                                "--take-over); this one stops")
            if self.stop():
                break                    # the batch on the wire is recorded below; nothing more is claimed
            batch, current = self.commit(done, ready)  # record the last batch, claim this one
            sending = (wire.submit(self.backend.send_batch, current.outs, current.encoded)
                       if current.outs else None)
            ready = self.prepare(current.last_id)     # overlaps the request
            try:
                done = (batch, current, sending.result() if sending else [])
            except AmbiguousDelivery as exc:  # may have been taken: it stays `sending`, named next run
                with self.engine.begin() as conn:
                    ledger.note_in_doubt(conn, self.send_id, batch, str(exc))
                self.summary.in_doubt += len(current.outs)
                raise
            except DeliveryError as exc:  # provably not sent: back to pending
                with self.engine.begin() as conn:
                    ledger.release(conn, self.send_id, batch, str(exc))
                raise
        self.commit(done, None)

    def commit(self, done: tuple | None, ready: Prepared | None):
        """One transaction: the claim of the next batch, then the results of the batch just sent.

        The claim goes first because it starts on the send's row (its batch number): every
        transaction that changes a send's row and its deliveries locks them in that order, so a
        runner taking over (dispatch._start) never deadlocks with this one. A claim refused because
        the send is no longer ours still lets the results be written (they are facts), then stops."""
        counted, claimed = [], Claimed(None, None)
        with self.engine.begin() as conn:
            if ready:
                claimed = self.claim(conn, ready)
                counted += claimed.prepared.marks if claimed.prepared else []
            if done:
                counted += self.record(conn, *done)
        for mark in counted:
            self._count(mark.state)
        if done:
            self.progress()
        if ready and claimed.batch is None:
            raise SendTakenOver(f"send #{self.send_id} was taken over by another runner (mailer send "
                                "--take-over); this one stops")
        return claimed

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
        with self.engine.connect() as conn:
            rows = ledger.peek(conn, self.send_id, self.list_id, after, size)
            if not rows and after:  # readers put back behind us (another worker's released batch)
                rows = ledger.peek(conn, self.send_id, self.list_id, 0, size)
        return [self._personalize(rows[k:k + step]) for k in range(0, len(rows), step)]

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

    def claim(self, conn, p: Prepared) -> Claimed:
        """Claim the prepared readers (committed before anything is sent); drop any lost to a rival."""
        batch, mine = ledger.claim(conn, self.send_id, p.ids)
        if batch is None:
            return Claimed(None, None)
        if mine is not None:  # a rival took some: re-encode what is left to us
            outs = [o for o in p.outs if p.readers[o.ref].delivery_id in mine]
            p = Prepared(p.ids, outs, p.readers, [m for m in p.marks if m.delivery_id in mine], p.last_id,
                         self.backend.encode(outs) if outs else None)
        ledger.mark(conn, p.marks)
        return Claimed(batch, p)

    def record(self, conn, batch: int, p: Prepared, results: list) -> list:
        """Write a batch's results; one UPDATE when SendGrid took it all under one message id."""
        accepted = [r for r in results if r.ok]
        others: list[Mark] = []
        deferred: list[Deferral] = []
        for r in results:
            if not r.ok:
                self._settle(conn, p.readers[r.ref], r, others, deferred)
        shared = {r.provider_id for r in accepted}
        # (a reader in doubt stays `sending`)
        one_id = len(shared) == 1 and not any(r.status is ResultStatus.IN_DOUBT for r in results)
        each = [] if one_id else [Mark(p.readers[r.ref].delivery_id, State.ACCEPTED.value, r.provider_id, None)
                                  for r in accepted]
        ledger.mark(conn, others + each)
        ledger.defer(conn, deferred)
        if one_id:
            ledger.accept_rest(conn, self.send_id, batch, p.ids, shared.pop())
        self.summary.sent += len(accepted)
        return others + [Mark(d.delivery_id, State.DEFERRED.value, None, d.error) for d in deferred]

    def _settle(self, conn, reader, result, others: list[Mark], deferred: list[Deferral]) -> None:
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
            self.refused(conn, reader, detail)
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
