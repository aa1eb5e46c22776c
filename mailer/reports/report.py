"""`mailer report`'s page: an issue's figures (mailer/reports/figures.py, what every surface shows),
its failed readers by name, its deferrals by mailbox provider (mailer/reports/providers.py: naming a
provider that pushes back), and its events over time. `render_html` writes one self-contained page
whose chart is an SVG drawn by pygal (no script, no font or style from the network).
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select

from mailer.events import unverified
from mailer.reports import figures as issue_figures
from mailer.reports import providers
from mailer.reports.figures import Failure, Figures
from mailer.reports.providers import ProviderFigures
from subscribers.events import EventType
from subscribers.policy import events

CHART_SERIES = (EventType.DELIVERED, EventType.BOUNCED, EventType.BLOCKED, EventType.DEFERRED, EventType.COMPLAINED,
                EventType.UNSUBSCRIBED, EventType.OPENED, EventType.CLICKED)


@dataclass
class Report:
    fig: Figures
    failures: list[Failure] = field(default_factory=list)
    timeline: dict[str, list[tuple[str, int]]] = field(default_factory=dict)   # type -> [(bucket, n)]
    more_notes: list[str] = field(default_factory=list)   # the report's own (unverified bounce reports)
    providers: list[ProviderFigures] = field(default_factory=list)   # deferrals by mailbox provider

    @property
    def figures(self) -> dict[str, int | None]:
        return self.fig.values

    @property
    def rates(self) -> dict[str, float | None]:
        return self.fig.rates

    @property
    def issue(self) -> str:
        return self.fig.issue

    @property
    def lists(self) -> list[str]:
        return self.fig.lists

    @property
    def started_at(self) -> datetime:
        return self.fig.started_at

    @property
    def links(self):
        return self.fig.links

    @property
    def notes(self) -> list[str]:
        return self.fig.notes + self.more_notes

    @property
    def warnings(self) -> list[str]:
        return self.fig.warnings + providers.pushing_back(self.providers)

    def as_dict(self) -> dict:
        return {**self.fig.as_dict(), "notes": self.notes, "failures": [f.as_dict() for f in self.failures],
                "warnings": self.warnings, "providers": [p.as_dict() for p in self.providers],
                "timeline": {k: [{"at": at, "count": n} for at, n in v] for k, v in self.timeline.items()}}


def build(conn, issue: str, list_name: str | None = None) -> Report:
    """The report for every send of `issue` (or only the one to `list_name`)."""
    found = issue_figures.of_issue(conn, issue, list_name)
    send_ids = [s.id for s in found.sends]
    every_failure = issue_figures.failures(conn, issue, None)
    if list_name:
        names = set(found.lists)
        every_failure = [f for f in every_failure if f.list_name in names]
    return Report(found, every_failure, _timeline(conn, issue, send_ids), _unverified_note(conn, found.started_at),
                  providers.by_provider(conn, issue, send_ids))


def _unverified_note(conn, started: datetime | None) -> list[str]:
    """Bounce reports since the issue went out that proved nothing (docs/bounces.md): not in the
    figures, since they cannot be tied to this issue, but worth knowing about."""
    n = unverified.count_since(conn, started)
    if not n:
        return []
    return [f"{n:,} bounce {'report' if n == 1 else 'reports'} received since this issue went out could not be "
            "tied to a message we sent (unverified): they changed nobody. `mailer bounces scan` lists them."]


def _timeline(conn, issue: str, send_ids: list[int]) -> dict[str, list[tuple[str, int]]]:
    """Events per hour (per day when they span more than three days), by type."""
    rows = conn.execute(select(events.c.type, events.c.at).where(issue_figures.of_these_sends(issue, send_ids))
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

def rows(report: Report) -> list[tuple[str, str, str]]:
    """(label, count, rate) for the table, in reading order."""
    return report.fig.rows()


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
