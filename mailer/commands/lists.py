"""`mailer lists [create | edit (or set) | embed | delete]`: the admins' subscriber lists and their counts per status.

Only typer is imported at module level; the store loads inside each command.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from mailer.commands.common import app_context, console
from mailer.commands.db import audited, engine
from mailer.locale import LANGUAGES
from subscribers.errors import ListExists
from subscribers.status import Status

# The stages are imported inside each command, not here: start-up (mailer/commands/__init__.py).

app = typer.Typer(help="Subscriber lists. Without a subcommand: a table of lists with counts per status.")

LANGUAGE_HELP = (f"The language its readers are served in: {', '.join(LANGUAGES)} (without one: the reader's "
                 "own where known, else \\[newsletter] language).")
STATUS_COLUMNS = (Status.ACTIVE, Status.UNCONFIRMED, Status.UNSUBSCRIBED, Status.BOUNCED, Status.COMPLAINED)
SHORT = {Status.UNCONFIRMED: "unconf.", Status.UNSUBSCRIBED: "unsub.", Status.COMPLAINED: "compl."}


@app.callback(invoke_without_command=True)
def lists(ctx: typer.Context,
          as_json: bool = typer.Option(False, "--json", help="Print the lists as JSON.")) -> None:
    """Show every list with its members counted per (effective) status: active, unconfirmed (unconf.),
    unsubscribed (unsub.), bounced, complained (compl.)."""
    if ctx.invoked_subcommand is not None:
        return
    from mailer.send.welcome import welcomes
    from subscribers import store

    with audited(ctx)[0].connect() as conn:   # both schemas: the welcome mails are mailer's
        rows = store.list_counts(conn)
        welcome = welcomes(conn)
    if as_json:
        typer.echo(json.dumps([{"name": r.name, "title": r.title, "description": r.description, "private": r.private,
                                "language": r.language, "welcome": welcome.get(r.id),
                                "counts": {s: counts.get(s, 0) for s in STATUS_COLUMNS},
                                "total": sum(counts.values())} for r, counts in rows], indent=2))
        return
    if not rows:
        console().print("No lists yet. Create one with `mailer lists create NAME --title TITLE`.", markup=False)
        return
    console().print(_table(rows, welcome))


def _table(rows, welcome: dict[int, str]):
    from rich.table import Table
    from rich.text import Text

    # 80 columns: one space between columns and short headings for the counts (the JSON and
    # `lists --help` spell them out); the name and the title are the columns that wrap (rich
    # drops a column that finds no room, so the others never wrap).
    table = Table(box=None, pad_edge=False, collapse_padding=True)
    table.add_column("list", overflow="fold", min_width=6)
    table.add_column("title", overflow="fold", min_width=8)
    table.add_column("shown", no_wrap=True)
    table.add_column("lang", no_wrap=True)
    for status in STATUS_COLUMNS:
        table.add_column(SHORT.get(status, status), justify="right", no_wrap=True)
    table.add_column("total", justify="right", no_wrap=True)
    table.add_column("welcome")
    for row, counts in rows:  # Text(): a title is data, never rich markup
        table.add_row(Text(row.name), Text(row.title), "private" if row.private else "public", row.language or "-",
                      *(f"{counts.get(s, 0):,}" for s in STATUS_COLUMNS), f"{sum(counts.values()):,}",
                      Text(Path(welcome[row.id]).name if row.id in welcome else "-"))
    return table


@app.command()
def create(ctx: typer.Context,
           name: str = typer.Argument(..., help="Short name: lower-case letters, digits, '.', '_', '-'.",
                                      show_default=False),
           title: str = typer.Option("", "--title", help="What readers see (default: the name)."),
           description: str = typer.Option("", "--description", help="A line about the list (shown on /subscribe)."),
           private: bool = typer.Option(False, "--private", help="Never offered on the public /subscribe page."),
           language: str | None = typer.Option(None, "--language", show_default=False, help=LANGUAGE_HELP),
           exist_ok: bool = typer.Option(False, "--exist-ok",
                                         help="Succeed, changing nothing, if the list already exists.")) -> None:
    """Create a list."""
    from mailer import audit
    from subscribers import store

    db, who = audited(ctx)
    try:
        with db.begin() as conn:
            made = store.create_list(conn, name, title, description, private=private,
                                     language=_shipped(language) or None)
            audit.record(conn, **who._asdict(), action=audit.Action.LIST_CREATE, target=name)
    except ListExists:
        if not exist_ok:
            raise
        console().print(f"List {name} already exists; nothing changed.", markup=False, highlight=False)
        return
    speaks = f", in {made.language}" if made.language else ""
    console().print(f"Created {'private ' if made.private else ''}list {made.name} ({made.title}{speaks}).",
                    markup=False, highlight=False)


@app.command()
def edit(ctx: typer.Context,
         name: str = typer.Argument(..., help="The list to change.", show_default=False),
         title: str | None = typer.Option(None, "--title", help="What readers see."),
         description: str | None = typer.Option(None, "--description", help="A line about the list."),
         private: bool | None = typer.Option(None, "--private/--public",
                                                help="Hide the list from /subscribe, or offer it there."),
         language: str | None = typer.Option(None, "--language", show_default=False,
                                             help=LANGUAGE_HELP + ' "" for none of its own.')) -> None:
    """Change a list's title, description, visibility on /subscribe or language (`lists set` is the same)."""
    from mailer import audit
    from subscribers import store

    db, who = audited(ctx)
    with db.begin() as conn:
        found, changed = store.edit_list(conn, name, title=title, description=description, private=private,
                                         language=_shipped(language))
        if changed:
            audit.record(conn, **who._asdict(), action=audit.Action.LIST_EDIT, target=name, detail={"fields": changed})
    if changed:
        console().print(f"Updated list {found.name}: {', '.join(changed)}.", markup=False, highlight=False)
    else:
        console().print(f"List {found.name} unchanged.", markup=False, highlight=False)


