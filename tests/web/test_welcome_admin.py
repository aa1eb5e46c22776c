"""The admin list page shows a list's welcome mail and sets it, lint-gated like `mailer lists welcome`."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from mailer import audit
from mailer.send.welcome import welcome_mails
from tests.web.admin_helpers import add_user, login, page_token

HTML = {"accept": "text/html"}
GOOD = '+++\nsubject = "Hello reader"\ndate = 2024-11-01\npreheader = "Hi"\n+++\n# Hello\n\nGlad.\n\n## More\n\nSoon.\n'


@pytest.fixture
def admin(live):
    add_user(live)
    client = login(live)
    client.headers.update(HTML)
    live.admin = client
    return live


def post(admin, path: str, data: dict):
    return admin.admin.post(path, data={"csrf": page_token(admin.admin), **data})


def test_the_list_page_shows_and_sets_the_welcome_mail(admin):
    issues = admin.settings.compose.issues_dir
    (issues / "hello.md").write_text(GOOD, encoding="utf-8")
    (issues / "broken.md").write_text(GOOD.replace("Glad.", "Dear {{ nmae }}."), encoding="utf-8")
    page = admin.admin.get("/admin/lists/crank")
    assert "No welcome mail" in page.text and '<option value="hello">hello.md</option>' in page.text
    refused = post(admin, "/admin/lists/crank/welcome", {"file": "broken"})
    assert refused.status_code == 400 and "nmae" in refused.text
    assert post(admin, "/admin/lists/crank/welcome", {"file": "../config"}).status_code == 400
    done = post(admin, "/admin/lists/crank/welcome", {"file": "hello"})
    assert done.status_code == 303
    assert "gets <strong>hello</strong> once" in admin.admin.get("/admin/lists/crank").text
    with admin.web.engine.connect() as conn:
        assert conn.execute(select(welcome_mails.c.slug, welcome_mails.c.subject)).one() == ("hello", "Hello reader")
        details = [e.detail for e in audit.entries(conn, action="list.edit").rows]
    assert details == [{"welcome": "hello.md"}]
    assert post(admin, "/admin/lists/crank/welcome", {"file": ""}).status_code == 303
    assert "No welcome mail" in admin.admin.get("/admin/lists/crank").text
