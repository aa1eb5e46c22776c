"""Web service: the send ledger -> GET /archive (newest first), /archive/{issue} (a page of the
site), /archive/feed.xml (Atom 1.0).

Each issue is the copy stored on its send's ledger row when the send started (mailer.compose.archived):
the composed email with its per-reader markers filled by neutral values (no name, no address, no
token), with the issue's date and preheader. So it is the same for everyone, safe to share, there
from the first message on, and what was mailed even if the issue file or the templates change
later; nothing is composed to list or show it. Only sends from before copies were kept have none:
those are composed from their issue file, cached until its mtime changes.

Only an issue sent to a public list as a whole is shown, and never one whose file says
`archive = false` (mailer.send.ledger._VISIBLE, `withdrawn` here; docs/readers.md).

The page is not the email: archive_page.py keeps the email's content and styles and drops what
only makes sense in an inbox (the footer with "you are receiving", unsubscribe and view-online
links); the site's own header, footer, date, subscribe invitation and previous/next links go
around it (templates/web/issue.html.j2). Docs: docs/readers.md, docs/exactly-once.md.
"""

from __future__ import annotations

import datetime as dt
import hmac
import logging
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from fastapi import APIRouter, Query, Request
from starlette.responses import HTMLResponse, Response

from mailer.compose.archived import archive_key, neutral_copy, neutral_values
from mailer.compose.render import compose
from mailer.compose.source import archive_setting, read_issue, valid_issue_name
from mailer.model import fill
from mailer.send.ledger import archived, archived_copy, keyed_copy
from mailer.web.archive_page import web_content
from mailer.web.security import ARCHIVE_CSP

log = logging.getLogger("mailer.web")
router = APIRouter()
FEED_SIZE = 20                 # entries in the feed: the newest issues, full content
PUBLIC = {"cache-control": "public, max-age=300"}


@dataclass(frozen=True)
class ArchivedIssue:
    slug: str
    date: dt.date
    subject: str
    preheader: str
    html: str                      # the email as mailed, neutral values in the reader's fields
    sent_at: datetime | None = None


