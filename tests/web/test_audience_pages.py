"""The list picker, the preferences page and its fresh link, pages that know their state, the
archive as pages of the site and its Atom feed: over real HTTP, with the store checked after."""

from __future__ import annotations

import email
import email.policy
import re
import shutil
import time

import pytest
from sqlalchemy import select

from subscribers import store
from subscribers.models import Action, Status, history, memberships, subscribers
from subscribers.tokens import make_token
from tests.web.conftest import LIST, SECRET
from tests.web.outbox_mail import wait_for_mails
from tests.web.test_readers import link

ANN = "ann@example.com"
IP = {"x-forwarded-for": "192.0.2.20"}


@pytest.fixture
def lists(live):
    """crank (from `live`), digest (public, with a description) and staff (private)."""
    with live.web.engine.begin() as conn:
        store.create_list(conn, "digest", "The Digest", "Links of the week, every Friday")
        store.create_list(conn, "staff", "Staff notes", "Internal", private=True)
    return live


def statuses(live, address: str = ANN) -> dict[str, str]:
    from subscribers.models import lists as lists_table

    with live.web.engine.connect() as conn:
        rows = conn.execute(select(lists_table.c.name, memberships.c.status)
                            .join_from(memberships, lists_table, memberships.c.list_id == lists_table.c.id)
                            .join(subscribers, memberships.c.subscriber_id == subscribers.c.id)
                            .where(subscribers.c.email == address)).all()
    return dict(rows)


def member(live, list_name: str, address: str = ANN, status: Status = Status.ACTIVE) -> tuple[int, int]:
    with live.web.engine.begin() as conn:
        lst = store.get_list(conn, list_name)
        added = store.add_subscriber(conn, address, lst.id, name="Ann", status=Status.ACTIVE)
        if status is not Status.ACTIVE:
            store.set_status(conn, added.subscriber_id, lst.id, status, "test")
    return added.subscriber_id, lst.id


def checkboxes(page: str) -> dict[str, bool]:
    """{list name: checked} of the page's list checkboxes."""
    found = re.findall(r'<input type="checkbox" id="list-[^"]+" name="list" value="([^"]+)"([^>]*)>', page)
    return {name: " checked" in rest for name, rest in found}


# --- /subscribe: the picker ------------------------------------------------------------------------

PICKER = [  # (query, status, checkboxes)
    ("", 200, {"crank": False, "digest": False}),
    ("?list=digest", 200, {"crank": False, "digest": True}),
    ("?list=staff", 404, {}),                                  # private: as if it did not exist
    ("?list=nope", 404, {}),
]


@pytest.mark.parametrize("query, status, boxes", PICKER)
def test_picker_offers_public_lists(lists, query, status, boxes):
    r = lists.http.get(f"/subscribe{query}")
    assert r.status_code == status
    assert checkboxes(r.text) == boxes
    assert "Staff notes" not in r.text
    if status == 200:
        assert "Links of the week, every Friday" in r.text and "The Digest" in r.text


def test_one_public_list_needs_no_choice(live):
    r = live.http.get("/subscribe")
    assert r.status_code == 200 and checkboxes(r.text) == {}
    assert '<input type="hidden" name="list" value="crank">' in r.text
    assert live.http.post("/subscribe", data={"email": ANN}, headers=IP).status_code == 200
    assert statuses(live) == {"crank": "unconfirmed"}


def test_two_lists_chosen_one_mail_one_click_consent_per_list(lists):
    r = lists.http.post("/subscribe", data={"list": ["crank", "digest"], "email": ANN}, headers=IP)
    assert r.status_code == 200 and "that one click starts all the lists you chose" in r.text
    assert statuses(lists) == {"crank": "unconfirmed", "digest": "unconfirmed"}
    [mail] = wait_for_mails(lists.settings.delivery.outbox_dir, 1)
    assert mail.message["Subject"] == "Confirm your subscription to CRANK Call and The Digest"
    assert "that confirms every list at once" in mail.text
    path = mail.confirm_url.removeprefix(lists.url)
    page = lists.http.get(path)
    assert "<li><strong>CRANK Call</strong></li>" in page.text and "<li><strong>The Digest</strong></li>" in page.text
    assert statuses(lists) == {"crank": "unconfirmed", "digest": "unconfirmed"}      # a GET confirms nothing
    done = lists.http.post(path, headers={**IP, "user-agent": "Reader/1.0"})
    assert done.status_code == 200 and "You are subscribed" in done.text
    assert statuses(lists) == {"crank": "active", "digest": "active"}
    with lists.web.engine.connect() as conn:                       # each list its own consent record
        rows = conn.execute(select(memberships.c.consent_source, memberships.c.consent_ip,
                                   memberships.c.consent_user_agent, memberships.c.consent_at)).all()
        confirms = conn.execute(select(history.c.list_id).where(history.c.action == Action.CONFIRM.value)).all()
    assert [tuple(row[:3]) for row in rows] == [("web", "192.0.2.20", "Reader/1.0")] * 2
    assert all(row.consent_at is not None for row in rows) and len(confirms) == 2
    again = lists.http.post(path)
    assert "Already confirmed" in again.text and "CRANK Call and The Digest" in again.text


