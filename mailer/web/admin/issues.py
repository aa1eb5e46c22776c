"""/admin/issues...: drafts (files in issues/ not sent yet), scheduled and sent issues; one issue
as readers will see it (desktop and phone width, in sandboxed frames), its text part and lint
report; a proof to editors; a sent issue's report with its chart.

Composing goes through mailer.compose.preview.build_preview (what `mailer issue preview` shows), once per
change of the file; proofs through mailer.send.dispatch.send_proof (what `mailer issue proof` sends).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi import APIRouter, Form, Request
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.responses import HTMLResponse, PlainTextResponse, Response

from mailer.compose.gate import gate
from mailer.compose.preview import build_preview
from mailer.compose.source import read_issue, valid_issue_name
from mailer.errors import MailerError
from mailer.reports import clicks
from mailer.schedule.scheduler import schedule_issue, shown, unschedule_issue, utcnow
from mailer.send.dispatch import send_proof
from mailer.web.admin import figures
from mailer.web.security import ARCHIVE_CSP, PAGE_CSP
from subscribers.normalize import is_sendable

router = APIRouter(prefix="/issues")
# The email's own HTML inside our frames: as the archive shows it, but framable by our pages only.
FRAMED_CSP = ARCHIVE_CSP.replace("frame-ancestors 'none'", "frame-ancestors 'self'")
# The issue page itself: our usual policy, plus frames of our own (the two previews).
ISSUE_PAGE_CSP = PAGE_CSP + "; frame-src 'self'"
MAX_PROOF_ADDRESSES = 10

_builds: dict[Path, tuple[float, object]] = {}
_lock = threading.Lock()


def _path(request: Request, slug: str) -> Path:
    if not valid_issue_name(slug):
        raise HTTPException(404, "No such issue.")
    path = request.app.state.admin.settings.compose.issues_dir / f"{slug}.md"
    if not path.is_file():
        raise HTTPException(404, f"No issue file {slug}.md in the issues folder.")
    return path


def _build(settings, path: Path):
    """The preview build of the file, recomposed only when the file changed."""
    mtime = path.stat().st_mtime
    with _lock:
        hit = _builds.get(path)
    if hit and hit[0] == mtime:
        return hit[1]
    build = build_preview(path, settings, 1)
    with _lock:
        _builds[path] = (mtime, build)
    return build


def _subject(path: Path) -> str:
    try:
        return read_issue(path).subject
    except MailerError as exc:
        return f"(does not read: {exc})"


def _overview(conn, issues_dir: Path) -> dict:
    sent = figures.issues_sent(conn)
    done = {f.issue for f in sent}
    drafts = [(p.stem, _subject(p)) for p in sorted(issues_dir.glob("*.md"), reverse=True) if p.stem not in done]
    return {"sent": sent, "drafts": drafts, "scheduled": figures.scheduled(conn)}


@router.get("", include_in_schema=False)
async def all_issues(request: Request) -> Response:
    ctx = request.app.state.admin
    data = await run_in_threadpool(ctx.web.read, _overview, ctx.settings.compose.issues_dir)
    return ctx.page(request, "issues.html.j2", **data)


@router.get("/{slug}", include_in_schema=False)
async def one(request: Request, slug: str) -> Response:
    ctx = request.app.state.admin
    path = _path(request, slug)
    build = await run_in_threadpool(_build, ctx.settings, path)
    return await _show(request, slug, build, 200, proof_to=ctx.settings.newsletter.reply_to)


async def _show(request: Request, slug: str, build, code: int, *, proof_to: str, results=None, error: str = "",
                schedule_error: str = "", schedule_note: str = "") -> Response:
    ctx = request.app.state.admin
    sent = await run_in_threadpool(ctx.web.read, figures.issues_sent, None, slug)
    state = await run_in_threadpool(ctx.web.read, figures.issue_state, slug)
    return _issue_page(request, code, slug=slug, build=build, sent=sent[0] if sent else None, state=state,
                       proof_to=proof_to, results=results, error=error, schedule_error=schedule_error,
                       schedule_note=schedule_note)


def _issue_page(request: Request, code: int, **context) -> Response:
    page = request.app.state.admin.page(request, "issue.html.j2", code, **context)
    page.headers["content-security-policy"] = ISSUE_PAGE_CSP
    return page


@router.get("/{slug}/email.html", include_in_schema=False)
async def email_html(request: Request, slug: str) -> Response:
    build = await run_in_threadpool(_build, request.app.state.admin.settings, _path(request, slug))
    return HTMLResponse(build.html, headers={"content-security-policy": FRAMED_CSP, "x-frame-options": "SAMEORIGIN",
                                             "cache-control": "no-store"})


@router.get("/{slug}/email.txt", include_in_schema=False)
async def email_text(request: Request, slug: str) -> Response:
    build = await run_in_threadpool(_build, request.app.state.admin.settings, _path(request, slug))
    return PlainTextResponse(build.text, headers={"cache-control": "no-store"})


def _send_proof(settings, path: Path, addresses: list[str]):
    """Through the editors' gate (mailer.compose.gate.gate), as `mailer issue proof`: lint errors refuse."""
    return send_proof(settings, gate(path, settings, proof=True)[1], addresses)


