"""/admin/issues...: drafts (files in issues/ not sent yet), scheduled and sent issues; one issue
as readers will see it (desktop and phone width, in sandboxed frames), its text part and lint
report; a proof to editors, scheduling and sending, each behind a confirmation that names the list,
the readers and the lint result; a sent issue's failed readers with their reasons, "Retry failed",
a CSV of who received it and who did not, and its report with its chart.

A send started here runs in a thread of this process through the same ledger as `mailer send`
(exactly once; if this process stops, `mailer send ISSUE --list LIST` or another click resumes it).

Composing goes through mailer.compose.preview.build_preview (what `mailer issue preview` shows), once per
change of the file; proofs through mailer.send.dispatch.send_proof (what `mailer issue proof` sends).
"""

from __future__ import annotations

import csv
import logging
import secrets
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi import APIRouter, Form, Request
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, HTMLResponse, PlainTextResponse, Response

from mailer import audit
from mailer.compose.gate import gate
from mailer.compose.preview import build_preview
from mailer.compose.source import read_issue, valid_issue_name
from mailer.errors import MailerError, SendError
from mailer.model import as_written
from mailer.reports import clicks
from mailer.schedule.scheduler import schedule_issue, shown, unschedule_issue, utcnow
from mailer.send import dispatch
from mailer.send.dispatch import proof_where, send_proof
from mailer.send.retry import requeue_failed
from mailer.web.admin import figures
from mailer.web.admin.lists import uploads
from mailer.web.security import ARCHIVE_CSP, PAGE_CSP
from subscribers import store
from subscribers.csvfile import neutralize
from subscribers.errors import SubscriberError
from subscribers.models import Status
from subscribers.normalize import unsendable_reason

log = logging.getLogger("mailer.web")

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
        return as_written(read_issue(path).subject)
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


def _facts(conn, slug: str) -> dict:
    sent = figures.issues_sent(conn, None, slug)
    return {"sent": sent[0] if sent else None, "state": figures.issue_state(conn, slug),
            "failures": figures.failures(conn, slug), "lists": store.all_lists(conn)}


async def _show(request: Request, slug: str, build, code: int, *, proof_to: str, results=None, error: str = "",
                schedule_error: str = "", schedule_note: str = "", send_note: str = "") -> Response:
    ctx = request.app.state.admin
    facts = await run_in_threadpool(ctx.web.read, _facts, slug)
    return _issue_page(request, code, slug=slug, build=build, proof_to=proof_to, results=results, error=error,
                       schedule_error=schedule_error, schedule_note=schedule_note,
                       send_note=send_note or _running_note(slug), default_list=ctx.settings.schedule.list, **facts)


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


# ---------------------------------------------------------------- behind a confirmation

def lint_result(build) -> tuple[int, str]:
    """(errors, the report's last line "N error(s), M warning(s)"): the same lint as the gate's."""
    last = build.report.strip().splitlines()[-1].strip() if build.report.strip() else ""
    try:
        errors = int(last.split(" error(s)")[0]) if " error(s)" in last else 0
    except ValueError:
        errors = 0
    return (1, build.error) if build.error else (errors, last)


def _readers(conn, counts, list_name: str, slug: str) -> tuple[int, bool]:
    """(readers this send would still reach on the list, whether a send of it exists already)."""
    found = store.get_list(conn, list_name)
    row = conn.execute(figures.send_of(slug, found.id)).first()
    if row is not None:
        return figures.unfinished(conn, row.id), True
    return counts.get(conn, found.id).get(Status.ACTIVE, 0), False


async def _confirm(request: Request, slug: str, kind: str, list_name: str, fields: dict) -> Response:
    """The page before a proof, a schedule or a send: the list, how many readers, the lint result."""
    ctx = request.app.state.admin
    build = await run_in_threadpool(_build, ctx.settings, _path(request, slug))
    errors, lint_line = lint_result(build)
    readers, resumed, error = 0, False, ""
    if list_name:
        try:
            readers, resumed = await run_in_threadpool(ctx.web.read, _readers, ctx.counts, list_name, slug)
        except SubscriberError as exc:
            error = str(exc)
    elif kind != "proof":
        error = "Name the list: set [schedule] list in config.toml, or choose one." if kind == "schedule" else \
            "Choose the list to send to."
    code = 400 if errors or error else 200
    page = ctx.page(request, "issue_confirm.html.j2", code, slug=slug, kind=kind, list_name=list_name,
                    readers=readers, resumed=resumed, lint_errors=errors, lint_line=lint_line, error=error,
                    fields=fields, report=build.report)
    return page


