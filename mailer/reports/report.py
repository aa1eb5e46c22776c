"""Per-issue figures: the send ledger (readers, accepted, failed, deferred) joined with the events
that came back (provider webhooks, bounce mail, sync-sendgrid), each with its rate, and the
warnings a bulk sender must heed. `render_html` writes one self-contained page whose chart is an
SVG drawn by pygal (no script, no font or style from the network).

Rates: accepted, failed and deferred are shares of the readers; every event figure is a share of
the messages accepted (the readers when nothing was accepted yet). Events count readers, not
events: SendGrid reports an open each time a message is opened, and a bounce may be read twice
(webhook and sync-sendgrid). Thresholds: Gmail's and Yahoo's bulk-sender guidance asks for
complaints under 0.1% (0.3% is their hard limit); bounces above 2% hurt a sender's reputation.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import distinct, func, select

from mailer.errors import ReportError
from mailer.events import unverified
from mailer.reports import clicks
from mailer.reports.clicks import LinkFigures
from mailer.send.ledger import State, deliveries, sends
from subscribers.events import EventType, Severity
from subscribers.policy import events

COMPLAINT_WARN = 0.001
COMPLAINT_LIMIT = 0.003
BOUNCE_WARN = 0.02

# figure name -> (events.type, events.severity or None)
EVENT_FIGURES = {
    "delivered": (EventType.DELIVERED, None),
    "hard_bounces": (EventType.BOUNCED, Severity.HARD),
    "soft_bounces": (EventType.BOUNCED, Severity.SOFT),
    "blocks": (EventType.BLOCKED, None),
    "complaints": (EventType.COMPLAINED, None),
    "unsubscribes": (EventType.UNSUBSCRIBED, None),
    "opens": (EventType.OPENED, None),
    "clicks": (EventType.CLICKED, None),
}
LEDGER_FIGURES = (State.ACCEPTED, State.FAILED, State.DEFERRED)
CHART_SERIES = (EventType.DELIVERED, EventType.BOUNCED, EventType.BLOCKED, EventType.DEFERRED, EventType.COMPLAINED,
                EventType.UNSUBSCRIBED, EventType.OPENED, EventType.CLICKED)


@dataclass
class Report:
    issue: str
    lists: list[str]
    figures: dict[str, int]
    rates: dict[str, float | None]
    warnings: list[str]
    timeline: dict[str, list[tuple[str, int]]] = field(default_factory=dict)   # type -> [(bucket, n)]
    started_at: datetime | None = None
    links: list[LinkFigures] = field(default_factory=list)   # our own tracking's, most people first
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"issue": self.issue, "lists": self.lists, "figures": self.figures,
                "rates": {k: (round(v, 6) if v is not None else None) for k, v in self.rates.items()},
                "warnings": self.warnings, "started_at": self.started_at.isoformat() if self.started_at else None,
                "links": [link.as_dict() for link in self.links], "notes": self.notes,
                "timeline": {k: [{"at": at, "count": n} for at, n in v] for k, v in self.timeline.items()}}


def build(conn, issue: str, list_name: str | None = None) -> Report:
    """The report for every send of `issue` (or only the one to `list_name`)."""
    query = select(sends.c.id, sends.c.list_name, sends.c.total, sends.c.started_at).where(sends.c.issue == issue)
    if list_name:
        query = query.where(sends.c.list_name == list_name)
    rows = conn.execute(query.order_by(sends.c.id)).all()
    if not rows:
        where = f" to list {list_name!r}" if list_name else ""
        raise ReportError(f"issue {issue!r} was never sent{where}: nothing to report (see `mailer send`)")
    send_ids = [r.id for r in rows]
    figures = {"readers": sum(r.total or 0 for r in rows)}
    states = dict(conn.execute(select(deliveries.c.state, func.count()).where(deliveries.c.send_id.in_(send_ids))
                               .group_by(deliveries.c.state)).all())
    figures.update({name: states.get(name, 0) for name in LEDGER_FIGURES})
    figures.update(_event_figures(conn, issue, send_ids))
    own = clicks.tracked(conn, send_ids)   # our own clicks and opens replace the provider's events'
    figures.update(own.figures() if own else {"machine_clicks": 0, "machine_opens": 0})
    rates = _rates(figures)
    started = min((r.started_at for r in rows if r.started_at), default=None)
    notes = [clicks.OPENS_NOTE] if own or figures["opens"] else []
    notes += _unverified_note(conn, started)
    return Report(issue=issue, lists=[r.list_name for r in rows], figures=figures, rates=rates,
                  warnings=_warnings(rates), timeline=_timeline(conn, issue, send_ids), started_at=started,
                  links=own.links if own else [], notes=notes)


def _unverified_note(conn, started: datetime | None) -> list[str]:
    """Bounce reports since the issue went out that proved nothing (docs/bounces.md): not in the
    figures, since they cannot be tied to this issue, but worth knowing about."""
    n = unverified.count_since(conn, started)
    if not n:
        return []
    return [f"{n:,} bounce {'report' if n == 1 else 'reports'} received since this issue went out could not be "
            "tied to a message we sent (unverified): they changed nobody. `mailer bounces scan` lists them."]


def _in_send(send_ids):
    """Events of this issue from readers of these sends (an issue sent to two lists reports each)."""
    return events.c.subscriber_id.in_(select(deliveries.c.subscriber_id).where(deliveries.c.send_id.in_(send_ids)))


def _event_figures(conn, issue: str, send_ids: list[int]) -> dict[str, int]:
    rows = conn.execute(select(events.c.type, events.c.severity, func.count(distinct(events.c.subscriber_id)))
                        .where(events.c.issue == issue, _in_send(send_ids))
                        .group_by(events.c.type, events.c.severity)).all()
    found = {(t, s): n for t, s, n in rows}
    out = {}
    for name, (kind, severity) in EVENT_FIGURES.items():
        out[name] = (found.get((kind, severity), 0) if severity else
                     sum(n for (t, _s), n in found.items() if t == kind))
    return out


def _rates(f: dict[str, int]) -> dict[str, float | None]:
    readers, sent = f["readers"], f["accepted"] or f["readers"]
    rates: dict[str, float | None] = {name: (f[name] / readers if readers else None) for name in LEDGER_FIGURES}
    rates.update({name: (f[name] / sent if sent else None) for name in EVENT_FIGURES})
    rates["bounces"] = (f["hard_bounces"] + f["soft_bounces"]) / sent if sent else None
    return rates


def _warnings(rates: dict[str, float | None]) -> list[str]:
    out = []
    complaints, bounces = rates.get("complaints") or 0.0, rates.get("bounces") or 0.0
    if complaints > COMPLAINT_LIMIT:
        out.append(f"complaint rate {complaints:.2%} is above 0.3%, Gmail's and Yahoo's hard limit for bulk senders")
    elif complaints > COMPLAINT_WARN:
        out.append(f"complaint rate {complaints:.2%} is above 0.1%, Gmail's and Yahoo's guidance for bulk senders")
    if bounces > BOUNCE_WARN:
        out.append(f"bounce rate {bounces:.2%} is above 2%: clean the list before the next issue")
    return out


def _timeline(conn, issue: str, send_ids: list[int]) -> dict[str, list[tuple[str, int]]]:
    """Events per hour (per day when they span more than three days), by type."""
    rows = conn.execute(select(events.c.type, events.c.at).where(events.c.issue == issue, _in_send(send_ids))
                        .order_by(events.c.at)).all()
    if not rows:
        return {}
    times = [at for _, at in rows]
    hourly = times[-1] - times[0] <= timedelta(days=3)
    fmt = "%Y-%m-%d %H:00" if hourly else "%Y-%m-%d"
    buckets = _buckets(times[0], times[-1], hourly)
    labels = [b.strftime(fmt) for b in buckets]
    counts: dict[str, dict[str, int]] = {}
    for (kind, _), at in zip(rows, times, strict=True):
        counts.setdefault(kind, dict.fromkeys(labels, 0))[at.strftime(fmt)] += 1
    return {kind: list(counts[kind].items()) for kind in CHART_SERIES if kind in counts}


def _buckets(first: datetime, last: datetime, hourly: bool) -> list[datetime]:
    step = timedelta(hours=1) if hourly else timedelta(days=1)
    at = first.replace(minute=0, second=0, microsecond=0) if hourly else \
        first.replace(hour=0, minute=0, second=0, microsecond=0)
    out = []
    while at <= last:
        out.append(at)
        at += step
    return out


# ------------------------------------------------------------------------------ output

LABELS = {"readers": "Readers", "accepted": "Accepted", "failed": "Failed", "deferred": "Deferred",
          "delivered": "Delivered", "hard_bounces": "Hard bounces", "soft_bounces": "Soft bounces",
          "blocks": "Blocks", "complaints": "Complaints", "unsubscribes": "Unsubscribes", "opens": "Opens",
          "machine_opens": "Machine opens", "clicks": "Clicks (people)", "machine_clicks": "Machine clicks"}


def rows(report: Report) -> list[tuple[str, str, str]]:
    """(label, count, rate) for the table, in reading order."""
    out = []
    for name, label in LABELS.items():
        rate = report.rates.get(name)
        out.append((label, f"{report.figures[name]:,}", "" if rate is None else f"{rate:.2%}"))
    return out


def link_rows(report: Report) -> list[tuple[str, str, str, str]]:
    """(URL, text in the issue, people, machine) for the links table, most people first."""
    return [(link.url, link.text, f"{link.people:,}", f"{link.machine:,}") for link in report.links]


def chart_svg(report: Report) -> str:
    """The events-over-time chart as inline SVG (pygal, with its script left out)."""
    import pygal  # only the HTML report draws; `report --json` and the table never load it
    from pygal.style import Style

    style = Style(background="white", plot_background="white", font_family="sans-serif")
    chart = pygal.Line(width=900, height=360, style=style, js=[], x_label_rotation=30, show_dots=True,
                       dots_size=2, legend_at_bottom=True, show_minor_x_labels=False, truncate_label=-1,
                       title=f"Events over time: {report.issue}")
    series = report.timeline
    labels = [at for at, _ in next(iter(series.values()))] if series else []
    chart.x_labels = labels
    chart.x_labels_major_every = max(1, len(labels) // 12)
    for kind, points in series.items():
        chart.add(kind, [n for _, n in points])
    if not series:
        chart.no_data_text = "No events yet"
    # pygal writes its config as a <script> even with js=[]: the page runs none, as the README says
    return _SCRIPT.sub("", chart.render(is_unicode=True, disable_xml_declaration=True))


_SCRIPT = re.compile(r"<script\b.*?</script\s*>", re.S | re.I)


def _link(url: str) -> str:
    """A link's cell: an http(s) address is a link; anything else (javascript:, data:) only text."""
    esc = html.escape
    if url.lower().startswith(("http://", "https://")):
        return f'<a href="{esc(url)}">{esc(url)}</a>'
    return esc(url)


