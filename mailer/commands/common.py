"""What every command shares: the lazily loaded settings and the two consoles."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import typer


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


@contextmanager
def store_engine(ctx: typer.Context):
    """The database's Engine with both migration histories applied, disposed afterwards: commands
    also run in-process, many times over (the tests), and each would otherwise keep its pool open."""
    from mailer.config import database_url
    from mailer.migrate import connect

    engine = connect(database_url(app_context(ctx).settings))
    try:
        yield engine
    finally:
        engine.dispose()


def console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)