class Archive:
    """The archived issues, read from the send ledger through `read(fn)` (WebContext.read)."""

    def __init__(self, settings, *, read=None) -> None:
        self.settings = settings
        self.base_url = settings.newsletter.base_url.rstrip("/")
        self.read = read
        self._copies: dict[str, ArchivedIssue] = {}         # stored copies never change
        self._cache: dict[Path, tuple[float, ArchivedIssue]] = {}
        self._pages: dict[str, tuple[ArchivedIssue, object]] = {}
        self._settings: dict[Path, tuple[float, bool]] = {}    # the files' `archive = false`, by mtime
        self._lock = threading.Lock()

    # --- the data source ------------------------------------------------------------------------

    def entries(self) -> list[ArchivedIssue]:
        """Every archived issue, newest first (by date, then name): the ledger's rows, their
        stored copies (read once: they never change). An old send without a copy whose issue file
        no longer composes stays listed from its ledger row (its page answers 503) and is logged."""
        found = []
        for slug, subject, started in self.read(archived):
            if self.withdrawn(slug):
                continue
            try:   # listed by `archived`, so shown: a copy read before needs no second look
                issue = self._copies.get(slug) or self.get(slug)
            except Exception as exc:  # noqa: BLE001 - one bad file must not hide the others
                log.warning("archive: %s cannot be shown: %s", slug, exc)
                issue = ArchivedIssue(slug=slug, date=started.date(), subject=subject, preheader="", html="",
                                      sent_at=started)
            if issue is not None:
                found.append(issue)
        return sorted(found, key=lambda issue: (issue.date, issue.slug), reverse=True)

    def get(self, slug: str) -> ArchivedIssue | None:
        """The issue as mailed, or None when no send of that name has started."""
        if not valid_issue_name(slug) or self.withdrawn(slug):
            return None
        row = self.read(archived_copy, slug)   # asked each time: whether it is shown may change
        if row is None:
            return None
        hit = self._copies.get(slug)
        if hit is not None and hit.sent_at == row.started_at:
            return hit
        if row.archive_html is None:  # a send from before copies were stored
            return self._load(self.settings.compose.issues_dir / f"{slug}.md")
        values = self.neutral_values(slug)
        found = ArchivedIssue(slug=slug, date=row.archive_date or row.started_at.date(),
                              subject=fill(row.subject, values, "text"),
                              preheader=row.archive_preheader or "", html=row.archive_html, sent_at=row.started_at)
        with self._lock:
            self._copies[slug] = found
        return found

    def withdrawn(self, slug: str) -> bool:
        """Whether the issue file says `archive = false` now (read again when it changes): an
        editor can take a sent issue off the web; a send made with it never stored it as public."""
        path = self.settings.compose.issues_dir / f"{slug}.md"
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return False
        with self._lock:
            hit = self._settings.get(path)
        if hit is None or hit[0] != mtime:
            hit = (mtime, archive_setting(path) is False)
            with self._lock:
                self._settings[path] = hit
        return hit[1]

    def keyed(self, slug: str, key: str, secret: str) -> ArchivedIssue | None:
        """The copy a private send's browser link opens (`?key=`), or None: a wrong key, no such
        send, or `archive = false` in the file or on the send. Not cached: rarely asked."""
        if not key or not valid_issue_name(slug) or self.withdrawn(slug):
            return None
        if not hmac.compare_digest(key.encode(), archive_key(secret, slug).encode()):
            return None
        row = self.read(keyed_copy, slug)
        if row is None:
            return None
        return ArchivedIssue(slug=slug, date=row.archive_date or row.started_at.date(),
                             subject=fill(row.subject, self.neutral_values(slug), "text"),
                             preheader=row.archive_preheader or "", html=row.archive_html, sent_at=row.started_at)

    def _load(self, path: Path) -> ArchivedIssue | None:
        if not path.is_file():
            return None
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
        source = read_issue(path)
        copy = neutral_copy(compose(source, self.settings), self.base_url)
        subject = fill(source.subject, self.neutral_values(source.slug), "text")
        return ArchivedIssue(slug=source.slug, date=source.date, subject=subject, preheader=copy.preheader,
                             html=copy.html)

    def neutral_values(self, slug: str) -> dict[str, str]:
        return neutral_values(self.base_url, slug)

    # --- what the routes use ---------------------------------------------------------------------

    def list(self) -> list[ArchivedIssue]:
        return self.entries()

    def neighbours(self, slug: str) -> tuple[ArchivedIssue | None, ArchivedIssue | None, ArchivedIssue | None]:
        """(older, this, newer) around `slug`; (None, None, None) when it is not in the archive.
        An issue that cannot be shown raises here (the route answers 503)."""
        found = self.get(slug)
        if found is None:
            return None, None, None
        issues = self.entries()
        for i, issue in enumerate(issues):
            if issue.slug == slug:
                newer = issues[i - 1] if i > 0 else None
                older = issues[i + 1] if i + 1 < len(issues) else None
                return older, issue, newer
        return None, found, None

    def content(self, issue: ArchivedIssue):
        """The issue's web content (archive_page.WebContent), made once per archived issue."""
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
    issues = [issue for issue in web.archive.list() if issue.html][:FEED_SIZE]
    entries = [(issue, web.archive.content(issue).body) for issue in issues]
    xml = web.pages.env.get_template("feed.xml.j2").render(entries=entries, updated=_stamp(
        issues[0].date if issues else dt.date(1970, 1, 1)), stamp=_stamp)
    return Response(xml, media_type="application/atom+xml; charset=utf-8", headers=PUBLIC)


@router.get("/archive/{issue}", response_class=HTMLResponse, summary="One issue, as a page of the site",
            responses={404: {"description": "no such issue"}})
def archive_issue(issue: str, request: Request, key: str = Query("", max_length=100)) -> HTMLResponse:
    web = request.app.state.web
    if not valid_issue_name(issue):
        return web.pages.error(404, "No such issue", "There is no issue by that name in the archive.")
    if key:   # a private send's browser link: its page, unlisted, not cached, not indexed
        found = web.archive.keyed(issue, key, web.secret)
        if found is not None:
            return web.pages.render("issue.html.j2", issue=found, content=web.archive.content(found), older=None,
                                    newer=None, private=True,
                                    headers={"content-security-policy": ARCHIVE_CSP})
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