@app.command()
def welcome(ctx: typer.Context,
            name: str = typer.Argument(..., help="The list.", show_default=False),
            file: Path | None = typer.Argument(None, help="The welcome issue: a Markdown issue file (or an issue's "
                                               "name in [compose] issues_dir).", show_default=False),
            off: bool = typer.Option(False, "--off", help="Send no welcome mail any more.")) -> None:
    """Set the mail each reader gets once, when they confirm this list (checked by the lint now and
    before each sending; never archived)."""
    from mailer import audit
    from mailer.compose.gate import issue_path
    from mailer.send import dispatch
    from mailer.send import welcome as welcomes
    from subscribers import store

    if off == (file is not None):
        raise typer.BadParameter("give a FILE, or --off", param_hint="FILE")
    settings = app_context(ctx).settings
    db, who = audited(ctx)
    with db.connect() as conn:
        found = store.get_list(conn, name)
    if off:
        with db.begin() as conn:
            had = welcomes.clear_welcome(conn, found.id)
            if had:
                audit.record(conn, **who._asdict(), action=audit.Action.LIST_EDIT, target=name,
                             detail={"welcome": "off"})
        console().print(f"List {name} sends no welcome mail{' any more' if had else ''}.", markup=False)
        return
    assert file is not None
    path = issue_path(str(file), settings)
    composed = welcomes.check(settings, path, dispatch.language_of(settings, db, found.id))   # LintFailed: refused
    with db.begin() as conn:
        welcomes.set_welcome(conn, found.id, path, composed.slug, composed.subject)
        audit.record(conn, **who._asdict(), action=audit.Action.LIST_EDIT, target=name,
                     detail={"welcome": path.name})
    console().print(f"List {name} welcomes each reader who confirms with {path} ({composed.subject!r}).",
                    markup=False, highlight=False)


app.command("set", help="Change a list's title, description, visibility or language (the same as `lists edit`).")(edit)


def _shipped(language: str | None) -> str | None:
    """--language as given, if it is a language we ship a catalog for ("" clears it)."""
    if language and language not in LANGUAGES:
        raise typer.BadParameter(f"{language!r} is not one of the languages shipped: {', '.join(LANGUAGES)}",
                                 param_hint="--language")
    return language


@app.command()
def embed(ctx: typer.Context, name: str = typer.Argument(..., help="The list the form subscribes to.",
                                                         show_default=False)) -> None:
    """Print an HTML form to paste into another site; it posts to this service's /subscribe."""
    from mailer.web.embed import embed_form
    from subscribers import store

    with engine(ctx).connect() as conn:
        found = store.get_list(conn, name)
    typer.echo(embed_form(app_context(ctx).settings, found))


@app.command()
def delete(ctx: typer.Context,
           name: str = typer.Argument(..., help="The list to delete.", show_default=False),
           yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask first.")) -> None:
    """Delete a list and its memberships (subscribers and their history stay)."""
    from mailer import audit
    from subscribers import store

    eng, who = audited(ctx)
    with eng.connect() as conn:
        found = store.get_list(conn, name)
        members = next((sum(c.values()) for r, c in store.list_counts(conn) if r.id == found.id), 0)
    if not yes:
        typer.confirm(f"Delete list {found.name} ({found.title}) and its {members:,} memberships?", abort=True)
    with eng.begin() as conn:
        removed = store.delete_list(conn, name)
        audit.record(conn, **who._asdict(), action=audit.Action.LIST_DELETE, target=name,
                     detail={"memberships": removed})
    console().print(f"Deleted list {found.name} and {removed:,} memberships.", markup=False, highlight=False)
