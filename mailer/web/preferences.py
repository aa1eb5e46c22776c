"""Web service: a reader's preferences page -> GET/POST /preferences (ask for a fresh link) and
GET/POST /preferences/{token}, POST /preferences/{token}/leave.

Every email's footer links to /preferences/{token}; there the reader sees their lists, changes
which ones they get, changes their name, or leaves everything (one-click unsubscribe stays as it
is). A reader whose link is broken or old enters their address and gets a fresh link by mail, to
that address only; the page answers the same whatever the address's state, after the same work:
the address is looked up, and the mail sent, after the response (a background task), so neither
the answer nor its timing tells a subscribed address from another. Both the client IP (token
bucket) and the address (one mail per [web] confirm_resend_minutes) are limited.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Form, Request
from starlette.responses import HTMLResponse

from mailer.i18n import N_
from mailer.web import prefs, readers, staff_copies
from mailer.web.challenge import Form as GuardFields
from mailer.web.challenge import Verdict
from mailer.web.language import current, speak
from mailer.web.public import GUARD_MESSAGES, too_many

log = logging.getLogger("mailer.web")
router = APIRouter()
Names = Annotated[list[str], Form(alias="list", max_length=100)]
TOKEN_PAGES: dict[int | str, dict[str, Any]] = {400: {"description": "forged, tampered or expired link"}}


@router.get("/preferences", response_class=HTMLResponse, summary="Ask for a link to your preferences")
def ask_form(request: Request) -> HTMLResponse:
    return request.app.state.web.pages.render("preferences_ask.html.j2", email="", error=None)


@router.post("/preferences", response_class=HTMLResponse, summary="Mail a fresh preferences link",
             responses={400: {"description": "not an address, or no proof-of-work solution"},
                        429: {"description": "too many requests from this address"}})
def ask(request: Request, background: BackgroundTasks,
        email: Annotated[str, Form(max_length=400)] = "",
        website: Annotated[str, Form(max_length=400)] = "",
        started: Annotated[str, Form(max_length=200)] = "",
        altcha: Annotated[str, Form(max_length=8000)] = "") -> HTMLResponse:
    web = request.app.state.web
    client = readers.client(request)
    if (refused := too_many(web, "preferences", client)) is not None:
        return refused
    verdict = web.guard.judge(GuardFields(website=website, started=started, altcha=altcha))
    if verdict is Verdict.PASS:
        problem = readers.address_problem(web, email)
        if problem:
            return web.pages.render("preferences_ask.html.j2", 400, email=email, error=problem)
        # every address: the same answer after the same work; the lookup and the mail come after
        background.add_task(prefs.mail_link, web, email, current().language)
    elif verdict is not Verdict.HONEYPOT:   # the honeypot: robots fill it, people never see it; the usual page
        return web.pages.render("preferences_ask.html.j2", 400, email=email, error=GUARD_MESSAGES[verdict])
    return web.pages.render("link_sent.html.j2", private=True)


@router.get("/preferences/{token}", response_class=HTMLResponse, summary="Your lists and name",
            responses=TOKEN_PAGES)
def page(token: str, request: Request) -> HTMLResponse:
    web = request.app.state.web
    if (staff := staff_copies.page(web, "preferences", token)) is not None:
        return staff
    reader = _reader(web, token)
    if reader is None:
        return _bad_link(web)
    return _render(web, token, reader, saved=None)


@router.post("/preferences/{token}", response_class=HTMLResponse, summary="Save your lists and name",
             responses=TOKEN_PAGES)
def save(token: str, request: Request, list_names: Names = [],  # noqa: B006 - FastAPI copies defaults
         name: Annotated[str, Form(max_length=400)] = "") -> HTMLResponse:
    web = request.app.state.web
    found = _holder(web, token)
    if found is None:
        return _bad_link(web)
    subscriber_id = found.subscriber_id
    changed = prefs.save(web, subscriber_id, set(list_names[:200]), name, readers.client(request), fresh=found.fresh)
    reader = None if changed is None else prefs.load(web, subscriber_id)
    if reader is None:
        return _bad_link(web)
    return _render(web, token, reader, saved=changed)


@router.post("/preferences/{token}/tracking", response_class=HTMLResponse,
             summary="Allow or refuse click counting", responses=TOKEN_PAGES)
def tracking_choice(token: str, request: Request,
                    tracking: Annotated[str, Form(max_length=10)] = "off") -> HTMLResponse:
    """`tracking` = "off" (anything but "on" refuses: the safe reading of a mangled form)."""
    web = request.app.state.web
    found = _holder(web, token)
    subscriber_id = None if found is None else found.subscriber_id
    changed = None if found is None else prefs.set_tracking(web, found.subscriber_id, tracking == "on",
                                                            readers.client(request), fresh=found.fresh)
    reader = None if changed is None or subscriber_id is None else prefs.load(web, subscriber_id)
    if reader is None:
        return _bad_link(web)
    return _render(web, token, reader, saved=changed)


@router.post("/preferences/{token}/leave", response_class=HTMLResponse, summary="Leave every list",
             responses=TOKEN_PAGES)
def leave(token: str, request: Request) -> HTMLResponse:
    web = request.app.state.web
    subscriber_id = _subscriber(web, token)
    left = None if subscriber_id is None else prefs.leave_all(web, subscriber_id, readers.client(request))
    if left is None:
        return _bad_link(web)
    return web.pages.render("left_all.html.j2", private=True, left=left, action=f"/preferences/{token}")


def _holder(web, token: str) -> prefs.Holder | None:
    """Who the link names; the page speaks the language of the list the link came with."""
    found = prefs.holder(web, token)
    if found is not None:
        speak(found.language)
    return found


def _subscriber(web, token: str) -> int | None:
    found = _holder(web, token)
    return None if found is None else found.subscriber_id


def _reader(web, token: str):
    subscriber_id = _subscriber(web, token)
    return None if subscriber_id is None else prefs.load(web, subscriber_id)


def _render(web, token: str, reader, saved) -> HTMLResponse:
    """The page; for an email's footer link (never expiring, forwarded with the issue) a page
    that can only leave lists, and says how to get a fresh link for the rest."""
    found = prefs.holder(web, token)
    return web.pages.render("preferences.html.j2", private=True, reader=reader, saved=saved,
                            action=f"/preferences/{token}", tracking=web.settings.tracking,
                            privacy_url=web.settings.newsletter.privacy_url,
                            limited=found is not None and not found.fresh)


def _bad_link(web) -> HTMLResponse:
    return web.pages.error(400, N_("This link does not work"),
                           N_("This preferences link is not valid or has expired. Nothing was changed."),
                           fresh_link=True)
