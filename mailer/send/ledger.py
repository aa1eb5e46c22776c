"""The send ledger: one `sends` row per (issue, list), one `deliveries` row per reader.

Every state change is one short transaction, so any process can crash at any point:

    pending --claim--> sending --results--> accepted | deferred | failed
       ^                  |                 (skipped: suppressed since the start, or forgotten)
       +--- rerun --------+  (a batch in flight at a crash or left without an answer: resent or
       ^                     skipped, per on_interrupted)
       +--- due ---------- deferred (next_attempt_at; failed after retry_hours)

The next batch is read (`peek`) and personalized while the current one is on the wire, then
claimed with one atomic `UPDATE ... WHERE id IN (...) AND state = 'pending'` (two workers never
claim the same row: the second one's UPDATE finds it no longer pending) and committed as
`sending` *before* it goes to the backend; results are committed after. A crash in between leaves exactly
that batch `sending`, which the next run names (docs/exactly-once.md). The ledger keeps ids only;
addresses and names are read from the store when a batch is claimed, so suppression is re-checked
when each batch is prepared and `forget` needs nothing from mailer.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import os
import socket
import threading
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import NamedTuple

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    any_,
    bindparam,
    case,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection, Row

from mailer.model import ArchiveCopy, ComposedIssue
from mailer.send.refs import read_ref, sign_ref
from subscribers import outbox
from subscribers.models import Status, UtcDateTime, lists, memberships, subscribers
from subscribers.models import utcnow as now
from subscribers.pg_copy import may_skip_fk_checks

metadata = MetaData()


WELCOME = "welcome"   # the segment of a list's welcome mail (mailer/send/welcome.py); tag segments start "tag:"


class SendStatus(enum.StrEnum):
    SENDING = "sending"            # started, not finished (or its runner died)
    STOPPED = "stopped"            # stopped by an error; a rerun continues
    DONE = "done"                  # nothing pending, sending or deferred is left


class State(enum.StrEnum):
    PENDING = "pending"
    SENDING = "sending"            # claimed (handed to the backend once handed_at is set): outcome not recorded
    ACCEPTED = "accepted"
    DEFERRED = "deferred"          # temporary refusal (SMTP 4xx): retried later
    FAILED = "failed"              # permanent refusal or unusable address
    SKIPPED = "skipped"            # suppressed/forgotten since the start, or an interrupted batch skipped


sends = Table(
    "sends", metadata,
    Column("id", Integer, primary_key=True),
    Column("issue", String(64), nullable=False),
    Column("list_id", Integer, ForeignKey(lists.c.id, ondelete="SET NULL"), nullable=True),
    Column("list_name", String(64), nullable=False),
    Column("subject", String(998), nullable=False),
    Column("backend", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("total", Integer, nullable=False, default=0),
    Column("sent", Integer, nullable=False, default=0),
    Column("failed", Integer, nullable=False, default=0),
    Column("skipped", Integer, nullable=False, default=0),
    Column("batches", Integer, nullable=False, default=0),
    Column("runner", String(300)),
    Column("heartbeat_at", UtcDateTime),
    Column("started_at", UtcDateTime, nullable=False),
    Column("finished_at", UtcDateTime),
    Column("last_error", Text),
    Column("segment", String(500), nullable=False, default="", server_default=""),  # segments.py; "" = whole list
    Column("archive_html", Text),  # the issue as mailed, neutral reader fields: /archive/ISSUE
    Column("archive_text", Text),
    Column("archive_date", Date),  # the issue's date (front matter) and preheader, for the archive pages
    Column("archive_preheader", Text),
    Column("archive", Boolean),   # the issue file's `archive` setting when the send started; NULL: before it existed
    Column("workers", Integer, nullable=False, default=0, server_default="0"),  # > 0: shared by workers (workers.py)
    Column("composed", Text),  # the composed issue (JSON, markers kept) every worker sends: `stored_issue`
    UniqueConstraint("issue", "list_id", "segment"),
    CheckConstraint("status IN ('sending', 'stopped', 'done')"),
)

deliveries = Table(
    "deliveries", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("send_id", Integer, ForeignKey("sends.id", ondelete="CASCADE"), nullable=False),
    Column("subscriber_id", Integer, ForeignKey(subscribers.c.id, ondelete="SET NULL")),
    Column("state", String(16), nullable=False),
    Column("batch", Integer),
    Column("provider_id", String(300)),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text),
    Column("updated_at", UtcDateTime),
    Column("next_attempt_at", UtcDateTime),   # a deferred reader is tried again from then on
    Column("worker", String(300)),            # the worker that claimed it (mailer/send/leases.py)
    Column("handed_at", UtcDateTime),         # when its batch was handed to the backend; None: never left
    UniqueConstraint("send_id", "subscriber_id"),
    # (send_id, id), not (send_id, state, ...): an index on state would be rewritten at every state
    # change, twice per reader, which costs more than scanning a send's rows in id order.
    Index("ix_deliveries_send_id_id", "send_id", "id"),
    postgresql_with={"fillfactor": 25},  # both updates of a reader stay in its page (m0008, docs/postgresql.md)
)

HEARTBEAT_EVERY = 10.0                  # seconds between heartbeats, from a timer thread
HEARTBEAT_STALE = timedelta(minutes=2)  # a runner whose heartbeat is older is presumed dead


def delivery_ref(send_id: int, subscriber_id: int, key: str | bytes) -> str:
    """The signed opaque ref in X-Mailer-Ref, custom_args `mailer_ref` and the VERP address
    (mailer/send/refs.py: "SEND.SUBSCRIBER.MAC", keyed with the secret key)."""
    return sign_ref(key, send_id, subscriber_id)


def parse_ref(ref: str) -> tuple[int, int] | None:
    """(send_id, subscriber_id) from a delivery ref, signed or not (old "SEND.SUBSCRIBER" refs
    too), or None if it is not one of ours. It does not check the MAC: use mailer.send.refs.read_ref
    with the key wherever the ref alone would decide who is affected."""
    found = read_ref(ref)
    return (found.send_id, found.subscriber_id) if found else None


def this_runner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Reader(NamedTuple):  # a tuple: a million of them are made per send
    delivery_id: int
    subscriber_id: int | None
    email: str | None
    name: str | None
    attempts: int                  # including the one now being made
    suppressed: str | None         # why this reader must be skipped now, or None
    key: str | None = None         # their membership's token_key, for the unsubscribe link (subscribers/links.py)
    no_tracking: bool = False      # they turned click and open tracking off (docs/tracking.md)


class Mark(NamedTuple):
    """One reader's outcome, written by `mark`."""
    delivery_id: int
    state: str                     # a State value
    provider_id: str | None        # the provider's message id, when it gave one
    error: str | None              # why it was skipped, failed or is in doubt


