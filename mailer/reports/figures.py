"""An issue's figures, computed once here for every surface that shows them: `mailer report` (and
`--json`), `mailer issues` (and `--json`), the admin dashboard, /admin/issues and the admin report.

Every figure counts readers, not events: a reader opened twice is one open, a bounce read from the
webhook and again from sync-sendgrid is one bounce.

- The ledger (mailer.send.ledger): readers, accepted, failed, deferred, skipped (suppressed or
  forgotten since the start), in doubt (handed to the backend, no answer recorded: `sending`) and
  pending, per send; a segment send (`--tag press`) is its own line, named with its tags.
- The events (subscribers.policy: events) of readers of these sends: tagged with the issue, or,
  for refusals at RCPT stored before they carried the issue, with one of the sends' refs
  (`SEND.SUBSCRIBER.MAC`, mailer/send/refs.py).
- Unsubscribes: the provider's unsubscribe events, and readers who used our own link or the
  List-Unsubscribe header (a history row from source "web") on the send's list between its send and
  the list's next one; each reader once.
- Opens and clicks: our own tracking's (mailer/reports/clicks.py) when the issue was tracked, else
  the provider's events.
- Delivered: only a provider reports it (SendGrid's webhook); SMTP and the outbox give none, so
  there, unless some delivery event came anyway, it is None ("not reported") and surfaces say so.

Rates: ledger figures are shares of the readers; every event figure is a share of the messages
accepted (the readers when nothing was accepted yet). Gmail's and Yahoo's bulk-sender guidance asks
for complaints under 0.1% (0.3% is their hard limit); bounces above 2% hurt a sender's reputation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import and_, distinct, func, literal_column, or_, select

from mailer.errors import ReportError
from mailer.reports import clicks
from mailer.reports.clicks import LinkFigures
from mailer.send.ledger import SendStatus, State, deliveries, sends
from mailer.send.segments import describe
from subscribers.events import EventType, Severity
from subscribers.models import Status, history, subscribers
from subscribers.normalize import display_email
from subscribers.policy import events

COMPLAINT_WARN = 0.001
COMPLAINT_LIMIT = 0.003
BOUNCE_WARN = 0.02
REPORTING_BACKENDS = frozenset({"sendgrid"})   # backends whose provider reports deliveries
FAILURES_SHOWN = 100

# figure name -> (events.type, events.severity or None)
EVENT_FIGURES = {
    "delivered": (EventType.DELIVERED, None),
    "hard_bounces": (EventType.BOUNCED, Severity.HARD),
    "soft_bounces": (EventType.BOUNCED, Severity.SOFT),
    "blocks": (EventType.BLOCKED, None),
    "complaints": (EventType.COMPLAINED, None),
    "opens": (EventType.OPENED, None),
    "clicks": (EventType.CLICKED, None),
}
LEDGER = ("readers", "accepted", "failed", "deferred", "skipped", "in_doubt", "pending")
EVENTS = ("delivered", "hard_bounces", "soft_bounces", "blocks", "complaints", "unsubscribes", "opens",
          "machine_opens", "clicks", "machine_clicks")
LABELS = {"readers": "Readers", "accepted": "Accepted", "failed": "Failed", "deferred": "Deferred",
          "skipped": "Skipped", "in_doubt": "In doubt", "pending": "Pending",
          "delivered": "Delivered (reported by the provider)", "hard_bounces": "Hard bounces",
          "soft_bounces": "Soft bounces", "blocks": "Blocks", "complaints": "Complaints",
          "unsubscribes": "Unsubscribes", "opens": "Opens", "machine_opens": "Machine opens",
          "clicks": "Clicks (people)", "machine_clicks": "Machine clicks"}
NOT_REPORTED = "not reported"
DELIVERED_NOTE = ("Delivered is what the provider reports; SMTP and the outbox report nothing after a "
                  "message is accepted, so there it is not reported.")


@dataclass(frozen=True)
class SendLine:
    """One send of the issue: one list, or one segment of it."""
    id: int
    list_name: str
    segment: str
    backend: str
    status: str
    started_at: datetime
    ledger: dict[str, int]

    @property
    def name(self) -> str:
        """`crank` or `crank (tags: press)`."""
        return describe(self.list_name, self.segment)

    def as_dict(self) -> dict:
        return {"list": self.list_name, "segment": self.segment, "name": self.name, "backend": self.backend,
                "status": self.status, "started_at": self.started_at.isoformat(), **self.ledger}


@dataclass(frozen=True)
class Failure:
    address: str          # "(forgotten)" once the reader is
    reason: str
    at: datetime | None
    list_name: str

    def as_dict(self) -> dict:
        return {"address": self.address, "reason": self.reason, "list": self.list_name,
                "time": self.at.isoformat() if self.at else None}


@dataclass
class Figures:
    issue: str
    subject: str
    started_at: datetime
    sends: list[SendLine]
    values: dict[str, int | None]              # LEDGER + EVENTS; delivered is None where not reported
    links: list[LinkFigures] = field(default_factory=list)
    tracked: bool = False                      # opens and clicks are our own tracking's

    def __getattr__(self, name: str):          # fig.readers, fig.hard_bounces, ... for the templates
        values = self.__dict__.get("values", {})
        if name in values:
            return values[name]
        raise AttributeError(name)

    @property
    def lists(self) -> list[str]:
        return [s.name for s in self.sends]

    @property
    def status(self) -> str:
        """done, or the first send's that is not (sending, stopped)."""
        return next((s.status for s in self.sends if s.status != SendStatus.DONE), SendStatus.DONE.value)

    @property
    def delivered_reported(self) -> bool:
        return self.values["delivered"] is not None

    @property
    def rates(self) -> dict[str, float | None]:
        return rates(self.values)

    @property
    def warnings(self) -> list[str]:
        return warnings(self.rates)

    @property
    def notes(self) -> list[str]:
        out = [] if self.delivered_reported else [DELIVERED_NOTE]
        return out + ([clicks.OPENS_NOTE] if self.tracked or self.values["opens"] else [])

    def shown(self, name: str) -> str:
        """The figure as surfaces print it: `1,234`, or "not reported"."""
        value = self.values[name]
        return NOT_REPORTED if value is None else f"{value:,}"

    def rows(self) -> list[tuple[str, str, str]]:
        """(label, count, rate) in reading order; every surface's table."""
        r = self.rates
        return [(label, self.shown(name), "" if r.get(name) is None else f"{r[name]:.2%}")
                for name, label in LABELS.items()]

    def as_dict(self) -> dict:
        return {"issue": self.issue, "subject": self.subject, "started_at": self.started_at.isoformat(),
                "status": self.status, "lists": self.lists, "sends": [s.as_dict() for s in self.sends],
                "figures": dict(self.values), "delivered_reported": self.delivered_reported,
                "rates": {k: (round(v, 6) if v is not None else None) for k, v in self.rates.items()},
                "warnings": self.warnings, "notes": self.notes, "links": [link.as_dict() for link in self.links]}


