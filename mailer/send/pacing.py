"""Pacing by mailbox provider ([delivery.pacing]): readers grouped by their domain's MX, the send's
order interleaving the providers, and each provider's messages per second kept under its limit.

- **Who is who.** A reader's provider is their domain's: gmail (gmail.com, googlemail.com and
  domains whose MX is Google's), microsoft (outlook.com, hotmail, live, msn and Microsoft 365's
  `*.protection.outlook.com`), yahoo (yahoo, aol, ymail and `yahoodns.net`), or other. Well-known
  domains need no question; the others' MX is asked (mailer/resolver.py, `[dns] nameservers`)
  for at most `lookups` domains per send, the most readers first, and kept in `mail_providers`
  for CACHE_DAYS, so a monthly send asks again only about new domains.
- **Interleaving.** When the send's readers are fixed, `order_readers` gives each a place
  spreading each provider evenly through the send (a provider with a third of the readers has
  every third place), so no domain's readers go in one burst (ledger.create_send keeps that order
  in the delivery ids, which every batch follows).
- **Limits.** `Pacer.deliver` stands between the batch loop and the backend: before a batch goes,
  it waits until every provider in it is within its rate (a GCRA: each provider's next free time
  moves by n / rate). Over SendGrid a batch is one request, so the limits shape the batches the
  same way. A temporary refusal that says it is about rate ("421", or 4.7.x with "rate", "too
  many", "throttl", "unusual", "volume") holds that provider for `hold_seconds` and halves its limit: its
  readers in the next batches are not sent but deferred (the ledger retries them), while the
  other providers go on at their own pace. The SMTP backend answers a `421 4.7.x` at MAIL, RCPT
  or DATA so (deliver/smtp.py): the reader is deferred, never sent twice, and the send goes on.
- **Across workers.** `mailer send --workers N` and `mailer worker` pace with `SharedPacer`: the
  same limits and holds, kept per send and provider in `rate_budget` (ratelimit.py) by the
  database's clock, so they hold for the workers together.

docs/deliverability.md has the reasons; `mailer report` shows the deferrals per provider.
"""

from __future__ import annotations

import enum
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import NamedTuple

import dns.exception
import dns.resolver
from sqlalchemy import Column, Float, Select, String, Table, func, literal, select
from sqlalchemy.engine import Connection, Engine

from mailer.resolver import make_resolver
from mailer.send import ratelimit
from mailer.send.deliver.base import Result, ResultStatus
from mailer.send.ledger import metadata
from mailer.send.ratelimit import SharedBudget
from mailer.send.stall import Stall
from subscribers.models import UtcDateTime, subscribers, utcnow

CACHE_DAYS = 30
LOOKUP_THREADS = 8


class Provider(enum.StrEnum):
    GMAIL = "gmail"
    MICROSOFT = "microsoft"
    YAHOO = "yahoo"
    OTHER = "other"


mail_providers = Table(
    "mail_providers", metadata,
    Column("domain", String(255), primary_key=True),   # as stored addresses hold it (lower case, punycode)
    Column("provider", String(16), nullable=False),    # a Provider
    Column("checked_at", UtcDateTime, nullable=False),
)

_KNOWN = {
    Provider.GMAIL: {"gmail.com", "googlemail.com"},
    Provider.MICROSOFT: {"outlook.com", "hotmail.com", "live.com", "msn.com", "hotmail.co.uk", "hotmail.fr",
                         "hotmail.de", "hotmail.es", "hotmail.it", "live.co.uk", "live.fr", "live.de", "outlook.fr",
                         "outlook.de", "outlook.es", "windowslive.com", "passport.com"},
    Provider.YAHOO: {"yahoo.com", "yahoo.co.uk", "yahoo.fr", "yahoo.de", "yahoo.es", "yahoo.it", "yahoo.ca",
                     "yahoo.com.au", "yahoo.co.jp", "ymail.com", "rocketmail.com", "aol.com", "aim.com",
                     "aol.co.uk", "aol.de", "aol.fr", "verizon.net", "att.net", "sbcglobal.net"},
}
_MX = ((Provider.GMAIL, ("google.com", "googlemail.com")),
       (Provider.MICROSOFT, ("outlook.com", "hotmail.com", "microsoft.com")),
       (Provider.YAHOO, ("yahoodns.net", "yahoo.com", "aol.com")))
