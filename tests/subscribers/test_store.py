"""The store on SQLite and PostgreSQL: lists, every status change and its history, suppression."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from subscribers import store
from subscribers.errors import (
    InvalidAddress,
    InvalidListName,
    ListExists,
    ListNotFound,
    SecretRequired,
    SubscriberNotFound,
    SuppressedAddress,
)
from subscribers.models import Status, forgotten, history, memberships, subscribers

from .conftest import RESEND, SECRET


def _add(engine, email, list_id, **kw):
    with engine.begin() as conn:
        return store.add_subscriber(conn, email, list_id, **kw)


def _state(engine, email, list_id):
    """(membership status, global status, [(action, old, new, source) for that subscriber])."""
    with engine.connect() as conn:
        who = store.get_subscriber(conn, email)
        status = store.membership_status(conn, who.id, list_id)
        log = [(h.action, h.old_status, h.new_status, h.source) for h in store.history_of(conn, who.id)]
        return status, who.global_status, log


# ---------------------------------------------------------------- lists

def test_lists(engine, crank):
    with engine.begin() as conn:
        assert store.get_list(conn, "crank").title == "CRANK Call"
        with pytest.raises(ListExists):
            store.create_list(conn, "crank")
        with pytest.raises(ListNotFound, match="crnak"):
            store.get_list(conn, "crnak")
    for bad in ("", "Crank", "a b", "-x", "x" * 65, "crank;drop"):
        with engine.begin() as conn, pytest.raises(InvalidListName):
            store.create_list(conn, bad)


def test_delete_list_keeps_subscribers_and_history(engine, crank, digest):
    _add(engine, "ann@example.com", crank)
    _add(engine, "ann@example.com", digest)
    with engine.begin() as conn:
        assert store.delete_list(conn, "crank") == 1
    with engine.connect() as conn:
        who = store.get_subscriber(conn, "ann@example.com")
        assert [m.list for m in store.memberships_of(conn, who.id)] == ["digest"]
        assert [h.list for h in store.history_of(conn, who.id)] == [None, "digest"]


# ---------------------------------------------------------------- admin add

def test_add_then_again_then_name(engine, crank):
    first = _add(engine, " Ann@Example.COM ", crank, name="Ann\nLee")
    assert (first.outcome, first.email, first.status) == ("added", "ann@example.com", Status.ACTIVE)
    assert _add(engine, "ann@example.com", crank).outcome == "unchanged"
    assert _add(engine, "ann@example.com", crank, status=Status.UNCONFIRMED).outcome == "unchanged"  # no downgrade
    renamed = _add(engine, "ANN@example.com", crank, name="Ann B. Lee")
    assert (renamed.outcome, renamed.changes) == ("updated", ("name updated",))
    with engine.connect() as conn:
        assert store.get_subscriber(conn, "ann@example.com").name == "Ann B. Lee"
        assert conn.execute(select(func.count()).select_from(subscribers)).scalar() == 1
    assert _state(engine, "ann@example.com", crank)[2] == [
        ("subscribe", None, "active", "admin"), ("update", None, None, "admin")]


def test_add_unconfirmed_then_active(engine, crank):
    assert _add(engine, "ann@example.com", crank, status=Status.UNCONFIRMED).status is Status.UNCONFIRMED
    result = _add(engine, "ann@example.com", crank)
    assert (result.outcome, result.status) == ("updated", Status.ACTIVE)


def test_add_rejects_invalid_address(engine, crank):
    with pytest.raises(InvalidAddress, match="special-use"):
        _add(engine, "ann@printer.local", crank)


@pytest.mark.parametrize("suppress, expected", [
    (lambda conn, sid, lid: store.unsubscribe(conn, sid, lid, source="admin"), "unsubscribed"),
    (lambda conn, sid, lid: store.set_status(conn, sid, None, Status.BOUNCED, "sendgrid-webhook"), "bounced"),
    (lambda conn, sid, lid: store.set_status(conn, sid, lid, Status.COMPLAINED, "sendgrid-webhook"), "complained"),
])
def test_suppressed_address_is_never_resurrected_by_accident(engine, crank, suppress, expected):
    sid = _add(engine, "ann@example.com", crank).subscriber_id
    with engine.begin() as conn:
        suppress(conn, sid, crank)
    with pytest.raises(SuppressedAddress, match=expected):
        _add(engine, "ann@example.com", crank, name="New Name")
    with engine.connect() as conn:
        assert store.get_subscriber(conn, "ann@example.com").name == ""  # left exactly as it was
    result = _add(engine, "ann@example.com", crank, force=True)
    assert (result.outcome, result.status) == ("updated", Status.ACTIVE)
    status, glob, log = _state(engine, "ann@example.com", crank)
    assert (status, glob) == (Status.ACTIVE, None)
    assert log[-1][3] == "admin"  # the override is on record


# ---------------------------------------------------------------- set_status and suppression across lists

@pytest.mark.parametrize("list_arg, new, crank_after, digest_after, glob_after, rows", [
    ("crank", Status.UNSUBSCRIBED, "unsubscribed", "active", None, [("crank", "active", "unsubscribed")]),
    (None, Status.UNSUBSCRIBED, "unsubscribed", "unsubscribed", None,
     [("crank", "active", "unsubscribed"), ("digest", "active", "unsubscribed")]),
    (None, Status.BOUNCED, "bounced", "bounced", "bounced", [(None, None, "bounced")]),
    ("crank", Status.COMPLAINED, "complained", "complained", "complained",
     [(None, None, "complained"), ("crank", "active", "complained")]),
    ("crank", Status.ACTIVE, "active", "active", None, []),   # already active: nothing, no history row
])
def test_set_status(engine, crank, digest, list_arg, new, crank_after, digest_after, glob_after, rows):
    sid = _add(engine, "ann@example.com", crank).subscriber_id
    _add(engine, "ann@example.com", digest)
    lists = {"crank": crank, "digest": digest, None: None}
    with engine.begin() as conn:
        changed = store.set_status(conn, sid, lists[list_arg], new, "test", {"why": "table"})
    assert changed is bool(rows)
    with engine.connect() as conn:
        by_list = {m.list: m.effective for m in store.memberships_of(conn, sid)}
        assert by_list == {"crank": crank_after, "digest": digest_after}
        assert store.get_subscriber(conn, "ann@example.com").global_status == glob_after
        log = [(h.list, h.old_status, h.new_status) for h in store.history_of(conn, sid) if h.source == "test"]
        assert sorted(log, key=str) == sorted(rows, key=str)
        recipients = {lid: [r[1] for r in store.iter_recipients(conn, lid)] for lid in (crank, digest)}
    assert recipients == {crank: ["ann@example.com"] if crank_after == "active" else [],
                          digest: ["ann@example.com"] if digest_after == "active" else []}


def test_set_status_needs_a_list_for_active(engine, crank):
    sid = _add(engine, "ann@example.com", crank).subscriber_id
    with engine.begin() as conn, pytest.raises(ValueError):
        store.set_status(conn, sid, None, Status.ACTIVE, "test")
    with engine.begin() as conn, pytest.raises(SubscriberNotFound):
        store.set_status(conn, sid, crank + 100, Status.UNSUBSCRIBED, "test")


def test_recipients_select_is_one_statement(engine, crank):
    for i, status in enumerate([Status.ACTIVE, Status.UNCONFIRMED, Status.ACTIVE, Status.ACTIVE]):
        _add(engine, f"r{i}@example.com", crank, name=f"R {i}", status=status)
    with engine.begin() as conn:
        store.set_status(conn, store.get_subscriber(conn, "r3@example.com").id, None, Status.BOUNCED, "t")
        rows = conn.execute(store.recipients_select(crank)).all()
    assert [(r.email, r.name) for r in rows] == [("r0@example.com", "R 0"), ("r2@example.com", "R 2")]


# ---------------------------------------------------------------- web: double opt-in with consent

def test_signup_confirm_unsubscribe(engine, crank):
    with engine.begin() as conn:
        signup = store.subscribe_unconfirmed(conn, crank, "Web@Example.com", name="Web Reader", secret=SECRET,
                                             ip="192.0.2.7", user_agent="Mozilla/5.0", resend_after=RESEND)
    assert (signup.status, signup.needs_confirmation) == (Status.UNCONFIRMED, True)
    with engine.begin() as conn:
        assert store.confirm(conn, signup.subscriber_id, crank, secret=SECRET, ip="192.0.2.8",
                             user_agent="Phone") is True
        assert store.confirm(conn, signup.subscriber_id, crank, secret=SECRET) is False  # idempotent
        member = store.memberships_of(conn, signup.subscriber_id)[0]
        assert (member.status, member.consent_source, member.consent_ip, member.consent_user_agent) == (
            "active", "web", "192.0.2.8", "Phone")
        again = store.subscribe_unconfirmed(conn, crank, "web@example.com", name="Someone Else", secret=SECRET,
                                             resend_after=RESEND)
        assert (again.status, again.needs_confirmation) == (Status.ACTIVE, False)
        assert store.get_subscriber(conn, "web@example.com").name == "Web Reader"  # the form changes no data
        assert store.unsubscribe(conn, signup.subscriber_id, crank, ip="192.0.2.9") is True
        assert store.unsubscribe(conn, signup.subscriber_id, crank) is False
        # an old confirmation link never undoes a later unsubscribe
        assert store.confirm(conn, signup.subscriber_id, crank, secret=SECRET) is False
        assert store.membership_status(conn, signup.subscriber_id, crank) is Status.UNSUBSCRIBED
        # ... but a new signup that the person confirms does
        assert store.subscribe_unconfirmed(conn, crank, "web@example.com", secret=SECRET,
                                          resend_after=RESEND).needs_confirmation is True
        assert store.membership_status(conn, signup.subscriber_id, crank) is Status.UNSUBSCRIBED
        assert store.confirm(conn, signup.subscriber_id, crank, secret=SECRET) is True
        assert store.membership_status(conn, signup.subscriber_id, crank) is Status.ACTIVE
        log = [(h.action, h.old_status, h.new_status, h.source) for h in store.history_of(conn, signup.subscriber_id)]
    assert log == [("subscribe", None, "unconfirmed", "web"), ("confirm", "unconfirmed", "active", "web"),
                   ("status", "active", "unsubscribed", "web"), ("confirm", "unsubscribed", "active", "web")]


# ---------------------------------------------------------------- forget

def test_forget(engine, crank, digest):
    sid = _add(engine, "ann@example.com", crank, name="Ann Lee").subscriber_id
    _add(engine, "ann@example.com", digest)
    with engine.begin() as conn:
        store.unsubscribe(conn, sid, crank, ip="192.0.2.1", user_agent="Mail")
        assert store.forget(conn, "ANN@example.com", SECRET) == sid
    with engine.connect() as conn:
        assert store.find_subscriber(conn, "ann@example.com") is None
        assert conn.execute(select(func.count()).select_from(memberships)).scalar() == 0
        rows = conn.execute(select(history)).all()
        assert rows and all(r.subscriber_id is None and r.detail is None for r in rows)
        assert "ann" not in repr(conn.execute(select(history)).all() + conn.execute(select(forgotten)).all()).lower()
        assert store.is_forgotten(conn, "ann@example.com", SECRET)
    with pytest.raises(SecretRequired):
        _add(engine, "bob@example.com", crank)  # forgotten addresses exist: the key is needed to check
    with pytest.raises(SuppressedAddress, match="forgotten"):
        _add(engine, "Ann@Example.com", crank, secret=SECRET)
    assert _add(engine, "ann@example.com", crank, secret=SECRET, force=True).outcome == "added"
    with engine.connect() as conn:
        assert not store.is_forgotten(conn, "ann@example.com", SECRET)


def test_forget_unknown_address_still_remembers_it(engine, crank):
    with engine.begin() as conn:
        assert store.forget(conn, "never@example.com", SECRET) is None
    with pytest.raises(SuppressedAddress):
        _add(engine, "never@example.com", crank, secret=SECRET)
