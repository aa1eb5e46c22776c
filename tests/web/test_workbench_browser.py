"""An admin's day at the workbench (issue 26) in headless Chromium, as an admin would click it:
log in with a second factor, filter subscribers by tag, tick some and tag them, act on all that
match, forget after the confirmation, edit one subscriber and take them back with their consent,
download the view, retry an issue's failed readers and send it behind its confirmation, read the
audit log, change a user's role; then a viewer sees every page without a button. Every page must
fit a 375 px phone and a 1280 px screen (photographed into tests/artifacts/workbench/, ignored by
git), in light and in dark mode, with no console error."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime

import pyotp
import pytest

from tests.web.admin_helpers import PASSWORD
from tests.web.test_admin_browser import WIDEST

pytestmark = pytest.mark.browser
ARTIFACTS = "tests/artifacts/workbench"
WIDTHS = (375, 1280)


@pytest.fixture(params=WIDTHS, ids=[f"{w}px" for w in WIDTHS])
def width(request) -> int:
    """The walk is clicked through once at each width; every page is checked at both either way."""
    return request.param


@pytest.fixture
def shots(repo, width):
    folder = repo / ARTIFACTS / f"walked-at-{width}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def seed(live, repo):
    """An owner with a second factor, a viewer, 8 readers (some tagged, one unsendable) and a sent issue."""
    from mailer import admin_users
    from mailer.compose.render import compose_issue
    from mailer.send import dispatch
    from subscribers import store
    from subscribers.tags import add_tags

    with live.web.engine.begin() as conn:
        admin_users.add_user(conn, "olga", PASSWORD, "owner")
        admin_users.add_user(conn, "vera", PASSWORD, "viewer")
        enrolled = admin_users.enrol_totp(conn, "olga")
        crank = store.get_list(conn, "crank").id
        store.create_list(conn, "digest", title="The Digest")
        for i in range(7):
            sid = store.add_subscriber(conn, f"reader{i}@example.com", crank, name=f"Reader {i}").subscriber_id
            if i < 4:
                add_tags(conn, sid, ["press"])
        store.add_subscriber(conn, "jöhn@example.org", crank)
    path = live.settings.compose.issues_dir / "2024-11.md"
    shutil.copy(repo / "issues" / "2024-11.md", path)
    dispatch.run_send(live.settings, dispatch.plan_send(live.settings, compose_issue(path, live.settings), "crank"))
    return enrolled


def test_a_day_at_the_workbench(live, chromium, shots, repo, width):
    from mailer.web.admin import issues

    enrolled = seed(live, repo)
    context = chromium.new_context(viewport={"width": width, "height": 900}, is_mobile=width < 500,
                                   has_touch=width < 500)
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    taken: list[str] = []

    def shot(name: str) -> None:
        for width in WIDTHS:
            page.set_viewport_size({"width": width, "height": 900})
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), \
                f"{name} is wider than {width} px: " + page.evaluate(WIDEST)
            page.screenshot(path=str(shots / f"{len(taken) + 1:02}-{name}-{width}.png"), full_page=True)
        taken.append(name)
        page.set_viewport_size({"width": width, "height": 900})

    # 7. log in: the password, then the code from the authenticator app
    page.goto(f"{live.url}/admin/subscribers")
    page.get_by_label("User name").fill("olga")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_label("Code from your authenticator app").fill(pyotp.parse_uri(enrolled.uri).at(datetime.now(UTC)))
    shot("code")
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("heading", name="Subscribers", level=1).wait_for()

    # 2. filter by tag, tick two rows, tag them
    page.get_by_label("Tags", exact=True).fill("press")
    page.get_by_role("button", name="Filter").click()
    assert page.locator("#count").inner_text() == "4 matches"
    page.get_by_label("Select reader0@example.com").check()
    page.get_by_label("Select reader1@example.com").check()
    page.get_by_label("Action").select_option("tag")
    page.locator("#act-tag").fill("vip")
    shot("select")
    page.get_by_role("button", name="Apply").click()
    assert page.locator("#act-done").inner_text() == "Tagged 2 subscribers with vip."
    # ... then on everything that matches, not only what is ticked
    page.get_by_label("Select all 4 matching").check()
    page.get_by_label("Action").select_option("add_to_list")
    page.locator("#act-list").select_option("digest")
    page.get_by_role("button", name="Apply").click()
    assert page.locator("#act-done").inner_text() == "Added 4 subscribers to digest."
    shot("acted")

    # 3. the same view as CSV
    href = page.get_by_role("link", name="Download these as CSV").get_attribute("href")
    assert href == "/admin/subscribers.csv?tag=press"
    assert page.request.get(live.url + href).text().count("@example.com") == 4

    # 2. forget, after a page that says how many
    page.get_by_label("Select reader3@example.com").check()
    page.get_by_label("Action").select_option("forget")
    page.get_by_role("button", name="Apply").click()
    page.get_by_role("heading", name="Forget 1 subscriber?").wait_for()
    shot("forget-many")
    page.get_by_role("button", name="Forget 1 subscriber").click()
    assert page.locator("#act-done").inner_text() == "Forgot 1 subscriber."

    # 1. one subscriber: name and tags, Save; unsubscribe, then back only with their consent
    page.get_by_role("link", name="reader2@example.com").click()
    page.get_by_label("Name").fill("Ann Lee")
    page.get_by_label("Tags").fill("press, donor 2024")
    page.get_by_role("button", name="Save").click()
    assert page.get_by_role("status").first.inner_text() == "Saved: name; tagged donor 2024."
    page.get_by_role("button", name="Unsubscribe from crank").click()
    page.get_by_role("button", name="Resubscribe to crank").click()
    page.get_by_role("heading", name="Resubscribe reader2@example.com to crank?").wait_for()
    assert "This needs their consent." in page.get_by_role("status").inner_text()
    shot("consent")
    page.get_by_role("button", name="They asked: resubscribe").click()
    assert "they asked to come back" in page.get_by_role("status").first.inner_text()
    assert page.get_by_role("cell", name="admin:olga").count() >= 3
    shot("subscriber")

    # 4. the issue: its failed reader and why, Retry failed; then a send behind its confirmation
    page.goto(f"{live.url}/admin/issues/2024-11")
    assert page.get_by_role("cell", name="jöhn@example.org", exact=True).is_visible()
    assert "SMTPUTF8" in page.locator("#failed-h + p + div table").inner_text()
    shot("issue")
    page.get_by_role("button", name="Retry failed").click()
    assert "Retrying 1 failed readers of crank: started." in page.locator("#send-note").inner_text()
    issues.started("2024-11").join(30)
    page.get_by_label("To the list").select_option("digest")
    page.get_by_role("button", name="Send…").click()
    page.get_by_role("heading", name="Send 2024-11?").wait_for()
    assert page.locator("#readers").inner_text() == "3" and "0 error(s)" in page.locator("#lint").inner_text()
    shot("send-confirm")
    page.get_by_role("button", name="Yes, send to 3 readers of digest").click()
    assert page.locator("#send-note").inner_text() == "Sending to 3 readers of digest: started."
    issues.started("2024-11").join(30)

    # 6. the audit log, filtered by user
    page.get_by_role("link", name="Audit log").click()
    page.get_by_label("Action").select_option("subscriber.forget")
    page.get_by_role("button", name="Filter").click()
    assert page.get_by_text("(forgotten)").count() == 1 and "reader3@" not in page.content()
    page.get_by_label("Action").select_option("")
    page.get_by_role("button", name="Filter").click()
    shot("audit")

    # 5. roles: the owner makes vera an editor and back
    page.get_by_role("link", name="Users").click()
    page.get_by_label("Role of vera").select_option("editor")
    page.get_by_role("button", name="Set role of vera").click()
    assert page.get_by_role("status").inner_text() == "vera is now editor (was viewer)."
    page.get_by_label("Role of vera").select_option("viewer")
    page.get_by_role("button", name="Set role of vera").click()
    shot("users")

    # 8. dark mode, like the readers' pages
    page.emulate_media(color_scheme="dark")
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(22, 22, 22)"
    shot("dark")
    page.emulate_media(color_scheme="light")

    # 5. a viewer reads everything and sees no button that changes anything
    page.get_by_role("button", name="Log out").click()
    page.get_by_label("User name").fill("vera")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("heading", name="Dashboard").wait_for()
    page.goto(f"{live.url}/admin/subscribers?tag=press")
    assert page.get_by_role("checkbox").count() == 0 and page.get_by_role("button", name="Apply").count() == 0
    page.get_by_role("link", name="reader0@example.com").click()
    assert page.get_by_role("button", name="Save").count() == 0
    assert page.get_by_role("button", name="Unsubscribe from crank").count() == 0
    shot("viewer")
    context.close()
    assert problems == []
    assert len(list(shots.glob("*.png"))) == 2 * len(taken) == 24
