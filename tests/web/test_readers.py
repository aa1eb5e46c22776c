"""Subscribe, confirm and unsubscribe over real HTTP; the state in the store after each step."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from subscribers import store
from subscribers.models import Status, history, memberships, subscribers
from subscribers.tokens import make_token
from tests.web.conftest import LIST, SECRET
from tests.web.outbox_mail import wait_for_mails

ANN = "ann@example.com"


def state(live, email: str = ANN) -> dict | None:
    """The membership of `email` on the list and its subscriber's global status, or None."""
    with live.web.engine.connect() as conn:
        row = conn.execute(
            select(memberships, subscribers.c.global_status)
            .join_from(memberships, subscribers, memberships.c.subscriber_id == subscribers.c.id)
            .where(subscribers.c.email == email)).first()
    return None if row is None else dict(row._mapping)


def subscribe(live, email: str = ANN, ip: str = "192.0.2.10", **extra):
    return live.http.post("/subscribe", data={"list": LIST, "email": email, "name": "Ann", **extra},
                          headers={"x-forwarded-for": ip})


def outbox(live):
    return live.settings.delivery.outbox_dir


def link(live, purpose: str, sid: int, lid: int, secret: str = SECRET, *, now: float | None = None) -> str:
    """A token as the service mints it: bound to the membership's key (signed at `now`)."""
    from subscribers.links import membership_key

    with live.web.engine.connect() as conn:
        return make_token(secret, purpose, sid, lid, membership_key(conn, sid, lid), now=now)


def make_member(live, email: str, status: Status) -> tuple[int, int]:
    with live.web.engine.begin() as conn:
        lst = store.get_list(conn, LIST)
        added = store.add_subscriber(conn, email, lst.id, status=Status.ACTIVE, secret=SECRET)
        if status is not Status.ACTIVE:
            store.set_status(conn, added.subscriber_id, lst.id, status, "test")
    return added.subscriber_id, lst.id


def test_new_address_gets_one_mail_and_stays_unconfirmed(live):
    r = subscribe(live)
    assert r.status_code == 200 and "Check your inbox" in r.text
    [mail] = wait_for_mails(outbox(live), 1)
    assert state(live)["status"] == "unconfirmed"
    assert mail.message["To"].addresses[0].addr_spec == ANN
    assert mail.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "/confirm/" in mail.confirm_url and mail.confirm_url in mail.html
    assert ANN in mail.text and "%%" not in mail.text + mail.html


MARKER = "marker@example.org"


def _after_a_later_mail(live, expected: int) -> list:
    """The outbox once a mail asked for after everything else has arrived: a background send the
    earlier requests queued would have started before it (the real signal, not a pause)."""
    assert subscribe(live, MARKER, ip="192.0.2.77").status_code == 200
    found = wait_for_mails(outbox(live), expected)
    assert any(m.message["To"].addresses[0].addr_spec == MARKER for m in found)
    return found


def test_asking_again_soon_sends_no_second_mail(live):
    for _ in range(3):
        assert subscribe(live).status_code == 200
    wait_for_mails(outbox(live), 1)
    assert len(_after_a_later_mail(live, 2)) == 2   # ANN's one mail and the marker's


SAME_PAGE = [
    # (existing status or None, expects a mail, status afterwards)
    (None, True, "unconfirmed"),
    (Status.ACTIVE, False, "active"),
    (Status.UNSUBSCRIBED, True, "unsubscribed"),   # comes back only through the mail
    (Status.BOUNCED, True, "bounced"),
    (Status.COMPLAINED, True, "complained"),
]


@pytest.mark.parametrize("existing, mailed, after", SAME_PAGE)
def test_the_page_leaks_nothing(live, existing, mailed, after):
    if existing is not None:
        make_member(live, ANN, existing)
    r = subscribe(live)
    assert r.status_code == 200
    baseline = subscribe(live, "nobody-yet@example.org", ip="192.0.2.99")
    assert r.text == baseline.text                       # word for word the same page
    if mailed:
        wait_for_mails(outbox(live), 2)
    row = state(live)
    assert (row["global_status"] or row["status"]) == after


