"""Connection + intent -> state change + history row: the one place subscriber state changes.

Every function takes an open `sqlalchemy.Connection` and never commits: the caller owns the
transaction (`with engine.begin() as conn: ...`). Every real change appends a history row naming
its source (who or what caused it); asking for the state an address already has changes nothing.

Suppression: a bounced or complained address (subscribers.global_status) is suppressed on every
list; an unsubscribed one on its list only. Nothing here lifts a suppression unless asked to
explicitly (`force=True`, `clear_global_status`, or a double opt-in that the person completes).
Read-only queries (counts, search, recipients) live in subscribers.queries and are re-exported.
"""

from __future__ import annotations

import difflib
import enum
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, case, delete, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from subscribers import outbox
from subscribers.errors import (
    InvalidLanguage,
    InvalidListName,
    ListExists,
    ListNotFound,
    SecretRequired,
    SubscriberNotFound,
    SuppressedAddress,
)
from subscribers.links import new_key
from subscribers.models import (
    GLOBAL_STATUSES,
    SUPPRESSED,
    Action,
    ConsentSource,
    List,
    Status,
    Subscriber,
    forgotten,
    history,
    lists,
    memberships,
    signup_requests,
    subscribers,
    utcnow,
)
from subscribers.normalize import clean_text, normalize_email, normalize_ip
from subscribers.queries import (
    effective_status,
    find_subscriber,
    get_subscriber,
    history_of,
    iter_recipients,
    list_counts,
    membership_status,
    memberships_of,
    recipients_select,
    search,
)
from subscribers.search import search_text
from subscribers.tokens import forget_hash

LIST_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
# "fr", "pt-BR"; which ones are shipped is mailer's to say
LANGUAGE_TAG = re.compile(r"[a-z]{2,3}(?:-[A-Za-z0-9]{2,8})?")


# ---------------------------------------------------------------- lists

def create_list(conn: Connection, name: str, title: str = "", description: str = "", *,
                private: bool = False, language: str | None = None) -> List:
    if not LIST_NAME.fullmatch(name):
        raise InvalidListName(f"list name {name!r} must be 1-64 lower-case letters, digits, '.', '_' or '-'")
    if conn.execute(select(lists.c.id).where(lists.c.name == name)).first():
        raise ListExists(name)
    values = dict(name=name, title=clean_text(title) or name, description=clean_text(description, 1000),
                  private=bool(private), language=_language(language), created_at=utcnow())
    list_id = conn.execute(insert(lists).values(values).returning(lists.c.id)).scalar_one()
    return List(id=list_id, **values)


def get_list(conn: Connection, name: str) -> List:
    row = conn.execute(select(lists).where(lists.c.name == name)).first()
    if row is None:   # a typo: name the closest list (the messages go to admins only)
        names = list(conn.execute(select(lists.c.name)).scalars())
        near = difflib.get_close_matches(name.lower(), names, n=1, cutoff=0.6)
        raise ListNotFound(name, near[0] if near else None)
    return List(**row._mapping)


def edit_list(conn: Connection, name: str, *, title: str | None = None, description: str | None = None,
              private: bool | None = None, language: str | None = None) -> tuple[List, list[str]]:
    """Change a list's title, description, privacy or language (`language=""`: none of its own);
    (the list now, the fields that changed)."""
    found = get_list(conn, name)
    given = {"title": None if title is None else (clean_text(title) or name),
             "description": None if description is None else clean_text(description, 1000),
             "private": private}
    values: dict[str, Any] = {k: v for k, v in given.items() if v is not None and v != getattr(found, k)}
    if language is not None and _language(language) != found.language:
        values["language"] = _language(language)
    if values:
        conn.execute(update(lists).where(lists.c.id == found.id).values(**values))
    return get_list(conn, name), sorted(values)


def _language(language: str | None) -> str | None:
    """A list's language tag as stored ("" and None: none of its own); InvalidLanguage otherwise."""
    if not language:
        return None
    if not LANGUAGE_TAG.fullmatch(language):
        raise InvalidLanguage(f"language {language!r} must be a language tag such as fr or pt-BR")
    return language


def all_lists(conn: Connection) -> list[List]:
    return [List(**row._mapping) for row in conn.execute(select(lists).order_by(lists.c.name))]


def delete_list(conn: Connection, name: str) -> int:
    """Delete a list and its memberships (history keeps its rows, without the list); returns
    how many memberships went with it."""
    found = get_list(conn, name)
    count = conn.execute(delete(memberships).where(memberships.c.list_id == found.id)).rowcount
    conn.execute(update(history).where(history.c.list_id == found.id).values(list_id=None))
    conn.execute(delete(lists).where(lists.c.id == found.id))
    return count