@router.post("/{slug}/proof", include_in_schema=False)
async def proof(request: Request, slug: str, to: str = Form(""), confirm: str = Form("")) -> Response:
    ctx = request.app.state.admin
    path = _path(request, slug)
    addresses = [a.strip() for a in to.replace(";", ",").split(",") if a.strip()]
    error, results = "", None
    bad = next(((a, why) for a in addresses if (why := unsendable_reason(a)) is not None), None)
    if not addresses or len(addresses) > MAX_PROOF_ADDRESSES or bad:
        error = f"Give one to {MAX_PROOF_ADDRESSES} email addresses, separated by commas" + (
            f": {bad[0]!r} {bad[1]}." if bad else ".")
    elif confirm != "yes":
        return await _confirm(request, slug, "proof", "", {"to": to})
    else:
        try:
            outcome = await run_in_threadpool(_send_proof, ctx.settings, path, addresses)
            backend = ctx.settings.delivery.backend
            results = [(address, proof_where(result, backend)) for address, result in zip(addresses, outcome,
                                                                                           strict=True)]
            await run_in_threadpool(ctx.web.write, _note, request.state.admin, audit.Action.PROOF, slug,
                                    {"to": len(addresses)})
        except MailerError as exc:
            error = f"The proof was not sent: {exc}"
    build = await run_in_threadpool(_build, ctx.settings, path)
    return await _show(request, slug, build, 400 if error else 200, proof_to=to, results=results, error=error)


def _note(conn, admin, action: audit.Action, slug: str, detail: dict | None = None) -> None:
    audit.record(conn, **admin.who._asdict(), action=action, target=slug, detail=detail)


@router.post("/{slug}/schedule", include_in_schema=False)
async def schedule(request: Request, slug: str, at: str = Form(""), confirm: str = Form("")) -> Response:
    """Schedule for the next free slot of [schedule], or `at` (as `mailer issue schedule --at`)."""
    ctx = request.app.state.admin
    path = _path(request, slug)
    if confirm != "yes":
        return await _confirm(request, slug, "schedule", ctx.settings.schedule.list, {"at": at})
    try:
        done = await run_in_threadpool(schedule_issue, ctx.settings, str(path), at.strip() or None, utcnow())
        await run_in_threadpool(ctx.web.write, _note, request.state.admin, audit.Action.SCHEDULE, slug,
                                {"at": done.send_at.isoformat(), "list": done.list_name})
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
        if left:
            await run_in_threadpool(ctx.web.write, _note, request.state.admin, audit.Action.UNSCHEDULE, slug)
        note, error = ("Unscheduled: it is a draft again." if left else "It was not scheduled."), ""
    except MailerError as exc:
        note, error = "", f"Not unscheduled: {exc}"
    build = await run_in_threadpool(_build, ctx.settings, path)
    return await _show(request, slug, build, 400 if error else 200, proof_to=ctx.settings.newsletter.reply_to,
                       schedule_error=error, schedule_note=note)


def _report(conn, slug: str):
    """The issue's figures and a chart of its events from the day it went out: its first 30
    days, or the days so far."""
    found = figures.issues_sent(conn, issue=slug)
    if not found:
        return None
    start = found[0].started_at.date()
    # From the send's day to today, at most 30 days: never a day still to come (a fresh send's
    # chart is short, not padded with empty future days).
    days = min(30, max(1, (datetime.now(UTC).date() - start).days + 1))
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


# ---------------------------------------------------------------- send, retry, who got it

_sending: dict[str, threading.Thread] = {}
_outcome: dict[str, str] = {}
_send_lock = threading.Lock()


def _running_note(slug: str) -> str:
    with _send_lock:
        thread = _sending.get(slug)
        if thread is not None and thread.is_alive():
            return "Sending now: reload this page to see how far it is."
        return _outcome.get(slug, "")


def _run(settings, plan, slug: str) -> None:
    try:
        summary = dispatch.run_send(settings, plan)
        said = f"Sent: {summary.sent:,} sent, {summary.failed:,} failed, {summary.skipped:,} skipped."
    except MailerError as exc:
        said = f"The send stopped: {exc}"
    except Exception as exc:  # any failure is shown on the page and logged: the thread must not die silently
        log.exception("admin send of %s failed", slug)
        said = f"The send stopped: {exc}"
    with _send_lock:
        _outcome[slug] = said


