"""Subscriber ids x one admin action -> the changes, in a few set-based statements per chunk.

A bulk action (the admin's "Apply" on a selection, subscribers.selection) runs one of these per
chunk of 1,000 ids, each chunk in its own transaction. Each does exactly what the one-subscriber
call in store.py / tags.py does, history rows included, and is idempotent: run again on the same
ids it changes nothing, so an interrupted action is finished by applying it again. Each returns
the ids it changed (the caller writes one audit entry per id) and, where some are left alone, why.

Consent rules are the store's (docs/admin.md, "Nothing comes back by accident"): `add_many` never
re-adds someone who left that list or is suppressed (bounced, complained, forgotten); that takes
the one-subscriber Resubscribe, where the admin says the person asked.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import Connection, delete, insert, select, update

from subscribers import outbox
from subscribers.bulk import Bulk
from subscribers.models import (
    Action,
    ConsentSource,
    Status,
    forgotten,
    history,
    memberships,
    signup_requests,
    subscriber_tags,
    subscribers,
    utcnow,
)
from subscribers.tags import normalize_tags
from subscribers.tokens import forget_hash


@dataclass
class Changed:
    ids: list[int] = field(default_factory=list)       # changed, in id order
    already: int = 0                                    # had it already: nothing to do
    left_alone: int = 0                                 # refused by the consent rules


HISTORY = ["subscriber_id", "list_id", "action", "old_status", "new_status", "source", "detail"]


def _history(conn: Connection, rows: list[tuple], at) -> None:
    """History rows in one statement, values handed straight to the driver (subscribers/bulk.py:
    SQLAlchemy's per-value processing of 1,000 rows cost more than writing them)."""
    if rows:
        bulk = Bulk(conn)
        bulk.insert(history, HISTORY, rows, fixed={"at": bulk.time(at)})
        outbox.from_history(conn, (row[:6] for row in rows))   # the events other systems hear of


def _row(sid: int | None, list_id: int | None, action: Action, source: str, *, old=None, new=None,
         detail=None) -> tuple:
    return (sid, list_id, str(action), old, new, source[:64],
            None if detail is None else json.dumps(detail, ensure_ascii=False))


def tag_many(conn: Connection, ids: list[int], tags: Iterable[str], source: str) -> Changed:
    """Give every subscriber in `ids` these tags (ids no longer stored, forgotten since the page
    was shown, are passed over)."""
    wanted = normalize_tags(tags)
    ids = list(conn.execute(select(subscribers.c.id).where(subscribers.c.id.in_(ids)).order_by(subscribers.c.id))
               .scalars())
    have: dict[int, set[str]] = {}
    for sid, tag in conn.execute(select(subscriber_tags.c.subscriber_id, subscriber_tags.c.tag).where(
            subscriber_tags.c.subscriber_id.in_(ids), subscriber_tags.c.tag.in_(wanted))):
        have.setdefault(sid, set()).add(tag)
    now, out, pairs, log = utcnow(), Changed(), [], []
    for sid in ids:
        new = [t for t in wanted if t not in have.get(sid, ())]
        if not new:
            out.already += 1
            continue
        pairs += [(sid, t) for t in new]
        log.append(_row(sid, None, Action.UPDATE, source, detail={"fields": ["tags"], "added": new}))
        out.ids.append(sid)
    Bulk(conn).insert(subscriber_tags, ["subscriber_id", "tag"], pairs)
    _history(conn, log, now)
    return out


def untag_many(conn: Connection, ids: list[int], tags: Iterable[str], source: str) -> Changed:
    """Take these tags away from every subscriber in `ids`."""
    wanted = normalize_tags(tags)
    had: dict[int, list[str]] = {}
    for sid, tag in conn.execute(select(subscriber_tags.c.subscriber_id, subscriber_tags.c.tag).where(
            subscriber_tags.c.subscriber_id.in_(ids), subscriber_tags.c.tag.in_(wanted))
            .order_by(subscriber_tags.c.subscriber_id, subscriber_tags.c.tag)):
        had.setdefault(sid, []).append(tag)
    out = Changed(ids=sorted(had), already=len(set(ids)) - len(had))
    if had:
        conn.execute(delete(subscriber_tags).where(subscriber_tags.c.subscriber_id.in_(out.ids),
                                                   subscriber_tags.c.tag.in_(wanted)))
        now = utcnow()
        _history(conn, [_row(sid, None, Action.UPDATE, source, detail={"fields": ["tags"], "removed": gone})
                         for sid, gone in sorted(had.items())], now)
    return out


def unsubscribe_many(conn: Connection, ids: list[int], list_id: int | None, source: str) -> Changed:
    """Unsubscribe every subscriber in `ids` from one list (every list: `list_id` None)."""
    where = [memberships.c.subscriber_id.in_(ids), memberships.c.status != Status.UNSUBSCRIBED.value]
    if list_id is not None:
        where.append(memberships.c.list_id == list_id)
    rows = conn.execute(select(memberships.c.id, memberships.c.subscriber_id, memberships.c.list_id,
                               memberships.c.status).where(*where).order_by(memberships.c.subscriber_id)).all()
    changed = sorted({r.subscriber_id for r in rows})
    if rows:
        now = utcnow()
        conn.execute(update(memberships).where(memberships.c.id.in_([r.id for r in rows]))
                     .values(status=Status.UNSUBSCRIBED.value, updated_at=now))
        _history(conn, [_row(r.subscriber_id, r.list_id, Action.STATUS, source, old=r.status,
                             new=Status.UNSUBSCRIBED.value) for r in rows], now)
    return Changed(ids=changed, already=len(set(ids)) - len(changed))


def add_many(conn: Connection, ids: list[int], list_id: int, source: str, *, secret: str | None = None) -> Changed:
    """Subscribe every subscriber in `ids` to a list, active, with the admin's consent record.
    Left alone: those on it already (any status but unsubscribed: `already`), those who left it,
    and the suppressed (bounced or complained anywhere, or forgotten)."""
    rows = conn.execute(select(subscribers.c.id, subscribers.c.email, subscribers.c.global_status)
                        .where(subscribers.c.id.in_(ids))).all()
    on = dict(conn.execute(select(memberships.c.subscriber_id, memberships.c.status).where(
        memberships.c.subscriber_id.in_(ids), memberships.c.list_id == list_id)).all())
    hashes = _forgotten_among(conn, rows, secret)
    out, now, joins = Changed(), utcnow(), []
    for row in sorted(rows):
        status = on.get(row.id)
        if row.global_status or row.id in hashes or status == Status.UNSUBSCRIBED.value:
            out.left_alone += 1
        elif status is not None:
            out.already += 1
        else:
            out.ids.append(row.id)
            joins.append({"list_id": list_id, "subscriber_id": row.id, "status": Status.ACTIVE.value,
                          "created_at": now, "updated_at": now, "consent_at": now,
                          "consent_source": ConsentSource.ADMIN.value})
    if joins:
        conn.execute(insert(memberships), joins)
        _history(conn, [_row(sid, list_id, Action.SUBSCRIBE, source, new=Status.ACTIVE.value) for sid in out.ids], now)
    return out


def _forgotten_among(conn: Connection, rows, secret: str | None) -> set[int]:
    """Ids among `rows` whose address has a forget hash (rows from before every door checked it)."""
    if not secret or conn.execute(select(forgotten.c.id).limit(1)).first() is None:
        return set()
    by_hash = {forget_hash(secret, row.email): row.id for row in rows}
    found = conn.execute(select(forgotten.c.email_hash).where(forgotten.c.email_hash.in_(list(by_hash)))).scalars()
    return {by_hash[h] for h in found}


def forget_many(conn: Connection, ids: list[int], secret: str, source: str) -> Changed:
    """GDPR erasure of every subscriber in `ids`, as store.forget does for one: only each
    address's keyed hash stays; their history rows lose the id and every detail."""
    rows = conn.execute(select(subscribers.c.id, subscribers.c.email).where(subscribers.c.id.in_(ids))
                        .order_by(subscribers.c.id)).all()
    if not rows:
        return Changed()
    now = utcnow()
    digests = [forget_hash(secret, row.email) for row in rows]
    known = set(conn.execute(select(forgotten.c.email_hash).where(forgotten.c.email_hash.in_(digests))).scalars())
    if known:
        conn.execute(update(forgotten).where(forgotten.c.email_hash.in_(known)).values(at=now))
    fresh = [{"email_hash": d, "at": now} for d in digests if d not in known]
    if fresh:
        conn.execute(insert(forgotten), fresh)
    done = [row.id for row in rows]
    conn.execute(delete(signup_requests).where(signup_requests.c.address_hash.in_(digests)))
    conn.execute(update(history).where(history.c.subscriber_id.in_(done)).values(subscriber_id=None, detail=None))
    conn.execute(delete(subscriber_tags).where(subscriber_tags.c.subscriber_id.in_(done)))
    conn.execute(delete(memberships).where(memberships.c.subscriber_id.in_(done)))
    conn.execute(delete(subscribers).where(subscribers.c.id.in_(done)))
    _history(conn, [_row(None, None, Action.FORGET, source) for _ in done], now)
    outbox.forgotten(conn, done, source)
    return Changed(ids=done)
