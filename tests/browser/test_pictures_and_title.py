"""Pictures and the title in headless Chromium, on a phone (375 px) and a desktop (1024 px), with
images on and off: nothing scrolls sideways, no picture is wider than its column, and the title's
"|" never hangs at the end of a line.

The pictures are 1600x900 PNGs at https://img.example.org/, answered by Playwright's router from
memory (images on) or refused (images off, as Outlook does by default); nothing reaches the network.
"""

from __future__ import annotations

import os
import struct
import zlib

import pytest

from tests.browser.test_email_layout import ARGS, CHROMIUM
from tests.services import missing

pytestmark = pytest.mark.browser

ISSUE = """+++
subject = "CRANK Call | December 2024"
preheader = "Pictures that fit"
date = 2024-12-01
image = "https://img.example.org/lead.png"
image_alt = "Two leaders shaking hands in a gilded hall"
image_credit = "Image credit: Press Secretary of the President (via Wikimedia Commons)"
+++

# CRANK Call | December 2024

A standfirst paragraph.

## Highlights

### A story with a wide photo

![A convoy on a bridge](https://img.example.org/wide.png "The convoy, seen from the river bank.")

Text after the photo, with a small ![chart](https://img.example.org/small.png) inside the line.

| Country | Exports (bn $) | Share of total trade with the other three |
|:--|--:|--:|
| China | 240 | 34% |
| Russia | 110 | 21% |
"""


def png(width: int, height: int) -> bytes:
    """A plain grey PNG of the given size (the real thing a client would fetch)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\x88\x88\x88" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b""))


def built(tmp_path_factory, text: str, name: str = "2024-12.md") -> str:
    """The email of issue `text`, filled in for the preview reader."""
    from mailer.compose.preview import fill_preview, preview_values
    from mailer.compose.render import compose_issue
    from mailer.config import load_settings
    from tests.conftest import REPO

    settings = load_settings(REPO / "config.toml")
    path = tmp_path_factory.mktemp("issues") / name
    path.write_text(text, encoding="utf-8")
    composed = compose_issue(path, settings)
    return fill_preview(composed.html, preview_values(settings, composed.slug), "html")


@pytest.fixture(scope="module")
def email_html(tmp_path_factory):
    return built(tmp_path_factory, ISSUE)


@pytest.fixture(scope="module")
def browser(request):
    if not os.access(CHROMIUM, os.X_OK):
        missing(f"Debian's chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    playwright = request.getfixturevalue("playwright")   # the process's one (tests/conftest.py)
    chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
    yield chromium
    chromium.close()


PICTURE = png(1600, 900)


def open_email(browser, html: str, width: int, images: bool):
    page = browser.new_page(viewport={"width": width, "height": 900})
    if images:
        page.route("https://img.example.org/**", lambda route: route.fulfill(body=PICTURE, content_type="image/png"))
    else:
        page.route("https://img.example.org/**", lambda route: route.abort())
    page.set_content(html, wait_until="load")
    return page


CARD = "document.querySelector('h1.title').closest('div.dm-card')"
BOXES = "[...document.images].map(i => [i.alt, i.getBoundingClientRect().width, i.getBoundingClientRect().height])"


@pytest.mark.parametrize("images", [True, False], ids=["images on", "images off"])
@pytest.mark.parametrize("width", [375, 1024])
def test_pictures_fit_their_column_without_sideways_scrolling(browser, email_html, width, images):
    page = open_email(browser, email_html, width, images)
    assert page.evaluate("document.documentElement.scrollWidth") == width
    card = page.evaluate(f"{CARD}.getBoundingClientRect().width")
    boxes = page.evaluate(BOXES)
    assert len(boxes) == 3
    for alt, w, _h in boxes:
        assert 0 < w <= card <= 600, alt
    by_alt = {alt: (w, h) for alt, w, h in boxes}
    lead, wide = by_alt["Two leaders shaking hands in a gilded hall"], by_alt["A convoy on a bridge"]
    if images:     # as wide as the column allows, in proportion (1600x900)
        assert lead[0] == card and abs(lead[1] - card * 9 / 16) <= 1
        assert wide[0] == (card - 40 if width == 375 else 520) and abs(wide[1] - wide[0] * 9 / 16) <= 1
    texts = page.evaluate("document.body.innerText")
    assert "The convoy, seen from the river bank." in texts and "Image credit: Press Secretary" in texts
    table = page.evaluate("document.querySelector('table.data').getBoundingClientRect().right")
    assert table <= page.evaluate(f"{CARD}.getBoundingClientRect().right")
    page.close()


TITLE = """(() => {
  const box = el => el.getBoundingClientRect();
  const name = document.querySelector('.title-name'), sep = document.querySelector('.title-sep');
  const edition = document.querySelector('.title-edition');
  const words = document.createRange(); words.selectNodeContents(edition);
  const lines = [...words.getClientRects()].map(r => Math.round(r.top));
  return {sepShown: getComputedStyle(sep).display !== 'none', sepTop: Math.round(box(sep).top),
          sepRight: Math.round(box(sep).right), editionTop: Math.min(...lines),
          editionLines: new Set(lines).size, nameTop: Math.round(box(name).top),
          title: Math.round(box(document.querySelector('h1.title')).height)};
})()"""


def test_on_a_phone_the_edition_gets_its_own_line_without_the_separator(browser, email_html):
    page = open_email(browser, email_html, 375, images=False)
    title = page.evaluate(TITLE)
    assert not title["sepShown"]                                  # no "|" left hanging
    assert title["editionTop"] > title["nameTop"] and title["editionLines"] == 1
    page.close()


def test_on_a_desktop_the_title_is_one_line_with_its_separator(browser, email_html):
    page = open_email(browser, email_html, 1024, images=False)
    title = page.evaluate(TITLE)
    assert title["sepShown"] and title["sepTop"] == title["nameTop"] == title["editionTop"]
    assert title["title"] <= 45                                    # one 40px line
    page.close()


def test_without_media_queries_the_separator_starts_the_second_line(browser, email_html):
    """Clients that ignore <style> media queries: the "|" is glued to the edition."""
    html = email_html.replace("@media only screen and (max-width: 480px)", "@media (max-width: 1px)")
    page = open_email(browser, html, 375, images=False)
    title = page.evaluate(TITLE)
    assert title["sepShown"] and title["sepTop"] == title["editionTop"] > title["nameTop"]
    page.close()


UNDER_THE_TITLE = """+++
subject = "CRANK Call | December 2024"
preheader = "A picture right under the title"
date = 2024-12-01
+++

