"""The built November email in headless Chromium: a phone, a desktop, and dark mode."""

from __future__ import annotations

import os

import pytest

from mailer.compose.preview import fill_preview, preview_values
from mailer.compose.render import compose_issue
from tests.services import missing

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]

pytestmark = [pytest.mark.browser]


@pytest.fixture(autouse=True)
def _chromium_installed():
    if not os.access(CHROMIUM, os.X_OK):
        missing(f"Debian's chromium is not installed at {CHROMIUM} (apt-get install chromium)")


@pytest.fixture(scope="module")
def email_html():
    from mailer.config import load_settings
    from tests.conftest import REPO

    settings = load_settings(REPO / "config.toml")
    composed = compose_issue(REPO / "issues/2024-11.md", settings)
    return fill_preview(composed.html, preview_values(settings, composed.slug), "html")


@pytest.fixture(scope="module")
def browser(playwright):
    chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
    yield chromium
    chromium.close()


def open_email(browser, html: str, width: int, scheme: str = "light"):
    page = browser.new_page(viewport={"width": width, "height": 900}, color_scheme=scheme)
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.set_content(html, wait_until="load")
    return page, requests


COLUMN = "document.querySelector('h1.title').closest('div.dm-card')"


def test_phone_has_no_sideways_scrolling(browser, email_html):
    page, requests = open_email(browser, email_html, 375)
    widths = page.evaluate("[document.documentElement.scrollWidth, document.body.scrollWidth, innerWidth]")
    assert widths == [375, 375, 375]
    column = page.evaluate(f"{COLUMN}.getBoundingClientRect().width")
    assert column == 375                                          # one column, edge to edge
    text = page.evaluate("document.querySelector('p.para').getBoundingClientRect()")
    assert text["x"] >= 16 and text["width"] >= 300             # phone padding, not desktop's
    assert requests == []                                         # nothing fetched
    page.close()


def test_desktop_has_a_centred_600px_column(browser, email_html):
    page, _ = open_email(browser, email_html, 1024)
    assert page.evaluate("document.documentElement.scrollWidth") == 1024
    box = page.evaluate(f"{COLUMN}.getBoundingClientRect().toJSON()")
    viewport = page.evaluate("document.documentElement.clientWidth")   # less a scrollbar, if any
    assert box["width"] == 600 and box["x"] == (viewport - 600) / 2   # centred
    line = page.evaluate("document.querySelector('p.para').getBoundingClientRect().width")
    assert 480 <= line <= 540                                     # ~75 characters of 17px serif
    size = page.evaluate("getComputedStyle(document.querySelector('p.para')).fontSize")
    assert size == "17px"
    page.close()


def luminance(rgb: str) -> float:
    r, g, b = (int(v) / 255 for v in rgb[rgb.index("(") + 1:rgb.index(")")].split(",")[:3])
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in (r, g, b)]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast(a: str, b: str) -> float:
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_text_is_legible_in_light_and_dark_mode(browser, email_html, scheme):
    page, _ = open_email(browser, email_html, 375, scheme)
    colours = page.evaluate(f"""() => {{
        const style = (el) => getComputedStyle(el);
        const card = style({COLUMN}).backgroundColor;
        const page = style(document.querySelector('div.dm-page')).backgroundColor;
        return {{card, page,
                 body: style(document.querySelector('p.para')).color,
                 link: style(document.querySelector('a[href^="mailto:"]')).color,
                 source: style(document.querySelector('span.source')).color,
                 footer: style(document.querySelector('p.foot')).color}};
    }}""")
    assert contrast(colours["body"], colours["card"]) >= 7          # WCAG AAA for body text
    assert contrast(colours["link"], colours["card"]) >= 4.5
    assert contrast(colours["source"], colours["card"]) >= 4.5
    assert contrast(colours["footer"], colours["page"]) >= 4.5
    assert (luminance(colours["card"]) < 0.05) == (scheme == "dark")
    page.close()
