"""Stage 7b: DeliveryEvents -> stored once in `events` -> subscriber state, through ONE policy.

Every inbound signal (SendGrid's signed webhook, bounce mail, SendGrid's suppression lists, SMTP
refusals at RCPT) arrives here as
`subscribers.events.DeliveryEvent`s and goes through `ingest`: events for addresses we do not
know are dropped, the rest are stored once (UNIQUE(event_id, source): SendGrid repeats events,
up to dozens of times; an event without an id is known by its type, address, time and reason),
and only events stored for the first time reach
`apply_event`, so a replay can never count a soft bounce twice.

The policy, like listmonk's bounce actions but with a time window for soft bounces:

    hard bounce                         -> bounced       (every list: subscribers.global_status)
    soft bounce, the Nth within W days  -> bounced       (N = soft_bounce_limit, W = soft_bounce_window_days)
    spam complaint                      -> complained    (every list)
    unsubscribe / group_unsubscribe     -> unsubscribed  (the list the message was sent for, when
                                                          the caller can tell; no list known: every
                                                          list; a list they are not on: nothing)
    anything else (delivered, deferred, blocked, dropped for other reasons, opens, clicks,
    resubscribe, unknown)               -> stored, status left alone

Events arrive out of order (docs/mail-facts.md), so an event older than the subscriber's latest
consent (a confirmation, import or admin add) is stored but changes nothing: the person's later
decision wins, and a bounce from before a re-confirmation says nothing about the mailbox now.
Limits come in as a small dataclass: subscribers never imports mailer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    any_,
    bindparam,
    func,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite

from subscribers import store
from subscribers.bulk import Bulk
from subscribers.events import DeliveryEvent, EventType, Severity
from subscribers.models import Json, Status, UtcDateTime, memberships, subscribers

# The table as 0002_events.py creates it; its own MetaData so the store's models stay as they are.
events = Table(
    "events", MetaData(),
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
    Column("source", String(32), nullable=False),
    Column("event_id", String(100), nullable=True),
    Column("subscriber_id", Integer, nullable=False),
    Column("type", String(16), nullable=False),
    Column("severity", String(8), nullable=True),
    Column("at", UtcDateTime, nullable=False),
    Column("issue", String(100), nullable=True),
    Column("send_ref", String(100), nullable=True),
    Column("message_id", String(200), nullable=True),
    Column("detail", Text, nullable=True),
    Column("raw", Json, nullable=True),
    Column("received_at", UtcDateTime, nullable=False),
)
CHUNK = 500            # addresses per IN (...) lookup: well under SQLite's variable limit


@dataclass(frozen=True)
class Limits:
    """The soft-bounce rule's numbers. No defaults here: they, and their ranges, are declared once,
    in mailer's config ([bounces], mailer/config.py), which builds this."""

    soft_bounce_limit: int
    soft_bounce_window_days: int


@dataclass(frozen=True)
class IngestResult:
    stored: int = 0          # new events written
    duplicates: int = 0      # seen before (same source and event id), ignored
    unknown: int = 0         # for addresses we do not know, ignored
    changed: int = 0         # subscribers whose state the policy changed (people, not status changes)
    changed_ids: frozenset[int] = frozenset()   # who they are, so callers with several batches count each once

    def as_dict(self) -> dict[str, int]:
        return {"stored": self.stored, "duplicates": self.duplicates, "unknown": self.unknown,
                "changed": self.changed}


ListResolver = Callable[[Connection, DeliveryEvent], "int | None"]


def ingest(conn: Connection, batch: Sequence[DeliveryEvent], limits: Limits, *,
           list_for: ListResolver | None = None) -> IngestResult:
    """Store each new event once and apply the policy to it; the caller owns the transaction.

    `list_for(conn, event)` names the list a message was sent for (mailer knows it from its send
    ledger); without it an unsubscribe event applies to every list.
    """
    if conn.dialect.name == "postgresql" and not any(e.type in _RULES for e in batch):
        # Only statistics (deliveries, opens, clicks, deferrals, blocks): nothing acts on them, so
        # this commit need not wait for its WAL flush (docs/postgresql.md says what a crash costs).
        conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
    ids = subscriber_ids(conn, {e.recipient for e in batch})
    known = [e for e in batch if e.recipient in ids]
    new = record_events(conn, known, ids)
    changed: set[int] = set()   # a bounce then a complaint from one reader: one person changed
    for event in sorted(new, key=lambda e: e.at):
        if event.type in _RULES:
            list_id = list_for(conn, event) if list_for else None
            if apply_event(conn, event, limits, subscriber_id=ids[event.recipient], list_id=list_id) is not None:
                changed.add(ids[event.recipient])
    return IngestResult(stored=len(new), duplicates=len(known) - len(new),
                        unknown=len(batch) - len(known), changed=len(changed), changed_ids=frozenset(changed))