# ------------------------------------------------------------------------------ computing

def of_issue(conn, issue: str, list_name: str | None = None) -> Figures:
    """Every send of `issue` (or only those to `list_name`); ReportError when there is none."""
    found = _sends(conn, [issue], list_name)
    if not found:
        where = f" to list {list_name!r}" if list_name else ""
        raise ReportError(f"issue {issue!r} was never sent{where}: nothing to report (see `mailer send`)")
    return _figures(conn, issue, found)


def of_issues(conn, issues: list[str] | None = None, limit: int | None = None) -> list[Figures]:
    """Sent (or sending) issues, newest first (or only `issues`), at most `limit` of them."""
    rows = _sends(conn, issues, None)
    grouped: dict[str, list] = {}
    for row in sorted(rows, key=lambda r: r.started_at, reverse=True):
        if row.issue in grouped or limit is None or len(grouped) < limit:
            grouped.setdefault(row.issue, []).append(row)
    return [_figures(conn, issue, sorted(found, key=lambda r: r.id)) for issue, found in grouped.items()]


def _sends(conn, issues: list[str] | None, list_name: str | None) -> list:
    query = select(sends.c.id, sends.c.issue, sends.c.list_id, sends.c.list_name, sends.c.segment, sends.c.subject,
                   sends.c.backend, sends.c.status, sends.c.total, sends.c.sent, sends.c.failed, sends.c.skipped,
                   sends.c.started_at).order_by(sends.c.id)
    if issues is not None:
        query = query.where(sends.c.issue.in_(issues))
    if list_name:
        query = query.where(sends.c.list_name == list_name)
    return list(conn.execute(query).all())


