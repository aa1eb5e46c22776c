"""`mailer issues [--json]`: whether a scheduler is running, then every issue with its state (a
scheduled issue whose time passed is "due" or "missed"), send time, the readers its slot will reach
and, once sent, its figures (mailer/reports/figures.py: the same as `mailer report`, the admin
report and the dashboard)."""

from __future__ import annotations

import json

import typer

from mailer.commands.common import app_context

# The stages are imported inside each command, not here: start-up (mailer/commands/__init__.py).


def register(app: typer.Typer) -> None:
    app.command("issues")(issues)


def issues(ctx: typer.Context,
           as_json: bool = typer.Option(False, "--json", help="Print the issues and their figures as JSON.")) -> None:
    """List the issues: draft, scheduled, sending, sent or failed, when, and their figures (each
    send on its own line, a segment with its tags)."""
    from mailer.schedule.scheduler import overview, store, utcnow
    from mailer.schedule.slots import shown
    from mailer.schedule.status import heartbeat, reach, state_now

    settings = app_context(ctx).settings
    now = utcnow()
    rows = overview(settings)
    with store(settings).connect() as conn:
        beat = heartbeat(conn, now)
        reached = {r.issue: reach(conn, r.issue, r.list_name) for r in rows if r.state == "scheduled"}
    for r in rows:
        r.state, r.reason = state_now(r, now, settings.schedule)
        r.reach = reached.get(r.issue)
    if as_json:
        typer.echo(json.dumps({"scheduler": {"running": beat.running,
                                             "last_tick": beat.last.isoformat() if beat.last else None},
                               "issues": [_as_dict(r) for r in rows]}, indent=2))
        return
    typer.echo(beat.said(now, settings.schedule))
    if not rows:
        typer.echo(f"No issues in {settings.compose.issues_dir}.")
        return
    typer.echo(f"{'ISSUE':<12} {'STATE':<10} {'SEND TIME':<44} LEDGER")
    for r in rows:
        when = shown(r.send_at, settings.schedule) + (" --at" if r.pinned else "") if r.send_at else "-"
        lines = [_ledger(s) for s in r.figures.sends] if r.figures else ["-"]
        typer.echo(f"{r.issue:<12} {r.state:<10} {when:<44} {lines[0]}")
        for line in lines[1:]:
            typer.echo(f"{'':<68} {line}")
        if r.figures:
            typer.echo(f"{'':<12} {_events(r.figures)}")
        if r.reach:
            typer.echo(f"{'':<12} to {r.list_name}: {r.reach.readers:,} readers to reach, "
                       f"{r.reach.have:,} already have it")
        if r.reason:
            typer.echo(f"{'':<12} {r.reason}")


def _ledger(s) -> str:
    """`crank (tags: press): 5 sent, 1 failed, 0 skipped`, then what is in doubt, deferred or pending."""
    c = s.ledger
    more = "".join(f", {c[k]:,} {label}" for k, label in (("in_doubt", "in doubt"), ("deferred", "deferred"),
                                                             ("pending", "pending")) if c[k])
    status = "" if s.status == "done" else f" ({s.status})"
    return f"{s.name}: {c['accepted']:,} sent, {c['failed']:,} failed, {c['skipped']:,} skipped{more}{status}"


def _events(fig) -> str:
    """One line of what came back, readers not events."""
    names = ("hard_bounces", "soft_bounces", "blocks", "complaints", "unsubscribes", "opens", "clicks")
    said = ", ".join(f"{fig.shown(n)} {n.replace('_', ' ')}" for n in names)
    return f"{fig.readers:,} readers; delivered {fig.shown('delivered')}; {said}"


def _as_dict(r) -> dict:
    return {"issue": r.issue, "state": r.state, "send_at": r.send_at.isoformat() if r.send_at else None,
            "pinned": r.pinned, "list": r.list_name, "reason": r.reason,
            "reach": {"readers": r.reach.readers, "have": r.reach.have} if r.reach else None,
            "figures": r.figures.as_dict() if r.figures else None}
