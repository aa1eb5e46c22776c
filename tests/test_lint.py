"""The lint report: one table row per rule, with the line and words the editor sees."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mailer.compose.lint import CLIP_BYTES, Severity, fill_for_sizing, lint
from mailer.compose.render import compose, templates_dir
from mailer.compose.source import read_issue
from mailer.model import ComposedIssue

FM = '+++\nsubject = "S"\npreheader = "P"\ndate = 2025-01-07\n+++\n# T\n\n'   # body on line 8
E, W = Severity.ERROR, Severity.WARNING


def run_lint(tmp_path, settings, body: str):
    path = tmp_path / "2025-01.md"
    path.write_text(FM + body, encoding="utf-8")
    issue = read_issue(path)
    return lint(issue, compose(issue, settings), templates_dir(settings)), path


def rows(report):
    return [(f.severity, f.rule, f.line, f.message) for f in report.findings]


@pytest.mark.parametrize("proof", [False, True])
def test_the_november_issue_is_clean(repo, settings, proof):
    """As readers get it, and as a proof (its banner is legible in dark mode too)."""
    issue = read_issue(repo / "issues/2024-11.md")
    report = lint(issue, compose(issue, settings, proof=proof), templates_dir(settings))
    assert report.findings == ()
    assert 30_000 < report.html_bytes < 60_000


# (issue body from line 8, findings: severity, rule, line, message)
ALT = ("picture https://example.org/chart.png has no alt text: write ![what it shows](...) (image_alt = "
       "\"...\" for the lead picture); screen readers, and Outlook until pictures are allowed, show nothing else")
CASES = [
    ("## S\n\nA [site](https://example.org) and [mail](mailto:a@example.org).\n", []),
    ("## Empty\n\n## Next\n\nText.\n", [(W, "empty", 8, "section 'Empty' is empty")]),
    ("## S\n\n### Story\n\n### Other\n\nText.\n", [(W, "empty", 10, "story 'Story' has no text")]),
    # pictures: alt text (WCAG 1.1.1), addresses
    ("## S\n\n![](https://example.org/chart.png)\n", [(E, "alt", 10, ALT)]),
    ("## S\n\n![A chart of oil exports](https://example.org/chart.png)\n", []),
    ("## S\n\n![chart.png](https://example.org/chart.png)\n",
     [(E, "alt", 10, "picture https://example.org/chart.png has a file name for alt text ('chart.png'): "
                     "say what it shows")]),
    ("## S\n\n![IMG_1234](https://example.org/p/1.jpg)\n",
     [(E, "alt", 10, "picture https://example.org/p/1.jpg has a file name for alt text ('IMG_1234'): "
                     "say what it shows")]),
    ("## S\n\n![Image](https://example.org/chart.png)\n",
     [(E, "alt", 10, "picture https://example.org/chart.png has 'Image' for alt text: say what it shows "
                     "(\"Putin and Kim at the signing\")")]),
    ("## S\n\n![A chart](http://example.org/chart.png)\n",
     [(W, "image", 10, "image http://example.org/chart.png is http://: most email clients block or "
                       "flag it (mixed content); use https://")]),
    ("## S\n\nA ![red flag](https://example.org/i.png) in a line.\n",
     [(W, "image", 10, "image https://example.org/i.png is inside a line of text: Outlook shows it at "
                       "its full size; put it on a line of its own")]),
    ("## S\n\n![A chart](charts/oil.png)\n",
     [(E, "image", 10, "picture 'charts/oil.png' is not a full web address: readers' mail apps cannot "
                       "fetch it; write https://… in full")]),
    ("## S\n\n![A chart](data:image/png;base64,iVBORw0KGgo=)\n",
     [(E, "image", 10, "picture data:image/png;base64,iVBORw0KGgo= is written into the email (data:): "
                       "Gmail and Outlook do not show such pictures, and it counts toward Gmail's "
                       "clipping size; put it on a web server (https://…)")]),
    # link syntax that reached the email as typed (issue 25's five), each with what was meant
    ("## S\n\nSee the\n[Atlantic Council(https://www.atlanticcouncil.org/x) on it.\n",
     [(E, "link", 11, "'[Atlantic Council(https://www.atlanticcouncil.org/x)' is not a link (its ']' is "
                      "missing): write [Atlantic Council](https://www.atlanticcouncil.org/x)")]),
    ("## S\n\n- A paper. ([Brookings]www.brookings.edu)\n",
     [(E, "link", 10, "'[Brookings]www.brookings.edu' is not a link (the address needs brackets): write "
                      "[Brookings](https://www.brookings.edu)")]),
    ("## S\n\nIn [five charts][ref].\n",
     [(E, "link", 10, "link '[five charts][ref]' has no definition: add a line \"[ref]: https://…\" below "
                      "the paragraph, or write [five charts](https://…)")]),
    ("## S\n\nIn [five charts][ref].\n\n[ref]: https://example.org/charts\n", []),
    ("## S\n\n| a | b |\n|---|---|\n| 1 | [four](https://exa mple.com) |\n",
     [(E, "link", 12, "the address in [four](https://exa mple.com) has a space in it: write "
                      "[four](https://example.com)")]),
    ("## S\n\n### [two](javascript:alert(1))\n\nText.\n",
     [(E, "link", 10, "link [two](javascript:alert(1)) is a javascript: address, which mail apps refuse "
                      "(it is not a page): link to a web page, [two](https://…)")]),
    ("## S\n\nSee [sic] and [1], as printed.\n", []),
    # addresses that open nothing, or hurt
    ("## S\n\nSee [the report](www.example.org/report).\n",
     [(E, "link", 10, "link 'www.example.org/report' is not a full address: it opens nothing from an "
                      "email; write https://www.example.org/report in full")]),
    ("## S\n\nGet [the file](ftp://example.org/f).\n",
     [(E, "link", 10, "link 'ftp://example.org/f' is a ftp: address, which readers' mail apps cannot "
                      "open: use https://… (or mailto:)")]),
    ("## S\n\nSee [below](#links).\n",
     [(E, "link", 10, "link '#links' is a link within a web page: it opens nothing from an email; "
                      "write https://… in full")]),
    ("## S\n\nSee [the site](https://example_org).\n",
     [(E, "link", 10, "link 'https://example_org' cannot open: 'example_org' is not a host name")]),
    ("## S\n\nSee [the site](http://example.org/a).\n",
     [(W, "link", 10, "link http://example.org/a is http://, not https://: some mail apps warn before "
                      "opening it, and it can be read or changed on the way")]),
    ("## S\n\nSee [the report](https://bit.ly/3xYz).\n",
     [(W, "link", 10, "link https://bit.ly/3xYz goes through a link shortener (bit.ly): spam filters "
                      "distrust them and readers cannot see where it leads; link to the page itself")]),
    ("## S\n\n[The report](https://example.org/r) is out.\n\nRead [the study](https://example.org/r).\n",
     [(W, "link", 10, "https://example.org/r is linked as 'The report' and as 'the study': give the same "
                      "page the same words, or link each to its own page")]),
    ("## S\n\n[The report](https://example.org/r), [the report](https://example.org/r).\n", []),
    # link words (WCAG 2.4.4)
    ("## S\n\nThe study is [here](https://example.org/s).\n",
     [(W, "link text", 10, "link text 'here' says nothing out of context (screen readers list the links): "
                           "name where https://example.org/s leads, e.g. [the CSIS report](...)")]),
    ("## S\n\n[Click here](https://example.org/s) for the study.\n",
     [(W, "link text", 10, "link text 'Click here' says nothing out of context (screen readers list the "
                           "links): name where https://example.org/s leads, e.g. [the CSIS report](...)")]),
    ("## S\n\nThe study: <https://example.org/s>.\n",
     [(W, "link text", 10, "link text is a bare address (https://example.org/s): words say where it "
                           "leads, e.g. [the Brookings report](...)")]),
    ("## S\n\nThe study[](https://example.org/s).\n",
     [(E, "link text", 10, "the link to https://example.org/s has no words: screen readers read out the "
                           "address; write [words](...)")]),
    ("## S\n\nWrite to <editor@example.org>.\n", []),
    # merge fields and markers
    ("## S\n\nDear {{ name }}, {{ first_name | default(\"reader\") }} at {{ email }},\n", []),
    ("## S\n\nDear {{ nmae }},\n",
     [(E, "unresolved", 10, "unresolved template variable {{ nmae }} in the HTML and text parts (the "
                            "merge fields are {{ name }}, {{ first_name }}, {{ email }}, with a "
                            "fallback written {{ first_name | default(\"reader\") }})")]),
    ("## S\n\nDear {{ first_name | upper }},\n",
     [(E, "unresolved", 10, "unresolved template variable {{ first_name | upper }} in the HTML and "
                            "text parts (the merge fields are {{ name }}, {{ first_name }}, {{ email }}, "
                            "with a fallback written {{ first_name | default(\"reader\") }})")]),
    ("## S\n\n| a | b |\n|---|---|\n| 1 | 2 |\n", []),
    ("## S\n\n> A quote, with [its source](https://example.org/q).\n", []),
    ("## S\n\nLeave: %%unsubscribe%%\n",
     [(E, "unresolved", 10, "unresolved unknown or misplaced marker %%unsubscribe%% in the HTML and "
                            "text parts")]),
    ("## S\n\nYour address: %%email%%\n",        # a text-part marker typed into the body
     [(E, "unresolved", 10, "unresolved unknown or misplaced marker %%email%% in the HTML part")]),
]


@pytest.mark.parametrize("body, expected", CASES)
def test_each_lint_rule(tmp_path, settings, body, expected):
    report, _ = run_lint(tmp_path, settings, body)
    assert rows(report) == expected
    assert {f.path for f in report.findings} <= {str(tmp_path / "2025-01.md")}


def test_per_recipient_markers_in_links_are_expected(tmp_path, settings):
    report, _ = run_lint(tmp_path, settings, "## S\n\nText.\n")
    assert [f for f in report.findings if f.rule == "link"] == []


SENTENCE = "A long sentence about cooperation and contention among four states. " * 4


def paragraphs_for(tmp_path, settings, target: int) -> int:
    """How many paragraphs make the HTML about `target` bytes (measured, so templates may change)."""
    small, _ = run_lint(tmp_path, settings, "## S\n\n" + f"{SENTENCE}\n\n" * 10)
    large, _ = run_lint(tmp_path, settings, "## S\n\n" + f"{SENTENCE}\n\n" * 20)
    per = (large.html_bytes - small.html_bytes) / 10
    return round(10 + (target - small.html_bytes) / per)


@pytest.mark.parametrize("target, expected", [
    (60_000, []),
    (96_000, [(W, "size", None, "the HTML is {kb} KB, close to Gmail's ~102 KB clipping limit "
                                "(tracking links add more)")]),
    (130_000, [(E, "size", None, "the HTML is {kb} KB: Gmail clips it above ~102 KB, hiding the "
                                 "footer and unsubscribe link; shorten the issue")]),
])
def test_size_against_gmail_clipping(tmp_path, settings, target, expected):
    count = paragraphs_for(tmp_path, settings, target)
    report, _ = run_lint(tmp_path, settings, "## S\n\n" + f"{SENTENCE}\n\n" * count)
    assert abs(report.html_bytes - target) < 2_000
    kb = f"{report.html_bytes / 1000:.1f}"
    assert rows(report) == [(s, r, n, m.format(kb=kb)) for s, r, n, m in expected]


def test_size_counts_the_personalized_html():
    html = "<p>%%unsubscribe_url:html%%</p>"
    assert len(fill_for_sizing(html)) > 150 and "%%" not in fill_for_sizing(html)
    assert CLIP_BYTES == 102_000


def test_a_footer_without_unsubscribe_link_is_an_error(tmp_path, monkeypatch, settings, repo):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(repo / "templates", tmp_path / "templates")
    footer = tmp_path / "templates/partials/footer.mjml.j2"
    footer.write_text(footer.read_text().replace('href="{{ markers.unsubscribe_url }}"', 'href="https://example.org/"'))
    settings = dataclasses.replace(settings, compose=dataclasses.replace(
        settings.compose, templates_dir=tmp_path / "templates"))
    report, _ = run_lint(tmp_path, settings, "## S\n\nText.\n")
    assert [(f.severity, f.path, f.line, f.message) for f in report.findings] == [
        (E, "templates/partials/footer.mjml.j2", 7, f"the {part} part has no unsubscribe link "
         f"({marker}): CAN-SPAM and Gmail/Yahoo require one")
        for part, marker in (("HTML", "%%unsubscribe_url:html%%"), ("text", "%%unsubscribe_url%%"))]


def test_the_report_as_printed(repo, settings):
    path = "tests/fixtures/issues/with_problems.md"
    issue = read_issue(repo / path)
    composed = compose(issue, settings)
    composed = dataclasses.replace(composed)           # a plain ComposedIssue, as dispatch has it
    assert isinstance(composed, ComposedIssue)
    report = lint(issue, composed, templates_dir(settings))
    where = str(repo / path)
    assert report.render(path).splitlines() == [
        f"Lint report for {path}",
        "  subject: Test Review | February 2025 (27 characters)",
        "  preheader: An issue with things the lint report should flag (48 characters)",
        f"  size: {report.html_bytes / 1000:.1f} KB of HTML per recipient; Gmail clips above ~102 KB",
        f"  error: {where}:9: unresolved template variable {{{{ nmae }}}} in the HTML and text parts (the "
        f"merge fields are {{{{ name }}}}, {{{{ first_name }}}}, {{{{ email }}}}, with a fallback written "
        f'{{{{ first_name | default("reader") }}}})',
        f"  warning: {where}:13: story 'A story without text' has no text",
        f"  error: {where}:17: {ALT}",
        f"  error: {where}:19: link 'www.example.org/report' is not a full address: it opens nothing from "
        "an email; write https://www.example.org/report in full",
        f"  error: {where}:19: link 'ftp://example.org/archive' is a ftp: address, which readers' mail apps "
        "cannot open: use https://… (or mailto:)",
        f"  warning: {where}:23: section 'Nothing here yet' is empty",
        "  4 error(s), 2 warning(s)",
    ]


def test_a_long_preheader_is_a_warning_naming_its_line(tmp_path, settings):
    path = tmp_path / "2025-01.md"
    path.write_text(FM.replace('preheader = "P"', 'preheader = "' + "x" * 91 + '"') + "## S\n\nText.\n",
                    encoding="utf-8")
    issue = read_issue(path)
    report = lint(issue, compose(issue, settings), templates_dir(settings))
    assert rows(report) == [(W, "preheader", 3, "the preheader has 91 characters: inboxes show about "
                                                "90, so the end will be cut off")]


ROOT = Path(__file__).resolve().parent.parent


def test_lint_does_not_need_the_preview():
    """Sizing fills markers the way every stage does (mailer.model.fill): no lint <-> preview cycle."""
    code = ("import sys, mailer.compose.lint as l; l.fill_for_sizing('<p>%%name:html%%</p>'); "
            "sys.exit('mailer.compose.preview' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=False).returncode == 0


@pytest.mark.parametrize("subject, expected", [
    ("S" * 78, []),
    ("S" * 79, [(W, "subject", 2, "the subject has 79 characters: most inboxes show about 78, so the end "
                                  "will be cut off (put what matters first)")]),
    # a merge field counts as 10 characters: 68 + 10
    ("S" * 68 + "{{ first_name }}", []),
    ("S" * 69 + '{{ first_name | default("reader") }}',
     [(W, "subject", 2, "the subject has 79 characters: most inboxes show about 78, so the end will be "
                        "cut off (put what matters first)")]),
])
def test_a_long_subject_is_a_warning_naming_its_line(tmp_path, settings, subject, expected):
    path = tmp_path / "2025-01.md"
    path.write_text(FM.replace('subject = "S"', f"subject = '{subject}'") + "## S\n\nText.\n", encoding="utf-8")
    issue = read_issue(path)
    assert rows(lint(issue, compose(issue, settings), templates_dir(settings))) == expected


def test_the_report_starts_with_subject_and_preheader_as_written(tmp_path, settings):
    path = tmp_path / "2025-01.md"
    path.write_text(FM.replace('subject = "S"', """subject = 'The "axis" of {{ first_name | default("reader") }}'""")
                    .replace('preheader = "P"', '''preheader = "Russia's {{ name }} and China's \\"ally\\""''')
                    + "## S\n\nText.\n", encoding="utf-8")
    issue = read_issue(path)
    report = lint(issue, compose(issue, settings), templates_dir(settings))
    assert report.render("issues/2025-01.md").splitlines()[:3] == [
        "Lint report for issues/2025-01.md",
        '  subject: The “axis” of {{ first_name | default("reader") }} (24 characters)',
        "  preheader: Russia’s {{ name }} and China’s “ally” (38 characters)",
    ]


def with_templates(tmp_path, monkeypatch, settings, repo, edits):
    """A copy of templates/ with `edits` [(file, old, new)] made, and settings that use it."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(repo / "templates", tmp_path / "templates")
    for name, old, new in edits:
        path = tmp_path / "templates" / name
        assert old in path.read_text(), (name, old)
        path.write_text(path.read_text().replace(old, new))
    return dataclasses.replace(settings, compose=dataclasses.replace(settings.compose,
                                                                     templates_dir=tmp_path / "templates"))


