"""The provider's rate limit, shared by every worker: one budget row per provider in the database.

A token bucket: `tokens` refill at `rate` per second up to `burst`; each request takes one, with one
conditional UPDATE (refill, take, stamp) that either succeeds or leaves the row alone, so any number
of workers on any machines draw from the same budget without a lock held across a request. A 429
sets `wait_until` (SendGrid's X-RateLimit-Reset) for everyone: no worker takes a token before then.
Times are epoch seconds by the database server's clock (`ledger.db_now`), so a worker whose own
clock is fast or slow neither takes tokens early nor stalls the others. docs/workers.md.

[delivery.pacing] across workers uses the same rows, one per send and mailbox provider
(pacing.SharedPacer): `take(n)` takes a batch's n messages for that provider at once, leaving the
bucket in debt (the next taker waits n / rate: the single-process pacer's GCRA), and `slow_down`
holds the provider for everyone and halves the row's own `rate`, which then overrides the
configured one for every worker.
"""

from __future__ import annotations

import time
from typing import NamedTuple

from sqlalchemy import Column, Float, String, Table, case, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from mailer.errors import DatabaseUnavailable, TemporaryDelivery
from mailer.send import ledger
from mailer.send.ledger import metadata
from mailer.send.stall import Stall

rate_budget = Table(
    "rate_budget", metadata,
    Column("name", String(32), primary_key=True),     # the provider: "sendgrid"
    Column("tokens", Float, nullable=False),          # requests that may start now
    Column("stamp", Float, nullable=False),           # epoch seconds of the last refill
    Column("wait_until", Float, nullable=False),      # epoch seconds: nobody sends before (a 429's reset)
    Column("rate", Float),                            # per second, once slowed down; NULL: the configured rate
)

_c = rate_budget.c


class State(NamedTuple):
    """A budget row as a pacer reads it before a batch."""
    rate: float          # the rate in force: the row's own once slowed down, else the configured one
    wait_until: float    # epoch seconds (database clock)
    now: float           # the database's clock when read


class SharedBudget:
    """`take()` blocks until a request may start; `hold_until(epoch)` after a 429."""

    def __init__(self, engine, name: str, rate: float, *, clock=None, sleep=time.sleep, stall: Stall | None = None):
        self.engine, self.name, self.rate = engine, name, rate
        self.stall = stall or Stall(0)        # the database briefly away: retried (stall.py); by default, one try
        self.burst = max(1.0, rate)           # at most a second's worth at once
        self.clock, self.sleep = clock, sleep   # clock: a test's; None: the database's
        self.waited = 0.0                     # seconds this process waited on the budget

    def _now(self, conn) -> float:
        return self.clock() if self.clock else ledger.db_now(conn).timestamp()

    def take(self, n: float = 1.0) -> None:
        """Take n tokens (a request: 1; a paced batch: its messages for this provider), waiting for
        at least one to be there; the rest is debt that the next taker waits out. A database that
        stays away raises TemporaryDelivery: the request was not made, so its batch provably did not
        go (back to pending)."""
        while True:
            try:
                wait = self.stall(lambda attempt: self._try(n), "taking from the shared rate budget")
            except DatabaseUnavailable as exc:
                raise TemporaryDelivery(f"{exc}; the request was not made", backend=self.name) from exc
            if wait <= 0:
                return
            self.waited += wait
            self.sleep(wait)

    def _try(self, n: float = 1.0) -> float:
        """0 when the tokens were taken, else how long to wait before trying again."""
        with self.engine.begin() as conn:
            now = self._now(conn)
            rate = func.coalesce(_c.rate, self.rate)
            refilled = _c.tokens + rate * (now - _c.stamp)
            burst = case((rate > 1.0, rate), else_=1.0)    # at most a second's worth at once
            level = case((refilled > burst, burst), else_=refilled)
            if conn.dialect.name == "postgresql":  # a token lost to a crash costs nothing (docs/postgresql.md)
                conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
            took = conn.execute(update(rate_budget)   # 1e-5: epoch seconds as floats are exact to ~1e-7
                                .where(_c.name == self.name, _c.wait_until <= now, level >= 1 - 1e-5)
                                .values(tokens=level - n, stamp=now)).rowcount
            if took:
                return 0.0
            row = conn.execute(select(_c.tokens, _c.stamp, _c.wait_until, _c.rate).where(_c.name == self.name)).first()
            if row is None:
                try:
                    with conn.begin_nested():
                        conn.execute(insert(rate_budget).values(name=self.name, tokens=self.burst - n, stamp=now,
                                                                wait_until=0.0))
                    return 0.0
                except IntegrityError:  # another worker made it first
                    return 0.001
        if row.wait_until > now:
            return row.wait_until - now
        speed = row.rate or self.rate
        have = min(max(1.0, speed), row.tokens + speed * (now - row.stamp))
        return max(0.001, (1 - have) / speed)

    def hold_until(self, epoch: float) -> None:
        """A 429: every worker waits until `epoch` (never moved earlier). A database that stays away
        loses only the shared wait: the next take() raises, or SendGrid answers 429 again."""
        def hold(attempt: int) -> None:
            with self.engine.begin() as conn:
                conn.execute(update(rate_budget).where(_c.name == self.name, _c.wait_until < epoch)
                             .values(wait_until=epoch))
        try:
            self.stall(hold, "holding the shared rate budget after a 429")
        except DatabaseUnavailable:
            pass

    def state(self) -> State:
        """The rate in force and the hold, by the database's clock (a row not yet made: configured, no hold)."""
        return states(self.engine, [self])[0]

    def slow_down(self, hold_seconds: float) -> bool:
        """A "rate limited" answer: nobody takes from this budget for `hold_seconds`, and its rate is
        halved (1 a second when it had none), once per hold: answers that arrive while it is held
        (other workers', or the rest of the same batch) do not halve it again. True if it did. A
        database that stays away loses only this slowing down (the provider answers so again)."""
        try:
            return self.stall(lambda attempt: self._slow_down(hold_seconds), "slowing a provider down")
        except DatabaseUnavailable:
            return False

    def _slow_down(self, hold_seconds: float) -> bool:
        with self.engine.begin() as conn:
            now = self._now(conn)
            rate = func.coalesce(_c.rate, self.rate)
            slowed = case((rate > 0, rate / 2), else_=1.0)
            changed = conn.execute(update(rate_budget).where(_c.name == self.name, _c.wait_until <= now).values(
                rate=slowed, wait_until=now + hold_seconds, tokens=0.0, stamp=now + hold_seconds)).rowcount
            if changed:
                return True
            if conn.execute(select(_c.name).where(_c.name == self.name)).first() is not None:
                return False   # held already
            try:
                with conn.begin_nested():
                    conn.execute(insert(rate_budget).values(
                        name=self.name, tokens=0.0, stamp=now + hold_seconds, wait_until=now + hold_seconds,
                        rate=self.rate / 2 if self.rate > 0 else 1.0))
                return True
            except IntegrityError:  # another worker slowed it down first
                return False


def states(engine, budgets: list[SharedBudget]) -> list[State]:
    """Each budget's State, read in one query (a paced batch asks about every provider in it)."""
    if not budgets:
        return []
    with engine.connect() as conn:
        now = budgets[0]._now(conn)
        rows = {r.name: r for r in conn.execute(select(_c.name, _c.rate, _c.wait_until)
                                                .where(_c.name.in_([b.name for b in budgets])))}
    return [State(row.rate or b.rate, row.wait_until, now) if (row := rows.get(b.name)) is not None
            else State(b.rate, 0.0, now) for b in budgets]