# ---------------------------------------------------------------- history

def record(conn: Connection, subscriber_id: int | None, list_id: int | None, action: Action, source: str, *,
           old: str | None = None, new: str | None = None, detail: dict | None = None,
           at: datetime | None = None) -> None:
    """Append one history row (the table is append-only; only `forget` scrubs it)."""
    conn.execute(insert(history).values(
        subscriber_id=subscriber_id, list_id=list_id, at=at or utcnow(), action=str(action),
        old_status=_s(old), new_status=_s(new), source=str(source)[:64], detail=detail))
    outbox.from_history(conn, [(subscriber_id, list_id, str(action), _s(old), _s(new), str(source)[:64])])


def _s(status) -> str | None:
    return None if status is None else str(Status(status))


# ---------------------------------------------------------------- status

def set_status(conn: Connection, subscriber_id: int, list_id: int | None, new_status: Status | str,
               source: str, detail: dict | None = None) -> bool:
    """The entry point for events and admins; True if anything changed.

    bounced/complained: the subscriber's global status (suppressed on every list), and the
    membership's too when `list_id` is given. unsubscribed with `list_id=None`: every list.
    active/unconfirmed: one list's membership (a global status, if any, stays; see
    clear_global_status).
    """
    new_status = Status(new_status)
    if new_status in GLOBAL_STATUSES:
        changed = _set_global(conn, subscriber_id, new_status, source, detail)
        if list_id is not None:
            changed = _set_membership(conn, subscriber_id, list_id, new_status, source, detail) or changed
        return changed
    if list_id is not None:
        return _set_membership(conn, subscriber_id, list_id, new_status, source, detail)
    if new_status is not Status.UNSUBSCRIBED:
        raise ValueError(f"{new_status} needs a list (only unsubscribed, bounced, complained apply to every list)")
    ids = conn.execute(select(memberships.c.list_id).where(memberships.c.subscriber_id == subscriber_id)).scalars()
    # a list, not a generator: every membership changes, where any() would stop at the first
    return any([_set_membership(conn, subscriber_id, lid, new_status, source, detail) for lid in ids])  # noqa: C419


def clear_global_status(conn: Connection, subscriber_id: int, source: str, detail: dict | None = None) -> bool:
    """Lift a bounce or complaint (an explicit admin or double-opt-in decision only)."""
    return _set_global(conn, subscriber_id, None, source, detail)


def _set_global(conn, subscriber_id, status, source, detail) -> bool:
    old = conn.execute(select(subscribers.c.global_status).where(subscribers.c.id == subscriber_id)).first()
    if old is None:
        raise SubscriberNotFound(f"no subscriber with id {subscriber_id}")
    if old[0] == _s(status):
        return False
    now = utcnow()
    conn.execute(update(subscribers).where(subscribers.c.id == subscriber_id)
                 .values(global_status=_s(status), updated_at=now))
    record(conn, subscriber_id, None, Action.STATUS, source, old=old[0], new=status, detail=detail, at=now)
    return True


def _membership(conn, subscriber_id: int, list_id: int):
    row = conn.execute(select(memberships).where(memberships.c.subscriber_id == subscriber_id,
                                                 memberships.c.list_id == list_id)).first()
    if row is None:
        raise SubscriberNotFound(f"subscriber {subscriber_id} is not on list {list_id}")
    return row


def _set_membership(conn, subscriber_id, list_id, status: Status, source, detail, *,
                    action: Action = Action.STATUS, consent: dict | None = None) -> bool:
    old = _membership(conn, subscriber_id, list_id).status
    if old == status and consent is None:
        return False
    now = utcnow()
    conn.execute(update(memberships)
                 .where(memberships.c.subscriber_id == subscriber_id, memberships.c.list_id == list_id)
                 .values(status=str(status), updated_at=now, **(consent or {})))
    record(conn, subscriber_id, list_id, action, source, old=old, new=status, detail=detail, at=now)
    return True


# ---------------------------------------------------------------- admin add

class Outcome(enum.StrEnum):
    """What `add_subscriber` did."""

    ADDED = "added"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class AddResult:
    subscriber_id: int
    email: str
    outcome: Outcome
    status: Status               # the membership's status now
    changes: tuple[str, ...] = ()  # what changed, in words


