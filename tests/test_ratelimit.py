"""The SendGrid rate limit shared by all workers: one budget row in the database (mailer/send/ratelimit.py).

Two budgets (two workers) on one database, on a clock the test moves: what one takes the other
cannot; a 429 seen by one makes the other wait until SendGrid's reset, over real HTTP."""

from __future__ import annotations

import time

import pytest

from mailer.migrate import connect
from mailer.send.ratelimit import SharedBudget
from tests.deliver.helpers import readers


class Clock:
    """Wall time (or, frozen, a fixed start) plus what the budgets "slept": nothing waits for real."""

    def __init__(self, frozen: bool = False):
        self.offset, self.slept, self.frozen = 0.0, [], frozen

    def __call__(self) -> float:
        return (1_800_000_000.0 if self.frozen else time.time()) + self.offset

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.offset += seconds


@pytest.fixture
def engine(db_url):
    e = connect(db_url)
    yield e
    e.dispose()


def test_two_workers_draw_on_one_budget(engine):
    clock = Clock(frozen=True)
    a, b = (SharedBudget(engine, "sendgrid", 10.0, clock=clock, sleep=clock.sleep) for _ in range(2))
    for budget in (a, b) * 5:              # ten requests between them: the burst of one second
        budget.take()
    assert clock.slept == []
    b.take()                               # the eleventh waits for a token, whoever asks
    assert sum(clock.slept) == pytest.approx(0.1)
    assert a.waited == 0 and b.waited == pytest.approx(sum(clock.slept))


def test_a_hold_set_by_one_worker_makes_the_other_wait(engine):
    clock = Clock(frozen=True)
    a, b = (SharedBudget(engine, "sendgrid", 50.0, clock=clock, sleep=clock.sleep) for _ in range(2))
    a.take()
    a.hold_until(clock() + 5)
    a.hold_until(clock() + 1)              # never moved earlier
    b.take()
    assert sum(clock.slept) == pytest.approx(5)


def test_a_429_to_one_worker_holds_every_worker_until_the_reset(engine, sendgrid_server, edition, settings):
    from dataclasses import replace

    from mailer.send.deliver.sendgrid import SendGridBackend

    clock = Clock()
    sg = replace(settings.delivery.sendgrid, host=sendgrid_server.url, timeout=5.0, max_retries=2)
    one, two = (SendGridBackend(sg, api_key="SG.test", clock=clock, sleep=clock.sleep, rng=lambda: 0.0,
                                budget=SharedBudget(engine, "sendgrid", 100.0, clock=clock, sleep=clock.sleep))
                for _ in range(2))
    sendgrid_server.fail(429, reset_in=3)
    with one, two:
        assert all(r.ok for r in one.send_batch(readers(edition, 2)))    # 429, waited for the reset, sent
        waited_by_one = one.budget.waited
        assert 1.9 <= waited_by_one <= 3 and one.calls == 2   # (the reset: whole seconds, server clock)
        assert all(r.ok for r in two.send_batch(readers(edition, 2, start=2)))
    assert two.budget.waited == 0          # the reset had passed on the shared clock: nothing more to wait
    assert sendgrid_server.stats.requests == 3 and sendgrid_server.stats.accepted == 2


def test_the_other_worker_waits_out_the_hold_too(engine, sendgrid_server, edition, settings):
    from dataclasses import replace

    from mailer.send.deliver.sendgrid import SendGridBackend

    clock_one, clock_two = Clock(), Clock()   # two machines: each waits on its own clock
    sg = replace(settings.delivery.sendgrid, host=sendgrid_server.url, timeout=5.0, max_retries=2)
    one = SendGridBackend(sg, api_key="SG.test", clock=clock_one, sleep=clock_one.sleep, rng=lambda: 0.0,
                          budget=SharedBudget(engine, "sendgrid", 100.0, clock=clock_one, sleep=clock_one.sleep))
    two = SendGridBackend(sg, api_key="SG.test", clock=clock_two, sleep=clock_two.sleep, rng=lambda: 0.0,
                          budget=SharedBudget(engine, "sendgrid", 100.0, clock=clock_two, sleep=clock_two.sleep))
    sendgrid_server.fail(429, reset_in=3)
    with one, two:
        assert all(r.ok for r in one.send_batch(readers(edition, 2)))
        assert all(r.ok for r in two.send_batch(readers(edition, 2, start=2)))
    # X-RateLimit-Reset is whole epoch seconds: the hold ends up to a second before now + reset_in
    assert 1 < two.budget.waited <= 3 and two.calls == 1      # never sent into the limit itself
