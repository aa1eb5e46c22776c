"""Many one-click unsubscribes at once (subscribers/one_click.py): one statement on PostgreSQL, the
store's row-by-row path on SQLite; both must leave the same memberships and history."""

from __future__ import annotations

from sqlalchemy import select

from subscribers import store
from subscribers.models import Status, history
from subscribers.one_click import unsubscribe_many


def _history(engine, sid):
    with engine.connect() as conn:
        rows = conn.execute(select(history.c.list_id, history.c.action, history.c.old_status, history.c.new_status,
                                   history.c.source, history.c.detail)
                            .where(history.c.subscriber_id == sid).order_by(history.c.id)).all()
    return [tuple(r) for r in rows][1:]  # after the subscribe row


def test_a_group_of_unsubscribes_each_once_with_its_consent_trail(engine, crank, digest):
    with engine.begin() as conn:
        ann = store.add_subscriber(conn, "ann@example.com", crank).subscriber_id
        bob = store.add_subscriber(conn, "bob@example.com", crank, status=Status.UNCONFIRMED).subscriber_id
        cid = store.add_subscriber(conn, "cid@example.com", crank).subscriber_id
        store.unsubscribe(conn, cid, crank, source="admin")
        dee = store.add_subscriber(conn, "dee@example.com", digest).subscriber_id
    requests = [(ann, crank, "192.0.2.1", "Mail/1.0"),
                (ann, crank, "192.0.2.9", "Mail/2.0"),   # clicked twice in one group: logged once, first wins
                (bob, crank, None, None),                # no client details: no detail
                (cid, crank, "192.0.2.3", None),         # already unsubscribed: nothing
                (dee, crank, "192.0.2.4", None),         # not on this list: nothing
                (999_999, crank, None, None)]            # gone (forgotten): nothing
    with engine.begin() as conn:
        unsubscribe_many(conn, requests)
    with engine.begin() as conn:
        unsubscribe_many(conn, requests)  # idempotent
        statuses = [store.membership_status(conn, s, crank) for s in (ann, bob, cid, dee)]
        assert statuses == [Status.UNSUBSCRIBED, Status.UNSUBSCRIBED, Status.UNSUBSCRIBED, None]
        assert store.membership_status(conn, dee, digest) is Status.ACTIVE
    assert _history(engine, ann) == [(crank, "status", "active", "unsubscribed", "web",
                                      {"ip": "192.0.2.1", "user_agent": "Mail/1.0"})]
    assert _history(engine, bob) == [(crank, "status", "unconfirmed", "unsubscribed", "web", None)]
    assert [h[4] for h in _history(engine, cid)] == ["admin"]
    assert _history(engine, dee) == []


def test_a_group_without_client_details(engine, crank):
    with engine.begin() as conn:
        ann = store.add_subscriber(conn, "ann@example.com", crank).subscriber_id
        unsubscribe_many(conn, [(ann, crank, None, None)])
        assert store.membership_status(conn, ann, crank) is Status.UNSUBSCRIBED