def add_subscriber(conn: Connection, email: str, list_id: int, *, name: str | None = None,
                   status: Status = Status.ACTIVE, source: ConsentSource = ConsentSource.ADMIN,
                   force: bool = False, secret: str | None = None, actor: str = "admin",
                   consent_ip: str | None = None, consent_at: datetime | None = None) -> AddResult:
    """Subscribe `email` to a list. A suppressed or forgotten address (new row or existing, the
    forget hash is checked for both) raises SuppressedAddress unless `force` (the admin's explicit
    override), which is an act of consent: consent time and history are updated. Never
    downgrades active to unconfirmed. `consent_ip` and `consent_at`: a consent given elsewhere
    (the API's confirmed creates), kept in the membership's consent record."""
    address = normalize_email(email)
    name = clean_text(name)
    row = find_subscriber(conn, address)
    lifted = _check_forgotten(conn, address, secret, force, actor)
    given = {"ip": consent_ip, "at": consent_at}
    if row is None:
        sid = _insert_subscriber(conn, address, name)
        return _join(conn, sid, address, list_id, status, source, actor, ("subscribed",), **given)
    changes: list[str] = ["forgotten lifted"] if lifted else []
    if row.global_status:
        if not force:
            raise SuppressedAddress(address, row.global_status, hint="--resubscribe overrides")
        clear_global_status(conn, row.id, actor, {"reason": "admin override"})
        changes.append(f"{row.global_status} lifted")
    if name and name != row.name:
        _update_subscriber(conn, row.id, {"name": name}, actor)
        changes.append("name updated")
    current = conn.execute(select(memberships.c.status).where(
        memberships.c.subscriber_id == row.id, memberships.c.list_id == list_id)).scalar()
    if current is None:
        return _join(conn, row.id, address, list_id, status, source, actor, (*changes, "subscribed"), **given)
    current = Status(current)
    if current in SUPPRESSED and not force:
        raise SuppressedAddress(address, str(current), _list_name(conn, list_id), hint="--resubscribe overrides")
    target = current if current is Status.ACTIVE and status is Status.UNCONFIRMED else status
    if target != current or (changes and any(c.endswith("lifted") for c in changes)):
        _set_membership(conn, row.id, list_id, target, actor, {"reason": "admin"},
                        consent=_consent(source, consent_ip, at=consent_at))
        if target != current:
            changes.append(f"{current} -> {target}")
        current = target
    return AddResult(row.id, address, Outcome.UPDATED if changes else Outcome.UNCHANGED, current, tuple(changes))


def _check_forgotten(conn, address: str, secret: str | None, force: bool, actor: str) -> bool:
    """SuppressedAddress for a forgotten address unless `force`, which lifts it; True if lifted."""
    if conn.execute(select(forgotten.c.id).limit(1)).first() is None:
        return False  # nobody was ever forgotten: nothing to check, no secret needed
    if not secret:
        raise SecretRequired("this database has forgotten addresses; MAILER_SECRET_KEY must be set "
                             "to check addresses against them")
    digest = forget_hash(secret, address)
    if conn.execute(select(forgotten.c.id).where(forgotten.c.email_hash == digest)).first() is None:
        return False
    if not force:
        raise SuppressedAddress(address, "forgotten", hint="--resubscribe adds it again")
    _unforget(conn, digest, actor, "forgotten address added again")
    return True


def _unforget(conn, digest: str, actor: str, reason: str) -> None:
    conn.execute(delete(forgotten).where(forgotten.c.email_hash == digest))
    record(conn, None, None, Action.STATUS, actor, detail={"reason": reason})


def _insert_subscriber(conn, address: str, name: str, attributes: dict | None = None) -> int:
    now = utcnow()
    return conn.execute(insert(subscribers).values(
        email=address, name=name, attributes=attributes or {}, created_at=now, updated_at=now,
        search=search_text(address, name))
    ).inserted_primary_key[0]


def _update_subscriber(conn, subscriber_id: int, values: dict[str, Any], source: str) -> None:
    now = utcnow()
    if "name" in values or "email" in values:
        row = conn.execute(select(subscribers.c.email, subscribers.c.name)
                           .where(subscribers.c.id == subscriber_id)).first()
        if row is not None:
            values = {**values, "search": search_text(values.get("email", row.email), values.get("name", row.name))}
    conn.execute(update(subscribers).where(subscribers.c.id == subscriber_id).values(updated_at=now, **values))
    record(conn, subscriber_id, None, Action.UPDATE, source, detail={"fields": sorted(values)}, at=now)


