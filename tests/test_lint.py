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


def test_the_november_issue_is_clean(repo, settings):
    issue = read_issue(repo / "issues/2024-11.md")
    report = lint(issue, compose(issue, settings), templates_dir(settings))
    assert report.findings == ()
    assert 30_000 < report.html_bytes < 60_000


# (issue body from line 8, findings: severity, rule, line, message)
CASES = [
    ("## S\n\nA [site](https://example.org) and [mail](mailto:a@example.org).\n", []),
    ("## Empty\n\n## Next\n\nText.\n", [(W, "empty", 8, "section 'Empty' is empty")]),
    ("## S\n\n### Story\n\n### Other\n\nText.\n", [(W, "empty", 10, "story 'Story' has no text")]),
    ("## S\n\n![](https://example.org/chart.png)\n",
     [(W, "alt", 10, "image without alt text: https://example.org/chart.png (write ![what it shows]"
                     "(...); Outlook hides images by default)")]),
    ("## S\n\n![A chart of oil exports](https://example.org/chart.png)\n", []),
    ("## S\n\nSee [the report](www.example.org/report).\n",
     [(W, "link", 10, "link 'www.example.org/report' is neither http(s) nor mailto: readers cannot "
                      "open it (write https://... in full)")]),
    ("## S\n\nGet [the file](ftp://example.org/f).\n",
     [(W, "link", 10, "link 'ftp://example.org/f' is neither http(s) nor mailto: readers cannot open "
                      "it (write https://... in full)")]),
    ("## S\n\nSee [below](#links).\n",
     [(W, "link", 10, "link '#links' is neither http(s) nor mailto: readers cannot open it (write "
                      "https://... in full)")]),
    ("## S\n\nDear {{ name }}, {{ first_name | default(\"reader\") }} at {{ email }},\n", []),
    ("## S\n\nDear {{ nmae }},\n",
     [(E, "unresolved", 10, "unresolved template variable {{ nmae }} in the HTML and text parts (the "
                            "merge fields are {{ name }}, {{ first_name }}, {{ email }}, with a "
                            "fallback written {{ first_name | default(\"reader\") }})")]),
    ("## S\n\nDear {{ first_name | upper }},\n",
     [(E, "unresolved", 10, "unresolved template variable {{ first_name | upper }} in the HTML and "
                            "text parts (the merge fields are {{ name }}, {{ first_name }}, {{ email }}, "
                            "with a fallback written {{ first_name | default(\"reader\") }})")]),
    ("## S\n\n![A chart](http://example.org/chart.png)\n",
     [(W, "image", 10, "image http://example.org/chart.png is http://: most email clients block or "
                       "flag it (mixed content); use https://")]),
    ("## S\n\nAn ![icon](https://example.org/i.png) in a line.\n",
     [(W, "image", 10, "image https://example.org/i.png is inside a line of text: Outlook shows it at "
                       "its full size; put it on a line of its own")]),
    ("## S\n\n| a | b |\n|---|---|\n| 1 | 2 |\n", []),
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
        f"  size: {report.html_bytes / 1000:.1f} KB of HTML per recipient; Gmail clips above ~102 KB",
        f"  error: {where}:9: unresolved template variable {{{{ nmae }}}} in the HTML and text parts (the "
        f"merge fields are {{{{ name }}}}, {{{{ first_name }}}}, {{{{ email }}}}, with a fallback written "
        f'{{{{ first_name | default("reader") }}}})',
        f"  warning: {where}:13: story 'A story without text' has no text",
        f"  warning: {where}:17: image without alt text: https://example.org/chart.png (write "
        "![what it shows](...); Outlook hides images by default)",
        f"  warning: {where}:19: link 'www.example.org/report' is neither http(s) nor mailto: "
        "readers cannot open it (write https://... in full)",
        f"  warning: {where}:19: link 'ftp://example.org/archive' is neither http(s) nor mailto: "
        "readers cannot open it (write https://... in full)",
        f"  warning: {where}:23: section 'Nothing here yet' is empty",
        "  1 error(s), 5 warning(s)",
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
