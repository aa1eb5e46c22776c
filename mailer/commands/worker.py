"""`mailer worker`: join the running shared sends (mailer send --workers) from any machine."""

from __future__ import annotations

import typer

from mailer.commands.common import StopOnSignal, app_context, console

# The stages are imported inside each command, not here: start-up (mailer/commands/__init__.py).


def register(app: typer.Typer) -> None:
    app.command("worker")(worker)


def worker(
    ctx: typer.Context,
    forever: bool = typer.Option(False, "--forever", help="Keep polling for new shared sends instead of "
                                 "stopping when none has work left."),
    send: int | None = typer.Option(None, "--send", help="Work on this send (its #) only.", show_default=False),
    lease: float | None = typer.Option(None, "--lease", show_default=False,
                                          help="Override [delivery] worker_lease_seconds: how long a batch stays ours "
                                          "without a heartbeat (renewed 4 times per lease)."),
    coordinated: bool = typer.Option(False, "--coordinated", hidden=True,
                                     help="Started by `mailer send --workers N`: a line \"stop\" on stdin stops "
                                     "the worker after the batch on the wire, as a first signal does."),
) -> None:
    """Send batches of every running shared send (`mailer send --workers N`) until none has work left."""
    from mailer.config import key_range
    from mailer.notify.delivery import Notifier
    from mailer.send.workers import run_worker

    settings = app_context(ctx).settings
    low, high = key_range("delivery", "worker_lease_seconds")   # the config key's own range
    if lease is not None and not low <= lease <= high:
        raise typer.BadParameter(f"{lease} is not in the range {low}<=x<={high}.", param_hint="--lease")
    err = console(stderr=True)
    notifier = Notifier(settings)    # the outgoing webhooks, meanwhile (docs/api.md)
    if settings.webhooks.out:
        notifier.start()
    try:
        with StopOnSignal("the worker") as stopping:   # SIGTERM or Ctrl-C: finish the batch on the wire, then stop
            if coordinated:
                _listen(stopping)
            report = run_worker(settings, forever=forever, only=send,
                                lease=lease or settings.delivery.worker_lease_seconds, stop=stopping,
                                notice=lambda message: err.print(f"note: {message}", markup=False, soft_wrap=True))
    finally:
        notifier.stop()
    sent = sum(report.sends.values())
    typer.echo(f"worker {report.worker}: {sent:,} sent in {len(report.sends)} send(s), "
               f"{len(report.reclaimed)} batch(es) of dead workers reclaimed.")
    for send_id, why in report.stopped:
        err.print(f"error: send #{send_id} stopped: {why}", markup=False, soft_wrap=True)
    if report.stopped:
        raise typer.Exit(1)


def _listen(stopping) -> None:
    """Hear the parent (`mailer send --workers N`, workers.Coordinated) on stdin: "stop" stops this
    worker after its batch on the wire, as a first signal does. The parent's end (EOF: it died)
    says nothing: the worker goes on, as workers of a dead coordinator do (docs/workers.md)."""
    import sys
    import threading

    def hear() -> None:
        for line in sys.stdin:
            if line.strip() == "stop":
                stopping.ask()
    threading.Thread(target=hear, name="coordinator", daemon=True).start()
