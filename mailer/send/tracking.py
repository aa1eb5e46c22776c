"""Stage 5, tracking: the links stored with a send, and what readers' requests for them add up to.

    plan = track_send(conn, settings-derived signer, send_id, issue links, ...)   # at each run's start
    record(conn, decided)             # the web's recorder: a batch of classified requests
    purge(conn, keep_days)            # who clicked, older than [tracking] keep_days, goes

Tables: `send_links` (the issue's links as the send stored them, each with its counts of people and
machine requests), `send_tracking` (per send: people who clicked, machine clicks, opens, machine
opens) and `tracking_hits` (one row per person and link they clicked, or per copy opened: the only
place a click can name a reader, and only in "reader" mode). Counts are kept apart from the hits
so that deleting hits (forget, keep_days) leaves every figure as it was. docs/tracking.md.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    bindparam,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection

from mailer.compose.tracking import Link
from mailer.send.ledger import metadata, sends
from subscribers.bulk import Bulk
from subscribers.models import UtcDateTime, subscribers, utcnow


class Kind(enum.StrEnum):
    CLICK = "click"
    OPEN = "open"


send_links = Table(
    "send_links", metadata,
    Column("send_id", Integer, ForeignKey(sends.c.id, ondelete="CASCADE"), primary_key=True),
    Column("idx", Integer, primary_key=True, autoincrement=False),   # the index a link's token names
    Column("url", Text, nullable=False),
    Column("text", Text, nullable=False, default=""),               # the words it is written under
    Column("people", Integer, nullable=False, default=0),           # distinct copies clicked by a person
    Column("machine", Integer, nullable=False, default=0),          # requests counted as machines'
)

send_tracking = Table(
    "send_tracking", metadata,
    Column("send_id", Integer, ForeignKey(sends.c.id, ondelete="CASCADE"), primary_key=True),
    Column("clicks", Integer, nullable=False, default=0),           # distinct copies with a person's click
    Column("machine_clicks", Integer, nullable=False, default=0),   # requests counted as machines'
    Column("opens", Integer, nullable=False, default=0),            # distinct copies opened (not by a proxy)
    Column("machine_opens", Integer, nullable=False, default=0),
)

tracking_hits = Table(
    "tracking_hits", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("send_id", Integer, ForeignKey(sends.c.id, ondelete="CASCADE"), nullable=False),
    Column("kind", String(8), nullable=False),                      # a Kind
    Column("link", Integer),                                        # NULL for an open
    Column("copy", String(20), nullable=False),                     # "r<subscriber>" or "a<random>"
    # "reader" mode only; the row goes with its subscriber (forget)
    Column("subscriber_id", Integer, ForeignKey(subscribers.c.id, ondelete="CASCADE")),
    Column("at", UtcDateTime, nullable=False),
    Index("ix_tracking_hits_send_id_copy", "send_id", "copy"),
    Index("ix_tracking_hits_at", "at"),
    Index("ix_tracking_hits_subscriber_id", "subscriber_id"),
)


class Decided(NamedTuple):
    """One request, classified: what `record` writes."""
    kind: Kind
    send_id: int
    link: int | None
    copy: str                      # "r<subscriber>" or "a<random>"
    subscriber_id: int | None      # "reader" mode only
    at: datetime                   # aware
    machine: str | None            # why it is a machine's (mailer/events/clicks.py), None: a person


HIT_COLUMNS = ("send_id", "kind", "link", "copy", "subscriber_id", "at")


def store_links(conn: Connection, send_id: int, links: Sequence[Link]) -> dict[str, int]:
    """The send's links (URL -> index), the ones not stored yet added after the others: a resumed
    send keeps the indexes its first run mailed, even if the issue changed in between."""
    stored = dict(conn.execute(select(send_links.c.url, send_links.c.idx)
                               .where(send_links.c.send_id == send_id)).all())
    new = [link for link in links if link.url not in stored]
    start = max(stored.values(), default=-1) + 1
    if new:
        conn.execute(insert(send_links), [{"send_id": send_id, "idx": start + i, "url": link.url,
                                           "text": link.text, "people": 0, "machine": 0}
                                          for i, link in enumerate(new)])
        stored.update({link.url: start + i for i, link in enumerate(new)})
    if conn.execute(select(send_tracking.c.send_id).where(send_tracking.c.send_id == send_id)).first() is None:
        conn.execute(insert(send_tracking).values(send_id=send_id, clicks=0, machine_clicks=0, opens=0,
                                                  machine_opens=0))
    return stored


def links_of(conn: Connection, send_id: int) -> dict[int, str]:
    """index -> URL of every link stored with the send (empty: not a tracked send)."""
    return dict(conn.execute(select(send_links.c.idx, send_links.c.url)
                             .where(send_links.c.send_id == send_id)).all())


def record(conn: Connection, decided: Sequence[Decided]) -> int:
    """Add a batch of classified requests to the counts, and each person's first click on a link
    (first open of a copy) to the hits. A reader who has turned tracking off since their copy went
    is left out altogether. Returns how many requests were counted."""
    decided = _consenting(conn, _tracked(conn, decided))
    people = [d for d in decided if d.machine is None]
    seen = _seen(conn, people)
    rows: list[tuple] = []
    bulk = Bulk(conn)
    link_people: dict[tuple, int] = {}
    copies: dict[tuple, int] = {}
    for d in people:
        key = (d.send_id, d.kind, d.copy)
        if (*key, d.link) in seen:
            continue
        seen.add((*key, d.link))
        rows.append((d.send_id, d.kind.value, d.link, d.copy, d.subscriber_id, bulk.time(d.at)))
        if d.kind is Kind.CLICK:
            link_people[d.send_id, d.link] = link_people.get((d.send_id, d.link), 0) + 1
        if key not in seen:
            seen.add(key)
            copies[d.send_id, d.kind] = copies.get((d.send_id, d.kind), 0) + 1
    if rows:
        # straight to the driver (subscribers/bulk.py): SQLAlchemy's per-row work was most of what a
        # batch cost the web's recorder thread, beside the event loop
        bulk.insert(tracking_hits, HIT_COLUMNS, rows)
    machine_links: dict[tuple, int] = {}
    machine_sends: dict[tuple, int] = {}
    for d in decided:
        if d.machine is not None:
            machine_sends[d.send_id, d.kind] = machine_sends.get((d.send_id, d.kind), 0) + 1
            if d.kind is Kind.CLICK:
                machine_links[d.send_id, d.link] = machine_links.get((d.send_id, d.link), 0) + 1
    _add_to_links(conn, link_people, machine_links)
    _add_to_sends(conn, copies, machine_sends)
    return len(decided)


def _tracked(conn: Connection, decided: Sequence[Decided]) -> list[Decided]:
    """Only requests for sends that are still there (a token outlives a deleted send)."""
    ids = {d.send_id for d in decided}
    known = set(conn.execute(select(send_tracking.c.send_id).where(send_tracking.c.send_id.in_(ids))).scalars())
    return [d for d in decided if d.send_id in known]


def _consenting(conn: Connection, decided: Sequence[Decided]) -> list[Decided]:
    """Leave out the named readers who have turned tracking off, or are gone (forget)."""
    ids = {d.subscriber_id for d in decided if d.subscriber_id is not None}
    if not ids:
        return list(decided)
    willing = set(conn.execute(select(subscribers.c.id).where(subscribers.c.id.in_(ids),
                                                              subscribers.c.no_tracking.isnot(True))).scalars())
    return [d for d in decided if d.subscriber_id is None or d.subscriber_id in willing]


def _seen(conn: Connection, people: Sequence[Decided]) -> set:
    """(send, kind, copy, link) already in the hits for these copies, and (send, kind, copy) for
    copies with any hit of that kind. One query per send (a batch is nearly always one send's):
    `copy IN (...)` binds half the values a (send, copy) pair list would."""
    copies: dict[int, set[str]] = {}
    for d in people:
        copies.setdefault(d.send_id, set()).add(d.copy)
    seen: set = set()
    for send_id, theirs in copies.items():
        found = conn.execute(select(tracking_hits.c.kind, tracking_hits.c.copy, tracking_hits.c.link)
                             .where(tracking_hits.c.send_id == send_id, tracking_hits.c.copy.in_(theirs)))
        for kind, copy, link in found:
            seen.add((send_id, Kind(kind), copy, link))
            seen.add((send_id, Kind(kind), copy))
    return seen


_ADD_LINK = (update(send_links)
             .where(send_links.c.send_id == bindparam("b_send"), send_links.c.idx == bindparam("b_idx"))
             .values(people=send_links.c.people + bindparam("b_people"),
                     machine=send_links.c.machine + bindparam("b_machine")))


def _add_to_links(conn: Connection, people: dict, machine: dict) -> None:
    keys = set(people) | set(machine)
    if keys:
        conn.execute(_ADD_LINK, [{"b_send": s, "b_idx": i, "b_people": people.get((s, i), 0),
                                  "b_machine": machine.get((s, i), 0)} for s, i in sorted(keys)])


def _add_to_sends(conn: Connection, people: dict, machine: dict) -> None:
    for send_id in sorted({s for s, _ in people} | {s for s, _ in machine}):
        t = send_tracking.c
        conn.execute(update(send_tracking).where(t.send_id == send_id).values(
            clicks=t.clicks + people.get((send_id, Kind.CLICK), 0),
            machine_clicks=t.machine_clicks + machine.get((send_id, Kind.CLICK), 0),
            opens=t.opens + people.get((send_id, Kind.OPEN), 0),
            machine_opens=t.machine_opens + machine.get((send_id, Kind.OPEN), 0)))


def purge(conn: Connection, keep_days: int, at=None) -> int:
    """Delete the hits (who clicked or opened) older than keep_days; the counts stay."""
    cutoff = (at or utcnow()) - timedelta(days=keep_days)
    return conn.execute(delete(tracking_hits).where(tracking_hits.c.at < cutoff)).rowcount


def hits_of(conn: Connection, send_ids: Iterable[int]) -> list:
    """Every stored hit of these sends (kind, link, copy, subscriber_id, at), oldest first."""
    return list(conn.execute(select(tracking_hits.c.kind, tracking_hits.c.link, tracking_hits.c.copy,
                                    tracking_hits.c.subscriber_id, tracking_hits.c.at)
                             .where(tracking_hits.c.send_id.in_(list(send_ids))).order_by(tracking_hits.c.id)).all())
