"""Warm-up: a new sending domain's send capped each UTC day on a ramp, the most engaged readers first.

`mailer send ... --warmup` (or `[delivery.pacing] warmup = true`) records the send in
`send_warmups` with its first day and first day's cap (`warmup_first_day`). Day n of the send may
hand at most `cap(first, n)` readers to the provider: 1x, 2x, 5x, 10x the first day's, then doubling
(1,000, 2,000, 5,000, 10,000, 20,000, ...). A run stops (status `stopped`, the rest pending) before
a batch that would go over the day's cap; the next day's run, by hand or by the scheduler (which
does not resume a capped send before the next UTC day), continues with the next day's cap.

The readers are fixed in an order that puts the engaged first (pacing.order_readers, with
`engagement` as the tier): a person's click in the last ENGAGED_DAYS (with `[tracking] clicks =
"reader"`), then a confirmation (double opt-in) in that time, then everyone else; within each tier
the providers are interleaved. docs/deliverability.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import (
    Column,
    Date,
    ForeignKey,
    Integer,
    Table,
    and_,
    case,
    exists,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine

from mailer.send.ledger import State, deliveries, metadata, sends
from mailer.send.tracking import Kind, tracking_hits
from subscribers.models import memberships, utcnow

ENGAGED_DAYS = 90
STEPS = (1, 2, 5, 10)              # the first days' caps, as multiples of the first; then doubling

send_warmups = Table(
    "send_warmups", metadata,
    Column("send_id", Integer, ForeignKey(sends.c.id, ondelete="CASCADE"), primary_key=True),
    Column("first_day", Date, nullable=False),        # the UTC day the warm-up began
    Column("first_cap", Integer, nullable=False),     # [delivery.pacing] warmup_first_day then
    Column("capped_on", Date),                        # the last UTC day a run stopped at the day's cap
    # workers' claims (leases.claim_next): readers claimed on `claimed_on`, counted from the ledger once
    # that day, then kept up by each claim, so a claim does not count the send's deliveries
    Column("claimed_on", Date),
    Column("claimed", Integer),
)


def cap(first: int, day: int) -> int:
    """Day `day` (0 = the first)'s cap: 1x, 2x, 5x, 10x, then doubling."""
    if day < len(STEPS):
        return first * STEPS[day]
    return first * STEPS[-1] * 2 ** (day - len(STEPS) + 1)


def engagement(subscriber_id):
    """SQL: 2 for a person's recent click, 1 for a recent confirmation, else 0 (the warm-up's tiers)."""
    since = utcnow() - timedelta(days=ENGAGED_DAYS)
    clicked = exists().where(tracking_hits.c.subscriber_id == subscriber_id, tracking_hits.c.kind == Kind.CLICK.value,
                             tracking_hits.c.at >= since)
    confirmed = exists().where(memberships.c.subscriber_id == subscriber_id, memberships.c.optin_at >= since)
    return case((clicked, literal(2)), (confirmed, literal(1)), else_=literal(0))


def begin(conn: Connection, send_id: int, first_cap: int, today: date | None = None) -> None:
    """Make the send a warm-up (once: a send already warming up keeps its first day)."""
    if conn.execute(select(send_warmups.c.send_id).where(send_warmups.c.send_id == send_id)).first() is None:
        conn.execute(insert(send_warmups).values(send_id=send_id, first_day=today or utcnow().date(),
                                                 first_cap=first_cap))


@dataclass
class Day:
    """A warm-up send's day: its number, its cap and what was handed out already today."""
    number: int
    cap: int
    used: int

    @property
    def left(self) -> int:
        return max(0, self.cap - self.used)


def today(conn: Connection, send_id: int, now: datetime | None = None) -> Day | None:
    """None when the send is no warm-up."""
    row = conn.execute(select(send_warmups).where(send_warmups.c.send_id == send_id)).first()
    if row is None:
        return None
    now = now or utcnow()
    midnight = datetime.combine(now.date(), time(0), UTC)
    used = conn.execute(select(func.count()).where(
        deliveries.c.send_id == send_id, deliveries.c.updated_at >= midnight,
        deliveries.c.state.in_([State.SENDING.value, State.ACCEPTED.value, State.FAILED.value,
                                State.DEFERRED.value]))).scalar_one()
    number = (now.date() - row.first_day).days
    return Day(number, cap(row.first_cap, number), used)


def claimable(conn: Connection, send_id: int, now: datetime) -> int | None:
    """How many readers a worker may still claim today (None: the send is no warm-up). Called under
    the send's row lock (leases.claim_next), so claims of one send take turns and the day's total
    never passes the cap, however many workers claim. The first claim of a day counts what the
    ledger handed out today (a single run's readers too); each claim then adds its own
    (`count_claim`). A batch given back unsent still counts: a day may end a little under its cap,
    never over."""
    left, counted = _left(conn, send_id, now)
    if counted is not None:   # the day's first claim: what the ledger says went today, kept from now on
        conn.execute(update(send_warmups).where(send_warmups.c.send_id == send_id)
                     .values(claimed_on=now.date(), claimed=counted))
    return left


