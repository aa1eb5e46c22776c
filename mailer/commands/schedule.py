"""`mailer schedule show | run`, and the printing behind `mailer issue schedule | unschedule` and
`mailer issues` (mailer/schedule/scheduler.py does the work; only typer is imported at module level)."""

from __future__ import annotations

import sys
from datetime import timedelta

import typer

from mailer.commands.common import app_context

# The stages are imported inside each command, not here: start-up (mailer/commands/__init__.py).

app = typer.Typer(help="The monthly slot: show what goes out when, run the scheduler.", no_args_is_help=True)


@app.command()
def show(
    ctx: typer.Context,
    count: int = typer.Option(3, "--count", "-n", min=1, max=120, help="How many slots to show."),
) -> None:
    """The next slots (local time and UTC) and the issue each would send."""
    from mailer.model import as_written
    from mailer.schedule.scheduler import upcoming, utcnow
    from mailer.schedule.slots import shown

    settings = app_context(ctx).settings
    s = settings.schedule
    typer.echo(f"Slots: day \"{s.day}\" at {s.time} {s.timezone}, list {s.list or '(not set)'}, "
               f"grace {s.misfire_grace_minutes} min")
    rows = upcoming(settings, utcnow(), count)
    for when, issues in rows:
        what = ", ".join(f"{r.issue} '{as_written(r.subject)}'" + (" (--at)" if r.pinned else "") for r in issues)
        typer.echo(f"  {shown(when, s)}  {what or 'nothing scheduled (the editors get a notice)'}")
    if not any(issues for _, issues in rows):
        typer.echo("No issue is scheduled in these slots: `mailer issue schedule ISSUE` schedules one.")


@app.command()
def run(ctx: typer.Context) -> None:
    """Run the scheduler until SIGTERM or Ctrl-C: each scheduled issue goes out on its slot, once."""
    import logging  # not loaded by `mailer --help` otherwise

    from mailer.schedule.scheduler import run as run_scheduler

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))   # each line carries its own time
    logger = logging.getLogger("mailer.schedule")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        run_scheduler(app_context(ctx).settings)
    finally:
        logger.removeHandler(handler)


def print_scheduled(settings, issue: str, at: str | None) -> None:
    from mailer.model import as_written
    from mailer.schedule.scheduler import schedule_issue, utcnow
    from mailer.schedule.slots import shown
    from mailer.schedule.states import IssueState

    done = schedule_issue(settings, issue, at, utcnow())
    which = "the time given" if done.pinned else "the next free slot"
    moved = " (moved)" if done.previous == IssueState.SCHEDULED else ""
    typer.echo(f"Scheduled {done.issue} '{as_written(done.subject)}' for "
               f"{shown(done.send_at, settings.schedule)}{moved}, {which}, to list {done.list_name}.")
    hours, editors = settings.schedule.proof_hours_before, settings.schedule.editors
    if hours and editors:
        typer.echo(f"A proof goes to {', '.join(editors)} from "
                   f"{shown(done.send_at - timedelta(hours=hours), settings.schedule)}.")
    typer.echo("`mailer schedule run` must be running then (see docs/operations.md, the monthly schedule).")


def print_unscheduled(settings, issue: str) -> None:
    from mailer.compose.gate import issue_path
    from mailer.errors import ScheduleError
    from mailer.schedule.scheduler import unschedule_issue, utcnow

    left = unschedule_issue(settings, issue, utcnow())
    if left is None and not issue_path(issue, settings).is_file():
        raise ScheduleError(f"no issue {issue!r}: no file {issue_path(issue, settings)} and nothing scheduled "
                            "by that name (`mailer issues` lists them)")
    typer.echo(f"{issue} was not scheduled; nothing changed." if left is None
               else f"Unscheduled {issue} (was {left}); it is a draft again.")
