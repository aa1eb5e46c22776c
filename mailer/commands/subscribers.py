"""`mailer subscribers add | remove | show | search | forget | import | export`: the admins' tools.

Only typer is imported at module level; the store loads inside each command. Every command that
changes data says what it changed; long ones show progress on stderr when it is a terminal.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from mailer.commands.common import app_context, console
from mailer.commands.db import audited, engine, secret
from subscribers.errors import SubscriberNotFound
from subscribers.status import Status

if TYPE_CHECKING:
    from rich.progress import Progress

# The stages are imported inside each command, not here: start-up (mailer/commands/__init__.py).

app = typer.Typer(help="Subscribers: add, remove, show, search, tag, untag, forget, import and export. "
                       "Every change is written to the audit log (`mailer admin log`).",
                  no_args_is_help=True)

EMAIL = typer.Argument(..., help="The address (any case; surrounding spaces are ignored).", show_default=False)
LIST = typer.Option(..., "--list", help="The list's name.", show_default=False)
JSON = typer.Option(False, "--json", help="Print the result as JSON on stdout.")


def _say(text: str) -> None:
    console().print(text, markup=False, highlight=False, soft_wrap=True)


@app.command()
def add(ctx: typer.Context, email: str = EMAIL, list_name: str = LIST,
        name: str | None = typer.Option(None, "--name", help="The subscriber's name."),
        unconfirmed: bool = typer.Option(False, "--unconfirmed", help="Add as unconfirmed (awaiting opt-in)."),
        confirmed: bool = typer.Option(False, "--confirmed", help="Add as active (the default), and say so: "
                                       "the list's welcome mail goes out."),
        resubscribe: bool = typer.Option(False, "--resubscribe", "--force",
                                         help="Override a suppression: an unsubscribed, bounced, complained "
                                              "or forgotten address is subscribed again.")) -> None:
    """Subscribe EMAIL to a list (an admin's consent record); an active reader gets the list's welcome mail once."""
    from mailer import audit
    from mailer.send import welcome
    from subscribers import store
    from subscribers.models import Status

    if confirmed and unconfirmed:
        raise typer.BadParameter("--confirmed and --unconfirmed contradict each other", param_hint="--confirmed")
    db, who = audited(ctx)
    welcomed = None
    with db.begin() as conn:
        found = store.get_list(conn, list_name)
        result = store.add_subscriber(conn, email, found.id, name=name, force=resubscribe,
                                      status=Status.UNCONFIRMED if unconfirmed else Status.ACTIVE,
                                      secret=secret(ctx, required=False))
        if result.outcome is not store.Outcome.UNCHANGED:
            lifted = resubscribe and result.outcome is store.Outcome.UPDATED
            action = audit.Action.RESUBSCRIBE if lifted else audit.Action.SUBSCRIBER_ADD
            audit.record(conn, **who._asdict(), action=action, subscriber_id=result.subscriber_id, target=found.name,
                         detail={"status": result.status, "changes": list(result.changes)})
            if result.status is Status.ACTIVE:
                welcomed = welcome.enqueue(conn, app_context(ctx).settings, result.subscriber_id, found.id)
    if result.outcome is store.Outcome.ADDED:
        extra = f" ({', '.join(c for c in result.changes if c != 'subscribed')})" if len(result.changes) > 1 else ""
        _say(f"Added {result.email} to {found.name} ({result.status}){extra}.")
    elif result.outcome is store.Outcome.UPDATED:
        _say(f"Updated {result.email} on {found.name}: {', '.join(result.changes)}.")
    else:
        _say(f"{result.email} is already on {found.name} ({result.status}); nothing changed.")
    if welcomed is not None:
        _welcome(ctx, welcomed, found.name)


def _welcome(ctx: typer.Context, send_id: int, list_name: str) -> None:
    """Send the welcome mails due now; say whether this one went."""
    from mailer.send import welcome

    sent = welcome.send_due(app_context(ctx).settings)
    if sent.get(send_id):
        _say(f"Sent {list_name}'s welcome mail.")
    else:
        _say(f"{list_name}'s welcome mail was not sent now (see `mailer issues` and the log); it stays due.")


@app.command()
def remove(ctx: typer.Context, email: str = EMAIL, list_name: str = LIST) -> None:
    """Unsubscribe EMAIL from a list (history is kept; re-adding it needs --resubscribe)."""
    from mailer import audit
    from subscribers import store

    db, actor = audited(ctx)
    with db.begin() as conn:
        found = store.get_list(conn, list_name)
        who = store.get_subscriber(conn, email)
        before = store.membership_status(conn, who.id, found.id)
        if before is None:
            raise SubscriberNotFound(f"{who.email} is not on list {found.name}")
        changed = store.unsubscribe(conn, who.id, found.id, source="admin")
        if changed:
            audit.record(conn, **actor._asdict(), action=audit.Action.UNSUBSCRIBE, subscriber_id=who.id,
                         target=found.name, detail={"was": before})
    if changed:
        _say(f"Unsubscribed {who.email} from {found.name} (was {before}).")
    else:
        _say(f"{who.email} was already unsubscribed from {found.name}; nothing changed.")


@app.command()
def show(ctx: typer.Context, email: str = EMAIL, as_json: bool = JSON) -> None:
    """Show a subscriber: data, tags, memberships with consent, and history."""
    from subscribers import store
    from subscribers.tags import tags_of

    with engine(ctx).connect() as conn:
        who = store.get_subscriber(conn, email)
        members = store.memberships_of(conn, who.id)
        history = store.history_of(conn, who.id)
        tags = tags_of(conn, who.id)
    if as_json:
        typer.echo(json.dumps(_show_json(who, members, history, tags), indent=2, ensure_ascii=False, default=str))
        return
    _print_show(who, members, history, tags)


def _show_json(who, members, history, tags) -> dict:
    return {"email": who.email, "name": who.name, "attributes": who.attributes, "global_status": who.global_status,
            "tags": tags, "created_at": who.created_at, "memberships": [dict(m._mapping) for m in members],
            "history": [dict(h._mapping) for h in history]}


def _print_show(who, members, history, tags) -> None:
    """Short lines that fit 80 columns: one line per membership and per history entry, the long
    parts (a browser's user agent, an entry's detail) on an indented line of their own."""
    from rich.text import Text

    from subscribers.normalize import display_email

    out = console()
    shown = display_email(who.email)
    out.print(Text(f"{who.email}" + (f"  ({shown})" if shown != who.email else "")), style="bold")
    out.print(Text(f"name: {who.name or '-'}"))
    if who.global_status:
        out.print(Text(f"suppressed on every list: {who.global_status}"))
    out.print(Text(f"tags: {', '.join(tags) or '-'}"))
    for key, value in sorted((who.attributes or {}).items()):
        out.print(Text(f"{key}: {value}"))
    width = max([len(m.list) for m in members] + [len(h.list or "*") for h in history] + [1])
    out.print("memberships (times in UTC)")
    for m in members:
        consent = f"consent: {m.consent_source}" if m.consent_source else "no consent recorded"
        out.print(Text(f"  {m.list:<{width}}  {m.effective}" + (f" since {_when(m.consent_at)}" if m.consent_at else "")
                       + f"; {consent}"))
        origin = ", ".join(filter(None, [m.consent_ip, m.consent_user_agent]))
        if origin:
            out.print(Text(f"  {'':<{width}}  consent from {origin}"))
        if m.optin_at:
            out.print(Text(f"  {'':<{width}}  signup asked {_when(m.optin_at)}"
                           + (f" from {m.optin_ip}" if m.optin_ip else "")))
    out.print("history (times in UTC)")
    for h in history:
        change = f" {h.old_status or '(none)'} -> {h.new_status}" if h.new_status else ""
        out.print(Text(f"  {_when(h.at)}  {h.list or '*':<{width}}  {h.action}{change} ({h.source})"))
        if h.detail:
            out.print(Text(f"  {'':16}  {'':<{width}}  {json.dumps(h.detail, ensure_ascii=False)}"))


def _when(at) -> str:
    return at.strftime("%Y-%m-%d %H:%M") if at else ""


@app.command()
def search(ctx: typer.Context, text: str = typer.Argument(..., help="Part of an address or a name.",
                                                          show_default=False),
           limit: int = typer.Option(50, "--limit", help="Show at most this many."), as_json: bool = JSON) -> None:
    """Find subscribers whose address or name contains TEXT (any case; Unicode domains in either form)."""
    from rich.table import Table
    from rich.text import Text

    from subscribers import store
    from subscribers.normalize import display_email

    with engine(ctx).connect() as conn:
        total, found = store.search(conn, text, limit)
    if as_json:
        typer.echo(json.dumps({"total": total, "results": [
            {"id": i, "email": e, "unicode": display_email(e), "name": n, "lists": lists} for i, e, n, lists in found]},
            indent=2, ensure_ascii=False))
        return
    table = Table("email", "name", "lists", box=None, pad_edge=False)
    for _id, email, name, lists in found:   # addresses as people write them (Unicode domains)
        table.add_row(Text(display_email(email)), Text(name or ""), Text(lists or "-"))
    if found:
        console().print(table)
    more = f" (showing {len(found)}; --limit for more)" if total > len(found) else ""
    _say(f"{total:,} match{'es' if total != 1 else ''}{more}.")


@app.command()
def tag(ctx: typer.Context, email: str = EMAIL,
        tags: list[str] = typer.Argument(..., help="One or more tags (any case; no commas).",
                                         show_default=False)) -> None:
    """Give EMAIL these tags (a send can pick readers by tag: `mailer send ... --tag TAG`)."""
    from subscribers.tags import add_tags

    _retag(ctx, email, tags, add_tags, "tagged {who} {done}", "already had {rest}", "subscriber.tag")


@app.command()
def untag(ctx: typer.Context, email: str = EMAIL,
          tags: list[str] = typer.Argument(..., help="The tags to take away.", show_default=False)) -> None:
    """Take these tags away from EMAIL."""
    from subscribers.tags import remove_tags

    _retag(ctx, email, tags, remove_tags, "removed {done} from {who}", "{who} had no {rest}", "subscriber.untag")


def _retag(ctx, email: str, tags: list[str], change, did: str, left: str, action: str) -> None:
    """Apply change(conn, subscriber_id, tags) -> the tags it changed, and say what it did and
    which tags it left alone, e.g. "Tagged ann@example.com press; already had vip."."""
    from mailer import audit
    from subscribers import store
    from subscribers.tags import normalize_tags

    wanted = normalize_tags(tags)
    db, actor = audited(ctx)
    with db.begin() as conn:
        who = store.get_subscriber(conn, email)
        done = change(conn, who.id, wanted)
        if done:
            audit.record(conn, **actor._asdict(), action=action, subscriber_id=who.id, detail={"tags": done})
    rest = [t for t in wanted if t not in done]
    parts = ([did.format(who=who.email, done=", ".join(done))] if done else []) + \
            ([left.format(who=who.email, rest=", ".join(rest))] if rest else [])
    text = "; ".join(parts)
    _say(text[:1].upper() + text[1:] + ".")


@app.command()
def forget(ctx: typer.Context, email: str = EMAIL,
           yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask first.")) -> None:
    """GDPR erasure: delete the subscriber's personal data everywhere; keep only a keyed hash of
    the address so that no import adds it again by accident. Cannot be undone."""
    from subscribers import store
    from subscribers.normalize import normalize_email

    key = secret(ctx)
    address = normalize_email(email)
    if not yes:
        typer.confirm(f"Erase {address} and its history's personal data for good?", abort=True)
    from mailer import audit

    db, who = audited(ctx)
    with db.begin() as conn:
        erased = store.forget(conn, address, key)
        audit.record(conn, **who._asdict(), action=audit.Action.FORGET, subscriber_id=erased,
                     detail=None if erased else {"stored": "no (only its hash)"})
    if erased is None:
        _say(f"{address} was not stored; remembered its hash so that imports skip it.")
    else:
        _say(f"Forgot {address}: subscriber, memberships and personal data in its history erased; "
             "imports will skip it.")


@app.command("import")
def import_(ctx: typer.Context,
            file: Path = typer.Argument(..., help="CSV with a header (Mailchimp exports work as they are).",
                                        show_default=False),
            list_name: str = LIST,
            unconfirmed: bool = typer.Option(False, "--unconfirmed", help="New members start unconfirmed."),
            dry_run: bool = typer.Option(False, "--dry-run", help="Do everything, then roll back: nothing changes."),
            check_dns: bool = typer.Option(False, "--check-dns", help="Also check each domain's DNS (slow)."),
            no_overwrite: bool = typer.Option(False, "--no-overwrite",
                                              help="Only fill blank names/attributes of existing subscribers."),
            as_json: bool = JSON) -> None:
    """Import subscribers from a CSV into an existing list (merged; safe to run twice)."""
    from mailer import audit
    from subscribers.importer import import_csv
    from subscribers.models import Status

    db, who = audited(ctx)
    with _progress("importing", "bytes") as progress:
        summary = import_csv(db, file, list_name, secret=secret(ctx, required=False),
                             status=Status.UNCONFIRMED if unconfirmed else Status.ACTIVE, dry_run=dry_run,
                             check_dns=check_dns, overwrite=not no_overwrite,
                             on_progress=progress and (lambda done, total, s: progress(done, total, s.rows)))
    if not dry_run:
        with db.begin() as conn:
            audit.record(conn, **who._asdict(), action=audit.Action.IMPORT, target=list_name,
                         detail=audit.import_detail(summary))
    if as_json:
        typer.echo(json.dumps(summary.as_dict(), indent=2, ensure_ascii=False))
        return
    _print_import(summary)


def _print_import(s) -> None:
    _say(s.headline())
    shown = s.invalid_rows[:20]
    if shown:
        from rich.table import Table
        from rich.text import Text

        table = Table("line", "address", "why", box=None, pad_edge=False, title="invalid rows (skipped)",
                      title_justify="left")
        for row in shown:
            table.add_row(str(row.line), Text(row.email or "(empty)"), Text(row.reason))
        console().print(table)
        if s.invalid > len(shown):
            _say(f"... and {s.invalid - len(shown):,} more (--json lists them all).")


@app.command()
def export(ctx: typer.Context,
           list_name: str | None = typer.Option(None, "--list", help="The list's name; without it, every subscriber "
                                                                     "(one row each).", show_default=False),
           out: Path = typer.Option(..., "--out", help="The CSV file to write ('-' for standard output).",
                                    show_default=False),
           status: Status | None = typer.Option(None, "--status", help="Only members with this status."),
           tag: list[str] = typer.Option([], "--tag", help="Only subscribers with this tag (repeat it: all of "
                                                          "them).", show_default=False)) -> None:
    """Export subscribers as CSV (email, name, status, subscribed_at, tags, attributes): a list's
    members, or without --list every subscriber, either narrowed by --status and --tag."""
    from subscribers.exporter import export_csv, export_selection
    from subscribers.selection import Selection

    view = Selection.of(tags=tag, status=status)
    with _progress("exporting", "rows") as progress:
        if list_name is not None:
            summary = export_csv(engine(ctx), list_name, out, status=view.status, tags=view.tags,
                                 on_progress=progress)
        else:
            summary = export_selection(engine(ctx), view, out, on_progress=progress)
    if str(out) != "-":
        which = [f"status {status.value}"] if status else []
        which += [f"tag{'s' if len(view.tags) > 1 else ''} {', '.join(view.tags)}"] if view.tags else []
        whom = f"members of {summary.list}" if list_name else "subscribers"
        _say(f"Exported {summary.rows:,} {whom}{' with ' + ' and '.join(which) if which else ''} to {out}.")


class _progress:
    """A rich progress bar on stderr when it is a terminal; yields an update(done, total) or None."""

    def __init__(self, label: str, unit: str):
        self.label, self.unit = label, unit
        self.bar: Progress | None = None

    def __enter__(self):
        err = console(stderr=True)
        if not err.is_terminal:
            return None
        from rich.progress import (
            BarColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
        )

        # The rows so far beside the bar: an import's bar moves by bytes read (its total is the
        # file's size, known at once), but people count rows.
        self.bar = bar = Progress(TextColumn(self.label), BarColumn(), TaskProgressColumn(),
                                  TextColumn("{task.fields[rows]:,} rows"), TimeRemainingColumn(),
                                  console=err, transient=True)
        bar.start()
        task = bar.add_task(self.label, total=None, rows=0)
        return lambda done, total, rows=None: bar.update(task, completed=done, total=total or None,
                                                         rows=done if rows is None else rows)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()
