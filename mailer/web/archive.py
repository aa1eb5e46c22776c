"""Web service: sent issues -> GET /archive (newest first), /archive/{issue} (a page of the site),
/archive/feed.xml (Atom 1.0).

Where an issue comes from is one function, `Archive.entries()`: (name, date, subject, preheader,
html) for every sent issue, newest first, the html being the composed email with the per-reader
markers filled by neutral values (no name, no address, no token). Today it composes the issue
files of [compose] issues_dir that the send ledger names, cached per file mtime; swapping the
source (e.g. a copy stored when the send starts) changes that function only.

The page is not the email: archive_page.py keeps the email's content and styles and drops what
only makes sense in an inbox (the footer with "you are receiving", unsubscribe and view-online
links); the site's own header, footer, date, subscribe invitation and previous/next links go
around it (templates/web/issue.html.j2). Docs: docs/readers.md.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, Response

from mailer.model import fill
from mailer.web.archive_page import web_content
from mailer.web.security import ARCHIVE_CSP

log = logging.getLogger("mailer.web")
router = APIRouter()
SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
FEED_SIZE = 20                 # entries in the feed: the newest issues, full content
PUBLIC = {"cache-control": "public, max-age=300"}


@dataclass(frozen=True)
class ArchivedIssue:
    slug: str
    date: dt.date
    subject: str
    preheader: str
    html: str                  # the email as mailed, neutral values in the reader's fields


class Archive:
    """The sent issues, newest first; composed once per issue file mtime."""

    def __init__(self, settings, *, sent_slugs=None) -> None:
        self.settings = settings
        self.base_url = settings.newsletter.base_url.rstrip("/")
        self.sent_slugs = sent_slugs or (lambda: None)   # None: no send ledger yet, list every file
        self._cache: dict[Path, tuple[float, ArchivedIssue]] = {}
        self._pages: dict[str, tuple[ArchivedIssue, object]] = {}
        self._lock = threading.Lock()

    # --- the data source: (name, date, subject, preheader, html) per sent issue -----------------

    def entries(self) -> list[ArchivedIssue]:
        """Every sent issue, newest first (by date, then name); issue files that do not compose
        are left out (and logged)."""
        sent = self.sent_slugs()
        found = []
        for path in self.settings.compose.issues_dir.glob("*.md"):
            if (sent is not None and path.stem not in sent) or not SLUG.fullmatch(path.stem):
                continue
            try:
                found.append(self._load(path))
            except Exception as exc:  # noqa: BLE001 - one bad file must not hide the others
                log.warning("archive: %s does not compose: %s", path, exc)
        return sorted(found, key=lambda issue: (issue.date, issue.slug), reverse=True)

    def _load(self, path: Path) -> ArchivedIssue:
        mtime = path.stat().st_mtime
        with self._lock:
            hit = self._cache.get(path)
        if hit and hit[0] == mtime:
            return hit[1]
        issue = self._compose(path)
        with self._lock:
            self._cache[path] = (mtime, issue)
        return issue

    def _compose(self, path: Path) -> ArchivedIssue:
        from mailer.compose import compose
        from mailer.source import read_issue

        source = read_issue(path)
        composed = compose(source, self.settings)
        values = self.neutral_values(composed.slug)
        page = fill(composed.html, values, "html")
        return ArchivedIssue(slug=composed.slug, date=source.date, subject=fill(composed.subject, values, "text"),
                             preheader=composed.preheader, html=page)

    def neutral_values(self, slug: str) -> dict[str, str]:
        """What a reader's fields become online: nobody's name, nobody's address or token."""
        return {"name": "reader", "first_name": "reader", "email": "your address", "unsubscribe_url": f"{self.base_url}/subscribe",
                "archive_url": f"{self.base_url}/archive/{slug}", "preferences_url": f"{self.base_url}/preferences"}

    # --- what the routes use ---------------------------------------------------------------------

    def list(self) -> list[ArchivedIssue]:
        return self.entries()

    def get(self, slug: str) -> ArchivedIssue | None:
        """The issue, or None when the slug names no sent issue."""
        if not SLUG.fullmatch(slug) or ".." in slug:
            return None
        return next((issue for issue in self.entries() if issue.slug == slug), None)

    def neighbours(self, slug: str) -> tuple[ArchivedIssue | None, ArchivedIssue | None, ArchivedIssue | None]:
        """(older, this, newer) around `slug`."""
        issues = self.entries()
        for i, issue in enumerate(issues):
            if issue.slug == slug:
                newer = issues[i - 1] if i > 0 else None
                older = issues[i + 1] if i + 1 < len(issues) else None
                return older, issue, newer
        path = self.settings.compose.issues_dir / f"{slug}.md"
        sent = self.sent_slugs()
        if path.is_file() and (sent is None or slug in sent):
            self._load(path)   # sent, yet left out of entries(): it does not compose; say why
        return None, None, None

    def content(self, issue: ArchivedIssue):
        """The issue's web content (archive_page.WebContent), made once per composed issue."""
        with self._lock:
            hit = self._pages.get(issue.slug)
        if hit and hit[0] is issue:
            return hit[1]
        made = web_content(issue.html)
        with self._lock:
            self._pages[issue.slug] = (issue, made)
        return made


@router.get("/archive", response_class=HTMLResponse, summary="The sent issues, newest first")
def archive_index(request: Request) -> HTMLResponse:
    web = request.app.state.web
    return web.pages.render("archive.html.j2", title="Past issues", issues=web.archive.list(), headers=PUBLIC)


@router.get("/archive/feed.xml", summary="The sent issues as an Atom 1.0 feed",
            responses={200: {"content": {"application/atom+xml": {}}}})
def archive_feed(request: Request) -> Response:
    web = request.app.state.web
    issues = web.archive.list()[:FEED_SIZE]
    entries = [(issue, web.archive.content(issue).body) for issue in issues]
    xml = web.pages.env.get_template("feed.xml.j2").render(entries=entries, updated=_stamp(
        issues[0].date if issues else dt.date(1970, 1, 1)), stamp=_stamp)
    return Response(xml, media_type="application/atom+xml; charset=utf-8", headers=PUBLIC)


@router.get("/archive/{issue}", response_class=HTMLResponse, summary="One issue, as a page of the site",
            responses={404: {"description": "no such issue"}})
def archive_issue(issue: str, request: Request) -> HTMLResponse:
    web = request.app.state.web
    if not SLUG.fullmatch(issue) or ".." in issue:
        return web.pages.error(404, "No such issue", "There is no issue by that name in the archive.")
    try:
        older, found, newer = web.archive.neighbours(issue)
        content = web.archive.content(found) if found else None
    except Exception as exc:  # noqa: BLE001 - a broken issue file is the editors' to fix
        log.error("archive: issue %r does not compose: %s", issue, exc)
        return web.pages.error(503, "Issue unavailable", "This issue cannot be shown right now.")
    if found is None:
        return web.pages.error(404, "No such issue", "There is no issue by that name in the archive.")
    return web.pages.render("issue.html.j2", issue=found, content=content, older=older, newer=newer,
                            headers={"content-security-policy": ARCHIVE_CSP, **PUBLIC})


def _stamp(day: dt.date) -> str:
    """An RFC 3339 date-time for Atom: the issue's date at midnight UTC."""
    return f"{day.isoformat()}T00:00:00Z"
