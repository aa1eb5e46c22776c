"""Connection + question -> rows: the store's read-only queries (re-exported by store.py).

`recipients_select(list_id)` is the send's recipient set as one SQL expression, so mailer can
`INSERT INTO deliveries ... SELECT` a million rows in one statement; `iter_recipients` streams it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from sqlalchemy import Connection, Select, and_, exists, func, select

from subscribers.errors import SubscriberNotFound
from subscribers.models import (
    Status,
    Subscriber,
    history,
    lists,
    memberships,
    subscriber_tags,
    subscribers,
)
from subscribers.normalize import normalize_email
from subscribers.search import matches


def effective_status(membership_status: str | Status, global_status: str | None) -> Status:
    """What a list sees: a bounce or complaint anywhere overrides the membership's own status."""
    return Status(global_status or membership_status)


def effective_status_sql():
    return func.coalesce(subscribers.c.global_status, memberships.c.status)


def recipients_select(list_id: int, tags: tuple[str, ...] = ()) -> Select:
    """(subscriber_id, email, name) of the list's active members with no global suppression;
    with `tags`, only those with at least one of them (a segment)."""
    query = (select(subscribers.c.id.label("subscriber_id"), subscribers.c.email, subscribers.c.name)
             .join_from(memberships, subscribers, memberships.c.subscriber_id == subscribers.c.id)
             .where(memberships.c.list_id == list_id, memberships.c.status == Status.ACTIVE.value,
                    subscribers.c.global_status.is_(None))
             .order_by(subscribers.c.id))
    if tags:
        query = query.where(with_any_tag(tags))
    return query


def with_any_tag(tags: Iterable[str]):
    """A WHERE clause on `subscribers`: the subscriber has at least one of these tags."""
    return exists().where(subscriber_tags.c.subscriber_id == subscribers.c.id,
                          subscriber_tags.c.tag.in_(list(tags)))


def iter_recipients(conn: Connection, list_id: int, batch: int = 5000) -> Iterator[tuple[int, str, str]]:
    """Stream recipients_select (a server-side cursor on PostgreSQL); memory stays flat."""
    result = conn.execution_options(yield_per=batch).execute(recipients_select(list_id))
    for row in result:
        yield row.subscriber_id, row.email, row.name


def find_subscriber(conn: Connection, email: str) -> Subscriber | None:
    """The subscriber with this address (normalized first), or None."""
    address = normalize_email(email)
    row = conn.execute(select(subscribers).where(subscribers.c.email == address)).first()
    return None if row is None else Subscriber(**row._mapping)


def get_subscriber(conn: Connection, email: str) -> Subscriber:
    found = find_subscriber(conn, email)
    if found is None:
        raise SubscriberNotFound(f"no subscriber {normalize_email(email)}")
    return found


def membership_status(conn: Connection, subscriber_id: int, list_id: int) -> Status | None:
    """The membership's own status (not the effective one), or None when not on the list."""
    value = conn.execute(select(memberships.c.status).where(
        memberships.c.subscriber_id == subscriber_id, memberships.c.list_id == list_id)).scalar()
    return None if value is None else Status(value)


def memberships_of(conn: Connection, subscriber_id: int) -> list:
    """Rows of (list name, status, effective status, consent_at, consent_source, consent_ip, ...)."""
    query = (select(lists.c.name.label("list"), memberships.c.status, effective_status_sql().label("effective"),
                    memberships.c.consent_at, memberships.c.consent_source, memberships.c.consent_ip,
                    memberships.c.consent_user_agent, memberships.c.optin_at, memberships.c.optin_ip,
                    memberships.c.created_at, memberships.c.updated_at)
             .join_from(memberships, lists, memberships.c.list_id == lists.c.id)
             .join(subscribers, memberships.c.subscriber_id == subscribers.c.id)
             .where(memberships.c.subscriber_id == subscriber_id).order_by(lists.c.name))
    return list(conn.execute(query))


def history_of(conn: Connection, subscriber_id: int) -> list:
    """The subscriber's history rows, oldest first, with the list's name (None: every list)."""
    query = (select(history.c.at, lists.c.name.label("list"), history.c.action, history.c.old_status,
                    history.c.new_status, history.c.source, history.c.detail)
             .outerjoin_from(history, lists, history.c.list_id == lists.c.id)
             .where(history.c.subscriber_id == subscriber_id).order_by(history.c.id))
    return list(conn.execute(query))


def list_counts(conn: Connection) -> list[tuple]:
    """(list row, {Status: count}) for every list, counting effective statuses."""
    status = effective_status_sql()
    counts: dict[int, dict[Status, int]] = {}
    query = (select(memberships.c.list_id, status, func.count())
             .join_from(memberships, subscribers, memberships.c.subscriber_id == subscribers.c.id)
             .group_by(memberships.c.list_id, status))
    for list_id, value, count in conn.execute(query):
        counts.setdefault(list_id, {})[Status(value)] = count
    rows = conn.execute(select(lists).order_by(lists.c.name))
    return [(row, counts.get(row.id, {})) for row in rows]


def search(conn: Connection, text: str, limit: int = 50) -> tuple[int, list]:
    """(total, first `limit` rows of id, email, name, lists) whose address or name contains `text`
    (any case, any script: subscribers/search.py). `lists` is "name:status, ..." for display."""
    match = matches(text, conn.dialect.name)
    total = conn.execute(select(func.count()).select_from(subscribers).where(match)).scalar_one()
    rows = conn.execute(select(subscribers.c.id, subscribers.c.email, subscribers.c.name, subscribers.c.global_status)
                        .where(match).order_by(subscribers.c.email).limit(limit)).all()
    found = []
    for row in rows:
        member = conn.execute(select(lists.c.name, memberships.c.status)
                              .join_from(memberships, lists, and_(memberships.c.list_id == lists.c.id))
                              .where(memberships.c.subscriber_id == row.id).order_by(lists.c.name)).all()
        where = ", ".join(f"{name}:{effective_status(status, row.global_status)}" for name, status in member)
        found.append((row.id, row.email, row.name, where))
    return total, found
