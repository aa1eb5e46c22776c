"""Consent and privacy on SQLite and PostgreSQL: forgotten stays forgotten on every path, ids are
never reused, links act on the row they were made for only, every act of consent is recorded, and
a web request does the same work whatever the address's state (docs/consent.md)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from functools import partial

import pytest
from sqlalchemy import column, event, func, insert, select, table

from subscribers import store
from subscribers.errors import SuppressedAddress
from subscribers.events import DeliveryEvent, EventType, Severity
from subscribers.importer import import_csv
from subscribers.links import bound, link_token, membership_key
from subscribers.models import (
    Status,
    UtcDateTime,
    forgotten,
    history,
    memberships,
    signup_requests,
    subscribers,
    utcnow,
)
from subscribers.policy import events, ingest
from subscribers.tokens import make_token, verify_token

from .conftest import LIMITS, RESEND, SECRET

ANN, BOB = "ann@example.com", "bob@example.com"


def add(engine, email, list_id, **kw):
    with engine.begin() as conn:
        return store.add_subscriber(conn, email, list_id, secret=SECRET, **kw)


def forget(engine, email):
    with engine.begin() as conn:
        return store.forget(conn, email, SECRET)


def web_signup(engine, email, list_id, **kw):
    with engine.begin() as conn:
        return store.subscribe_unconfirmed(conn, list_id, email, secret=SECRET, **{"resend_after": RESEND, **kw})


def count(engine, table, *where) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table).where(*where)).scalar()


def stored(engine, email) -> bool:
    return count(engine, subscribers, subscribers.c.email == email) == 1


# ---------------------------------------------------------------- 1. forgotten stays forgotten

def test_a_web_signup_stores_nothing_of_a_forgotten_address(engine, crank):
    add(engine, ANN, crank)
    forget(engine, ANN)
    before = count(engine, history)
    for _ in range(3):
        signup = web_signup(engine, ANN, crank, name="Ann", ip="192.0.2.1", user_agent="Bot")
        assert signup.subscriber_id is None and signup.needs_confirmation
    assert not stored(engine, ANN)
    assert count(engine, forgotten) == 1 and count(engine, history) == before
    assert count(engine, signup_requests) == 1            # the keyed hash and a time: no address, no IP


def test_import_and_add_skip_a_forgotten_address(engine, crank, tmp_path):
    add(engine, ANN, crank)
    forget(engine, ANN)
    web_signup(engine, ANN, crank)
    csv = tmp_path / "a.csv"
    csv.write_text(f"email,name\n{ANN},Ann\n{BOB},Bob\n", encoding="utf-8")
    summary = import_csv(engine, csv, "crank", secret=SECRET)
    assert (summary.imported, summary.suppressed) == (1, 1) and not stored(engine, ANN)
    with pytest.raises(SuppressedAddress, match="forgotten"):
        add(engine, ANN, crank)
    result = add(engine, ANN, crank, force=True)
    assert result.outcome == "added" and count(engine, forgotten) == 0


def test_an_existing_row_with_a_forget_hash_is_treated_as_forgotten(engine, crank, digest, tmp_path):
    """A row re-created before every path checked the hash (the old web form did that)."""
    from subscribers.tokens import forget_hash

    add(engine, ANN, crank)
    with engine.begin() as conn:
        conn.execute(insert(forgotten).values(email_hash=forget_hash(SECRET, ANN), at=utcnow()))
    csv = tmp_path / "a.csv"
    csv.write_text(f"email\n{ANN}\n", encoding="utf-8")
    assert import_csv(engine, csv, "digest", secret=SECRET).suppressed == 1
    with pytest.raises(SuppressedAddress, match="forgotten"):
        add(engine, ANN, digest)
    assert web_signup(engine, ANN, digest).subscriber_id is None
    with engine.connect() as conn:
        who = store.get_subscriber(conn, ANN)
        assert [m.list for m in store.memberships_of(conn, who.id)] == ["crank"]


def test_events_never_bring_a_forgotten_address_back(engine, crank):
    add(engine, ANN, crank)
    forget(engine, ANN)
    at = datetime.now(UTC)
    batch = [DeliveryEvent(kind, ANN, at, "sendgrid-webhook", event_id=kind.value)
             for kind in (EventType.RESUBSCRIBED, EventType.DELIVERED, EventType.UNSUBSCRIBED)]
    with engine.begin() as conn:
        result = ingest(conn, batch, LIMITS)
    assert result.unknown == 3 and not stored(engine, ANN) and count(engine, events) == 0


def test_a_forgotten_person_comes_back_by_confirming(engine, crank):
    add(engine, ANN, crank)
    forget(engine, ANN)
    asked = utcnow()
    with engine.begin() as conn:
        assert store.confirm_forgotten(conn, crank, ANN, secret=SECRET, asked_at=asked, name="Ann",
                                       ip="192.0.2.5", user_agent="Phone") is True
    assert count(engine, forgotten) == 0
    with engine.connect() as conn:
        who = store.get_subscriber(conn, ANN)
        [member] = store.memberships_of(conn, who.id)
    assert (who.name, member.status, member.consent_source, member.consent_ip) == ("Ann", "active", "web", "192.0.2.5")
    forget(engine, ANN)                                      # forgotten again, after that request
    with engine.begin() as conn:
        assert store.confirm_forgotten(conn, crank, ANN, secret=SECRET, asked_at=asked) is False
    assert not stored(engine, ANN)


# ---------------------------------------------------------------- 2. ids and links

def test_ids_are_never_reused(engine, crank):
    for email in (ANN, BOB):
        add(engine, email, crank)
    with engine.connect() as conn:
        last_sub = store.get_subscriber(conn, BOB).id
        last_member = conn.execute(select(func.max(memberships.c.id))).scalar()
    forget(engine, BOB)
    new = add(engine, "carol@example.com", crank)
    assert new.subscriber_id > last_sub
    with engine.connect() as conn:
        assert conn.execute(select(func.max(memberships.c.id))).scalar() > last_member
    with engine.begin() as conn:
        doomed = store.create_list(conn, "doomed").id
        store.delete_list(conn, "doomed")
        assert store.create_list(conn, "reborn").id > doomed


def test_a_link_for_a_dead_row_acts_on_nobody(engine, crank):
    """Even were an id handed out again (here: forced by hand), the old link finds no key."""
    add(engine, ANN, crank)
    with engine.connect() as conn:
        sid = store.get_subscriber(conn, ANN).id
        tokens = {p: link_token(conn, SECRET, p, sid, crank) for p in ("confirm", "unsubscribe")}
    forget(engine, ANN)
    with engine.begin() as conn:
        conn.execute(insert(subscribers).values(id=sid, email=BOB, name="", attributes={},
                                                created_at=utcnow(), updated_at=utcnow()))
        store._join(conn, sid, BOB, crank, Status.ACTIVE, "admin", "admin", ())
        for purpose, token in tokens.items():
            assert not bound(conn, verify_token(SECRET, purpose, token))
        fresh = link_token(conn, SECRET, "unsubscribe", sid, crank)
        assert bound(conn, verify_token(SECRET, "unsubscribe", fresh))


def test_each_membership_has_its_own_random_key(engine, crank, digest, tmp_path):
    csv = tmp_path / "many.csv"
    csv.write_text("email\n" + "".join(f"r{i}@example.com\n" for i in range(50)), encoding="utf-8")
    import_csv(engine, csv, "crank", secret=SECRET)              # bulk path: the database's default
    add(engine, ANN, digest)                                     # one by one: the store's own key
    with engine.connect() as conn:
        keys = conn.execute(select(memberships.c.token_key)).scalars().all()
    assert len(keys) == len(set(keys)) == 51
    assert all(len(k) == 16 and int(k, 16) >= 0 for k in keys)


# ---------------------------------------------------------------- 3. every act of consent is recorded

def _bounce_and_backdate(engine, email, list_id, consent_at):
    with engine.begin() as conn:
        sid = store.get_subscriber(conn, email).id
        conn.execute(memberships.update().values(consent_at=consent_at))
        store.set_status(conn, sid, None, Status.BOUNCED, "sendgrid-webhook")
    return sid


def _soft_bounce(day: datetime, n: int) -> DeliveryEvent:
    return DeliveryEvent(EventType.BOUNCED, ANN, day, "sendgrid-webhook", event_id=f"late-{n}",
                         severity=Severity.HARD)


@pytest.mark.parametrize("how", ["web confirmation", "add --resubscribe"])
def test_coming_back_after_a_bounce_records_new_consent(engine, crank, how):
    long_ago = utcnow() - timedelta(days=30)
    add(engine, ANN, crank)
    sid = _bounce_and_backdate(engine, ANN, crank, long_ago)
    before = count(engine, history, history.c.subscriber_id == sid)
    if how == "web confirmation":
        web_signup(engine, ANN, crank)
        with engine.begin() as conn:
            assert store.confirm(conn, sid, crank, secret=SECRET, ip="192.0.2.9") is True
    else:
        assert "bounced lifted" in add(engine, ANN, crank, force=True).changes
    with engine.connect() as conn:
        [member] = store.memberships_of(conn, sid)
        actions = [h.action for h in store.history_of(conn, sid)][before:]
    assert member.effective == "active" and member.consent_at > long_ago + timedelta(days=29)
    assert actions[-1] in ("confirm", "status") and len(actions) == 2   # the lift, then the consent
    # a delayed event from between the old consent and the new one re-suppresses nobody
    with engine.begin() as conn:
        ingest(conn, [_soft_bounce(long_ago + timedelta(days=1), 1)], LIMITS)
    with engine.connect() as conn:
        assert store.memberships_of(conn, sid)[0].effective == "active"


# ---------------------------------------------------------------- 7. only real client addresses are stored

@pytest.mark.parametrize("given, kept", [("203.0.113.9", "203.0.113.9"), ("::ffff:192.0.2.1", "::ffff:c000:201"),
                                         ("1" * 60, None), ("x" * 100, None), ("", None)])
def test_only_an_ip_address_is_stored_as_consent_ip(engine, crank, given, kept):
    web_signup(engine, ANN, crank, ip=given, user_agent="Phone")
    with engine.connect() as conn:
        assert store.memberships_of(conn, store.get_subscriber(conn, ANN).id)[0].consent_ip == kept


# ---------------------------------------------------------------- 8. the same work whatever the state

def _states(engine, crank):
    """One address per state the form can meet; returns {state: address}."""
    out = {}
    for status in (Status.ACTIVE, Status.UNCONFIRMED, Status.UNSUBSCRIBED, Status.BOUNCED, Status.COMPLAINED):
        email = f"{status.value}@example.com"
        added = add(engine, email, crank)
        if status is not Status.ACTIVE:
            with engine.begin() as conn:
                store.set_status(conn, added.subscriber_id, crank, status, "test")
        out[status.value] = email
    add(engine, "forgotten@example.com", crank)
    forget(engine, "forgotten@example.com")
    out["forgotten"] = "forgotten@example.com"
    return out


def _statements(engine, fn) -> list[str]:
    seen: list[str] = []

    def note(conn, cursor, statement, *args):
        seen.append(statement.split()[0].upper() + " " + statement.split("FROM")[-1].split()[0]
                    if "FROM" in statement else statement.split()[0].upper())

    event.listen(engine, "before_cursor_execute", note)
    try:
        fn()
    finally:
        event.remove(engine, "before_cursor_execute", note)
    return seen


def test_a_signup_does_the_same_work_whatever_the_state(engine, crank):
    states = _states(engine, crank)
    for email in states.values():
        web_signup(engine, email, crank)                     # the first request of each: mails go out
    history_before, requests_before = count(engine, history), count(engine, signup_requests)
    shapes = {}
    for state, email in states.items():
        for _ in range(3):                                   # probes
            shapes[state] = _statements(engine, partial(web_signup, engine, email, crank, ip="192.0.2.1"))
    assert len({tuple(s) for s in shapes.values()}) == 1, shapes
    assert count(engine, history) == history_before          # probing adds no history row ...
    assert count(engine, signup_requests) == requests_before  # ... and no request row either


def test_one_mail_per_address_and_list_per_window(engine, crank):
    states = _states(engine, crank)
    for state, email in states.items():
        first = web_signup(engine, email, crank)
        again = web_signup(engine, email, crank)
        later = web_signup(engine, email, crank, resend_after=timedelta(0))
        wanted = state != "active"
        assert (first.mail, again.mail, later.mail) == (wanted, False, wanted), state


# ---------------------------------------------------------------- 2. existing databases migrate

def _at_revision(url, revision):
    from alembic import command

    from subscribers.db import MIGRATIONS_HISTORY, create

    engine = create(url)
    with engine.begin() as conn:
        command.upgrade(MIGRATIONS_HISTORY.config(conn), revision)
    return engine


# `lists` as revision 0002_events left it (later revisions add columns, e.g. `private`).
lists_0002 = table("lists", column("id"), column("name"), column("title"), column("description"),
                   column("created_at", UtcDateTime))


def test_old_links_keep_working_for_their_own_rows_only(db_url):
    """A database from before 0003: links already mailed (no key) keep working for the people they
    were mailed to, and for nobody created after the migration, or reusing an id before it."""
    from subscribers.db import upgrade

    engine = _at_revision(db_url, "0002_events")
    now = datetime.now(UTC)
    with engine.begin() as conn:
        lid = conn.execute(insert(lists_0002).values(name="crank", title="CRANK", description="", created_at=now)
                           .returning(lists_0002.c.id)).scalar_one()

        def member(email, at):
            sid = conn.execute(insert(subscribers).values(email=email, name="", attributes={}, created_at=at,
                                                          updated_at=at)).inserted_primary_key[0]
            conn.execute(insert(memberships).values(list_id=lid, subscriber_id=sid, status="active",
                                                    consent_source="import", consent_at=at, created_at=at,
                                                    updated_at=at))
            return sid

        ann = member(ANN, now - timedelta(days=9))
        gone = member("gone@example.com", now - timedelta(days=8))
    from mailer.migrate import (
        HISTORY as LEDGER,  # the send ledger points at lists and subscribers
    )

    LEDGER.upgrade(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO sends (issue, list_id, list_name, subject, backend, status, total, sent, failed, skipped, "
            f"batches, started_at) VALUES ('2024-11', {lid}, 'crank', 'S', 'outbox', 'done', 1, 1, 0, 0, 1, "
            "CURRENT_TIMESTAMP)")
        conn.exec_driver_sql(f"INSERT INTO deliveries (send_id, subscriber_id, state, attempts) "
                             f"SELECT id, {ann}, 'accepted', 1 FROM sends")
        conn.execute(insert(events).values(source="sendgrid-webhook", event_id="e1", subscriber_id=ann,
                                           type="delivered", at=now, received_at=now))
    mailed = time.time() - 5 * 86400                                   # mailed 5 days ago
    old = {who: make_token(SECRET, "unsubscribe", sid, lid, now=mailed) for who, sid in (("ann", ann), ("gone", gone))}
    with engine.begin() as conn:   # "gone" is erased; before the migration SQLite gave the next one its id
        conn.execute(memberships.delete().where(memberships.c.subscriber_id == gone))
        conn.execute(subscribers.delete().where(subscribers.c.id == gone))
        reuser = member("reuser@example.com", now)
        assert (reuser == gone) == (engine.dialect.name == "sqlite")
    upgrade(engine)
    with engine.begin() as conn:
        assert bound(conn, verify_token(SECRET, "unsubscribe", old["ann"]))          # still Ann's link
        assert not bound(conn, verify_token(SECRET, "unsubscribe", old["gone"]))     # never the reuser's
        newcomer = store.add_subscriber(conn, "new@example.com", lid).subscriber_id
        assert newcomer > max(ann, gone, reuser)
        unkeyed = make_token(SECRET, "unsubscribe", newcomer, lid)
        assert not bound(conn, verify_token(SECRET, "unsubscribe", unkeyed))          # old kind: not for new rows
        assert bound(conn, verify_token(SECRET, "unsubscribe", link_token(conn, SECRET, "unsubscribe", ann, lid)))
        assert len(membership_key(conn, ann, lid)) == 16
        assert conn.execute(select(func.count()).select_from(memberships)).scalar() == 3   # nothing lost
        # rebuilding the tables cascaded to nothing that points at them
        assert conn.exec_driver_sql("SELECT list_id FROM sends").scalar() == lid
        assert conn.exec_driver_sql("SELECT subscriber_id FROM deliveries").scalar() == ann
        assert conn.execute(select(events.c.subscriber_id)).scalars().all() == [ann]
    engine.dispose()
