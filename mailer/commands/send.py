"""`mailer send ISSUE --list NAME` and `mailer issue proof ISSUE --to ADDR[,ADDR...]`.

Only typer is imported here; compose, dispatch and the backends load inside the commands.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import replace
from datetime import datetime

import typer

from mailer.commands import issue as issue_cmds
from mailer.commands.common import StopOnSignal, app_context, console
from mailer.send.deliver.registry import BackendName

# The stages are imported inside each command, not here: start-up (mailer/commands/__init__.py).


ISSUE = typer.Argument(..., help="The issue file (issues/2024-11.md) or its name (2024-11).", show_default=False)
BACKEND = typer.Option(None, "--backend", help="Override \\[delivery] backend.", case_sensitive=False)


def register(app: typer.Typer) -> None:
    app.command("send")(send)
    issue_cmds.app.command("proof")(proof)


def send(
    ctx: typer.Context,
    issue: str = ISSUE,
    list_name: str | None = typer.Option(None, "--list", help="The list to send to.", show_default=False),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Compose and personalize every message; deliver nothing."),
    backend: BackendName | None = BACKEND,
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
    tags: list[str] | None = typer.Option(None, "--tag", help="Only readers with this tag (repeat: any of them).",
                                             show_default=False),
    take_over: bool = typer.Option(False, "--take-over", help="Resume a send whose runner still looks alive "
                                   "(fresh heartbeat): only when you know that process is gone."),
    workers: int = typer.Option(1, "--workers", min=1, max=64, help="Share the send among N local `mailer worker` "
                                "processes (PostgreSQL; more can join from other machines)."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Send again to the readers whose delivery "
                                      "failed (refused); never to those accepted or in doubt."),
    status: bool = typer.Option(False, "--status", help="Show the progress of ISSUE's sends across all workers; "
                                "send nothing."),
    warmup: bool = typer.Option(False, "--warmup", help="A new sending domain: cap each day's sends on a ramp "
                                "(1,000, 2,000, 5,000, 10,000, doubling), the most engaged readers first."),
) -> None:
    """Send ISSUE to every active subscriber of a list (or of a segment: --tag), exactly once (a rerun resumes)."""
    from mailer.errors import SendError

    settings = app_context(ctx).settings
    err = console(stderr=True)
    if status:
        from mailer.compose.gate import issue_path
        from mailer.send.dispatch import open_store
        from mailer.send.warmup import status_lines as warmup_lines
        from mailer.send.workers import status_lines

        slug = issue_path(issue, settings).stem
        typer.echo("\n".join(status_lines(settings, slug, list_name)
                              + warmup_lines(open_store(settings), slug, list_name)))
        return
    if warmup:  # [delivery.pacing] warmup for this send (mailer/send/warmup.py)
        pacing = replace(settings.delivery.pacing, warmup=True)
        settings = replace(settings, delivery=replace(settings.delivery, pacing=pacing))
    if list_name is None:
        raise typer.BadParameter("name the list to send to", param_hint="--list")
    if workers > 1:  # before anything is composed or asked
        from mailer.send.workers import refuse_on_sqlite

        refuse_on_sqlite(settings, f"--workers {workers}")
    stopping = StopOnSignal()
    try:
        summary, subject = _send(ctx, settings, err, issue, list_name, yes=yes, dry_run=dry_run, backend=backend,
                                 tags=tags, take_over=take_over, workers=workers, retry_failed=retry_failed,
                                 stopping=stopping)
    except SendError as exc:   # the run stopped: --json still prints what it did, with the error
        if as_json:
            _json(exc.summary, str(exc), issue=issue, list_name=list_name)
        raise
    _report(summary, subject, as_json)
    if stopping.signal and summary.status == "stopped":
        raise _interrupted(stopping, summary, rerun(issue, list_name, tags, workers), workers)
    unsettled = 0 if summary.already_sent or summary.dry_run else summary.failed + summary.in_doubt
    if unsettled:
        err.print(f"error: {summary.failed:,} readers failed and {summary.in_doubt:,} are in doubt "
                  f"(`mailer send {issue} --status` lists the send)", markup=False, soft_wrap=True)
        raise typer.Exit(1)


def _send(ctx, settings, err, issue: str, list_name: str, *, yes: bool, dry_run: bool, backend, tags,
          take_over: bool, workers: int, retry_failed: bool, stopping: StopOnSignal):
    """Compose, plan and run (or dry-run) the send; returns (summary, the subject as written)."""
    from mailer.send import dispatch
    from mailer.send.segments import describe

    with _warnings_to(err):
        # lint errors stop here: no ledger row, no mail; the footer speaks the list's language
        composed = _gate(issue, settings, err, language=dispatch.list_language(settings, list_name))
        if not dry_run:
            _ensure_key(settings, err)
        plan = dispatch.plan_send(settings, composed, list_name, backend.value if backend else None, tuple(tags or ()))
        failed = dispatch.failed_readers(plan) if retry_failed and not dry_run else 0
        if retry_failed and not dry_run:
            err.print(f"note: {failed:,} readers of send #{plan.send_id} failed; --retry-failed sends to them again",
                      markup=False, soft_wrap=True)
        if failed:   # asked about below, put back to pending only once confirmed
            plan = replace(plan, readers=plan.readers + failed, already_sent=False)
        if plan.already_sent:
            summary = dispatch.run_send(settings, plan)
        elif dry_run:
            with _progress(err, "dry run") as on_progress:
                summary = dispatch.dry_run(settings, plan, on_progress=on_progress)
        else:
            if not yes:
                verb = "Resume sending" if plan.send_id else "Send"
                who = "remaining subscribers" if plan.send_id else "active subscribers"
                typer.confirm(f"{verb} '{shown_subject(composed.subject)}' to {plan.readers:,} {who} of "
                              f"{describe(plan.list_name, plan.segment)} via {plan.backend}?", abort=True, err=True)
            if failed:
                dispatch.retry_failed(plan)
            # a signal stops the run after the batch on the wire; with workers, each worker's (run_shared)
            with stopping, _progress(err) as on_progress:
                if workers > 1:
                    from mailer.send.workers import run_shared

                    summary = run_shared(settings, plan, workers, config=app_context(ctx).config,
                                         on_progress=on_progress, take_over=take_over, stopping=stopping,
                                         notice=lambda message: err.print(f"note: {message}"))
                else:
                    summary = dispatch.run_send(settings, plan, on_progress=on_progress, take_over=take_over,
                                                notice=lambda message: err.print(f"note: {message}"),
                                                stop=stopping)
    return summary, shown_subject(composed.subject)


def _json(summary, error: str | None, **known) -> None:
    """The summary as one JSON line on stdout; with `error` when the run stopped (and only what is
    known, when it stopped before the send was found or made)."""
    data: dict[str, object] = ({"issue": known.get("issue"), "list": known.get("list_name")} if summary is None
                               else {**summary.as_dict(), "duration": round(summary.duration, 3)})
    if error is not None:
        data["error"] = error
    typer.echo(json.dumps(data))


def rerun(issue: str, list_name: str, tags, workers: int = 1) -> str:
    """The command that continues this send, as the operator would type it."""
    import shlex

    words = ["mailer", "send", issue, "--list", list_name]
    for tag in tags or ():
        words += ["--tag", tag]
    if workers > 1:
        words += ["--workers", str(workers)]
    return shlex.join(words)


def _interrupted(stopping: StopOnSignal, summary, command: str, workers: int = 1):
    """The one line `mailer send` ends with when a signal stopped it between batches."""
    from mailer.errors import SendError

    left = summary.total - summary.sent - summary.failed - summary.skipped
    wire = "the batch on the wire was" if workers == 1 else "each worker's batch on the wire was"
    error = SendError(f"stopped by {stopping.signal.name if stopping.signal else 'a signal'} after "
                      f"{summary.sent:,} sent; {wire} recorded and {left:,} readers are left: "
                      f"run `{command}` to continue")
    error.exit_code = stopping.exit_code
    return error


def proof(
    ctx: typer.Context,
    issue: str = ISSUE,
    to: str = typer.Option(..., "--to", help="Comma-separated addresses of the editors.", show_default=False),
    backend: BackendName | None = BACKEND,
) -> None:
    """Send a copy of ISSUE marked as a proof ("[PROOF]" subject) to editors, outside the ledger."""
    from mailer.send.dispatch import proof_where, send_proof
    from subscribers.normalize import unsendable_reason

    settings = app_context(ctx).settings
    addresses = [a.strip() for a in to.split(",") if a.strip()]
    if not addresses:
        raise typer.BadParameter("give at least one address", param_hint="--to")
    for address in addresses:
        if (why := unsendable_reason(address)) is not None:
            raise typer.BadParameter(f"{address!r} {why}", param_hint="--to")
    err = console(stderr=True)
    with _warnings_to(err):
        composed = _gate(issue, settings, err, proof=True)
        name = backend.value if backend else settings.delivery.backend
        results = send_proof(settings, composed, addresses, backend_name=name)
    for address, result in zip(addresses, results, strict=True):   # each proof's own file or message
        typer.echo(f"{address}: {proof_where(result, name)}")
    if not all(r.ok for r in results):
        raise typer.Exit(1)


def _gate(issue: str, settings, err, *, proof: bool = False, language: str | None = None):
    """Compose ISSUE once and lint it (mailer.compose.gate.gate); the report goes to stderr, before any
    question; an error raises LintFailed."""
    from mailer.compose.gate import gate, issue_path

    return gate(issue_path(issue, settings), settings, proof=proof, language=language,
                show=lambda report: err.print(report, markup=False, soft_wrap=True))[1]


def _ensure_key(settings, err) -> None:
    """The first send makes the secret key file that signs every unsubscribe link (mailer.config)."""
    from mailer.config import ensure_secret_key

    made = ensure_secret_key(settings)
    if made:
        err.print(f"note: made a secret key in {made} (mode 0600, ignored by git): it signs the "
                  "unsubscribe links; back it up with the database and never change it", markup=False,
                  soft_wrap=True)


def shown_subject(subject: str) -> str:
    """The subject as the editor wrote it: merge fields with their fallbacks, not markers."""
    from mailer.model import as_written

    return as_written(subject)


def _report(summary, subject: str, as_json: bool) -> None:
    from mailer.send.segments import describe

    if not as_json:  # "crank (tags: press)" in the lines below
        summary = replace(summary, list=describe(summary.list, summary.segment))
    if as_json:
        _json(summary, None)
    elif summary.already_sent:
        typer.echo(f"'{subject}' was already sent to {summary.list} (send #{summary.send_id}: {summary.sent:,} "
                   f"sent, {summary.failed:,} failed, {summary.skipped:,} skipped); nothing sent.")
    elif summary.dry_run:
        typer.echo(f"Dry run: would send '{subject}' to {summary.sent:,} subscribers of {summary.list} via "
                   f"{summary.backend}; {summary.failed:,} addresses could not be written; nothing sent.")
    else:
        line = (f"Sent '{subject}' to {summary.list} via {summary.backend}: {summary.sent:,} sent, "
                f"{summary.failed:,} failed, {summary.skipped:,} skipped in {summary.duration:.1f} s.")
        if summary.deferred:
            line += (f" {summary.deferred:,} deferred (temporary refusals) until {_when(summary.retry_at)}: run the "
                     "same command then to retry them.")
        if summary.in_doubt:
            line += (f" {summary.in_doubt:,} may or may not have been taken (connection lost after sending): the "
                     "next run names them and applies [delivery] on_interrupted.")
        typer.echo(line)


def _when(iso: str | None) -> str:
    """An ISO time as the reader's local time, to the minute."""
    return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M %Z") if iso else "later"


