"""`mailer init`: make what a newsletter needs once, next to config.toml: the secret key file.

The key signs every unsubscribe link mailed and keys the forget hashes, so it must outlive the
shell that first sent (docs/editor.md). `mailer send` makes it too on its first run.
"""

from __future__ import annotations

import os

import typer

from mailer.commands.common import app_context

# The stages are imported inside each command, not here: start-up (mailer/commands/__init__.py).


def register(app: typer.Typer) -> None:
    app.command("init")(init)


def init(ctx: typer.Context) -> None:
    """Write the secret key file (.mailer-secret, mode 0600) next to the config file, once."""
    from mailer.config import ensure_secret_key, secret_key, secret_key_file

    settings = app_context(ctx).settings
    made = ensure_secret_key(settings)
    if made:
        typer.echo(f"Made a secret key in {made} (mode 0600, ignored by git). It signs every unsubscribe "
                   "link: back it up with the database and never change it.")
    elif os.environ.get(settings.secret_key_env):
        typer.echo(f"{settings.secret_key_env} is set: it is the key; no file written.")
    else:
        secret_key(settings)   # an empty or unreadable file is reported
        typer.echo(f"The secret key is in {secret_key_file(settings)} already; nothing changed.")