def test_the_confirmation_mails_one_click_leaves_every_list_it_named(lists):
    asked_for = lists.http.post("/subscribe", data={"list": ["crank", "digest"], "email": ANN}, headers=IP)
    assert asked_for.status_code == 200
    [mail] = wait_for_mails(lists.settings.delivery.outbox_dir, 1)
    path = mail.unsubscribe_url.removeprefix(lists.url)
    asked = lists.http.get(path)
    assert "You will no longer receive <strong>CRANK Call and The Digest</strong>" in asked.text
    done = lists.http.post(path, data={"List-Unsubscribe": "One-Click"})
    assert done.status_code == 200 and "You are unsubscribed" in done.text
    assert statuses(lists) == {"crank": "unsubscribed", "digest": "unsubscribed"}
    assert "Already unsubscribed" in lists.http.post(path).text


def test_a_forgotten_reader_asking_for_two_lists_comes_back_on_both(lists):
    with lists.web.engine.begin() as conn:
        sid = store.add_subscriber(conn, ANN, store.get_list(conn, "crank").id).subscriber_id
        store.forget(conn, ANN, SECRET)
    r = lists.http.post("/subscribe", data={"list": ["crank", "digest"], "email": ANN}, headers=IP)
    assert r.status_code == 200 and statuses(lists) == {}            # nothing stored before the click
    [mail] = wait_for_mails(lists.settings.delivery.outbox_dir, 1)
    assert "/confirm/r." in mail.confirm_url                          # the request travels sealed
    confirmed = lists.http.post(mail.confirm_url.removeprefix(lists.url), headers=IP)
    assert confirmed.status_code == 200 and "You are subscribed" in confirmed.text
    assert statuses(lists) == {"crank": "active", "digest": "active"} and sid


@pytest.mark.parametrize("chosen, status, said", [
    ([], 400, "Please choose at least one list."),
    (["staff"], 404, "No such list"),
    (["crank", "staff"], 404, "No such list"),
])
def test_picker_refusals_store_nothing(lists, chosen, status, said):
    r = lists.http.post("/subscribe", data={"list": chosen, "email": ANN}, headers=IP)
    assert r.status_code == status and said in r.text
    assert statuses(lists) == {}


# --- pages that know their state ------------------------------------------------------------------

def test_a_used_confirmation_link_says_already_confirmed(live):
    assert live.http.post("/subscribe", data={"list": LIST, "email": ANN}, headers=IP).status_code == 200
    [mail] = wait_for_mails(live.settings.delivery.outbox_dir, 1)
    path = mail.confirm_url.removeprefix(live.url)
    assert "You are subscribed" in live.http.post(path).text
    for again in (live.http.get(path), live.http.post(path)):
        assert again.status_code == 200
        assert "Already confirmed" in again.text and "CRANK Call" in again.text


def test_a_used_unsubscribe_link_says_so(live):
    sid, lid = member(live, LIST)
    path = f"/unsubscribe/{link(live, 'unsubscribe', sid, lid)}"
    assert "Unsubscribe from" in live.http.get(path).text
    assert "You are unsubscribed" in live.http.post(path).text
    page = live.http.get(path).text
    assert "Already unsubscribed" in page and "<strong>CRANK Call</strong>" in page
    assert f'href="/preferences/{path.rsplit("/", 1)[1]}"' in page


# --- /preferences/{token} ----------------------------------------------------------------------------

def test_preferences_show_lists_and_save_choices_and_name(lists):
    sid, lid = member(lists, LIST)
    token = link(lists, "preferences", sid, lid)        # a fresh link by mail (the footer's: test_strangers.py)
    page = lists.http.get(f"/preferences/{token}")
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    assert checkboxes(page.text) == {"crank": True, "digest": False}      # staff: private, not a member
    assert "ann@example.com" in page.text and 'value="Ann"' in page.text

    saved = lists.http.post(f"/preferences/{token}", data={"list": ["digest"], "name": "Ann Lee"}, headers=IP)
    assert saved.status_code == 200
    assert "Saved: left CRANK Call, joined The Digest, name saved." in saved.text
    assert checkboxes(saved.text) == {"crank": False, "digest": True}
    assert statuses(lists) == {"crank": "unsubscribed", "digest": "active"}
    with lists.web.engine.connect() as conn:
        digest = conn.execute(select(memberships.c.consent_source, memberships.c.consent_ip)
                              .where(memberships.c.subscriber_id == sid, memberships.c.list_id != lid)).one()
        assert tuple(digest) == ("web", "192.0.2.20")                     # the reader's own consent
        assert conn.execute(select(subscribers.c.name).where(subscribers.c.id == sid)).scalar() == "Ann Lee"
    again = lists.http.post(f"/preferences/{token}", data={"list": ["digest"], "name": "Ann Lee"})
    assert "Saved; nothing changed." in again.text


