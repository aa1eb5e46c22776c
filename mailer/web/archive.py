"""Web service: the send ledger -> GET /archive (the sent issues) and GET /archive/{issue} (one, as mailed).

The page is the copy stored on the send's ledger row when the send started (mailer.archived): the
composed email with its per-reader markers filled by neutral values (no name, no address, no
token), so it is the same for everyone, safe to share, there from the first message on, and what
was mailed even if the issue file or the templates change later. The index lists the ledger's rows
and never composes. Only sends from before copies were kept have none: those are composed from
their issue file, cached until its mtime changes.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse

from mailer.archived import neutral_copy, neutral_values
from mailer.source import valid_issue_name
from mailer.web.security import ARCHIVE_CSP

log = logging.getLogger("mailer.web")
router = APIRouter()


@dataclass(frozen=True)
class ArchivedIssue:
    slug: str
    subject: str
    html: str | None = None        # None in the index: listed from the ledger, not loaded
    sent_at: datetime | None = None


class Archive:
    """The archived issues, read from the send ledger through `read(fn)` (WebContext.read)."""

    def __init__(self, settings, *, read=None) -> None:
        self.settings = settings
        self.base_url = settings.newsletter.base_url.rstrip("/")
        self.read = read
        self._copies: dict[str, ArchivedIssue] = {}         # stored copies never change
        self._cache: dict[Path, tuple[float, ArchivedIssue]] = {}
        self._lock = threading.Lock()

    def list(self) -> list[ArchivedIssue]:
        """Newest first, from the ledger's rows (subject as sent); nothing is composed."""
        from mailer.ledger import archived

        return [ArchivedIssue(slug=issue, subject=subject, sent_at=at) for issue, subject, at in self.read(archived)]

    def get(self, slug: str) -> ArchivedIssue | None:
        """The issue as mailed, or None when no send of that name has started."""
        from mailer.ledger import archived_copy

        if not valid_issue_name(slug):
            return None
        if slug in self._copies:
            return self._copies[slug]
        row = self.read(archived_copy, slug)
        if row is None:
            return None
        if row.archive_html is None:  # a send from before copies were stored
            return self._load(self.settings.compose.issues_dir / f"{slug}.md")
        found = ArchivedIssue(slug=slug, subject=row.subject, html=row.archive_html)
        with self._lock:
            self._copies[slug] = found
        return found

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
        from mailer.compose import compose_issue

        composed = compose_issue(path, self.settings)
        page, _ = neutral_copy(composed, self.base_url)
        return ArchivedIssue(slug=composed.slug, subject=composed.subject, html=page)

    def neutral_values(self, slug: str) -> dict[str, str]:
        return neutral_values(self.base_url, slug)


@router.get("/archive", response_class=HTMLResponse, summary="The sent issues")
def archive_index(request: Request) -> HTMLResponse:
    web = request.app.state.web
    return web.pages.render("archive.html.j2", title="Past issues", issues=web.archive.list())


@router.get("/archive/{issue}", response_class=HTMLResponse, summary="One issue as it was mailed",
            responses={404: {"description": "no such issue"}})
def archive_issue(issue: str, request: Request) -> HTMLResponse:
    web = request.app.state.web
    try:
        found = web.archive.get(issue)
    except Exception as exc:  # noqa: BLE001 - a broken issue file is the editors' to fix
        log.error("archive: issue %r does not compose: %s", issue, exc)
        return web.pages.error(503, "Issue unavailable", "This issue cannot be shown right now.")
    if found is None:
        return web.pages.error(404, "No such issue", "There is no issue by that name in the archive.")
    return HTMLResponse(found.html, headers={"content-security-policy": ARCHIVE_CSP,
                                            "cache-control": "public, max-age=300"})
