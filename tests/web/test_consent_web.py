"""Consent over real HTTP: a forgotten reader is stored again only by their own click, a link for a
dead row acts on nobody, client addresses are stored only when they are addresses, and a signup
does the same work whatever the address's state."""

from __future__ import annotations

import pytest
from sqlalchemy import event, func, select

from subscribers import store
from subscribers.models import Status, forgotten, history, subscribers
from tests.web.conftest import SECRET
from tests.web.outbox_mail import mails, wait_for_mails
from tests.web.test_readers import ANN, link, make_member, outbox, state, subscribe


def forget(live, email: str = ANN) -> None:
    with live.web.engine.begin() as conn:
        store.forget(conn, email, SECRET)


def stored(live, email: str = ANN) -> bool:
    with live.web.engine.connect() as conn:
        return conn.execute(select(subscribers.c.id).where(subscribers.c.email == email)).first() is not None


def test_a_forgotten_reader_comes_back_only_by_clicking(live):
    make_member(live, ANN, Status.ACTIVE)
    forget(live)
    r = subscribe(live, ip="198.51.100.23")
    baseline = subscribe(live, "somebody-new@example.org", ip="192.0.2.99")
    assert r.status_code == 200 and r.text == baseline.text        # the page says the usual thing
    mail = next(m for m in wait_for_mails(outbox(live), 2) if ANN in m.text)
    assert not stored(live)                                        # no row, no address, no IP
    assert ANN not in mail.confirm_url and "198.51.100.23" not in mail.confirm_url
    assert live.http.get(mail.confirm_url).status_code == 200 and not stored(live)   # a GET is no consent
    done = live.http.post(mail.confirm_url, headers={"x-forwarded-for": "203.0.113.8"})
    assert done.status_code == 200 and "You are subscribed" in done.text
    row = state(live)
    assert (row["status"], row["consent_source"], row["consent_ip"]) == ("active", "web", "203.0.113.8")
    with live.web.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(forgotten)).scalar() == 0
    # the mail's own unsubscribe link was made for nobody: done, and changes nothing
    assert live.http.post(mail.unsubscribe_url).status_code == 200 and state(live)["status"] == "active"
    forget(live)                                                   # forgotten again: the old link is dead
    assert live.http.post(mail.confirm_url).status_code == 409 and not stored(live)


def test_old_links_never_reach_the_next_reader(live):
    sid, lid = make_member(live, ANN, Status.UNCONFIRMED)
    confirm, unsubscribe = link(live, "confirm", sid, lid), link(live, "unsubscribe", sid, lid)
    forget(live)
    other, _ = make_member(live, "next@example.com", Status.UNCONFIRMED)
    assert other != sid                                            # ids are never handed out again
    assert live.http.post(f"/confirm/{confirm}").status_code == 400
    r = live.http.post(f"/unsubscribe/{unsubscribe}")
    assert r.status_code == 200                                    # idempotent as ever ...
    assert state(live, "next@example.com")["status"] == "unconfirmed"   # ... and it changed nobody


ADDRESSES = [
    # (what the proxy passed on as the client, what is stored as consent_ip)
    ("203.0.113.7", "203.0.113.7"),
    ("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
    ("fe80::1%eth0", "fe80::1"),
    ("not-an-address", None),
    ("1" * 60, None),
    ("2001:db8::1" + ":" * 50, None),
]


@pytest.mark.parametrize("forwarded, kept", ADDRESSES)
def test_only_real_ip_addresses_are_stored(live, forwarded, kept):
    r = subscribe(live, ip=forwarded)
    assert r.status_code == 200
    assert state(live)["consent_ip"] == kept


def test_the_form_does_the_same_work_whatever_the_state(live):
    people = {"active": Status.ACTIVE, "unconfirmed": Status.UNCONFIRMED, "unsubscribed": Status.UNSUBSCRIBED,
              "bounced": Status.BOUNCED, "complained": Status.COMPLAINED}
    for who, status in people.items():
        make_member(live, f"{who}@example.com", status)
    make_member(live, "forgotten@example.com", Status.ACTIVE)
    forget(live, "forgotten@example.com")
    names = [*people, "forgotten"]
    for i, who in enumerate(names):
        subscribe(live, f"{who}@example.com", ip=f"192.0.2.{10 + i}")    # the first ask mails
    wait_for_mails(outbox(live), len(names) - 1)
    engine = live.web.engine
    with engine.connect() as conn:
        rows_before = conn.execute(select(func.count()).select_from(history)).scalar()
    shapes = {}
    for i, who in enumerate(names):
        seen: list[str] = []
        note = _recorder(seen)
        event.listen(engine, "before_cursor_execute", note)
        try:
            assert subscribe(live, f"{who}@example.com", ip=f"198.51.100.{10 + i}").status_code == 200
        finally:
            event.remove(engine, "before_cursor_execute", note)
        shapes[who] = seen
    assert len({tuple(s) for s in shapes.values()}) == 1, shapes
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(history)).scalar() == rows_before
    assert len(mails(outbox(live))) == len(names) - 1                    # throttled: no second mail


@pytest.mark.parametrize("body", [{"List-Unsubscribe": "One-Click"}, None])
def test_a_link_not_bound_to_the_membership_changes_nobody(live, body):
    """One-click posts go through the group commit (readers._unsubscribe_many): a genuinely
    signed token whose key is not the membership's is answered as done and changes nothing."""
    from subscribers.tokens import make_token

    sid, lid = make_member(live, ANN, Status.ACTIVE)
    stale = make_token(SECRET, "unsubscribe", sid, lid, "0" * 16)
    assert live.http.post(f"/unsubscribe/{stale}", data=body).status_code == 200
    assert state(live)["status"] == "active"
    assert live.http.post(f"/unsubscribe/{link(live, 'unsubscribe', sid, lid)}", data=body).status_code == 200
    assert state(live)["status"] == "unsubscribed"


def _recorder(seen: list[str]):
    """A before_cursor_execute listener noting each statement's first word in `seen`."""
    def note(conn, cursor, statement, *args):
        seen.append(statement.split()[0])

    return note
