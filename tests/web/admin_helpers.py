"""Admin web interface test helpers: a user, and an httpx client logged in through the real form."""

from __future__ import annotations

import re

import httpx

USER, PASSWORD = "editor", "correct horse battery"


def add_user(live, name: str = USER, password: str = PASSWORD) -> None:
    from mailer import admin_users

    with live.web.engine.begin() as conn:
        admin_users.add_user(conn, name, password)


def form_token(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no csrf field in the page"
    return found.group(1)


def login(live, name: str = USER, password: str = PASSWORD, **client_args) -> httpx.Client:
    """A fresh client that logged in; its cookie jar holds the session."""
    client = httpx.Client(base_url=live.url, timeout=20, follow_redirects=False, **client_args)
    page = client.get("/admin/login", headers={"accept": "text/html"})
    reply = client.post("/admin/login", data={"username": name, "password": password, "csrf": form_token(page.text)})
    assert reply.status_code == 303, reply.text
    return client


def page_token(client: httpx.Client, path: str = "/admin") -> str:
    return form_token(client.get(path, headers={"accept": "text/html"}).text)
