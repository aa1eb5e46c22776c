"""The admin as a daily workbench (issue 26), over HTTP: edit a subscriber, select and act, export
what you see, an issue's failures and sends, roles, the audit log, the second factor, and the
smaller things (login limits, Add to list, dark mode, the chart)."""

from __future__ import annotations

import csv
import io
import re
import shutil
from datetime import UTC, datetime

import pyotp
import pytest
from sqlalchemy import select, update

from tests.web.admin_helpers import PASSWORD, USER, add_user, form_token, login, page_token

HTML = {"accept": "text/html"}


def as_role(live, role: str, name: str = USER):
    from mailer import admin_users

    with live.web.engine.begin() as conn:
        admin_users.add_user(conn, name, PASSWORD, role)
    client = login(live, name)
    client.headers.update(HTML)
    return client


@pytest.fixture
def admin(live):
    live.admin = as_role(live, "owner")
    return live


def post(client, path: str, data: dict | list | None = None, **kw):
    token = page_token(client)
    if isinstance(data, list):                      # repeated fields (selected=1&selected=2)
        pairs: dict[str, list[str]] = {}
        for key, value in data:
            pairs.setdefault(key, []).append(value)
        return client.post(path, data={"csrf": token, **pairs}, **kw)
    return client.post(path, data={"csrf": token, **(data or {})}, **kw)


def people(live, n: int, list_name: str = "crank", tags: dict | None = None) -> list[int]:
    from subscribers import store
    from subscribers.tags import add_tags

    with live.web.engine.begin() as conn:
        lid = store.get_list(conn, list_name).id
        ids = [store.add_subscriber(conn, f"r{i:03}@example.com", lid, name=f"Reader {i}").subscriber_id
               for i in range(n)]
        for i, given in (tags or {}).items():
            add_tags(conn, ids[i], given)
    return ids


def audit_rows(live, **filters):
    from mailer import audit

    with live.web.engine.connect() as conn:
        return audit.entries(conn, limit=1000, **filters).rows


def status_of(live, address: str, list_name: str = "crank") -> str | None:
    from subscribers import store

    with live.web.engine.connect() as conn:
        who = store.find_subscriber(conn, address)
        if who is None:
            return None
        found = store.get_list(conn, list_name)
        own = store.membership_status(conn, who.id, found.id)
        return None if own is None else str(store.effective_status(own, who.global_status))


# ---------------------------------------------------------------- 1. a subscriber's page

def test_save_name_and_tags_then_add_to_list_and_the_history_names_the_admin(admin):
    from subscribers import store

    sid = people(admin, 1, tags={0: ["old"]})[0]
    with admin.web.engine.begin() as conn:
        store.create_list(conn, "digest")
    page = admin.admin.get(f"/admin/subscribers/{sid}")
    assert 'name="name"' in page.text and 'name="tags"' in page.text and ">Save</button>" in page.text
    saved = post(admin.admin, f"/admin/subscribers/{sid}", {"name": "Ann  Lee", "tags": "Press, vip ,"})
    assert saved.status_code == 200
    assert "Saved: name; tagged press, vip; untagged old." in saved.text
    assert 'value="press, vip"' in saved.text and 'value="Ann Lee"' in saved.text
    again = post(admin.admin, f"/admin/subscribers/{sid}", {"name": "Ann Lee", "tags": "press, vip"})
    assert "Nothing changed." in again.text
    bad = post(admin.admin, f"/admin/subscribers/{sid}", {"name": "x", "tags": "a" * 65})
    assert bad.status_code == 400 and "longer than 64" in bad.text

    added = post(admin.admin, f"/admin/subscribers/{sid}/add", {"list": "digest"})
    assert added.status_code == 303
    shown = admin.admin.get(added.headers["location"]).text
    assert "Added to digest." in shown and "Subscribed again" not in shown
    assert status_of(admin, "r000@example.com", "digest") == "active"
    assert "admin:editor" in shown                         # the history's source is the admin
    with admin.web.engine.connect() as conn:
        member = next(m for m in store.memberships_of(conn, sid) if m.list == "digest")
    assert member.consent_source == "admin"
    assert [e.action for e in audit_rows(admin, subscriber_id=sid)] == [
        "subscriber.add", "subscriber.untag", "subscriber.tag", "subscriber.edit"]


