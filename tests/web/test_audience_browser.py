"""The list picker, the preferences page and the archive in headless Chromium, at a phone's width
(375 px) and a laptop's (1024 px), in light and dark mode: they fit, work and break no CSP."""

from __future__ import annotations

import pytest

from subscribers import store
from tests.web.conftest import LIST
from tests.web.test_audience_pages import lists, statuses, two_issues  # noqa: F401 - fixtures
from tests.web.test_readers import link

pytestmark = pytest.mark.browser
WIDTHS = [375, 1024]


@pytest.fixture(params=WIDTHS, ids=[f"{w}px" for w in WIDTHS])
def page(request, chromium):
    """A fresh page at 375 or 1024 px; `page.problems` collects CSP and other console errors."""
    width = request.param
    context = chromium.new_context(viewport={"width": width, "height": 900}, is_mobile=width < 500,
                                   has_touch=width < 500)
    tab = context.new_page()
    tab.problems = []
    tab.on("console", lambda msg: tab.problems.append(msg.text) if msg.type == "error" else None)
    yield tab
    context.close()


def fits(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def csp_errors(page) -> list[str]:
    return [p for p in page.problems if "Content Security Policy" in p]


def test_picker_choose_two_lists(lists, page):
    page.goto(f"{lists.url}/subscribe?list=digest")
    assert page.get_by_role("checkbox", name="The Digest").is_checked()
    assert not page.get_by_role("checkbox", name="CRANK Call").is_checked()
    assert page.get_by_text("Staff notes").count() == 0
    assert fits(page)
    page.locator("label.choice").get_by_text("CRANK Call", exact=True).click()   # the whole label is the target
    assert page.get_by_role("checkbox", name="CRANK Call").is_checked()
    box = page.locator("label.choice").first.bounding_box()
    assert box["height"] >= 44                                   # a finger-sized target
    page.get_by_label("Email address").fill("ann@example.com")
    page.get_by_role("button", name="Subscribe").click()
    page.get_by_role("heading", name="Check your inbox").wait_for()
    assert statuses(lists) == {"crank": "unconfirmed", "digest": "unconfirmed"}
    assert page.problems == []


def test_picker_asks_for_a_choice(lists, page):
    page.goto(f"{lists.url}/subscribe")
    page.get_by_label("Email address").fill("ann@example.com")
    page.get_by_role("button", name="Subscribe").click()
    page.get_by_role("alert").wait_for()
    assert page.get_by_role("alert").inner_text() == "Please choose at least one list."
    assert page.get_by_label("Email address").input_value() == "ann@example.com"   # nothing typed is lost
    assert statuses(lists) == {}


def test_preferences_change_lists_name_then_leave(lists, page):
    with lists.web.engine.begin() as conn:
        added = store.add_subscriber(conn, "ann@example.com", store.get_list(conn, LIST).id, name="Ann")
    # a fresh link (the mailed "preferences" token): joining a list and renaming need one; an
    # issue's footer link may only leave lists (mailer/web/prefs.py)
    token = link(lists, "preferences", added.subscriber_id, store_list_id(lists, LIST))
    page.goto(f"{lists.url}/preferences/{token}")
    assert fits(page)
    assert page.get_by_role("checkbox", name="CRANK Call").is_checked()
    page.get_by_role("checkbox", name="CRANK Call").uncheck()
    page.get_by_role("checkbox", name="The Digest").check()
    page.get_by_label("Your name").fill("Ann Lee")
    page.get_by_role("button", name="Save").click()
    page.get_by_role("status").wait_for()
    assert "joined The Digest" in page.get_by_role("status").inner_text()
    assert statuses(lists) == {"crank": "unsubscribed", "digest": "active"}
    assert page.get_by_label("Your name").input_value() == "Ann Lee"
    page.get_by_role("button", name="Unsubscribe from all lists").click()
    page.get_by_role("heading", name="You left every list").wait_for()
    assert statuses(lists) == {"crank": "unsubscribed", "digest": "unsubscribed"}
    assert fits(page) and page.problems == []


def store_list_id(live, name: str) -> int:
    with live.web.engine.connect() as conn:
        return store.get_list(conn, name).id


def test_fresh_link_form(live, page):
    page.goto(f"{live.url}/unsubscribe/not-a-token")
    page.get_by_role("link", name="Get a fresh link by email").click()
    page.get_by_label("Email address").fill("nobody@example.com")
    page.get_by_role("button", name="Email me a link").click()
    page.get_by_role("heading", name="Check your inbox").wait_for()
    assert fits(page) and csp_errors(page) == []     # (the dead link's 400 is logged as a failed load)


def test_archive_index_issue_and_neighbours(two_issues, page):
    page.goto(f"{two_issues.url}/archive")
    items = page.locator("ol.issues li")
    assert items.count() == 2 and "December 2024" in items.first.inner_text()
    assert "December 1, 2024" in items.first.inner_text()
    items.nth(1).get_by_role("link").click()
    page.wait_for_url("**/archive/2024-11")
    assert fits(page)
    assert page.get_by_role("link", name="Past issues").first.is_visible()            # the site's header/footer
    assert page.get_by_text("View this issue in your browser").count() == 0
    assert page.get_by_role("heading", name="Get the next issue by email").is_visible()
    page.get_by_role("link", name="CRANK Call | December 2024", exact=True).click()   # (the arrows are aria-hidden)
    page.wait_for_url("**/archive/2024-12")
    assert page.get_by_role("link", name="CRANK Call | November 2024", exact=True).is_visible()
    assert csp_errors(page) == []


@pytest.mark.parametrize("path", ["/subscribe", "/archive", "/preferences"])
def test_pages_follow_dark_mode(live, chromium, path):
    colours = {}
    for scheme in ("light", "dark"):
        context = chromium.new_context(viewport={"width": 375, "height": 800}, color_scheme=scheme)
        tab = context.new_page()
        tab.goto(f"{live.url}{path}")
        colours[scheme] = tab.evaluate("[getComputedStyle(document.body).backgroundColor,"
                                       " getComputedStyle(document.body).color]")
        context.close()
    assert colours["light"] == ["rgb(253, 252, 248)", "rgb(27, 27, 27)"]
    assert colours["dark"] == ["rgb(23, 21, 15)", "rgb(236, 232, 223)"]
