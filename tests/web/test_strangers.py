"""The web service under a stranger's hand (issue 23): a login flood does not stall the readers'
one-click unsubscribes, on SQLite and PostgreSQL. Nothing here measures time: the tests show the
password check holds no lock and no transaction, and that no more checks run at once than allowed."""

from __future__ import annotations

import dataclasses
import os
import sys
import threading

import httpx
import pytest
from sqlalchemy import select

from subscribers import store
from subscribers.models import Status, memberships
from subscribers.tokens import make_token
from tests.web.admin_helpers import PASSWORD, USER, add_user, form_token
from tests.web.conftest import LIST, SECRET, Live
from tests.web.live import free_socket, serve_in_thread

HTML = {"accept": "text/html"}


@pytest.fixture
def live_db(web_settings, db_url):
    """The `live` fixture's app, on SQLite and on PostgreSQL, with room for many login attempts."""
    from mailer.web import create_app

    sock = free_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = dataclasses.replace(
        web_settings, newsletter=dataclasses.replace(web_settings.newsletter, base_url=url),
        database=dataclasses.replace(web_settings.database, url=db_url),
        web=dataclasses.replace(web_settings.web, admin_login_burst=1000, admin_login_per_hour=100_000,
                                admin_login_checks=2))
    app = create_app(settings)
    with app.state.web.engine.begin() as conn:
        store.create_list(conn, LIST, title="CRANK Call")
    with serve_in_thread(app, sock=sock), httpx.Client(base_url=url, timeout=30,
                                                       follow_redirects=False) as http:
        yield Live(url, app, settings, http)


def members(live, n: int) -> list[tuple[int, str]]:
    """n active members and their unsubscribe tokens."""
    from subscribers.links import membership_key

    found = []
    with live.web.engine.begin() as conn:
        lst = store.get_list(conn, LIST)
        for i in range(n):
            sid = store.add_subscriber(conn, f"reader{i}@example.com", lst.id, status=Status.ACTIVE,
                                       secret=SECRET).subscriber_id
            found.append((sid, make_token(SECRET, "unsubscribe", sid, lst.id, membership_key(conn, sid, lst.id))))
    return found


def one_click(live, token: str) -> int:
    return live.http.post(f"/unsubscribe/{token}", content=b"List-Unsubscribe=One-Click").status_code


def statuses(live, ids) -> set[str]:
    with live.web.engine.connect() as conn:
        return set(conn.execute(select(memberships.c.status).where(memberships.c.subscriber_id.in_(ids))).scalars())


def attempt(url: str, name: str, password: str) -> httpx.Response:
    with httpx.Client(base_url=url, timeout=60) as client:
        page = client.get("/admin/login", headers=HTML)
        return client.post("/admin/login", data={"username": name, "password": password,
                                                 "csrf": form_token(page.text)})


def test_the_password_check_holds_no_lock_and_no_connection(live_db, monkeypatch):
    """While a login's argon2 check runs, a one-click unsubscribe goes through (on SQLite the
    writer lock is free, on PostgreSQL no connection is held), and the login then succeeds."""
    from mailer.web.admin import login as login_module

    add_user(live_db)
    [(sid, token)] = members(live_db, 1)
    checking, go = threading.Event(), threading.Event()
    real = login_module.check_password_hash

    def held(found, password):
        checking.set()
        assert go.wait(60), "the test never let the check finish"
        return real(found, password)

    monkeypatch.setattr(login_module, "check_password_hash", held)
    answers: list[httpx.Response] = []
    flood = threading.Thread(target=lambda: answers.append(attempt(live_db.url, USER, PASSWORD)))
    flood.start()
    try:
        assert checking.wait(60)
        writer = live_db.web.exclusive()
        assert not (isinstance(writer, type(threading.Lock())) and writer.locked())
        assert live_db.web.engine.pool.checkedout() == 0      # (the unsubscribe below takes one)
        assert one_click(live_db, token) == 200
        assert statuses(live_db, [sid]) == {"unsubscribed"}
    finally:
        go.set()
        flood.join(60)
    assert answers[0].status_code == 303                       # logged in after all