def test_honeypot_changes_nothing(live):
    r = subscribe(live, website="http://spam.example.net")
    assert r.status_code == 200 and "Check your inbox" in r.text
    assert len(_after_a_later_mail(live, 1)) == 1   # the marker's only
    assert state(live) is None


@pytest.mark.parametrize("address", ["not-an-address", "ann@", "", "a b@example.com", "x" * 300])
def test_bad_address_is_400_and_changes_nothing(live, address):
    r = subscribe(live, address)
    assert r.status_code in (400, 422) and "email address" in r.text.lower()
    assert state(live, address) is None


def test_per_ip_limit(live):
    codes = [subscribe(live, f"p{i}@example.com", ip="198.51.100.7").status_code for i in range(7)]
    assert codes[:5] == [200] * 5 and codes[5:] == [429, 429]
    assert subscribe(live, "other@example.com", ip="198.51.100.8").status_code == 200


def test_confirm_needs_a_post(live):
    subscribe(live)
    [mail] = wait_for_mails(outbox(live), 1)
    page = live.http.get(mail.confirm_url)
    assert page.status_code == 200 and 'method="post"' in page.text
    assert state(live)["status"] == "unconfirmed"       # a link scanner's GET confirms nobody
    done = live.http.post(mail.confirm_url, headers={"user-agent": "Phone Browser 1.0",
                                                     "x-forwarded-for": "203.0.113.5"})
    assert done.status_code == 200 and "You are subscribed" in done.text
    row = state(live)
    assert (row["status"], row["consent_source"], row["consent_ip"], row["consent_user_agent"]) == \
        ("active", "web", "203.0.113.5", "Phone Browser 1.0")
    assert row["consent_at"] is not None
    assert live.http.post(mail.confirm_url).status_code == 200   # twice: still fine


def test_an_old_confirm_link_does_not_undo_a_later_unsubscribe(live):
    subscribe(live)
    [mail] = wait_for_mails(outbox(live), 1)
    live.http.post(mail.confirm_url)
    live.http.post(mail.unsubscribe_url)
    r = live.http.post(mail.confirm_url)
    assert r.status_code == 409
    assert state(live)["status"] == "unsubscribed"


def test_a_reader_who_left_comes_back_through_the_mail(live):
    make_member(live, ANN, Status.UNSUBSCRIBED)
    subscribe(live)
    [mail] = wait_for_mails(outbox(live), 1)
    assert state(live)["status"] == "unsubscribed"
    assert live.http.post(mail.confirm_url).status_code == 200
    assert state(live)["status"] == "active"


ONE_CLICK_POSTS = [
    # (description, request keyword arguments) - RFC 8058: any of these unsubscribes at once
    ("gmail form-urlencoded", {"content": b"List-Unsubscribe=One-Click",
                               "headers": {"content-type": "application/x-www-form-urlencoded"}}),
    ("multipart", {"files": {"List-Unsubscribe": (None, "One-Click")}}),
    ("no body", {}),
    ("json", {"json": {"whatever": True}}),
    ("garbage multipart", {"content": b"--x\r\nbroken",
                           "headers": {"content-type": "multipart/form-data; boundary=x"}}),
    ("the page's button", {"data": {}}),
]


@pytest.mark.parametrize("label, kwargs", ONE_CLICK_POSTS, ids=[c[0] for c in ONE_CLICK_POSTS])
def test_one_click_unsubscribe(live, label, kwargs):
    sid, lid = make_member(live, ANN, Status.ACTIVE)
    url = f"/unsubscribe/{link(live, 'unsubscribe', sid, lid)}"
    assert live.http.get(url).status_code == 200 and state(live)["status"] == "active"
    for said in ("You are unsubscribed", "Already unsubscribed"):   # idempotent: clients retry
        r = live.http.post(url, **kwargs)
        assert r.status_code == 200, r.text               # never a redirect (RFC 8058 section 3.2)
        assert said in r.text and "CRANK Call" in r.text and f"/subscribe?list={LIST}" in r.text
    assert state(live)["status"] == "unsubscribed"
    with live.web.engine.connect() as conn:
        rows = conn.execute(select(history.c.new_status).where(
            history.c.subscriber_id == sid, history.c.new_status == "unsubscribed")).all()
    assert len(rows) == 1


