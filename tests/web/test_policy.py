"""subscribers.policy as a table: a subscriber on two lists, some events -> the statuses after.

Runs on SQLite and PostgreSQL (db_url). Events are DeliveryEvents as the SendGrid parser (or,
later, bounce mail) makes them; times are relative to the membership's consent (t0).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from subscribers import store
from subscribers.db import connect
from subscribers.events import DeliveryEvent, EventType, Severity
from subscribers.models import memberships, subscribers
from subscribers.policy import Limits, events, ingest

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ADDRESS = "reader@example.com"
LIMITS = Limits(soft_bounce_limit=3, soft_bounce_window_days=30)
E = EventType


def ev(kind: EventType, day: float = 1, *, id: str | None = None, severity: Severity | None = None,
       to: str = ADDRESS) -> DeliveryEvent:
    return DeliveryEvent(type=kind, recipient=to, at=T0 + timedelta(days=day), source="sendgrid-webhook",
                         event_id=id, severity=severity, raw={"test": True})


HARD, SOFT = Severity.HARD, Severity.SOFT
CASES = [
    # (label, events, list the message was for ("a", "b" or None), expected {list: effective status})
    ("hard bounce", [ev(E.BOUNCED, id="1", severity=HARD)], "a", {"a": "bounced", "b": "bounced"}),
    ("two soft bounces", [ev(E.BOUNCED, d, id=f"s{d}", severity=SOFT) for d in (1, 2)], "a",
     {"a": "active", "b": "active"}),
    ("three soft bounces in the window", [ev(E.BOUNCED, d, id=f"s{d}", severity=SOFT) for d in (1, 10, 20)],
     "a", {"a": "bounced", "b": "bounced"}),
    ("three soft bounces, spread wider than the window",
     [ev(E.BOUNCED, d, id=f"s{d}", severity=SOFT) for d in (1, 35, 70)], "a", {"a": "active", "b": "active"}),
    ("one soft bounce replayed three times", [ev(E.BOUNCED, 1, id="same", severity=SOFT)] * 3, "a",
     {"a": "active", "b": "active"}),
    ("spam complaint", [ev(E.COMPLAINED, id="c")], "a", {"a": "complained", "b": "complained"}),
    ("unsubscribe, list known", [ev(E.UNSUBSCRIBED, id="u")], "a", {"a": "unsubscribed", "b": "active"}),
    ("unsubscribe, list unknown", [ev(E.UNSUBSCRIBED, id="u")], None,
     {"a": "unsubscribed", "b": "unsubscribed"}),
    ("a soft bounce without an id, replayed three times", [ev(E.BOUNCED, 1, severity=SOFT)] * 3, "a",
     {"a": "active", "b": "active"}),
    ("three soft bounces without ids", [ev(E.BOUNCED, d, severity=SOFT) for d in (1, 2, 3)], "a",
     {"a": "bounced", "b": "bounced"}),
    ("a hard bounce without an id", [ev(E.BOUNCED, severity=HARD)], None, {"a": "bounced", "b": "bounced"}),
    ("unsubscribe naming a list they are not on", [ev(E.UNSUBSCRIBED, id="u")], "c",
     {"a": "active", "b": "active"}),
    ("delivery-side noise", [ev(k, id=k.value) for k in (E.DELIVERED, E.DEFERRED, E.BLOCKED, E.DROPPED,
                                                          E.PROCESSED, E.OPENED, E.CLICKED, E.UNKNOWN,
                                                          E.RESUBSCRIBED)],
     "a", {"a": "active", "b": "active"}),
    ("a bounce from before the latest consent", [ev(E.BOUNCED, -3, id="old", severity=HARD)], "a",
     {"a": "active", "b": "active"}),
    ("someone else's events", [ev(E.BOUNCED, id="x", severity=HARD, to="stranger@example.org")], "a",
     {"a": "active", "b": "active"}),
]


@pytest.fixture
def engine(db_url):
    engine = connect(db_url)
    yield engine
    engine.dispose()


def seed(engine) -> dict[str, int]:
    """ADDRESS active on lists a and b (list c has someone else only), consent at T0."""
    with engine.begin() as conn:
        ids = {name: store.create_list(conn, name).id for name in ("a", "b", "c")}
        for name in ("a", "b"):
            store.add_subscriber(conn, ADDRESS, ids[name])
        store.add_subscriber(conn, "other@example.com", ids["c"])
        conn.execute(memberships.update().values(consent_at=T0))
    return ids


def statuses(engine, ids: dict[str, int]) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(select(memberships.c.list_id, func.coalesce(subscribers.c.global_status,
                                                                          memberships.c.status))
                            .join_from(memberships, subscribers).where(subscribers.c.email == ADDRESS)).all()
    names = {v: k for k, v in ids.items()}
    return {names[lid]: status for lid, status in rows}


@pytest.mark.parametrize("label, batch, sent_for, expected", CASES, ids=[c[0] for c in CASES])
def test_policy(engine, label, batch, sent_for, expected):
    ids = seed(engine)
    for event in batch:   # one post per event, as SendGrid's retries arrive
        with engine.begin() as conn:
            ingest(conn, [event], LIMITS, list_for=lambda c, e: ids.get(sent_for))
    assert statuses(engine, ids) == expected


def test_batch_counts_and_dedupe(engine):
    ids = seed(engine)
    batch = [ev(E.DELIVERED, id=f"d{i}") for i in range(1200)] + [ev(E.DELIVERED, id="d0"),
                                                                  ev(E.OPENED, to="nobody@example.net")]
    with engine.begin() as conn:
        first = ingest(conn, batch, LIMITS)
    with engine.begin() as conn:
        again = ingest(conn, batch, LIMITS)
    assert (first.stored, first.duplicates, first.unknown) == (1200, 1, 1)
    assert (again.stored, again.duplicates, again.unknown) == (0, 1201, 1)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(events)).scalar() == 1200
    assert statuses(engine, ids) == {"a": "active", "b": "active"}


def test_history_names_the_event(engine):
    ids = seed(engine)
    with engine.begin() as conn:
        result = ingest(conn, [ev(E.COMPLAINED, id="spam-1")], LIMITS)
        sid = conn.execute(select(subscribers.c.id).where(subscribers.c.email == ADDRESS)).scalar()
        rows = store.history_of(conn, sid)
    assert result.changed == 1
    last = rows[-1]._mapping if hasattr(rows[-1], "_mapping") else rows[-1]
    assert last["source"] == "sendgrid-webhook" and last["new_status"] == "complained"
    assert statuses(engine, ids)["a"] == "complained"


def test_forget_erases_the_events(engine):
    seed(engine)
    with engine.begin() as conn:
        ingest(conn, [ev(E.DELIVERED, id="d1")], LIMITS)
        store.forget(conn, ADDRESS, "secret-for-forget-0000000000")
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(events)).scalar() == 0