STYLE, DARK, EMAIL = "partials/style.css.j2", "partials/responsive.css.j2", "email.mjml.j2"
LEAD = ('+++\nsubject = "S"\npreheader = "P"\ndate = 2025-01-07\nimage = "https://example.org/lead.png"\n'
        'image_alt = "Two leaders"\nimage_caption = "At the signing."\n+++\n# T\n\n'
        "## S\n\n- An item. (Wire)\n")


# (what the templates say instead, the findings: severity, rule, template file and line, message)
TEMPLATE_CASES = [
    ([], []),
    ([(STYLE, ".source { color: #5c5750;", ".source { color: #a8a196;")],
     [(E, "contrast", f"templates/{STYLE}", 20, "text in span.source has contrast 2.6:1 in the light colour "
       "scheme (#a8a196 on #ffffff, e.g. '(Wire)'); WCAG AA needs 4.5:1 for text under 24px (18.66px bold)")]),
    ([(DARK, "a.quiet-link, .caption {", "a.quiet-link {")],
     [(E, "contrast", f"templates/{DARK}", 14, "text in p.caption has contrast 2.4:1 in the dark colour "
       "scheme (#5c5750 on #1d1d1f, e.g. 'At the signing.'); WCAG AA needs 4.5:1 for text under 24px "
       "(18.66px bold); no dark-mode rule sets its colour")]),
    ([(DARK, ".standfirst { color: #cfc9bf", ".standfirst { color: #3a3835")],
     []),     # the issue has no standfirst
    ([(DARK, ".colophon, .proof { color: #ece8e1", ".colophon, .proof { color: #5a5550")],
     [(E, "contrast", f"templates/{DARK}", 17, "text in p.item has contrast 2.3:1 in the dark colour "
       "scheme (#5a5550 on #1d1d1f, e.g. '— An item.'); WCAG AA needs 4.5:1 for text under 24px "
       "(18.66px bold)")]),
    ([(EMAIL, '<mjml lang="{{ lang }}" dir="{{ dir }}">', '<mjml dir="{{ dir }}">')],
     [(E, "lang", f"templates/{EMAIL}", 6, "the email's <html> names no language (lang=\"en\"): screen "
       "readers then guess the pronunciation")]),
    ([(EMAIL, '<mjml lang="{{ lang }}" dir="{{ dir }}">', '<mjml lang="english!" dir="{{ dir }}">')],
     [(E, "lang", f"templates/{EMAIL}", 6, "the email's language lang='english!' is not a language tag "
       "like \"en\" or \"en-GB\"")]),
    ([("partials/section.mjml.j2", '<h2 class="section">{{ section.title_html|safe }}</h2>',
       '<h4 class="section">{{ section.title_html|safe }}</h4>')],
     [(W, "headings", "templates/partials/section.mjml.j2", 7, "heading 'S' (<h4>) skips a level after an "
       "<h1>: screen readers navigate by them")]),
    ([("partials/footer.mjml.j2", '<p class="foot">{{ newsletter.postal_address }}</p>',
       '<p class="foot">{{ newsletter.postal_address }}</p><div style="display:none">'
       '<a href="https://example.org/hidden">Hidden</a></div>')],
     [(W, "link", "templates/partials/footer.mjml.j2", 9, "the text part lacks the link to "
       "https://example.org/hidden: readers of the plain-text version cannot follow it")]),
]


@pytest.mark.parametrize("edits, expected", TEMPLATE_CASES)
def test_what_the_templates_get_wrong(tmp_path, monkeypatch, settings, repo, edits, expected):
    settings = with_templates(tmp_path, monkeypatch, settings, repo, edits)
    path = tmp_path / "2025-01.md"
    path.write_text(LEAD, encoding="utf-8")
    issue = read_issue(path)
    report = lint(issue, compose(issue, settings), templates_dir(settings))
    assert [(f.severity, f.rule, f.path, f.line, f.message) for f in report.findings] == expected
