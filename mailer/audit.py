"""Who changed what: one entry per change made in the admin pages, by an admin command or through
the API, in the same transaction as the change itself.

    audit.record(conn, actor="ann", action=Action.TAG, via=Via.WEB, ip="192.0.2.7",
                 subscriber_id=42, detail={"added": ["press"]})
    audit.record_many(conn, [Entry(...), ...])           # a bulk action: one row per subscriber
    page = audit.entries(conn, actor="ann", limit=50)    # newest first, keyset-paged

An entry names the subscriber by id only. Pages and `mailer admin log` join the address in from
`subscribers`, so once someone is forgotten their entries stay, without the address, and nothing
here has to be scrubbed. `detail` holds what changed (tags, list names, counts, fields changed),
never an address or a name. No foreign keys (m0011_admin_workbench): an entry outlives its
subscriber, list and user. Reasons and the interface for other callers: docs/admin.md, "The audit log".
"""

from __future__ import annotations

import enum
import getpass
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, select
from sqlalchemy.engine import Connection

from subscribers.bulk import Bulk
from subscribers.models import Json, UtcDateTime, subscribers, utcnow
from subscribers.normalize import normalize_ip

metadata = MetaData()

audit_log = Table(
    "audit_log", metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
    Column("at", UtcDateTime, nullable=False),
    Column("actor", String(64), nullable=False),     # an admin user, a system user (CLI) or an API token's name
    Column("via", String(8), nullable=False),        # Via
    Column("ip", String(45)),                        # the client's address (web, API); None from the CLI
    Column("action", String(32), nullable=False),    # Action (or an API's own, same form)
    Column("subscriber_id", Integer),                # on whom, if on a subscriber
    Column("target", String(200)),                   # a list, a user, an issue ...
    Column("detail", Json),
)


class Via(enum.StrEnum):
    WEB = "web"        # the admin pages
    CLI = "cli"        # an admin command (`mailer subscribers ...`, `lists ...`, `admin ...`)
    API = "api"        # the REST API (actor: the token's name)


class Action(enum.StrEnum):
    """What an entry records; `subscriber.*` are changes to one subscriber."""

    SUBSCRIBER_ADD = "subscriber.add"             # a new subscriber, or one added to a list
    SUBSCRIBER_EDIT = "subscriber.edit"           # name changed (detail: the fields, not values)
    TAG = "subscriber.tag"
    UNTAG = "subscriber.untag"
    UNSUBSCRIBE = "subscriber.unsubscribe"
    RESUBSCRIBE = "subscriber.resubscribe"        # a suppression lifted: the admin records consent
    FORGET = "subscriber.forget"
    BULK = "bulk"                                 # one action on many: the summary (its rows: each one)
    IMPORT = "list.import"
    LIST_CREATE = "list.create"
    LIST_EDIT = "list.edit"
    LIST_DELETE = "list.delete"
    USER_ADD = "user.add"
    USER_REMOVE = "user.remove"
    USER_ROLE = "user.role"
    USER_TOTP = "user.totp"
    PROOF = "issue.proof"
    SCHEDULE = "issue.schedule"
    UNSCHEDULE = "issue.unschedule"
    SEND = "issue.send"
    RETRY = "issue.retry_failed"
    TOKEN_CREATE = "token.create"                 # an API token made (`mailer admin token create`)
    TOKEN_REVOKE = "token.revoke"


class Who(NamedTuple):
    """Who is acting and from where: what every entry of one request or command shares
    (`record(conn, **who._asdict(), action=...)`)."""

    actor: str
    via: Via
    ip: str | None = None

    def entry(self, action: Action | str, *, subscriber_id: int | None = None, target: str | None = None,
              detail: dict | None = None) -> Entry:
        return Entry(self.actor, str(action), self.via, self.ip, subscriber_id, target, detail)


def cli_user() -> Who:
    """The person at the terminal, as the system knows them (an admin command has no login)."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):       # no name for this uid (a container's anonymous user)
        name = "unknown"
    return Who(name[:64], Via.CLI)


class Entry(NamedTuple):
    actor: str
    action: str
    via: str
    ip: str | None = None
    subscriber_id: int | None = None
    target: str | None = None
    detail: dict | None = None


def record(conn: Connection, *, actor: str, action: Action | str, via: Via | str = Via.WEB, ip: str | None = None,
           subscriber_id: int | None = None, target: str | None = None, detail: dict | None = None,
           at: datetime | None = None) -> None:
    """Append one entry, in the caller's transaction (it commits with the change, or neither does)."""
    record_many(conn, [Entry(actor, str(action), str(via), ip, subscriber_id, target, detail)], at=at)


COLUMNS = ["actor", "via", "ip", "action", "subscriber_id", "target", "detail"]


def record_many(conn: Connection, entries: list[Entry], *, at: datetime | None = None) -> None:
    """Append entries in one statement (a bulk action's 1,000 rows at a time), the values handed
    straight to the driver (subscribers/bulk.py)."""
    if not entries:
        return
    ips = {e.ip: normalize_ip(e.ip) for e in entries}
    rows = [(e.actor[:64], str(e.via), ips[e.ip], str(e.action)[:32], e.subscriber_id,
             e.target[:200] if e.target else None,
             None if e.detail is None else json.dumps(e.detail, ensure_ascii=False, default=str)) for e in entries]
    bulk = Bulk(conn)
    bulk.insert(audit_log, COLUMNS, rows, fixed={"at": bulk.time(at or utcnow())})


class Shown(NamedTuple):
    id: int
    at: datetime
    actor: str
    via: str
    ip: str | None
    action: str
    subscriber_id: int | None
    email: str | None          # None: no subscriber, or forgotten since
    target: str | None
    detail: dict[str, Any] | None


@dataclass(frozen=True)
class Page:
    rows: list[Shown]
    has_older: bool


def entries(conn: Connection, *, actor: str | None = None, action: str | None = None,
            subscriber_id: int | None = None, before: int | None = None, limit: int = 50) -> Page:
    """Entries newest first, filtered by any of actor, action and subscriber; `before` an id for
    the next page. Each filter has an index ending in id, so a page reads `limit` rows."""
    query = (select(audit_log.c.id, audit_log.c.at, audit_log.c.actor, audit_log.c.via, audit_log.c.ip,
                    audit_log.c.action, audit_log.c.subscriber_id, subscribers.c.email, audit_log.c.target,
                    audit_log.c.detail)
             .outerjoin_from(audit_log, subscribers, subscribers.c.id == audit_log.c.subscriber_id)
             .order_by(audit_log.c.id.desc()).limit(limit + 1))
    if actor:
        query = query.where(audit_log.c.actor == actor)
    if action:
        query = query.where(audit_log.c.action == action)
    if subscriber_id is not None:
        query = query.where(audit_log.c.subscriber_id == subscriber_id)
    if before is not None:
        query = query.where(audit_log.c.id < before)
    rows = [Shown._make(row) for row in conn.execute(query)]
    return Page(rows[:limit], len(rows) > limit)


def describe(detail: dict | None) -> str:
    """An entry's detail as one line: `added: press, vip; list: crank`."""
    if not detail:
        return ""
    parts = []
    for key, value in sorted(detail.items()):
        if value in (None, "", [], {}):
            continue
        shown = ", ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
        parts.append(f"{key}: {shown}")
    return "; ".join(parts)


def import_detail(summary) -> dict:
    """What an import changed, for its entry (subscribers.importer's summary: counts, the file's name)."""
    return {"file": summary.file, "new": summary.imported, "updated": summary.updated,
            "unchanged": summary.unchanged, "invalid": summary.invalid, "suppressed": summary.suppressed}
