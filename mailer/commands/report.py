"""`mailer report ISSUE [--list NAME] [--json] [--html FILE]`: how one issue did.

Only typer is imported at module level; the report and the store load inside the command.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from mailer.commands.common import console, store_engine
from mailer.errors import ReportError

FAILURES_SHOWN = 100   # failed readers in the table; --json lists them all

# The stages are imported inside each command, not here: start-up (mailer/commands/__init__.py).


def register(app: typer.Typer) -> None:
    app.command("report")(report)


def report(ctx: typer.Context,
           issue: str = typer.Argument(..., help="The issue's name (2024-11) or file.", show_default=False),
           list_name: str | None = typer.Option(None, "--list", help="Only the send to this list."),
           as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
           html_file: Path | None = typer.Option(None, "--html", help="Also write a self-contained HTML page "
                                                    "with a chart of events over time.")) -> None:
    """Readers, deliveries, bounces, blocks, complaints, unsubscribes, opens and clicks (our own
    [tracking]'s, people and machines apart, with each link; else the provider's), each with its
    rate, deferrals by mailbox provider, the warnings a bulk sender must heed, and each failed reader
    with the reason and time (the same figures as `mailer issues`, the dashboard and the admin report)."""
    from mailer.reports import report as reports

    slug = Path(issue).stem if issue.endswith(".md") else issue
    with store_engine(ctx).connect() as conn:
        found = reports.build(conn, slug, list_name)
    if html_file is not None:
        _write(html_file, reports.render_html(found))
    if as_json:
        typer.echo(json.dumps(found.as_dict(), indent=2))
        return
    out = console()
    out.print(_table(found, reports.rows(found)))
    if found.links:
        out.print(_links(reports.link_rows(found)))
    if len(found.providers) > 1 or any(p.deferred for p in found.providers):
        out.print(_providers(found.providers))
    if found.failures:
        out.print(_failures(found.failures[:FAILURES_SHOWN], len(found.failures)))
        if len(found.failures) > FAILURES_SHOWN:
            out.print(f"... and {len(found.failures) - FAILURES_SHOWN:,} more (--json lists them all).", markup=False)
    for note in found.notes:
        out.print(note, markup=False)
    for warning in found.warnings:
        console(stderr=True).print(f"warning: {warning}", markup=False)
    if html_file is not None:
        out.print(f"Wrote {html_file}", markup=False)


def _table(found, rows):
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(f"{found.issue} to {', '.join(found.lists)}"), box=None, pad_edge=False)
    table.add_column("figure")
    table.add_column("count", justify="right")
    table.add_column("rate", justify="right")
    for label, n, rate in rows:
        table.add_row(label, n, rate)
    return table


def _links(rows):
    from rich.table import Table

    table = Table(title="Links, most people first", box=None, pad_edge=False)
    table.add_column("link", overflow="fold")
    table.add_column("text in the issue", overflow="fold")
    table.add_column("people", justify="right")
    table.add_column("machine", justify="right")
    for row in rows:
        table.add_row(*row)
    return table


def _providers(figures):
    from rich.table import Table

    table = Table(title="Deferrals by mailbox provider", box=None, pad_edge=False)
    for name in ("provider", "readers", "deferred", "rate"):
        table.add_column(name, justify="left" if name == "provider" else "right")
    for f in figures:
        table.add_row(f.provider, f"{f.readers:,}", f"{f.deferred:,}", f"{f.rate:.1%}")
    return table


def _failures(failures, total: int):
    from rich.table import Table

    table = Table(title=f"Failed readers ({total:,}), newest first", box=None, pad_edge=False)
    table.add_column("address", overflow="fold")
    table.add_column("list")
    table.add_column("reason", overflow="fold")
    table.add_column("time")
    for f in failures:
        table.add_row(f.address, f.list_name, f.reason, f.at.strftime("%Y-%m-%d %H:%M UTC") if f.at else "")
    return table


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ReportError(f"cannot write {path}: {exc.strerror}") from exc