def _consent(source: ConsentSource, ip: str | None = None, user_agent: str | None = None,
             at: datetime | None = None) -> dict:
    return dict(consent_at=at or utcnow(), consent_source=str(ConsentSource(source)),
                consent_ip=normalize_ip(ip), consent_user_agent=(user_agent or None) and user_agent[:512])


def _join(conn, sid, address, list_id, status, source, actor, changes, *, ip=None, user_agent=None,
          at=None) -> AddResult:
    now = utcnow()
    conn.execute(insert(memberships).values(
        list_id=list_id, subscriber_id=sid, status=str(status), created_at=now, updated_at=now,
        token_key=new_key(), **_consent(source, ip, user_agent, at or now)))
    detail = {"ip": normalize_ip(ip), "user_agent": user_agent} if ip or user_agent else None
    record(conn, sid, list_id, Action.SUBSCRIBE, actor, new=status, detail=detail, at=now)
    return AddResult(sid, address, Outcome.ADDED, Status(status), tuple(changes))


def _list_name(conn, list_id: int) -> str | None:
    return conn.execute(select(lists.c.name).where(lists.c.id == list_id)).scalar()


# ---------------------------------------------------------------- web: double opt-in

@dataclass(frozen=True)
class Signup:
    subscriber_id: int | None    # None: a forgotten address, of which nothing is stored
    list_id: int
    status: Status | None        # the effective status now (unchanged for existing members)
    needs_confirmation: bool     # a confirmation mail is due (False only when already active)
    mail: bool                   # ... and not throttled: send it now
    address: str                 # normalized


def subscribe_unconfirmed(conn: Connection, list_id: int, email: str, *, secret: str, name: str | None = None,
                          ip: str | None = None, user_agent: str | None = None,
                          resend_after: timedelta) -> Signup:
    """A web form signup (unauthenticated, so it may change nothing of an existing reader).

    New address: an unconfirmed membership with its consent record. Forgotten address: nothing
    stored (it comes back only when the person confirms: see confirm_forgotten). Existing member,
    whatever the status: no change. Every call does the same statements whatever the state (a
    reply that took longer for some states would tell them apart), and its one write, the
    request row per list and address, is updated in place: probing adds no row.
    """
    address = normalize_email(email)
    digest = forget_hash(secret, address)
    row = find_subscriber(conn, address)
    gone = conn.execute(select(forgotten.c.id).where(forgotten.c.email_hash == digest)).first() is not None
    current = conn.execute(select(memberships.c.status).where(
        memberships.c.subscriber_id == (row.id if row else 0), memberships.c.list_id == list_id)).scalar()
    sid, status = (row.id if row else None), None
    if gone:
        sid = None
    elif current is None:
        sid = sid or _insert_subscriber(conn, address, clean_text(name))
        _join(conn, sid, address, list_id, Status.UNCONFIRMED, ConsentSource.WEB, "web", (), ip=ip,
              user_agent=user_agent)
        status = Status.UNCONFIRMED
    else:   # (a membership row means a subscriber row)
        status = effective_status(current, row.global_status if row else None)
    wanted = status is not Status.ACTIVE
    mail = _request(conn, list_id, digest, wanted, resend_after)
    return Signup(sid, list_id, status, wanted, mail, address)


def _request(conn, list_id: int, digest: str, wanted: bool, resend_after: timedelta) -> bool:
    """Upsert the (list, address) request row; True when a mail is wanted and none went out
    within `resend_after` (the mail is then counted as sent now)."""
    now = utcnow()
    upsert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    mailed = signup_requests.c.mailed_at
    due = or_(mailed.is_(None), mailed < now - resend_after)
    new = upsert(signup_requests).values(list_id=list_id, address_hash=digest, requested_at=now,
                                         mailed_at=now if wanted else None)
    statement = new.on_conflict_do_update(
        index_elements=["list_id", "address_hash"],
        set_={"requested_at": now, "mailed_at": case((due, now), else_=mailed) if wanted else mailed},
    ).returning(signup_requests.c.mailed_at)
    mailed_at = conn.execute(statement).scalar()   # run whatever `wanted` is: the same work
    return wanted and mailed_at == now