def test_resubscribing_someone_who_left_says_it_needs_their_consent(admin):
    sid = people(admin, 1)[0]
    post(admin.admin, f"/admin/subscribers/{sid}/unsubscribe", {"list": "crank"})
    page = admin.admin.get(f"/admin/subscribers/{sid}").text
    assert "needs their consent" in page and "left " in page
    asked = post(admin.admin, f"/admin/subscribers/{sid}/resubscribe", {"list": "crank"})
    assert "This needs their consent." in asked.text and "(admin:editor)" in asked.text
    assert status_of(admin, "r000@example.com") == "unsubscribed"
    done = post(admin.admin, f"/admin/subscribers/{sid}/resubscribe", {"list": "crank", "consent": "yes"})
    assert "they asked to come back" in admin.admin.get(done.headers["location"]).text
    assert status_of(admin, "r000@example.com") == "active"
    assert audit_rows(admin, subscriber_id=sid)[0].action == "subscriber.resubscribe"


# ---------------------------------------------------------------- 2. select and act

def test_filters_by_several_tags_and_status(admin):
    ids = people(admin, 6, tags={0: ["press", "vip"], 1: ["press"], 2: ["press", "vip"], 3: ["vip"]})
    post(admin.admin, f"/admin/subscribers/{ids[2]}/unsubscribe", {"list": "crank"})
    both = admin.admin.get("/admin/subscribers", params=[("tag", "press"), ("tag", "VIP")]).text
    assert "2 matches" in both and "r000@" in both and "r002@" in both and "r001@" not in both
    active = admin.admin.get("/admin/subscribers", params=[("tag", "press"), ("status", "active")]).text
    assert "2 matches" in active and "r002@" not in active
    everyone = admin.admin.get("/admin/subscribers").text
    assert "6 matches" in everyone and everyone.count('name="selected"') == 6
    assert admin.admin.get("/admin/subscribers?status=nonsense").status_code == 400
    assert admin.admin.get("/admin/subscribers?tag=a,").status_code == 200
    past_the_end = admin.admin.get(f"/admin/subscribers?tag=press&after={ids[-1]}").text
    assert "0 matches" not in past_the_end and "First page" in past_the_end and "No subscribers match" in past_the_end
    pages = admin.admin.get(f"/admin/subscribers?after={ids[1]}").text
    assert "r000@" not in pages and "r002@" in pages and f"before={ids[2]}" in pages


