"""Web service: (bucket, client IP) -> allowed or not; an in-process token bucket.

In-process means per `mailer serve` process: run one process (the default), or the limits apply per
worker. Behind a reverse proxy on the same machine uvicorn takes the client address from
X-Forwarded-For (it trusts 127.0.0.1 by default; FORWARDED_ALLOW_IPS widens that).
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Rate:
    burst: int                 # requests allowed at once
    per_hour: float            # sustained rate the bucket refills at

    @property
    def per_second(self) -> float:
        return self.per_hour / 3600.0


def client_key(ip: str | None) -> str:
    """The limits' key for a client address: an IPv6 address counts by its /64 (a host there may
    take any of 2^64 addresses, so one per address would be no limit), IPv4 as it is."""
    try:
        found = ipaddress.ip_address(ip or "")
    except ValueError:
        return ip or "unknown"
    if isinstance(found, ipaddress.IPv6Address):
        if found.ipv4_mapped is not None:
            return str(found.ipv4_mapped)
        return str(ipaddress.IPv6Network((found, 64), strict=False))
    return str(found)


class RateLimiter:
    """Token buckets keyed by (name, key). Thread-safe: sync routes run in a thread pool.

    Memory stays bounded: when more than `max_keys` buckets exist, the full (idle) ones are dropped,
    since a full bucket is exactly what a new one would be; if that frees too little (a flood from
    many addresses), only the most recently used half is kept, so pruning stays rare.
    """

    def __init__(self, rates: dict[str, Rate], *, max_keys: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rates, self.max_keys, self.clock = rates, max_keys, clock
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}  # -> (tokens, last time)
        self._lock = threading.Lock()

    def allow(self, name: str, key: str) -> bool:
        """Take one token from the bucket; False when it is empty."""
        rate = self.rates[name]
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.get((name, key), (float(rate.burst), now))
            tokens = min(float(rate.burst), tokens + (now - last) * rate.per_second)
            allowed = tokens >= 1.0
            self._buckets[(name, key)] = (tokens - 1.0 if allowed else tokens, now)
            if len(self._buckets) > self.max_keys:
                self._prune(now)
        return allowed

    def refund(self, name: str, key: str) -> None:
        """Give back the token `allow` took (a login that succeeded does not count)."""
        rate = self.rates[name]
        with self._lock:
            found = self._buckets.get((name, key))
            if found is not None:
                self._buckets[(name, key)] = (min(float(rate.burst), found[0] + 1.0), found[1])

    def wait(self, name: str, key: str) -> int:
        """Whole seconds until the bucket holds a token again (0: it holds one now): Retry-After."""
        rate = self.rates[name]
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.get((name, key), (float(rate.burst), now))
        tokens = min(float(rate.burst), tokens + (now - last) * rate.per_second)
        return 0 if tokens >= 1.0 else int((1.0 - tokens) / rate.per_second) + 1

    def _prune(self, now: float) -> None:
        def full(item) -> bool:
            (name, _), (tokens, last) = item
            rate = self.rates[name]
            return tokens + (now - last) * rate.per_second >= rate.burst

        kept = [item for item in self._buckets.items() if not full(item)]
        if len(kept) > self.max_keys // 2:
            kept = sorted(kept, key=lambda item: item[1][1])[-(self.max_keys // 2):]
        self._buckets = dict(kept)


class Gate:
    """At most `limit` holders at once; one more is refused at once, never queued (a flood of
    slow work, such as password checks, then costs a refusal each, not a thread and its memory).
    `peak` is the most ever inside together."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.inside = 0
        self.peak = 0
        self._lock = threading.Lock()

    def enter(self) -> bool:
        with self._lock:
            if self.inside >= self.limit:
                return False
            self.inside += 1
            self.peak = max(self.peak, self.inside)
            return True

    def leave(self) -> None:
        with self._lock:
            self.inside -= 1

    def full(self) -> bool:
        """True when `enter` would refuse now (a hint without the lock: `enter` decides)."""
        return self.inside >= self.limit


class Backoff:
    """A growing delay per key (a client and a user name): after `free` failures in a row, each
    next attempt must wait twice as long as the last (1 s, 2 s, 4 s, ... up to `most`); a success
    clears it. Thread-safe; at most `max_keys` keys, the oldest dropped first."""

    def __init__(self, *, free: int = 3, most: float = 900.0, max_keys: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.free, self.most, self.max_keys, self.clock = free, most, max_keys, clock
        self._keys: dict[tuple, tuple[int, float]] = {}      # -> (failures in a row, not before)
        self._lock = threading.Lock()

    def wait(self, key: tuple) -> int:
        """Whole seconds until this key may try again (0: now)."""
        with self._lock:
            _, until = self._keys.get(key, (0, 0.0))
        left = until - self.clock()
        return 0 if left <= 0 else math.ceil(left)

    def failed(self, key: tuple) -> None:
        with self._lock:
            failures = self._keys.pop(key, (0, 0.0))[0] + 1
            delay = 0.0 if failures <= self.free else min(self.most, 2.0 ** (failures - self.free - 1))
            self._keys[key] = (failures, self.clock() + delay)
            while len(self._keys) > self.max_keys:
                del self._keys[next(iter(self._keys))]

    def succeeded(self, key: tuple) -> None:
        with self._lock:
            self._keys.pop(key, None)
