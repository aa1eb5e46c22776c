"""/admin/subscribers...: the subscribers an admin filters (the start of an address or name, tags,
a status), each row selectable, and one action on the selection or on everything that matches; the
same view as CSV; one subscriber's page (edit the name and tags, memberships with their consent
record, history with its sources) and its actions: add to a list, unsubscribe, resubscribe (the
reader's consent, said so), forget (after a confirmation page).

Every change is the store call that the matching `mailer subscribers` command makes, with the
user as the history's source (`admin:NAME`), and one audit entry per subscriber changed, in the
same transaction (mailer/audit.py). Actions on many run 1,000 subscribers per transaction
(subscribers/many.py): each is idempotent, so one that was interrupted is finished by applying it
again, and the page says how many changed.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import parse_qs

from fastapi import APIRouter, Form, Query, Request
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, RedirectResponse, Response

from mailer import audit
from mailer.web.admin import figures, search
from mailer.web.admin.auth import MAX_FIELDS, Admin
from mailer.web.admin.lists import STATUSES, uploads
from subscribers import many, store, tags
from subscribers.errors import SubscriberError
from subscribers.exporter import export_selection
from subscribers.models import Status
from subscribers.normalize import deliverable, normalize_email
from subscribers.selection import Selection

T = TypeVar("T")

router = APIRouter(prefix="/subscribers")
ACTIONS = {"tag": "Tag", "untag": "Untag", "add_to_list": "Add to list", "unsubscribe": "Unsubscribe",
           "forget": "Forget"}


def _lists(conn):
    return store.all_lists(conn)


def _view(q: str, tag: list[str], status: str) -> Selection:
    try:
        return Selection.of(q, [t for cell in tag for t in cell.split(",")], status or None)
    except (SubscriberError, ValueError) as exc:
        raise HTTPException(400, str(exc)) from None


def _rows(conn, view: Selection, after: int | None, before: int | None):
    rows, has_before, has_after = view.page(conn, after=after, before=before)
    if view.by_address:            # a text search's page says how many it found (capped), no second reading
        total = rows[0].matched if rows else 0
    elif after is None and before is None and not has_after:
        total = len(rows)          # the first page is all there is
    else:
        total = view.count(conn, cap=search.COUNT_CAP)
    return {"rows": search.with_lists(conn, rows), "total": total,
            "has_before": has_before, "has_after": has_after, "lists": store.all_lists(conn)}


async def _listing(request: Request, view: Selection, code: int = 200, *, after: int | None = None,
                   before: int | None = None, error: str = "", form: dict | None = None, done: str = "",
                   act_error: str = "") -> Response:
    ctx = request.app.state.admin
    data = await run_in_threadpool(ctx.web.read, _rows, view, after, before)
    return ctx.page(request, "subscribers.html.j2", code, view=view, query=view.query_string(), cap=search.COUNT_CAP,
                    statuses=STATUSES, actions=ACTIONS, error=error, form=form or {}, done=done, act_error=act_error,
                    **data)


@router.get("", include_in_schema=False)
async def find(request: Request, q: str = "", status: str = "", after: int | None = None,
               before: int | None = None) -> Response:
    view = _view(q, request.query_params.getlist("tag"), status)
    return await _listing(request, view, after=after, before=before)


@router.get(".csv", include_in_schema=False)
async def export(request: Request, q: str = "", status: str = "") -> Response:
    """The view as CSV: the columns and formula safety of `mailer subscribers export`."""
    ctx = request.app.state.admin
    view = _view(q, request.query_params.getlist("tag"), status)
    path = uploads() / f"export-{secrets.token_hex(16)}.csv"
    await run_in_threadpool(export_selection, ctx.web.engine, view, path)
    name = "-".join(["subscribers", *view.tags, *([view.status.value] if view.status else [])])
    return FileResponse(path, media_type="text/csv; charset=utf-8", filename=f"{name}.csv",
                        headers={"cache-control": "no-store"}, background=BackgroundTask(path.unlink, missing_ok=True))


def _add(conn, admin: Admin, email: str, list_name: str, name: str, unconfirmed: bool, resubscribe: bool,
         secret: str):
    deliverable(normalize_email(email))
    found = store.get_list(conn, list_name)
    result = store.add_subscriber(conn, email, found.id, name=name or None,
                                  status=Status.UNCONFIRMED if unconfirmed else Status.ACTIVE,
                                  force=resubscribe, secret=secret, actor=admin.source)
    if result.outcome is not store.Outcome.UNCHANGED:
        lifted = resubscribe and result.outcome is store.Outcome.UPDATED
        audit.record(conn, **admin.who._asdict(), action=audit.Action.RESUBSCRIBE if lifted else
                     audit.Action.SUBSCRIBER_ADD, subscriber_id=result.subscriber_id, target=found.name,
                     detail={"status": result.status, "changes": list(result.changes)})
    return result


@router.post("", include_in_schema=False)
async def add(request: Request, email: str = Form(""), name: str = Form(""), list_name: str = Form("", alias="list"),
              unconfirmed: str = Form(""), resubscribe: str = Form("")) -> Response:
    ctx = request.app.state.admin
    try:
        result = await run_in_threadpool(ctx.web.write, _add, request.state.admin, email, list_name, name,
                                         bool(unconfirmed), bool(resubscribe), ctx.web.secret)
    except SubscriberError as exc:
        return await _listing(request, Selection(), 400, error=str(exc),
                              form={"email": email, "name": name, "list": list_name})
    return RedirectResponse(f"/admin/subscribers/{result.subscriber_id}?did={result.outcome}", status_code=303)


# ---------------------------------------------------------------- one action on many

@dataclass
class BulkOutcome:
    action: str
    changed: int = 0
    already: int = 0
    left_alone: int = 0
    seen: int = 0


def _apply_chunk(conn, admin: Admin, action: str, ids: list[int], value, secret: str) -> many.Changed:
    source = admin.source
    if action == "tag":
        changed = many.tag_many(conn, ids, value, source)
    elif action == "untag":
        changed = many.untag_many(conn, ids, value, source)
    elif action == "add_to_list":
        changed = many.add_many(conn, ids, value.id, source, secret=secret)
    elif action == "unsubscribe":
        changed = many.unsubscribe_many(conn, ids, value.id if value else None, source)
    else:
        changed = many.forget_many(conn, ids, secret, source)
    kind = {"tag": audit.Action.TAG, "untag": audit.Action.UNTAG, "add_to_list": audit.Action.SUBSCRIBER_ADD,
            "unsubscribe": audit.Action.UNSUBSCRIBE, "forget": audit.Action.FORGET}[action]
    target = value.name if action in ("add_to_list", "unsubscribe") and value else None
    detail = {"tags": list(value), "bulk": True} if action in ("tag", "untag") else {"bulk": True}
    audit.record_many(conn, [admin.who.entry(kind, subscriber_id=sid, target=target, detail=detail)
                             for sid in changed.ids])
    return changed


def run_action(web, admin: Admin, action: str, value, ids: list[int] | None, view: Selection,
               chunk: int = 1000) -> BulkOutcome:
    """The action on `ids`, or on everything `view` matches (ids None), `chunk` per transaction."""
    out = BulkOutcome(action)

    def one(conn, batch: list[int] | None, after: int) -> tuple[many.Changed, list[int]]:
        batch = batch if batch is not None else view.chunk(conn, after, chunk)
        return (_apply_chunk(conn, admin, action, batch, value, web.secret) if batch else many.Changed()), batch

    after, pending = 0, sorted(set(ids)) if ids is not None else None
    while True:
        part = None if pending is None else pending[:chunk]
        if part is not None and not part:
            break
        changed, batch = web.write(one, part, after)
        if not batch:
            break
        out.seen += len(batch)
        out.changed += len(changed.ids)
        out.already += changed.already
        out.left_alone += changed.left_alone
        after = batch[-1]
        if pending is not None:
            pending = pending[chunk:]
    return out


def _summary_entry(conn, admin: Admin, out: BulkOutcome, view: Selection, value, everything: bool) -> None:
    shown = ", ".join(value) if isinstance(value, tuple) else getattr(value, "name", None)
    audit.record(conn, **admin.who._asdict(), action=audit.Action.BULK, target=shown,
                 detail={"action": out.action, "changed": out.changed, "selected": out.seen,
                         "of": "all matching " + (view.query_string() or "(every subscriber)") if everything
                         else "rows ticked"})


def _said(out: BulkOutcome, value) -> str:
    n = f"{out.changed:,} subscriber{'s' if out.changed != 1 else ''}"
    if out.action in ("tag", "untag"):
        tags_said = ", ".join(value)
        what = f"Tagged {n} with {tags_said}" if out.action == "tag" else f"Took {tags_said} away from {n}"
    elif out.action == "add_to_list":
        what = f"Added {n} to {value.name}"
    elif out.action == "unsubscribe":
        what = f"Unsubscribed {n} from {value.name if value else 'every list'}"
    else:
        what = f"Forgot {n}"
    rest = []
    if out.already:
        rest.append(f"{out.already:,} had it already" if out.action != "add_to_list" else
                    f"{out.already:,} were on it already")
    if out.left_alone:
        rest.append(f"{out.left_alone:,} left alone: they had left that list or are suppressed (a resubscribe "
                    "on their own page needs their consent)")
    return f"{what}{'; ' + '; '.join(rest) if rest else ''}."


def _action_value(conn, action: str, tag: str, list_name: str):
    if action in ("tag", "untag"):
        parsed = tags.normalize_tags(t for t in tag.split(",") if t.strip())
        if not parsed:
            raise SubscriberError("Give the tag to add or take away.")
        return parsed
    if action == "add_to_list":
        if not list_name:
            raise SubscriberError("Choose the list to add them to.")
        return store.get_list(conn, list_name)
    if action == "unsubscribe":
        return store.get_list(conn, list_name) if list_name else None
    return None


def _selection_form(form: FormData) -> tuple[str, list[int] | None, Selection, str, str]:
    action = str(form.get("action", ""))
    if action not in ACTIONS:
        raise HTTPException(400, f"action must be one of {', '.join(ACTIONS)}")
    query = str(form.get("query", ""))
    parsed = parse_qs(query)
    view = _view(parsed.get("q", [""])[0], parsed.get("tag", []), parsed.get("status", [""])[0])
    everything = form.get("all") == "1"
    try:
        ids = None if everything else [int(str(v)) for v in form.getlist("selected")]
    except ValueError:
        raise HTTPException(400, "selected must be subscriber ids") from None
    return action, ids, view, str(form.get("tag", "")), str(form.get("list", ""))


@router.post("/act", include_in_schema=False)
async def act(request: Request) -> Response:
    """Apply the chosen action to the rows ticked (`selected`) or to all that match (`all`)."""
    ctx, admin = request.app.state.admin, request.state.admin
    form = await request.form(max_fields=MAX_FIELDS)
    action, ids, view, tag, list_name = _selection_form(form)
    if ids is not None and not ids:
        return await _listing(request, view, 400, act_error="Tick the subscribers to act on, or select all that match.")
    try:
        value = await run_in_threadpool(ctx.web.read, _action_value, action, tag, list_name)
    except SubscriberError as exc:
        return await _listing(request, view, 400, act_error=str(exc))
    if action == "forget" and form.get("confirm") != "1":
        count = len(set(ids)) if ids is not None else await run_in_threadpool(ctx.web.read, view.count)
        return ctx.page(request, "forget_many.html.j2", count=count, ids=ids, query=view.query_string(),
                        everything=ids is None)
    out = await run_in_threadpool(run_action, ctx.web, admin, action, value, ids, view)
    await run_in_threadpool(ctx.web.write, _summary_entry, admin, out, view, value, ids is None)
    return await _listing(request, view, done=_said(out, value))


# ---------------------------------------------------------------- one subscriber

def _person(conn, subscriber_id: int):
    email = search.subscriber_email(conn, subscriber_id)
    if email is None:
        return None
    who = store.get_subscriber(conn, email)
    return {"who": who, "members": store.memberships_of(conn, who.id), "history": store.history_of(conn, who.id),
            "tags": figures.tags_of(conn, who.id), "lists": store.all_lists(conn)}


async def _load(request: Request, subscriber_id: int) -> dict:
    data = await run_in_threadpool(request.app.state.admin.web.read, _person, subscriber_id)
    if data is None:
        raise HTTPException(404, "No such subscriber (forgotten, or never stored).")
    return data


DONE = {"added": "Subscribed.", "updated": "Updated.", "unchanged": "Already subscribed; nothing changed.",
        "unsubscribed": "Unsubscribed.", "already": "Already unsubscribed; nothing changed.",
        "resubscribed": "Subscribed again, with your consent record as the admin: they asked to come back.",
        "joined": "Added to the list.", "saved": "Saved.", "nothing": "Nothing changed."}


async def _page(request: Request, subscriber_id: int, code: int = 200, *, done: str = "", error: str = "",
                **extra) -> Response:
    data = await _load(request, subscriber_id)
    return request.app.state.admin.page(request, "subscriber.html.j2", code, done=done, error=error,
                                        **{**data, **extra})


@router.get("/{subscriber_id}", include_in_schema=False)
async def person(request: Request, subscriber_id: int, did: str = "",
                 list_name: str = Query("", alias="list")) -> Response:
    done = DONE.get(did, "")
    if did == "joined" and list_name:
        done = f"Added to {list_name[:64]}."
    return await _page(request, subscriber_id, done=done)


def _save(conn, subscriber_id: int, admin: Admin, name: str, typed_tags: str) -> list[str]:
    """Name and tags as typed; returns what changed, in words."""
    wanted = set(tags.normalize_tags(t for t in typed_tags.split(",") if t.strip()))
    have = set(tags.tags_of(conn, subscriber_id))
    said = []
    if store.rename(conn, subscriber_id, name, source=admin.source):
        audit.record(conn, **admin.who._asdict(), action=audit.Action.SUBSCRIBER_EDIT, subscriber_id=subscriber_id,
                     detail={"fields": ["name"]})
        said.append("name")
    added = tags.add_tags(conn, subscriber_id, wanted - have, source=admin.source)
    removed = tags.remove_tags(conn, subscriber_id, have - wanted, source=admin.source)
    for action, changed, words in ((audit.Action.TAG, added, "tagged"), (audit.Action.UNTAG, removed, "untagged")):
        if changed:
            audit.record(conn, **admin.who._asdict(), action=action, subscriber_id=subscriber_id,
                         detail={"tags": changed})
            said.append(f"{words} {', '.join(changed)}")
    return said


@router.post("/{subscriber_id}", include_in_schema=False)
async def save(request: Request, subscriber_id: int, name: str = Form(""), tags_typed: str = Form("", alias="tags")
               ) -> Response:
    ctx = request.app.state.admin
    await _load(request, subscriber_id)
    try:
        said = await run_in_threadpool(ctx.web.write, _save, subscriber_id, request.state.admin, name, tags_typed)
    except SubscriberError as exc:
        return await _page(request, subscriber_id, 400, error=str(exc))
    done = f"Saved: {'; '.join(said)}." if said else "Nothing changed."
    return await _page(request, subscriber_id, done=done)


def _unsubscribe(conn, subscriber_id: int, admin: Admin, list_name: str) -> bool:
    found = store.get_list(conn, list_name)
    changed = store.unsubscribe(conn, subscriber_id, found.id, source=admin.source)
    if changed:
        audit.record(conn, **admin.who._asdict(), action=audit.Action.UNSUBSCRIBE, subscriber_id=subscriber_id,
                     target=found.name)
    return changed


def _resubscribe(conn, subscriber_id: int, admin: Admin, list_name: str, secret: str):
    email = search.subscriber_email(conn, subscriber_id)
    if email is None:
        raise HTTPException(404, "No such subscriber.")
    return _add(conn, admin, email, list_name, "", False, True, secret)


def _join(conn, subscriber_id: int, admin: Admin, list_name: str, secret: str):
    email = search.subscriber_email(conn, subscriber_id)
    if email is None:
        raise HTTPException(404, "No such subscriber.")
    return _add(conn, admin, email, list_name, "", False, False, secret)


async def _act(request: Request, subscriber_id: int, fn: Callable[..., T], *args) -> Response | T:
    ctx = request.app.state.admin
    try:
        return await run_in_threadpool(ctx.web.write, fn, subscriber_id, request.state.admin, *args)
    except SubscriberError as exc:
        return await _page(request, subscriber_id, 400, error=str(exc))


@router.post("/{subscriber_id}/unsubscribe", include_in_schema=False)
async def unsubscribe(request: Request, subscriber_id: int, list_name: str = Form("", alias="list")) -> Response:
    changed = await _act(request, subscriber_id, _unsubscribe, list_name)
    if isinstance(changed, Response):
        return changed
    return RedirectResponse(f"/admin/subscribers/{subscriber_id}?did={'unsubscribed' if changed else 'already'}",
                            status_code=303)


@router.post("/{subscriber_id}/add", include_in_schema=False)
async def add_to_list(request: Request, subscriber_id: int, list_name: str = Form("", alias="list")) -> Response:
    """Add to a list they were never on: a new membership with the admin's consent record."""
    result = await _act(request, subscriber_id, _join, list_name, request.app.state.admin.web.secret)
    if isinstance(result, Response):
        return result
    did = "joined" if result.outcome is not store.Outcome.UNCHANGED else "unchanged"
    return RedirectResponse(f"/admin/subscribers/{subscriber_id}?did={did}&list={list_name}", status_code=303)