def test_act_on_the_rows_ticked(admin):
    from subscribers import store

    ids = people(admin, 4)
    with admin.web.engine.begin() as conn:
        store.create_list(conn, "digest")
    tagged = post(admin.admin, "/admin/subscribers/act",
                  [("action", "tag"), ("tag", "press"), ("selected", str(ids[0])), ("selected", str(ids[1]))])
    assert "Tagged 2 subscribers with press." in tagged.text
    again = post(admin.admin, "/admin/subscribers/act",
                 [("action", "tag"), ("tag", "press"), ("selected", str(ids[0])), ("selected", str(ids[2]))])
    assert "Tagged 1 subscriber with press; 1 had it already." in again.text
    untagged = post(admin.admin, "/admin/subscribers/act", [("action", "untag"), ("tag", "press"),
                                                            ("selected", str(ids[1]))])
    assert "Took press away from 1 subscriber." in untagged.text
    out = post(admin.admin, "/admin/subscribers/act", [("action", "unsubscribe"), ("list", "crank"),
                                                       ("selected", str(ids[3]))])
    assert "Unsubscribed 1 subscriber from crank." in out.text and status_of(admin, "r003@example.com") == \
        "unsubscribed"
    joined = post(admin.admin, "/admin/subscribers/act", [("action", "add_to_list"), ("list", "crank"),
                                                          ("selected", str(ids[3])), ("selected", str(ids[0]))])
    assert "Added 0 subscribers to crank; 1 were on it already; 1 left alone" in joined.text
    assert status_of(admin, "r003@example.com") == "unsubscribed"          # nothing comes back by accident
    digest = post(admin.admin, "/admin/subscribers/act", [("action", "add_to_list"), ("list", "digest"),
                                                          ("selected", str(ids[0]))])
    assert "Added 1 subscriber to digest." in digest.text
    for data, message in (([("action", "tag"), ("selected", str(ids[0]))], "Give the tag"),
                          ([("action", "add_to_list"), ("selected", str(ids[0]))], "Choose the list"),
                          ([("action", "tag"), ("tag", "x")], "Tick the subscribers"),
                          ([("action", "add_to_list"), ("list", "nope"), ("selected", "1")], "nope")):
        refused = post(admin.admin, "/admin/subscribers/act", data)
        assert refused.status_code == 400 and message in refused.text
    assert post(admin.admin, "/admin/subscribers/act", [("action", "explode")]).status_code == 400
    many = post(admin.admin, "/admin/subscribers/act",       # a page's worth and more; gone ids passed over
                [("action", "tag"), ("tag", "many")] + [("selected", str(i)) for i in range(ids[0], ids[0] + 1200)])
    assert "Tagged 4 subscribers with many." in many.text
    kinds = [e.action for e in audit_rows(admin)]
    assert kinds.count("bulk") == 7 and kinds.count("subscriber.tag") == 7


def test_select_all_matching_acts_on_the_whole_query_in_chunks(admin, monkeypatch):
    from mailer.web.admin import people as module
    from subscribers import store

    ids = people(admin, 120, tags={i: ["press"] for i in range(0, 120, 2)})
    calls = []
    real = module._apply_chunk
    monkeypatch.setattr(module, "_apply_chunk", lambda conn, *a: calls.append(len(a[2])) or real(conn, *a))
    monkeypatch.setattr(module.run_action, "__defaults__", (25,))                 # chunks of 25
    done = post(admin.admin, "/admin/subscribers/act",
                [("action", "tag"), ("tag", "vip"), ("all", "1"), ("query", "tag=press")])
    assert "Tagged 60 subscribers with vip." in done.text and calls == [25, 25, 10]
    shown = admin.admin.get("/admin/subscribers?tag=press&tag=vip").text
    assert "60 matches" in shown
    asked = post(admin.admin, "/admin/subscribers/act",
                 [("action", "forget"), ("all", "1"), ("query", "tag=vip")])
    assert "Forget 60 subscribers?" in asked.text and status_of(admin, "r000@example.com") == "active"
    token = form_token(asked.text)
    hidden = dict(re.findall(r'name="(\w+)" value="([^"]*)"', asked.text))
    assert hidden["all"] == "1" and hidden["confirm"] == "1" and hidden["query"] == "tag=vip"
    gone = admin.admin.post("/admin/subscribers/act", data={**hidden, "csrf": token})
    assert "Forgot 60 subscribers." in gone.text
    assert status_of(admin, "r000@example.com") is None and status_of(admin, "r001@example.com") == "active"
    with admin.web.engine.connect() as conn:
        assert conn.execute(select(store.forgotten.c.id)).all().__len__() == 60
    forgot = audit_rows(admin, action="subscriber.forget")
    assert len(forgot) == 60 and all(e.email is None for e in forgot)     # kept, without the address
    summary = audit_rows(admin, action="bulk")[0]
    assert summary.detail == {"action": "forget", "changed": 60, "selected": 60, "of": "all matching tag=vip"}
    assert ids


def test_forget_of_rows_ticked_names_how_many(admin):
    ids = people(admin, 3)
    asked = post(admin.admin, "/admin/subscribers/act", [("action", "forget"), ("selected", str(ids[0])),
                                                         ("selected", str(ids[1]))])
    assert "Forget 2 subscribers?" in asked.text and ">Forget 2 subscribers</button>" in asked.text


# ---------------------------------------------------------------- 3. export what you see