_STATES = {"accepted": State.ACCEPTED, "failed": State.FAILED, "deferred": State.DEFERRED,
           "skipped": State.SKIPPED, "in_doubt": State.SENDING, "pending": State.PENDING}


def _figures(conn, issue: str, rows: list) -> Figures:
    ids = [r.id for r in rows]
    # A finished send's counts are on its row (ledger.finish writes them: nothing is left pending,
    # in flight or deferred); only the others are counted from their readers.
    per_send: dict[int, dict[str, int]] = {
        r.id: ({State.ACCEPTED.value: r.sent or 0, State.FAILED.value: r.failed or 0,
                State.SKIPPED.value: r.skipped or 0} if r.status == SendStatus.DONE.value else {}) for r in rows}
    counting = [r.id for r in rows if r.status != SendStatus.DONE.value]
    for send_id, state, n in conn.execute(select(deliveries.c.send_id, deliveries.c.state, func.count())
                                          .where(deliveries.c.send_id.in_(counting))
                                          .group_by(deliveries.c.send_id, deliveries.c.state)) if counting else ():
        per_send[send_id][state] = n
    lines = [SendLine(r.id, r.list_name, r.segment or "", r.backend, r.status, r.started_at,
                      {"readers": r.total or 0, **{name: per_send[r.id].get(s.value, 0) for name, s in _STATES.items()}
                       }) for r in rows]
    values: dict[str, int | None] = {name: sum(line.ledger[name] for line in lines) for name in LEDGER}
    values.update(_event_figures(conn, issue, ids))
    values["unsubscribes"] = len(_unsubscribers(conn, issue, rows))
    if not values["delivered"] and not any(r.backend in REPORTING_BACKENDS for r in rows):
        values["delivered"] = None   # SMTP and the outbox report nothing: not a zero
    own = clicks.tracked(conn, ids)   # our own clicks and opens replace the provider's events'
    values.update(own.figures() if own else {"machine_clicks": 0, "machine_opens": 0})
    return Figures(issue=issue, subject=rows[0].subject, started_at=min(r.started_at for r in rows), sends=lines,
                   values={name: values[name] for name in (*LEDGER, *EVENTS)}, links=own.links if own else [],
                   tracked=own is not None)


def readers_of(send_ids: list[int]):
    """The subscriber ids of these sends' readers (a subquery)."""
    return select(deliveries.c.subscriber_id).where(deliveries.c.send_id.in_(send_ids))


def of_these_sends(issue: str, send_ids: list[int]):
    """Events about this issue from readers of these sends: tagged with it, or (a refusal at RCPT
    stored before it carried the issue) with one of the sends' refs."""
    refs = or_(*(events.c.send_ref.like(f"{i}.%") for i in send_ids))
    return and_(or_(events.c.issue == issue, and_(events.c.issue.is_(None), refs)),
                events.c.subscriber_id.in_(readers_of(send_ids)))


def _event_figures(conn, issue: str, send_ids: list[int]) -> dict[str, int]:
    rows = conn.execute(select(events.c.type, events.c.severity, func.count(distinct(events.c.subscriber_id)))
                        .where(of_these_sends(issue, send_ids)).group_by(events.c.type, events.c.severity)).all()
    found = {(t, s): n for t, s, n in rows}
    out = {}
    for name, (kind, severity) in EVENT_FIGURES.items():
        if severity:
            out[name] = found.get((kind, severity), 0)
        elif sum(1 for (t, _s) in found if t == kind) > 1:   # one reader under two severities: once
            out[name] = conn.execute(select(func.count(distinct(events.c.subscriber_id)))
                                     .where(of_these_sends(issue, send_ids), events.c.type == kind)).scalar_one()
        else:
            out[name] = sum(n for (t, _s), n in found.items() if t == kind)
    return out


