"""Pages on the real server: security headers on every response, plain error pages, body limits."""

from __future__ import annotations

import pytest

COMMON = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
}

PATHS = [
    # (method, path, expected status, content type starts with)
    ("GET", "/subscribe", 200, "text/html"),                 # the only list
    ("GET", "/subscribe?list=crank", 200, "text/html"),
    ("GET", "/subscribe?list=nope", 404, "text/html"),
    ("GET", "/confirm/forged", 400, "text/html"),
    ("GET", "/unsubscribe/forged", 400, "text/html"),
    ("POST", "/unsubscribe/forged", 400, "text/html"),
    ("GET", "/healthz", 200, "application/json"),
    ("GET", "/archive", 200, "text/html"),
    ("GET", "/archive/1999-01", 404, "text/html"),
    ("GET", "/archive/..%2F..%2Fconfig", 404, "text/html"),
    ("GET", "/static/site.css", 200, "text/css"),
    ("GET", "/no/such/page", 404, "text/html"),
    ("DELETE", "/subscribe", 405, "text/html"),
    ("GET", "/webhooks/sendgrid", 405, "application/json"),
]


@pytest.mark.parametrize("method, path, status, ctype", PATHS)
def test_status_type_and_headers(live, method, path, status, ctype):
    r = live.http.request(method, path)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(ctype)
    for name, value in COMMON.items():
        assert r.headers[name] == value
    csp = r.headers["content-security-policy"]
    assert "script-src" not in csp and "default-src 'none'" in csp   # no script may run at all (the signup
    # forms' scripts, our own only, when [web] signup_challenge is on: tests/web/test_signup.py)
    assert "frame-ancestors 'none'" in csp
    assert "server" not in r.headers or "uvicorn" not in r.headers["server"]


def test_no_hsts_over_http(live):
    assert "strict-transport-security" not in live.http.get("/subscribe").headers


def test_subscribe_form_escapes_what_it_echoes(live):
    r = live.http.post("/subscribe", data={"list": "crank", "email": '"><script>alert(1)</script>',
                                           "name": "<b>Ann</b>"})
    assert r.status_code == 400
    assert "<script>" not in r.text and "<b>" not in r.text
    assert "&#34;&gt;&lt;script&gt;" in r.text and "&lt;b&gt;Ann" in r.text


def test_form_body_too_large_is_413(live):
    r = live.http.post("/subscribe", content=b"email=" + b"a" * 70_000,
                       headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 413


def test_home_redirects_to_the_form(live):
    r = live.http.get("/")
    assert (r.status_code, r.headers["location"]) == (303, "/subscribe")
