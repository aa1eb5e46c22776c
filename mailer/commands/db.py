"""`mailer db upgrade | current`: the database schema (subscribers' migrations, then mailer's).

Also the small helpers the store's commands share: the engine for the configured database and
the MAILER_SECRET_KEY secret. Only typer is imported at module level.
"""

from __future__ import annotations

from typing import Literal, overload

import typer

from mailer.commands.common import app_context, console, store_engine
from mailer.errors import ConfigError

# The stages are imported inside each command, not here: start-up (mailer/commands/__init__.py).

app = typer.Typer(help="The database schema: apply migrations, show the current revision.", no_args_is_help=True)


def database_url(ctx: typer.Context) -> str:
    from mailer.config import database_url as configured

    return configured(app_context(ctx).settings)


def engine(ctx: typer.Context):
    """The store's Engine for this command, its schema (not mailer's) brought to head on first use."""
    return store_engine(ctx, "subscribers")


def audited(ctx: typer.Context):
    """(Engine, who): for a command that changes something and writes it to the audit log, which
    lives in mailer's schema (mailer/audit.py); who is the person at the terminal."""
    from mailer.audit import cli_user

    return store_engine(ctx), cli_user()


@overload
def secret(ctx: typer.Context, required: Literal[True] = True) -> str: ...
@overload
def secret(ctx: typer.Context, required: bool) -> str | None: ...
def secret(ctx: typer.Context, required: bool = True) -> str | None:
    """MAILER_SECRET_KEY (the env var the config names). Not required: None when unset, and the
    store asks for it only if it really needs it (a database with forgotten addresses)."""
    from mailer.config import secret_key

    settings = app_context(ctx).settings
    try:
        return secret_key(settings)
    except ConfigError:
        if required:
            raise
        return None


@app.command()
def upgrade(ctx: typer.Context) -> None:
    """Apply every pending migration: the subscriber store's, then mailer's own."""
    from mailer import migrate as mailer_migrate
    from subscribers import db

    engine = store_engine(ctx, "none")
    before = db.current_revision(engine)
    head = db.upgrade(engine)
    out = console()
    out.print(f"subscribers schema: {before or 'empty'} -> {head}" if before != head
              else f"subscribers schema: already at {head}", markup=False, highlight=False)
    result = mailer_migrate.upgrade(engine)
    out.print(f"mailer schema: {result}" if result else "mailer schema: upgraded", markup=False)


@app.command()
def current(ctx: typer.Context) -> None:
    """Show the database and the revision each schema (subscribers', mailer's) is at, and the newest."""
    from sqlalchemy.engine import make_url

    from mailer import migrate as mailer_migrate
    from subscribers import db

    url = database_url(ctx)
    engine = store_engine(ctx, "none")
    lines = [make_url(url).render_as_string(hide_password=True),
             _schema_line("subscribers", db.current_revision(engine), db.head_revision())]
    lines.append(_schema_line("mailer", mailer_migrate.current_revision(engine), mailer_migrate.head_revision()))
    console().print("\n".join(lines), markup=False, highlight=False)


def _schema_line(name: str, rev: str | None, head: str) -> str:
    state = "up to date" if rev == head else f"behind (newest {head}; run `mailer db upgrade`)"
    return f"{name} schema: {rev or 'empty'} ({state})"
