"""/admin/lists...: create, edit, delete (after a confirmation page), members a page at a time,
CSV import by upload (a dry run first, then the same file applied), CSV export, and the welcome
mail (an issue file of [compose] issues_dir, lint-gated as `mailer lists welcome` does).

List changes go through subscribers.store and imports through subscribers.importer, exactly as
`mailer lists` and `mailer subscribers import|export` do; the report is the CLI's.
"""

from __future__ import annotations

import atexit
import os
import re
import secrets
import shutil
import stat
import tempfile
import threading
import time
from pathlib import Path

from fastapi import APIRouter, Depends, Form, Request
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile as StarletteUpload
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, RedirectResponse, Response

from mailer import audit
from mailer.errors import MailerError
from mailer.send import welcome
from mailer.web.admin import search
from mailer.web.admin.auth import owner
from subscribers import store
from subscribers.errors import SubscriberError
from subscribers.exporter import export_csv
from subscribers.importer import import_csv
from subscribers.models import Status

router = APIRouter(prefix="/lists")
STATUSES = [s.value for s in Status]
UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
UPLOAD_DAYS = 1                       # an upload not applied within a day is deleted


def uploads() -> Path:
    """This process's private folder for uploads and downloads: made by mkdtemp (0700, owned by
    this process's user, a fresh random name), checked at every use; if it is gone or was
    changed (another owner, wider rights, a symlink), a new one is made and the old not trusted."""
    with _private_lock:
        if not _private or not _is_private(_private[0]):
            _private[:] = [Path(tempfile.mkdtemp(prefix="mailer-admin-uploads-"))]
            atexit.register(shutil.rmtree, _private[0], ignore_errors=True)
        folder = _private[0]
    for old in folder.iterdir():      # tidy: dry runs never applied, exports never fetched
        if time.time() - old.lstat().st_mtime > UPLOAD_DAYS * 86400:
            shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink(missing_ok=True)
    return folder


_private: list[Path] = []
_private_lock = threading.Lock()


def _is_private(folder: Path) -> bool:
    try:
        found = os.lstat(folder)
    except OSError:
        return False
    return stat.S_ISDIR(found.st_mode) and found.st_uid == os.geteuid() and not found.st_mode & 0o077


def _upload_file(upload_id: str) -> Path | None:
    """The uploaded file, kept under its own name (the import's history names the file); None
    unless the upload's folder and its one file are real (no symlink) and ours."""
    if not UPLOAD_ID.fullmatch(upload_id):
        return None
    folder = uploads() / upload_id
    if not _is_private(folder):
        return None
    found = list(folder.iterdir())
    if len(found) != 1 or not stat.S_ISREG(found[0].lstat().st_mode):
        return None
    return found[0]


def _safe_name(name: str | None) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._ -]", "_", Path(name or "").name).strip(" .")[:100]
    return cleaned or "upload.csv"


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


@router.get("", include_in_schema=False)
async def all_lists(request: Request, deleted: str = "") -> Response:
    ctx = request.app.state.admin
    rows = await run_in_threadpool(ctx.web.read, search.overview, ctx.counts)
    return ctx.page(request, "lists.html.j2", lists=rows, statuses=STATUSES, deleted=deleted[:64], error="",
                    form={})


def _audited(fn, action: audit.Action):
    """fn(conn, name, ...) and its audit entry, in one transaction."""
    def run(conn, admin, name: str, *args, **kwargs):
        result = fn(conn, name, *args, **kwargs)
        detail = {"fields": result[1]} if action is audit.Action.LIST_EDIT else None
        if action is not audit.Action.LIST_EDIT or result[1]:
            audit.record(conn, **admin.who._asdict(), action=action, target=name, detail=detail)
        return result
    return run


@router.post("", include_in_schema=False, dependencies=[Depends(owner)])
async def create(request: Request, name: str = Form(""), title: str = Form(""),
                 description: str = Form("")) -> Response:
    ctx = request.app.state.admin
    name = name.strip()
    try:
        await run_in_threadpool(ctx.web.write, _audited(store.create_list, audit.Action.LIST_CREATE),
                                request.state.admin, name, title, description)
    except SubscriberError as exc:
        rows = await run_in_threadpool(ctx.web.read, search.overview, ctx.counts)
        return ctx.page(request, "lists.html.j2", 400, lists=rows, statuses=STATUSES, deleted="", error=str(exc),
                        form={"name": name, "title": title, "description": description})
    return _redirect(f"/admin/lists/{name}?created=1")


