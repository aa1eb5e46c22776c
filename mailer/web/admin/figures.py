"""Admin web interface: what the dashboard and the issue reports count, and their SVG chart.

Figures come straight from the send ledger (mailer.send.ledger: sends) and the stored delivery events
(subscribers.policy: events, one row per provider event, tagged with our issue slug); what is
scheduled comes from the scheduler's issue states (mailer.schedule.states), tags from
subscribers.tags.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Select, func, literal_column, select

from mailer.model import as_written
from mailer.schedule import states
from mailer.schedule.states import IssueState
from mailer.send import ledger
from mailer.send.ledger import SendStatus, State, deliveries, sends
from subscribers import tags as subscribers_tags
from subscribers.events import EventType
from subscribers.models import Status, history, subscribers, utc_date
from subscribers.normalize import display_email
from subscribers.policy import events

BOUNCES = (EventType.BOUNCED, EventType.BLOCKED, EventType.DROPPED)
SERIES = (   # (label, event types, colour, dash pattern: never colour alone)
    ("delivered", (EventType.DELIVERED,), "#1f6f43", ""),
    ("opened", (EventType.OPENED,), "#2458a6", "6 3"),
    ("bounced", BOUNCES, "#b3261e", "2 3"),
    ("unsubscribed or complained", (EventType.UNSUBSCRIBED, EventType.COMPLAINED), "#7a4b00", "10 3 2 3"),
)


@dataclass
class IssueFigures:
    issue: str
    subject: str
    started_at: datetime      # the send's start (sends.started_at, never NULL)
    lists: list[str] = field(default_factory=list)
    total: int = 0
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    bounces: int = 0
    complaints: int = 0
    unsubscribes: int = 0
    opens: int = 0
    clicks: int = 0
    status: str = ""


def scheduled(conn) -> list[str]:
    """Every scheduled issue, soonest first, as "ISSUE to LIST at TIME UTC"."""
    rows = sorted(states.in_state(conn, IssueState.SCHEDULED), key=lambda r: r.send_at)
    return [f"{r.issue} ({as_written(r.subject)}) to {r.list_name} at {r.send_at:%Y-%m-%d %H:%M} UTC" for r in rows]


def issue_state(conn, slug: str):
    """The issue's row in the scheduler's states (state, send_at, list_name, reason), or None."""
    return states.find(conn, slug)


def next_scheduled(conn) -> str | None:
    """The next scheduled send, or None."""
    return next(iter(scheduled(conn)), None)


def tags_of(conn, subscriber_id: int) -> list[str]:
    """The subscriber's tags."""
    return subscribers_tags.tags_of(conn, subscriber_id)


@dataclass(frozen=True)
class Failure:
    address: str          # "(forgotten)" once the reader is
    reason: str
    at: datetime | None
    list_name: str


FAILURES_SHOWN = 100


