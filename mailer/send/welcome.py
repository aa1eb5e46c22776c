"""A list's welcome mail: set with `mailer lists welcome LIST FILE`, sent once to each reader who
confirms, through the send ledger like any issue (docs/admin.md, "A welcome mail").

    check(settings, path, language)             # the gate: LintFailed for a broken file
    set_welcome(conn, list_id, path, subject)   # or clear_welcome(conn, list_id)
    enqueue(conn, settings, subscriber_id, list_id)   # in the confirmation's transaction
    send_due(settings)                          # after it commits: deliver what is pending

Each welcome file is one `sends` row per list (issue: the file's name; segment: `welcome`, which
no tag segment can be), and each reader one `deliveries` row in it: UNIQUE(send_id,
subscriber_id) is what makes it once, whatever confirms twice. Sending is `dispatch.run_send` on
that row, so the backend, the one-click headers, the footer, the heartbeat and the rules for a
batch in flight are an issue's. The send is never in the archive (no archive copy; ledger's
`_VISIBLE` leaves segment `welcome` out) and its start and end are no webhook events.

The file is linted when it is set (a broken one is refused) and again before each sending: if it
broke since, the confirmations stand, nothing is sent, and the send row says why (`last_error`,
status `stopped`: `mailer issues` and the log show it); the readers stay pending until it is fixed.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from pathlib import Path

from sqlalchemy import Column, Integer, MetaData, String, Table, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from mailer import engines
from mailer.compose.gate import compose_checked
from mailer.config import Settings, database_url
from mailer.errors import MailerError, SendError
from mailer.send import dispatch, ledger
from mailer.send.ledger import WELCOME, SendStatus, State, deliveries, sends
from subscribers.models import UtcDateTime, lists, subscribers, utcnow

log = logging.getLogger("mailer.send")
metadata = MetaData()

welcome_mails = Table(
    "welcome_mails", metadata,
    Column("list_id", Integer, primary_key=True),       # lists.id (no FK: deleting a list drops it, below)
    Column("path", String(1000), nullable=False),       # the issue file, absolute
    Column("slug", String(64), nullable=False),         # its name: the send's `issue`
    Column("subject", String(998), nullable=False),
    Column("set_at", UtcDateTime, nullable=False),
)


def check(settings: Settings, path: Path, language: str | None):
    """The composed welcome, or LintFailed (one line naming the first errors)."""
    return compose_checked(path, settings, language=language)


def set_welcome(conn: Connection, list_id: int, path: Path, slug: str, subject: str) -> None:
    conn.execute(delete(welcome_mails).where(welcome_mails.c.list_id == list_id))
    conn.execute(insert(welcome_mails).values(list_id=list_id, path=str(path.resolve()), slug=slug[:64],
                                              subject=subject[:998], set_at=utcnow()))


def clear_welcome(conn: Connection, list_id: int) -> bool:
    return bool(conn.execute(delete(welcome_mails).where(welcome_mails.c.list_id == list_id)).rowcount)


def welcomes(conn: Connection) -> dict[int, str]:
    """list id -> its welcome file."""
    return dict(conn.execute(select(welcome_mails.c.list_id, welcome_mails.c.path)).all())


def enqueue(conn: Connection, settings: Settings, subscriber_id: int, list_id: int) -> int | None:
    """The reader just confirmed `list_id`: a pending delivery of its welcome, unless they have
    one (in the caller's transaction). The send's id, or None when the list has no welcome or the
    reader had it already."""
    mail = conn.execute(select(welcome_mails).where(welcome_mails.c.list_id == list_id)).first()
    if mail is None:
        return None
    row = ledger.find_send(conn, mail.slug, list_id, WELCOME)
    if row is None:
        name = conn.execute(select(lists.c.name).where(lists.c.id == list_id)).scalar_one()
        send_id = ledger.create_send(conn, issue=mail.slug, list_id=list_id, list_name=name, subject=mail.subject,
                                     backend=settings.delivery.backend, segment=WELCOME,
                                     recipients=select(subscribers.c.id.label("subscriber_id"))
                                     .where(subscribers.c.id == subscriber_id))
        # nobody runs it yet: whoever sends it next (send_due, in any process) takes it up
        conn.execute(update(sends).where(sends.c.id == send_id).values(runner=None, heartbeat_at=None))
        return send_id
    upsert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    added = conn.execute(upsert(deliveries).values(send_id=row.id, subscriber_id=subscriber_id,
                                                   state=State.PENDING.value, attempts=0)
                         .on_conflict_do_nothing(index_elements=["send_id", "subscriber_id"])
                         .returning(deliveries.c.id)).first()   # (rowcount: not reliable here on psycopg)
    if added is None:
        return None
    total = conn.execute(select(func.count()).where(deliveries.c.send_id == row.id)).scalar_one()
    conn.execute(update(sends).where(sends.c.id == row.id).values(total=total))
    return row.id


def due(conn: Connection) -> list:
    """The welcome sends with readers still pending (or deferred, or in flight after a crash)."""
    waiting = (select(deliveries.c.send_id).where(deliveries.c.state.in_(
        [State.PENDING.value, State.DEFERRED.value, State.SENDING.value])).distinct().subquery())
    return list(conn.execute(select(sends.c.id, sends.c.list_id, sends.c.list_name, sends.c.issue)
                             .where(sends.c.segment == WELCOME, sends.c.id.in_(select(waiting.c.send_id)))))


_RUNNING = threading.Lock()


def send_due(settings: Settings) -> dict[int, int]:
    """Deliver every pending welcome now; send id -> how many went. A broken file or a send that
    another process runs is reported (log, the send row) and left for the next time.

    One at a time in a process: two runs of one send here would share a runner's name, so the
    second would take the first's batch in flight for an interrupted one (the ledger tells runners
    apart by process). The second waits, then sends what the first left."""
    with _RUNNING:
        return _send_due(settings)


def _send_due(settings: Settings) -> dict[int, int]:
    engine = engines.get(database_url(settings))
    with engine.connect() as conn:
        waiting = due(conn)
        paths = welcomes(conn)
    sent = {}
    for row in waiting:
        path = paths.get(row.list_id)
        if path is None:        # the welcome was turned off since: these readers get none
            continue
        try:
            composed = check(settings, Path(path), dispatch.language_of(settings, engine, row.list_id))
        except (MailerError, OSError) as exc:   # LintFailed, an unreadable or missing file
            _stopped(engine, row.id, f"the welcome mail {path} cannot be sent: {exc}")
            continue
        composed = dataclasses.replace(composed, slug=row.issue)
        plan = dispatch.Plan(composed, row.list_id, row.list_name, settings.delivery.backend, 0, engine=engine,
                             send_id=row.id, segment=WELCOME)
        try:
            summary = dispatch.run_send(settings, plan)
        except SendError as exc:
            log.warning("welcome mail of list %s: %s", row.list_name, exc)
            continue
        sent[row.id] = summary.sent
    return sent


def _stopped(engine, send_id: int, why: str) -> None:
    log.error("%s", why)
    with engine.begin() as conn:
        conn.execute(update(sends).where(sends.c.id == send_id).values(status=SendStatus.STOPPED.value,
                                                                         last_error=why[:2000]))
