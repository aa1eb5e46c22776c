"""The schedule's own tables: each issue's state, and the slots the scheduler has decided.

    draft --schedule--> scheduled --slot (claim)--> sending --> sent
      ^                    |   \\                       |    \\--> failed (reason; schedule again resumes)
      +---- unschedule ----+    +--> failed (missed its slot beyond the grace time)

An issue without a row is a draft. Every transition is one conditional UPDATE (`... WHERE state =
'scheduled'`), so of two schedulers that reach the same issue at once exactly one sees its row
change (rowcount 1) and goes on; the other sees 0 and leaves it. `schedule_slots` holds one row per
slot decided (sent, empty, missed): its primary key makes the editors' notice for a slot go once.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine, Row
from sqlalchemy.exc import IntegrityError

from mailer.send.ledger import metadata, sends
from subscribers.models import UtcDateTime


class IssueState(enum.StrEnum):
    DRAFT = "draft"
    SCHEDULED = "scheduled"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"


issue_states = Table(
    "issue_states", metadata,
    Column("issue", String(64), primary_key=True),          # the slug, as in the ledger's sends.issue
    Column("state", String(16), nullable=False),
    Column("source", Text, nullable=False),                  # the issue file, relative to the config folder
    Column("subject", String(998), nullable=False),
    Column("list_name", String(64), nullable=False),
    Column("send_at", UtcDateTime),
    Column("pinned", Boolean, nullable=False, default=False),   # --at: not a slot of [schedule]
    Column("proof_sent_at", UtcDateTime),
    Column("send_id", Integer, ForeignKey(sends.c.id, ondelete="SET NULL")),
    Column("runner", String(300)),                           # host:pid of the process sending it
    Column("reason", Text),                                  # why it failed, or what is pending
    Column("updated_at", UtcDateTime, nullable=False),
    CheckConstraint("state IN ('draft', 'scheduled', 'sending', 'sent', 'failed')"),
    Index("ix_issue_states_state_send_at", "state", "send_at"),
)

schedule_slots = Table(
    "schedule_slots", metadata,
    Column("slot_at", UtcDateTime, primary_key=True),
    Column("outcome", String(32), nullable=False),          # "issue 2024-12", "empty", ...
    Column("runner", String(300), nullable=False),
    Column("decided_at", UtcDateTime, nullable=False),
)

# SQLite has no advisory lock: one scheduler at a time there holds this lease (`take_lease`), taken
# and renewed atomically with the database's clock; a second `mailer schedule run` is refused.
scheduler_lease = Table(
    "scheduler_lease", metadata,
    Column("name", String(32), primary_key=True),            # "scheduler": one row
    Column("runner", String(300), nullable=False),
    Column("lease_until", UtcDateTime, nullable=False),
)

_S = IssueState


def take_lease(conn: Connection, runner: str, now: datetime, seconds: float) -> str | None:
    """Take or renew the one scheduler's lease; returns None when it is ours now, else the live
    holder. One conditional UPDATE (free, expired or already ours), or the first INSERT."""
    until = now + timedelta(seconds=seconds)
    took = conn.execute(update(scheduler_lease).where(
        scheduler_lease.c.name == "scheduler",
        or_(scheduler_lease.c.runner == runner, scheduler_lease.c.lease_until <= now))
        .values(runner=runner, lease_until=until)).rowcount
    if took:
        return None
    holder = conn.execute(select(scheduler_lease.c.runner).where(scheduler_lease.c.name == "scheduler")).scalar()
    if holder is not None:
        return holder
    try:
        with conn.begin_nested():
            conn.execute(insert(scheduler_lease).values(name="scheduler", runner=runner, lease_until=until))
        return None
    except IntegrityError:   # another scheduler inserted it first
        return conn.execute(select(scheduler_lease.c.runner)).scalar() or "another scheduler"


def drop_lease(conn: Connection, runner: str) -> None:
    conn.execute(scheduler_lease.delete().where(scheduler_lease.c.runner == runner))


def find(conn: Connection, issue: str):
    return conn.execute(select(issue_states).where(issue_states.c.issue == issue)).first()


def every(conn: Connection) -> Sequence[Row]:
    return conn.execute(select(issue_states).order_by(issue_states.c.issue)).all()


def in_state(conn: Connection, state: IssueState) -> Sequence[Row]:
    return conn.execute(select(issue_states).where(issue_states.c.state == state.value)
                        .order_by(issue_states.c.send_at, issue_states.c.issue)).all()


def at(conn: Connection, when: datetime) -> Sequence[Row]:
    """Issues, in any state but draft, whose send time is `when`."""
    return conn.execute(select(issue_states).where(issue_states.c.send_at == when,
                                                   issue_states.c.state != _S.DRAFT.value)).all()


def put_scheduled(conn: Connection, *, issue: str, source: str, subject: str, list_name: str, send_at: datetime,
                  pinned: bool, now: datetime) -> None:
    """Insert or move the row to `scheduled` (the caller has checked that its state allows it)."""
    values = dict(state=_S.SCHEDULED.value, source=source, subject=subject[:998], list_name=list_name,
                  send_at=send_at, pinned=pinned, proof_sent_at=None, runner=None, reason=None, updated_at=now)
    if find(conn, issue) is None:
        conn.execute(insert(issue_states).values(issue=issue, **values))
    else:
        conn.execute(update(issue_states).where(issue_states.c.issue == issue).values(**values))


def to_draft(conn: Connection, issue: str, now: datetime) -> bool:
    return _move(conn, issue, (_S.SCHEDULED, _S.FAILED), state=_S.DRAFT.value, send_at=None, reason=None,
                 proof_sent_at=None, updated_at=now)


def claim(conn: Connection, issue: str, send_at: datetime, runner: str, now: datetime) -> bool:
    """scheduled -> sending for this runner, if it is still scheduled for `send_at`."""
    return conn.execute(update(issue_states).where(
        issue_states.c.issue == issue, issue_states.c.state == _S.SCHEDULED.value, issue_states.c.send_at == send_at)
        .values(state=_S.SENDING.value, runner=runner, reason=None, updated_at=now)).rowcount == 1


def take_over(conn: Connection, issue: str, old_runner: str | None, runner: str, now: datetime) -> bool:
    """A `sending` issue whose runner died passes to `runner`, if no one else took it first."""
    same = issue_states.c.runner.is_(None) if old_runner is None else issue_states.c.runner == old_runner
    return conn.execute(update(issue_states).where(
        issue_states.c.issue == issue, issue_states.c.state == _S.SENDING.value, same)
        .values(runner=runner, updated_at=now)).rowcount == 1


def settle(conn: Connection, issue: str, runner: str, state: IssueState, reason: str | None, now: datetime,
           send_id: int | None = None) -> None:
    """The runner's outcome: sent, failed, or still sending (released for a later resume)."""
    values: dict[str, object] = dict(state=state.value, runner=None, reason=reason, updated_at=now)
    if send_id is not None:
        values["send_id"] = send_id
    conn.execute(update(issue_states).where(issue_states.c.issue == issue, issue_states.c.runner == runner)
                 .values(**values))