@router.post("/{subscriber_id}/resubscribe", include_in_schema=False)
async def resubscribe(request: Request, subscriber_id: int, list_name: str = Form("", alias="list"),
                      consent: str = Form("")) -> Response:
    """Back onto a list they left (or lifting a bounce or complaint): the reader's consent. Without
    `consent=yes` the page says so and asks; with it, the admin is recorded as the consent's source."""
    if consent != "yes":
        data = await _load(request, subscriber_id)
        member = next((m for m in data["members"] if m.list == list_name), None)
        return request.app.state.admin.page(request, "resubscribe.html.j2", who=data["who"], list_name=list_name,
                                            member=member)
    result = await _act(request, subscriber_id, _resubscribe, list_name, request.app.state.admin.web.secret)
    if isinstance(result, Response):
        return result
    did = "resubscribed" if result.outcome is not store.Outcome.UNCHANGED else "unchanged"
    return RedirectResponse(f"/admin/subscribers/{subscriber_id}?did={did}", status_code=303)


@router.get("/{subscriber_id}/forget", include_in_schema=False)
async def forget_confirm(request: Request, subscriber_id: int) -> Response:
    data = await _load(request, subscriber_id)
    return request.app.state.admin.page(request, "forget.html.j2", who=data["who"])


def _forget(conn, subscriber_id: int, admin: Admin, secret: str) -> str:
    email = search.subscriber_email(conn, subscriber_id)
    if email is None:
        raise HTTPException(404, "No such subscriber.")
    store.forget(conn, email, secret, source=admin.source)
    audit.record(conn, **admin.who._asdict(), action=audit.Action.FORGET, subscriber_id=subscriber_id)
    return email


@router.post("/{subscriber_id}/forget", include_in_schema=False)
async def forget(request: Request, subscriber_id: int) -> Response:
    ctx = request.app.state.admin
    email = await run_in_threadpool(ctx.web.write, _forget, subscriber_id, request.state.admin, ctx.web.secret)
    return ctx.page(request, "message.html.j2", title="Forgotten",
                    message=f"Forgot {email}: subscriber, memberships and the personal data in their history are "
                            "erased; imports will skip the address.", back="/admin/subscribers")