def _one(conn, counts_cache, name: str, status: Status | None, after: int | None, before: int | None):
    found = store.get_list(conn, name)
    counts = counts_cache.get(conn, found.id)
    return found, counts, search.members(conn, found.id, status=status, after=after, before=before)


def _welcome_of(conn, list_id: int) -> str:
    path = welcome.welcomes(conn).get(list_id)
    return Path(path).stem if path else ""


def _issue_files(settings) -> list[str]:
    folder = settings.compose.issues_dir
    return sorted(p.stem for p in folder.glob("*.md")) if folder.is_dir() else []


async def _get(request: Request, name: str, *args):
    try:
        ctx = request.app.state.admin
        return await run_in_threadpool(ctx.web.read, _one, ctx.counts, name, *args)
    except SubscriberError as exc:
        raise HTTPException(404, str(exc)) from None


def _status(value: str) -> Status | None:
    if not value:
        return None
    if value not in STATUSES:
        raise HTTPException(400, f"status must be one of {', '.join(STATUSES)}")
    return Status(value)


@router.get("/{name}", include_in_schema=False)
async def one(request: Request, name: str, status: str = "", after: int | None = None, before: int | None = None,
              created: str = "", saved: str = "") -> Response:
    ctx = request.app.state.admin
    chosen = _status(status)
    found, counts, page = await _get(request, name, chosen, after, before)
    current = await run_in_threadpool(ctx.web.read, _welcome_of, found.id)
    return ctx.page(request, "list.html.j2", lst=found, counts=counts, total=sum(counts.values()), page=page,
                    status=chosen.value if chosen else "", statuses=STATUSES, created=bool(created),
                    saved=bool(saved), error="", welcome=current, issue_files=_issue_files(ctx.web.settings))


@router.post("/{name}", include_in_schema=False, dependencies=[Depends(owner)])
async def edit(request: Request, name: str, title: str = Form(""), description: str = Form(""),
               private: str = Form("")) -> Response:
    ctx = request.app.state.admin
    try:
        await run_in_threadpool(ctx.web.write, _audited(store.edit_list, audit.Action.LIST_EDIT), request.state.admin,
                                name, title=title, description=description, private=bool(private))
    except SubscriberError as exc:
        raise HTTPException(404, str(exc)) from None
    return _redirect(f"/admin/lists/{name}?saved=1")


@router.post("/{name}/welcome", include_in_schema=False, dependencies=[Depends(owner)])
async def set_welcome(request: Request, name: str, file: str = Form("")) -> Response:
    """An issue file of issues_dir as the list's welcome mail (refused with its lint errors), or none."""
    ctx = request.app.state.admin
    settings = ctx.web.settings
    found = (await _get(request, name, None, None, None))[0]
    if file and file not in _issue_files(settings):
        raise HTTPException(400, f"no issue file {file!r} in {settings.compose.issues_dir}")
    composed = None
    path = settings.compose.issues_dir / f"{file}.md"
    if file:
        try:
            composed = await run_in_threadpool(welcome.check, settings, path, found.language)
        except MailerError as exc:
            return ctx.page(request, "message.html.j2", 400, title="Refused", message=str(exc),
                            back=f"/admin/lists/{name}")
    await run_in_threadpool(ctx.web.write, _set_welcome, request.state.admin, found, path, composed)
    return _redirect(f"/admin/lists/{name}?saved=1")


def _set_welcome(conn, admin, found, path: Path, composed) -> None:
    if composed is None:
        changed = welcome.clear_welcome(conn, found.id)
    else:
        welcome.set_welcome(conn, found.id, path, composed.slug, composed.subject)
        changed = True
    if changed:
        audit.record(conn, **admin.who._asdict(), action=audit.Action.LIST_EDIT, target=found.name,
                     detail={"welcome": path.name if composed else "off"})


@router.get("/{name}/delete", include_in_schema=False)
async def delete_confirm(request: Request, name: str) -> Response:
    ctx = request.app.state.admin
    found, counts, _ = await _get(request, name, None, None, None)
    return ctx.page(request, "list_delete.html.j2", lst=found, total=sum(counts.values()))