class Deferral(NamedTuple):
    """A reader refused temporarily, written by `defer`."""
    delivery_id: int
    error: str | None
    next_attempt_at: object        # datetime: when it is tried again


# --- sends ------------------------------------------------------------------------------------

def find_send(conn: Connection, issue: str, list_id: int, segment: str = ""):
    return conn.execute(select(sends).where(sends.c.issue == issue, sends.c.list_id == list_id,
                                            sends.c.segment == segment)).first()


def db_now(conn: Connection) -> dt.datetime:
    """The database server's clock: what leases, heartbeats and the shared rate budget are compared
    with, so a process whose own clock is fast or stepped back judges nobody wrongly (PostgreSQL's
    clock_timestamp(): the time now, not the transaction's start). SQLite lives on one host: its clock."""
    if conn.dialect.name == "postgresql":
        return conn.exec_driver_sql("SELECT clock_timestamp()").scalar_one()
    return now()


def composed_json(issue: ComposedIssue) -> str:
    """The composed issue as stored on its send (`sends.composed`): what every worker sends."""
    data = dataclasses.asdict(issue)
    data["date"] = issue.date.isoformat() if issue.date else None
    return json.dumps(data)


def stored_issue(text: str) -> ComposedIssue:
    data = json.loads(text)
    data["date"] = dt.date.fromisoformat(data["date"]) if data.get("date") else None
    return ComposedIssue(**data)


