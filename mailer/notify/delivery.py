"""Outbox events -> one delivery per endpoint -> signed POSTs until one 2xx, for 24 hours.
(The same background round also sends the welcome mails still due: mailer/send/welcome.py.)

    notifier = Notifier(settings)        # reads the endpoints' secrets: a bad one fails here
    notifier.start(); ...; notifier.stop()   # `mailer serve`, `mailer worker`: a background thread
    notifier.tick(now)                   # one round: fan out new events, try what is due (tests)

Fan-out: each event not yet fanned out gets a `webhook_deliveries` row per endpoint whose
`events` name its type (m0018_api_webhooks), in the transaction that marks it fanned out; the
UPDATE ... WHERE fanned_out is false decides which process does it, so two never both do.

A try: claim a due row (its next_attempt_at moved on by CLAIM, conditionally, so two processes
never post it at once), POST the event, record the outcome. 2xx: delivered, never posted again.
5xx, 429, a timeout or a refused connection: tried again after BACKOFF (the Standard Webhooks
schedule), until 24 hours after the event; then failed. Any other answer (3xx, 4xx): failed at
once: the receiver said no, and asking again changes nothing. A process that dies between the
POST and recording it posts it again later with the same `webhook-id`, which is what receivers
deduplicate by: delivery is at least once, and one 2xx ends it.

The body is built at each try from the outbox row, so a reader forgotten meanwhile (whose events
lost their address: subscribers/outbox.py) is posted without it.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    delete,
    exists,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine

from mailer import engines
from mailer.config import OutgoingWebhook, database_url, secret
from mailer.notify import signing
from mailer.send import welcome
from subscribers.models import UtcDateTime, outbox, utcnow

log = logging.getLogger("mailer.notify")
metadata = MetaData()

webhook_deliveries = Table(
    "webhook_deliveries", metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
    Column("outbox_id", BigInteger().with_variant(Integer(), "sqlite"), nullable=False),   # outbox.id (no FK)
    Column("url", String(2000), nullable=False),
    Column("state", String(16), nullable=False),          # pending, delivered, failed
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UtcDateTime),
    Column("last_status", Integer),                       # the receiver's HTTP status; None: no answer
    Column("last_error", Text),
    Column("created_at", UtcDateTime, nullable=False),
    Column("done_at", UtcDateTime),
    UniqueConstraint("outbox_id", "url"),
    Index("ix_webhook_deliveries_state_next_attempt_at", "state", "next_attempt_at"),
)

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
# The Standard Webhooks retry schedule: after the first try, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
BACKOFF = (timedelta(seconds=5), timedelta(minutes=5), timedelta(minutes=30), timedelta(hours=2),
           timedelta(hours=5), timedelta(hours=10), timedelta(hours=10))
GIVE_UP = timedelta(hours=24)        # after the event: no more tries
CLAIM = timedelta(seconds=60)        # a claimed try is ours this long (more than TIMEOUT)
TIMEOUT = 10.0                       # seconds for one POST, connecting included
KEEP = timedelta(days=7)             # events whose deliveries are over are deleted after this
POLL = 1.0                           # seconds between rounds with endpoints
IDLE_POLL = 600.0                    # ... and without any: only the sweep
FAN_OUT_BATCH = 500
TRY_BATCH = 20


@dataclass(frozen=True)
class Endpoint:
    url: str
    events: frozenset[str]
    key: bytes


def endpoints(hooks: tuple[OutgoingWebhook, ...]) -> list[Endpoint]:
    """The configured endpoints with their keys, read from the environment (ConfigError if one
    is missing or not a whsec_ secret: `mailer serve` and `mailer worker` stop at start)."""
    found = []
    for i, hook in enumerate(hooks, 1):
        where = f"[[webhooks.out]] #{i} secret_env"
        found.append(Endpoint(hook.url, frozenset(hook.events),
                              signing.key_of(secret(hook.secret_env, key=where), f"{where} ({hook.secret_env})")))
    return found


# ---------------------------------------------------------------- fan-out and sweep

def fan_out(conn: Connection, targets: list[Endpoint], now: datetime) -> int:
    """Delivery rows for the events not yet fanned out; how many rows were made."""
    ids = list(conn.execute(select(outbox.c.id).where(outbox.c.fanned_out.is_(False))
                            .order_by(outbox.c.id).limit(FAN_OUT_BATCH)).scalars())
    if not ids:
        return 0
    mine = conn.execute(update(outbox).where(outbox.c.id.in_(ids), outbox.c.fanned_out.is_(False))
                        .values(fanned_out=True).returning(outbox.c.id, outbox.c.type)).all()
    rows = [{"outbox_id": oid, "url": target.url, "state": PENDING, "attempts": 0, "next_attempt_at": now,
             "created_at": now} for oid, kind in mine for target in targets if kind in target.events]
    if rows:
        conn.execute(insert(webhook_deliveries), rows)
    return len(rows)


def sweep(conn: Connection, now: datetime) -> int:
    """Delete events older than KEEP whose deliveries are all over, and their delivery rows."""
    pending = exists().where(webhook_deliveries.c.outbox_id == outbox.c.id, webhook_deliveries.c.state == PENDING)
    old = list(conn.execute(select(outbox.c.id).where(outbox.c.fanned_out.is_(True), outbox.c.at < now - KEEP,
                                                      ~pending).limit(FAN_OUT_BATCH)).scalars())
    if not old:
        return 0
    conn.execute(delete(webhook_deliveries).where(webhook_deliveries.c.outbox_id.in_(old)))
    return conn.execute(delete(outbox).where(outbox.c.id.in_(old))).rowcount or 0


# ---------------------------------------------------------------- one try

@dataclass(frozen=True)
class Outcome:
    status: int | None        # the HTTP status; None: no answer (timeout, refused)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def retry(self) -> bool:
        return self.status is None or self.status == 429 or self.status >= 500


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):   # a redirect is an answer, not followed
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def post(url: str, key: bytes, msg_id: str, body: bytes, timestamp: int, timeout: float | None = None) -> Outcome:
    """POST one signed body; the receiver's status, or None and why when there was no answer."""
    headers = {"content-type": "application/json", "user-agent": "crank-mailer-webhooks/1",
               **signing.headers(key, msg_id, timestamp, body)}
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with _OPENER.open(request, timeout=timeout or TIMEOUT) as response:
            return Outcome(response.status)
    except urllib.error.HTTPError as exc:
        return Outcome(exc.code, f"HTTP {exc.code}")
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return Outcome(None, f"no answer: {reason}"[:500])


