"""/admin/subscribers...: search by the start of an address or name (mailer/web/admin/search.py),
one subscriber's page (memberships with their consent record, tags, full history), and the
admin's actions: add, unsubscribe, resubscribe, forget (after a confirmation page).

Every action is the store call that `mailer subscribers add|remove|forget` makes, with the same
source ("admin"), so the history reads the same whichever way an admin worked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from fastapi import APIRouter, Form, Request
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.responses import RedirectResponse, Response

from mailer.web.admin import figures, search
from subscribers import store
from subscribers.errors import SubscriberError
from subscribers.models import Status

T = TypeVar("T")

router = APIRouter(prefix="/subscribers")


def _lists(conn):
    return store.all_lists(conn)


@router.get("", include_in_schema=False)
async def find(request: Request, q: str = "") -> Response:
    ctx = request.app.state.admin
    q = q.strip()[:200]
    found = await run_in_threadpool(ctx.web.read, search.find, q) if q else None
    lists = await run_in_threadpool(ctx.web.read, _lists)
    return ctx.page(request, "subscribers.html.j2", q=q, found=found, lists=lists, cap=search.COUNT_CAP,
                    error="", form={})


def _add(conn, email: str, list_name: str, name: str, unconfirmed: bool, resubscribe: bool, secret: str):
    found = store.get_list(conn, list_name)
    return store.add_subscriber(conn, email, found.id, name=name or None,
                                status=Status.UNCONFIRMED if unconfirmed else Status.ACTIVE,
                                force=resubscribe, secret=secret)


@router.post("", include_in_schema=False)
async def add(request: Request, email: str = Form(""), name: str = Form(""), list_name: str = Form("", alias="list"),
              unconfirmed: str = Form(""), resubscribe: str = Form("")) -> Response:
    ctx = request.app.state.admin
    try:
        result = await run_in_threadpool(ctx.web.write, _add, email, list_name, name, bool(unconfirmed),
                                         bool(resubscribe), ctx.web.secret)
    except SubscriberError as exc:
        lists = await run_in_threadpool(ctx.web.read, _lists)
        return ctx.page(request, "subscribers.html.j2", 400, q="", found=None, lists=lists, cap=search.COUNT_CAP,
                        error=str(exc), form={"email": email, "name": name, "list": list_name})
    return RedirectResponse(f"/admin/subscribers/{result.subscriber_id}?did={result.outcome}", status_code=303)


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
        "resubscribed": "Subscribed again."}


@router.get("/{subscriber_id}", include_in_schema=False)
async def person(request: Request, subscriber_id: int, did: str = "") -> Response:
    data = await _load(request, subscriber_id)
    return request.app.state.admin.page(request, "subscriber.html.j2", done=DONE.get(did, ""), error="", **data)


def _unsubscribe(conn, subscriber_id: int, list_name: str) -> bool:
    found = store.get_list(conn, list_name)
    return store.unsubscribe(conn, subscriber_id, found.id, source="admin")


def _resubscribe(conn, subscriber_id: int, list_name: str, secret: str):
    email = search.subscriber_email(conn, subscriber_id)
    if email is None:
        raise HTTPException(404, "No such subscriber.")
    return _add(conn, email, list_name, "", False, True, secret)


async def _act(request: Request, subscriber_id: int, fn: Callable[..., T], *args) -> Response | T:
    ctx = request.app.state.admin
    try:
        return await run_in_threadpool(ctx.web.write, fn, subscriber_id, *args)
    except SubscriberError as exc:
        data = await _load(request, subscriber_id)
        return ctx.page(request, "subscriber.html.j2", 400, done="", error=str(exc), **data)


@router.post("/{subscriber_id}/unsubscribe", include_in_schema=False)
async def unsubscribe(request: Request, subscriber_id: int, list_name: str = Form("", alias="list")) -> Response:
    changed = await _act(request, subscriber_id, _unsubscribe, list_name)
    if isinstance(changed, Response):
        return changed
    return RedirectResponse(f"/admin/subscribers/{subscriber_id}?did={'unsubscribed' if changed else 'already'}",
                            status_code=303)


@router.post("/{subscriber_id}/resubscribe", include_in_schema=False)
async def resubscribe(request: Request, subscriber_id: int, list_name: str = Form("", alias="list")) -> Response:
    result = await _act(request, subscriber_id, _resubscribe, list_name, request.app.state.admin.web.secret)
    if isinstance(result, Response):
        return result
    did = "resubscribed" if result.outcome is not store.Outcome.UNCHANGED else "unchanged"
    return RedirectResponse(f"/admin/subscribers/{subscriber_id}?did={did}", status_code=303)


@router.get("/{subscriber_id}/forget", include_in_schema=False)
async def forget_confirm(request: Request, subscriber_id: int) -> Response:
    data = await _load(request, subscriber_id)
    return request.app.state.admin.page(request, "forget.html.j2", who=data["who"])


def _forget(conn, subscriber_id: int, secret: str) -> str:
    email = search.subscriber_email(conn, subscriber_id)
    if email is None:
        raise HTTPException(404, "No such subscriber.")
    store.forget(conn, email, secret)
    return email


@router.post("/{subscriber_id}/forget", include_in_schema=False)
async def forget(request: Request, subscriber_id: int) -> Response:
    ctx = request.app.state.admin
    email = await run_in_threadpool(ctx.web.write, _forget, subscriber_id, ctx.web.secret)
    return ctx.page(request, "message.html.j2", title="Forgotten",
                    message=f"Forgot {email}: subscriber, memberships and the personal data in their history are "
                            "erased; imports will skip the address.", back="/admin/subscribers")
