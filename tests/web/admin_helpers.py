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


def send_issue(live, repo, slug: str = "2024-11", list_name: str = "crank"):
    """Copy issues/SLUG.md into the test's issues folder and send it to the list for real (outbox)."""
    import shutil

    from mailer.compose.render import compose_issue
    from mailer.send import dispatch

    path = live.settings.compose.issues_dir / f"{slug}.md"
    shutil.copy(repo / "issues" / f"{slug}.md", path)
    composed = compose_issue(path, live.settings)
    return dispatch.run_send(live.settings, dispatch.plan_send(live.settings, composed, list_name))


def post_events(live, signer, events: list[tuple[str, str]], slug: str = "2024-11") -> None:
    """SendGrid's signed webhook posts of (address, event) for the issue, through the real endpoint."""
    import time

    from tests.events.signing import body

    now = int(time.time())
    raw = body([{"email": email, "event": kind, "timestamp": now, "sg_event_id": f"ev-{i}-{kind}",
                 "mailer_issue": slug, **({"type": "bounce", "status": "5.1.1"} if kind == "bounce" else {})}
                for i, (email, kind) in enumerate(events)])
    reply = live.http.post("/webhooks/sendgrid", content=raw,
                           headers={"content-type": "application/json", **signer.sign(raw)})
    assert reply.status_code == 200, reply.text