def miss(conn: Connection, issue: str, send_at: datetime, reason: str, now: datetime) -> bool:
    """scheduled -> failed: its slot passed beyond the grace time while no scheduler ran."""
    return conn.execute(update(issue_states).where(
        issue_states.c.issue == issue, issue_states.c.state == _S.SCHEDULED.value, issue_states.c.send_at == send_at)
        .values(state=_S.FAILED.value, reason=reason, updated_at=now)).rowcount == 1


def claim_proof(conn: Connection, issue: str, now: datetime) -> bool:
    return conn.execute(update(issue_states).where(
        issue_states.c.issue == issue, issue_states.c.state == _S.SCHEDULED.value,
        issue_states.c.proof_sent_at.is_(None)).values(proof_sent_at=now)).rowcount == 1


def unclaim_proof(conn: Connection, issue: str) -> None:
    conn.execute(update(issue_states).where(issue_states.c.issue == issue).values(proof_sent_at=None))


def decide_slot(engine: Engine, slot_at: datetime, outcome: str, runner: str, now: datetime) -> bool:
    """Record the decision for a slot; False if another scheduler recorded one first."""
    try:
        with engine.begin() as conn:
            conn.execute(insert(schedule_slots).values(slot_at=slot_at, outcome=outcome, runner=runner,
                                                       decided_at=now))
        return True
    except IntegrityError:
        return False


def _move(conn: Connection, issue: str, sources: tuple, **values) -> bool:
    return conn.execute(update(issue_states).where(
        issue_states.c.issue == issue, issue_states.c.state.in_([s.value for s in sources]))
        .values(**values)).rowcount == 1
