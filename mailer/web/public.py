"""Web service: the reader's pages -> GET/POST /subscribe, /confirm/{token}, /unsubscribe/{token}.

/subscribe offers every list not marked private (checkboxes with title and description when there
are several; `?list=NAME` preselects one). A private or unknown list is answered alike: no such list.

Double opt-in: POST /subscribe records an unconfirmed membership and mails a link; only a POST to
that link confirms, so link scanners that GET every URL confirm nobody. Whatever the address's
state the page says the same thing, so the form tells nobody who is subscribed. Before that, a
post passes the guard (mailer/web/challenge.py: honeypot, fill time, proof-of-work) and the address
checks (mailer/web/addresses.py): a refused post stores nobody and mails nobody. Several lists
chosen: one mail whose one link confirms them all, with consent recorded per list. Unsubscribe
follows RFC 8058 (docs/mail-facts.md): the POST works at once whatever its body or content type
(the body is never read), answers 200 without a redirect, and may be repeated.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Form, Query, Request
from sqlalchemy.exc import InternalError, OperationalError
from starlette.responses import HTMLResponse

from mailer.i18n import N_
from mailer.web import prefs, readers, staff_copies
from mailer.web.challenge import Form as GuardFields
from mailer.web.challenge import Verdict
from mailer.web.language import mail_language, speak
from mailer.web.ratelimit import client_key
from subscribers.status import Status

log = logging.getLogger("mailer.web")
router = APIRouter()

ListName = Annotated[str, Query(alias="list", max_length=100)]
ListNames = Annotated[list[str], Form(alias="list", max_length=100)]
MAX_CHOICES = 50
RETRY_AFTER = 120   # seconds: a one-click unsubscribe the database could not store (RFC 8058 senders retry)
TOKEN_PAGES: dict[int | str, dict[str, Any]] = {400: {"description": "forged, tampered or expired link"}}
BAD_LINKS = {"confirmation": N_("This confirmation link is not valid or has expired. Nothing was changed."),
             "unsubscribe": N_("This unsubscribe link is not valid or has expired. Nothing was changed.")}
CHANGED_SINCE = N_("Your subscription changed after this link was sent. To subscribe again, use the form.")
GUARD_MESSAGES = {
    Verdict.TOO_FAST: N_("That was quick! Please check what you typed and send the form again."),
    Verdict.NO_SOLUTION: N_("Please send this form from this page, once the check below has finished "
                            "(it needs JavaScript). Nothing was stored."),
}
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
        return web.pages.error(404, N_("No list to subscribe to"), N_("No mailing list is open for subscription yet."))
    _speak_for(offered, {list_name} if list_name else set())
    return web.pages.render("subscribe.html.j2", lists=offered, chosen={list_name} if list_name else set(),
                            email="", name="", error=None)


@router.post("/subscribe", response_class=HTMLResponse, summary="Ask for a confirmation mail",
             responses={400: {"description": "not an address, a refused address, or no proof-of-work solution"},
                        404: {"description": "no such list"},
                        429: {"description": "too many requests from this address"}})
def subscribe(request: Request, background: BackgroundTasks,
              email: Annotated[str, Form(max_length=400)] = "",
              name: Annotated[str, Form(max_length=400)] = "",
              list_names: ListNames = [],  # noqa: B006 - FastAPI copies defaults
              website: Annotated[str, Form(max_length=400)] = "",
              started: Annotated[str, Form(max_length=200)] = "",
              altcha: Annotated[str, Form(max_length=8000)] = "") -> HTMLResponse:
    web = request.app.state.web
    client = readers.client(request)
    if (refused := too_many(web, "subscribe", client)) is not None:
        return refused
    offered = prefs.offered_lists(web)
    by_name = {lst.name: lst for lst in offered}
    names = list(dict.fromkeys(list_names))[:MAX_CHOICES]
    if not names and len(offered) == 1:
        names = [offered[0].name]        # the only list: a form without a choice means it
    if any(n not in by_name for n in names) or not offered:
        return _no_such_list(web)
    _speak_for(offered, set(names))

    def again(status: int, problem: str) -> HTMLResponse:   # the form, what was typed kept, and why
        return web.pages.render("subscribe.html.j2", status, lists=offered, chosen=set(names), email=email,
                                name=name, error=problem)

    verdict = web.guard.judge(GuardFields(website=website, started=started, altcha=altcha))
    if verdict is Verdict.HONEYPOT:   # people never see that field; form-filling robots do. Say the usual thing.
        log.info("subscribe: honeypot filled from %s; ignored", client.ip)
        return web.pages.render("check_inbox.html.j2", private=True)
    if verdict is not Verdict.PASS:   # nothing stored, nothing mailed (docs/signup.md)
        log.info("subscribe: %s from %s; refused", verdict.value, client.ip)
        return again(400, GUARD_MESSAGES[verdict])
    problem = readers.address_problem(web, email) or (None if names else N_("Please choose at least one list."))
    if problem:
        return again(400, problem)
    chosen = [by_name[n] for n in names]
    mail = readers.sign_up(web, chosen, email, name, client, mail_language(*(lst.language for lst in chosen)))
    if mail is not None:
        background.add_task(readers.send_confirmation_mail, web, mail)
    return web.pages.render("check_inbox.html.j2", private=True, count=len(names))


@router.get("/confirm/{token}", response_class=HTMLResponse, summary="A button that confirms",
            responses=TOKEN_PAGES)
def confirm_page(token: str, request: Request) -> HTMLResponse:
    web = request.app.state.web
    targets = readers.targets_for(web, "confirm", token, max_age=_confirm_age(web))
    if targets is None:
        return _bad_link(web, "confirmation")
    titles = _titles(targets)
    if readers.all_active(web, targets):
        return web.pages.render("confirmed.html.j2", private=True, titles=titles, already=True)
    return web.pages.render("confirm.html.j2", private=True, action=f"/confirm/{token}", titles=titles)


@router.post("/confirm/{token}", response_class=HTMLResponse, summary="Confirm the subscription (every list it names)",
             responses={**TOKEN_PAGES, 409: {"description": "the link no longer applies"}})
def confirm(token: str, request: Request, background: BackgroundTasks) -> HTMLResponse:
    web = request.app.state.web
    targets = readers.targets_for(web, "confirm", token, max_age=_confirm_age(web))
    if targets is None:
        return _bad_link(web, "confirmation")
    titles = _titles(targets)
    if readers.all_active(web, targets):
        return web.pages.render("confirmed.html.j2", private=True, titles=titles, already=True)
    confirmed = readers.confirm(web, targets, readers.client(request))
    background.add_task(readers.send_welcomes, web)
    if not confirmed:
        return web.pages.error(409, N_("This link no longer applies"), CHANGED_SINCE,
                               list_name=targets[0].list_name if len(targets) == 1 else "")
    return web.pages.render("confirmed.html.j2", private=True, titles=_titles(confirmed), already=False)


@router.get("/unsubscribe/{token}", response_class=HTMLResponse, summary="A button that unsubscribes",
            responses=TOKEN_PAGES)
def unsubscribe_page(token: str, request: Request) -> HTMLResponse:
    web = request.app.state.web
    if (staff := staff_copies.page(web, "unsubscribe", token)) is not None:
        return staff
    targets = readers.targets_for(web, "unsubscribe", token)
    if targets is None:
        return _bad_link(web, "unsubscribe")
    extra = _unsubscribe_values(targets, token)
    if all(status == Status.UNSUBSCRIBED for status in readers.statuses(web, targets)):
        return web.pages.render("unsubscribed.html.j2", private=True, already=True, **extra)
    return web.pages.render("unsubscribe.html.j2", private=True, action=f"/unsubscribe/{token}", **extra)


@router.post("/unsubscribe/{token}", response_class=HTMLResponse, openapi_extra=ONE_CLICK_BODY,
             summary="Unsubscribe at once (RFC 8058 one-click)", responses=TOKEN_PAGES)
async def unsubscribe(token: str, request: Request) -> HTMLResponse:
    """Async on purpose: the token check and the page stay on the event loop; the write joins
    the group commit (context.GroupWriter). The body is never read. A group token (the one
    confirmation mail of a signup for several lists) unsubscribes from each of them."""
    web = request.app.state.web
    if (staff := staff_copies.page(web, "unsubscribe", token)) is not None:
        return staff
    claims = readers.verify(web, "unsubscribe", token)
    if claims is None:
        return _bad_link(web, "unsubscribe")
    who = readers.client(request)
    try:
        targets = await asyncio.gather(*(asyncio.wrap_future(web.batch.submit(readers.unsubscribe_in, web, claim, who))
                                         for claim in claims))
    except (OperationalError, InternalError) as exc:   # a full disk, a database away or read-only: not stored
                                                        # now, so "try again" (503), never 500
        log.error("unsubscribe not stored, answered 503: %s", str(exc).splitlines()[0])
        return web.pages.error(503, N_("Error"), N_("Please try again in a few minutes."),
                               headers={"retry-after": str(RETRY_AFTER)})
    return web.pages.render("unsubscribed.html.j2", private=True, already=not any(t.changed for t in targets),
                            **_unsubscribe_values(targets, token))


def too_many(web, bucket: str, client) -> HTMLResponse | None:
    """The 429 page when this client IP's bucket is empty, else None (a token was taken)."""
    if web.limiter.allow(bucket, client_key(client.ip)):   # (IPv6: by /64)
        return None
    return web.pages.error(429, N_("Too many requests"), N_("Please try again in a few minutes."),
                           headers={"retry-after": "120"})


def _confirm_age(web) -> int:
    return int(timedelta(days=web.settings.web.confirm_link_days).total_seconds())


def _bad_link(web, kind: str) -> HTMLResponse:
    return web.pages.error(400, N_("This link does not work"), BAD_LINKS[kind], fresh_link=True)


def _no_such_list(web) -> HTMLResponse:
    return web.pages.error(404, N_("No such list"), N_("There is no mailing list by that name."))


def _speak_for(offered: list, chosen: set[str]) -> None:
    """A page about one list (the only one, or the one asked for) speaks that list's language."""
    concerned = [lst for lst in offered if lst.name in chosen] or (offered if len(offered) == 1 else [])
    if len(concerned) == 1:
        speak(concerned[0].language)


def _titles(targets: list) -> list[str]:
    """The targets' list titles; the page speaks their language if they share one."""
    speak(*(target.language for target in targets))
    return [target.list_title for target in targets]


def _unsubscribe_values(targets: list, token: str) -> dict:
    return {"titles": _titles(targets), "list_name": targets[0].list_name if len(targets) == 1 else "",
            "preferences": f"/preferences/{token}" if len(targets) == 1 else None}
