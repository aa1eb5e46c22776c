"""Web service: a reader's request -> the store (subscribers.store), one transaction per request.

The routes in public.py speak HTTP; these functions speak to the database and know the rules the
store does not: resend throttling, which address the backends can write to, what a dead link is.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select

log = logging.getLogger("mailer.web")


@dataclass(frozen=True)
class Client:
    ip: str | None
    user_agent: str | None


@dataclass(frozen=True)
class Target:
    """The membership a token names (the list may be gone: then its title is the newsletter's)."""

    subscriber_id: int
    list_id: int
    list_name: str
    list_title: str


@dataclass(frozen=True)
class ConfirmationMail:
    subscriber_id: int
    list_id: int
    email: str
    name: str
    list_title: str


def client(request) -> Client:
    """The client's address (uvicorn takes it from X-Forwarded-For behind a trusted local proxy)."""
    agent = request.headers.get("user-agent")
    return Client(request.client.host if request.client else None, agent[:512] if agent else None)


def _confirm_mail_action():
    from subscribers.models import Action

    return Action.CONFIRM_MAIL


def find_list(web, name: str):
    """The list called `name`; with no name, the only list there is. None if there is none."""
    return web.read(_find_list, name)


def _find_list(conn, name: str):
    from subscribers import store
    from subscribers.errors import ListNotFound

    if not name:
        found = store.all_lists(conn)
        return found[0] if len(found) == 1 else None
    try:
        return store.get_list(conn, name)
    except ListNotFound:
        return None


def address_problem(email: str) -> str | None:
    """What is wrong with the typed address, in the reader's words; None when it will do."""
    from mailer.errors import PermanentDelivery
    from mailer.personalize import ascii_address
    from subscribers.errors import InvalidAddress
    from subscribers.normalize import normalize_email

    try:
        ascii_address(normalize_email(email))
    except InvalidAddress:
        return "That does not look like an email address. Please check it."
    except PermanentDelivery:   # SMTPUTF8 local parts: no backend of ours can send to them yet
        return "We cannot send to addresses with non-ASCII characters before the @ yet, sorry."
    return None


def sign_up(web, lst, email: str, name: str, who: Client) -> ConfirmationMail | None:
    """Record the request; the mail to send, or None (already active, or mailed a moment ago)."""
    return web.write(_sign_up, web, lst, email, name, who)


def _sign_up(conn, web, lst, email: str, name: str, who: Client) -> ConfirmationMail | None:
    from subscribers import store
    from subscribers.models import subscribers

    signup = store.subscribe_unconfirmed(conn, lst.id, email, name=name, ip=who.ip,
                                         user_agent=who.user_agent)
    if not signup.needs_confirmation or _mailed_recently(conn, web, signup):
        return None
    store.record(conn, signup.subscriber_id, lst.id, _confirm_mail_action(), "web")
    row = conn.execute(select(subscribers.c.email, subscribers.c.name)
                       .where(subscribers.c.id == signup.subscriber_id)).one()
    return ConfirmationMail(signup.subscriber_id, lst.id, row.email, row.name or "", lst.title or lst.name)


def _mailed_recently(conn, web, signup) -> bool:
    from subscribers.models import history, utcnow

    since = utcnow() - timedelta(minutes=web.settings.web.confirm_resend_minutes)
    return bool(conn.execute(select(func.count()).select_from(history).where(
        history.c.subscriber_id == signup.subscriber_id, history.c.list_id == signup.list_id,
        history.c.action == str(_confirm_mail_action()), history.c.at >= since)).scalar())


def send_confirmation_mail(web, mail: ConfirmationMail) -> None:
    """Background task after the response: a failure is logged, the reader may ask again later."""
    from mailer.web.confirm_mail import send_confirmation
    from subscribers.tokens import make_token

    try:
        send_confirmation(web.settings, email=mail.email, name=mail.name,
                          subscriber_id=mail.subscriber_id, list_id=mail.list_id,
                          list_title=mail.list_title,
                          confirm_token=make_token(web.secret, "confirm", mail.subscriber_id, mail.list_id),
                          unsubscribe_token=make_token(web.secret, "unsubscribe", mail.subscriber_id,
                                                       mail.list_id))
    except Exception:  # noqa: BLE001 - nobody is waiting for this; the log must say why
        log.exception("confirmation mail for subscriber %s, list %s failed", mail.subscriber_id, mail.list_id)


def verify(web, purpose: str, token: str, max_age: int | None = None) -> tuple[int, int] | None:
    from subscribers.errors import TokenError
    from subscribers.tokens import verify_token

    try:
        return verify_token(web.secret, purpose, token, max_age=max_age)
    except TokenError:
        return None


def membership_for(web, purpose: str, token: str, *, max_age: int | None = None) -> Target | None:
    """The target of a genuine token, None for a forged, tampered or expired one."""
    ids = verify(web, purpose, token, max_age)
    return None if ids is None else web.read(_target, web, *ids)


def _target(conn, web, subscriber_id: int, list_id: int) -> Target:
    name, title = web.list_info(conn, list_id) or ("", web.settings.newsletter.name)
    return Target(subscriber_id, list_id, name, title)


def confirm(web, target: Target, who: Client) -> bool:
    """Confirm; True when the membership is active afterwards (also if it already was)."""
    return web.write(_confirm, target, who)


def _confirm(conn, target: Target, who: Client) -> bool:
    from subscribers import store
    from subscribers.errors import SubscriberNotFound
    from subscribers.models import Status, memberships, subscribers

    try:
        store.confirm(conn, target.subscriber_id, target.list_id, ip=who.ip, user_agent=who.user_agent)
    except SubscriberNotFound:   # forgotten, or the list was deleted since
        return False
    row = conn.execute(select(memberships.c.status, subscribers.c.global_status)
                       .join_from(memberships, subscribers, memberships.c.subscriber_id == subscribers.c.id)
                       .where(memberships.c.subscriber_id == target.subscriber_id,
                              memberships.c.list_id == target.list_id)).one()
    return row.status == Status.ACTIVE.value and row.global_status is None


def unsubscribe_in(conn, web, ids: tuple[int, int], who: Client) -> Target:
    """Unsubscribe the (verified) token's membership, in the caller's transaction; idempotent.

    A genuine token whose membership is gone (forgotten, list deleted) is answered as done:
    that person gets nothing from the list either way.
    """
    from subscribers import store
    from subscribers.errors import SubscriberNotFound

    try:
        store.unsubscribe(conn, *ids, source="web", ip=who.ip, user_agent=who.user_agent)
    except SubscriberNotFound:
        pass
    return _target(conn, web, *ids)


def _unsubscribe_many(conn, calls: list[tuple]) -> list[Target]:
    """All queued unsubscribes of one group commit, in its one transaction (on PostgreSQL one
    statement: subscribers/one_click.py)."""
    from subscribers.one_click import unsubscribe_many

    unsubscribe_many(conn, [(*ids, who.ip, who.user_agent) for _web, ids, who in calls])
    return [_target(conn, web, *ids) for web, ids, _who in calls]


unsubscribe_in.many = _unsubscribe_many