RATE_LIMITED = re.compile(r"^421\b|\b4\.7\.\d+\b.*(rate|too many|throttl|unusual|volume)", re.I | re.S)


def known_provider(domain: str) -> Provider | None:
    for provider, domains in _KNOWN.items():
        if domain in domains:
            return provider
    return None


def provider_of_mx(exchanges: Sequence[str]) -> Provider:
    """The provider whose servers take the domain's mail, by the MX host names."""
    for exchange in exchanges:
        host = exchange.lower().rstrip(".")
        for provider, suffixes in _MX:
            if any(host == s or host.endswith("." + s) for s in suffixes):
                return provider
    return Provider.OTHER


def ask_mx(resolver: dns.resolver.Resolver, domain: str) -> Provider | None:
    """None when DNS did not answer (not cached: asked again next send)."""
    try:
        return provider_of_mx([str(r.exchange) for r in resolver.resolve(domain, "MX", search=False)])
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return Provider.OTHER
    except dns.exception.DNSException:
        return None


# --- who is who -----------------------------------------------------------------------------------

def domain_of(conn: Connection, email):
    """The domain part of an address column, in SQL."""
    if conn.dialect.name == "postgresql":
        return func.split_part(email, "@", 2)
    return func.substr(email, func.instr(email, "@") + 1)


def classify(engine: Engine, readers: Select, resolver: dns.resolver.Resolver, lookups: int) -> dict[str, int]:
    """Put the readers' domains not yet (or no longer) known into mail_providers; returns how many
    domains were looked up, by provider found."""
    with engine.connect() as conn:
        chosen = readers.subquery()
        domain = domain_of(conn, chosen.c.email)
        counted = conn.execute(select(domain, func.count()).group_by(domain).order_by(func.count().desc())).all()
        fresh = set(conn.execute(select(mail_providers.c.domain)
                                 .where(mail_providers.c.checked_at > utcnow() - timedelta(days=CACHE_DAYS)))
                    .scalars())
    todo = [d for d, _ in counted if d and d not in fresh]
    found = {d: known_provider(d) for d in todo}
    unknown = [d for d, p in found.items() if p is None][:lookups]
    with ThreadPoolExecutor(LOOKUP_THREADS) as pool:
        found.update(zip(unknown, pool.map(lambda d: ask_mx(resolver, d), unknown), strict=True))
    rows = [{"domain": d, "provider": p.value, "checked_at": utcnow()} for d, p in found.items() if p is not None]
    if rows:
        with engine.begin() as conn:
            conn.execute(mail_providers.delete().where(mail_providers.c.domain.in_([r["domain"] for r in rows])))
            conn.execute(mail_providers.insert(), rows)
    return dict(Counter(p.value for d in unknown if (p := found[d]) is not None))


def providers_of(engine: Engine) -> dict[str, Provider]:
    with engine.connect() as conn:
        return {d: Provider(p) for d, p in conn.execute(select(mail_providers.c.domain, mail_providers.c.provider))}


# --- the send's order -----------------------------------------------------------------------------

