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

from mailer.send import welcome
from mailer.web.addresses import address_problem as check_address
from mailer.web.confirm_mail import send_confirmation
from mailer.web.context import batched
from subscribers import store
from subscribers.errors import SubscriberNotFound, TokenError
from subscribers.links import bound, new_key
from subscribers.models import Status, memberships, subscribers
from subscribers.normalize import clean_text, normalize_email, normalize_ip
from subscribers.one_click import unsubscribe_many
from subscribers.tokens import SEALED, make_group_token, open_request, seal_request, verify_claims

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
    language: str | None = None   # the list's own (mailer/i18n.py)
    issued: int | None = None     # when the token was signed (Unix seconds)


@dataclass(frozen=True)
class ConfirmationMail:
    """One mail for a signup's lists: its one confirm link confirms every list it names."""

    subscriber_id: int
    list_ids: tuple[int, ...]
    email: str
    name: str
    titles: tuple[str, ...]
    language: str
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


def address_problem(web, email: str) -> str | None:
    """What is wrong with the typed address, as the reader's message (a catalog entry); None when
    it will do (mailer/web/addresses.py: the one check of every self-service door)."""
    problem = check_address(email, web.addresses)
    return None if problem is None else problem.message


def sign_up(web, chosen: list, email: str, name: str, who: Client, language: str) -> ConfirmationMail | None:
    """Record the request for each chosen list; the one mail to send for all that still need
    confirming, or None (all active already, or all mailed a moment ago). The same statements run
    whatever the address's state (see store.subscribe_unconfirmed)."""
    return web.write(_sign_up, web, chosen, email, name, who, language)


def sign_up_in(conn, web, chosen: list, email: str, name: str, who: Client, language: str) -> ConfirmationMail | None:
    """`sign_up` in the caller's transaction (the API's creates: with their audit entry)."""
    return _sign_up(conn, web, chosen, email, name, who, language)


def _sign_up(conn, web, chosen: list, email: str, name: str, who: Client, language: str) -> ConfirmationMail | None:
    resend_after = timedelta(minutes=web.settings.web.confirm_resend_minutes)
    signups = [store.subscribe_unconfirmed(conn, lst.id, email, secret=web.secret, name=name, ip=who.ip,
                                           user_agent=who.user_agent, resend_after=resend_after) for lst in chosen]
    sid = signups[0].subscriber_id
    rows = {row.list_id: row for row in conn.execute(
        select(memberships.c.list_id, subscribers.c.email, subscribers.c.name, memberships.c.token_key)
        .join_from(memberships, subscribers, memberships.c.subscriber_id == subscribers.c.id)
        .where(memberships.c.subscriber_id == (sid or 0), memberships.c.list_id.in_([lst.id for lst in chosen])))}
    due = [lst for lst, signup in zip(chosen, signups, strict=True) if signup.needs_confirmation]
    if not rows:   # forgotten: nothing stored; the link carries the request, sealed
        sid, address, who_name = 0, signups[0].address, clean_text(name)
        confirm = seal_request(web.secret, [lst.id for lst in due] or [chosen[0].id], address, who_name)
        unsubscribe = make_group_token(web.secret, "unsubscribe", NOBODY,       # acts on nobody
                                       [(lst.id, new_key()) for lst in due or chosen])
    else:
        first = next(iter(rows.values()))
        sid, address, who_name = sid or 0, first.email, first.name or ""
        named = [(lst.id, rows[lst.id].token_key) for lst in due or chosen if lst.id in rows]
        confirm = make_group_token(web.secret, "confirm", sid, named)
        unsubscribe = make_group_token(web.secret, "unsubscribe", sid, named)
    if not due or not any(signup.mail for signup in signups):
        return None
    return ConfirmationMail(sid, tuple(lst.id for lst in due), address, who_name,
                            tuple(lst.title or lst.name for lst in due), language, confirm, unsubscribe)


def send_confirmation_mail(web, mail: ConfirmationMail) -> None:
    """Background task after the response: a failure is logged, the reader may ask again later."""
    try:
        send_confirmation(web.settings, email=mail.email, name=mail.name, subscriber_id=mail.subscriber_id,
                          list_ids=mail.list_ids, titles=mail.titles, language=mail.language,
                          confirm_token=mail.confirm_token, unsubscribe_token=mail.unsubscribe_token)
    except Exception:  # nobody is waiting for this; the log must say why
        log.exception("confirmation mail for subscriber %s, lists %s failed", mail.subscriber_id, mail.list_ids)


