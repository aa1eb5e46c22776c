"""POST /webhooks/sendgrid stores each event once, applies the policy, and stores nothing refused."""

from __future__ import annotations

import time

import pytest

from tests.events.signing import body
from tests.web.test_webhook import EVENTS, REFUSED, post


def member(live, email: str) -> int:
    from subscribers import store

    with live.web.engine.begin() as conn:
        return store.add_subscriber(conn, email, store.get_list(conn, "crank").id).subscriber_id


def stored(live) -> int:
    from sqlalchemy import func, select

    from subscribers.policy import events

    with live.web.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(events)).scalar()


def status(live, email: str) -> str:
    from sqlalchemy import func, select

    from subscribers.models import memberships, subscribers

    with live.web.engine.connect() as conn:
        return conn.execute(select(func.coalesce(subscribers.c.global_status, memberships.c.status))
                            .join_from(memberships, subscribers).where(subscribers.c.email == email)).scalar()


def test_events_are_stored_once_and_applied(live, signer):
    member(live, "a@example.com")
    member(live, "b@example.com")
    raw = body([{**e, "timestamp": int(time.time())} for e in EVENTS])   # after their consent
    first = post(live, raw, signer.sign(raw)).json()
    replay = post(live, raw, signer.sign(raw)).json()          # SendGrid posts it again
    assert (first["stored"], first["duplicates"], first["changed"]) == (2, 0, 1)
    assert (replay["stored"], replay["duplicates"], replay["changed"]) == (0, 2, 0)
    assert stored(live) == 2
    old = body([{**EVENTS[1], "sg_event_id": "ev-old"}])     # a bounce from before the consent
    assert post(live, old, signer.sign(old)).json()["changed"] == 0
    assert (status(live, "a@example.com"), status(live, "b@example.com")) == ("active", "bounced")


def test_soft_bounces_replayed_count_once(live, signer):
    member(live, "s@example.com")
    soft = [{"email": "s@example.com", "event": "bounce", "type": "bounce", "status": "4.2.2",
             "timestamp": int(time.time()), "sg_event_id": "soft-1"}]
    for _ in range(5):
        raw = body(soft)
        assert post(live, raw, signer.sign(raw)).status_code == 200
    assert status(live, "s@example.com") == "active" and stored(live) == 1


@pytest.mark.parametrize("forge", REFUSED, ids=lambda f: f.__name__.strip("_"))
def test_refused_posts_store_nothing(live, signer, forge):
    member(live, "b@example.com")
    raw, headers = forge(signer, body(EVENTS))
    assert post(live, raw, headers).status_code == 403
    assert stored(live) == 0 and status(live, "b@example.com") == "active"


def test_a_batch_of_thousands(live, signer):
    member(live, "a@example.com")
    batch = [{"email": "a@example.com" if i % 2 else f"stranger{i}@example.org", "event": "delivered",
              "timestamp": 1700000000 + i, "sg_event_id": f"bulk-{i}"} for i in range(3000)]
    raw = body(batch)
    r = post(live, raw, signer.sign(raw))
    assert r.status_code == 200
    assert (r.json()["stored"], r.json()["unknown"]) == (1500, 1500)


def test_an_unsubscribe_event_leaves_only_the_list_its_message_came_from(live, signer):
    from mailer.send.ledger import delivery_ref, sends
    from subscribers import store
    from subscribers.models import utcnow

    with live.web.engine.begin() as conn:
        other = store.create_list(conn, "digest").id
        crank = store.get_list(conn, "crank").id
        sid = store.add_subscriber(conn, "u@example.com", crank).subscriber_id
        store.add_subscriber(conn, "u@example.com", other)
        send_id = conn.execute(sends.insert().values(
            issue="2024-11", list_id=crank, list_name="crank", subject="s", backend="sendgrid",
            status="done", started_at=utcnow()).returning(sends.c.id)).scalar()
    raw = body([{"email": "u@example.com", "event": "unsubscribe", "timestamp": int(time.time()) + 1,
                 "sg_event_id": "u-1", "mailer_issue": "2024-11", "mailer_ref": delivery_ref(send_id, sid, "k")}])
    assert post(live, raw, signer.sign(raw)).json()["changed"] == 1
    with live.web.engine.connect() as conn:
        rows = {r.list: r.status for r in store.memberships_of(conn, sid)}
    assert rows == {"crank": "unsubscribed", "digest": "active"}