def _forged(live, sid, lid):
    return "WzEsMV0.forged.signature"


def _tampered(live, sid, lid):
    token = link(live, "unsubscribe", sid, lid)
    return token[:-2] + ("AA" if not token.endswith("AA") else "BB")


def _other_secret(live, sid, lid):
    return link(live, "unsubscribe", sid, lid, "another-secret-entirely-000000")


def _wrong_purpose(live, sid, lid):
    return link(live, "confirm", sid, lid)


BAD_UNSUBSCRIBE = [_forged, _tampered, _other_secret, _wrong_purpose]


@pytest.mark.parametrize("forge", BAD_UNSUBSCRIBE, ids=lambda f: f.__name__.strip("_"))
def test_bad_unsubscribe_tokens_are_4xx_and_change_nothing(live, forge):
    sid, lid = make_member(live, ANN, Status.ACTIVE)
    token = forge(live, sid, lid)
    for method in ("GET", "POST"):
        r = live.http.request(method, f"/unsubscribe/{token}", content=b"List-Unsubscribe=One-Click")
        assert r.status_code == 400 and "Nothing was changed" in r.text
    assert state(live)["status"] == "active"


def test_expired_and_wrong_purpose_confirm_tokens(live):
    subscribe(live)
    wait_for_mails(outbox(live), 1)
    row = state(live)
    sid, lid = row["subscriber_id"], row["list_id"]
    old = link(live, "confirm", sid, lid, now=time.time() - 8 * 86400)   # made 8 days ago
    for token in (old, link(live, "unsubscribe", sid, lid), "garbage"):
        assert live.http.post(f"/confirm/{token}").status_code == 400
    assert state(live)["status"] == "unconfirmed"


def test_a_burst_of_one_clicks_all_land_once(live):
    from concurrent.futures import ThreadPoolExecutor

    tokens = []
    for i in range(60):
        sid, lid = make_member(live, f"burst{i}@example.com", Status.ACTIVE)
        tokens.append(link(live, "unsubscribe", sid, lid))

    def one_click(token):
        return live.http.post(f"/unsubscribe/{token}", content=b"List-Unsubscribe=One-Click").status_code

    with ThreadPoolExecutor(20) as pool:
        codes = list(pool.map(one_click, tokens + tokens[:10]))       # and some retries
    assert codes == [200] * 70
    with live.web.engine.connect() as conn:
        changes = conn.execute(select(history.c.subscriber_id).where(
            history.c.new_status == "unsubscribed")).scalars().all()
    assert len(changes) == len(set(changes)) == 60


def test_group_commit_isolates_a_failing_write(live):
    import threading

    from subscribers.models import lists

    gate = threading.Event()
    web = live.web
    blocker = web.batch.submit(lambda conn: gate.wait(5))          # holds the writer for a moment

    def rename(conn, title):
        conn.execute(lists.update().where(lists.c.name == LIST).values(title=title))
        return title

    def boom(conn):
        raise RuntimeError("this write fails")

    queued = [web.batch.submit(rename, "first"), web.batch.submit(boom), web.batch.submit(rename, "last")]
    gate.set()
    assert blocker.result(5) is True
    assert queued[0].result(5) == "first" and queued[2].result(5) == "last"
    with pytest.raises(RuntimeError, match="this write fails"):
        queued[1].result(5)
    with web.engine.connect() as conn:
        assert conn.execute(select(lists.c.title).where(lists.c.name == LIST)).scalar() == "last"


@pytest.mark.parametrize("typed, problem", [
    ("ann@example.com", None),
    ("  Ann@Example.COM ", None),
    ("ann@bücher.example", None),
    ("jöhn@example.com", "non-ASCII characters before the @"),
    ("ann@", "does not look like an email address"),
    ("ann example.com", "does not look like an email address"),
])
def test_address_problem_follows_the_stores_rules(typed, problem):
    from mailer.web.addresses import AddressRules, address_problem

    found = address_problem(typed, AddressRules())
    said = found.message if found else None
    assert said is None if problem is None else problem in said