def test_a_private_list_shows_to_its_members_only(lists):
    sid, lid = member(lists, "staff")
    page = lists.http.get(f"/preferences/{link(lists, 'unsubscribe', sid, lid)}").text
    assert checkboxes(page) == {"crank": False, "digest": False, "staff": True}
    forged = lists.http.post(f"/preferences/{link(lists, 'unsubscribe', sid, lid)}",
                             data={"list": ["staff", "ghost"]})
    assert forged.status_code == 200 and statuses(lists) == {"staff": "active"}   # unknown names: ignored


def test_a_bounced_reader_can_rename_but_not_rejoin(lists):
    sid, lid = member(lists, LIST)
    with lists.web.engine.begin() as conn:
        store.set_status(conn, sid, None, Status.BOUNCED, "test")
    token = link(lists, "preferences", sid, lid)
    page = lists.http.get(f"/preferences/{token}").text
    assert "Mail to this address bounced" in page and page.count(" disabled>") == 2
    saved = lists.http.post(f"/preferences/{token}", data={"list": ["crank", "digest"], "name": "Ann B"})
    assert "Saved: name saved." in saved.text and statuses(lists) == {"crank": "active"}
    with lists.web.engine.connect() as conn:
        assert conn.execute(select(subscribers.c.global_status).where(subscribers.c.id == sid)).scalar() == "bounced"


def test_leave_everything(lists):
    sid, lid = member(lists, LIST)
    member(lists, "digest")
    token = link(lists, "unsubscribe", sid, lid)
    r = lists.http.post(f"/preferences/{token}/leave")
    assert r.status_code == 200 and "You left every list" in r.text and "CRANK Call" in r.text
    assert statuses(lists) == {"crank": "unsubscribed", "digest": "unsubscribed"}
    assert "You were on no list" in lists.http.post(f"/preferences/{token}/leave").text


@pytest.mark.parametrize("token", ["garbage", make_token(SECRET, "confirm", 1, 1),
                                   make_token("another-secret-key-0123456789", "unsubscribe", 1, 1)],
                         ids=["garbage", "another-purpose", "another-key"])   # the same ids in every xdist worker
def test_a_bad_preferences_link_offers_a_fresh_one(live, token):
    for r in (live.http.get(f"/preferences/{token}"), live.http.post(f"/preferences/{token}", data={"name": "x"}),
              live.http.post(f"/preferences/{token}/leave")):
        assert r.status_code == 400 and 'href="/preferences"' in r.text and "Get a fresh link" in r.text


# --- the fresh link -------------------------------------------------------------------------------------

def link_mails(live, count: int) -> list:
    outbox = live.settings.delivery.outbox_dir
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = sorted(outbox.glob("preferences.*.eml")) if outbox.is_dir() else []
        if len(found) >= count:
            return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in found]
        time.sleep(0.05)
    raise AssertionError(f"expected {count} preferences mails in {outbox}")


def link_requests(live, address: str) -> int:
    with live.web.engine.connect() as conn:
        return len(conn.execute(select(history.c.id)
                                .join_from(history, subscribers, history.c.subscriber_id == subscribers.c.id)
                                .where(subscribers.c.email == address,
                                       history.c.action == Action.PREFERENCES_MAIL.value)).all())


def test_fresh_link_is_mailed_to_that_address_only_and_works(lists):
    member(lists, "digest")
    answers = [lists.http.post("/preferences", data={"email": address}, headers=IP)
               for address in ("nobody@example.com", "ANN@example.com", ANN)]
    assert [r.status_code for r in answers] == [200, 200, 200]
    assert len({r.text for r in answers}) == 1                 # the same answer, whatever the state
    [mail] = link_mails(lists, 1)                              # (looked up and mailed after the answer)
    assert link_requests(lists, ANN) == 1                       # the third came too soon: no mail
    assert mail["To"].addresses[0].addr_spec == ANN and mail["Subject"] == "Your CRANK Call preferences"
    text = mail.get_body(("plain",)).get_content()
    url = re.search(r"https?://\S+/preferences/[A-Za-z0-9_.\-]+", text).group(0)
    page = lists.http.get(url.removeprefix(lists.url))
    assert page.status_code == 200 and checkboxes(page.text) == {"crank": False, "digest": True}


