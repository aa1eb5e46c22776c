"""The lint report's accessibility checks (mailer/compose/accessibility.py) on small documents:
the colours a browser would compute, light and dark, and the contrast WCAG asks of them. The same
checks over the real email, next to axe-core's, are in tests/browser/test_accessibility.py."""

from __future__ import annotations

import pytest
from lxml import etree

from mailer.compose.accessibility import (
    Scheme,
    check_alt,
    check_contrast,
    check_headings,
    check_lang,
    contrast,
    hex_of,
    parse_colour,
    text_samples,
)
from mailer.compose.findings import Severity
from tests.browser.test_accessibility import november_with_pictures

META = '<meta name="color-scheme" content="light dark">'


def tree(body: str, head: str = META, html: str = '<html lang="en">'):
    return etree.fromstring(f"{html}<head>{head}</head><body>{body}</body></html>", etree.HTMLParser())


def seen(body: str, scheme: Scheme, head: str = META) -> list[tuple[str, str, str]]:
    """(text, colour, background) of each run of text, as a reader in `scheme` sees it."""
    return [(s.text, hex_of(s.colour), hex_of(s.background)) for s in text_samples(tree(body, head), scheme)]


DARK_RULES = "<style>@media (prefers-color-scheme: dark) { .c { color: #eeeeee !important; } " \
             ".card { background: #222222 !important; } }</style>"

# (body, head, scheme, what the reader sees: text, colour, background)
CASCADE = [
    ("<p>plain</p>", META, Scheme.LIGHT, [("plain", "#000000", "#ffffff")]),
    ("<p>plain</p>", META, Scheme.DARK, [("plain", "#ffffff", "#121212")]),        # the browser's dark canvas
    ("<p>plain</p>", "", Scheme.DARK, [("plain", "#000000", "#ffffff")]),          # no color-scheme: light defaults
    ('<div style="color:#333;background:#fc0"><p>in <b>it</b></p></div>', META, Scheme.LIGHT,
     [("in", "#333333", "#ffcc00"), ("it", "#333333", "#ffcc00")]),
    ('<table bgcolor="#003366"><tr><td style="color:#fff">cell</td></tr></table>', META, Scheme.LIGHT,
     [("cell", "#ffffff", "#003366")]),
    ('<p style="color:rgba(0,0,0,0.5)">half</p>', META, Scheme.LIGHT, [("half", "#808080", "#ffffff")]),
    ('<p style="color:#333">text <a href="x">link</a></p>', META, Scheme.LIGHT,      # links keep the UA colour
     [("text", "#333333", "#ffffff"), ("link", "#0000ee", "#ffffff")]),
    ('<div class="card" style="background:#fff"><p class="c" style="color:#111">t</p></div>', DARK_RULES,
     Scheme.LIGHT, [("t", "#111111", "#ffffff")]),
    ('<div class="card" style="background:#fff"><p class="c" style="color:#111">t</p></div>', DARK_RULES,
     Scheme.DARK, [("t", "#eeeeee", "#222222")]),                                    # !important beats inline
    ('<p class="c" style="color:#111">t</p>', "<style>.c { color: #999999; }</style>", Scheme.LIGHT,
     [("t", "#111111", "#ffffff")]),                                                 # inline beats the sheet
    ('<p class="c x">t</p>', "<style>p.c { color: #111111 !important; } .c { color: #999999 !important; }</style>",
     Scheme.LIGHT, [("t", "#111111", "#ffffff")]),                                   # specificity
    ('<p class="c">t</p>', "<style>@media (max-width: 480px) { .c { color: #999999; } }</style>"
                           '<style media="print">.c { color: #999999; }</style>', Scheme.LIGHT,
     [("t", "#000000", "#ffffff")]),                                                 # phones and print left out
    ('<div style="display:none">gone</div><p style="opacity:0">gone</p><p>| · —</p><p>kept</p>', META,
     Scheme.LIGHT, [("kept", "#000000", "#ffffff")]),
]


@pytest.mark.parametrize("body, head, scheme, expected", CASCADE)
def test_the_colours_a_reader_sees(body, head, scheme, expected):
    assert seen(body, scheme, head) == expected


@pytest.mark.parametrize("value, rgb, alpha", [
    ("#fff", (255, 255, 255), 1.0), ("#7A1712", (122, 23, 18), 1.0), ("#00000080", (0, 0, 0), 128 / 255),
    ("rgb(1, 2, 3)", (1, 2, 3), 1.0), ("rgba(1,2,3,0.25)", (1, 2, 3), 0.25), ("rgb(1 2 3 / 50%)", (1, 2, 3), 0.5),
    ("white", (255, 255, 255), 1.0), ("#1d1d1f !important", (29, 29, 31), 1.0),
])
def test_colours_are_read_as_css_writes_them(value, rgb, alpha):
    assert parse_colour(value) == (rgb, pytest.approx(alpha))


