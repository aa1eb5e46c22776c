"""What every command shares: the lazily loaded settings, the two consoles, stopping on a signal."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
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


class StopOnSignal:
    """Ctrl-C (SIGINT) and SIGTERM while a command sends: the first asks the run to stop after the
    batch on the wire (it is the `stop` callable that dispatch.run_send and workers.run_worker ask
    between batches, as the scheduler's stop event is); a second stops the process at once, its
    batch left in flight for the next run (docs/exactly-once.md, "Stopping a send").

        with StopOnSignal("the send") as stopping:
            run_send(..., stop=stopping)
        if stopping.signal: ...            # stopped early: say how to continue

    `on_first` and `on_again` run in the handler (the first signal; just before stopping at once):
    `mailer send --workers N` asks its workers to stop, or kills them (workers.Coordinated). `ask()`
    stops the run as a first signal would, without being one: how such a worker hears its parent.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, what: str = "the send"):
        self.what = what
        self.signal: signal.Signals | None = None
        self.asked = False
        self.on_first: Callable[[], None] = lambda: None
        self.on_again: Callable[[], None] = lambda: None
        self._previous: dict = {}

    def __call__(self) -> bool:
        return self.signal is not None or self.asked

    def ask(self) -> None:
        """Stop after the batch on the wire, as on a first signal (the caller says why)."""
        self.asked = True

    @property
    def exit_code(self) -> int:
        """128 + the signal's number, the shell's convention (130 for Ctrl-C, 143 for SIGTERM)."""
        return 128 + (self.signal or signal.SIGTERM).value

    def __enter__(self) -> StopOnSignal:
        self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def _handle(self, number: int, frame) -> None:
        # os.write, not print or rich: a handler may run while the progress bar holds its lock
        if self.signal is None:
            self.signal = signal.Signals(number)
            _say(f"\n{self.signal.name}: {self.what} stops after the batch on the wire is recorded "
                 "(signal again to stop at once)\n")
            self.on_first()
            return
        _say(f"\n{signal.Signals(number).name} again: stopping at once; the batch on the wire stays in flight, "
             "and the next run names it and applies [delivery] on_interrupted\n")
        try:
            self.on_again()
        finally:
            os._exit(128 + number)   # like kill -9 for the ledger: every change so far is committed


def _say(line: str) -> None:
    try:
        os.write(2, line.encode("utf-8", "replace"))
    except OSError:   # stderr closed (the terminal went away): stopping matters more than saying so
        pass
