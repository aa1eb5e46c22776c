"""Web service: a reader's preferences -> the store: which lists they get, their name, leaving all,
and the fresh link mailed to an address that asks for one (one transaction per request).

The routes in preferences.py speak HTTP; these functions speak to the database. A preferences page
is opened by a token naming the subscriber: the unsubscribe token every email carries (it never
expires, like the unsubscribe link itself) or the "preferences" token of a fresh link (expires
after [web] confirm_link_days). Docs: docs/readers.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import NamedTuple

from sqlalchemy import func, select

from mailer.i18n import N_, known
from mailer.web.preferences_mail import send_preferences_link
from subscribers import store
from subscribers.links import link_token, resolve
from subscribers.models import (
    Action,
    Status,
    history,
    lists,
    memberships,
    subscribers,
    utcnow,
)
from subscribers.normalize import display_email
from subscribers.queries import effective_status

log = logging.getLogger("mailer.web")


@dataclass(frozen=True)
class Choice:
    name: str
    title: str
    description: str
    status: str | None         # the membership's effective status, None when not on the list

    @property
    def active(self) -> bool:
        return self.status == Status.ACTIVE


@dataclass(frozen=True)
class Reader:
    subscriber_id: int
    email: str                 # as people read it (Unicode domain)
    name: str
    suppressed: str | None     # bounced / complained: lists cannot be changed here
    choices: list[Choice]
    tracking: bool = True      # False: they turned click and open tracking off


@dataclass(frozen=True)
class Change:
    """One thing the preferences form changed, said in the page's language: `message` is a
    catalog entry with `%(title)s` where the list's title goes."""
    message: str
    title: str = ""


JOINED, LEFT, NAME_SAVED = N_("joined %(title)s"), N_("left %(title)s"), N_("name saved")
TRACKING_ON, TRACKING_OFF = N_("click counting allowed"), N_("click counting turned off")


@dataclass(frozen=True)
class LinkMail:
    subscriber_id: int
    list_id: int               # the list whose unsubscribe link the mail carries
    email: str
    name: str
    language: str              # that list's, else the page's (mailer/web/language.py)


def offered_lists(web) -> list:
    """The lists /subscribe offers: every list not marked private, by title."""
    return web.read(_offered)


def _offered(conn) -> list:
    return sorted((lst for lst in store.all_lists(conn) if not lst.private),
                  key=lambda lst: (lst.title or lst.name).lower())


class Holder(NamedTuple):
    subscriber_id: int
    language: str | None       # of the list the link was made for
    fresh: bool                # a fresh link by mail (expires); False: an email's footer link (never expires)


def holder(web, token: str) -> Holder | None:
    """Who a preferences or unsubscribe token names, the language of the list it was made for,
    and whether it is a fresh link; None for a bad or expired token."""
    return web.read(_holder, web, token, int(timedelta(days=web.settings.web.confirm_link_days).total_seconds()))


def _holder(conn, web, token: str, max_age: int) -> Holder | None:
    """A genuine token whose membership is still the one it was made for (subscribers.links)."""
    fresh = resolve(conn, web.secret, "preferences", token, max_age=max_age)
    claim = fresh or resolve(conn, web.secret, "unsubscribe", token)
    if claim is None:
        return None
    language = conn.execute(select(lists.c.language).where(lists.c.id == claim.list_id)).scalar()
    return Holder(claim.subscriber_id, language, fresh is not None)


def load(web, subscriber_id: int) -> Reader | None:
    return web.read(_load, subscriber_id)


def _load(conn, subscriber_id: int) -> Reader | None:
    row = conn.execute(select(subscribers.c.email, subscribers.c.name, subscribers.c.global_status,
                              subscribers.c.no_tracking).where(subscribers.c.id == subscriber_id)).first()
    if row is None:
        return None
    statuses = dict(conn.execute(select(memberships.c.list_id, memberships.c.status)
                                 .where(memberships.c.subscriber_id == subscriber_id)).all())
    choices = []
    for lst in conn.execute(select(lists).order_by(func.lower(lists.c.title), lists.c.name)):
        status = statuses.get(lst.id)
        if lst.private and status is None:
            continue      # a private list is shown only to its members
        shown = None if status is None else effective_status(status, row.global_status).value
        choices.append(Choice(lst.name, lst.title or lst.name, lst.description or "", shown))
    return Reader(subscriber_id, display_email(row.email), row.name or "", row.global_status, choices,
                  not row.no_tracking)


def save(web, subscriber_id: int, wanted: set[str], name: str, who, *, fresh: bool = True) -> list[Change] | None:
    """Apply the form: join the wanted lists, leave the others, set the name. Returns what
    changed (None: the subscriber is gone). An email's footer link (`fresh` False) never expires
    and travels with every forwarded issue, so it only leaves lists: joining one or a new name
    is an act of the reader's own, which needs a fresh link, mailed to them."""
    return web.write(_save, web, subscriber_id, wanted, name, who, fresh)