def test_the_view_as_csv_has_the_exports_columns_and_is_formula_safe(admin):
    ids = people(admin, 3, tags={0: ["press"], 1: ["press"]})
    from subscribers import store

    with admin.web.engine.begin() as conn:
        store.rename(conn, ids[1], "=HYPERLINK(1)")
    page = admin.admin.get("/admin/subscribers?tag=press").text
    assert 'href="/admin/subscribers.csv?tag=press"' in page
    got = admin.admin.get("/admin/subscribers.csv?tag=press")
    assert got.headers["content-disposition"] == 'attachment; filename="subscribers-press.csv"'
    rows = list(csv.reader(io.StringIO(got.text)))
    assert rows[0] == ["email", "name", "status", "subscribed_at", "tags"]
    assert [(r[0], r[1], r[2], r[4]) for r in rows[1:]] == [
        ("r000@example.com", "Reader 0", "active", "press"), ("r001@example.com", "'=HYPERLINK(1)", "active", "press")]
    everyone = admin.admin.get("/admin/subscribers.csv").text
    assert everyone.count("@example.com") == 3


# ---------------------------------------------------------------- 4. an issue's page

@pytest.fixture
def sent(admin, repo):
    from mailer.compose.render import compose_issue
    from mailer.send import dispatch

    people(admin, 3)
    with admin.web.engine.begin() as conn:
        from subscribers import store

        store.add_subscriber(conn, "jöhn@example.org", store.get_list(conn, "crank").id)
    path = admin.settings.compose.issues_dir / "2024-11.md"
    shutil.copy(repo / "issues" / "2024-11.md", path)
    dispatch.run_send(admin.settings, dispatch.plan_send(admin.settings, compose_issue(path, admin.settings), "crank"))
    return admin


def test_failed_readers_with_reasons_retry_failed_and_who_got_it(sent):
    from mailer.send.ledger import State, deliveries
    from mailer.web.admin import issues

    page = sent.admin.get("/admin/issues/2024-11").text
    assert "Failed readers" in page and "jöhn@example.org" in page and "SMTPUTF8" in page
    assert ">Retry failed</button>" in page
    with sent.web.engine.begin() as conn:        # a refusal whose cause is gone now
        conn.execute(update(deliveries).where(deliveries.c.id == 1).values(state=State.FAILED.value,
                                                                            last_error="550 try later"))
    who = list(csv.DictReader(io.StringIO(sent.admin.get("/admin/issues/2024-11/recipients.csv").text)))
    assert [(r["email"], r["received"]) for r in who] == [
        ("r000@example.com", "no"), ("r001@example.com", "yes"), ("r002@example.com", "yes"),
        ("jöhn@example.org", "no")]
    assert who[0]["reason"] == "550 try later"
    retried = post(sent.admin, "/admin/issues/2024-11/retry")
    assert "Retrying 2 failed readers of crank: started." in retried.text
    issues.started("2024-11").join(30)
    who = list(csv.DictReader(io.StringIO(sent.admin.get("/admin/issues/2024-11/recipients.csv").text)))
    assert [r["received"] for r in who] == ["yes", "yes", "yes", "no"]      # the bad address fails again
    assert "Sent: 3 sent, 1 failed, 0 skipped." in sent.admin.get("/admin/issues/2024-11").text
    assert audit_rows(sent, action="issue.retry_failed")[0].detail == {"readers": 2, "lists": ["crank"]}
    none = post(sent.admin, "/admin/issues/2024-11/retry")
    assert "Retrying 1 failed readers" in none.text
    issues.started("2024-11").join(30)


