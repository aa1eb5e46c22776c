"""Worker leases: which `mailer worker` holds which batch, and for how long (docs/workers.md).

A worker registers a lease (`worker_leases`: worker id, lease_until) before it claims anything and
renews it from its heartbeat timer (ledger.Heartbeat with `beat=renewer(...)`). It claims the next
pending readers of a shared send with `SELECT ... FOR UPDATE SKIP LOCKED` (PostgreSQL: two workers
never wait on, nor take, the same rows), marks them `sending` under a new batch number with its id
in `deliveries.worker`, commits, and only then reads and sends them. A `sending` reader whose worker
holds no live lease was in flight on a dead worker: `reclaim` applies [delivery] on_interrupted to it,
exactly as a rerun does to a batch in flight at a crash (dispatch._start).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import (
    Column,
    Integer,
    String,
    Table,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Row

from mailer.send import ledger, warmup
from mailer.send.ledger import SendStatus, State, deliveries, metadata, sends
from subscribers.models import UtcDateTime
from subscribers.models import utcnow as now

worker_leases = Table(
    "worker_leases", metadata,
    Column("worker", String(300), primary_key=True),
    Column("send_id", Integer),          # the send it works on now (for --status), None between sends
    Column("started_at", UtcDateTime, nullable=False),
    Column("lease_until", UtcDateTime, nullable=False),
)

def acquire(conn: Connection, worker: str, lease: float) -> None:
    stamp = ledger.db_now(conn)
    conn.execute(delete(worker_leases).where(or_(worker_leases.c.worker == worker,    # and long-dead workers'
                                                 worker_leases.c.lease_until < stamp - timedelta(days=1))))
    conn.execute(insert(worker_leases).values(worker=worker, started_at=stamp,
                                              lease_until=stamp + timedelta(seconds=lease)))


def renewer(worker: str, lease: float, send_id=lambda: None):
    """The heartbeat's beat for a worker: False once its lease expired (its batches may be reclaimed)."""
    def renew(conn: Connection) -> bool:
        stamp = ledger.db_now(conn)
        return conn.execute(update(worker_leases).where(worker_leases.c.worker == worker,
                                                        worker_leases.c.lease_until > stamp)
                            .values(lease_until=stamp + timedelta(seconds=lease), send_id=send_id())).rowcount == 1
    return renew


def release(conn: Connection, worker: str) -> None:
    conn.execute(delete(worker_leases).where(worker_leases.c.worker == worker))


def live_workers(conn: Connection, besides: str | None = None) -> Sequence[Row]:
    """(worker, send_id, lease_until) of every live lease."""
    q = select(worker_leases.c.worker, worker_leases.c.send_id, worker_leases.c.lease_until).where(
        worker_leases.c.lease_until > ledger.db_now(conn))
    if besides:
        q = q.where(worker_leases.c.worker != besides)
    return conn.execute(q.order_by(worker_leases.c.worker)).all()


def shared_sends(conn: Connection, only: int | None = None) -> Sequence[Row]:
    """The running sends workers may join."""
    q = select(sends).where(sends.c.status == SendStatus.SENDING.value, sends.c.workers > 0)
    if only is not None:
        q = q.where(sends.c.id == only)
    return conn.execute(q.order_by(sends.c.id)).all()


def claim_next(conn: Connection, send_id: int, worker: str, size: int, after: int) -> tuple[int, list[int]] | None:
    """Claim up to `size` pending readers (ids above `after` first, then from the start) as a new
    batch of `worker`; returns (the batch number, the ids claimed, ascending), or None when no reader
    is pending, the send no longer runs (stopped for the operator: docs/workers.md) or, for a
    warm-up send, today's cap is handed out (a batch is cut to what is left of it: warmup.py).

    The send's row is locked first (the one lock order: the send's row, then its deliveries), which
    also makes claims of one send take turns, as they did on the batch counter."""
    lock = select(sends.c.status).where(sends.c.id == send_id)
    if conn.dialect.name == "postgresql":
        lock = lock.with_for_update(key_share=True)   # FOR NO KEY UPDATE: what the batch counter's UPDATE takes
    if conn.execute(lock).scalar() != SendStatus.SENDING.value:
        return None
    take = _claim_pg if conn.dialect.name == "postgresql" else _claim
    allowed = warmup.claimable(conn, send_id, ledger.db_now(conn))   # a warm-up's cap is the send's: kept
    if allowed is not None:                                          # here, under the send's row lock
        size = min(size, allowed)
        if size <= 0:
            return None
    claimed = take(conn, send_id, worker, size, after) or (take(conn, send_id, worker, size, 0) if after else None)
    if allowed is not None and claimed:
        warmup.count_claim(conn, send_id, len(claimed[1]))
    return claimed