def create_send(conn: Connection, *, issue: str, list_id: int, list_name: str, subject: str,
                backend: str, recipients, segment: str = "", archive: ArchiveCopy | None = None,
                composed: ComposedIssue | None = None) -> int:
    """The sends row (with the archive copy: html, text, date, preheader, and the composed issue) and one
    pending delivery per reader, fixed now, in one INSERT ... SELECT."""
    stamp = now()
    html, text, date, preheader, listed = archive or (None, None, None, None, None)
    send_id = conn.execute(insert(sends).values(
        issue=issue, list_id=list_id, list_name=list_name, subject=subject[:998], backend=backend, segment=segment,
        status=SendStatus.SENDING.value, started_at=stamp, runner=this_runner(), heartbeat_at=db_now(conn),
        archive_html=html, archive_text=text, archive_date=date, archive_preheader=preheader,
        composed=composed_json(composed) if composed else None,
        archive=listed,
    ).returning(sends.c.id)).scalar_one()
    fk_off = _skip_fk_checks(conn)
    if fk_off:  # the lock each reader's foreign-key check would take, taken in the same statement
        recipients = recipients.with_for_update(read=True, key_share=True, of=subscribers)
    chosen = recipients.subquery()
    # paced sends give each reader a place (mailer/send/pacing.py): the ids follow it
    order = [chosen.c.send_order] if "send_order" in chosen.c else []
    conn.execute(insert(deliveries).from_select(
        ["send_id", "subscriber_id", "state", "attempts"],
        select(literal(send_id), chosen.c.subscriber_id, literal(State.PENDING.value), literal(0)).order_by(*order)))
    if fk_off:
        conn.exec_driver_sql("SET LOCAL session_replication_role = DEFAULT")
    total = conn.execute(select(func.count()).where(deliveries.c.send_id == send_id)).scalar_one()
    conn.execute(update(sends).where(sends.c.id == send_id).values(total=total))
    if conn.dialect.name == "postgresql":
        # Statistics that know the send's rows now: without them a fresh table looks empty and the
        # planner reads every pending reader of the send at each batch (docs/postgresql.md).
        conn.exec_driver_sql("ANALYZE deliveries")
    if segment != WELCOME:   # for the outgoing webhooks (mailer/notify/); a welcome's are not sends of an issue
        outbox.emit(conn, "send.started", list_name=list_name,
                    data={"send_id": send_id, "issue": issue, "segment": segment, "readers": total})
    return send_id


def _skip_fk_checks(conn: Connection) -> bool:
    """On PostgreSQL, where the role may, the readers' rows go in without a foreign-key trigger call
    per row (a third of fixing a million readers): the send's row is this transaction's own, and
    the subscribers are locked FOR KEY SHARE by the INSERT's SELECT, as the checks would have
    locked them one by one, so none can be deleted before the rows naming them commit. The same
    trade as the import's (docs/postgresql.md)."""
    if conn.dialect.name != "postgresql":
        return False
    if not may_skip_fk_checks(conn):
        return False
    conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
    return True


def take_over(conn: Connection, row, backend: str) -> bool:
    """Make the send ours, only if nobody changed its runner, heartbeat or status since we read `row`
    (compare and set: of two runners taking over at once, the second finds the row changed and reads
    it again, now with a live runner). The send's row is locked first, its deliveries after: the
    one lock order of every transaction that changes both (docs/exactly-once.md)."""
    return conn.execute(update(sends).where(
        sends.c.id == row.id, sends.c.status == row.status,
        sends.c.runner.is_(None) if row.runner is None else sends.c.runner == row.runner,
        sends.c.heartbeat_at.is_(None) if row.heartbeat_at is None else sends.c.heartbeat_at == row.heartbeat_at,
    ).values(runner=this_runner(), heartbeat_at=db_now(conn), status=SendStatus.SENDING.value, backend=backend,
             last_error=None)).rowcount == 1