def test_fresh_link_refuses_bad_addresses_and_floods(lists):
    bad = lists.http.post("/preferences", data={"email": "not an address"}, headers=IP)
    assert bad.status_code == 400 and "does not look like an email address" in bad.text
    codes = [lists.http.post("/preferences", data={"email": f"n{i}@example.com"},
                             headers={"x-forwarded-for": "192.0.2.99"}).status_code for i in range(8)]
    assert codes[:5] == [200] * 5 and codes[5:] == [429] * 3


def test_an_expired_fresh_link_says_so(lists):
    sid, lid = member(lists, LIST)
    old = time.time() - (lists.settings.web.confirm_link_days * 86400 + 60)
    token = make_token(SECRET, "preferences", sid, lid, now=old)
    r = lists.http.get(f"/preferences/{token}")
    assert r.status_code == 400 and "expired" in r.text


# --- every email's footer ---------------------------------------------------------------------------

def test_mails_link_to_the_preferences_page(live):
    assert live.http.post("/subscribe", data={"list": LIST, "email": ANN}, headers=IP).status_code == 200
    [mail] = wait_for_mails(live.settings.delivery.outbox_dir, 1)
    token = mail.unsubscribe_url.rsplit("/", 1)[1]
    assert f"{live.url}/preferences/{token}" in mail.html
    assert live.http.get(f"/preferences/{token}").status_code == 200


# --- the archive --------------------------------------------------------------------------------------

def sent(live, slug: str) -> None:
    from mailer.send.ledger import sends
    from subscribers.models import lists, utcnow

    with live.web.engine.begin() as conn:
        crank = conn.execute(lists.select().where(lists.c.name == "crank")).one().id
        conn.execute(sends.insert().values(issue=slug, list_id=crank, list_name="crank", subject=slug,
                                           backend="outbox", status="done", total=1, sent=1, started_at=utcnow()))


@pytest.fixture
def two_issues(live, repo):
    """November 2024 and a December issue made from it, both sent."""
    folder = live.settings.compose.issues_dir
    shutil.copy(repo / "issues" / "2024-11.md", folder / "2024-11.md")
    december = (repo / "issues" / "2024-11.md").read_text(encoding="utf-8")
    december = december.replace("date = 2024-11-01", "date = 2024-12-01").replace(
        "CRANK Call | November 2024", "CRANK Call | December 2024")
    december = re.sub(r'(?m)^preheader = ".*"$', 'preheader = "The December links, in one place"', december)
    (folder / "2024-12.md").write_text(december, encoding="utf-8")
    sent(live, "2024-11")
    sent(live, "2024-12")
    return live


def test_index_is_newest_first_with_dates_and_preheaders(two_issues):
    page = two_issues.http.get("/archive").text
    december, november = page.index("December 2024"), page.index("November 2024")
    assert december < november
    assert '<time datetime="2024-12-01">December 1, 2024</time>' in page
    assert '<p class="preheader">The December links, in one place</p>' in page
    assert 'rel="alternate" type="application/atom+xml"' in page


def test_issue_pages_link_previous_and_next(two_issues):
    november = two_issues.http.get("/archive/2024-11").text
    december = two_issues.http.get("/archive/2024-12").text
    assert 'rel="next" href="/archive/2024-12"' in november and 'rel="prev"' not in november
    assert 'rel="prev" href="/archive/2024-11"' in december and 'rel="next"' not in december


def test_feed_is_atom_with_full_content(two_issues):
    import feedparser

    r = two_issues.http.get("/archive/feed.xml")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/atom+xml")
    feed = feedparser.parse(r.content)
    assert feed.bozo == 0, feed.get("bozo_exception")
    assert feed.version == "atom10"
    assert feed.feed.title == "CRANK Call" and feed.feed.id == f"{two_issues.url}/archive"
    assert [e.title for e in feed.entries] == ["CRANK Call | December 2024", "CRANK Call | November 2024"]
    first = feed.entries[0]
    assert first.link == f"{two_issues.url}/archive/2024-12" and first.id == first.link
    assert first.summary == "The December links, in one place"
    assert first.updated_parsed[:3] == (2024, 12, 1)
    [content] = first.content
    assert content.type == "text/html" and len(content.value) > 5000
    assert "/unsubscribe/" not in content.value and "%%" not in content.value


def test_empty_feed_is_still_valid_atom(live):
    import feedparser

    feed = feedparser.parse(live.http.get("/archive/feed.xml").content)
    assert (feed.bozo, feed.version, feed.entries) == (0, "atom10", [])
