"""Admin web interface: the queries that must stay fast at a million subscribers.

- the subscribers view (a text search, tags, a status) is subscribers.selection's, counted up to
  COUNT_CAP for pages; `with_lists` adds each row's lists.
- `status_counts`: one list's members per status, from an index, without reading subscribers;
  `CountCache` keeps them a minute.
- `members`: one page of a list's members in subscriber order, keyset-paginated (`after` or
  `before` a subscriber id), optionally with one effective status; the (list_id, status,
  subscriber_id) index answers it without reading the rest of the list.
Read-only; state changes go through subscribers.store like the CLI's.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from sqlalchemy import and_, func, select

from subscribers import store
from subscribers.models import Status, lists, memberships, subscribers
from subscribers.normalize import display_email
from subscribers.queries import effective_status, effective_status_sql
from subscribers.selection import SORTED

PAGE = 50
COUNT_CAP = SORTED      # a text search's page counts what it sorted (subscribers.selection)


def with_lists(conn, rows) -> list:
    """(id, email with its domain in Unicode, name, "list: status, ...") for rows of id, email,
    name, global_status."""
    ids = [row.id for row in rows]
    where: dict[int, list[str]] = {}
    if ids:
        query = (select(memberships.c.subscriber_id, lists.c.name, memberships.c.status)
                 .join_from(memberships, lists, memberships.c.list_id == lists.c.id)
                 .where(memberships.c.subscriber_id.in_(ids)).order_by(lists.c.name))
        glob = {row.id: row.global_status for row in rows}
        for sid, name, status in conn.execute(query):
            where.setdefault(sid, []).append(f"{name}: {effective_status(status, glob[sid])}")
    return [(row.id, display_email(row.email), row.name, ", ".join(where.get(row.id, []))) for row in rows]


def subscriber_email(conn, subscriber_id: int) -> str | None:
    return conn.execute(select(subscribers.c.email).where(subscribers.c.id == subscriber_id)).scalar()


def status_counts(conn, list_id: int) -> dict[Status, int]:
    """A list's members per effective status, as store.list_counts counts them, for one list and
    without joining a million subscribers: the membership statuses come from the (list_id,
    status, subscriber_id) index alone, then the few members with a global status (bounced or
    complained anywhere; a partial index finds them) are moved to it."""
    counts = {Status(s): n for s, n in conn.execute(
        select(memberships.c.status, func.count()).where(memberships.c.list_id == list_id)
        .group_by(memberships.c.status))}
    moved = conn.execute(
        select(memberships.c.status, subscribers.c.global_status, func.count())
        .join_from(subscribers, memberships, memberships.c.subscriber_id == subscribers.c.id)
        .where(subscribers.c.global_status.is_not(None), memberships.c.list_id == list_id)
        .group_by(memberships.c.status, subscribers.c.global_status))
    for own, glob, n in moved:
        counts[Status(own)] -= n
        counts[Status(glob)] = counts.get(Status(glob), 0) + n
    return {status: n for status, n in counts.items() if n}


class CountCache:
    """status_counts per list, kept a minute: counting a million members reads a million index
    entries (over a second on a busy machine), too slow for every page view.

    Stale-while-revalidate: after `ttl` the old counts are still served while one background
    read refreshes them, so no page waits for a recount except the very first. Every admin action
    clears the cache (auth.current_admin on each POST), so an admin sees their own changes at
    once; changes made elsewhere (CLI imports, webhooks) show within a minute."""

    def __init__(self, read, ttl: float = 60.0) -> None:
        self.read, self.ttl = read, ttl       # read(fn, *args): a transaction of the web context
        self._data: dict[int, tuple[float, dict]] = {}
        self._refreshing: set[int] = set()
        self._generation = 0
        self._lock = threading.Lock()

    def get(self, conn, list_id: int) -> dict[Status, int]:
        with self._lock:
            hit = self._data.get(list_id)
            generation = self._generation
        if hit is None:
            value = status_counts(conn, list_id)
            self._store(list_id, value, generation)
            return value
        if time.monotonic() - hit[0] > self.ttl:
            with self._lock:
                start = list_id not in self._refreshing
                self._refreshing.add(list_id)
            if start:
                threading.Thread(target=self._refresh, args=(list_id, generation), daemon=True,
                                 name=f"admin-counts-{list_id}").start()
        return hit[1]

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._generation += 1

    def _store(self, list_id: int, value: dict, generation: int) -> None:
        with self._lock:
            if generation == self._generation:     # not cleared meanwhile: an older count is no use
                self._data[list_id] = (time.monotonic(), value)

    def _refresh(self, list_id: int, generation: int) -> None:
        try:
            self._store(list_id, self.read(status_counts, list_id), generation)
        finally:
            with self._lock:
                self._refreshing.discard(list_id)


def overview(conn, cache: CountCache) -> list[tuple]:
    """(list row, {Status: count}) for every list, like store.list_counts, a list at a time."""
    return [(row, cache.get(conn, row.id)) for row in store.all_lists(conn)]


@dataclass(frozen=True)
class MembersPage:
    rows: list                 # (subscriber_id, email, name, effective status, updated_at)
    has_before: bool
    has_after: bool

    @property
    def first_id(self) -> int | None:
        return self.rows[0][0] if self.rows else None

    @property
    def last_id(self) -> int | None:
        return self.rows[-1][0] if self.rows else None


def _status_filter(status: Status):
    if status in (Status.BOUNCED, Status.COMPLAINED):
        return effective_status_sql() == status.value
    return and_(memberships.c.status == status.value, subscribers.c.global_status.is_(None))


def members(conn, list_id: int, *, status: Status | None = None, after: int | None = None,
            before: int | None = None, limit: int = PAGE) -> MembersPage:
    sid = memberships.c.subscriber_id
    query = (select(sid, subscribers.c.email, subscribers.c.name, effective_status_sql(), memberships.c.updated_at)
             .join_from(memberships, subscribers, sid == subscribers.c.id)
             .where(memberships.c.list_id == list_id))
    if status is not None:
        query = query.where(_status_filter(status))
    backwards = before is not None and after is None
    if backwards:
        query = query.where(sid < before).order_by(sid.desc())
    else:
        query = query.where(sid > (after or 0)).order_by(sid)
    rows = conn.execute(query.limit(limit + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    if backwards:
        rows.reverse()
        return MembersPage(rows, has_before=more, has_after=True)
    return MembersPage(rows, has_before=bool(after), has_after=more)