def render_html(report: Report) -> str:
    esc = html.escape
    table = "\n".join(f"<tr><th scope=row>{esc(label)}</th><td>{esc(n)}</td><td>{esc(rate)}</td></tr>"
                      for label, n, rate in rows(report))
    warnings = "".join(f'<p class="warning" role="alert">{esc(w)}</p>' for w in report.warnings)
    notes = "".join(f'<p class="note">{esc(n)}</p>' for n in report.notes)
    links = "\n".join(f'<tr><td class="url">{_link(url)}</td><td class="text">{esc(text)}</td>'
                      f"<td>{esc(people)}</td><td>{esc(machine)}</td></tr>"
                      for url, text, people, machine in link_rows(report))
    links_table = (f"""<h2>Links</h2>
<table class="links"><thead><tr><th scope=col>Link</th><th scope=col>Text in the issue</th>
<th scope=col>People</th><th scope=col>Machine</th></tr></thead>
<tbody>
{links}
</tbody></table>""" if report.links else "")
    started = report.started_at.strftime("%Y-%m-%d %H:%M UTC") if report.started_at else "—"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="script-src 'none'; object-src 'none'; base-uri 'none'">
<title>Report: {esc(report.issue)}</title>
<style>
body {{ font-family: sans-serif; margin: 2rem auto; max-width: 960px; color: #222; }}
table {{ border-collapse: collapse; margin: 1rem 0; }}
th, td {{ padding: .3rem .9rem; border-bottom: 1px solid #ddd; text-align: right; }}
th[scope=row] {{ text-align: left; font-weight: normal; }}
td.url, td.text {{ text-align: left; overflow-wrap: anywhere; }}
.note {{ color: #555; }}
.warning {{ background: #fff3cd; border: 1px solid #e0b400; padding: .5rem .8rem; }}
figure {{ margin: 1rem 0; }}
</style></head>
<body>
<h1>Issue {esc(report.issue)}</h1>
<p>Lists: {esc(", ".join(report.lists))}. Sending started {esc(started)}.</p>
{warnings}
<table><thead><tr><th scope=col>Figure</th><th scope=col>Count</th><th scope=col>Rate</th></tr></thead>
<tbody>
{table}
</tbody></table>
{notes}
{links_table}
<figure>{chart_svg(report)}
<figcaption>Events reported per {"hour" if _hourly(report) else "day"} (UTC).</figcaption></figure>
</body></html>
"""


def _hourly(report: Report) -> bool:
    first = next(iter(report.timeline.values()), [])
    return bool(first) and len(first[0][0]) > 10
