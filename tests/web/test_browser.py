"""Headless Chromium at phone width against the real server: pages read well and break no CSP."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser


def watch(page) -> list[str]:
    """Collect console errors (a CSP violation shows up there) and failed requests."""
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("requestfailed", lambda req: problems.append(f"failed: {req.url}"))
    return problems


def fits_phone(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_subscribe_form_on_a_phone(live, phone, tmp_path):
    problems = watch(phone)
    phone.goto(f"{live.url}/subscribe?list=crank")
    assert phone.get_by_role("heading", level=1).inner_text().startswith("Subscribe to")
    assert phone.get_by_label("Email address").is_visible()
    box = phone.locator("#website").bounding_box()
    assert box is None or box["x"] + box["width"] < 0        # the honeypot stays out of sight
    assert fits_phone(phone)
    phone.screenshot(path=str(tmp_path / "subscribe.png"), full_page=True)
    assert problems == []


def test_subscribe_confirm_unsubscribe_walk(live, phone, tmp_path):
    """A reader on a phone: the form, the mail in the outbox, the confirm button, the unsubscribe
    link from the mail's footer. Screenshots of each page land in tmp_path."""
    from tests.web.outbox_mail import wait_for_mails

    problems = watch(phone)
    shots = tmp_path / "screens"

    def shot(name: str, page=phone) -> None:
        assert fits_phone(page), f"{name} is wider than the phone"
        page.screenshot(path=str(shots / f"{name}.png"), full_page=True)

    phone.goto(f"{live.url}/subscribe?list=crank")
    phone.get_by_label("Email address").fill("walker@example.com")
    phone.get_by_label("Name").fill("Wal Ker")
    shot("1-subscribe")
    phone.get_by_role("button", name="Subscribe").click()
    phone.get_by_role("heading", name="Check your inbox").wait_for()
    shot("2-check-inbox")

    [mail] = wait_for_mails(live.settings.delivery.outbox_dir, 1)
    reader = phone.context.new_page()                  # the mail itself, as a phone shows it
    reader.set_content(mail.html)
    shot("3-confirmation-mail", reader)
    reader.close()
    phone.goto(mail.confirm_url)
    shot("4-confirm")
    phone.get_by_role("button", name="Yes, subscribe me").click()
    phone.get_by_role("heading", name="You are subscribed").wait_for()
    shot("5-confirmed")

    phone.goto(mail.unsubscribe_url)
    assert phone.get_by_role("heading", level=1).inner_text() == "Unsubscribe from CRANK Call?"
    shot("6-unsubscribe")
    phone.get_by_role("button", name="Unsubscribe").click()
    phone.get_by_role("heading", name="You are unsubscribed").wait_for()
    assert phone.get_by_role("link", name="Subscribe again").is_visible()
    shot("7-unsubscribed")
    assert problems == []
    assert len(list(shots.glob("*.png"))) == 7


def test_archive_issue_on_a_phone(live, phone, tmp_path, repo):
    """The view-online page: the mail as sent, readable at phone width, no CSP complaints."""
    import shutil

    from tests.web.test_archive import mark_sent

    shutil.copy(repo / "issues" / "2024-11.md", live.settings.compose.issues_dir / "2024-11.md")
    mark_sent(live, "2024-11")
    problems = watch(phone)
    phone.goto(f"{live.url}/archive")
    phone.get_by_role("link", name="CRANK Call | November 2024").click()
    phone.wait_for_url("**/archive/2024-11")
    assert fits_phone(phone)
    phone.screenshot(path=str(tmp_path / "archive-2024-11.png"), full_page=True)
    assert problems == []