def test_send_from_the_browser_behind_a_confirmation(admin, repo):
    from mailer.web.admin import issues

    people(admin, 2)
    shutil.copy(repo / "issues" / "2024-11.md", admin.settings.compose.issues_dir / "2024-11.md")
    asked = post(admin.admin, "/admin/issues/2024-11/send", {"list": "crank"})
    assert asked.status_code == 200 and "Send 2024-11?" in asked.text
    assert re.search(r'id="readers">2<', asked.text) and "0 error(s)" in asked.text
    assert "Yes, send to 2 readers of crank" in asked.text
    assert not list(admin.settings.delivery.outbox_dir.rglob("*.eml"))
    done = post(admin.admin, "/admin/issues/2024-11/send", {"list": "crank", "confirm": "yes"})
    assert "Sending to 2 readers of crank: started." in done.text
    issues.started("2024-11").join(30)
    assert len(list(admin.settings.delivery.outbox_dir.rglob("*.eml"))) == 2
    twice = post(admin.admin, "/admin/issues/2024-11/send", {"list": "crank", "confirm": "yes"})
    assert twice.status_code == 400 and "sent to crank already" in twice.text
    assert audit_rows(admin, action="issue.send")[0].detail == {"list": "crank", "readers": 2}
    nowhere = post(admin.admin, "/admin/issues/2024-11/send", {"list": "nope"})
    assert nowhere.status_code == 400 and "nope" in nowhere.text
    timed = post(admin.admin, "/admin/issues/2024-11/schedule", {"at": "2099-12-01 09:00"})
    assert "Schedule 2024-11?" in timed.text and "Yes, schedule it for 0 readers of crank" in timed.text


# ---------------------------------------------------------------- 5. roles

def _post_routes(app):
    """Every POST route under /admin, from the admin's routers (FastAPI keeps included routers whole)."""
    from mailer.web.admin import dashboard, issues, lists, login, people, users

    for module in (dashboard, issues, lists, login, people, users):
        for route in module.router.routes:
            if "POST" in route.methods:
                path = route.path if route.path.startswith("/admin") else "/admin" + route.path
                yield re.sub(r"\{[^}]+\}", lambda m: "1" if "id" in m.group(0) else "crank", path)


def test_a_viewer_reads_everything_and_every_post_is_403(live):
    ids = people(live, 1)
    viewer = as_role(live, "viewer", "vera")
    for path in ("/admin", "/admin/lists", "/admin/lists/crank", "/admin/subscribers", f"/admin/subscribers/{ids[0]}",
                 "/admin/audit", "/admin/users", "/admin/issues", "/admin/account"):
        page = viewer.get(path)
        assert page.status_code == 200, path
        assert page.text.count('method="post"') == 1, path             # only "Log out"
        assert 'name="selected"' not in page.text and 'name="tags"' not in page.text
    token = page_token(viewer)
    routes = sorted(set(_post_routes(live.app)) - {"/admin/login", "/admin/login/code", "/admin/logout"})
    assert len(routes) >= 20
    for path in routes:
        reply = viewer.post(path, data={"csrf": token, "list": "crank", "name": "x"})
        assert reply.status_code == 403, path
        assert "vera is a viewer" in reply.text
    assert viewer.post("/admin/logout", data={"csrf": token}).status_code == 303
    assert status_of(live, "r000@example.com") == "active"


def test_an_editor_manages_subscribers_and_issues_but_not_lists_or_users(live):
    as_role(live, "owner", "olga")
    ids = people(live, 1)
    editor = as_role(live, "editor", "ed")
    assert post(editor, f"/admin/subscribers/{ids[0]}/unsubscribe", {"list": "crank"}).status_code == 303
    for path, data in (("/admin/lists", {"name": "new"}), ("/admin/lists/crank", {"title": "x"}),
                       ("/admin/lists/crank/delete", {}), ("/admin/users", {"name": "x"}),
                       ("/admin/users/olga/role", {"role": "viewer"}), ("/admin/users/olga/remove", {})):
        refused = post(editor, path, data)
        assert refused.status_code == 403 and "only owners may manage lists and users" in refused.text, path
    page = editor.get("/admin/lists/crank").text
    assert "Check the file (dry run)" in page and "Delete this list" not in page