class _progress:
    """A rich progress bar on stderr: sent, failed, rate and time left."""

    def __init__(self, err, label: str = "sending"):
        from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

        self.err, self.first = err, 0
        self.task: TaskID | None = None
        self.bar = Progress(TextColumn(label), BarColumn(), TextColumn("{task.completed:,}/{task.total:,}"),
                            TextColumn("sent {task.fields[sent]:,} · failed {task.fields[failed]:,}"),
                            TextColumn("{task.fields[rate]:,.0f}/s"), TimeRemainingColumn(),
                            console=self.err, transient=False)

    def __enter__(self):
        self.bar.__enter__()
        return self.update

    def update(self, s) -> None:
        done = s.sent + s.failed + s.skipped
        if self.task is None:
            self.first = done
            self.task = self.bar.add_task("send", total=s.total, sent=0, failed=0, rate=0.0)
        rate = (done - self.first) / s.duration if s.duration else 0.0
        self.bar.update(self.task, completed=done, sent=s.sent, failed=s.failed, rate=rate)

    def __exit__(self, *exc):
        self.bar.__exit__(*exc)


class _warnings_to:
    """Show Python warnings (e.g. a non-https base_url) as one `warning:` line each on stderr."""

    def __init__(self, err):
        self.err = err

    def __enter__(self):
        self.catcher = warnings.catch_warnings()
        self.catcher.__enter__()
        warnings.simplefilter("default")
        warnings.showwarning = lambda message, *a, **k: self.err.print(f"warning: {message}", markup=False,
                                                                           soft_wrap=True)

    def __exit__(self, *exc):
        self.catcher.__exit__(*exc)
