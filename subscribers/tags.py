"""Text -> tags; (subscriber, tags) -> stored tags (the filter a segmented send uses: queries.py).

A tag is a short label an admin gives subscribers ("press", "donor 2024"): one line, compared
without regard to case or surrounding space, at most 64 characters, no commas (a CSV cell holds
several, comma-separated, as Mailchimp's TAGS column does: `"VIP","Press"`). Tags live in their own
table (subscriber_tags), so a send can pick "the list's readers with any of these tags" in SQL.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, delete, func, select

from subscribers.errors import InvalidTag
from subscribers.models import Action, subscriber_tags
from subscribers.normalize import clean_text
from subscribers.store import record

MAX_TAG = 64


def normalize_tag(raw: str) -> str:
    """The stored form of a tag (lower case, one line, single spaces); InvalidTag if unusable."""
    tag = clean_text(raw, 1000).strip().strip('"').strip().lower()
    if not tag:
        raise InvalidTag(f"tag {raw!r} is empty")
    if "," in tag:
        raise InvalidTag(f"tag {raw!r} may not contain a comma")
    if len(tag) > MAX_TAG:
        raise InvalidTag(f"tag {raw!r} is longer than {MAX_TAG} characters")
    return tag


def normalize_tags(raws: Iterable[str]) -> tuple[str, ...]:
    """Distinct tags, sorted: the same set always reads the same (a send's segment is its key)."""
    return tuple(sorted({normalize_tag(t) for t in raws}))


def parse_cell(cell: str) -> tuple[str, ...]:
    """A CSV cell of tags: `a, b` or Mailchimp's `"a","b"`; blanks dropped, bad ones skipped."""
    found = set()
    for part in (cell or "").split(","):
        try:
            found.add(normalize_tag(part))
        except InvalidTag:
            continue
    return tuple(sorted(found))


def tags_of(conn: Connection, subscriber_id: int) -> list[str]:
    return list(conn.execute(select(subscriber_tags.c.tag).where(subscriber_tags.c.subscriber_id == subscriber_id)
                             .order_by(subscriber_tags.c.tag)).scalars())


def add_tags(conn: Connection, subscriber_id: int, tags: Iterable[str], source: str = "admin") -> list[str]:
    """Give these tags; returns the ones that are new (a history row names them)."""
    have = set(tags_of(conn, subscriber_id))
    new = [t for t in normalize_tags(tags) if t not in have]
    if new:
        conn.execute(subscriber_tags.insert(), [{"subscriber_id": subscriber_id, "tag": t} for t in new])
        record(conn, subscriber_id, None, Action.UPDATE, source, detail={"fields": ["tags"], "added": new})
    return new


def remove_tags(conn: Connection, subscriber_id: int, tags: Iterable[str], source: str = "admin") -> list[str]:
    """Take these tags away; returns the ones that were there."""
    have = set(tags_of(conn, subscriber_id))
    gone = [t for t in normalize_tags(tags) if t in have]
    if gone:
        conn.execute(delete(subscriber_tags).where(subscriber_tags.c.subscriber_id == subscriber_id,
                                                   subscriber_tags.c.tag.in_(gone)))
        record(conn, subscriber_id, None, Action.UPDATE, source, detail={"fields": ["tags"], "removed": gone})
    return gone


def counts(conn: Connection) -> list[tuple[str, int]]:
    """Every tag in use with how many subscribers have it, by tag (the tag index alone answers)."""
    return [(tag, n) for tag, n in conn.execute(select(subscriber_tags.c.tag, func.count()).group_by(
        subscriber_tags.c.tag).order_by(subscriber_tags.c.tag))]
