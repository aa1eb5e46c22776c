"""Bounce reports we could not tie to a message we sent (docs/bounces.md, "Which report to trust").

The bounce address is public: anyone can mail it a DSN or a complaint naming anybody. A report
changes a subscriber only when it carries a signed ref that verifies or quotes one of our
Message-IDs that the ledger has for that reader (mailer/events/bounces.py). Every other report
that names someone is kept here, once per message (rescans add nothing), so `mailer report` can
count it; `mailer bounces scan` lists it, addresses included, as it reads it; it changes nobody.

The row says where the message is (its label), what it claims and why it proves nothing, and how
many addresses it names, but not the addresses: they are a stranger's claims about people, some of
them our readers, and a row here would outlive a reader's erasure (`mailer subscribers forget`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, Text, func, select
from sqlalchemy.engine import Connection

from subscribers.models import UtcDateTime

metadata = MetaData()

NAMED = 20          # addresses shown per report in --json: a forged one may name 10,000

unverified_reports = Table(
    "unverified_reports", metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
    Column("message_key", String(64), nullable=False, unique=True),   # BounceReport.key
    Column("label", Text, nullable=False),          # where it was read: a path, mbox:index, imap:FOLDER:UID
    Column("kind", String(16), nullable=False),     # what it claims: hard, soft, blocked, delayed, complaint
    Column("reader", String(64), nullable=False),   # which reader understood it (dsn, arf, flufl:..., exchange)
    Column("why", String(200), nullable=False),     # why it is not trusted
    Column("addresses", Integer, nullable=False),   # how many addresses it names (never which)
    Column("refs", Text, nullable=False),           # the refs it claims, if any, comma-separated
    Column("subject", String(200), nullable=False),
    Column("at", UtcDateTime),                      # its Date
    Column("received_at", UtcDateTime, nullable=False),
)


def record(conn: Connection, rows: Sequence[dict], now: datetime) -> int:
    """Store each report once (by message_key); returns how many were new."""
    if not rows:
        return 0
    keys = sorted({r["message_key"] for r in rows})
    known = set(conn.execute(select(unverified_reports.c.message_key)
                             .where(unverified_reports.c.message_key.in_(keys))).scalars())
    new = list({r["message_key"]: {**r, "received_at": now} for r in rows if r["message_key"] not in known}.values())
    if new:
        conn.execute(unverified_reports.insert(), new)
    return len(new)


def count_since(conn: Connection, since: datetime | None) -> int:
    """Unverified reports received since `since` (all of them when None)."""
    query = select(func.count()).select_from(unverified_reports)
    if since is not None:
        query = query.where(unverified_reports.c.received_at >= since)
    return int(conn.execute(query).scalar() or 0)