def _claim(conn: Connection, send_id: int, worker: str, size: int, after: int) -> tuple[int, list[int]] | None:
    """SQLite has one writer at a time: nothing to skip, so a plain read, then the update."""
    ids = list(conn.execute(select(deliveries.c.id).where(
        deliveries.c.send_id == send_id, deliveries.c.state == State.PENDING.value, deliveries.c.id > after)
        .order_by(deliveries.c.id).limit(size)).scalars())
    if not ids:
        return None
    batch = conn.execute(ledger._NEXT_BATCH, {"b_send": send_id}).scalar_one()
    conn.execute(update(deliveries).where(deliveries.c.id.in_(ids), deliveries.c.state == State.PENDING.value)
                 .values(state=State.SENDING.value, batch=batch, worker=worker, attempts=deliveries.c.attempts + 1,
                         updated_at=now(), handed_at=None))
    return batch, ids


# One statement, one round trip: the next pending readers that no other worker is claiming (SKIP
# LOCKED), a batch number only if there are any, and the readers marked `sending` under it. The
# ids go through an array, so the update is a probe of the primary key per reader whatever the
# planner thinks of the send's size.
_CLAIM_PG = text("""
WITH picked AS (
  SELECT id FROM deliveries WHERE send_id = :send AND state = 'pending' AND id > :after
  ORDER BY id LIMIT :size FOR UPDATE SKIP LOCKED),
numbered AS (
  UPDATE sends SET batches = batches + 1 WHERE id = :send AND EXISTS (SELECT 1 FROM picked) RETURNING batches)
UPDATE deliveries SET state = 'sending', batch = numbered.batches, worker = :worker, attempts = attempts + 1,
  updated_at = :now, handed_at = NULL
FROM numbered WHERE deliveries.id = ANY(ARRAY(SELECT id FROM picked)) AND deliveries.state = 'pending'
RETURNING deliveries.id, numbered.batches
""")


def _claim_pg(conn: Connection, send_id: int, worker: str, size: int, after: int) -> tuple[int, list[int]] | None:
    rows = conn.execute(_CLAIM_PG, {"send": send_id, "after": after, "size": size, "worker": worker,
                                    "now": now()}).all()
    if not rows:
        return None
    return rows[0][1], sorted(r[0] for r in rows)


def alive(conn: Connection) -> list[str]:
    """The workers whose lease is live by the database's clock, less those certainly dead: on this
    host, a worker whose pid no longer exists is dead now (ledger.pid_gone, as for a runner), so the
    next run need not wait out the lease of a worker that exited without releasing it (the
    database was away). A live pid proves nothing: the lease decides."""
    found = conn.execute(select(worker_leases.c.worker).where(
        worker_leases.c.lease_until > ledger.db_now(conn))).scalars()
    return [w for w in found if not ledger.pid_gone(w)]


def live_holders(conn: Connection, send_id: int) -> list[str]:
    """The live workers (`alive`) that hold `sending` readers of the send or work on it now."""
    living = alive(conn)
    holding = set(conn.execute(select(deliveries.c.worker).distinct().where(
        deliveries.c.send_id == send_id, deliveries.c.state == State.SENDING.value,
        deliveries.c.worker.in_(living))).scalars())
    working = set(conn.execute(select(worker_leases.c.worker).where(
        worker_leases.c.send_id == send_id, worker_leases.c.worker.in_(living))).scalars())
    return sorted(holding | working)


def claimed_unhanded(conn: Connection, send_id: int, worker: str, besides) -> tuple[int, list[int]] | None:
    """A batch `sending` under `worker`, never handed over and not among `besides` (the batches it
    knows it holds): claimed by a try whose COMMIT took effect although the worker saw it fail.
    (batch, ids ascending), or None."""
    rows = conn.execute(select(deliveries.c.batch, deliveries.c.id).where(
        deliveries.c.send_id == send_id, deliveries.c.state == State.SENDING.value, deliveries.c.worker == worker,
        deliveries.c.handed_at.is_(None), deliveries.c.batch.not_in(sorted(besides)))
        .order_by(deliveries.c.batch, deliveries.c.id)).all()
    if not rows:
        return None
    return rows[0][0], [i for b, i in rows if b == rows[0][0]]