def _start(settings, path: Path, list_name: str) -> int:
    """Through the gate (lint errors refuse, as `mailer send`), then the send in a thread; returns
    how many readers it will try."""
    composed = gate(path, settings)[1]
    plan = dispatch.plan_send(settings, composed, list_name)
    if plan.already_sent:
        raise SendError(f"{composed.slug} was sent to {list_name} already: every reader has it")
    with _send_lock:
        running = _sending.get(composed.slug)
        if running is not None and running.is_alive():
            raise SendError(f"{composed.slug} is being sent now")
        thread = threading.Thread(target=_run, args=(settings, plan, composed.slug), daemon=True,
                                  name=f"admin-send-{composed.slug}")
        _sending[composed.slug] = thread
        _outcome.pop(composed.slug, None)
        thread.start()
    return plan.readers


def started(slug: str) -> threading.Thread | None:
    """The thread of the send this process started for `slug` (tests wait on it)."""
    with _send_lock:
        return _sending.get(slug)


@router.post("/{slug}/send", include_in_schema=False)
async def send(request: Request, slug: str, list_name: str = Form("", alias="list"), confirm: str = Form("")
               ) -> Response:
    """Send the issue to a list, as `mailer send ISSUE --list LIST`, after a confirmation."""
    ctx = request.app.state.admin
    path = _path(request, slug)
    if confirm != "yes":
        return await _confirm(request, slug, "send", list_name, {"list": list_name})
    try:
        readers = await run_in_threadpool(_start, ctx.settings, path, list_name)
        await run_in_threadpool(ctx.web.write, _note, request.state.admin, audit.Action.SEND, slug,
                                {"list": list_name, "readers": readers})
        note, code = f"Sending to {readers:,} readers of {list_name}: started.", 200
    except (MailerError, SubscriberError) as exc:
        note, code = f"Not sent: {exc}", 400
    build = await run_in_threadpool(_build, ctx.settings, path)
    return await _show(request, slug, build, code, proof_to=ctx.settings.newsletter.reply_to, send_note=note)


def _requeue(conn, admin, slug: str) -> list[tuple[str, int]]:
    """Failed readers back to pending, per list; (list, how many) for each list that had some."""
    moved = []
    for list_name, list_id in figures.sent_lists(conn, slug):
        n = requeue_failed(conn, slug, list_id)
        if n:
            moved.append((list_name, n))
    if moved:
        _note(conn, admin, audit.Action.RETRY, slug, {"readers": sum(n for _, n in moved),
                                                       "lists": [name for name, _ in moved]})
    return moved


@router.post("/{slug}/retry", include_in_schema=False)
async def retry(request: Request, slug: str) -> Response:
    """"Retry failed": the issue's failed readers are tried once more (the send's --retry-failed)."""
    ctx = request.app.state.admin
    path = _path(request, slug)
    moved = await run_in_threadpool(ctx.web.write, _requeue, request.state.admin, slug)
    notes, code = [], 200
    for list_name, n in moved:
        try:
            await run_in_threadpool(_start, ctx.settings, path, list_name)
            notes.append(f"Retrying {n:,} failed readers of {list_name}: started.")
        except (MailerError, SubscriberError) as exc:
            notes.append(f"{n:,} failed readers of {list_name} are pending again, but the send did not start: {exc}")
            code = 400
    note = " ".join(notes) or "No failed readers to retry."
    build = await run_in_threadpool(_build, ctx.settings, path)
    return await _show(request, slug, build, code, proof_to=ctx.settings.newsletter.reply_to, send_note=note)


@router.get("/{slug}/recipients.csv", include_in_schema=False)
async def recipients(request: Request, slug: str) -> Response:
    """Who received the issue and who did not: one row per reader of each of its sends."""
    ctx = request.app.state.admin
    if not valid_issue_name(slug):
        raise HTTPException(404, "No such issue.")
    path = uploads() / f"recipients-{secrets.token_hex(16)}.csv"
    await run_in_threadpool(ctx.web.read, _write_recipients, slug, path)
    return FileResponse(path, media_type="text/csv; charset=utf-8", filename=f"{slug}-recipients.csv",
                        headers={"cache-control": "no-store"}, background=BackgroundTask(path.unlink, missing_ok=True))


def _write_recipients(conn, slug: str, path: Path) -> None:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\r\n")
        writer.writerow(figures.RECIPIENT_COLUMNS)
        for row in figures.recipients(conn, slug):
            writer.writerow([neutralize(cell) if cell and cell[0] in "=+-@\t\r'" else cell for cell in row])
