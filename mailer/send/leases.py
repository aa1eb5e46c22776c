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

from mailer.send import ledger
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
    stamp = now()
    conn.execute(delete(worker_leases).where(or_(worker_leases.c.worker == worker,    # and long-dead workers'
                                                 worker_leases.c.lease_until < stamp - timedelta(days=1))))
    conn.execute(insert(worker_leases).values(worker=worker, started_at=stamp,
                                              lease_until=stamp + timedelta(seconds=lease)))


def renewer(worker: str, lease: float, send_id=lambda: None):
    """The heartbeat's beat for a worker: False once its lease expired (its batches may be reclaimed)."""
    def renew(conn: Connection) -> bool:
        stamp = now()
        return conn.execute(update(worker_leases).where(worker_leases.c.worker == worker,
                                                        worker_leases.c.lease_until > stamp)
                            .values(lease_until=stamp + timedelta(seconds=lease), send_id=send_id())).rowcount == 1
    return renew


def release(conn: Connection, worker: str) -> None:
    conn.execute(delete(worker_leases).where(worker_leases.c.worker == worker))


def live_workers(conn: Connection, besides: str | None = None) -> Sequence[Row]:
    """(worker, send_id, lease_until) of every live lease."""
    q = select(worker_leases.c.worker, worker_leases.c.send_id, worker_leases.c.lease_until).where(
        worker_leases.c.lease_until > now())
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
    is pending."""
    take = _claim_pg if conn.dialect.name == "postgresql" else _claim
    return take(conn, send_id, worker, size, after) or (take(conn, send_id, worker, size, 0) if after else None)


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
                         updated_at=now()))
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
  updated_at = :now
FROM numbered WHERE deliveries.id = ANY(ARRAY(SELECT id FROM picked)) AND deliveries.state = 'pending'
RETURNING deliveries.id, numbered.batches
""")


def _claim_pg(conn: Connection, send_id: int, worker: str, size: int, after: int) -> tuple[int, list[int]] | None:
    rows = conn.execute(_CLAIM_PG, {"send": send_id, "after": after, "size": size, "worker": worker,
                                    "now": now()}).all()
    if not rows:
        return None
    return rows[0][1], sorted(r[0] for r in rows)


def orphaned(conn: Connection, send_id: int) -> list[tuple[int, int, str | None]]:
    """(batch, readers, worker) still `sending` under no live lease: in flight on a dead worker."""
    alive = select(worker_leases.c.worker).where(worker_leases.c.lease_until > now())
    return [tuple(r) for r in conn.execute(
        select(deliveries.c.batch, func.count(), func.max(deliveries.c.worker))
        .where(deliveries.c.send_id == send_id, deliveries.c.state == State.SENDING.value,
               or_(deliveries.c.worker.is_(None), deliveries.c.worker.not_in(alive)))
        .group_by(deliveries.c.batch).order_by(deliveries.c.batch)).all()]


def reclaim(conn: Connection, send_id: int, batches: list[int], resend: bool) -> int:
    """Apply on_interrupted to these orphaned batches (resend: pending again; skip: skipped)."""
    if not batches:
        return 0
    values = ({"state": State.PENDING.value, "worker": None} if resend else
              {"state": State.SKIPPED.value, "last_error": "in flight on a worker that died; skipped "
                                                          "(on_interrupted = skip)"})
    return conn.execute(update(deliveries).where(
        deliveries.c.send_id == send_id, deliveries.c.batch.in_(batches), deliveries.c.state == State.SENDING.value)
        .values(updated_at=now(), **values)).rowcount


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

