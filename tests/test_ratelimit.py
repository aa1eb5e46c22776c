"""The SendGrid rate limit shared by all workers: one budget row in the database (mailer/send/ratelimit.py).

Two budgets (two workers) on one database, on a clock the test moves: what one takes the other
cannot; a 429 seen by one makes the other wait until SendGrid's reset, over real HTTP. The same rows
pace each mailbox provider across workers ([delivery.pacing], pacing.SharedPacer): two pacers share
a provider's rate, and one's slow-down holds and halves it for both, once."""

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


# --- [delivery.pacing] across workers: one row per send and provider (pacing.SharedPacer) ---------

class Out:
    def __init__(self, i: int, domain: str):
        self.ref, self.email = f"r{i}", f"x{i}@{domain}"


def accepted(outs, encoded):
    from mailer.send.deliver.base import Result, ResultStatus

    return [Result(o.ref, ResultStatus.ACCEPTED) for o in outs]


def pacers(engine, clock, **limits):
    from mailer.send.pacing import Provider, SharedPacer

    rates = {Provider(name): float(rate) for name, rate in limits.items()}
    return [SharedPacer(engine, 7, rates, {}, 30.0, clock=clock, sleep=clock.sleep) for _ in range(2)]


def test_two_workers_pace_one_provider_together(engine):
    """gmail = 10 between two workers: batches of 5 Gmail readers, taken in turns. The first
    second's worth goes at once; then a batch goes when a token is there and leaves the bucket 4 in
    debt, so each next batch, on either worker, waits 0.5 s (10 a second between them, not 20);
    the other provider never waits."""
    clock = Clock(frozen=True)
    a, b = pacers(engine, clock, gmail=10)
    starts = []
    for k, pacer in enumerate((a, b) * 3):
        pacer.deliver(accepted, lambda outs: None, [Out(k * 10 + i, "gmail.com") for i in range(5)], None)
        starts.append(clock.offset)
    assert starts == pytest.approx([0.0, 0.0, 0.1, 0.6, 1.1, 1.6], abs=1e-5)
    before = clock.offset
    b.deliver(accepted, lambda outs: None, [Out(100 + i, "other.example") for i in range(500)], None)
    assert clock.offset == before


def test_a_slow_down_to_one_worker_holds_and_halves_for_both_once(engine):
    from sqlalchemy import select

    from mailer.send.pacing import Provider
    from mailer.send.ratelimit import rate_budget

    clock = Clock(frozen=True)
    a, b = pacers(engine, clock, gmail=10)
    a.slow_down(Provider.GMAIL)
    b.slow_down(Provider.GMAIL)              # the same moment, another worker: held already, not halved again
    with engine.connect() as conn:
        rates = dict(conn.execute(select(rate_budget.c.name, rate_budget.c.rate)).all())
    assert rates == {"pace:7:gmail": 5.0}
    results = b.deliver(accepted, lambda outs: None, [Out(1, "gmail.com"), Out(2, "yahoo.com")], None)
    assert [r.status.value for r in results] == ["retry_later", "accepted"]   # Gmail's reader waits, Yahoo's goes
    assert clock.slept == []
    clock.offset += 30                       # the hold is over: Gmail at its halved rate, 5 a second
    b.deliver(accepted, lambda outs: None, [Out(3 + i, "gmail.com") for i in range(5)], None)
    a.deliver(accepted, lambda outs: None, [Out(9, "gmail.com")], None)
    assert clock.slept == pytest.approx([0.2, 1.0], abs=1e-5)   # a token at 5 a second; then b's debt of 4