def test_over_the_bound_a_login_is_refused_at_once_with_retry_after(live_db, monkeypatch):
    """One login more than `admin_login_checks` is refused before it reads the database."""
    from mailer.web.admin import login as login_module

    checks = live_db.app.state.admin.checks
    add_user(live_db)
    reads: list[str] = []
    real = login_module.stored_password
    monkeypatch.setattr(login_module, "stored_password", lambda conn, name: reads.append(name) or real(conn, name))
    assert checks.enter() and checks.enter() and not checks.enter()   # both slots taken
    try:
        busy = attempt(live_db.url, USER, PASSWORD)
    finally:
        checks.leave()
        checks.leave()
    assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
    assert "checking other logins" in busy.text
    assert reads == []                                                 # refused before any read
    assert "content-security-policy" in busy.headers and busy.headers["cache-control"] == "no-store"
    assert attempt(live_db.url, USER, PASSWORD).status_code == 303   # its token was given back
    assert reads == [USER]


def test_a_full_gate_answers_at_the_door_before_the_form_is_read(live_db):
    """With every check slot taken, a login post is answered 503 before routing: even one with
    no CSRF token or no form at all gets the busy page; once a
    slot is free the same post meets the route again."""
    checks = live_db.app.state.admin.checks
    bare = {"username": "anyone", "password": "anything"}             # no csrf field
    assert checks.enter() and checks.enter()
    try:
        busy = live_db.http.post("/admin/login", data=bare)
        empty = live_db.http.post("/admin/login", content=b"\xff" * 10)
        page = live_db.http.get("/admin/login", headers=HTML)          # the form itself still answers
    finally:
        checks.leave()
        checks.leave()
    assert (busy.status_code, empty.status_code, page.status_code) == (503, 503, 200)
    assert "checking other logins" in busy.text and busy.headers["retry-after"] == "1"
    assert live_db.http.post("/admin/login", data=bare).status_code == 403      # the route: no CSRF token