def subscriber_ids(conn: Connection, addresses: Iterable[str]) -> dict[str, int]:
    """{normalized address: subscriber id} for the addresses we know."""
    wanted = sorted(addresses)
    found: dict[str, int] = {}
    for i in range(0, len(wanted), CHUNK):
        rows = conn.execute(select(subscribers.c.email, subscribers.c.id)
                            .where(_one_of(conn, subscribers.c.email, wanted[i:i + CHUNK])))
        found.update((email, sid) for email, sid in rows)
    return found


def record_events(conn: Connection, batch: Sequence[DeliveryEvent], ids: dict[str, int]) -> list[DeliveryEvent]:
    """Insert-or-ignore, in bulk; returns the events that were new (stored for the first time).

    Ids already stored are found with one indexed lookup per chunk and left out; the rest go in
    as one executemany with ON CONFLICT DO NOTHING. (RETURNING would say which rows went in, but
    makes SQLAlchemy render one huge statement: three times slower on PostgreSQL.) Should two
    posts carry the same event at the same moment, both may apply it: harmless, as the policy is
    idempotent and counts soft bounces from the stored rows, where the event is once.
    """
    first: dict[tuple[str, str], DeliveryEvent] = {}
    for e in batch:
        first.setdefault((e.source[:32], dedupe_key(e)), e)
    if conn.dialect.name == "postgresql":
        return _record_copied(conn, first, ids)
    seen = _stored_ids(conn, first)
    new = [e for key, e in first.items() if key not in seen]
    if new:
        now = datetime.now(UTC)
        conn.execute(_insert_ignore(conn), [_row(e, ids, now) for e in new])
    return new


def dedupe_key(e: DeliveryEvent) -> str:
    """The provider's own event id; for an event without one (a signed post replayed, bounce
    mail), a digest of what makes it this event: type, address, time and reason. A replay then
    is the same row, never a second soft bounce."""
    if e.event_id:
        return e.event_id[:100]
    text = "\x1f".join([e.type.value, e.recipient, e.at.isoformat(), e.detail or ""])
    return "content:" + hashlib.sha256(text.encode()).hexdigest()


_COLUMNS = ("source", "event_id", "subscriber_id", "type", "severity", "at", "issue", "send_ref", "message_id",
            "detail", "raw", "received_at")


def _record_copied(conn: Connection, first: dict, ids: dict[str, int]) -> list[DeliveryEvent]:
    """PostgreSQL: the events COPY into a staging table and go in with one INSERT ... ON CONFLICT
    DO NOTHING RETURNING, which names the new ones: no lookup first, and no per-row parameter
    processing (SQLAlchemy's executemany cost most of a 1,000-event post: docs/decisions.md)."""
    now = datetime.now(UTC)
    rows = []
    for e in first.values():
        row = _row(e, ids, now)
        row["raw"] = None if e.raw is None else json.dumps(row["raw"])  # jsonb from JSON text
        rows.append(tuple(row[c] for c in _COLUMNS))
    stored = set(Bulk(conn).insert(events, _COLUMNS, rows, conflict=["event_id", "source"],
                                   returning=["source", "event_id"]))
    return [e for key, e in first.items() if key in stored]


