"""Admin web interface: what the dashboard and the issue reports count, and their SVG chart.

An issue's figures are mailer/reports/figures.py's, as every surface shows them; the chart counts
the stored delivery events per day (subscribers.policy: events); what is scheduled comes from the
scheduler's issue states (mailer.schedule.states), tags from subscribers.tags.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Select, func, select

from mailer.config import ScheduleSettings
from mailer.model import as_written
from mailer.reports import figures as issue_figures
from mailer.reports.figures import FAILURES_SHOWN, Failure, Figures
from mailer.schedule import states, status
from mailer.schedule.slots import shown
from mailer.schedule.states import IssueState
from mailer.send import ledger
from mailer.send.ledger import State, deliveries, sends
from subscribers import tags as subscribers_tags
from subscribers.events import EventType
from subscribers.models import subscribers, utc_date
from subscribers.policy import events

BOUNCES = (EventType.BOUNCED, EventType.BLOCKED, EventType.DROPPED)
SERIES = (   # (label, event types, colour, dash pattern: never colour alone)
    ("delivered", (EventType.DELIVERED,), "#1f6f43", ""),
    ("opened", (EventType.OPENED,), "#2458a6", "6 3"),
    ("bounced", BOUNCES, "#b3261e", "2 3"),
    ("unsubscribed or complained", (EventType.UNSUBSCRIBED, EventType.COMPLAINED), "#7a4b00", "10 3 2 3"),
)


def scheduled(conn, schedule: ScheduleSettings, now: datetime | None = None) -> list[tuple[str, str]]:
    """Every scheduled issue, soonest first, as (ISSUE, "(SUBJECT) to LIST at LOCAL TIME (UTC)"):
    the readers it will reach and who has it already; one whose time passed says it is due or missed."""
    now = now or datetime.now(UTC)
    out = []
    for r in sorted(states.in_state(conn, IssueState.SCHEDULED), key=lambda r: r.send_at):
        said = f"({as_written(r.subject)}) to {r.list_name} at {shown(r.send_at, schedule)}"
        found = status.reach(conn, r.issue, r.list_name)
        if found is not None:
            said += f": {found.readers:,} readers to reach, {found.have:,} already have it"
        state, reason = status.state_now(r, now, schedule)
        out.append((r.issue, said + (f". {state.capitalize()}: {reason}" if state != r.state else "")))
    return out


def failed(conn, schedule: ScheduleSettings, now: datetime | None = None) -> list[tuple[str, str, str]]:
    """(issue, subject, reason) of every issue that failed at its slot, or missed it (still
    "scheduled" until a scheduler runs), by issue."""
    now = now or datetime.now(UTC)
    out = []
    for r in states.every(conn):
        state, reason = status.state_now(r, now, schedule)
        if state in (IssueState.FAILED.value, "missed"):
            out.append((r.issue, as_written(r.subject), f"{state}: {reason or '(no reason recorded)'}"))
    return out


def heartbeat(conn, schedule: ScheduleSettings, now: datetime | None = None) -> str:
    """Whether a scheduler is running, in words (mailer/schedule/status.py)."""
    now = now or datetime.now(UTC)
    return status.heartbeat(conn, now).said(now, schedule)


def issue_state(conn, slug: str):
    """The issue's row in the scheduler's states (state, send_at, list_name, reason), or None."""
    return states.find(conn, slug)


def next_scheduled(conn, schedule: ScheduleSettings) -> str | None:
    """The next scheduled send, or None."""
    return next((f"{issue} {said}" for issue, said in scheduled(conn, schedule)), None)


def tags_of(conn, subscriber_id: int) -> list[str]:
    """The subscriber's tags."""
    return subscribers_tags.tags_of(conn, subscriber_id)


def failures(conn, slug: str, limit: int = FAILURES_SHOWN) -> list[Failure]:
    """The issue's failed readers with the reason, newest first (the page's table)."""
    return issue_figures.failures(conn, slug, limit)


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


def issues_sent(conn, limit: int | None = None, issue: str | None = None) -> list[Figures]:
    """Sent (or sending) issues, newest first, with their figures (mailer/reports/figures.py)."""
    return issue_figures.of_issues(conn, None if issue is None else [issue], limit)


def send_ids(conn, issue: str) -> list[int]:
    """The ids of the issue's sends (one per list)."""
    return list(conn.execute(select(sends.c.id).where(sends.c.issue == issue).order_by(sends.c.id)).scalars())


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

