"""Stage 5, inner loop: pending readers -> claimed batch -> backend -> recorded results.

One batch is on the wire at a time (a crash leaves at most that one `sending`). While it is, the
next one is read from the ledger and personalized, so the provider's own time overlaps ours:

    prepared = prepare()                  # read-only: readers, suppression, messages
    loop:  record(last) + claim(prepared)  ->  send it in the worker thread  ->  prepare() the next

Readers suppressed since the start (unsubscribed, bounced, forgotten) are skipped when their batch
is prepared; an address that cannot be written safely fails alone.
"""

from __future__ import annotations

import gc
import time
from collections import deque
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from mailer import ledger
from mailer.deliver.base import ResultStatus
from mailer.errors import DeliveryError
from mailer.ledger import State
from mailer.personalize import Recipient, personalize

MAX_ATTEMPTS = 3           # a reader refused temporarily (SMTP 4xx) three times is marked failed
HEARTBEAT_EVERY = 10.0     # seconds between sends.heartbeat_at updates
PREFETCH = 50              # readers read and personalized ahead at once (SMTP batches are single)


@dataclass
class Prepared:
    ids: list = field(default_factory=list)       # every delivery id to claim, in order
    outs: list = field(default_factory=list)      # messages for the readers still wanted
    readers: dict = field(default_factory=dict)   # ref -> ledger.Reader
    marks: list = field(default_factory=list)     # (delivery id, state, None, why): skipped / failed
    last_id: int = 0
    encoded: object = None                        # backend.encode(outs), made ahead of sending


class BatchLoop:
    """One run's loop; `summary` (a dispatch.SendSummary) holds the running counts."""

    def __init__(self, engine, send_id, list_id, edition, tokens, backend, summary, on_progress, started, *,
                 ref_key: str):
        self.engine, self.send_id, self.list_id, self.ref_key = engine, send_id, list_id, ref_key
        self.edition, self.tokens, self.backend = edition, tokens, backend
        self.summary, self.on_progress, self.started = summary, on_progress, started
        self.beat = time.monotonic()
        self.ahead: deque[Prepared] = deque()

    def run(self, retry_delay: float, sleep) -> None:
        with _fewer_collections(), ThreadPoolExecutor(max_workers=1, thread_name_prefix="deliver") as wire:
            ready, done = self.prepare(0), None
            while True:
                if ready is None:
                    self.commit(done, None)
                    done = None
                    if not self.summary.deferred:
                        return
                    sleep(retry_delay)  # temporary refusals get another pass (MAX_ATTEMPTS in all)
                    with self.engine.begin() as conn:
                        self.summary.deferred -= ledger.requeue_deferred(conn, self.send_id)
                    ready = self.prepare(0)
                    continue
                batch, current = self.commit(done, ready)  # record the last batch, claim this one
                sending = (wire.submit(self.backend.send_batch, current.outs, current.encoded)
                           if current.outs else None)
                ready = self.prepare(current.last_id)     # overlaps the request
                try:
                    done = (batch, current, sending.result() if sending else [])
                except DeliveryError as exc:
                    with self.engine.begin() as conn:
                        ledger.release(conn, self.send_id, batch, str(exc))
                    raise

    def commit(self, done: tuple | None, ready: Prepared | None):
        """One transaction: the results of the batch just sent, then the claim of the next one."""
        counted, claimed = [], (None, None)
        with self.engine.begin() as conn:
            if done:
                counted += self.record(conn, *done)
            if ready:
                claimed = self.claim(conn, ready)
                counted += claimed[1].marks
            if time.monotonic() - self.beat > HEARTBEAT_EVERY:
                ledger.heartbeat(conn, self.send_id)
                self.beat = time.monotonic()
        for _, state, _, _ in counted:
            self._count(state)
        if done:
            self.progress()
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
                p.marks.append((reader.delivery_id, State.SKIPPED.value, None, reader.suppressed))
                continue
            try:
                out = personalize(self.edition, Recipient(ledger.delivery_ref(self.send_id, reader.subscriber_id, self.ref_key),
                                                          reader.email, reader.name or "",
                                                          self.tokens(reader.subscriber_id)))
            except DeliveryError as exc:  # an address that cannot be written safely
                p.marks.append((reader.delivery_id, State.FAILED.value, None, str(exc)))
                continue
            p.outs.append(out)
            p.readers[out.ref] = reader
        if p.outs:
            p.encoded = self.backend.encode(p.outs)
        return p

    def claim(self, conn, p: Prepared) -> tuple[int, Prepared]:
        """Claim the prepared readers (committed before anything is sent); drop any lost to a rival."""
        batch, mine = ledger.claim(conn, self.send_id, p.ids)
        if mine is not None:  # a rival took some: re-encode what is left to us
            outs = [o for o in p.outs if p.readers[o.ref].delivery_id in mine]
            p = Prepared(p.ids, outs, p.readers, [m for m in p.marks if m[0] in mine], p.last_id,
                         self.backend.encode(outs) if outs else None)
        ledger.mark(conn, p.marks)
        return batch, p

    def record(self, conn, batch: int, p: Prepared, results: list) -> list:
        """Write a batch's results; one UPDATE when SendGrid took it all under one message id."""
        accepted = [r for r in results if r.ok]
        others = [(p.readers[r.ref].delivery_id, _state(r, p.readers[r.ref]).value, None, r.detail)
                  for r in results if not r.ok]
        shared = {r.provider_id for r in accepted}
        each = [] if len(shared) == 1 else [(p.readers[r.ref].delivery_id, State.ACCEPTED.value, r.provider_id, None)
                                            for r in accepted]
        ledger.mark(conn, others + each)
        if len(shared) == 1:
            ledger.accept_rest(conn, self.send_id, batch, p.ids, shared.pop())
        self.summary.sent += len(accepted)
        return others

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


def _state(result, reader) -> State:
    if result.status is ResultStatus.RETRY_LATER and reader.attempts < MAX_ATTEMPTS:
        return State.DEFERRED
    return State.FAILED