def _stored_ids(conn: Connection, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
    by_source: dict[str, list[str]] = {}
    for source, event_id in keys:
        by_source.setdefault(source[:32], []).append(event_id)
    seen: set[tuple[str, str]] = set()
    for source, wanted in by_source.items():
        for i in range(0, len(wanted), CHUNK):
            rows = conn.execute(select(events.c.event_id).where(
                events.c.source == source, _one_of(conn, events.c.event_id, wanted[i:i + CHUNK])))
            seen.update((source, event_id) for (event_id,) in rows)
    return seen


def _one_of(conn: Connection, column, values: list):
    """`column IN (...)`; on PostgreSQL `= ANY(array)`: one parameter, so the plan psycopg
    prepares after a few runs stays an index lookup (with 500 separate parameters PostgreSQL
    switched to a generic plan that took 30 times longer once the table had grown)."""
    if conn.dialect.name != "postgresql":
        return column.in_(values)
    return column == any_(bindparam(None, values, type_=postgresql.ARRAY(column.type)))


def _insert_ignore(conn: Connection):
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    return dialect_insert(events).on_conflict_do_nothing(index_elements=["event_id", "source"])


def _row(e: DeliveryEvent, ids: dict[str, int], now: datetime) -> dict:
    return {"source": e.source[:32], "event_id": dedupe_key(e),
            "subscriber_id": ids[e.recipient], "type": e.type.value,
            "severity": e.severity.value if e.severity else None, "at": e.at,
            "issue": _cut(e.issue, 100), "send_ref": _cut(e.send_ref, 100),
            "message_id": _cut(e.message_id, 200), "detail": _cut(e.detail, 1000),
            "raw": _jsonable(e.raw), "received_at": now}


# ------------------------------------------------------------------------------- the policy

def _hard_or_counted(conn, event, limits, subscriber_id, since) -> Status | None:
    """Hard: bounced. Soft: bounced once the soft bounces since max(window start, latest consent)
    reach the limit (this one included: it is stored already)."""
    if event.severity is not Severity.SOFT:
        return Status.BOUNCED
    at = event.at
    start = at - timedelta(days=limits.soft_bounce_window_days)
    if since is not None and since > start:
        start = since.replace(microsecond=0)   # as in apply_event: bounce mail is dated in whole seconds
    count = conn.execute(select(func.count()).select_from(events).where(
        events.c.subscriber_id == subscriber_id, events.c.type == EventType.BOUNCED.value,
        events.c.severity == Severity.SOFT.value, events.c.at >= start, events.c.at <= at)).scalar()
    return Status.BOUNCED if count >= limits.soft_bounce_limit else None


_RULES = {
    EventType.BOUNCED: _hard_or_counted,
    EventType.COMPLAINED: lambda *_: Status.COMPLAINED,
    EventType.UNSUBSCRIBED: lambda *_: Status.UNSUBSCRIBED,
}


def apply_event(conn: Connection, event: DeliveryEvent, limits: Limits, *,
                subscriber_id: int | None = None, list_id: int | None = None) -> Status | None:
    """Apply one (already stored) event; the status it set, or None when it changed nothing.

    Soft bounces are counted from the `events` table, so store the event first (`ingest` does).
    """
    rule = _RULES.get(event.type)
    if rule is None:
        return None
    sid = subscriber_id if subscriber_id is not None else subscriber_ids(conn, [event.recipient]).get(event.recipient)
    if sid is None:
        return None
    since = _latest_consent(conn, sid, list_id)
    if since is not None and event.at < since.replace(microsecond=0):  # providers send whole seconds
        return None                              # the person decided again after this event
    status = rule(conn, event, limits, sid, since)
    if status is None:
        return None
    scope = list_id if status is Status.UNSUBSCRIBED else None   # bounces, complaints: every list
    if scope is not None and not _is_member(conn, sid, scope):
        return None   # the message was for a list they are not on: they get nothing from it already
    changed = store.set_status(conn, sid, scope, status, event.source, _detail(event))
    return status if changed else None


def _latest_consent(conn, subscriber_id: int, list_id: int | None) -> datetime | None:
    query = select(func.max(memberships.c.consent_at)).where(memberships.c.subscriber_id == subscriber_id)
    if list_id is not None:
        query = query.where(memberships.c.list_id == list_id)
    return conn.execute(query).scalar()


def _is_member(conn, subscriber_id: int, list_id: int) -> bool:
    return conn.execute(select(memberships.c.id).where(memberships.c.subscriber_id == subscriber_id,
                                                       memberships.c.list_id == list_id)).first() is not None


def _detail(e: DeliveryEvent) -> dict:
    return {"event": e.type.value, "severity": e.severity.value if e.severity else None,
            "event_id": e.event_id, "issue": e.issue, "at": e.at.isoformat(),
            "detail": _cut(e.detail, 300)}


def _cut(value: str | None, n: int) -> str | None:
    return None if value is None else str(value)[:n]


def _jsonable(raw: object):
    """Parsed JSON is stored as it came (never dropped); anything else as its repr."""
    return raw if isinstance(raw, (dict, list, str, int, float, bool, type(None))) else {"repr": repr(raw)[:2000]}