def confirm(conn: Connection, subscriber_id: int, list_id: int, *, secret: str, ip: str | None = None,
            user_agent: str | None = None, issued: int | None = None) -> bool:
    """The person clicked their confirmation link: active, with consent recorded. True if changed.

    A suppressed member (unsubscribed here, or bounced or complained anywhere) is reactivated
    only when their own request (the form) came after the suppression: an old confirm link never
    undoes a later unsubscribe. `issued` (Unix seconds): when the link was made; it must also
    have been made after the suppression, so a stranger's new request for the address does not
    bring an old link back to life. Every confirmation is an act of consent: consent time, IP, user
    agent and a history row, also when only a global suppression is lifted.
    """
    current = Status(_membership(conn, subscriber_id, list_id).status)
    row = conn.execute(select(subscribers.c.email, subscribers.c.global_status)
                       .where(subscribers.c.id == subscriber_id)).one()
    glob = row.global_status
    if current is Status.ACTIVE and not glob:
        return False
    if (current in SUPPRESSED or glob) and not _asked_since_change(conn, subscriber_id, list_id,
                                                                    forget_hash(secret, row.email), issued):
        return False
    detail = {"ip": ip, "user_agent": user_agent}
    if glob:
        clear_global_status(conn, subscriber_id, "web", detail)
    return _set_membership(conn, subscriber_id, list_id, Status.ACTIVE, "web", detail, action=Action.CONFIRM,
                           consent=_consent(ConsentSource.WEB, ip, user_agent))


def _asked_since_change(conn, subscriber_id: int, list_id: int, digest: str, issued: int | None = None) -> bool:
    """Whether the latest web request for this list came after the membership's (or the
    subscriber's global) latest status change, and the link (made at `issued`, whole seconds)
    was made for such a request, not for one before the change."""
    changed = conn.execute(select(func.max(history.c.at)).where(
        history.c.subscriber_id == subscriber_id,
        (history.c.list_id == list_id) | history.c.list_id.is_(None),
        history.c.action.in_([str(a) for a in (Action.STATUS, Action.SUBSCRIBE, Action.CONFIRM)]))).scalar()
    asked = conn.execute(select(signup_requests.c.requested_at).where(
        signup_requests.c.list_id == list_id, signup_requests.c.address_hash == digest)).scalar()
    if asked is None:
        return False
    if changed is not None and issued is not None and issued < int(changed.timestamp()):
        return False                  # an old link: its request came before the change
    return changed is None or asked > changed


def confirm_forgotten(conn: Connection, list_id: int, address: str, *, secret: str, asked_at: datetime,
                      name: str = "", ip: str | None = None, user_agent: str | None = None) -> bool:
    """A forgotten person confirmed the link mailed for their request at `asked_at`: stored again,
    active on the list, with this click as the consent. False when the link no longer applies:
    the address was forgotten (again) after the request, or the list is gone."""
    address = normalize_email(address)
    digest = forget_hash(secret, address)
    when = conn.execute(select(forgotten.c.at).where(forgotten.c.email_hash == digest)).scalar()
    if when is not None and when > asked_at:
        return False            # forgotten after this link was made
    if conn.execute(select(lists.c.id).where(lists.c.id == list_id)).first() is None:
        return False
    if when is not None:
        _unforget(conn, digest, "web", "forgotten address confirmed by its owner")
    row = find_subscriber(conn, address)
    if row is None:
        sid = _insert_subscriber(conn, address, clean_text(name))
        _join(conn, sid, address, list_id, Status.ACTIVE, ConsentSource.WEB, "web", (), ip=ip, user_agent=user_agent)
        return True
    current = membership_status(conn, row.id, list_id)
    if current is None:
        _join(conn, row.id, address, list_id, Status.ACTIVE, ConsentSource.WEB, "web", (), ip=ip, user_agent=user_agent)
        return True
    return effective_status(current, row.global_status) is Status.ACTIVE


def unsubscribe(conn: Connection, subscriber_id: int, list_id: int, *, source: str = "web",
                ip: str | None = None, user_agent: str | None = None) -> bool:
    """Withdraw consent for one list (idempotent; True if it changed anything)."""
    current = _membership(conn, subscriber_id, list_id).status
    if current == Status.UNSUBSCRIBED:
        return False
    detail = {"ip": ip, "user_agent": user_agent} if ip or user_agent else None
    return _set_membership(conn, subscriber_id, list_id, Status.UNSUBSCRIBED, source, detail)


