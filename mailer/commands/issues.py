"""`mailer issues`: every issue with its state, send time and, once sent, the ledger's figures."""

from __future__ import annotations

import typer

from mailer.commands.common import app_context

# The stages are imported inside each command, not here: start-up (mailer/commands/__init__.py).


def register(app: typer.Typer) -> None:
    app.command("issues")(issues)


def issues(ctx: typer.Context) -> None:
    """List the issues: draft, scheduled, sending, sent or failed, when, and what the ledger counted."""
    from mailer.schedule.scheduler import overview
    from mailer.schedule.slots import shown

    settings = app_context(ctx).settings
    rows = overview(settings)
    if not rows:
        typer.echo(f"No issues in {settings.compose.issues_dir}.")
        return
    typer.echo(f"{'ISSUE':<12} {'STATE':<10} {'SEND TIME':<44} LEDGER")
    for r in rows:
        when = shown(r.send_at, settings.schedule) + (" --at" if r.pinned else "") if r.send_at else "-"
        figures = "; ".join(f"{s.list_name}: {s.sent:,} sent, {s.failed:,} failed, {s.skipped:,} skipped"
                            f"{'' if s.status == 'done' else ' (' + s.status + ')'}" for s in r.sends) or "-"
        typer.echo(f"{r.issue:<12} {r.state:<10} {when:<44} {figures}")
        if r.reason:
            typer.echo(f"{'':<12} {r.reason}")
