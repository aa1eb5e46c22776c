"""A change to a reader -> an event in the outbox table, in the change's own transaction.

    emit(conn, "send.started", data={...})                       # mailer's sends
    from_history(conn, [(sid, list_id, action, old, new, source), ...])   # store.record, the bulk paths

The store writes a history row for every change; the same writers call `from_history`, which
keeps the changes other systems hear of (docs/api.md, "Outgoing webhooks"):

| history | event |
|---|---|
| subscribe (a new membership) | subscriber.created |
| confirm; status unconfirmed -> active | subscriber.confirmed |
| status -> unsubscribed | subscriber.unsubscribed |
| status -> bounced / complained | subscriber.bounced / subscriber.complained |
| forget (store.forget, many.forget_many) | subscriber.forgotten, without the address (`forgotten`) |

`forgotten` also empties the address of every earlier event of that reader, delivered or not.

Imports (subscribers/importer.py, pg_copy.py) write no events: one import is one act, not
thousands of sign-ups. The store knows nothing of who listens; mailer/notify/ delivers.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence

from sqlalchemy import Boolean, Connection, String, insert, literal, select, update

from subscribers.models import Action, Json, Status, UtcDateTime, lists, outbox, subscribers, utcnow

SUBSCRIBER_EVENTS = ("subscriber.created", "subscriber.confirmed", "subscriber.unsubscribed", "subscriber.bounced",
                     "subscriber.complained", "subscriber.forgotten")
SEND_EVENTS = ("send.started", "send.finished")
EVENTS = SUBSCRIBER_EVENTS + SEND_EVENTS
BY_STATUS = {Status.UNSUBSCRIBED.value: "subscriber.unsubscribed", "bounced": "subscriber.bounced",
             "complained": "subscriber.complained"}


def new_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def event_for(action: str, old: str | None, new: str | None) -> str | None:
    """The event a history row means, or None (a rename, a tag, a lifted suppression ...)."""
    if action == Action.SUBSCRIBE:
        return "subscriber.created"
    if action == Action.CONFIRM:
        return "subscriber.confirmed"
    if action == Action.STATUS and new is not None:
        if new == Status.ACTIVE.value and old == Status.UNCONFIRMED.value:
            return "subscriber.confirmed"
        return BY_STATUS.get(new)
    return None


def from_history(conn: Connection, rows: Iterable[Sequence]) -> int:
    """An event for each (subscriber_id, list_id, action, old, new, source) that means one; how many."""
    wanted = [(sid, lid, kind, old, new, source) for sid, lid, action, old, new, source in rows
              if sid is not None and (kind := event_for(str(action), old, new))]
    if not wanted:
        return 0
    if len(wanted) == 1:   # one change (store.record): one statement, the address and list read in it
        _one(conn, *wanted[0])
        return 1
    emails = dict(conn.execute(select(subscribers.c.id, subscribers.c.email)
                               .where(subscribers.c.id.in_({w[0] for w in wanted}))).all())
    list_ids = {w[1] for w in wanted if w[1] is not None}
    names = dict(conn.execute(select(lists.c.id, lists.c.name).where(lists.c.id.in_(list_ids))).all()) \
        if list_ids else {}
    now = utcnow()
    conn.execute(insert(outbox), [
        {"event_id": new_id(), "type": kind, "at": now, "subscriber_id": sid, "email": emails.get(sid),
         "list_name": names.get(lid), "fanned_out": False,
         "data": {"status": new, "previous_status": old, "source": source}}
        for sid, lid, kind, old, new, source in wanted])
    return len(wanted)


def _one(conn: Connection, sid: int, lid: int | None, kind: str, old, new, source) -> None:
    list_name = select(lists.c.name).where(lists.c.id == lid).scalar_subquery() if lid is not None \
        else literal(None, String)
    row = select(literal(new_id()), literal(kind), literal(utcnow(), UtcDateTime), subscribers.c.id,
                 subscribers.c.email, list_name,
                 literal({"status": new, "previous_status": old, "source": source}, Json), literal(False, Boolean)
                 ).where(subscribers.c.id == sid)
    conn.execute(insert(outbox).from_select(
        ["event_id", "type", "at", "subscriber_id", "email", "list_name", "data", "fanned_out"], row))


def emit(conn: Connection, kind: str, *, data: dict, subscriber_id: int | None = None, email: str | None = None,
         list_name: str | None = None) -> str:
    """One event (a send's, or a forgotten reader's); its id."""
    event_id = new_id()
    conn.execute(insert(outbox).values(event_id=event_id, type=kind, at=utcnow(), subscriber_id=subscriber_id,
                                       email=email, list_name=list_name, data=data, fanned_out=False))
    return event_id


def forgotten(conn: Connection, subscriber_ids: Iterable[int], source: str) -> None:
    """A forgotten reader: their earlier events lose the address, and one event says so, without it."""
    ids = list(subscriber_ids)
    if not ids:
        return
    conn.execute(update(outbox).where(outbox.c.subscriber_id.in_(ids)).values(email=None))
    now = utcnow()
    conn.execute(insert(outbox), [{"event_id": new_id(), "type": "subscriber.forgotten", "at": now,
                                   "subscriber_id": sid, "email": None, "list_name": None, "fanned_out": False,
                                   "data": {"source": source}} for sid in ids])
