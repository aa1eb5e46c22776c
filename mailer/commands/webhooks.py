"""`mailer webhooks [--failed] | webhooks test URL`: the outgoing webhooks' recent deliveries, and a
signed ping to check an endpoint (docs/api.md, "Outgoing webhooks")."""

from __future__ import annotations

import typer

from mailer.commands.common import app_context, console, store_engine

# The stages are imported inside each command, not here: start-up (mailer/commands/__init__.py).

app = typer.Typer(help="Outgoing webhooks ([[webhooks.out]]): recent deliveries and failures, a test ping.",
                  invoke_without_command=True)


def _say(message: str) -> None:
    console().print(message, markup=False, highlight=False, soft_wrap=True)


@app.callback()
def deliveries(ctx: typer.Context,
               failed: bool = typer.Option(False, "--failed", help="Only the deliveries that failed for good."),
               limit: int = typer.Option(50, "--limit", min=1, max=10_000, help="At most this many, newest first.")
               ) -> None:
    """The latest deliveries, newest first: event, endpoint, state, tries, the receiver's last answer."""
    if ctx.invoked_subcommand is not None:
        return
    from mailer.notify.delivery import recent

    with store_engine(ctx).connect() as conn:
        rows = recent(conn, limit=limit, failed_only=failed)
    if not rows:
        _say("No failed deliveries." if failed else "No deliveries yet.")
        return
    for row in rows:
        answer = f"HTTP {row.last_status}" if row.last_status is not None else (row.last_error or "not tried yet")
        when = f", next try {row.next_attempt_at:%Y-%m-%d %H:%M:%S} UTC" if row.state == "pending" and \
            row.next_attempt_at else ""
        _say(f"{row.at:%Y-%m-%d %H:%M:%S}  {row.type}  {row.event_id}  {row.url}  {row.state} after "
             f"{row.attempts} tr{'y' if row.attempts == 1 else 'ies'} ({answer}){when}")


@app.command("test")
def test(ctx: typer.Context, url: str = typer.Argument(..., help="The endpoint to ping.", show_default=False),
         secret_env: str | None = typer.Option(None, "--secret-env", show_default=False,
                                               help="The variable holding its whsec_ secret (default: the "
                                                    "secret_env of the [[webhooks.out]] with this url).")) -> None:
    """Send a signed `ping` event to URL once, and say what it answered."""
    from mailer.config import secret
    from mailer.errors import MailerError
    from mailer.notify import signing
    from mailer.notify.delivery import ping

    settings = app_context(ctx).settings
    env = secret_env or next((hook.secret_env for hook in settings.webhooks.out if hook.url == url), None)
    if env is None:
        raise MailerError(f"{url} is not in [[webhooks.out]]; name its secret with --secret-env VARIABLE")
    key = signing.key_of(secret(env, key="--secret-env"), env)
    outcome = ping(url, key)
    if not outcome.ok:
        raise MailerError(f"{url} answered {outcome.error or f'HTTP {outcome.status}'}")
    _say(f"{url} answered HTTP {outcome.status}: the signed ping was accepted.")