def nice_of(tid: int) -> int:
    """A thread's nice value as the kernel holds it: field 19 of /proc/self/task/TID/stat."""
    with open(f"/proc/self/task/{tid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[16])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
def test_the_password_check_runs_at_the_lowest_priority_and_nothing_else_does(live_db, monkeypatch):
    """The argon2 check runs on a thread of nice 19, so on a busy machine the kernel gives the
    threads that answer unsubscribes the CPU first; the thread that read the user's hash (the
    shared pool that serves readers too) and the process keep their priority, and the login
    still succeeds."""
    from mailer.web.admin import login as login_module

    add_user(live_db)
    seen: dict[str, tuple[int, int]] = {}
    read, check = login_module.stored_password, login_module.check_password_hash

    def reading(conn, name):
        tid = threading.get_native_id()
        seen["read"] = (tid, nice_of(tid))
        return read(conn, name)

    def checking(found, password):
        tid = threading.get_native_id()
        seen["check"] = (tid, nice_of(tid))
        return check(found, password)

    monkeypatch.setattr(login_module, "stored_password", reading)
    monkeypatch.setattr(login_module, "check_password_hash", checking)
    before = nice_of(threading.get_native_id())
    assert before < 19
    assert attempt(live_db.url, USER, PASSWORD).status_code == 303
    assert seen["check"][1] == 19
    assert seen["read"][1] == before and seen["read"][0] != seen["check"][0]
    assert nice_of(threading.get_native_id()) == before and nice_of(os.getpid()) == before


def test_unsubscribes_succeed_during_a_login_flood(live_db):
    """Six threads keep posting wrong passwords; every one-click unsubscribe meanwhile lands,
    and never more than `admin_login_checks` (2) password checks ran at once."""
    add_user(live_db)
    readers = members(live_db, 30)
    done = threading.Event()
    codes: list[int] = []

    def flood(n: int) -> None:
        tries = 0
        while not done.is_set():             # names of their own: no delay slows the flood down
            tries += 1
            codes.append(attempt(live_db.url, f"{USER}{n}-{tries}", "not the password").status_code)

    threads = [threading.Thread(target=flood, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    try:
        while len(codes) < 6:                 # the flood is on before the first unsubscribe
            threading.Event().wait(0.05)
        answers = [one_click(live_db, token) for _, token in readers]
    finally:
        done.set()
        for t in threads:
            t.join(120)
    assert answers == [200] * len(readers)
    assert statuses(live_db, [sid for sid, _ in readers]) == {"unsubscribed"}
    assert set(codes) <= {401, 503} and 401 in codes
    assert 1 <= live_db.app.state.admin.checks.peak <= 2


ODD = ["nul\u0000inside", "lone \ud800 high", "lone \udfff low", "\u0000", "\ud83d"]


def test_a_signed_batch_with_unstorable_text_is_cleaned_and_applied(live_db, signer):
    """NUL and lone surrogates in every field of signed SendGrid events (JSON's \\u0000 and
    \\ud800 escapes): the post answers 200, the text is stored without them, and the batch's
    unsubscribe is applied."""
    import json
    import time

    from subscribers.policy import events as events_table
    from tests.events.signing import body

    [(sid, _)] = members(live_db, 1)
    now = int(time.time())
    posted = []
    for i, odd in enumerate(ODD):
        posted.append({"email": "reader0@example.com", "event": "delivered", "timestamp": now,
                       "sg_event_id": f"ev-{i}-{odd}", "sg_message_id": odd, "reason": odd, "response": odd,
                       "mailer_issue": odd, "mailer_ref": odd, odd: odd, "nested": {odd: [odd, float("nan")]}})
    posted.append({"email": "reader0@example.com\u0000", "event": "unsubscribe", "timestamp": now,
                   "sg_event_id": "ev-unsub\ud800", "mailer_issue": "2024-11\u0000"})
    raw = body(posted)
    assert b"\\u0000" in raw and b"\\ud800" in raw and b"NaN" in raw
    reply = live_db.http.post("/webhooks/sendgrid", content=raw,
                              headers={"content-type": "application/json", **signer.sign(raw)})
    assert reply.status_code == 200, reply.text
    assert reply.json()["stored"] == len(posted)
    assert statuses(live_db, [sid]) == {"unsubscribed"}
    with live_db.web.engine.connect() as conn:
        rows = conn.execute(select(events_table)).all()
    assert len(rows) == len(posted)
    for row in rows:
        text = json.dumps([row.event_id, row.detail, row.message_id, row.issue, row.send_ref, row.raw],
                          ensure_ascii=False)
        assert "\x00" not in text and not any("\ud800" <= ch <= "\udfff" for ch in text)
    assert {row.issue for row in rows} >= {"nulinside", "lone \ufffd high", "2024-11"}
    again = live_db.http.post("/webhooks/sendgrid", content=raw,          # a replay: stored once
                              headers={"content-type": "application/json", **signer.sign(raw)})
    assert again.status_code == 200 and again.json()["stored"] == 0


@pytest.mark.parametrize("given, stored", [
    ("plain", "plain"),
    ("a\u0000b", "ab"),
    ("a\ud800b\udc00", "a\ufffdb\ufffd"),
    ("\U0001f600", "\U0001f600"),                                   # a real pair stays
    ({"k\u0000": ["\ud800", 1, 2.5, float("inf"), None, True]}, {"k": ["\ufffd", 1, 2.5, None, None, True]}),
])
def test_storable(given, stored):
    from subscribers.events import storable

    assert storable(given) == stored


# ---------------------------------------------------------------- admin uploads: a private folder

def _upload(live, text: str = "email\nann@example.com\n"):
    from tests.web.admin_helpers import login, page_token

    add_user(live)
    client = login(live)
    client.headers.update(HTML)
    token = page_token(client)
    dry = client.post("/admin/lists/crank/import", data={"csrf": token},
                      files={"file": ("audience.csv", text.encode(), "text/csv")})
    assert dry.status_code == 200, dry.text
    return client, token, dry.text.split('name="upload" value="')[1].split('"')[0]


def test_uploads_live_in_a_private_folder_made_by_mkdtemp(live, tmp_path, monkeypatch):
    import os
    import stat
    import tempfile

    from mailer.web.admin import lists

    shared = tmp_path / "mailer-admin-uploads"                # what another local user made first
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.setattr(lists, "_private", [])
    _, _, upload = _upload(live)
    folder = lists.uploads()
    found = os.lstat(folder)
    assert folder != shared and folder.parent == tmp_path and folder.name.startswith("mailer-admin-uploads-")
    assert stat.S_IMODE(found.st_mode) == 0o700 and found.st_uid == os.geteuid()
    assert list(shared.iterdir()) == [] and (folder / upload / "audience.csv").is_file()


@pytest.mark.parametrize("tamper", ["file", "folder", "widened"])
def test_an_upload_swapped_before_apply_is_refused(live, tmp_path, monkeypatch, tamper):
    import os

    from mailer.web.admin import lists
    from tests.web.test_admin_pages import members as members_of

    monkeypatch.setattr(lists, "_private", [])
    client, token, upload = _upload(live)
    folder = lists.uploads()
    other = tmp_path / "evil"
    other.mkdir()
    (other / "audience.csv").write_text("email\nmallory@example.com\n")
    if tamper == "file":                                      # the file became a symlink
        (folder / upload / "audience.csv").unlink()
        (folder / upload / "audience.csv").symlink_to(other / "audience.csv")
    elif tamper == "folder":                                  # the upload's folder became one
        for f in (folder / upload).iterdir():
            f.unlink()
        (folder / upload).rmdir()
        (folder / upload).symlink_to(other)
    else:                                                     # the private folder was opened to all
        os.chmod(folder, 0o777)
    applied = client.post("/admin/lists/crank/import/apply", data={"csrf": token, "upload": upload})
    assert applied.status_code == 410
    assert members_of(live) == {}
    if tamper == "widened":
        assert lists.uploads() != folder                      # a new private folder, the old not trusted


# ---------------------------------------------------------------- "email me a link": alike for anyone

def test_email_me_a_link_answers_every_address_alike_before_any_lookup(live):
    """The answer comes while the database is kept from the web process (its writer lock held by
    the test), for a reader and for a stranger alike: nothing about the address was looked up or
    written before it. Then the reader's mail goes out, and the stranger gets none."""
    from tests.web.test_audience_pages import link_mails, link_requests

    members(live, 1)                                          # reader0@example.com
    asked = ["reader0@example.com", "stranger@example.com", "READER0@example.com "]
    writer = live.web.exclusive()
    with writer:
        answers = []
        for i, address in enumerate(asked):
            with httpx.Client(base_url=live.url, timeout=30) as client:     # a connection each
                answers.append(client.post("/preferences", data={"email": address},
                                           headers={"x-forwarded-for": f"192.0.2.{30 + i}"}))
    assert [r.status_code for r in answers] == [200, 200, 200]
    assert len({r.text for r in answers}) == 1
    [mail] = link_mails(live, 1)
    assert mail["To"].addresses[0].addr_spec == "reader0@example.com"
    assert link_requests(live, "reader0@example.com") == 1   # the second ask came too soon: no mail


# ---------------------------------------------------------------- odd requests to the admin pages: 4xx, never 500

@pytest.mark.parametrize("path, code", [
    ("/admin/subscribers?q=%00", 400), ("/admin/subscribers?q=a%00b", 400), ("/admin/subscribers?q=@%00", 400),
    ("/admin/subscribers?q=%F4%8F%BF%BF", 200),                      # U+10FFFF: a search that finds nobody
    ("/admin/subscribers?q=a%F4%8F%BF%BF", 200), ("/admin/subscribers?q=%ED%9F%BF", 200),   # ... and U+D7FF
    ("/admin/subscribers?tag=%00", 400), ("/admin/subscribers.csv?q=%00", 400),
    ("/admin/subscribers/2147483648", 404), ("/admin/subscribers/9223372036854775808", 404),
    ("/admin/subscribers/99999999999999999999999", 404),
    ("/admin/audit?subscriber=9223372036854775808", 400), ("/admin/audit?subscriber=%00", 400),
    ("/admin/audit?user=%00", 400), ("/admin/audit?before=9223372036854775808", 400),
    ("/admin/lists/%00", 400), ("/admin/lists/crank?after=9223372036854775808", 400),
    ("/admin/lists/crank?before=-9223372036854775809", 400), ("/admin/lists/crank?status=%00", 400),
    ("/admin/issues/%00", 400),
])
def test_admin_pages_answer_odd_requests_with_4xx(live_db, path, code):
    from tests.web.admin_helpers import login

    add_user(live_db)
    reply = login(live_db).get(path, headers=HTML)
    assert reply.status_code == code, reply.text[-300:]


@pytest.mark.parametrize("text, after", [
    ("ab", "ac"), ("a\U0010ffff", "b"), ("\U0010ffff\U0010ffff", None), ("a\ud7ff", "a\ue000"),
])
def test_the_prefix_range_never_passes_the_last_character(text, after):
    from subscribers.search import _next_prefix

    assert _next_prefix(text) == after


# ---------------------------------------------------------------- logging out ends the session on the server

def test_logout_ends_the_session_on_the_server(live_db):
    from tests.web.admin_helpers import login, page_token

    add_user(live_db)
    client = login(live_db)
    stolen = httpx.Client(base_url=live_db.url, cookies={"mailer_admin": client.cookies["mailer_admin"]})
    assert stolen.get("/admin", headers=HTML).status_code == 200          # a copy works like the original
    assert client.post("/admin/logout", data={"csrf": page_token(client)}).status_code == 303
    assert stolen.get("/admin", headers=HTML).status_code == 303          # ... until the user logs out
    assert stolen.get("/admin", headers={"accept": "application/json"}).status_code == 401
    again = login(live_db)                                                # a new login works
    assert again.get("/admin", headers=HTML).status_code == 200
    assert stolen.get("/admin", headers=HTML).status_code == 303


def test_the_webhook_does_not_remember_a_send_that_does_not_exist_yet(live_db):
    """An event can come before its send's row is visible (another worker, a replica): "no such
    send" is not kept, so the same ref names the list once the send exists."""
    from datetime import UTC, datetime

    from mailer.send import ledger
    from subscribers.events import DeliveryEvent, EventType
    from subscribers.store import recipients_select

    [(sid, _)] = members(live_db, 1)
    event = DeliveryEvent(EventType.UNSUBSCRIBED, "reader0@example.com", datetime.now(UTC), "sendgrid-webhook",
                          send_ref=ledger.delivery_ref(1, sid, "k"))
    assert live_db.web.read(live_db.web.list_for, event) is None            # no send yet
    with live_db.web.engine.begin() as conn:
        list_id = store.get_list(conn, LIST).id
        send_id = ledger.create_send(conn, issue="2024-11", list_id=list_id, list_name=LIST, subject="S",
                                     backend="outbox", recipients=recipients_select(list_id))
    assert send_id == 1
    assert live_db.web.read(live_db.web.list_for, event) == list_id


# ---------------------------------------------------------------- login limits: per client and user, growing delay

def test_a_strangers_wrong_passwords_do_not_lock_the_user_out(live):
    from tests.web.admin_helpers import login

    add_user(live)
    stranger = {"x-forwarded-for": "198.51.100.66"}
    codes = []
    with httpx.Client(base_url=live.url, timeout=30) as client:
        for _ in range(8):
            page = client.get("/admin/login", headers={**HTML, **stranger})
            codes.append(client.post("/admin/login", headers=stranger, data={
                "username": USER, "password": "guessing again", "csrf": form_token(page.text)}).status_code)
    assert codes[:4] == [401] * 4 and codes[4] in (401, 429) and codes[5:] == [429] * 3   # (the 5th: its delay)
    assert login(live).get("/admin", headers=HTML).status_code == 200     # the user, from elsewhere


def test_the_delay_grows_after_three_failures_and_a_success_clears_it():
    from mailer.web.ratelimit import Backoff

    now = [1000.0]
    backoff = Backoff(free=3, most=10, clock=lambda: now[0])
    key = ("192.0.2.1", "192.0.2.1 editor")
    waits = []
    for _ in range(8):
        backoff.failed(key)
        waits.append(backoff.wait(key))
    assert waits == [0, 0, 0, 1, 2, 4, 8, 10]
    assert backoff.wait(("192.0.2.2", "192.0.2.2 editor")) == 0           # another client: no delay
    now[0] += 9.5
    assert backoff.wait(key) == 1
    backoff.succeeded(key)
    assert backoff.wait(key) == 0
    small = Backoff(max_keys=2, clock=lambda: now[0])
    for n in range(3):
        small.failed((str(n),))
    assert len(small._keys) == 2


@pytest.mark.parametrize("ip, key", [
    ("192.0.2.1", "192.0.2.1"),
    ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
    ("2001:db8:1:2::ffff", "2001:db8:1:2::/64"),
    ("::ffff:192.0.2.9", "192.0.2.9"),                    # IPv4 written as IPv6: the IPv4 address
    ("not an address", "not an address"), (None, "unknown"),
])
def test_rate_limits_key_ipv6_clients_by_their_64(ip, key):
    from mailer.web.ratelimit import client_key

    assert client_key(ip) == key


def test_ipv6_clients_of_one_64_share_a_limit(live):
    def ask(ip: str) -> int:
        return live.http.post("/preferences", data={"email": "nobody@example.com"},
                              headers={"x-forwarded-for": ip}).status_code

    assert [ask(f"2001:db8:aa:bb::{n}") for n in range(1, 6)] == [200] * 5   # burst 5, five addresses
    assert ask("2001:db8:aa:bb:ffff::1") == 429                                # the same /64
    assert ask("2001:db8:aa:bc::1") == 200                                     # the next /64


def test_no_redirect_loop_after_a_password_reset(live):
    """The old password's cookie is still signed, but its stamp is not the user's any more: the
    login form shows itself (and drops the cookie) instead of sending the browser back to /admin."""
    from mailer import admin_users
    from tests.web.admin_helpers import login

    add_user(live)
    client = login(live)
    with live.web.engine.begin() as conn:                    # `mailer admin remove-user` + `add-user`
        admin_users.remove_user(conn, USER)
        admin_users.add_user(conn, USER, "a brand new password")
    first = client.get("/admin", headers=HTML)
    assert first.status_code == 303 and first.headers["location"].startswith("/admin/login?next=")
    form = client.get(first.headers["location"], headers=HTML)
    assert form.status_code == 200 and 'name="password"' in form.text
    assert "mailer_admin" not in client.cookies
    assert login(live, USER, "a brand new password").get("/admin", headers=HTML).status_code == 200


# ---------------------------------------------------------------- an old confirmation link and a stranger's new request

def test_an_old_confirm_link_does_not_revive_a_reader_when_a_stranger_asks_again(live):
    """The reader confirms, then unsubscribes. A stranger posts /subscribe with their address: a new
    request, and a new mail to the reader. The old link (its request came before the unsubscribe)
    changes nothing; only the new mail's link, the reader's own answer to the new request, does."""
    import time

    from tests.web.outbox_mail import wait_for_mails
    from tests.web.test_readers import link, state, subscribe

    reader = "ann@example.com"
    subscribe(live, reader)
    [first] = wait_for_mails(live.settings.delivery.outbox_dir, 1)
    assert live.http.post(first.confirm_url).status_code == 200
    time.sleep(1.1)                                           # (links carry their time in whole seconds)
    assert live.http.post(first.unsubscribe_url).status_code == 200
    time.sleep(1.1)
    subscribe(live, reader, ip="203.0.113.99")                # the stranger (no second mail so soon)
    assert live.http.post(first.confirm_url).status_code == 409
    assert state(live, reader)["status"] == "unsubscribed"
    row = state(live, reader)
    fresh = link(live, "confirm", row["subscriber_id"], row["list_id"])   # a link made for the new request
    assert live.http.post(f"/confirm/{fresh}").status_code == 200
    assert state(live, reader)["status"] == "active"


# ---------------------------------------------------------------- the footer's never-expiring preferences link

def test_the_footer_link_can_leave_and_show_lists_but_not_join_rename_or_allow_tracking(live):
    """A forwarded issue hands its footer link to whoever reads it: it shows the reader's lists and
    takes them off lists, but joining a list, a new name or allowing click counting needs a fresh
    link, mailed to the reader."""
    from tests.web.test_audience_pages import checkboxes
    from tests.web.test_readers import link

    with live.web.engine.begin() as conn:
        store.create_list(conn, "digest", "The Digest")
        lst = store.get_list(conn, LIST)
        sid = store.add_subscriber(conn, "ann@example.com", lst.id, name="Ann", status=Status.ACTIVE,
                                   secret=SECRET).subscriber_id
    footer = link(live, "unsubscribe", sid, lst.id)
    page = live.http.get(f"/preferences/{footer}")
    assert page.status_code == 200 and "ann@example.com" in page.text and "get a fresh link" in page.text
    assert checkboxes(page.text) == {"crank": True, "digest": False}
    assert 'value="digest" disabled>' in page.text and "readonly" in page.text
    tried = live.http.post(f"/preferences/{footer}", data={"list": ["crank", "digest"], "name": "Mallory"})
    assert tried.status_code == 200 and "Saved; nothing changed." in tried.text
    assert live.http.post(f"/preferences/{footer}/tracking", data={"tracking": "off"}).status_code == 200
    allowed = live.http.post(f"/preferences/{footer}/tracking", data={"tracking": "on"})
    assert allowed.status_code == 200 and "Saved; nothing changed." in allowed.text
    with live.web.engine.connect() as conn:
        reader = store.get_subscriber(conn, "ann@example.com")
    assert (reader.name, reader.no_tracking) == ("Ann", True)
    left = live.http.post(f"/preferences/{footer}", data={"name": "Mallory"})    # crank unticked: leaves
    assert "Saved: left CRANK Call." in left.text
    assert statuses(live, [sid]) == {"unsubscribed"}
    fresh = link(live, "preferences", sid, lst.id)                              # the reader's own, by mail
    joined = live.http.post(f"/preferences/{fresh}", data={"list": ["digest"], "name": "Ann Lee"})
    assert "joined The Digest" in joined.text and "name saved" in joined.text and "get a fresh link" not in joined.text
