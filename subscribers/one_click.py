"""Many one-click unsubscribes -> one statement on PostgreSQL (store.unsubscribe's rules, in bulk).

The web service gathers the one-click POSTs that arrive together into one transaction (a group
commit, mailer/web/context.py). Row by row, each costs four statements (the membership read
twice, its update, its history row), so at 200 requests/s the writer thread spent most of its
time on round trips and SQLAlchemy's per-statement work. Here the whole group is one statement:
the requests travel as arrays, the memberships still subscribed are updated, and each change is
logged as store.unsubscribe logs it. SQLite (one writer, no round trips) keeps the row-by-row path.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import Connection, text

from subscribers import outbox, store
from subscribers.errors import SubscriberNotFound
from subscribers.models import Action, Status, utcnow

# The requests in order; the first of several for one membership is the one logged. The UPDATE
# re-checks the status, so a concurrent unsubscribe of the same membership is logged once.
_MANY = f"""
WITH req AS (
  SELECT * FROM unnest(CAST(:ords AS int[]), CAST(:sids AS int[]), CAST(:lids AS int[]), CAST(:details AS jsonb[]))
    AS r(ord, sid, lid, detail)
), todo AS (
  SELECT DISTINCT ON (r.sid, r.lid) r.sid, r.lid, r.detail, m.status AS old
  FROM req r JOIN memberships m ON m.subscriber_id = r.sid AND m.list_id = r.lid
  WHERE m.status <> '{Status.UNSUBSCRIBED.value}'
  ORDER BY r.sid, r.lid, r.ord
), upd AS (
  UPDATE memberships m SET status = '{Status.UNSUBSCRIBED.value}', updated_at = :now
  FROM todo WHERE m.subscriber_id = todo.sid AND m.list_id = todo.lid AND m.status <> '{Status.UNSUBSCRIBED.value}'
  RETURNING m.subscriber_id, m.list_id
)
INSERT INTO history (subscriber_id, list_id, at, action, old_status, new_status, source, detail)
SELECT todo.sid, todo.lid, :now, '{Action.STATUS.value}', todo.old, '{Status.UNSUBSCRIBED.value}', :source, todo.detail
FROM todo JOIN upd ON upd.subscriber_id = todo.sid AND upd.list_id = todo.lid
RETURNING subscriber_id, list_id, old_status
"""


def unsubscribe_many(conn: Connection, requests: Sequence[tuple[int, int, str | None, str | None]], *,
                     source: str = "web") -> set[tuple[int, int]]:
    """Unsubscribe each (subscriber_id, list_id, ip, user_agent), in the caller's transaction;
    returns the (subscriber_id, list_id) this call changed. Idempotent; a membership that is gone
    (forgotten, list deleted) is skipped, as is one already unsubscribed."""
    if not requests:
        return set()
    if conn.dialect.name != "postgresql":
        changed = set()
        for sid, lid, ip, agent in requests:
            try:
                if store.unsubscribe(conn, sid, lid, source=source, ip=ip, user_agent=agent):
                    changed.add((sid, lid))
            except SubscriberNotFound:
                pass
        return changed
    details = [json.dumps({"ip": ip, "user_agent": agent}) if ip or agent else None for _, _, ip, agent in requests]
    done = conn.execute(text(_MANY), {
        "ords": list(range(len(requests))), "sids": [r[0] for r in requests], "lids": [r[1] for r in requests],
        "details": details, "now": utcnow(), "source": source[:64]}).all()
    outbox.from_history(conn, [(sid, lid, Action.STATUS.value, old, Status.UNSUBSCRIBED.value, source[:64])
                               for sid, lid, old in done])
    return {(sid, lid) for sid, lid, _ in done}