# --- liveness: who runs a send ---------------------------------------------------------------
# A runner stamps sends.heartbeat_at every HEARTBEAT_EVERY seconds from a timer thread
# (`Heartbeat`), also while a batch is on the wire, so the age of that stamp is the one test of
# life, on any host. On the runner's own host a pid that no longer exists proves it dead at once;
# a live pid proves nothing (pids are reused), so it never keeps a stale send blocked.

def heartbeat_age(row, at=None) -> timedelta | None:
    """How long ago the send's runner last gave a sign of life (None: never); `at` is the database's
    clock (`db_now`), which stamped it."""
    return None if row.heartbeat_at is None else (at or now()) - row.heartbeat_at


def runner_alive(row, at=None) -> bool:
    """Is another process still running this send? Judged by heartbeat age everywhere, by the
    database's clock `at` (`db_now`: the one that stamped the heartbeat)."""
    if row.status != SendStatus.SENDING.value or not row.runner or row.runner == this_runner():
        return False
    age = heartbeat_age(row, at)
    if age is None or age >= HEARTBEAT_STALE:
        return False
    return not pid_gone(row.runner)


def pid_gone(runner: str) -> bool:
    """True only when the runner was on this host and its pid is certainly not running."""
    host, _, pid = runner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _zombie(int(pid))


def _zombie(pid: int) -> bool:
    """An exited process not yet reaped (its parent was killed and nothing reaps orphans, as in some
    containers) still answers kill(pid, 0): on Linux, /proc says it is a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rpartition(")")[2].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def heartbeat(conn: Connection, send_id: int) -> bool:
    """Stamp our sign of life; False when the send is no longer ours (taken over)."""
    return conn.execute(update(sends).where(sends.c.id == send_id, sends.c.runner == this_runner())
                        .values(heartbeat_at=db_now(conn))).rowcount == 1


def _beat_for(send_id: int | None) -> Callable[[Connection], bool]:
    if send_id is None:
        raise ValueError("a Heartbeat beats for a send, or calls its own `beat`")
    return lambda conn: heartbeat(conn, send_id)


class Heartbeat:
    """A timer thread keeping sends.heartbeat_at fresh while this process runs the send.

        with Heartbeat(engine, send_id) as beat:   # ... beat.lost: another runner took over
    """

    def __init__(self, engine, send_id: int | None, every: float | None = None, beat=None):
        self.engine, self.send_id = engine, send_id
        self.beat = beat or _beat_for(send_id)  # a worker renews its lease instead
        self.every = HEARTBEAT_EVERY if every is None else every
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{send_id}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                with self.engine.begin() as conn:
                    self.lost = not self.beat(conn)
            except Exception:  # noqa: BLE001 - a busy database: the next beat tries again
                continue
            if self.lost:
                return

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def counts(conn: Connection, send_id: int) -> dict[State, int]:
    rows = conn.execute(select(deliveries.c.state, func.count()).where(deliveries.c.send_id == send_id)
                        .group_by(deliveries.c.state)).all()
    found: dict[str, int] = dict(rows)
    return {s: found.get(s.value, 0) for s in State}


def unfinished(c: dict[State, int]) -> int:
    """Readers of a send's counts still to be sent: pending, in flight or deferred (none: done)."""
    return c[State.PENDING] + c[State.SENDING] + c[State.DEFERRED]


def finish(conn: Connection, send_id: int, status: SendStatus, error: str | None = None, *,
           shared: bool = False) -> tuple[dict[State, int], bool]:
    """Set the send's end state and figures; returns (counts, whether the row was ours to change).

    A runner changes only its own row (`runner = me`): one that was taken over leaves the new
    runner's send as it is. A worker (`shared`) is no runner: it may end only a shared send that is
    still `sending` (its last reader done, or the run stopped for the operator)."""
    c = counts(conn, send_id)
    was = conn.execute(select(sends.c.status, sends.c.issue, sends.c.list_name, sends.c.segment)
                       .where(sends.c.id == send_id)).one()
    mine = (and_(sends.c.workers > 0, sends.c.status == SendStatus.SENDING.value) if shared
            else sends.c.runner == this_runner())
    changed = conn.execute(update(sends).where(sends.c.id == send_id, mine).values(
        status=status.value, sent=c[State.ACCEPTED], failed=c[State.FAILED], skipped=c[State.SKIPPED],
        finished_at=now() if status is SendStatus.DONE else None, last_error=error,
        heartbeat_at=db_now(conn))).rowcount == 1
    if changed and status is SendStatus.DONE and was.status != SendStatus.DONE.value and was.segment != WELCOME:
        outbox.emit(conn, "send.finished", list_name=was.list_name, data={   # once: only the change to done
            "send_id": send_id, "issue": was.issue, "accepted": c[State.ACCEPTED], "failed": c[State.FAILED],
            "skipped": c[State.SKIPPED]})
    return c, changed