def verify(web, purpose: str, token: str, max_age: int | None = None) -> list | None:
    """The Claims of a genuinely signed token (one, or a group's), or None; not yet checked
    against the rows."""
    try:
        return verify_claims(web.secret, purpose, token, max_age=max_age)
    except TokenError:
        return None


def targets_for(web, purpose: str, token: str, *, max_age: int | None = None) -> list[Target] | None:
    """The targets of a genuine token whose memberships still exist (subscribers.links): one, or
    a group's; None for a forged, tampered or expired token, or one whose rows are all gone."""
    if purpose == "confirm" and token.startswith(SEALED):
        return _sealed_targets(web, token, max_age)
    claims = verify(web, purpose, token, max_age)
    return None if claims is None else (web.read(_live_targets, web, claims) or None)


def _live_targets(conn, web, claims) -> list[Target]:
    return [replace(_target(conn, web, *claim), issued=claim.issued) for claim in claims if bound(conn, claim)]


def _sealed_targets(web, token: str, max_age: int | None) -> list[Target] | None:
    try:
        list_ids, address, name, asked = open_request(web.secret, token, max_age=max_age)
    except TokenError:
        return None
    return [replace(web.read(_target, web, 0, list_id), sealed=(address, name, asked)) for list_id in list_ids]


def _target(conn, web, subscriber_id: int, list_id: int) -> Target:
    name, title, language = web.list_info(conn, list_id) or ("", web.settings.newsletter.name, None)
    return Target(subscriber_id, list_id, name, title, language=language)


def all_active(web, targets: list[Target]) -> bool:
    """Whether every target's membership is active now, so a page can say "already"."""
    return all(status == Status.ACTIVE for status in statuses(web, targets))


def statuses(web, targets: list[Target]) -> list[str | None]:
    """Each target's effective status now (None: gone)."""
    return web.read(_statuses, targets)


def _statuses(conn, targets: list[Target]) -> list[str | None]:
    return [_status_of(conn, target) for target in targets]


def _status_of(conn, target: Target) -> str | None:
    row = conn.execute(select(memberships.c.status, subscribers.c.global_status)
                       .join_from(memberships, subscribers, memberships.c.subscriber_id == subscribers.c.id)
                       .where(memberships.c.subscriber_id == target.subscriber_id,
                              memberships.c.list_id == target.list_id)).first()
    return None if row is None else (row.global_status or row.status)


def confirm(web, targets: list[Target], who: Client) -> list[Target]:
    """Confirm every target in one transaction, each with its own consent record; the targets
    whose membership is active afterwards (also those that already were)."""
    return web.write(_confirm_all, web, targets, who)


def _confirm_all(conn, web, targets: list[Target], who: Client) -> list[Target]:
    confirmed = [target for target in targets
                 if (_confirm_sealed(conn, web, target.list_id, target.sealed, who) if target.sealed
                     else _confirm(conn, web, target, who))]
    for target in confirmed:   # each list's welcome mail, once (mailer/send/welcome.py), sent after the commit
        sid = target.subscriber_id or _id_of(conn, target.sealed[0] if target.sealed else "")
        if sid:
            welcome.enqueue(conn, web.settings, sid, target.list_id)
    return confirmed


def _id_of(conn, address: str) -> int | None:
    return conn.execute(select(subscribers.c.id).where(subscribers.c.email == normalize_email(address))).scalar() \
        if address else None


def send_welcomes(web) -> None:
    """Background task after a confirmation: the welcome mails now due (a failure is logged)."""
    try:
        welcome.send_due(web.settings)
    except Exception:  # nobody is waiting for this; the log must say why
        log.exception("welcome mails failed")


def _confirm(conn, web, target: Target, who: Client) -> bool:
    try:
        store.confirm(conn, target.subscriber_id, target.list_id, secret=web.secret, ip=who.ip,
                      user_agent=who.user_agent, issued=target.issued)
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
