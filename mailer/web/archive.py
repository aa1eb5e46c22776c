"""Web service: issues/*.md -> GET /archive (the sent issues) and GET /archive/{issue} (one, as mailed).

The archive page is the composed email itself with the per-reader markers filled by neutral values
(no name, no address, no token), so it is the same for everyone and safe to share. Composing costs
MJML + premailer, so each page is cached until its issue file's mtime changes.
"""

from __future__ import annotations

import html
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse

from mailer.model import fill
from mailer.web.security import ARCHIVE_CSP

log = logging.getLogger("mailer.web")
router = APIRouter()
SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


@dataclass(frozen=True)
class ArchivedIssue:
    slug: str
    subject: str
    html: str


class Archive:
    """The issue files of [compose] issues_dir, composed once per mtime, markers filled neutrally."""

    def __init__(self, settings, *, sent_slugs=None) -> None:
        self.settings = settings
        self.base_url = settings.newsletter.base_url.rstrip("/")
        self.sent_slugs = sent_slugs or (lambda: None)   # None: no send ledger yet, list every file
        self._cache: dict[Path, tuple[float, ArchivedIssue]] = {}
        self._lock = threading.Lock()

    def list(self) -> list[ArchivedIssue]:
        """Newest first; issue files that do not compose are left out (and logged)."""
        sent = self.sent_slugs()
        found = []
        for path in sorted(self.settings.compose.issues_dir.glob("*.md"), reverse=True):
            if sent is not None and path.stem not in sent:
                continue
            try:
                found.append(self._load(path))
            except Exception as exc:  # noqa: BLE001 - one bad file must not hide the others
                log.warning("archive: %s does not compose: %s", path, exc)
        return found

    def get(self, slug: str) -> ArchivedIssue | None:
        """The issue, or None when the slug names no (sent) issue file."""
        if not SLUG.fullmatch(slug) or ".." in slug:
            return None
        path = self.settings.compose.issues_dir / f"{slug}.md"
        sent = self.sent_slugs()
        if not path.is_file() or (sent is not None and slug not in sent):
            return None
        return self._load(path)

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
        from mailer.compose import compose_issue

        composed = compose_issue(path, self.settings)
        values = self.neutral_values(composed.slug)
        page = fill(composed.html, values, "html")
        return ArchivedIssue(slug=composed.slug, subject=fill(composed.subject, values, "text"), html=page)

    def neutral_values(self, slug: str) -> dict[str, str]:
        """What a reader's fields become online: nobody's name, nobody's address or token."""
        return {"name": "reader", "first_name": "reader", "email": "your address", "unsubscribe_url": f"{self.base_url}/subscribe",
                "archive_url": f"{self.base_url}/archive/{slug}"}


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