# CRANK Call | December 2024

![Two leaders shaking hands in a gilded hall](https://img.example.org/lead.png "The signing, in June.")

Dear {{ first_name | default("reader") }},

This month, the axis and its discontents.

| Country | Exports (bn $) | Share of total trade with the other three |
|:--|--:|--:|
| China | 240 | 34% |

- An item before the first section.

> A quotation, set apart.

## Highlights

Text.
"""


@pytest.fixture(scope="module")
def under_the_title_html(tmp_path_factory):
    return built(tmp_path_factory, UNDER_THE_TITLE)


@pytest.mark.parametrize("width", [375, 1024])
def test_a_picture_under_the_title_builds_and_fits(browser, under_the_title_html, width):
    """Issue 25: a picture right under the title crashed the build; any block may stand there."""
    page = open_email(browser, under_the_title_html, width, images=True)
    assert page.evaluate("document.documentElement.scrollWidth") == width
    card = page.evaluate(f"{CARD}.getBoundingClientRect()")
    [(alt, w, h)] = page.evaluate(BOXES)
    assert alt == "Two leaders shaking hands in a gilded hall"
    assert w == (card["width"] - 40 if width == 375 else 520) and abs(h - w * 9 / 16) <= 1
    title = page.evaluate("document.querySelector('h1.title').getBoundingClientRect().bottom")
    picture = page.evaluate("document.images[0].getBoundingClientRect().top")
    assert title < picture                                          # under the title
    for selector in ("table.data", "blockquote.quote", "p.item"):
        assert page.evaluate(f"document.querySelector('{selector}').getBoundingClientRect().right") <= card["right"]
    greeting = page.evaluate("[...document.querySelectorAll('p.para')].map(p => p.textContent)")
    assert greeting[:2] == ["Dear Preview,", "This month, the axis and its discontents."]
    assert page.evaluate("document.querySelector('p.standfirst')") is None    # a greeting opens it
    page.close()