def order_readers(conn: Connection, readers: Select, tier: Callable | None = None) -> Select:
    """The readers with a `send_order` column: within each tier (warm-up: the more engaged first),
    each provider's readers spread evenly, (k - 0.5) / n for its k-th of n. The places are made in
    a subquery joined to `subscribers`, so create_send may still lock the readers' rows (PostgreSQL
    refuses FOR SHARE in a query with window functions)."""
    chosen = readers.subquery("chosen")
    provider = func.coalesce(mail_providers.c.provider, literal(Provider.OTHER.value))
    level = tier(chosen.c.subscriber_id) if tier is not None else literal(0)
    joined = chosen.outerjoin(mail_providers, mail_providers.c.domain == domain_of(conn, chosen.c.email))
    rank = func.row_number().over(partition_by=(level, provider), order_by=chosen.c.subscriber_id)
    size = func.count().over(partition_by=(level, provider))
    placed = select(chosen.c.subscriber_id, (-level + (rank - 0.5) / func.cast(size, Float)).label("send_order")
                    ).select_from(joined).subquery("placed")
    return (select(subscribers.c.id.label("subscriber_id"), subscribers.c.email, subscribers.c.name,
                   placed.c.send_order)
            .join_from(subscribers, placed, placed.c.subscriber_id == subscribers.c.id)
            .order_by(placed.c.send_order, subscribers.c.id))


# --- limits ---------------------------------------------------------------------------------------

class Pacer:
    """Each provider's messages per second under its limit; a rate-limited answer holds that provider."""

    def __init__(self, limits: dict[Provider, float], providers: dict[str, Provider], hold_seconds: float, *,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], object] = time.sleep):
        self.limits, self.providers, self.hold_seconds = dict(limits), providers, hold_seconds
        self.clock, self.sleep = clock, sleep
        self.next_free: dict[Provider, float] = {}
        self.held_until: dict[Provider, float] = {}
        self.sent: Counter[Provider] = Counter()
        self.deferred: Counter[Provider] = Counter()     # rate-limited answers and readers held back
        self.waited = 0.0
        self._lock = threading.Lock()

    def provider(self, email: str) -> Provider:
        domain = email.rpartition("@")[2].lower()
        return self.providers.get(domain) or known_provider(domain) or Provider.OTHER

    def deliver(self, send_batch: Callable, encode: Callable, outs: list, encoded) -> list[Result]:
        """`send_batch(outs, encoded)` for the readers whose provider is not held, after waiting for
        their providers' pace; the held ones come back RETRY_LATER without being sent."""
        kinds = {o.ref: self.provider(o.email) for o in outs}
        holding = self.held(set(kinds.values()))
        held = [o for o in outs if kinds[o.ref] in holding]
        if held:
            refs = {o.ref for o in held}
            outs = [o for o in outs if o.ref not in refs]
            encoded = encode(outs) if outs else None
        results = [Result(o.ref, ResultStatus.RETRY_LATER, detail=f"held back: {kinds[o.ref]} asked us to slow "
                          "down (rate limited)") for o in held]
        self.deferred.update(kinds[o.ref] for o in held)
        if not outs:
            return results
        self._wait(Counter(kinds[o.ref] for o in outs))
        sent = send_batch(outs, encoded)
        self.observe([kinds[r.ref] for r in sent], sent)
        return results + sent

    def held(self, kinds: set[Provider]) -> set[Provider]:
        """Which of these providers asked us to slow down and are held now."""
        now = self.clock()
        return {p for p in kinds if self.held_until.get(p, 0.0) > now}

    def _wait(self, counts: Counter) -> None:
        with self._lock:
            now, start = self.clock(), 0.0
            for provider, n in counts.items():
                rate = self.limits.get(provider, 0.0)
                if rate <= 0:
                    continue
                at = max(now, self.next_free.get(provider, now))
                self.next_free[provider] = at + n / rate
                start = max(start, at - now)
        if start > 0:
            self.waited += start
            self.sleep(start)

    def observe(self, kinds: list[Provider], results: Sequence[Result]) -> None:
        for provider, result in zip(kinds, results, strict=True):
            if result.ok:
                self.sent[provider] += 1
            elif result.status is ResultStatus.RETRY_LATER:
                self.deferred[provider] += 1
                if RATE_LIMITED.search(result.detail or ""):
                    self.slow_down(provider)

    def slow_down(self, provider: Provider) -> None:
        """That provider only: held for hold_seconds, and its limit halved (1 a second when it had none),
        once per hold: the rest of the batch answered the same way while it is held changes nothing
        (as SharedPacer across workers)."""
        with self._lock:
            now = self.clock()
            if self.held_until.get(provider, 0.0) > now:
                return
            self.held_until[provider] = now + self.hold_seconds
            rate = self.limits.get(provider, 0.0)
            self.limits[provider] = rate / 2 if rate > 0 else 1.0
            self.next_free[provider] = max(self.next_free.get(provider, now), now + self.hold_seconds)


