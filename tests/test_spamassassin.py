"""Deliverability: the November email as a reader gets it scores 0 with SpamAssassin's local rules.

`spamassassin -L -t` (Debian's package; .ci/run installs it) runs only the local rules, no
network tests, and reports every rule that hit. The hidden preheader used to be white text on the
cream page, which HTML_FONT_LOW_CONTRAST scored 0.7 (templates/partials/preheader.mjml.j2).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import warnings

import pytest

from tests.services import missing

SPAMASSASSIN = shutil.which("spamassassin")


@pytest.fixture
def november_message(repo, settings) -> bytes:
    from mailer.compose.personalize import Recipient, personalize, prepare
    from mailer.compose.render import compose_issue

    composed = compose_issue(repo / "issues" / "2024-11.md", settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # the sample config's http base_url
        edition = prepare(composed, settings.newsletter)
    return personalize(edition, Recipient("1.1", "ann@example.com", "Ann Lee", "token")).as_bytes()


def test_the_november_email_scores_zero_with_local_rules(november_message, tmp_path):
    if SPAMASSASSIN is None:
        missing("Debian's spamassassin is not installed (apt-get install spamassassin)")
    done = subprocess.run([SPAMASSASSIN, "-L", "-t"], input=november_message, capture_output=True,
                          timeout=300, env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}, check=False)
    report = done.stdout.decode("utf-8", "replace")
    score = re.search(r"X-Spam-Status: \w+, score=(-?[\d.]+)", report)
    assert score, done.stderr.decode("utf-8", "replace")[-2000:]
    rules = re.findall(r"^\s*(-?[\d.]+) (\w+)\s", report.split("Content analysis details", 1)[1], re.M)
    scoring = [(rule, float(points)) for points, rule in rules if float(points) != 0]
    assert scoring == [] and float(score.group(1)) <= 0, report
    assert "HTML_FONT_LOW_CONTRAST" not in report