def _unsubscribers(conn, issue: str, rows: list) -> set[int]:
    """Readers who unsubscribed: the provider's events, and our own links and List-Unsubscribe
    header (history source "web") on each send's list, from its send until the list's next send."""
    ids = [r.id for r in rows]
    found = set(conn.execute(select(events.c.subscriber_id).distinct().where(
        of_these_sends(issue, ids), events.c.type == EventType.UNSUBSCRIBED)).scalars())
    for row in rows:
        if row.list_id is None:
            continue
        following = conn.execute(select(func.min(sends.c.started_at)).where(
            sends.c.list_id == row.list_id, sends.c.started_at > row.started_at, sends.c.issue != issue)).scalar()
        # The literal (not a bound value) lets SQLite use the partial index ix_history_unsubscribes.
        where = [history.c.list_id == row.list_id,
                 history.c.new_status == literal_column(f"'{Status.UNSUBSCRIBED}'"),
                 history.c.source == "web", history.c.at >= row.started_at,
                 history.c.subscriber_id.in_(readers_of([row.id]))]
        if following is not None:
            where.append(history.c.at < following)
        found.update(conn.execute(select(history.c.subscriber_id).distinct().where(*where)).scalars())
    found.discard(None)
    return found


def failures(conn, issue: str, limit: int | None = FAILURES_SHOWN) -> list[Failure]:
    """The issue's failed readers, named, with the reason and when, newest first."""
    query = (select(subscribers.c.email, deliveries.c.last_error, deliveries.c.updated_at, sends.c.list_name,
                    sends.c.segment)
             .join_from(deliveries, sends, sends.c.id == deliveries.c.send_id)
             .outerjoin(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
             .where(sends.c.issue == issue, deliveries.c.state == State.FAILED.value)
             .order_by(deliveries.c.id.desc()))
    if limit is not None:
        query = query.limit(limit)
    return [Failure(display_email(email) if email else "(forgotten)", error or "(no reason recorded)", at,
                    describe(name, segment or ""))
            for email, error, at, name, segment in conn.execute(query)]


def failure_lines(conn, issue: str, list_name: str | None = None, limit: int = FAILURES_SHOWN) -> list[str]:
    """`send --status`'s lines naming each failed reader (the newest `limit`): address, list,
    time and reason."""
    found = [f for f in failures(conn, issue, None) if list_name is None or f.list_name.split(" (")[0] == list_name]
    if not found:
        return []
    lines = [f"failed readers ({len(found):,}), newest first:"]
    lines += [f"  {f.address} ({f.list_name}) {f.at:%Y-%m-%d %H:%M UTC}: {f.reason}" if f.at else
              f"  {f.address} ({f.list_name}): {f.reason}" for f in found[:limit]]
    if len(found) > limit:
        lines.append(f"  ... and {len(found) - limit:,} more (`mailer report {issue} --json` lists them all)")
    return lines


# ------------------------------------------------------------------------------ rates, warnings

def rates(f: dict[str, int | None]) -> dict[str, float | None]:
    readers = f["readers"] or 0
    sent = f["accepted"] or readers
    out: dict[str, float | None] = {name: ((f[name] or 0) / readers if readers else None) for name in LEDGER[1:]}
    out.update({name: ((f[name] or 0) / sent if sent and f[name] is not None else None) for name in EVENTS})
    out["bounces"] = ((f["hard_bounces"] or 0) + (f["soft_bounces"] or 0)) / sent if sent else None
    return out


def warnings(r: dict[str, float | None]) -> list[str]:
    out = []
    complaints, bounces = r.get("complaints") or 0.0, r.get("bounces") or 0.0
    if complaints > COMPLAINT_LIMIT:
        out.append(f"complaint rate {complaints:.2%} is above 0.3%, Gmail's and Yahoo's hard limit for bulk senders")
    elif complaints > COMPLAINT_WARN:
        out.append(f"complaint rate {complaints:.2%} is above 0.1%, Gmail's and Yahoo's guidance for bulk senders")
    if bounces > BOUNCE_WARN:
        out.append(f"bounce rate {bounces:.2%} is above 2%: clean the list before the next issue")
    return out
