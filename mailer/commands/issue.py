"""`mailer issue build | preview | proof | schedule | unschedule`: an editor's view of one issue
(stages 1-3 plus the lint report), its proof and its place on the schedule (`proof` is in send.py).

Only typer is imported here; the stages load inside each command, so `mailer --help` and every
other command stay fast.
"""

from pathlib import Path

import typer

from mailer.commands.common import app_context
from mailer.commands.schedule import print_scheduled, print_unscheduled
from mailer.errors import MailerError

# The stages are imported inside each command, not here: start-up (mailer/commands/__init__.py).

app = typer.Typer(help="One issue: build it to files with a lint report, preview it live, send a proof, "
                       "schedule or unschedule it.", no_args_is_help=True)

ISSUE = typer.Argument(..., help="The issue file (issues/2024-12.md) or its name (2024-12).", show_default=False)


@app.command()
def build(
    ctx: typer.Context,
    issue: str = ISSUE,
    out: Path | None = typer.Option(None, "--out", help="Folder for email.mjml, email.html and "
                                       "email.txt (default: build/<issue name>)."),
    check_links: bool = typer.Option(False, "--check-links", help="Also fetch every web address the "
                                     "email links to, once each, and warn about those that fail, "
                                     "are missing or redirect to another host (uses the network)."),
) -> None:
    """Compose ISSUE for a preview recipient and print the lint report.

    Exits 1 on an error (the message names file and line) or an error-level lint finding;
    warnings are printed and do not fail the build.
    """
    from mailer.compose.gate import issue_path
    from mailer.compose.lint import lint
    from mailer.compose.preview import fill_preview, preview_values
    from mailer.compose.render import compose, templates_dir
    from mailer.compose.source import read_issue

    settings = app_context(ctx).settings
    path = issue_path(issue, settings)
    parsed = read_issue(path)
    composed = compose(parsed, settings)
    out = out or Path("build") / parsed.slug
    values = preview_values(settings, parsed.slug)
    files = {"email.mjml": composed.mjml, "email.html": fill_preview(composed.html, values, "html"),
             "email.txt": fill_preview(composed.text, values, "text")}
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, content in files.items():
            (out / name).write_text(content, encoding="utf-8")
    except OSError as exc:
        raise MailerError(f"cannot write to {out}: {exc.strerror or exc}") from exc
    typer.echo(f"Wrote {out}/email.mjml, email.html and email.txt (for {values['email']}).")
    report = lint(parsed, composed, templates_dir(settings), online=check_links)
    typer.echo(report.render(str(path)))
    if report.errors:
        raise typer.Exit(1)


@app.command()
def preview(
    ctx: typer.Context,
    issue: str = ISSUE,
    port: int = typer.Option(8025, "--port", help="Port on 127.0.0.1."),
) -> None:
    """Serve ISSUE on http://127.0.0.1:PORT/, rebuilt whenever the file or a template changes."""
    from mailer.compose.gate import issue_path
    from mailer.compose.preview import PreviewServer

    settings = app_context(ctx).settings
    issue = str(issue_path(issue, settings))
    try:
        server = PreviewServer(issue, settings, port=port).start()
    except OSError as exc:        # most often: the port is taken
        raise MailerError(f"cannot serve on 127.0.0.1:{port}: {exc.strerror or exc} "
                          f"(try --port {port + 1})") from exc
    typer.echo(f"Previewing {issue} at {server.url} (the text part at {server.url}email.txt); "
               "it rebuilds when you save. Ctrl-C stops.")
    try:
        server.stop.wait()
    except KeyboardInterrupt:
        typer.echo("Stopped.")
    finally:
        server.close()


@app.command()
def schedule(
    ctx: typer.Context,
    issue: str = typer.Argument(..., help="The issue file (issues/2024-12.md) or its name (2024-12).",
                                show_default=False),
    at: str | None = typer.Option(None, "--at", help="Send at this time instead of the next free slot: "
                                     "\"2026-12-01 09:00\" in the \\[schedule] time zone, or with an offset."),
) -> None:
    """Compose and lint ISSUE (errors refuse), then schedule it for the next free slot or --at."""
    print_scheduled(app_context(ctx).settings, issue, at)


@app.command()
def unschedule(
    ctx: typer.Context,
    issue: str = typer.Argument(..., help="The issue's name (2024-12) or file.", show_default=False),
) -> None:
    """Take ISSUE off the schedule (back to draft); a send already under way cannot be taken back."""
    print_unscheduled(app_context(ctx).settings, issue)
