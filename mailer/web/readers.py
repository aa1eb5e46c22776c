"""Web service: a reader's request -> the store (subscribers.store), one transaction per request.

The routes in public.py speak HTTP; these functions speak to the database and know the rules the
store does not: which client address to keep, which address the backends can write to, which
link goes in which mail, what a dead link is (subscribers.links).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from mailer.web.confirm_mail import send_confirmation
from mailer.web.context import batched
from subscribers import store
from subscribers.errors import InvalidAddress, SubscriberNotFound, TokenError
from subscribers.links import bound, new_key
from subscribers.models import Status, memberships, subscribers
from subscribers.normalize import (
    clean_text,
    needs_smtputf8,
    normalize_email,
    normalize_ip,
)
from subscribers.one_click import unsubscribe_many
from subscribers.tokens import (
    SEALED,
    make_token,
    open_request,
    seal_request,
    verify_token,
)

log = logging.getLogger("mailer.web")


@dataclass(frozen=True)
class Client:
    ip: str | None
    user_agent: str | None


@dataclass(frozen=True)
class Target:
    """The membership a token names (the list may be gone: then its title is the newsletter's).
    `sealed`: (address, name, asked_at) of a forgotten address's request, which has no row yet."""

    subscriber_id: int
    list_id: int
    list_name: str
    list_title: str
    changed: bool = True       # unsubscribe: False when the link had been used already
    sealed: tuple | None = None


@dataclass(frozen=True)
class ConfirmationMail:
    subscriber_id: int
    list_id: int
    email: str
    name: str
    list_title: str
    confirm_token: str
    unsubscribe_token: str


NOBODY = 2**62   # the subscriber id in the unsubscribe link of a mail to a forgotten address


def client(request) -> Client:
    """The client's address, only if it is one (uvicorn takes it from X-Forwarded-For behind a
    trusted local proxy, where any text can arrive), and its user agent."""
    agent = request.headers.get("user-agent")
    return Client(ip_or_none(request.client.host if request.client else None),
                  clean_agent(agent) if agent else None)


def ip_or_none(text: str | None) -> str | None:
    return normalize_ip(text)


def clean_agent(agent: str) -> str:
    return clean_text(agent, 512)


def address_problem(email: str) -> str | None:
    """What is wrong with the typed address, in the reader's words; None when it will do."""
    try:
        address = normalize_email(email)
    except InvalidAddress:
        return "That does not look like an email address. Please check it."
    if needs_smtputf8(address):
        return "We cannot send to addresses with non-ASCII characters before the @ yet, sorry."
    return None


def sign_up(web, lst, email: str, name: str, who: Client) -> ConfirmationMail | None:
    """Record the request; the mail to send, or None (already active, or mailed a moment ago).
    The same statements run whatever the address's state (see store.subscribe_unconfirmed)."""
    return web.write(_sign_up, web, lst, email, name, who)


def _sign_up(conn, web, lst, email: str, name: str, who: Client) -> ConfirmationMail | None:
    signup = store.subscribe_unconfirmed(
        conn, lst.id, email, secret=web.secret, name=name, ip=who.ip, user_agent=who.user_agent,
        resend_after=timedelta(minutes=web.settings.web.confirm_resend_minutes))
    row = conn.execute(select(memberships.c.subscriber_id, subscribers.c.email, subscribers.c.name,
                              memberships.c.token_key)
                       .join_from(memberships, subscribers, memberships.c.subscriber_id == subscribers.c.id)
                       .where(memberships.c.subscriber_id == (signup.subscriber_id or 0),
                              memberships.c.list_id == lst.id)).first()
    if row is None:   # forgotten: nothing stored; the link carries the request, sealed
        sid, address, who_name = 0, signup.address, clean_text(name)
        confirm = seal_request(web.secret, lst.id, address, who_name)
        unsubscribe = make_token(web.secret, "unsubscribe", NOBODY, lst.id, new_key())  # acts on nobody
    else:
        sid, address, who_name = row.subscriber_id, row.email, row.name or ""
        confirm = make_token(web.secret, "confirm", sid, lst.id, row.token_key)
        unsubscribe = make_token(web.secret, "unsubscribe", sid, lst.id, row.token_key)
    if not signup.mail:
        return None
    return ConfirmationMail(sid, lst.id, address, who_name, lst.title or lst.name, confirm, unsubscribe)


def send_confirmation_mail(web, mail: ConfirmationMail) -> None:
    """Background task after the response: a failure is logged, the reader may ask again later."""
    try:
        send_confirmation(web.settings, email=mail.email, name=mail.name,
                          subscriber_id=mail.subscriber_id, list_id=mail.list_id,
                          list_title=mail.list_title, confirm_token=mail.confirm_token,
                          unsubscribe_token=mail.unsubscribe_token)
    except Exception:  # nobody is waiting for this; the log must say why
        log.exception("confirmation mail for subscriber %s, list %s failed", mail.subscriber_id, mail.list_id)


def verify(web, purpose: str, token: str, max_age: int | None = None):
    """The Claim of a genuinely signed token, or None (not yet checked against the row)."""
    try:
        return verify_token(web.secret, purpose, token, max_age=max_age)
    except TokenError:
        return None


def membership_for(web, purpose: str, token: str, *, max_age: int | None = None) -> Target | None:
    """The target of a genuine token whose membership still exists (subscribers.links), None for
    a forged, tampered or expired one, or one made for a row that is gone."""
    if purpose == "confirm" and token.startswith(SEALED):
        return _sealed_target(web, token, max_age)
    claim = verify(web, purpose, token, max_age)
    return None if claim is None else web.read(_live_target, web, claim)


def _live_target(conn, web, claim) -> Target | None:
    return _target(conn, web, *claim) if bound(conn, claim) else None


def _sealed_target(web, token: str, max_age: int | None) -> Target | None:
    try:
        list_id, address, name, asked = open_request(web.secret, token, max_age=max_age)
    except TokenError:
        return None
    target = web.read(_target, web, 0, list_id)
    return Target(0, list_id, target.list_name, target.list_title, sealed=(address, name, asked))


def _target(conn, web, subscriber_id: int, list_id: int) -> Target:
    name, title = web.list_info(conn, list_id) or ("", web.settings.newsletter.name)
    return Target(subscriber_id, list_id, name, title)


def status_of(web, target: Target) -> str | None:
    """The membership's effective status now (None: gone), so a page can say "already"."""
    return web.read(_status_of, target)


def _status_of(conn, target: Target) -> str | None:
    row = conn.execute(select(memberships.c.status, subscribers.c.global_status)
                       .join_from(memberships, subscribers, memberships.c.subscriber_id == subscribers.c.id)
                       .where(memberships.c.subscriber_id == target.subscriber_id,
                              memberships.c.list_id == target.list_id)).first()
    return None if row is None else (row.global_status or row.status)


def confirm(web, target: Target, who: Client) -> bool:
    """Confirm; True when the membership is active afterwards (also if it already was)."""
    if target.sealed:
        return web.write(_confirm_sealed, web, target.list_id, target.sealed, who)
    return web.write(_confirm, web, target, who)


def _confirm(conn, web, target: Target, who: Client) -> bool:
    try:
        store.confirm(conn, target.subscriber_id, target.list_id, secret=web.secret, ip=who.ip,
                      user_agent=who.user_agent)
    except SubscriberNotFound:   # forgotten, or the list was deleted since
        return False
    row = conn.execute(select(memberships.c.status, subscribers.c.global_status)
                       .join_from(memberships, subscribers, memberships.c.subscriber_id == subscribers.c.id)
                       .where(memberships.c.subscriber_id == target.subscriber_id,
                              memberships.c.list_id == target.list_id)).one()
    return row.status == Status.ACTIVE.value and row.global_status is None


def _confirm_sealed(conn, web, list_id: int, sealed: tuple, who: Client) -> bool:
    address, name, asked = sealed
    return store.confirm_forgotten(conn, list_id, address, secret=web.secret, name=name, ip=who.ip,
                                   user_agent=who.user_agent, asked_at=datetime.fromtimestamp(asked, UTC))


def unsubscribe_in(conn, web, claim, who: Client) -> Target:
    """Unsubscribe the (verified) token's membership, in the caller's transaction; idempotent.

    A genuine token whose membership is gone (forgotten, list deleted), or that was made for an
    earlier row, is answered as done and changes nothing: it acts on nobody.
    """
    changed = True   # a dead link is answered as done, the same as a first use
    if bound(conn, claim):
        try:
            changed = store.unsubscribe(conn, *claim, source="web", ip=who.ip, user_agent=who.user_agent)
        except SubscriberNotFound:
            pass
    return replace(_target(conn, web, *claim), changed=changed)


def _unsubscribe_many(conn, calls: list[tuple]) -> list[Target]:
    """All queued unsubscribes of one group commit, in its one transaction (on PostgreSQL one
    statement: subscribers/one_click.py)."""
    live = [bound(conn, claim) for _web, claim, _who in calls]   # a link for a row that is gone acts on nobody
    changed = unsubscribe_many(conn, [(*claim, who.ip, who.user_agent)
                                      for (_web, claim, who), ok in zip(calls, live, strict=True) if ok])
    targets = []
    for (web, claim, _who), ok in zip(calls, live, strict=True):
        key = tuple(claim)   # a dead link is answered as done, the same as a first use (unsubscribe_in)
        targets.append(replace(_target(conn, web, *claim), changed=key in changed or not ok))
        changed.discard(key)   # a second request for it in this group finds it done already
    return targets


batched(unsubscribe_in, _unsubscribe_many)
