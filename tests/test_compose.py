"""Stages 2-3: the November issue through templates, MJML and premailer; template errors."""

from __future__ import annotations

import dataclasses
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from lxml import etree

from mailer.compose.inline import html_to_text, inline_css
from mailer.compose.render import compose, compose_issue
from mailer.compose.source import read_issue
from mailer.errors import ComposeError
from mailer.model import marker

# The November 2024 issue exactly as the customer published it (the source of issues/2024-11.md).
SEED = Path(__file__).resolve().parent / "fixtures/seed/2024-11.txt"


def normalize(text: str) -> str:
    """Compare text 'apart from typography': quotes, dashes, spaces."""
    for fancy, plain in (("‘’‚′", "'"), ("“”„″", '"'), ("—–‑", "-"), ("\xa0", " ")):
        text = re.sub(f"[{fancy}]", plain, text)
    return " ".join(text.split())


def seed_lines(repo) -> list[str]:
    # Link items start with an em dash: the printed list's bullet, which the email sets too.
    return [normalize(line.lstrip("—")) for line in SEED.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def november(request):
    from mailer.config import load_settings
    from tests.conftest import REPO

    return compose_issue(REPO / "issues/2024-11.md", load_settings(REPO / "config.toml"))


def visible_text(html: str) -> str:
    root = etree.fromstring(html, etree.HTMLParser())
    for hidden in root.xpath("//head | //*[contains(@style, 'display:none')]"):
        hidden.getparent().remove(hidden)
    for block in root.iter("p", "h1", "h2", "h3", "div", "td"):   # blocks end lines, inline does not
        block.tail = "\n" + (block.tail or "")
    return normalize("".join(root.itertext()))


def test_every_seed_line_reaches_the_html_and_the_text_part(repo, november):
    html, text = visible_text(november.html), normalize(november.text)
    lines = seed_lines(repo)
    assert len(lines) == 34
    assert [line for line in lines if line not in html] == []
    assert [line for line in lines if line not in text] == []


def test_the_editor_address_is_a_mailto_link(november):
    root = etree.fromstring(november.html, etree.HTMLParser())
    assert root.xpath("//a[@href='mailto:gpriddy@cftni.org']/text()") == ["gpriddy@cftni.org"] * 2


def test_subject_preheader_and_title(november):
    assert (november.slug, november.subject) == ("2024-11", "CRANK Call | November 2024")
    assert "<title>CRANK Call | November 2024</title>" in november.html
    preheader = re.search(r'<div style="display:none[^"]*">([^<]*)</div>', november.html)
    assert preheader and preheader.group(1).startswith(november.preheader)


@pytest.mark.parametrize("field", ("email", "unsubscribe_url", "archive_url"))  # the footer's
def test_per_recipient_fields_are_markers_in_each_part(november, field):
    assert marker(field, "html") in november.html
    assert marker(field, "text") in november.text
    assert marker(field, "html") not in november.text
    assert re.search(rf"%%{field}%%", november.html) is None


def test_premailer_keeps_what_mjml_needs(november):
    html = november.html
    assert html.startswith("<!DOCTYPE html>")
    assert "@media only screen and (min-width:480px)" in html            # the column rules...
    assert ".mj-column-per-100 { width:100% !important;" in html         # ...with !important
    assert "@media (prefers-color-scheme: dark)" in html                  # dark mode
    assert "<!--[if mso | IE]>" in html and "#outlook a" in html         # Outlook parts
    assert "data-premailer" not in html                                  # premailer took it off
    assert re.search(r"<h2 class=\"section\" style='[^']*text-transform:uppercase", html)


def test_nothing_is_fetched_by_the_reader_or_while_composing(repo, settings, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access while composing: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    composed = compose_issue(repo / "issues/2024-11.md", settings)
    assert not re.search(r"<link|@import|fonts\.googleapis|<img|url\(", composed.html)


def test_under_gmail_clipping_with_a_margin(november):
    assert len(november.html.encode("utf-8")) < 60_000


def test_text_part_is_wrapped_and_writes_link_targets(repo, settings):
    composed = compose_issue(repo / "tests/fixtures/issues/minimal.md", settings)
    text = composed.text
    assert max(len(line) for line in text.splitlines() if "%%" not in line) <= 72
    assert "A standfirst paragraph with a link <https://example.org/standfirst>." in text
    assert "— An item that links out <https://example.org/item> too. (Example Post)" in text
    assert "Editor, A. Person (editor@example.org)" in text          # mailto shown once, as written
    assert "Unsubscribe <%%unsubscribe_url%%>" in text
    assert "Test Review | January 2025\n==========================" in text


@pytest.mark.parametrize("html, text", [
    ('<p>a <a href="https://x.org">x</a></p>', "a x <https://x.org>\n"),
    ('<p><a href="https://x.org">https://x.org</a></p>', "https://x.org\n"),
    ('<p><a href="mailto:a@b.org">a@b.org</a></p>', "a@b.org\n"),
    ('<p>one<br>two</p><p>three</p>', "one\ntwo\n\nthree\n"),
    ('<div style="display:none">hidden</div><p>seen</p>', "seen\n"),
    ('<h2>Head</h2><p>x</p>', "Head\n----\n\nx\n"),
    ('<p>a&nbsp;&amp;&nbsp;b <!-- note --></p>', "a & b\n"),
    ('<p><a href="%%unsubscribe_url:html%%">Leave</a></p>', "Leave <%%unsubscribe_url%%>\n"),
])
def test_html_to_text(html, text):
    assert html_to_text(f"<html><body>{html}</body></html>") == text


def test_inlining_is_the_same_with_cssutils_validation(november, monkeypatch):
    """mailer.compose.inline drops cssutils' CSS profiles for speed; the output must not change."""
    import cssutils

    from mailer.compose.render import mjml_to_html

    plain = mjml_to_html(november.mjml)
    fast = inline_css(plain)
    monkeypatch.setattr(cssutils, "profile", cssutils.profiles.Profiles(log=cssutils.log))
    assert inline_css(plain) == fast == november.html


def test_premailer_loads_without_fetching_modules_and_they_still_work(november):
    """mailer.compose.inline keeps requests, cssutils._fetch and urllib.request out of premailer's import;
    a fresh process shows they are not loaded by composing, yet work when something uses them."""
    script = f"""
import sys
from mailer.compose.inline import inline_css
inline_css({november.html!r})
print(sorted(m for m in ("requests", "cssutils._fetch", "urllib.request", "http.client") if m in sys.modules))
import cssutils
print(cssutils.helper.path2url("/tmp/a b.css"))        # cssutils' own use loads the real module
import urllib.request, requests
print(urllib.request.urlopen.__module__, requests.Session.__module__)
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parent.parent, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["[]", "file:/tmp/a%20b.css", "urllib.request requests.sessions"]


def test_an_import_in_a_style_block_is_refused():
    with pytest.raises(ComposeError, match="@import"):
        inline_css("<html><head><style>@import url(https://x.org/a.css);</style></head></html>")


def test_the_composed_issue_is_the_same_every_time(repo, settings, november):
    assert compose(read_issue(repo / "issues/2024-11.md"), settings) == november


# --- template errors: (file, text replaced, replacement, message the editor sees) ----------

FOOTER = "partials/footer.mjml.j2"
TEMPLATE_ERRORS = [
    (FOOTER, "name=newsletter.name, address=markers.email %}You", "name=newsletter.nmae, address=markers.email %}You",
     "templates/partials/footer.mjml.j2:6: UndefinedError: 'mailer.config.NewsletterSettings "
     "object' has no attribute 'nmae'"),
    (FOOTER, '<p class="foot">{{ newsletter.postal_address }}</p>', '<p class="foot">{% if %}</p>',
     "templates/partials/footer.mjml.j2:9: template syntax: Expected an expression, got 'end of "
     "statement block'"),
    (FOOTER, "<mj-section background-color", "<mj-sektion background-color",
     "templates/partials/footer.mjml.j2:3: unknown MJML tag <mj-sektion> (did you mean <mj-section>?)"),
    (FOOTER, "<mj-section background-color", '<mj-include path="x" />\n    <mj-section background-color',
     "templates/partials/footer.mjml.j2:3: <mj-include> is not used here: include partials with "
     "Jinja's {% include %}"),
    (FOOTER, '<p class="foot">{{ newsletter.postal_address }}</p>',
     '<p class="foot"><b>{{ newsletter.postal_address }}</p>',
     "templates/partials/footer.mjml.j2:9: invalid MJML: </p> closes <b>, opened on line N "
     '(generated line N: <p class="foot"><b>CRANK Call, 1025 Example Avenue NW, Washington, DC 20036, USA)'),
    (FOOTER, '      <mj-column>\n        <mj-text mj-class="quiet"', '      <mj-text mj-class="quiet"',
     "templates/partials/footer.mjml.j2:4: invalid MJML: <mj-text> cannot go in <mj-section> (it "
     "takes <mj-column>, <mj-group>, <mj-raw>) (generated line N: <mj-text mj-class=\"quiet\" "
     'css-class="dm-quiet tx" align="center">)'),
    (FOOTER, 'padding="20px 0px 36px 0px"', 'padding="20px 0 36px 0px"',
     'templates/partials/footer.mjml.j2:3: write 0px, not 0, in padding="20px 0 36px 0px": MRML '
     "misreads a unitless zero"),
    ("email.mjml.j2", '{% include "partials/footer.mjml.j2" %}', '{% include "partials/fotter.mjml.j2" %}',
     "templates/email.mjml.j2:38: no template 'partials/fotter.mjml.j2' in templates (the folder "
     "[compose] templates_dir names in the config file)"),
]


@pytest.fixture
def broken_templates(tmp_path, monkeypatch, settings, repo):
    """A copy of templates/ to break; the working folder is its parent, as for an editor."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(repo / "templates", tmp_path / "templates")

    def break_(name: str, old: str, new: str):
        path = tmp_path / "templates" / name
        source = path.read_text(encoding="utf-8")
        assert old in source
        path.write_text(source.replace(old, new, 1), encoding="utf-8")
        return dataclasses.replace(settings, compose=dataclasses.replace(
            settings.compose, templates_dir=tmp_path / "templates"))

    return break_


@pytest.mark.parametrize("name, old, new, message", TEMPLATE_ERRORS)
def test_a_template_error_names_template_and_line(repo, broken_templates, name, old, new, message):
    settings = broken_templates(name, old, new)
    with pytest.raises(ComposeError) as caught:
        compose_issue(repo / "issues/2024-11.md", settings)
    # Lines of the generated MJML move whenever a template grows; N stands for them.
    assert re.sub(r"(on|generated) line \d+", r"\1 line N", str(caught.value)) == message


# (template, what it says instead, an issue body from line 6, the error the editor reads)
BLOCK_ERRORS = [
    ("partials/blocks.mjml.j2", '<table class="data"', '<table class="{{ block.nope }}"',
     "# T\n\n## S\n\nText.\n\n| a | b |\n|---|---|\n| 1 | 2 |\n",
     "issues/2025-01.md:12: the email cannot be built with this table ({tpl}/partials/blocks.mjml.j2:16: "
     "UndefinedError: 'mailer.compose.source.Table object' has no attribute 'nope'): write it another way, "
     "and tell whoever keeps the templates"),
    ("partials/masthead.mjml.j2", "{{ standfirst.html|safe }}", "{{ standfirst.nope }}",
     "# T\n\n![A picture](https://example.org/a.png)\n\nA standfirst.\n\n## S\n\nText.\n",
     "issues/2025-01.md:10: the email cannot be built with this paragraph ({tpl}/partials/masthead.mjml.j2:"
     "33: UndefinedError: 'mailer.compose.source.Paragraph object' has no attribute 'nope'): write it "
     "another way, and tell whoever keeps the templates"),
    ("partials/section.mjml.j2", '<h3 class="story">{{ block.title_html|safe }}</h3>',
     '<h3 class="story">{{ block.title_html|safe }}{{ block.nope }}</h3>',
     "# T\n\n## S\n\nText.\n\n### A story\n\nIts text.\n",
     "issues/2025-01.md:12: the email cannot be built with this story heading ({tpl}/partials/section.mjml.j2:"
     "10: UndefinedError: 'mailer.compose.source.Story object' has no attribute 'nope'): write it another way, "
     "and tell whoever keeps the templates"),
]


@pytest.mark.parametrize("name, old, new, body, message", BLOCK_ERRORS)
def test_a_template_failing_on_one_block_names_the_issue_line(tmp_path, broken_templates, name, old, new,
                                                               body, message):
    """A template error never reaches an editor as the template's: the block it fails on is named."""
    from mailer.compose.source import parse_issue
    from mailer.errors import IssueSourceError

    settings = broken_templates(name, old, new)
    issue = parse_issue('+++\nsubject = "S"\npreheader = "P"\ndate = 2025-01-07\n+++\n' + body, "issues/2025-01.md")
    with pytest.raises(IssueSourceError) as caught:
        compose(issue, settings)
    assert str(caught.value) == message.format(tpl="templates")


def test_any_block_under_the_title_builds(settings):
    """Issue 25's December draft: a picture right under the title, a greeting, a standfirst later."""
    from mailer.compose.source import parse_issue

    body = ("# CRANK Call | December 2024\n\n![Two leaders](https://example.org/lead.jpg \"A caption\")\n\n"
            "Dear {{ first_name }},\n\nThis month, the axis.\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n- An item.\n\n"
            "> A quote.\n\n## S\n\nText.\n")
    issue = parse_issue('+++\nsubject = "S"\npreheader = "P"\ndate = 2024-12-01\n+++\n' + body, "issues/2024-12.md")
    composed = compose(issue, settings)
    assert 'class="standfirst"' not in composed.html            # a greeting opens it: no standfirst
    text = composed.text
    order = ["[Two leaders]", "A caption", "Dear %%first_name%%,", "This month, the axis.", "a | b", "— An item.",
             "> A quote.", "S\n-"]
    assert [text.index(part) for part in order] == sorted(text.index(part) for part in order)
