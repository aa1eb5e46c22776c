"""`mailer report --html` carries no script, as the README says (issue 23): not pygal's config
script, not an event handler, not a javascript: link from the issue."""

from __future__ import annotations

import re

from mailer.reports.clicks import LinkFigures
from mailer.reports.report import LABELS, Report, render_html
from tests.test_report import sent  # noqa: F401 - the fixture

SCRIPTS = re.compile(r"<script|\son\w+\s*=|href\s*=\s*[\"']?\s*(javascript|data|vbscript):", re.I)


def test_the_html_report_runs_no_script(cli, sent, tmp_path):  # noqa: F811
    page = tmp_path / "report.html"
    assert cli("--config", sent, "report", "2024-11", "--html", page).code == 0
    text = page.read_text(encoding="utf-8")
    assert "<svg" in text and not SCRIPTS.search(text)
    assert "script-src 'none'" in text                     # and a browser would refuse one anyway


def test_links_that_are_not_web_addresses_are_only_text():
    report = Report(issue="2024-11", lists=["crank"], figures=dict.fromkeys(LABELS, 1), rates={}, warnings=[],
                    timeline={"delivered": [("2024-11-01", 3)]},
                    links=[LinkFigures("javascript:alert(1)", "a", 3, 0), LinkFigures("DATA:text/html,x", "b", 2, 0),
                           LinkFigures("https://example.org/?a=1&b=2", "c", 1, 0)])
    text = render_html(report)
    assert not SCRIPTS.search(text)
    assert '<td class="url">javascript:alert(1)</td>' in text
    assert '<a href="https://example.org/?a=1&amp;b=2">' in text
