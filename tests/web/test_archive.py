"""GET /archive and /archive/{issue}: the issue as mailed, with nobody's data, cached per mtime."""

from __future__ import annotations

import os
import re
import shutil

import pytest


def mark_sent(live, slug: str, sent: int = 1, subject: str = "CRANK Call | November 2024") -> None:
    """A send of `slug` in mailer's ledger, as a `mailer send` from before archive copies leaves it."""
    from mailer.send.ledger import sends
    from subscribers.models import lists, utcnow

    with live.web.engine.begin() as conn:
        crank = conn.execute(lists.select().where(lists.c.name == "crank")).one().id
        conn.execute(sends.insert().values(issue=slug, list_id=crank, list_name="crank", subject=subject,
                                           backend="outbox", status="done", total=sent, sent=sent,
                                           started_at=utcnow()))


@pytest.fixture
def issue(live, repo):
    """The November 2024 issue, copied into the archive's (temporary) issues folder, and sent."""
    path = live.settings.compose.issues_dir / "2024-11.md"
    shutil.copy(repo / "issues" / "2024-11.md", path)
    mark_sent(live, "2024-11")
    return path


def test_index_lists_the_issue(live, issue):
    r = live.http.get("/archive")
    assert r.status_code == 200
    assert 'href="/archive/2024-11"' in r.text and "November 2024" in r.text


def test_issue_page_is_a_page_of_the_site_without_the_mail_footer(live, issue):
    r = live.http.get("/archive/2024-11")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "%%" not in r.text                                  # every marker filled
    assert "/unsubscribe/" not in r.text and "@example.com" not in r.text
    assert "because your address is subscribed" not in r.text and "View this issue in your browser" not in r.text
    assert '<header class="masthead">' in r.text and '<footer class="footer">' in r.text
    assert '<time datetime="2024-11-01">November 1, 2024</time>' in r.text
    assert "Get the next issue by email" in r.text and 'href="/subscribe"' in r.text
    assert 'href="/archive/feed.xml"' in r.text
    csp = r.headers["content-security-policy"]
    assert "script-src" not in csp and "default-src 'none'" in csp and "frame-ancestors 'none'" in csp


def test_composed_once_until_the_file_changes(live, issue):
    live.http.get("/archive/2024-11")
    cached = live.web.archive._cache[issue]
    live.http.get("/archive/2024-11")
    assert live.web.archive._cache[issue] is cached
    issue.write_text(issue.read_text().replace("CRANK Call | November 2024", "CRANK Call | Nov. 2024 (corrected)"))
    os.utime(issue, (cached[0] + 5, cached[0] + 5))
    assert "Nov. 2024 (corrected)" in live.http.get("/archive/2024-11").text


BAD_SLUGS = ["2024-12", "..%2F..%2Fconfig", "2024-11.md", ".hidden", "a" * 200, "%00"]


@pytest.mark.parametrize("slug", BAD_SLUGS)
def test_unknown_issue_is_404(live, issue, slug):
    r = live.http.get(f"/archive/{slug}")
    assert r.status_code == 404       # "No such issue", or no route at all for an encoded slash


def test_an_issue_not_sent_yet_is_not_there(live, issue):
    shutil.copy(issue, issue.parent / "2024-12.md")            # written, proofed, not sent
    mark_sent(live, "2024-12", sent=0)                          # a send that delivered nothing yet
    assert live.http.get("/archive/2024-12").status_code == 404
    assert "2024-12" not in live.http.get("/archive").text


def test_an_old_send_whose_issue_file_broke_is_503_but_stays_listed(live, issue):
    (issue.parent / "2024-12.md").write_text("+++\nsubject = \n+++\n")
    mark_sent(live, "2024-12", subject="CRANK Call | December 2024")  # no stored copy: composed from the file
    assert live.http.get("/archive/2024-12").status_code == 503
    index = live.http.get("/archive").text                  # listed from the ledger, never composed
    assert re.search(r'href="/archive/2024-11"', index) and "December 2024" in index