# --- batches ----------------------------------------------------------------------------------

def in_flight(conn: Connection, send_id: int) -> Sequence[Row]:
    """(batch, readers) still `sending`: what a crashed run had handed to the backend."""
    return conn.execute(select(deliveries.c.batch, func.count()).where(
        deliveries.c.send_id == send_id, deliveries.c.state == State.SENDING.value)
        .group_by(deliveries.c.batch).order_by(deliveries.c.batch)).all()


def in_flight_batches(conn: Connection, send_id: int, batches: list[int] | None = None) -> list[tuple]:
    """(batch, readers, handed over?) of the send's `sending` readers (of `batches` only, if given)."""
    handed = func.max(case((deliveries.c.handed_at.is_not(None), 1), else_=0))
    q = select(deliveries.c.batch, func.count(), handed).where(
        deliveries.c.send_id == send_id, deliveries.c.state == State.SENDING.value)
    if batches is not None:
        q = q.where(deliveries.c.batch.in_(batches))
    return [(b, n, bool(h)) for b, n, h in conn.execute(q.group_by(deliveries.c.batch).order_by(deliveries.c.batch))]


def settle_in_flight(conn: Connection, send_id: int, resend: bool, batches: list[int] | None = None,
                     why: str = "in flight at a crash") -> int:
    """Readers left `sending` (of `batches`, if given): those never handed to the backend go back to
    pending whatever on_interrupted says (nobody can have them); the rest get on_interrupted."""
    where = [deliveries.c.send_id == send_id, deliveries.c.state == State.SENDING.value]
    if batches is not None:
        where.append(deliveries.c.batch.in_(batches))
    stamp = now()
    back = conn.execute(update(deliveries).where(*where, deliveries.c.handed_at.is_(None))
                        .values(state=State.PENDING.value, worker=None, updated_at=stamp)).rowcount
    values = ({"state": State.PENDING.value, "worker": None, "handed_at": None} if resend else
              {"state": State.SKIPPED.value, "last_error": f"{why}; skipped (on_interrupted = skip)"})
    return back + conn.execute(update(deliveries).where(*where).values(updated_at=stamp, **values)).rowcount


def requeue_due(conn: Connection, send_id: int, at=None) -> int:
    """Deferred readers whose next attempt has come go back to pending."""
    return conn.execute(update(deliveries).where(
        deliveries.c.send_id == send_id, deliveries.c.state == State.DEFERRED.value,
        or_(deliveries.c.next_attempt_at.is_(None), deliveries.c.next_attempt_at <= (at or now())))
        .values(state=State.PENDING.value)).rowcount


def requeue_failed(conn: Connection, send_id: int) -> int:
    """`mailer send --retry-failed`: readers whose delivery failed (refused, or never handed over) go
    back to pending; accepted, in flight (in doubt) and skipped readers are left as they are."""
    return conn.execute(update(deliveries).where(
        deliveries.c.send_id == send_id, deliveries.c.state == State.FAILED.value)
        .values(state=State.PENDING.value, next_attempt_at=None, updated_at=now())).rowcount


def next_due(conn: Connection, send_id: int):
    """When the earliest deferred reader of the send may be tried again (None: none deferred)."""
    return conn.execute(select(func.min(deliveries.c.next_attempt_at)).where(
        deliveries.c.send_id == send_id, deliveries.c.state == State.DEFERRED.value)).scalar()


