"""The `mailer` command: wires the pipeline's stages together and nothing else.

    source -> compose -> inline -> personalize -> dispatch/deliver -> events -> subscriber state

The process around it (`mailer`, `python -m mailer`) is mailer/__main__.py.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from mailer.commands.common import AppContext

try:  # typer >= 0.20 vendors click
    from typer._click import exceptions as _click
except ImportError:  # pragma: no cover
    from click import exceptions as _click

app = typer.Typer(
    name="mailer",
    help="CRANK Call's newsletter pipeline: compose, send, manage subscribers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    ctx: typer.Context,
    config: Optional[Path] = typer.Option(
        None, "--config", envvar="MAILER_CONFIG", help="Config file (default ./config.toml)."
    ),
) -> None:
    ctx.obj = AppContext(config)


def _wire() -> None:
    """Add each command group. Missing groups are simply not wired yet."""
    import importlib

    for module, name in (("issue", "issue"), ("lists", "lists"), ("subscribers", "subscribers"),
                         ("db", "db"), ("send", None), ("serve", None), ("init", None),
                         ("schedule", "schedule"), ("issues", None), ("bounces", "bounces"), ("report", None),
                         ("admin", "admin"), ("worker", None)):
        try:
            mod = importlib.import_module(f"mailer.commands.{module}")
        except ModuleNotFoundError as exc:
            if exc.name == f"mailer.commands.{module}":
                continue
            raise
        mod.register(app) if name is None else app.add_typer(mod.app, name=name)


_wire()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; any project error becomes one line on stderr and an exit code."""
    from mailer.errors import ConfigError, MailerError

    try:
        from subscribers.errors import SubscriberError
    except ModuleNotFoundError:  # pragma: no cover - before the subscribers package exists
        SubscriberError = MailerError

    try:
        result = app(args=argv, prog_name="mailer", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        print("Aborted.", file=sys.stderr)
        return 1
    except _click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except (MailerError, ConfigError, SubscriberError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)
