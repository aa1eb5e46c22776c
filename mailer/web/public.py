"""Web service: the reader's pages -> GET/POST /subscribe, /confirm/{token}, /unsubscribe/{token}.

/subscribe offers every list not marked private (checkboxes with title and description when there
are several; `?list=NAME` preselects one). A private or unknown list is answered alike: no such list.

Double opt-in: POST /subscribe records an unconfirmed membership and mails a link; only a POST to
that link confirms, so link scanners that GET every URL confirm nobody. Whatever the address's
state the page says the same thing, so the form tells nobody who is subscribed. Unsubscribe
follows RFC 8058 (docs/mail-facts.md): the POST works at once whatever its body or content type
(the body is never read), answers 200 without a redirect, and may be repeated.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Form, Query, Request
from starlette.responses import HTMLResponse

from mailer.web import prefs, readers
from subscribers.status import Status

log = logging.getLogger("mailer.web")
router = APIRouter()

ListName = Annotated[str, Query(alias="list", max_length=100)]
ListNames = Annotated[list[str], Form(alias="list", max_length=100)]
MAX_CHOICES = 50
TOKEN_PAGES: dict[int | str, dict[str, Any]] = {400: {"description": "forged, tampered or expired link"}}
ONE_CLICK_BODY = {"requestBody": {"required": False, "content": {
    "application/x-www-form-urlencoded": {"schema": {"type": "object", "properties": {
        "List-Unsubscribe": {"type": "string", "enum": ["One-Click"]}}}},
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "List-Unsubscribe": {"type": "string", "enum": ["One-Click"]}}}}}}}


@router.get("/subscribe", response_class=HTMLResponse, summary="The subscription form")
def subscribe_form(request: Request, list_name: ListName = "") -> HTMLResponse:
    web = request.app.state.web
    offered = prefs.offered_lists(web)
    if list_name and list_name not in {lst.name for lst in offered}:
        return _no_such_list(web)
    if not offered:
        return web.pages.error(404, "No list to subscribe to", "No mailing list is open for subscription yet.")
    return web.pages.render("subscribe.html.j2", lists=offered, chosen={list_name} if list_name else set(),
                            email="", name="", error=None)


@router.post("/subscribe", response_class=HTMLResponse, summary="Ask for a confirmation mail",
             responses={400: {"description": "not an address"}, 404: {"description": "no such list"},
                        429: {"description": "too many requests from this address"}})
def subscribe(request: Request, background: BackgroundTasks,
              email: Annotated[str, Form(max_length=400)] = "",
              name: Annotated[str, Form(max_length=400)] = "",
              list_names: ListNames = [],  # noqa: B006 - FastAPI copies defaults
              website: Annotated[str, Form(max_length=400)] = "") -> HTMLResponse:
    web = request.app.state.web
    client = readers.client(request)
    if (refused := too_many(web, "subscribe", client)) is not None:
        return refused
    if website:   # the honeypot: people never see it, form-filling bots do. Say the usual thing.
        log.info("subscribe: honeypot filled from %s; ignored", client.ip)
        return web.pages.render("check_inbox.html.j2", private=True)
    offered = prefs.offered_lists(web)
    by_name = {lst.name: lst for lst in offered}
    names = list(dict.fromkeys(list_names))[:MAX_CHOICES]
    if not names and len(offered) == 1:
        names = [offered[0].name]        # the only list: a form without a choice means it
    if any(n not in by_name for n in names) or not offered:
        return _no_such_list(web)
    problem = readers.address_problem(email) or (None if names else "Please choose at least one list.")
    if problem:
        return web.pages.render("subscribe.html.j2", 400, lists=offered, chosen=set(names), email=email,
                                name=name, error=problem)
    for list_name in names:
        mail = readers.sign_up(web, by_name[list_name], email, name, client)
        if mail is not None:
            background.add_task(readers.send_confirmation_mail, web, mail)
    return web.pages.render("check_inbox.html.j2", private=True, count=len(names))


@router.get("/confirm/{token}", response_class=HTMLResponse, summary="A button that confirms",
            responses=TOKEN_PAGES)
def confirm_page(token: str, request: Request) -> HTMLResponse:
    web = request.app.state.web
    target = readers.membership_for(web, "confirm", token, max_age=_confirm_age(web))
    if target is None:
        return _bad_link(web, "confirmation")
    if readers.status_of(web, target) == Status.ACTIVE:
        return web.pages.render("confirmed.html.j2", private=True, list_title=target.list_title, already=True)
    return web.pages.render("confirm.html.j2", private=True, action=f"/confirm/{token}",
                            list_title=target.list_title)


@router.post("/confirm/{token}", response_class=HTMLResponse, summary="Confirm the subscription",
             responses={**TOKEN_PAGES, 409: {"description": "the link no longer applies"}})
def confirm(token: str, request: Request) -> HTMLResponse:
    web = request.app.state.web
    target = readers.membership_for(web, "confirm", token, max_age=_confirm_age(web))
    if target is None:
        return _bad_link(web, "confirmation")
    if readers.status_of(web, target) == Status.ACTIVE:
        return web.pages.render("confirmed.html.j2", private=True, list_title=target.list_title, already=True)
    if not readers.confirm(web, target, readers.client(request)):
        return web.pages.error(409, "This link no longer applies",
                               "Your subscription changed after this link was sent. "
                               "To subscribe again, use the form.", list_name=target.list_name)
    return web.pages.render("confirmed.html.j2", private=True, list_title=target.list_title, already=False)


@router.get("/unsubscribe/{token}", response_class=HTMLResponse, summary="A button that unsubscribes",
            responses=TOKEN_PAGES)
def unsubscribe_page(token: str, request: Request) -> HTMLResponse:
    web = request.app.state.web
    target = readers.membership_for(web, "unsubscribe", token)
    if target is None:
        return _bad_link(web, "unsubscribe")
    if readers.status_of(web, target) == Status.UNSUBSCRIBED:
        return web.pages.render("unsubscribed.html.j2", private=True, list_title=target.list_title,
                                list_name=target.list_name, already=True, preferences=f"/preferences/{token}")
    return web.pages.render("unsubscribe.html.j2", private=True, action=f"/unsubscribe/{token}",
                            list_title=target.list_title, preferences=f"/preferences/{token}")


@router.post("/unsubscribe/{token}", response_class=HTMLResponse, openapi_extra=ONE_CLICK_BODY,
             summary="Unsubscribe at once (RFC 8058 one-click)", responses=TOKEN_PAGES)
async def unsubscribe(token: str, request: Request) -> HTMLResponse:
    """Async on purpose: the token check and the page stay on the event loop; the write joins
    the group commit (context.GroupWriter). The body is never read."""
    web = request.app.state.web
    ids = readers.verify(web, "unsubscribe", token)
    if ids is None:
        return _bad_link(web, "unsubscribe")
    target = await asyncio.wrap_future(web.batch.submit(readers.unsubscribe_in, web, ids,
                                                        readers.client(request)))
    return web.pages.render("unsubscribed.html.j2", private=True, list_title=target.list_title,
                            list_name=target.list_name, already=not target.changed,
                            preferences=f"/preferences/{token}")


def too_many(web, bucket: str, client) -> HTMLResponse | None:
    """The 429 page when this client IP's bucket is empty, else None (a token was taken)."""
    if web.limiter.allow(bucket, client.ip):
        return None
    return web.pages.error(429, "Too many requests", "Please try again in a few minutes.",
                           headers={"retry-after": "120"})


def _confirm_age(web) -> int:
    return int(timedelta(days=web.settings.web.confirm_link_days).total_seconds())


def _bad_link(web, kind: str) -> HTMLResponse:
    return web.pages.error(400, "This link does not work",
                           f"This {kind} link is not valid or has expired. Nothing was changed.", fresh_link=True)


def _no_such_list(web) -> HTMLResponse:
    return web.pages.error(404, "No such list", "There is no mailing list by that name.")