@router.post("/{slug}/proof", include_in_schema=False)
async def proof(request: Request, slug: str, to: str = Form("")) -> Response:
    ctx = request.app.state.admin
    path = _path(request, slug)
    build = await run_in_threadpool(_build, ctx.settings, path)
    addresses = [a.strip() for a in to.replace(";", ",").split(",") if a.strip()]
    error, results = "", None
    if not addresses or len(addresses) > MAX_PROOF_ADDRESSES or not all(map(is_sendable, addresses)):
        error = f"Give one to {MAX_PROOF_ADDRESSES} email addresses, separated by commas."
    else:
        try:
            outcome = await run_in_threadpool(_send_proof, ctx.settings, path, addresses)
            results = list(zip(addresses, outcome, strict=True))
        except MailerError as exc:
            error = f"The proof was not sent: {exc}"
    return await _show(request, slug, build, 400 if error else 200, proof_to=to, results=results, error=error)


@router.post("/{slug}/schedule", include_in_schema=False)
async def schedule(request: Request, slug: str, at: str = Form("")) -> Response:
    """Schedule for the next free slot of [schedule], or `at` (as `mailer issue schedule --at`)."""
    ctx = request.app.state.admin
    path = _path(request, slug)
    try:
        done = await run_in_threadpool(schedule_issue, ctx.settings, str(path), at.strip() or None, utcnow())
        note, error = f"Scheduled for {shown(done.send_at, ctx.settings.schedule)} to {done.list_name}.", ""
    except MailerError as exc:
        note, error = "", f"Not scheduled: {exc}"
    build = await run_in_threadpool(_build, ctx.settings, path)
    return await _show(request, slug, build, 400 if error else 200, proof_to=ctx.settings.newsletter.reply_to,
                       schedule_error=error, schedule_note=note)


@router.post("/{slug}/unschedule", include_in_schema=False)
async def unschedule(request: Request, slug: str) -> Response:
    ctx = request.app.state.admin
    path = _path(request, slug)
    try:
        left = await run_in_threadpool(unschedule_issue, ctx.settings, slug, utcnow())
        note, error = ("Unscheduled: it is a draft again." if left else "It was not scheduled."), ""
    except MailerError as exc:
        note, error = "", f"Not unscheduled: {exc}"
    build = await run_in_threadpool(_build, ctx.settings, path)
    return await _show(request, slug, build, 400 if error else 200, proof_to=ctx.settings.newsletter.reply_to,
                       schedule_error=error, schedule_note=note)


def _report(conn, slug: str):
    """The issue's figures and a chart of its events from the day it went out: its first 30
    days, or the days so far (a week at least, so a fresh send still draws a chart)."""
    found = figures.issues_sent(conn, issue=slug)
    if not found:
        return None
    start = found[0].started_at.date()
    days = min(30, max(7, (datetime.now(UTC).date() - start).days + 1))
    by_day = figures.events_by_day(conn, issue=slug, days=days, today=start + timedelta(days=days - 1))
    own = clicks.tracked(conn, figures.send_ids(conn, slug))
    if own is not None:   # our own tracking's people, not the provider's events
        found[0].opens, found[0].clicks = own.opens, own.clicks
    return found[0], figures.chart(by_day), own


@router.get("/{slug}/report", include_in_schema=False)
async def report(request: Request, slug: str) -> Response:
    ctx = request.app.state.admin
    found = await run_in_threadpool(ctx.web.read, _report, slug)
    if found is None:
        raise HTTPException(404, f"{slug} has not been sent: no report yet.")
    fig, chart, own = found
    return ctx.page(request, "report.html.j2", fig=fig, chart=chart, own=own, opens_note=clicks.OPENS_NOTE)
