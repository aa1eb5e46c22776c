"""The `mailer` command: wires the pipeline's stages together and nothing else.

    source -> compose -> inline -> personalize -> dispatch/deliver -> events -> subscriber state

The process around it (`mailer`, `python -m mailer`) is mailer/__main__.py.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import typer

from mailer import engines
from mailer.commands import (
    admin,
    bounces,
    db,
    doctor,
    init,
    issue,
    issues,
    lists,
    report,
    schedule,
    send,
    serve,
    subscribers,
    tags,
    webhooks,
    worker,
)
from mailer.commands.common import AppContext
from mailer.errors import ConfigError, MailerError
from subscribers.errors import SubscriberError

# The base of the exceptions typer raises for a command line it cannot parse (exit 2, with the
# usage line): typer >= 0.20 vendors click as its private typer._click, older typer raises click's
# own, and typer exports neither. This is the one place that names them; main() catches it.
# tests/test_library_contracts.py fails, naming typer's version, if it moves. (Imported by name
# at run time: the two modules' types differ, and only one of them is installed.)
try:
    _click = importlib.import_module("typer._click.exceptions")
except ImportError:  # pragma: no cover - typer < 0.20
    _click = importlib.import_module("click.exceptions")
ClickException = _click.ClickException

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
    config: Path | None = typer.Option(
        None, "--config", envvar="MAILER_CONFIG", help="Config file (default ./config.toml)."
    ),
) -> None:
    ctx.obj = AppContext(config)


# Each command and group, plainly imported: a renamed or missing module fails loudly here.
# `mailer --help` lists them in this order, the single commands before the groups.
app.add_typer(issue.app, name="issue")
app.add_typer(lists.app, name="lists")
app.add_typer(subscribers.app, name="subscribers")
app.add_typer(db.app, name="db")
send.register(app)
serve.register(app)
init.register(app)
app.add_typer(schedule.app, name="schedule")
issues.register(app)
app.add_typer(bounces.app, name="bounces")
report.register(app)
app.add_typer(admin.app, name="admin")
tags.register(app)
worker.register(app)
app.add_typer(webhooks.app, name="webhooks")
doctor.register(app)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; any project error becomes one line on stderr and an exit code. Every database
    Engine the command made is disposed when it ends (mailer/engines.py)."""
    try:
        result = app(args=argv, prog_name="mailer", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        print("Aborted.", file=sys.stderr)
        return 1
    except ClickException as exc:
        exc.show()
        return exc.exit_code
    except (MailerError, ConfigError, SubscriberError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)
    except Exception as exc:
        if not _database_away(exc):
            raise   # a bug: its traceback
        print(f"error: the database failed: {_first_line(exc)}; nothing was half-written (each change is one "
              "transaction): run the same command again once it is back", file=sys.stderr)
        return 1
    finally:
        engines.dispose_all()


def _database_away(exc: BaseException) -> bool:
    """A database that went away (PostgreSQL restarting, SQLite locked or its disk full), which a
    command outside a send's retries (mailer/send/stall.py) meets: one line, not a traceback. sqlalchemy
    is looked up, not imported: `mailer --help` never loads it (mailer/commands/__init__.py)."""
    found = sys.modules.get("sqlalchemy.exc")
    return found is not None and isinstance(exc, found.OperationalError | found.InterfaceError)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