def test_owners_manage_users_on_the_users_page(admin):
    made = post(admin.admin, "/admin/users", {"name": "vera", "role": "viewer", "password": PASSWORD,
                                              "again": PASSWORD})
    assert "Added vera (viewer)." in made.text
    assert "vera is now editor (was viewer)." in post(admin.admin, "/admin/users/vera/role", {"role": "editor"}).text
    last = post(admin.admin, f"/admin/users/{USER}/role", {"role": "viewer"})
    assert last.status_code == 400 and "last owner" in last.text
    differ = post(admin.admin, "/admin/users", {"name": "x", "password": PASSWORD, "again": PASSWORD + "!"})
    assert differ.status_code == 400 and "differ" in differ.text
    assert "Removed vera" in post(admin.admin, "/admin/users/vera/remove").text
    assert [e.action for e in audit_rows(admin)][:3] == ["user.remove", "user.role", "user.add"]


# ---------------------------------------------------------------- 6. the audit log

def test_the_audit_page_filters_and_pages(admin, monkeypatch):
    from mailer import audit

    ids = people(admin, 3)
    post(admin.admin, f"/admin/subscribers/{ids[0]}", {"name": "Ann", "tags": "press"})
    post(admin.admin, f"/admin/subscribers/{ids[1]}/unsubscribe", {"list": "crank"})
    with admin.web.engine.begin() as conn:
        for i in range(60):
            audit.record(conn, actor="api-token", via=audit.Via.API, ip="198.51.100.7", action="subscriber.tag",
                         subscriber_id=ids[2], detail={"tags": [f"t{i}"]})
    page = admin.admin.get("/admin/audit").text
    assert "api-token" in page and "198.51.100.7" in page and "Older entries" in page
    mine = admin.admin.get(f"/admin/audit?user={USER}").text
    assert "r001@example.com" in mine and "subscriber.unsubscribe" in mine and "api-token</a>" not in mine
    assert "127.0.0.1" in mine                                  # from which address
    by_address = admin.admin.get("/admin/audit", params={"subscriber": "r001@example.com"}).text
    assert "subscriber.unsubscribe</td>" in by_address and "subscriber.edit</td>" not in by_address
    tagged = admin.admin.get("/admin/audit?action=subscriber.edit").text
    assert "subscriber.edit" in tagged and "subscriber.unsubscribe</td>" not in tagged
    older = re.search(r'href="(/admin/audit\?before=\d+)"', page).group(1)
    rest = admin.admin.get(older).text
    assert rest.count("<tr>") == 63 - 50 + 1                    # 13 older entries and the header
    assert admin.admin.get("/admin/audit?subscriber=nobody@example.com").status_code == 404
    post(admin.admin, f"/admin/subscribers/{ids[0]}/forget")
    kept = admin.admin.get(f"/admin/audit?subscriber={ids[0]}").text
    assert "r000@example.com" not in kept and "(forgotten)" in kept and "subscriber.forget" in kept


# ---------------------------------------------------------------- 7. the second factor

def _code(uri: str) -> str:
    return pyotp.parse_uri(uri).at(datetime.now(UTC))


def test_login_asks_for_the_code_and_takes_a_recovery_code_once(live):
    from mailer import admin_users

    add_user(live)
    with live.web.engine.begin() as conn:
        enrolled = admin_users.enrol_totp(conn, USER)
    client = __import__("httpx").Client(base_url=live.url, headers=HTML)
    form = client.get("/admin/login")
    asked = client.post("/admin/login", data={"username": USER, "password": PASSWORD, "csrf": form_token(form.text)})
    assert asked.status_code == 200 and 'name="code"' in asked.text and "mailer_admin=" not in str(asked.headers)
    assert client.get("/admin").status_code == 303                                  # no session yet
    wrong = client.post("/admin/login/code", data={"code": "123456" if _code(enrolled.uri) != "123456" else "654321",
                                                   "csrf": form_token(form.text)})
    assert wrong.status_code == 401 and "not right" in wrong.text
    done = client.post("/admin/login/code", data={"code": _code(enrolled.uri), "csrf": form_token(form.text)})
    assert done.status_code == 303 and client.get("/admin").status_code == 200
    other = __import__("httpx").Client(base_url=live.url, headers=HTML)
    form = other.get("/admin/login")
    other.post("/admin/login", data={"username": USER, "password": PASSWORD, "csrf": form_token(form.text)})
    assert other.post("/admin/login/code", data={"code": enrolled.recovery[0],
                                                 "csrf": form_token(form.text)}).status_code == 303
    third = __import__("httpx").Client(base_url=live.url, headers=HTML)
    form = third.get("/admin/login")
    third.post("/admin/login", data={"username": USER, "password": PASSWORD, "csrf": form_token(form.text)})
    assert third.post("/admin/login/code", data={"code": enrolled.recovery[0],
                                                 "csrf": form_token(form.text)}).status_code == 401
    stale = third.post("/admin/login/code", data={"code": "1", "csrf": form_token(form.text)},
                       cookies={"mailer_admin_code": "forged"})
    assert stale.status_code == 401 and "log in again" in stale.text


