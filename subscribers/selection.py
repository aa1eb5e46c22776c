"""A view of the subscribers an admin filters -> its rows a page at a time, its count, and its ids
a chunk at a time (what a bulk action, the admin's CSV and `export --tag` act on).

    view = Selection(text="ann", tags=("press", "vip"), status=Status.ACTIVE)
    view.page(conn, after=None)          # 50 rows in subscriber order (or by address for `text`)
    view.count(conn, cap=1000)           # how many match (capped for pages, exact for actions)
    for ids in view.chunks(conn): ...    # 1,000 ids at a time, keyset by id

The filters, all optional and all applied together:
- `text`: the address or the name *contains* it, in any case and script (subscribers/search.py:
  a trigram index on PostgreSQL, the folded `search` column on SQLite); a prefix is also matched
  through the address and name indexes (m0006_admin_users);
- `tags`: the subscriber has every one of them;
- `status`: bounced or complained: suppressed everywhere (subscribers.global_status); active,
  unconfirmed or unsubscribed: not suppressed, and has that status on at least one list.
Read-only; the changes go through subscribers.many and the store.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlencode

from sqlalchemy import Connection, and_, exists, func, select, true

from subscribers.models import GLOBAL_STATUSES, Status, memberships, subscriber_tags, subscribers
from subscribers.search import matches
from subscribers.tags import normalize_tag

PAGE = 50
CHUNK = 1000
SORTED = 1000            # a text search's page sorts no more matches than this (Selection.page)
DRIVER_CAP = 100_000     # enough to tell a rare filter from a common one; an index range this long reads fast


def _capped(conn: Connection, ids) -> int:
    """How many rows `ids` (a SELECT of one column) finds, counting no further than DRIVER_CAP."""
    return conn.execute(select(func.count()).select_from(ids.limit(DRIVER_CAP).subquery())).scalar_one()


def has_status(status: Status):
    """A WHERE clause on `subscribers`: see the module's docstring."""
    if status in GLOBAL_STATUSES:
        return subscribers.c.global_status == status.value
    # OFFSET 0 keeps PostgreSQL probing the membership index row by row, as SQLite does: made a semi
    # join, it walked memberships from the first subscriber to reach a page `after` the middle
    # (a second at a million, where the probes of 51 rows take a millisecond).
    on_a_list = select(memberships.c.subscriber_id).where(memberships.c.subscriber_id == subscribers.c.id,
                                                          memberships.c.status == status.value).offset(0)
    return and_(subscribers.c.global_status.is_(None), on_a_list.exists())


def has_tags(tags: tuple[str, ...]):
    return and_(true(), *(exists().where(subscriber_tags.c.subscriber_id == subscribers.c.id,
                                         subscriber_tags.c.tag == tag) for tag in tags))


