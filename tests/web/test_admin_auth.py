"""/admin refuses whoever has no session, wrong passwords, posts without a CSRF token and
cross-site posts; sessions are signed, HttpOnly, SameSite=Lax cookies that expire."""

from __future__ import annotations

import httpx
import pytest

from tests.web.admin_helpers import (
    PASSWORD,
    USER,
    add_user,
    form_token,
    login,
    page_token,
)

HTML = {"accept": "text/html,application/xhtml+xml"}


@pytest.fixture
def admin(live):
    add_user(live)
    return live


@pytest.mark.parametrize("method, path, headers, expected", [
    ("GET", "/admin", HTML, 303),                            # a page: to the login form
    ("GET", "/admin/lists/crank", HTML, 303),
    ("GET", "/admin/subscribers?q=ann", HTML, 303),
    ("GET", "/admin/no-such-page", HTML, 303),               # unknown paths tell nothing either
    ("GET", "/admin/lists/crank/export.csv", {"accept": "*/*"}, 401),   # not a page: 401
    ("GET", "/admin", {"accept": "application/json"}, 401),
    ("POST", "/admin/lists", HTML, 401),
    ("POST", "/admin/logout", HTML, 401),
    ("POST", "/admin/subscribers/1/forget", {}, 401),
])
def test_nothing_answers_without_a_session(admin, method, path, headers, expected):
    reply = admin.http.request(method, path, headers=headers)
    assert reply.status_code == expected
    if expected == 303:
        assert reply.headers["location"].startswith("/admin/login?next=")
    assert "crank" not in reply.text.lower() or expected == 303


def test_login_page_and_static_css_answer_without_a_session(admin):
    page = admin.http.get("/admin/login", headers=HTML)
    assert page.status_code == 200
    assert 'name="username"' in page.text and 'name="password"' in page.text
    assert admin.http.get("/admin/static/admin.css").status_code == 200


def test_login_sets_a_signed_httponly_lax_cookie(admin):
    client = login(admin)
    cookie = next(c for c in client.cookies.jar if c.name == "mailer_admin")
    assert cookie.path == "/admin" and cookie.expires is not None
    assert not cookie.secure                                # base_url is http here
    raw = client.get("/admin/login")                        # a logged-in user is sent on
    assert raw.status_code == 303
    # the Set-Cookie header itself
    fresh = httpx.Client(base_url=admin.url)
    page = fresh.get("/admin/login", headers=HTML)
    reply = fresh.post("/admin/login", data={"username": USER, "password": PASSWORD, "csrf": form_token(page.text)})
    header = next(v for k, v in reply.headers.multi_items() if k == "set-cookie" and v.startswith("mailer_admin="))
    assert "HttpOnly" in header and "SameSite=lax" in header and "Max-Age=43200" in header
    assert client.get("/admin", headers=HTML).status_code == 200


def test_cookie_is_secure_when_base_url_is_https(admin):
    from starlette.responses import Response

    from mailer.web.admin.auth import Sessions

    response = Response()
    Sessions("k" * 32, hours=1, https=True).set_session(response, "value")
    assert "Secure" in response.headers["set-cookie"]


@pytest.mark.parametrize("name, password", [(USER, "wrong password!!"), ("nobody", PASSWORD), (USER, ""), ("", "")])
def test_wrong_credentials_are_refused(admin, name, password):
    client = httpx.Client(base_url=admin.url)
    page = client.get("/admin/login", headers=HTML)
    reply = client.post("/admin/login", data={"username": name, "password": password, "csrf": form_token(page.text)})
    assert reply.status_code == 401
    assert "do not match" in reply.text
    assert "mailer_admin" not in client.cookies
    assert client.get("/admin", headers=HTML).status_code == 303


def test_login_attempts_are_limited_per_user_and_per_address(admin):
    burst = admin.settings.web.admin_login_burst
    client = httpx.Client(base_url=admin.url)
    token = form_token(client.get("/admin/login", headers=HTML).text)
    wrong = {"username": USER, "password": "not it at all", "csrf": token}
    codes = [client.post("/admin/login", data=wrong).status_code for _ in range(burst + 1)]
    # (after three failures a growing delay: the fifth may come too soon, the sixth meets an empty bucket)
    assert codes[:burst - 1] == [401] * (burst - 1) and codes[burst - 1] in (401, 429) and codes[burst] == 429
    # the right password does not get through either while this client's bucket for the user is empty
    right = client.post("/admin/login", data={"username": USER, "password": PASSWORD, "csrf": token})
    assert right.status_code == 429 and "Too many" in right.text
    # the address is limited too: other user names from here are refused
    other = client.post("/admin/login", data={"username": "someone-else", "password": "x" * 12, "csrf": token})
    assert other.status_code == 429


