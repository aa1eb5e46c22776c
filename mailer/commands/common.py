"""What every command shares: the lazily loaded settings and the two consoles."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import typer

from mailer import engines

# The stages are imported inside each command, not here: start-up (mailer/commands/__init__.py).


@dataclass
class AppContext:
    config: Path | None = None
    _settings: object = field(default=None, repr=False)

    @property
    def settings(self):
        """The frozen Settings, read once on first use (mailer.config is the only reader)."""
        if self._settings is None:
            from mailer.config import load_settings

            self._settings = load_settings(self.config)
        return self._settings


def app_context(ctx: typer.Context) -> AppContext:
    return ctx.find_root().obj


def store_engine(ctx: typer.Context, schemas: str = "all"):
    """The database's Engine for this command (mailer/engines.py: made once, disposed when the
    command ends); `schemas`: which migration histories it brings to head first."""
    from mailer.config import database_url

    return engines.get(database_url(app_context(ctx).settings), schemas)


def console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)