def left_today(conn: Connection, send_id: int, now: datetime) -> int | None:
    """What `claimable` would say, written nowhere (a worker deciding whether to wait for tomorrow)."""
    return _left(conn, send_id, now)[0]


def _left(conn: Connection, send_id: int, now: datetime) -> tuple[int | None, int | None]:
    """(readers left today, or None for no warm-up; today's count from the ledger when it was not kept yet)."""
    row = conn.execute(select(send_warmups).where(send_warmups.c.send_id == send_id)).first()
    if row is None:
        return None, None
    if row.claimed_on == now.date() and row.claimed is not None:
        return max(0, cap(row.first_cap, (now.date() - row.first_day).days) - row.claimed), None
    day = today(conn, send_id, now)
    assert day is not None   # its send_warmups row was just read
    return day.left, day.used


def count_claim(conn: Connection, send_id: int, readers: int) -> None:
    conn.execute(update(send_warmups).where(send_warmups.c.send_id == send_id)
                 .values(claimed=send_warmups.c.claimed + readers))


def forget_claims(conn: Connection, send_id: int) -> None:
    """A single run of the send counts today's readers itself: the workers' next claim counts again."""
    conn.execute(update(send_warmups).where(send_warmups.c.send_id == send_id).values(claimed_on=None, claimed=None))


def capped_today(engine: Engine, send_id: int, now: datetime | None = None) -> bool:
    """True for a warm-up send a run stopped at today's cap (the scheduler waits for tomorrow)."""
    with engine.connect() as conn:
        day = conn.execute(select(send_warmups.c.capped_on).where(send_warmups.c.send_id == send_id)).scalar()
    return day is not None and day >= (now or utcnow()).date()


def mark_capped(engine: Engine, send_id: int, now: datetime | None = None) -> None:
    with engine.begin() as conn:
        conn.execute(update(send_warmups).where(send_warmups.c.send_id == send_id)
                     .values(capped_on=(now or utcnow()).date()))


def stopped_at_cap(engine: Engine, send_id: int, day: Day, left: int, notice) -> None:
    """A run (a single one, or the workers of `send --workers N`) that stopped at today's cap: the
    send marked so (the scheduler continues it tomorrow), and the operator told."""
    mark_capped(engine, send_id)
    notice(f"warm-up day {day.number + 1}: today's cap of {day.cap:,} is reached; the other {left:,} readers go "
           "on the next days (the scheduler continues the send, or run the same command tomorrow)")


class Limit:
    """The batch loop's `stop`: True before a batch that would take today's handed-out readers over
    the cap (a batch is at most `max_batch`). It counts the readers handed to the backend by standing
    in the batch loop's `pacer` place (`deliver`), in front of the pacer when there is one."""

    def __init__(self, day: Day, max_batch: int, pacer=None):
        self.day, self.max_batch, self.pacer = day, max_batch, pacer
        self.handed = 0

    def deliver(self, send_batch, encode, outs: list, encoded):
        self.handed += len(outs)
        if self.pacer is not None:
            return self.pacer.deliver(send_batch, encode, outs, encoded)
        return send_batch(outs, encoded)

    def __call__(self) -> bool:
        return self.day.used + self.handed + self.max_batch > self.day.cap

    @property
    def reached(self) -> bool:
        return self()


def for_run(engine: Engine, send_id: int, settings, backend, pacer=None) -> Limit | None:
    """The day's limit for this run of the send (recording it as a warm-up when the settings ask).
    The backend's batches shrink to what is left today, so a cap under one batch still sends."""
    pacing = settings.delivery.pacing
    with engine.begin() as conn:
        if pacing.warmup:
            begin(conn, send_id, pacing.warmup_first_day)
        forget_claims(conn, send_id)
        day = today(conn, send_id)
    if day is None:
        return None
    backend.max_batch = max(1, min(backend.max_batch, day.left))
    return Limit(day, backend.max_batch, pacer)


def status_lines(engine: Engine, issue: str, list_name: str | None) -> list[str]:
    """`mailer send ISSUE --status`: each warm-up send's day, cap and what is left today."""
    query = select(sends.c.id, sends.c.list_name).join(send_warmups).where(sends.c.issue == issue)
    if list_name:
        query = query.where(sends.c.list_name == list_name)
    lines = []
    with engine.connect() as conn:
        for send_id, name in conn.execute(query.order_by(sends.c.id)).all():
            day = today(conn, send_id)
            assert day is not None   # joined to its send_warmups row
            pending = conn.execute(select(func.count()).where(
                and_(deliveries.c.send_id == send_id, deliveries.c.state == State.PENDING.value))).scalar_one()
            lines.append(f"send #{send_id} to {name}: warm-up day {day.number + 1}, cap {day.cap:,} today, "
                         f"{day.used:,} sent today, {day.left:,} left today; {pending:,} readers still to send")
    return lines