def test_login_without_its_token_is_refused(admin):
    client = httpx.Client(base_url=admin.url)
    client.get("/admin/login", headers=HTML)
    reply = client.post("/admin/login", data={"username": USER, "password": PASSWORD})
    assert reply.status_code == 403
    assert "mailer_admin" not in client.cookies


@pytest.mark.parametrize("data", [{}, {"csrf": ""}, {"csrf": "0" * 64}, {"csrf": "é" * 64}])
def test_post_without_a_valid_csrf_token_is_403(admin, data):
    client = login(admin)
    reply = client.post("/admin/lists", data={"name": "sneaky", **data})
    assert reply.status_code == 403
    assert "sneaky" not in client.get("/admin/lists", headers=HTML).text


@pytest.mark.parametrize("headers", [
    {"origin": "https://evil.example"},
    {"origin": "null"},                                          # without Sec-Fetch-Site: not ours
    {"sec-fetch-site": "cross-site"},
    {"sec-fetch-site": "same-site"},                             # a sibling subdomain is another site too
    {"sec-fetch-site": "cross-site", "origin": "null"},
])
def test_cross_site_post_is_403_even_with_a_token(admin, headers):
    client = login(admin)
    token = page_token(client)
    reply = client.post("/admin/lists", data={"name": "sneaky", "csrf": token}, headers=headers)
    assert reply.status_code == 403
    same = client.post("/admin/lists", data={"name": "fine", "csrf": token}, headers={"origin": admin.url})
    assert same.status_code == 303
    # what Chromium sends for our own form under Referrer-Policy: no-referrer
    ours = client.post("/admin/lists", data={"name": "fine2", "csrf": token},
                       headers={"origin": "null", "sec-fetch-site": "same-origin"})
    assert ours.status_code == 303


def test_cross_site_login_is_403(admin):
    client = httpx.Client(base_url=admin.url)
    token = form_token(client.get("/admin/login", headers=HTML).text)
    reply = client.post("/admin/login", data={"username": USER, "password": PASSWORD, "csrf": token},
                        headers={"origin": "https://evil.example"})
    assert reply.status_code == 403


def test_expired_or_forged_sessions_are_refused(admin):
    import time

    from itsdangerous import TimestampSigner, URLSafeTimedSerializer

    class Earlier(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - 13 * 3600                         # made 13 hours ago (limit: 12)

    client = login(admin)
    good = client.cookies["mailer_admin"]
    old = URLSafeTimedSerializer(admin.web.secret, salt="mailer-admin-session", signer=Earlier)
    payload = admin.app.state.admin.sessions.read(good)
    for cookie in (old.dumps(payload), good[:-2] + ("AA" if not good.endswith("AA") else "BB"),
                   URLSafeTimedSerializer("another key", salt="mailer-admin-session").dumps(payload)):
        other = httpx.Client(base_url=admin.url, cookies={"mailer_admin": cookie})
        assert other.get("/admin", headers=HTML).status_code == 303


def test_removing_a_user_ends_their_sessions(admin):
    from mailer import admin_users

    client = login(admin)
    assert client.get("/admin", headers=HTML).status_code == 200
    with admin.web.engine.begin() as conn:
        admin_users.remove_user(conn, USER)
    assert client.get("/admin", headers=HTML).status_code == 303


def test_logout_clears_the_cookie(admin):
    client = login(admin)
    reply = client.post("/admin/logout", data={"csrf": page_token(client)})
    assert reply.status_code == 303 and reply.headers["location"] == "/admin/login"
    assert client.get("/admin", headers=HTML).status_code == 303


def test_login_redirects_only_within_admin(admin):
    for target, expected in [("/admin/lists", "/admin/lists"), ("https://evil.example/", "/admin"),
                             ("//evil.example", "/admin")]:
        client = httpx.Client(base_url=admin.url)
        token = form_token(client.get("/admin/login", headers=HTML).text)
        reply = client.post("/admin/login", data={"username": USER, "password": PASSWORD, "csrf": token,
                                                  "next": target})
        assert reply.headers["location"] == expected


def test_admin_pages_carry_the_readers_security_headers(admin):
    client = login(admin)
    reply = client.get("/admin", headers=HTML)
    readers = admin.http.get("/subscribe?list=crank")
    for name in ("content-security-policy", "x-content-type-options", "referrer-policy", "x-frame-options",
                 "permissions-policy", "cross-origin-opener-policy"):
        assert reply.headers[name] == readers.headers[name], name
    assert reply.headers["cache-control"] == "no-store"
    assert reply.headers["x-robots-tag"] == "noindex, nofollow"


def test_an_upload_without_a_session_is_refused_before_it_is_read(admin, tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    reply = admin.http.post("/admin/lists/crank/import", files={"file": ("a.csv", b"email\nx@example.com\n")})
    assert reply.status_code == 401
    assert not list(tmp_path.glob("mailer-admin-uploads*"))