@pytest.mark.parametrize("value", ["transparent", "none", "inherit", ""])
def test_no_colour(value):
    assert parse_colour(value) is None


@pytest.mark.parametrize("a, b, ratio", [
    ("#000000", "#ffffff", 21.0), ("#777777", "#ffffff", 4.48), ("#5c5750", "#1d1d1f", 2.35),
])
def test_contrast_is_wcags(a, b, ratio):
    assert contrast(parse_colour(a)[0], parse_colour(b)[0]) == pytest.approx(ratio, abs=0.01)


# (text's style, what fails: None when it passes AA)
SIZES = [
    ("font-size:17px;color:#777", "has contrast 4.5:1 in both colour schemes (#777777 on #ffffff, e.g. 't'); "
                                  "WCAG AA needs 4.5:1 for text under 24px (18.66px bold)"),
    ("font-size:17px;color:#767676", None),
    ("font-size:24px;color:#949494", None),                                    # large: 3:1 (3.03)
    ("font-size:23px;color:#949494", "WCAG AA needs 4.5:1 for text under 24px"),
    ("font-size:19px;font-weight:bold;color:#949494", None),
    ("font-size:19px;font-weight:normal;color:#949494", "WCAG AA needs 4.5:1"),
]


@pytest.mark.parametrize("style, fails", SIZES)
def test_large_text_needs_3_to_1(style, fails):
    problems = check_contrast(tree(f'<p style="{style}">t</p>', head=""))     # light defaults in both
    if fails is None:
        assert problems == []
    else:
        assert len(problems) == 1 and fails in problems[0].message and problems[0].severity is Severity.ERROR


def test_alt_text_is_text_in_both_schemes():
    """A picture's alt text, shown until pictures load, is checked like any text."""
    body = ('<div style="background:#1d1d1f"><img alt="A convoy" src="https://example.org/c.png" '
            'style="font-size:13px"></div>')
    [problem] = check_contrast(tree(body, head=""))          # no color-scheme: black alt text on the dark card
    assert problem.message.startswith("the alt text of pictures (img) has contrast 1.2:1 in both colour schemes")
    [problem] = check_contrast(tree(body))                   # light and dark: the browser's white in dark
    assert "in the light colour scheme" in problem.message
    assert [s.alt for s in text_samples(tree(body), Scheme.DARK)] == [True]


@pytest.mark.parametrize("html, message", [
    ('<html lang="en">', None), ('<html lang="en-GB">', None), ('<html lang="fr-CA">', None),
    ("<html>", "the email's <html> names no language"), ('<html lang="und">', "the email's <html> names no language"),
    ('<html lang="English">', "is not a language tag"),
])
def test_the_document_names_its_language(html, message):
    problems = check_lang(tree("<p>x</p>", html=html))
    assert [message in p.message for p in problems] == ([] if message is None else [True])


@pytest.mark.parametrize("headings, warnings", [
    ("<h1>T</h1><h2>S</h2><h3>A</h3><h2>S2</h2><h3>B</h3>", []),
    ("<h2>S</h2>", ["the first heading ('S') is an <h2>, not the title's <h1>"]),
    ("<h1>T</h1><h3>A</h3>", ["heading 'A' (<h3>) skips a level after an <h1>: screen readers navigate by them"]),
])
def test_headings_go_down_one_level_at_a_time(headings, warnings):
    assert [p.message for p in check_headings(tree(headings))] == warnings


@pytest.mark.parametrize("alt, problem", [
    ("Putin and Kim at the signing", None),
    ("", "has no alt text"), ("   ", "has no alt text"),
    ("c.jpg", "has a file name for alt text ('c.jpg')"), ("DSC_0042", "has a file name for alt text"),
    ("photo", "has 'photo' for alt text"), ("Picture.", "has 'Picture.' for alt text"),
])
def test_alt_text_says_what_the_picture_shows(alt, problem):
    found = check_alt(tree(f'<img src="https://example.org/p/c.jpg" alt="{alt}">'))
    assert [p.message for p in found if problem and problem in p.message] == [p.message for p in found]
    assert len(found) == (0 if problem is None else 1)


def test_the_november_issue_with_pictures_is_clean(repo, settings, tmp_path):
    """The issue the axe-core run checks: the lint report finds nothing in it either."""
    from mailer.compose.lint import lint
    from mailer.compose.render import compose, templates_dir
    from mailer.compose.source import read_issue

    path = tmp_path / "2024-11.md"
    path.write_text(november_with_pictures(repo), encoding="utf-8")
    issue = read_issue(path)
    assert lint(issue, compose(issue, settings), templates_dir(settings)).findings == ()