@dataclass(frozen=True)
class Selection:
    text: str = ""
    tags: tuple[str, ...] = field(default=())
    status: Status | None = None

    @classmethod
    def of(cls, text: str = "", tags=(), status: str | Status | None = None) -> Selection:
        """From what a person typed: tags normalized (InvalidTag for a bad one), status checked
        (ValueError names the allowed ones)."""
        chosen = None
        if status:
            try:
                chosen = Status(status)
            except ValueError:
                raise ValueError(f"status must be one of {', '.join(Status)}, not {status!r}") from None
        return cls(text.strip()[:200], tuple(sorted({normalize_tag(t) for t in tags if t.strip()})), chosen)

    @property
    def empty(self) -> bool:
        return not (self.text or self.tags or self.status)

    def query_string(self) -> str:
        """The view's own query string (`q=...&tag=...&status=...`): links, the CSV, the action form."""
        pairs = ([("q", self.text)] if self.text else []) + [("tag", t) for t in self.tags] + \
                ([("status", self.status.value)] if self.status else [])
        return urlencode(pairs)

    def where(self, dialect: str):
        """The whole view as one condition on `subscribers` (the CSV reads every row anyway)."""
        clauses = []
        if self.text:
            clauses.append(matches(self.text, dialect))
        if self.tags:
            clauses.append(has_tags(self.tags))
        if self.status is not None:
            clauses.append(has_status(self.status))
        return and_(true(), *clauses)

    def _source(self, conn: Connection, cap: int | None = None):
        """(FROM, the id column to order and page by, WHERE) for pages, counts and chunks.

        With tags, the rows come from one tag's entries in subscriber order, on the (tag,
        subscriber_id) index (0008_tag_order), joined to their subscribers: a page or a capped count
        reads as many entries as it needs. The tag chosen is the rarest (each counted up to
        DRIVER_CAP from the index), unless a bounced or complained filter is rarer still, whose
        partial index then leads. The other filters are checked on the rows found.

        `cap`: the caller reads no more than this many rows; when the text is the only filter, its
        index may stop there (subscribers/search.py)."""
        dialect = conn.dialect.name
        alone = cap if not self.tags and self.status is None else None
        clauses = [matches(self.text, dialect, alone)] if self.text else []
        if self.status is not None:
            clauses.append(has_status(self.status))
        if not self.tags:
            return subscribers, subscribers.c.id, and_(true(), *clauses)
        sizes = {tag: _capped(conn, select(subscriber_tags.c.subscriber_id).where(subscriber_tags.c.tag == tag))
                 for tag in self.tags}
        lead = min(self.tags, key=lambda tag: (sizes[tag], tag))
        if self.status in GLOBAL_STATUSES and _capped(conn, select(subscribers.c.id).where(
                subscribers.c.global_status == self.status.value)) < sizes[lead]:
            return subscribers, subscribers.c.id, and_(has_tags(self.tags), *clauses)
        by_tag = subscriber_tags.alias("by_tag")
        rest = tuple(tag for tag in self.tags if tag != lead)
        return (by_tag.join(subscribers, subscribers.c.id == by_tag.c.subscriber_id), by_tag.c.subscriber_id,
                and_(by_tag.c.tag == lead, has_tags(rest), *clauses))

    @property
    def by_address(self) -> bool:
        """A text search is shown by address; the rest by id."""
        return bool(self.text)

    def page(self, conn: Connection, *, after: int | None = None, before: int | None = None,
             limit: int = PAGE) -> tuple[list, bool, bool]:
        """(rows of id, email, name, global_status; is there a page before; is there one after).

        By id (keyset, `after`/`before`), except a text search: one page, by address, of the
        first SORTED + 1 matches the indexes find (all of them when no more match, as the capped
        count then says; else "more than 1,000": narrow the search). Sorting every match of
        "ann" at a million subscribers, or finding them all, is what made a search slow. Its rows
        carry `matched`: how many were found, at most SORTED + 1, as count(cap=SORTED) says."""
        columns = (subscribers.c.id, subscribers.c.email, subscribers.c.name, subscribers.c.global_status)
        if self.by_address:
            source, key, where = self._source(conn, SORTED + 1)
            found = select(key).select_from(source).where(where).limit(SORTED + 1)
            query = (select(*columns, func.count().over().label("matched"))   # the capped count, same reading
                     .where(subscribers.c.id.in_(found)).order_by(subscribers.c.email))
            return list(conn.execute(query.limit(limit))), False, False
        source, key, where = self._source(conn)
        query = select(*columns).select_from(source).where(where)
        backwards = before is not None and after is None
        if backwards:
            query = query.where(key < before).order_by(key.desc())
        else:
            query = query.where(key > (after or 0)).order_by(key)
        rows = list(conn.execute(query.limit(limit + 1)))
        more = len(rows) > limit
        rows = rows[:limit]
        if backwards:
            rows.reverse()
            return rows, more, True
        return rows, bool(after), more

    def count(self, conn: Connection, cap: int | None = None) -> int:
        """How many match; with `cap`, stops counting past it (returns at most cap + 1)."""
        source, key, where = self._source(conn, None if cap is None else cap + 1)
        ids = select(key).select_from(source).where(where)
        if cap is not None:
            ids = ids.limit(cap + 1)
        return conn.execute(select(func.count()).select_from(ids.subquery())).scalar_one()

    def chunk(self, conn: Connection, after: int = 0, size: int = CHUNK) -> list[int]:
        """The next `size` matching ids after `after`, in id order."""
        source, key, where = self._source(conn)
        return list(conn.execute(select(key).select_from(source).where(where, key > after)
                                 .order_by(key).limit(size)).scalars())

    def chunks(self, conn: Connection, size: int = CHUNK) -> Iterator[list[int]]:
        after = 0
        while ids := self.chunk(conn, after, size):
            yield ids
            after = ids[-1]