def hand(conn: Connection, send_id: int, batch: int, worker: str, lease: float) -> int:
    """Just before a worker hands `batch` to the backend: in one transaction, renew its lease (only
    if still live, by the database's clock), check that the send still runs, and stamp the readers
    still `sending` under its name as handed over. Returns how many are; 0 means the batch is no
    longer this worker's (its lease expired and the batch was reclaimed, or the send was stopped)
    and must not be sent. The lease row is locked before the readers, as `reclaim` does: a
    reclaim either sees the renewed lease or makes this renewal fail, never half of each."""
    stamp = ledger.db_now(conn)
    if not renewer(worker, lease, lambda: send_id)(conn):
        return 0
    running = conn.execute(select(sends.c.status).where(sends.c.id == send_id)).scalar()
    if running != SendStatus.SENDING.value:
        return 0
    return conn.execute(update(deliveries).where(
        deliveries.c.send_id == send_id, deliveries.c.batch == batch, deliveries.c.worker == worker,
        deliveries.c.state == State.SENDING.value).values(handed_at=stamp)).rowcount


def orphaned(conn: Connection, send_id: int) -> list[tuple[int, int, str | None]]:
    """(batch, readers, worker) still `sending` under no live lease: in flight on a dead worker."""
    return [tuple(r) for r in conn.execute(
        select(deliveries.c.batch, func.count(), func.max(deliveries.c.worker))
        .where(deliveries.c.send_id == send_id, deliveries.c.state == State.SENDING.value,
               or_(deliveries.c.worker.is_(None), deliveries.c.worker.not_in(alive(conn))))
        .group_by(deliveries.c.batch).order_by(deliveries.c.batch)).all()]


def dead_batches(conn: Connection, send_id: int) -> list[tuple[int, int, str | None, bool]]:
    """(batch, readers, worker, handed over?) in flight on dead workers, their lease rows locked
    (PostgreSQL) and found dead again under the lock: a worker renewing its lease in `hand` at this
    moment either finishes first (and its batch is not dead) or finds its lease gone. The lease row
    before the readers: the lock order `hand` keeps too."""
    found = orphaned(conn, send_id)
    workers = sorted({w for _, _, w in found if w is not None})
    if workers and conn.dialect.name == "postgresql":
        rows = conn.execute(select(worker_leases.c.worker, worker_leases.c.lease_until)
                            .where(worker_leases.c.worker.in_(workers)).order_by(worker_leases.c.worker)
                            .with_for_update()).all()
        stamp = ledger.db_now(conn)
        revived = {w for w, until in rows if until > stamp and not ledger.pid_gone(w)}
        found = [f for f in found if f[2] not in revived]
    flying = {b: handed for b, _, handed in ledger.in_flight_batches(conn, send_id, [b for b, _, _ in found])}
    return [(b, n, w, flying.get(b, False)) for b, n, w in found]


def reclaim(conn: Connection, send_id: int, batches: list[int], resend: bool) -> int:
    """Settle these orphaned batches: readers never handed over go back to pending; the rest get
    on_interrupted (resend: pending again; skip: skipped)."""
    if not batches:
        return 0
    return ledger.settle_in_flight(conn, send_id, resend, batches, why="in flight on a worker that died")


def others_in_flight(conn: Connection, send_id: int, worker: str) -> int:
    """Readers `sending` under another worker (live or not yet expired)."""
    return conn.execute(select(func.count()).where(
        deliveries.c.send_id == send_id, deliveries.c.state == State.SENDING.value,
        or_(deliveries.c.worker.is_(None), deliveries.c.worker != worker))).scalar_one()


def holders(conn: Connection, send_id: int) -> list[tuple[str, int]]:
    """(worker, readers in flight) for --status."""
    return [tuple(r) for r in conn.execute(
        select(deliveries.c.worker, func.count()).where(deliveries.c.send_id == send_id,
                                                        deliveries.c.state == State.SENDING.value)
        .group_by(deliveries.c.worker).order_by(deliveries.c.worker)).all()]

