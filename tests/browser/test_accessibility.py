"""axe-core, the accessibility engine, over the built email in headless Chromium: the November
issue with a lead picture (credit and caption) and a captioned photo has no serious or critical
violation on a phone (375 px) and a desktop (1024 px), in the light and the dark colour scheme
(Chromium's own prefers-color-scheme, as Apple Mail applies it). The lint report's own checks
(mailer/compose/accessibility.py) find nothing in it either.

axe-core comes from npm (tests/browser/package.json and its lock; `.ci/run` installs it with
`npm ci --prefix tests/browser`); the pictures are answered by Playwright's router from memory.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser.test_pictures_and_title import browser, built, png  # noqa: F401 - browser: a fixture
from tests.services import missing

pytestmark = pytest.mark.browser

AXE = Path(__file__).resolve().parent / "node_modules" / "axe-core" / "axe.min.js"
LEAD = ('image = "https://img.example.org/putin-kim.png"\n'
        'image_alt = "Vladimir Putin and Kim Jong Un shake hands at the signing in Pyongyang"\n'
        'image_caption = "Putin and Kim at the signing of the treaty, June 2024."\n'
        'image_credit = "Image credit: Press Secretary for the President of the Russian Federation '
        '([Wikimedia Commons](https://commons.wikimedia.org/))"\n')
PHOTO = ('![Two Russian bombers and a Chinese bomber flying in formation over the sea]'
         '(https://img.example.org/bombers.png "A joint patrol over the Sea of Japan, November 30.")\n\n')


def november_with_pictures(repo: Path) -> str:
    """issues/2024-11.md with a lead picture in its settings and a captioned photo in a story."""
    text = (repo / "issues/2024-11.md").read_text(encoding="utf-8")
    text = text.replace("date = 2024-11-01\n+++\n", f"date = 2024-11-01\n{LEAD}+++\n", 1)
    story = "### Nuclear-capable bombers from Russia and China prompt South Korean and Japanese intercepts\n\n"
    assert LEAD in text and story in text
    return text.replace(story, story + PHOTO, 1)


@pytest.fixture(scope="module")
def email_html(tmp_path_factory):
    from tests.conftest import REPO

    return built(tmp_path_factory, november_with_pictures(REPO), "2024-11.md")


@pytest.fixture(scope="module")
def axe_script():
    if not AXE.exists():
        missing(f"axe-core is not installed at {AXE} (npm ci --prefix tests/browser)")
    return AXE.read_text(encoding="utf-8")


PICTURE = png(1600, 900)


def open_email(browser, html: str, width: int, scheme: str):
    page = browser.new_page(viewport={"width": width, "height": 900}, color_scheme=scheme)
    page.route("https://img.example.org/**", lambda route: route.fulfill(body=PICTURE, content_type="image/png"))
    page.route("https://commons.wikimedia.org/**", lambda route: route.abort())
    page.set_content(html, wait_until="load")
    return page


def violations(page, axe_script: str) -> list[dict]:
    page.evaluate(axe_script)
    return page.evaluate("""async () => (await axe.run(document, {resultTypes: ['violations']})).violations
        .map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 3)}))""")


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", [375, 1024])
def test_axe_finds_no_serious_or_critical_violation(browser, axe_script, email_html, width, scheme):
    page = open_email(browser, email_html, width, scheme)
    assert page.evaluate("[...document.images].every(i => i.complete && i.naturalWidth === 1600)")
    assert page.evaluate("matchMedia('(prefers-color-scheme: dark)').matches") == (scheme == "dark")
    found = violations(page, axe_script)
    assert [v for v in found if v["impact"] in ("serious", "critical")] == []
    page.close()


def test_axe_finds_what_lint_finds(browser, axe_script, email_html):
    """The two agree on a failure: captions without their dark-mode colour fail both."""
    from lxml import etree

    from mailer.compose.accessibility import check_contrast

    html = email_html.replace("a.quiet-link, .caption {", "a.quiet-link {")
    assert html != email_html
    page = open_email(browser, html, 1024, "dark")
    found = {v["id"]: v for v in violations(page, axe_script)}
    assert found["color-contrast"]["impact"] == "serious"
    assert any("caption" in target for target in found["color-contrast"]["nodes"])
    page.close()
    messages = [p.message for p in check_contrast(etree.fromstring(html, etree.HTMLParser()))]
    assert len(messages) == 1 and messages[0].startswith("text in p.caption, span.credit has contrast 2.4:1 "
                                                         "in the dark colour scheme")


STYLES = """[...document.querySelectorAll('body *')].map(e => {
  const s = getComputedStyle(e);
  return [e.tagName, e.className, s.color, s.backgroundColor, s.borderTopColor, s.display];
})"""


def test_the_previews_dark_mode_is_what_a_dark_client_shows(browser, email_html):
    """The preview's Dark button shows /email.html?dark=1 in a page that prefers light: every
    element's colours are those of the email in a browser that prefers dark, alt text included."""
    from mailer.compose.preview import dark_mode

    real = open_email(browser, email_html, 1024, "dark")
    preview = open_email(browser, dark_mode(email_html), 1024, "light")
    assert preview.evaluate(STYLES) == real.evaluate(STYLES)
    alt = "getComputedStyle(document.images[0]).color"
    assert preview.evaluate(alt) == real.evaluate(alt) == "rgb(255, 255, 255)"    # white on the dark card
    real.close()
    preview.close()