def _save(conn, web, subscriber_id: int, wanted: set[str], name: str, who, fresh: bool = True) -> list[Change] | None:
    reader = _load(conn, subscriber_id)
    if reader is None:
        return None
    ids = dict(conn.execute(select(lists.c.name, lists.c.id)).all())
    changed: list[Change] = []
    for choice in reader.choices:
        if reader.suppressed or choice.name not in ids:
            continue
        if choice.name in wanted and not choice.active:
            if fresh and store.opt_in(conn, subscriber_id, ids[choice.name], ip=who.ip, user_agent=who.user_agent):
                changed.append(Change(JOINED, choice.title))
        elif choice.name not in wanted and choice.status in (Status.ACTIVE, Status.UNCONFIRMED):  # noqa: SIM102 - as above
            if store.unsubscribe(conn, subscriber_id, ids[choice.name], source="web", ip=who.ip,
                                 user_agent=who.user_agent):
                changed.append(Change(LEFT, choice.title))
    if fresh and store.rename(conn, subscriber_id, name):
        changed.append(Change(NAME_SAVED))
    return changed


def set_tracking(web, subscriber_id: int, allowed: bool, who, *, fresh: bool = True) -> list[Change] | None:
    """Allow or refuse click and open tracking; what changed, in words (None: the subscriber is
    gone). Allowing it is consent: an email's footer link (`fresh` False) may only refuse it."""
    if allowed and not fresh:
        return web.read(_unchanged, subscriber_id)
    return web.write(_set_tracking, subscriber_id, allowed, who)


def _unchanged(conn, subscriber_id: int) -> list[Change] | None:
    found = conn.execute(select(subscribers.c.id).where(subscribers.c.id == subscriber_id)).first()
    return None if found is None else []


def _set_tracking(conn, subscriber_id: int, allowed: bool, who) -> list[Change] | None:
    if conn.execute(select(subscribers.c.id).where(subscribers.c.id == subscriber_id)).first() is None:
        return None
    changed = store.set_tracking(conn, subscriber_id, allowed, source="web", ip=who.ip, user_agent=who.user_agent)
    return [Change(TRACKING_ON if allowed else TRACKING_OFF)] if changed else []


def leave_all(web, subscriber_id: int, who) -> list[str] | None:
    """Unsubscribe from every list (idempotent); the titles left, None if the subscriber is gone."""
    return web.write(_leave_all, subscriber_id, who)


def _leave_all(conn, subscriber_id: int, who) -> list[str] | None:
    if conn.execute(select(subscribers.c.id).where(subscribers.c.id == subscriber_id)).first() is None:
        return None
    rows = conn.execute(select(memberships.c.list_id, lists.c.title, lists.c.name)
                        .join_from(memberships, lists, memberships.c.list_id == lists.c.id)
                        .where(memberships.c.subscriber_id == subscriber_id,
                               memberships.c.status != Status.UNSUBSCRIBED.value)).all()
    for list_id, _title, _name in rows:
        store.unsubscribe(conn, subscriber_id, list_id, source="web", ip=who.ip, user_agent=who.user_agent)
    return [title or name for _id, title, name in rows]


def request_link(web, email: str, language: str) -> LinkMail | None:
    """The mail to send for a fresh-link request, or None (no such subscriber, on no list, or
    mailed one a moment ago). The caller answers the same either way. `language`: the page's."""
    return web.write(_request_link, web, email, language)


def _request_link(conn, web, email: str, language: str) -> LinkMail | None:
    row = store.find_subscriber(conn, email)
    if row is None:
        return None
    list_id = conn.execute(select(memberships.c.list_id).where(memberships.c.subscriber_id == row.id)
                           .order_by(memberships.c.list_id).limit(1)).scalar()
    if list_id is None:
        return None
    since = utcnow() - timedelta(minutes=web.settings.web.confirm_resend_minutes)
    if conn.execute(select(func.count()).select_from(history).where(
            history.c.subscriber_id == row.id, history.c.action == Action.PREFERENCES_MAIL.value,
            history.c.at >= since)).scalar():
        return None
    store.record(conn, row.id, None, Action.PREFERENCES_MAIL, "web")
    own = conn.execute(select(lists.c.language).where(lists.c.id == list_id)).scalar()
    return LinkMail(row.id, list_id, row.email, row.name or "", known(own) or language)


def _link_tokens(conn, web, mail) -> tuple[str, str]:
    """The fresh preferences link's token and the unsubscribe token, bound to the membership."""
    return (link_token(conn, web.secret, "preferences", mail.subscriber_id, mail.list_id),
            link_token(conn, web.secret, "unsubscribe", mail.subscriber_id, mail.list_id))


def mail_link(web, email: str, language: str) -> None:
    """Background task after the response to any "email me a link" (subscribed or not, so the
    answer and its time say nothing): look the address up, and mail a fresh link if it is a
    reader's. A failure is logged; the reader may ask again later."""
    try:
        mail = request_link(web, email, language)
    except Exception:  # nobody is waiting for this; the log must say why
        log.exception("a preferences link request failed")
        return
    if mail is not None:
        send_link_mail(web, mail)


def send_link_mail(web, mail: LinkMail) -> None:
    """The fresh link's mail: a failure is logged, the reader may ask again later."""
    try:
        send_preferences_link(web.settings, mail, *web.read(_link_tokens, web, mail))
    except Exception:  # nobody is waiting for this; the log must say why
        log.exception("preferences link for subscriber %s failed", mail.subscriber_id)
