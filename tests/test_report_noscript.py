"""`mailer report --html` carries no script, as the README says (issue 23): not pygal's config
script, not an event handler, not a javascript: link from the issue."""

from __future__ import annotations

import re

import pytest

from mailer.reports.report import _link
from tests.test_report import sent  # noqa: F401 - the fixture

SCRIPTS = re.compile(r"<script|\son\w+\s*=|href\s*=\s*[\"']?\s*(javascript|data|vbscript):", re.I)


def test_the_html_report_runs_no_script(cli, sent, tmp_path):  # noqa: F811
    page = tmp_path / "report.html"
    assert cli("--config", sent, "report", "2024-11", "--html", page).code == 0
    text = page.read_text(encoding="utf-8")
    assert "<svg" in text and not SCRIPTS.search(text)
    assert "script-src 'none'" in text                     # and a browser would refuse one anyway


@pytest.mark.parametrize("url, cell", [
    ("javascript:alert(1)", "javascript:alert(1)"),
    ("DATA:text/html,<b>x</b>", "DATA:text/html,&lt;b&gt;x&lt;/b&gt;"),
    ("https://example.org/?a=1&b=2", '<a href="https://example.org/?a=1&amp;b=2">https://example.org/?a=1&amp;b=2</a>'),
])
def test_links_that_are_not_web_addresses_are_only_text(url, cell):
    assert _link(url) == cell and not SCRIPTS.search(cell)