def test_enrol_a_second_factor_on_the_account_page(admin):
    page = admin.admin.get("/admin/account").text
    assert "Second factor: off" in page
    started = post(admin.admin, "/admin/account/totp")
    assert "<svg" in started.text and "otpauth://totp/" in started.text
    uri = re.search(r'href="(otpauth://[^"]+)"', started.text).group(1).replace("&amp;", "&")
    key = re.search(r'name="key" value="([^"]+)"', started.text).group(1)
    wrong = post(admin.admin, "/admin/account/totp/confirm", {"key": key, "code": "000000"
                                                              if _code(uri) != "000000" else "111111"})
    assert wrong.status_code == 400 and "not right" in wrong.text
    done = post(admin.admin, "/admin/account/totp/confirm", {"key": key, "code": _code(uri)})
    codes = re.findall(r"<li><code>([a-z2-7]{5}-[a-z2-7]{5})</code></li>", done.text)
    assert len(codes) == 10 and "Second factor: on (10 recovery codes left)" in done.text
    assert audit_rows(admin, action="user.totp")[0].detail == {"second factor": "enrolled"}
    assert post(admin.admin, "/admin/account/totp/confirm", {"key": "forged", "code": "1"}).status_code == 303


# ---------------------------------------------------------------- 8. the smaller things

def test_successful_logins_do_not_count_and_429_says_when_to_come_back(live):
    import httpx

    add_user(live)
    for _ in range(6):                      # more than the burst (5): right passwords never run out
        login(live).close()
    client = httpx.Client(base_url=live.url, headers=HTML)
    form = form_token(client.get("/admin/login").text)
    codes = [client.post("/admin/login", data={"username": USER, "password": "wrong password!", "csrf": form}
                         ).status_code for _ in range(6)]
    # (after three failures a growing delay: the fifth may come too soon, the sixth meets an empty bucket)
    assert codes[:4] == [401] * 4 and codes[4] in (401, 429) and codes[5] == 429
    refused = client.post("/admin/login", data={"username": USER, "password": PASSWORD, "csrf": form})
    assert refused.status_code == 429 and 0 < int(refused.headers["retry-after"]) <= 3600


def test_the_admin_follows_the_dark_colour_scheme(live):
    css = live.http.get("/admin/static/admin.css").text
    assert "@media (prefers-color-scheme: dark)" in css
    assert 'content="light dark"' in live.http.get("/admin/login", headers=HTML).text


def test_the_chart_keeps_its_last_label_inside_and_no_future_days():
    from datetime import date, timedelta

    from mailer.web.admin import figures

    today = date(2026, 12, 7)
    chart = figures.chart({today - timedelta(days=i): {label: 0 for label, *_ in figures.SERIES} for i in range(30)})
    assert chart.x_ticks[-1][1:] == ("Dec 07", "end") and chart.x_ticks[0][2] == "middle"
    assert len({x for x, *_ in chart.x_ticks}) == len(chart.x_ticks)


def test_a_fresh_sends_report_spans_no_future_day(admin, repo):
    from tests.web.admin_helpers import send_issue

    people(admin, 1)
    send_issue(admin, repo)
    report = admin.admin.get("/admin/issues/2024-11/report").text
    days = re.findall(r'<th scope="row">(\d{4}-\d\d-\d\d)</th>', report)
    assert days == [datetime.now(UTC).date().isoformat()]
