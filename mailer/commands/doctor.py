"""`mailer doctor [--json]`: the sender's checks before a first send (mailer/doctor/);
`mailer doctor --dkim-record`: the DKIM TXT record to publish for the configured key."""

from __future__ import annotations

import json
from collections import Counter

import typer

from mailer.commands.common import app_context, console

# The stages are imported inside each command, not here: start-up (mailer/commands/__init__.py).

MARKS = {"pass": "[green]pass[/green]", "warn": "[yellow]warn[/yellow]", "fail": "[red]fail[/red]"}


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)


def doctor(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print the checks as JSON on stdout."),
    dkim_record: bool = typer.Option(False, "--dkim-record", help="Print the DKIM TXT record to publish for the "
                                     "configured key, and check nothing."),
) -> None:
    """Check SPF, DKIM, DMARC, MX, https one-click, the relay or SendGrid key, the bounce mailbox and the
    secret key file before a first send; exit 1 when any check fails (docs/deliverability.md)."""
    settings = app_context(ctx).settings
    if dkim_record:
        from mailer.doctor.records import dkim_record as record

        typer.echo(record(settings))
        return
    from mailer.doctor.checks import exit_code, run_checks

    checks = run_checks(settings)
    if as_json:
        typer.echo(json.dumps({"ok": not exit_code(checks), "checks": [c.as_dict() for c in checks]}, indent=2))
    else:
        from rich.markup import escape

        out = console()
        for check in checks:
            out.print(f"{MARKS[check.status.value]}  {escape(check.name)}: {escape(check.found)}", soft_wrap=True,
                      markup=True, highlight=False)
            if check.fix:
                out.print(f"      what to do: {check.fix}", markup=False, soft_wrap=True)
        counts = Counter(check.status.value for check in checks)
        out.print(f"{counts['pass']} passed, {counts['warn']} to watch, {counts['fail']} failed", markup=False)
    raise typer.Exit(exit_code(checks))
