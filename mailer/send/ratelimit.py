"""The provider's rate limit, shared by every worker: one budget row per provider in the database.

A token bucket: `tokens` refill at `rate` per second up to `burst`; each request takes one, with one
conditional UPDATE (refill, take, stamp) that either succeeds or leaves the row alone, so any number
of workers on any machines draw from the same budget without a lock held across a request. A 429
sets `wait_until` (SendGrid's X-RateLimit-Reset) for everyone: no worker takes a token before then.
Times are epoch seconds by the database server's clock (`ledger.db_now`), so a worker whose own
clock is fast or slow neither takes tokens early nor stalls the others. docs/workers.md.
"""

from __future__ import annotations

import time

from sqlalchemy import Column, Float, String, Table, case, insert, select, update
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
)

_c = rate_budget.c


class SharedBudget:
    """`take()` blocks until a request may start; `hold_until(epoch)` after a 429."""

    def __init__(self, engine, name: str, rate: float, *, clock=None, sleep=time.sleep, stall: Stall | None = None):
        self.engine, self.name, self.rate = engine, name, rate
        self.stall = stall or Stall(0)        # the database briefly away: retried (stall.py); by default, one try
        self.burst = max(1.0, rate)           # at most a second's worth at once
        self.clock, self.sleep = clock, sleep   # clock: a test's; None: the database's
        self.waited = 0.0                     # seconds this process waited on the budget

    def take(self) -> None:
        """A database that stays away raises TemporaryDelivery: the request was not made, so its
        batch provably did not go (back to pending)."""
        while True:
            try:
                wait = self.stall(lambda attempt: self._try(), "taking from the shared rate budget")
            except DatabaseUnavailable as exc:
                raise TemporaryDelivery(f"{exc}; the request was not made", backend=self.name) from exc
            if wait <= 0:
                return
            self.waited += wait
            self.sleep(wait)

    def _try(self) -> float:
        """0 when a token was taken, else how long to wait before trying again."""
        with self.engine.begin() as conn:
            now = self.clock() if self.clock else ledger.db_now(conn).timestamp()
            refilled = _c.tokens + self.rate * (now - _c.stamp)
            level = case((refilled > self.burst, self.burst), else_=refilled)
            if conn.dialect.name == "postgresql":  # a token lost to a crash costs nothing (docs/postgresql.md)
                conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
            took = conn.execute(update(rate_budget)   # 1e-5: epoch seconds as floats are exact to ~1e-7
                                .where(_c.name == self.name, _c.wait_until <= now, level >= 1 - 1e-5)
                                .values(tokens=level - 1, stamp=now)).rowcount
            if took:
                return 0.0
            row = conn.execute(select(_c.tokens, _c.stamp, _c.wait_until).where(_c.name == self.name)).first()
            if row is None:
                try:
                    with conn.begin_nested():
                        conn.execute(insert(rate_budget).values(name=self.name, tokens=self.burst - 1, stamp=now,
                                                                wait_until=0.0))
                    return 0.0
                except IntegrityError:  # another worker made it first
                    return 0.001
        if row.wait_until > now:
            return row.wait_until - now
        have = min(self.burst, row.tokens + self.rate * (now - row.stamp))
        return max(0.001, (1 - have) / self.rate)

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
