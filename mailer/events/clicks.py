"""Stage 7, tracking: requests for tracked links and open images -> people or machines, recorded in batches.

    recorder = Recorder(rules, write)      # write(list[Decided]) stores a batch (mailer/send/tracking.py)
    recorder.add(hit)                      # from the request, which answers at once
    recorder.stop()                        # decides and writes what is left

A click is a machine's (`Machine`) when it is a HEAD, when its User-Agent is a known scanner's
(mailer/events/scanners.py), when it comes within `after_accept_seconds` of the copy being made and
handed over (gateways follow links on delivery), or when it is part of a sweep: another link of the
same copy requested within `sweep_seconds` before or after it, by something that looked like a
browser (a HEAD or a known scanner beside a person's click does not make the person a machine). A
click is decided only once that window has passed, so the first link of a sweep is counted as a
machine's too; a person who clicks
later, after a scanner swept their copy, is counted as a person. An open is a machine's when it is a
HEAD, a scanner's, early, or comes from Apple's or Google's image proxy. The rules and their
limits: docs/tracking.md.

Nothing here touches the request path but `add` (a lock, an append); one background thread decides
and writes, every `every` seconds, so the web's latency does not depend on the database. What that
thread does holds the GIL beside the web's event loop, so it is kept small: batches of a tenth of
a second, the lock held only to take and to forget, no regular expression per request
(mailer/events/scanners.py). BENCHMARKS.md, "Tracking".
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from mailer.events.scanners import image_proxy, scanner
from mailer.send.tracking import Decided, Kind

log = logging.getLogger("mailer.events")


class Machine(enum.StrEnum):
    """Why a request is counted as a machine's."""

    HEAD = "head"                  # a HEAD request: link checkers, never a person's browser
    AGENT = "agent"                # a known scanner's User-Agent, or none
    EARLY = "early"                # within after_accept_seconds of the copy going out
    SWEEP = "sweep"                # one of several links of a copy within sweep_seconds
    PROXY = "proxy"                # an open by Apple's or Google's image proxy


@dataclass(frozen=True)
class Rules:
    sweep_seconds: float = 2.0
    after_accept_seconds: float = 10.0


@dataclass(frozen=True)
class Hit:
    """One request, as the route saw it."""

    kind: Kind
    send_id: int
    link: int | None
    copy: str                      # "r<subscriber>" or "a<random>": one copy of the issue
    subscriber_id: int | None      # "reader" mode only
    made_at: int                   # Unix seconds the copy was made (from its token)
    at: float                      # Unix seconds of the request
    head: bool
    agent: str | None
    ip: str | None = None          # the client address as it came (behind a proxy: any text)


def classify(hit: Hit, neighbours: list[Hit], rules: Rules) -> Machine | None:
    """Why `hit` is a machine's, or None for a person; `neighbours`: the same copy's other requests."""
    if hit.head:
        return Machine.HEAD
    if hit.kind is Kind.OPEN and image_proxy(hit.agent, hit.ip):
        return Machine.PROXY
    if scanner(hit.agent):
        return Machine.AGENT
    if hit.at - hit.made_at < rules.after_accept_seconds:
        return Machine.EARLY
    if hit.kind is Kind.CLICK and any(
            n.kind is Kind.CLICK and n.link != hit.link and abs(n.at - hit.at) <= rules.sweep_seconds
            and not n.head and not scanner(n.agent) for n in neighbours):
        return Machine.SWEEP
    return None


class Recorder:
    """Holds each hit until its sweep window has passed, then decides it and writes it in a batch."""

    def __init__(self, rules: Rules, write: Callable[[list[Decided]], object], *,
                 clock: Callable[[], float] = time.time, every: float = 0.1) -> None:
        self.rules, self.write, self.clock, self.every = rules, write, clock, every
        self.pending: deque[Hit] = deque()                       # not yet decided, in arrival order
        self.kept: deque[Hit] = deque()                          # decided, kept as later ones' neighbours
        self.recent: dict[tuple[int, str], list[Hit]] = {}      # (send, copy) -> its requests lately
        self.lock = threading.Lock()                             # `add` (the request) against the flush
        self.flushing = threading.Lock()                         # one flush at a time, decided to written
        self.wake = threading.Event()
        self.thread: threading.Thread | None = None
        self.stopping = False

    def add(self, hit: Hit) -> None:
        with self.lock:
            self.pending.append(hit)
            self.recent.setdefault((hit.send_id, hit.copy), []).append(hit)
            if self.thread is None and not self.stopping:
                self.thread = threading.Thread(target=self._run, name="mailer-web-tracking", daemon=True)
                self.thread.start()

    def flush(self, everything: bool = False) -> int:
        """Decide and write the hits whose window has passed (all of them with `everything`);
        returns how many were written."""
        with self.flushing:
            now = self.clock()
            with self.lock:
                due = []
                while self.pending and (everything or self.pending[0].at <= now - self.rules.sweep_seconds):
                    due.append(self.pending.popleft())
            # Decided without the lock, which the requests take: meanwhile `add` only appends later
            # requests to the lists read here, and only a flush removes from them.
            decided = [self._decide(hit) for hit in due]
            with self.lock:
                self.kept.extend(due)
                self._forget_older_than(now - 3 * self.rules.sweep_seconds - self.every)
            if decided:
                self.write(decided)
            return len(decided)

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
            thread, self.thread = self.thread, None
        self.wake.set()
        if thread is not None:
            thread.join(10)
        self._flush_logged(everything=True)

    def _decide(self, hit: Hit) -> Decided:
        neighbours = [n for n in self.recent.get((hit.send_id, hit.copy), []) if n is not hit]
        machine = classify(hit, neighbours, self.rules)
        return Decided(hit.kind, hit.send_id, hit.link, hit.copy, hit.subscriber_id,
                       datetime.fromtimestamp(hit.at, UTC), machine.value if machine else None)

    def _forget_older_than(self, cutoff: float) -> None:
        """Drop the decided requests older than `cutoff` from `recent`: only those (the oldest
        first, each the first of its copy's list), not a walk over every copy seen lately."""
        if self.pending:
            cutoff = min(cutoff, self.pending[0].at - self.rules.sweep_seconds)
        while self.kept and self.kept[0].at < cutoff:
            hit = self.kept.popleft()
            key = (hit.send_id, hit.copy)
            hits = self.recent[key]
            del hits[next(i for i, h in enumerate(hits) if h is hit)]
            if not hits:
                del self.recent[key]

    def _run(self) -> None:
        while not self.stopping:
            self.wake.wait(self.every)
            self.wake.clear()
            self._flush_logged()

    def _flush_logged(self, everything: bool = False) -> None:
        try:
            self.flush(everything)
        except Exception:  # a busy or gone database: the hits of this batch are lost, logged
            log.exception("tracking: could not record a batch of clicks")