@router.post("/{name}/delete", include_in_schema=False, dependencies=[Depends(owner)])
async def delete(request: Request, name: str) -> Response:
    ctx = request.app.state.admin
    try:
        await run_in_threadpool(ctx.web.write, _audited(store.delete_list, audit.Action.LIST_DELETE),
                                request.state.admin, name)
    except SubscriberError as exc:
        raise HTTPException(404, str(exc)) from None
    return _redirect(f"/admin/lists?deleted={name}")


# ---------------------------------------------------------------- import and export

def _run_import(web, path: Path, name: str, *, unconfirmed: bool, overwrite: bool, dry_run: bool):
    # this process's writer lock, around each chunk's writes only: never while the file is parsed
    return import_csv(web.engine, path, name, secret=web.secret,
                      status=Status.UNCONFIRMED if unconfirmed else Status.ACTIVE,
                      dry_run=dry_run, overwrite=overwrite, lock=web.exclusive())


async def _import_page(request: Request, name: str, path: Path, upload_id: str, unconfirmed: bool,
                       overwrite: bool, dry_run: bool) -> Response:
    ctx = request.app.state.admin
    try:
        summary = await run_in_threadpool(_run_import, ctx.web, path, name, unconfirmed=unconfirmed,
                                          overwrite=overwrite, dry_run=dry_run)
    except SubscriberError as exc:
        shutil.rmtree(path.parent, ignore_errors=True)
        return ctx.page(request, "message.html.j2", 400, title="The file could not be imported", message=str(exc),
                        back=f"/admin/lists/{name}")
    summary.file = path.name                     # the admin's name for it, not our folder
    if not dry_run:
        shutil.rmtree(path.parent, ignore_errors=True)
        await run_in_threadpool(ctx.web.write, lambda conn: audit.record(
            conn, **request.state.admin.who._asdict(), action=audit.Action.IMPORT, target=name,
            detail=audit.import_detail(summary)))
    return ctx.page(request, "import_report.html.j2", lst_name=name, s=summary, upload_id=upload_id,
                    unconfirmed=unconfirmed, overwrite=overwrite)


@router.post("/{name}/import", include_in_schema=False)
async def import_upload(request: Request, name: str) -> Response:
    # No File()/Form() parameters: FastAPI would parse (and spool) the upload before the session
    # check runs; read here, it is parsed only for a logged-in admin with a valid CSRF token.
    form = await request.form()
    file = form.get("file")
    if not isinstance(file, StarletteUpload):
        raise HTTPException(400, "Choose a CSV file to upload.")
    upload_id = secrets.token_hex(16)
    folder = uploads() / upload_id
    folder.mkdir(mode=0o700)
    path = folder / _safe_name(file.filename)
    with open(path, "xb") as out:                # O_EXCL: never through a symlink put there
        await run_in_threadpool(shutil.copyfileobj, file.file, out)
    return await _import_page(request, name, path, upload_id, bool(form.get("unconfirmed")),
                              not form.get("no_overwrite"), dry_run=True)


@router.post("/{name}/import/apply", include_in_schema=False)
async def import_apply(request: Request, name: str, upload: str = Form(""), unconfirmed: str = Form(""),
                       overwrite: str = Form("")) -> Response:
    path = _upload_file(upload)
    if path is None:
        raise HTTPException(410, "That upload is gone (applied already, or older than a day). Upload the file again.")
    return await _import_page(request, name, path, upload, bool(unconfirmed), bool(overwrite), dry_run=False)


@router.get("/{name}/export.csv", include_in_schema=False)
async def export(request: Request, name: str, status: str = "") -> Response:
    ctx = request.app.state.admin
    chosen = _status(status)
    path = uploads() / f"export-{secrets.token_hex(16)}.csv"
    try:
        await run_in_threadpool(export_csv, ctx.web.engine, name, path, status=chosen.value if chosen else None)
    except SubscriberError as exc:
        path.unlink(missing_ok=True)
        raise HTTPException(404, str(exc)) from None
    download = f"{name}{'-' + chosen.value if chosen else ''}.csv"
    return FileResponse(path, media_type="text/csv; charset=utf-8", filename=download,
                        headers={"cache-control": "no-store"},
                        background=BackgroundTask(path.unlink, missing_ok=True))
