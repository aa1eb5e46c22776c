"""`mailer tags`: every tag in use, with how many subscribers have it.

Only typer is imported at module level; the store loads inside the command.
"""

from __future__ import annotations

import json

import typer

from mailer.commands.common import console
from mailer.commands.db import engine

# The stages are imported inside each command, not here: start-up (mailer/commands/__init__.py).


def register(app: typer.Typer) -> None:
    app.command("tags")(tags)


def tags(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print the tags as JSON.")) -> None:
    """Every tag with its number of subscribers (give tags with `mailer subscribers tag`)."""
    from rich.table import Table
    from rich.text import Text

    from subscribers.tags import counts

    with engine(ctx).connect() as conn:
        found = counts(conn)
    if as_json:
        typer.echo(json.dumps(dict(found), indent=2, ensure_ascii=False))
        return
    if not found:
        console().print("No tags yet. Give some with `mailer subscribers tag ADDRESS TAG`.", markup=False)
        return
    table = Table("tag", "subscribers", box=None, pad_edge=False)
    for tag, n in found:
        table.add_row(Text(tag), f"{n:,}")
    console().print(table)