def failures(conn, slug: str, limit: int = FAILURES_SHOWN) -> list[Failure]:
    """The issue's failed readers with the provider's reason, newest first (the page's table)."""
    rows = conn.execute(
        select(subscribers.c.email, deliveries.c.last_error, deliveries.c.updated_at, sends.c.list_name)
        .join_from(deliveries, sends, sends.c.id == deliveries.c.send_id)
        .outerjoin(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
        .where(sends.c.issue == slug, deliveries.c.state == State.FAILED.value)
        .order_by(deliveries.c.id.desc()).limit(limit))
    return [Failure(display_email(email) if email else "(forgotten)", error or "(no reason recorded)", at, name)
            for email, error, at, name in rows]


def send_of(slug: str, list_id: int) -> Select:
    return select(sends.c.id).where(sends.c.issue == slug, sends.c.list_id == list_id, sends.c.segment == "")


def unfinished(conn, send_id: int) -> int:
    return ledger.unfinished(ledger.counts(conn, send_id))


def sent_lists(conn, slug: str) -> list[tuple[str, int]]:
    """(list name, list id) of each list the issue went to (lists deleted since are left out)."""
    return [(name, lid) for name, lid in conn.execute(
        select(sends.c.list_name, sends.c.list_id).where(sends.c.issue == slug, sends.c.list_id.is_not(None))
        .order_by(sends.c.list_name))]


RECIPIENT_COLUMNS = ["email", "list", "received", "state", "reason", "at"]
_RECEIVED = {State.ACCEPTED.value: "yes", State.PENDING.value: "not yet", State.SENDING.value: "not yet",
             State.DEFERRED.value: "not yet"}


def recipients(conn, slug: str):
    """One row per reader of each send of the issue: received yes / no / not yet, and why not."""
    query = (select(subscribers.c.email, sends.c.list_name, deliveries.c.state, deliveries.c.last_error,
                    deliveries.c.updated_at)
             .join_from(deliveries, sends, sends.c.id == deliveries.c.send_id)
             .outerjoin(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
             .where(sends.c.issue == slug).order_by(sends.c.list_name, deliveries.c.id))
    for email, list_name, state, error, at in conn.execution_options(yield_per=5000).execute(query):
        yield [email or "(forgotten)", list_name, _RECEIVED.get(state, "no"), state, error or "",
               at.strftime("%Y-%m-%dT%H:%M:%SZ") if at else ""]


def issues_sent(conn, limit: int | None = None, issue: str | None = None) -> list[IssueFigures]:
    """Sent (or sending) issues, newest first, with their figures summed over their lists."""
    query = select(sends).order_by(sends.c.started_at.desc())
    if issue is not None:
        query = query.where(sends.c.issue == issue)
    found: dict[str, IssueFigures] = {}
    for row in conn.execute(query):
        fig = found.get(row.issue)
        if fig is None:
            if limit is not None and len(found) >= limit:
                continue
            fig = found[row.issue] = IssueFigures(row.issue, row.subject, row.started_at, status=row.status)
        fig.lists.append(row.list_name)
        fig.total += row.total
        fig.sent += row.sent
        fig.failed += row.failed
        fig.skipped += row.skipped
        fig.started_at = min(fig.started_at, row.started_at)
        if row.status != SendStatus.DONE:
            fig.status = row.status
    if found:
        _add_events(conn, found)
        _add_unsubscribes(conn, found)
    return list(found.values())


def send_ids(conn, issue: str) -> list[int]:
    """The ids of the issue's sends (one per list)."""
    return list(conn.execute(select(sends.c.id).where(sends.c.issue == issue).order_by(sends.c.id)).scalars())


def _add_events(conn, found: dict[str, IssueFigures]) -> None:
    query = (select(events.c.issue, events.c.type, func.count()).where(events.c.issue.in_(list(found)))
             .group_by(events.c.issue, events.c.type))
    for issue, kind, count in conn.execute(query):
        fig = found[issue]
        if kind in BOUNCES:
            fig.bounces += count
        elif kind == EventType.COMPLAINED:
            fig.complaints += count
        elif kind == EventType.UNSUBSCRIBED:
            fig.unsubscribes += count
        elif kind == EventType.OPENED:
            fig.opens += count
        elif kind == EventType.CLICKED:
            fig.clicks += count


def _add_unsubscribes(conn, found: dict[str, IssueFigures]) -> None:
    """Readers' own unsubscribes (our pages and one-click links: history source "web") on each
    list an issue went to, from its send until the list's next send."""
    rows = conn.execute(select(sends.c.issue, sends.c.list_id, sends.c.started_at)
                        .where(sends.c.list_id.is_not(None)).order_by(sends.c.list_id, sends.c.started_at)).all()
    for i, (issue, list_id, start) in enumerate(rows):
        if issue not in found:
            continue
        end = rows[i + 1].started_at if i + 1 < len(rows) and rows[i + 1].list_id == list_id else None
        # The literal (not a bound value) lets SQLite use the partial index ix_history_unsubscribes.
        where = [history.c.list_id == list_id, history.c.new_status == literal_column(f"'{Status.UNSUBSCRIBED}'"),
                 history.c.source == "web", history.c.at >= start]
        if end is not None:
            where.append(history.c.at < end)
        found[issue].unsubscribes += conn.execute(select(func.count()).where(*where)).scalar_one()


def events_by_day(conn, *, days: int = 30, issue: str | None = None, today: date | None = None) -> dict:
    """{day: {series label: count}} for the last `days` days (every day present, zeros included)."""
    today = today or datetime.now(UTC).date()
    first = today - timedelta(days=days - 1)
    since = datetime.combine(first, datetime.min.time(), tzinfo=UTC)
    day = utc_date(events.c.at)
    query = select(day, events.c.type, func.count()).where(events.c.at >= since)
    if issue is not None:
        query = query.where(events.c.issue == issue)
    out = {first + timedelta(days=i): {label: 0 for label, *_ in SERIES} for i in range(days)}
    labels = {kind: label for label, kinds, *_ in SERIES for kind in kinds}
    for when, kind, count in conn.execute(query.group_by(day, events.c.type)):
        if when in out and kind in labels:
            out[when][labels[kind]] += count
    return out


@dataclass(frozen=True)
class Chart:
    """An SVG line chart laid out here and drawn by templates/admin/chart.html.j2 (no script)."""
    width: int
    height: int
    lines: list            # (label, colour, dash, "x,y x,y ...", total)
    y_ticks: list          # (y, label)
    x_ticks: list          # (x, label)
    days: list             # (day, {label: count}) for the data table
    labels: list


def chart(by_day: dict, *, width: int = 640, height: int = 220) -> Chart:
    left, right, top, bottom = 44, 8, 10, 26
    days = sorted(by_day)
    peak = max([1] + [n for counts in by_day.values() for n in counts.values()])
    step = _nice_step(peak)
    top_value = step * -(-peak // step)
    span_x = (width - left - right) / max(1, len(days) - 1)
    span_y = (height - top - bottom) / top_value

    def point(i: int, n: int) -> str:
        return f"{left + i * span_x:.1f},{height - bottom - n * span_y:.1f}"

    lines = [(label, colour, dash, " ".join(point(i, by_day[d][label]) for i, d in enumerate(days)),
              sum(by_day[d][label] for d in days)) for label, _kinds, colour, dash in SERIES]
    y_ticks = [(height - bottom - v * span_y, f"{v:,}") for v in range(0, top_value + 1, step)]
    every = max(1, len(days) // 6)
    # The last day always gets its label; anchored at its end (not centred) so that it stays inside.
    shown = [i for i in range(len(days)) if i % every == 0 and (len(days) - 1 - i >= every or i == len(days) - 1)]
    if days and len(days) - 1 not in shown:
        shown.append(len(days) - 1)
    x_ticks = [(left + i * span_x, d.strftime("%b %d"), "end" if i == len(days) - 1 and i else "middle")
               for i, d in enumerate(days) if i in shown]
    return Chart(width, height, lines, y_ticks, x_ticks, [(d, by_day[d]) for d in days],
                 [label for label, *_ in SERIES])


def _nice_step(peak: int) -> int:
    for step in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000, 100_000):
        if peak / step <= 5:
            return step
    return 10 ** len(str(peak // 5))

