"""An admin's walk through /admin in headless Chromium: log in, create a list, upload a CSV and
read the report, search a subscriber and unsubscribe them, preview an issue, send a proof, read a
report. Every page is photographed at 375 and 1280 px wide into tests/artifacts/admin/ (ignored
by git) and must fit a 375 px screen without sideways scrolling."""

from __future__ import annotations

import shutil

import pytest

from tests.web.admin_helpers import PASSWORD, USER, add_user, post_events, send_issue

pytestmark = pytest.mark.browser
ARTIFACTS = "tests/artifacts/admin"
WIDTHS = (375, 1280)
# What sticks out, when a page is too wide (elements inside a scrolling box do not count).
WIDEST = """[...document.querySelectorAll('body *')]
    .filter(e => e.getBoundingClientRect().right > window.innerWidth && !e.parentElement.closest('.scroll, .frames'))
    .map(e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right))
    .slice(0, 5).join(', ')"""
AUDIENCE = "email,name\nann.lee@example.com,Ann Lee\nbob@example.org,Bob\nnot-an-address,Nobody\n"


@pytest.fixture
def desk(chromium, live):
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("requestfailed", lambda req: problems.append(f"failed: {req.url}")
            if req.url.startswith(live.url) else None)
    page.problems = problems
    yield page
    context.close()


@pytest.fixture
def shots(repo):
    folder = repo / ARTIFACTS
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def test_admin_walk(live, desk, shots, repo, signer, tmp_path):
    page = desk
    taken: list[str] = []

    def shot(name: str) -> None:
        for width in WIDTHS:
            page.set_viewport_size({"width": width, "height": 900})
            if width == 375:
                assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), \
                    f"{name} is wider than a 375 px phone: " + page.evaluate(WIDEST)
            page.screenshot(path=str(shots / f"{len(taken) + 1:02}-{name}-{width}.png"), full_page=True)
        taken.append(name)
        page.set_viewport_size({"width": 1280, "height": 900})

    add_user(live)
    with live.web.engine.begin() as conn:       # readers of the issue, so it has a report to read
        from subscribers import store

        crank = store.get_list(conn, "crank").id
        for i in range(3):
            store.add_subscriber(conn, f"reader{i}@example.com", crank)
    send_issue(live, repo)
    post_events(live, signer, [("reader0@example.com", "delivered"), ("reader1@example.com", "delivered"),
                               ("reader2@example.com", "bounce"), ("reader0@example.com", "open")])

    # log in, by keyboard
    page.goto(f"{live.url}/admin")
    page.wait_for_url("**/admin/login?next=%2Fadmin")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    shot("login")
    page.get_by_label("User name").fill(USER)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("Password").press("Enter")
    page.get_by_role("heading", name="Dashboard", level=1).wait_for()
    assert page.get_by_role("img", name="Delivery events per day").is_visible()
    shot("dashboard")

    # create a list
    page.get_by_role("navigation", name="Admin sections").get_by_role("link", name="Lists").click()
    page.get_by_label("Name", exact=True).fill("walk")
    page.get_by_label("Title").fill("The walk list")
    shot("lists")
    page.get_by_role("button", name="Create list").click()
    page.get_by_role("heading", name="List walk").wait_for()
    assert "Created list walk." in page.get_by_role("status").first.inner_text()

    # upload a CSV: the dry run's report, then applied
    audience = tmp_path / "audience.csv"
    audience.write_text(AUDIENCE, encoding="utf-8")
    page.get_by_label("CSV file", exact=True).set_input_files(str(audience))
    shot("list")
    page.get_by_role("button", name="Check the file (dry run)").click()
    summary = page.locator("#import-summary")
    assert summary.inner_text() == ("Dry run, nothing was written. Read 3 rows from audience.csv into walk: 2 new, "
                                    "0 updated, 0 unchanged, 1 invalid, 0 suppressed, 0 duplicates merged.")
    assert page.get_by_role("cell", name="not-an-address").is_visible()
    shot("import-dry-run")
    page.get_by_role("button", name="Apply this import").click()
    assert summary.inner_text().startswith("Read 3 rows from audience.csv into walk: 2 new")
    shot("import-applied")

    # search a subscriber, then unsubscribe them
    page.get_by_role("link", name="Subscribers").click()
    page.get_by_role("searchbox", name="Search subscribers").fill("ann")
    page.get_by_role("button", name="Search").click()
    assert page.get_by_role("status").inner_text() == "1 match for “ann”"
    shot("search")
    page.get_by_role("link", name="ann.lee@example.com").click()
    page.get_by_role("heading", name="ann.lee@example.com").wait_for()
    shot("subscriber")
    page.get_by_role("button", name="Unsubscribe from walk").click()
    assert page.get_by_role("status").inner_text() == "Unsubscribed."
    assert page.get_by_role("button", name="Resubscribe to walk").is_visible()
    shot("unsubscribed")

    # preview an issue and send a proof
    page.get_by_role("link", name="Issues").click()
    shot("issues")
    page.get_by_role("link", name="2024-11").first.click()
    page.get_by_role("heading", name="Issue 2024-11").wait_for()
    phone_frame = page.frame_locator("iframe[title='The email at phone width']")
    phone_frame.locator("body").wait_for()
    assert "CRANK Call" in phone_frame.locator("body").inner_text()
    assert "Lint report for" in page.locator("pre.report").inner_text()
    shot("issue")
    page.get_by_label("To", exact=True).fill("editor@example.org")
    page.get_by_role("button", name="Send proof").click()
    page.get_by_role("heading", name="Send a proof of 2024-11?").wait_for()   # the lint result first
    page.get_by_role("button", name="Yes, send the proof").click()
    assert page.get_by_role("list", name="Proof results").inner_text().startswith("Proof to editor@example.org: ")
    shot("proof-sent")
    proofs = [p for p in live.settings.delivery.outbox_dir.rglob("*.eml") if b"[PROOF]" in p.read_bytes()]
    assert len(proofs) == 1

    # read the report
    page.get_by_role("link", name="Read the report").click()
    page.get_by_role("heading", name="Report on 2024-11").wait_for()
    assert page.get_by_role("img", name="Events per day for 2024-11").is_visible()
    shot("report")

    assert page.problems == []
    assert len(list(shots.glob("*.png"))) == 2 * len(taken) == 26