def defer(conn: Connection, rows: list[Deferral]) -> None:
    """Record the readers refused temporarily, each with its next attempt."""
    if rows:
        stamp = now()
        conn.execute(update(deliveries).where(deliveries.c.id == bindparam("b_id")).values(
            state=State.DEFERRED.value, last_error=bindparam("b_err"), next_attempt_at=bindparam("b_next"),
            updated_at=stamp), [{"b_id": d, "b_err": (e or "")[:2000], "b_next": t} for d, e, t in rows])


def started_at(conn: Connection, send_id: int):
    return conn.execute(select(sends.c.started_at).where(sends.c.id == send_id)).scalar_one()


# --- the archive copy -------------------------------------------------------------------------
# An issue is in the archive once a send of it has started and stored its copy (status sending,
# which a crash leaves as it is; or stopped after a batch went out, which may have reached
# readers) or once a send delivered to anyone (sends from before copies were stored have no copy:
# the web recomposes those from the issue file). Only a send to a
# public list as a whole publishes it (docs/readers.md#what-the-archive-shows): not a private
# list's, not a `--tag` segment's, not one whose list is gone (it may have been private), and not
# when the issue file said `archive = false`. Judged when read, so a list made private later
# takes its issues off the web; the copies stay on the rows. A private or segment send's readers
# get a browser link with a key (mailer.compose.archived.archive_key) that opens its copy
# (`keyed_copy`), unless the file said `archive = false`.

_SENT = or_(sends.c.sent > 0, and_(sends.c.archive_html.is_not(None),
                                   or_(sends.c.status == SendStatus.SENDING.value, sends.c.batches > 0)))
_KEPT = or_(sends.c.archive.is_(None), sends.c.archive)
_PUBLIC = and_(sends.c.segment == "", lists.c.private.is_(False), _KEPT)   # (a welcome's segment: WELCOME)
_VISIBLE = and_(_SENT, _PUBLIC)
_PUBLISHED = sends.join(lists, lists.c.id == sends.c.list_id)


def browser_link_kind(conn: Connection, send_id: int) -> str:
    """What a send's view-in-browser link opens: "public" (/archive/ISSUE), "key" (a private
    list's or a segment's: the page with its key) or "none" (`archive = false`: the archive's index)."""
    row = conn.execute(select(sends.c.archive, sends.c.segment, lists.c.private)
                       .select_from(sends.outerjoin(lists, lists.c.id == sends.c.list_id))
                       .where(sends.c.id == send_id)).one()
    if row.archive is False:
        return "none"
    return "public" if row.segment == "" and row.private is False else "key"


def keyed_copy(conn: Connection, issue: str):
    """The stored copy a browser link with the issue's key opens: any send's that stored one and
    went out, whatever its list, unless the file said `archive = false`; None otherwise."""
    return conn.execute(select(sends.c.subject, sends.c.archive_html, sends.c.archive_text, sends.c.archive_date,
                               sends.c.archive_preheader, sends.c.started_at)
                        .where(sends.c.issue == issue, _SENT, _KEPT, sends.c.archive_html.is_not(None),
                               sends.c.segment != WELCOME)
                        .order_by(sends.c.id)).first()


def archived(conn: Connection) -> list[tuple[str, str, object]]:
    """(issue, subject, started_at) of every issue in the archive, newest sent first, one row each."""
    first = (select(sends.c.issue, func.min(sends.c.id).label("id")).select_from(_PUBLISHED).where(_VISIBLE)
             .group_by(sends.c.issue).subquery())
    return [tuple(r) for r in conn.execute(
        select(sends.c.issue, sends.c.subject, sends.c.started_at).join(first, first.c.id == sends.c.id)
        .order_by(sends.c.started_at.desc(), sends.c.issue.desc())).all()]


def archived_copy(conn: Connection, issue: str):
    """The stored copy of `issue` (subject, archive_html, archive_text) from its first send that
    has one; a row with html None when only an older send (before copies were kept) shows it."""
    rows = conn.execute(select(sends.c.subject, sends.c.archive_html, sends.c.archive_text, sends.c.archive_date,
                               sends.c.archive_preheader, sends.c.started_at).select_from(_PUBLISHED)
                        .where(sends.c.issue == issue, _VISIBLE).order_by(sends.c.id)).all()
    return next((r for r in rows if r.archive_html is not None), rows[0] if rows else None)


