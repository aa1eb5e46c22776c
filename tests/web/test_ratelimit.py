"""The per-IP token bucket, as a table of (requests at times) -> allowed or not."""

from __future__ import annotations

import pytest

from mailer.web.ratelimit import Rate, RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


CASES = [
    # (burst, per_hour, [(time, key)], expected allowed flags)
    (2, 3600, [(0, "a"), (0, "a"), (0, "a")], [True, True, False]),
    (2, 3600, [(0, "a"), (0, "a"), (1, "a")], [True, True, True]),          # 1 token per second back
    (2, 3600, [(0, "a"), (0, "a"), (0, "b")], [True, True, True]),          # buckets are per key
    (1, 60, [(0, "a"), (30, "a"), (60, "a")], [True, False, True]),         # 1 per minute
    (3, 3600, [(0, "a")] * 3 + [(100, "a")] * 4, [True] * 3 + [True] * 3 + [False]),  # refill caps at burst
]


@pytest.mark.parametrize("burst, per_hour, calls, expected", CASES)
def test_token_bucket(burst, per_hour, calls, expected):
    clock = Clock()
    limiter = RateLimiter({"x": Rate(burst, per_hour)}, clock=clock)
    seen = []
    for at, key in calls:
        clock.now = at
        seen.append(limiter.allow("x", key))
    assert seen == expected


def test_memory_stays_bounded():
    clock = Clock()
    limiter = RateLimiter({"x": Rate(1, 3600)}, max_keys=100, clock=clock)
    for i in range(1000):
        limiter.allow("x", f"10.0.{i // 256}.{i % 256}")
        clock.now += 1.0           # each earlier bucket has refilled by now: prunable
    assert len(limiter._buckets) <= 101