def body_of(row) -> bytes:
    """The event as posted: {"type", "timestamp", "data"} (the Standard Webhooks payload shape)."""
    data: dict = {"event_id": row.event_id}
    if row.type.startswith("subscriber."):
        data.update(subscriber_id=row.subscriber_id, email=row.email)
    if row.list_name is not None:
        data["list"] = row.list_name
    data.update(row.data or {})
    return json.dumps({"type": row.type, "timestamp": row.at.isoformat(), "data": data},
                      ensure_ascii=False, separators=(",", ":")).encode()


def next_try(attempts: int, event_at: datetime, now: datetime) -> datetime | None:
    """When to try again after `attempts` tries, or None: past the 24 hours."""
    at = now + BACKOFF[min(attempts, len(BACKOFF)) - 1]
    return at if at <= event_at + GIVE_UP else None


# ---------------------------------------------------------------- the rounds

class Notifier:
    def __init__(self, settings, *, engine: Engine | None = None) -> None:
        self.settings = settings
        self.targets = endpoints(settings.webhooks.out)
        self.by_url = {target.url: target for target in self.targets}
        self._engine = engine
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = engines.get(database_url(self.settings))
        return self._engine

    def tick(self, now: datetime | None = None) -> dict[str, int]:
        """One round: fan out, sweep, try what is due. Counts of what happened."""
        now = now or utcnow()
        with self.engine.begin() as conn:
            made = fan_out(conn, self.targets, now)
            swept = sweep(conn, now)
        done = {"made": made, "swept": swept, DELIVERED: 0, FAILED: 0, "retry": 0}
        for row in self._claim(now):
            done[self._try(row, now)] += 1
        return done

    def _claim(self, now: datetime) -> list:
        d = webhook_deliveries
        query = (select(d.c.id, d.c.url, d.c.attempts, d.c.next_attempt_at, outbox.c.event_id, outbox.c.type,
                        outbox.c.at, outbox.c.subscriber_id, outbox.c.email, outbox.c.list_name, outbox.c.data)
                 .join_from(d, outbox, d.c.outbox_id == outbox.c.id)
                 .where(d.c.state == PENDING, d.c.next_attempt_at <= now).order_by(d.c.id).limit(TRY_BATCH))
        claimed = []
        with self.engine.begin() as conn:
            for row in conn.execute(query).all():
                taken = conn.execute(update(d).where(d.c.id == row.id, d.c.state == PENDING,
                                                     d.c.next_attempt_at == row.next_attempt_at)
                                     .values(next_attempt_at=now + CLAIM)).rowcount
                if taken == 1:
                    claimed.append(row)
        return claimed

    def _try(self, row, now: datetime) -> str:
        target = self.by_url.get(row.url)
        attempts = row.attempts + 1
        if target is None:   # the endpoint left the config: nothing to sign with
            outcome = Outcome(None, "no longer in [[webhooks.out]]")
            state, again = FAILED, None
        else:
            outcome = post(row.url, target.key, row.event_id, body_of(row), int(now.timestamp()))
            again = next_try(attempts, row.at, now) if outcome.retry else None
            state = DELIVERED if outcome.ok else (PENDING if again else FAILED)
        d = webhook_deliveries
        with self.engine.begin() as conn:
            conn.execute(update(d).where(d.c.id == row.id).values(
                state=state, attempts=attempts, next_attempt_at=again, last_status=outcome.status,
                last_error=outcome.error, done_at=None if state == PENDING else now))
        if state == FAILED:
            log.warning("webhook %s of %s to %s failed after %d tries: %s", row.type, row.event_id, row.url,
                        attempts, outcome.error or f"HTTP {outcome.status}")
        return state if state != PENDING else "retry"

    # ------------------------------------------------------------ the background thread

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="mailer-webhooks", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(TIMEOUT + 5)
            self._thread = None

    def _run(self) -> None:
        wait = POLL if self.targets else IDLE_POLL
        while not self._stop.wait(wait):
            try:
                self.tick()
                welcome.send_due(self.settings)   # welcome mails left pending (a backend that was down)
            except Exception:   # the loop outlives a bad round (a database that went away): logged, next round
                log.exception("webhooks: a round failed; trying again")


# ---------------------------------------------------------------- `mailer webhooks`

def recent(conn: Connection, *, limit: int = 50, failed_only: bool = False) -> list:
    """The latest deliveries, newest first: event, url, state, tries, last status and error."""
    d = webhook_deliveries
    query = (select(d.c.id, outbox.c.event_id, outbox.c.type, outbox.c.at, d.c.url, d.c.state, d.c.attempts,
                    d.c.last_status, d.c.last_error, d.c.next_attempt_at, d.c.done_at)
             .join_from(d, outbox, d.c.outbox_id == outbox.c.id).order_by(d.c.id.desc()).limit(limit))
    if failed_only:
        query = query.where(and_(d.c.state == FAILED))
    return list(conn.execute(query))


def ping(url: str, key: bytes, now: datetime | None = None) -> Outcome:
    """A signed test event (`mailer webhooks test URL`)."""
    now = now or utcnow()
    from subscribers.outbox import new_id

    body = json.dumps({"type": "ping", "timestamp": now.isoformat(), "data": {}}).encode()
    return post(url, key, new_id(), body, int(now.timestamp()))