class SharedPacer(Pacer):
    """The pacer of a shared send (`mailer send --workers N`, `mailer worker`): each provider's rate
    and hold live in the database, one ratelimit.SharedBudget row per send and provider
    (`pace:SEND:PROVIDER`), by the database's clock. The limits hold for all workers together (two
    workers at gmail = 20 send 20 a second between them, not 40), and a "rate limited" answer to any
    worker holds that provider for every worker and halves its rate there (once per hold)."""

    def __init__(self, engine: Engine, send_id: int, limits: dict[Provider, float], providers: dict[str, Provider],
                 hold_seconds: float, *, sleep: Callable[[float], object] = time.sleep,
                 clock: Callable[[], float] | None = None, stall: Stall | None = None):
        super().__init__(limits, providers, hold_seconds, sleep=sleep)
        self.engine = engine
        self.stall = stall or Stall(0)   # the database briefly away: retried (mailer/send/stall.py)
        self._seen: dict[Provider, ratelimit.State] = {}
        # clock: epoch seconds, a test's; None: the database's
        self.budgets = {p: SharedBudget(engine, f"pace:{send_id}:{p.value}", float(limits.get(p, 0.0)),
                                        clock=clock, sleep=sleep, stall=self.stall) for p in Provider}

    def held(self, kinds: set[Provider]) -> set[Provider]:
        """Read once per batch (one query for its providers), and kept for `_wait`."""
        order = sorted(kinds)
        seen = self.stall(lambda attempt: ratelimit.states(self.engine, [self.budgets[p] for p in order]),
                          "reading the providers' shared pace")
        self._seen = dict(zip(order, seen, strict=True))
        return {p for p, state in self._seen.items() if state.wait_until > state.now}

    def _wait(self, counts: Counter) -> None:
        for provider, n in counts.items():
            budget = self.budgets[provider]
            seen = self._seen.get(provider)
            if (seen.rate if seen is not None else budget.rate) <= 0:
                continue   # no limit, and never slowed down
            before = budget.waited
            budget.take(n)
            self.waited += budget.waited - before

    def slow_down(self, provider: Provider) -> None:
        self.budgets[provider].slow_down(self.hold_seconds)


def limits_of(pacing) -> dict[Provider, float]:
    """[delivery.pacing]'s limits by provider."""
    return {p: float(getattr(pacing, p.value)) for p in Provider}



class Paced(NamedTuple):
    """What a paced send hands the dispatcher: the readers' order, and the pacer for the batch loop."""
    order: Callable[[Connection, Select], Select]
    pacer: Pacer


def for_worker(settings, engine: Engine, send_id: int, stall: Stall | None = None) -> SharedPacer | None:
    """A worker's pacer for a shared send ([delivery.pacing] as this worker's settings say), or None."""
    pacing = settings.delivery.pacing
    if not pacing.on:
        return None
    return SharedPacer(engine, send_id, limits_of(pacing), providers_of(engine), pacing.hold_seconds, stall=stall)


def for_send(settings, engine: Engine, readers: Select | None, *, tier: Callable | None = None,
             sleep: Callable[[float], object] = time.sleep) -> Paced:
    """Classify the readers' domains (`readers`: None when the send exists already) and make the pacer."""
    pacing = settings.delivery.pacing
    if readers is not None:
        classify(engine, readers, make_resolver(settings.dns.nameservers, settings.dns.timeout), pacing.lookups)
    return Paced(lambda conn, chosen: order_readers(conn, chosen, tier),
                 Pacer(limits_of(pacing), providers_of(engine), pacing.hold_seconds, sleep=sleep))