def opt_in(conn: Connection, subscriber_id: int, list_id: int, *, ip: str | None = None,
           user_agent: str | None = None) -> bool:
    """The reader, signed in by a link mailed to them (the preferences page), asks for a list:
    active at once with a web consent record. A list they left is theirs again (their own act);
    a bounce or complaint is not lifted here. True if anything changed."""
    glob = conn.execute(select(subscribers.c.global_status).where(subscribers.c.id == subscriber_id)).scalar()
    if glob:
        return False
    current = conn.execute(select(memberships.c.status).where(
        memberships.c.subscriber_id == subscriber_id, memberships.c.list_id == list_id)).scalar()
    detail = {"ip": ip, "user_agent": user_agent, "via": "preferences"}
    if current is None:
        address = conn.execute(select(subscribers.c.email).where(subscribers.c.id == subscriber_id)).scalar()
        _join(conn, subscriber_id, address, list_id, Status.ACTIVE, ConsentSource.WEB, "web", (),
              ip=ip, user_agent=user_agent)
        return True
    if current == Status.ACTIVE:
        return False
    return _set_membership(conn, subscriber_id, list_id, Status.ACTIVE, "web", detail, action=Action.CONFIRM,
                           consent=_consent(ConsentSource.WEB, ip, user_agent))


def rename(conn: Connection, subscriber_id: int, name: str, source: str = "web") -> bool:
    """Set the subscriber's name (cleaned to one line); True if it changed."""
    name = clean_text(name)
    old = conn.execute(select(subscribers.c.name).where(subscribers.c.id == subscriber_id)).scalar()
    if old is None or old == name:
        return False
    _update_subscriber(conn, subscriber_id, {"name": name}, source)
    return True


def set_tracking(conn: Connection, subscriber_id: int, allowed: bool, *, source: str = "web", ip: str | None = None,
                 user_agent: str | None = None) -> bool:
    """The reader allows or refuses click and open tracking; True if it changed. Recorded in the
    history with where it came from, like any act of consent."""
    refused = conn.execute(select(subscribers.c.no_tracking).where(subscribers.c.id == subscriber_id)).scalar()
    if refused is None or bool(refused) == (not allowed):
        return False
    now = utcnow()
    conn.execute(update(subscribers).where(subscribers.c.id == subscriber_id)
                 .values(no_tracking=not allowed, updated_at=now))
    detail = {"tracking": "on" if allowed else "off", "ip": normalize_ip(ip),
              "user_agent": (user_agent or None) and user_agent[:512]}
    record(conn, subscriber_id, None, Action.TRACKING, source, detail=detail, at=now)
    return True


# ---------------------------------------------------------------- forget

def is_forgotten(conn: Connection, email: str, secret: str) -> bool:
    digest = forget_hash(secret, normalize_email(email))
    return conn.execute(select(forgotten.c.id).where(forgotten.c.email_hash == digest)).first() is not None


def forget(conn: Connection, email: str, secret: str, *, source: str = "admin") -> int | None:
    """GDPR erasure: the subscriber row and memberships go, their history rows lose the id and
    every detail; only a keyed hash of the address remains, so imports skip it. Returns the
    erased subscriber's id (None if the address was not stored; its hash is kept all the same)."""
    address = normalize_email(email)
    digest = forget_hash(secret, address)
    if conn.execute(select(forgotten.c.id).where(forgotten.c.email_hash == digest)).first() is None:
        conn.execute(insert(forgotten).values(email_hash=digest, at=utcnow()))
    else:   # forgotten again: confirmation links asked for before now no longer apply
        conn.execute(update(forgotten).where(forgotten.c.email_hash == digest).values(at=utcnow()))
    conn.execute(delete(signup_requests).where(signup_requests.c.address_hash == digest))
    row = find_subscriber(conn, address)
    if row is None:
        return None
    conn.execute(update(history).where(history.c.subscriber_id == row.id).values(subscriber_id=None, detail=None))
    conn.execute(delete(memberships).where(memberships.c.subscriber_id == row.id))
    conn.execute(delete(subscribers).where(subscribers.c.id == row.id))
    record(conn, None, None, Action.FORGET, source)
    outbox.forgotten(conn, [row.id], source)
    return row.id


__all__ = [
    "AddResult", "Outcome", "Signup", "Subscriber", "add_subscriber", "all_lists", "clear_global_status", "confirm",
    "confirm_forgotten", "create_list", "delete_list", "edit_list", "opt_in", "rename", "effective_status",
    "find_subscriber", "forget", "get_list", "get_subscriber", "history_of", "is_forgotten", "iter_recipients",
    "list_counts", "membership_status", "memberships_of", "recipients_select",
    "record", "search", "set_status", "set_tracking", "subscribe_unconfirmed", "unsubscribe",
]