# The hot statements, built once: a send runs them once per batch, and for SMTP a batch is one
# message, so constructing SQLAlchemy expressions each time would cost more than running them.
_m = memberships
_READERS = (select(deliveries.c.id, deliveries.c.subscriber_id, subscribers.c.email, subscribers.c.name,
                   deliveries.c.attempts, subscribers.c.global_status, _m.c.status, _m.c.token_key,
                   subscribers.c.no_tracking)
            .select_from(deliveries.outerjoin(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
                         .outerjoin(_m, and_(_m.c.subscriber_id == deliveries.c.subscriber_id,
                                             _m.c.list_id == bindparam("b_list")))))
_PEEK = (_READERS
         .where(deliveries.c.send_id == bindparam("b_send"), deliveries.c.state == State.PENDING.value,
                deliveries.c.id > bindparam("b_after"))
         .order_by(deliveries.c.id).limit(bindparam("b_size")))
_NEXT_BATCH = (update(sends).where(sends.c.id == bindparam("b_send")).values(batches=sends.c.batches + 1)
               .returning(sends.c.batches))
_NEXT_OWN_BATCH = _NEXT_BATCH.where(sends.c.runner == bindparam("b_runner"))


def _claim_where(ids):
    return (update(deliveries)
            .where(deliveries.c.send_id == bindparam("b_send"), ids, deliveries.c.state == State.PENDING.value)
            .values(state=State.SENDING.value, batch=bindparam("b_batch"), attempts=deliveries.c.attempts + 1,
                    updated_at=bindparam("b_now"), handed_at=bindparam("b_now")))


# The batch's ids as one array on PostgreSQL: a thousand bind parameters cost the client more to
# render and psycopg more to parse (a statement that long is not cached) than the update itself.
_CLAIM = {"postgresql": _claim_where(deliveries.c.id == any_(bindparam("b_ids", type_=ARRAY(BigInteger)))),
          "sqlite": _claim_where(deliveries.c.id.in_(bindparam("b_ids", expanding=True)))}

_ACCEPT_REST = (update(deliveries)
                .where(deliveries.c.send_id == bindparam("b_send"),
                       deliveries.c.id.between(bindparam("b_first"), bindparam("b_last")),
                       deliveries.c.batch == bindparam("b_batch"), deliveries.c.state == State.SENDING.value)
                .values(state=State.ACCEPTED.value, provider_id=bindparam("b_pid"), last_error=None,
                        updated_at=bindparam("b_now")))
_MARK = (update(deliveries).where(deliveries.c.id == bindparam("b_id"))
         .values(state=bindparam("b_state"), provider_id=bindparam("b_pid"), last_error=bindparam("b_err"),
                 updated_at=bindparam("b_now")))


def peek(conn: Connection, send_id: int, list_id: int | None, after: int, size: int) -> list[Reader]:
    """The next `size` pending readers after delivery id `after`, with their current address,
    name and suppression, read now; nothing is claimed (that is `claim`)."""
    rows = conn.execute(_PEEK, {"b_list": list_id, "b_send": send_id, "b_after": after, "b_size": size})
    return [Reader(r[0], r[1], r[2], r[3], r[4] + 1, _suppressed(r), r[7], bool(r[8])) for r in rows]


_BATCH = (_READERS.where(deliveries.c.send_id == bindparam("b_send"),
                         deliveries.c.id.between(bindparam("b_first"), bindparam("b_last")),
                         deliveries.c.batch == bindparam("b_batch"), deliveries.c.state == State.SENDING.value)
          .order_by(deliveries.c.id))


def batch_readers(conn: Connection, send_id: int, list_id: int | None, batch: int, ids: list[int]) -> list[Reader]:
    """The readers of a batch already claimed (a worker claims first, then reads: mailer/send/leases.py),
    `ids` those it claimed, ascending (the bounds of the index range read: there is no index on
    `batch`); `attempts` already counts this one."""
    rows = conn.execute(_BATCH, {"b_list": list_id, "b_send": send_id, "b_batch": batch,
                                 "b_first": ids[0], "b_last": ids[-1]})
    return [Reader(r[0], r[1], r[2], r[3], r[4], _suppressed(r), r[7], bool(r[8])) for r in rows]


def claim(conn: Connection, send_id: int, ids: list[int]) -> tuple[int | None, set[int] | None]:
    """Atomically mark these readers `sending` under a new batch number, if still pending, and
    handed to the backend (a single run sends a batch as soon as the claim commits).

    The batch number comes first, from the send's row, and only while this process is its runner
    (the lock order: the send's row, then its deliveries). Returns (None, set()) when the send was
    taken over; (batch, None) when all were claimed, else (batch, the ids actually claimed):
    another process may have taken some (on PostgreSQL its row locks make us wait, then skip them)."""
    batch = conn.execute(_NEXT_OWN_BATCH, {"b_send": send_id, "b_runner": this_runner()}).scalar()
    if batch is None:
        return None, set()
    claimed = conn.execute(_CLAIM[conn.dialect.name],
                           {"b_send": send_id, "b_ids": ids, "b_batch": batch, "b_now": now()}).rowcount
    if claimed == len(ids):
        return batch, None
    return batch, set(conn.execute(select(deliveries.c.id).where(
        deliveries.c.send_id == send_id, deliveries.c.batch == batch,
        deliveries.c.state == State.SENDING.value)).scalars())


def claimed_before(conn: Connection, send_id: int, ids: list[int]) -> tuple[int, set[int]] | None:
    """(batch, ids) of these readers already `sending` under this send's latest batch: a claim whose
    COMMIT took effect although the client saw it fail (mailer/send/stall.py retries it). None: none."""
    rows = conn.execute(select(deliveries.c.id, deliveries.c.batch).where(
        deliveries.c.send_id == send_id, deliveries.c.id.in_(ids), deliveries.c.state == State.SENDING.value)).all()
    if not rows:
        return None
    batch = max(r.batch for r in rows)
    return batch, {r.id for r in rows if r.batch == batch}


def _suppressed(row: tuple) -> str | None:
    email, global_status, status = row[2], row[5], row[6]
    if email is None:
        return "forgotten since the send started"
    if global_status:
        return f"{global_status} since the send started"
    if status != Status.ACTIVE:
        return f"{status or 'removed from the list'} since the send started"
    return None


def mark(conn: Connection, rows: list[Mark]) -> None:
    """Record individual readers' outcomes."""
    if rows:
        stamp = now()
        conn.execute(_MARK, [{"b_id": d, "b_state": s, "b_pid": p, "b_err": e, "b_now": stamp} for d, s, p, e in rows])


def accept_rest(conn: Connection, send_id: int, batch: int, ids: list[int], provider_id: str | None) -> int:
    """Everyone of the batch (delivery ids `ids`, ascending) still `sending` was accepted under one
    provider id (SendGrid's X-Message-Id)."""
    return conn.execute(_ACCEPT_REST, {"b_send": send_id, "b_batch": batch, "b_pid": provider_id, "b_now": now(),
                                       "b_first": ids[0], "b_last": ids[-1]}).rowcount


def note_in_doubt(conn: Connection, send_id: int, batch: int, error: str) -> None:
    """A batch whose request left without an answer stays `sending`, with the reason noted: the
    next run names it and applies on_interrupted (it may or may not have been taken)."""
    conn.execute(update(deliveries).where(
        deliveries.c.send_id == send_id, deliveries.c.batch == batch, deliveries.c.state == State.SENDING.value)
        .values(last_error=f"in doubt: {error}"[:2000], updated_at=now()))


def release(conn: Connection, send_id: int, batch: int, error: str) -> None:
    """A batch that provably did not reach the backend (refused as a whole, connection refused,
    429/5xx after the retries) goes back to pending for the next run."""
    conn.execute(update(deliveries).where(
        deliveries.c.send_id == send_id, deliveries.c.batch == batch, deliveries.c.state == State.SENDING.value)
        .values(state=State.PENDING.value, last_error=error[:2000], updated_at=now(), handed_at=None))

