"""`mailer bounces scan PATH | fetch | sync-sendgrid`: returned mail and provider suppression lists
-> events -> the one policy (subscribers/policy.py).

Only typer is imported at module level; parsing and the store load inside each command.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from mailer.commands.common import app_context, console, store_engine
from mailer.commands.db import secret

# The stages are imported inside each command, not here: start-up (mailer/commands/__init__.py).

app = typer.Typer(help="Bounce mail, complaints and provider suppression lists.", no_args_is_help=True)

DRY_RUN = typer.Option(False, "--dry-run", help="Read and classify; change nothing.")
AS_JSON = typer.Option(False, "--json", help="Print one JSON object per message on stdout.")
VERBOSE = typer.Option(False, "--verbose", "-v", help="A line per message.")


@app.command()
def scan(ctx: typer.Context,
         path: Path = typer.Argument(..., help="An mbox file, a Maildir, one .eml file or a folder of them.",
                                     show_default=False),
         dry_run: bool = DRY_RUN, as_json: bool = AS_JSON, verbose: bool = VERBOSE) -> None:
    """Read returned mail (DSNs, ARF complaints, prose bounces) and apply it to subscribers."""
    from mailer.events.mailsource import read_path

    _run(ctx, read_path(path), dry_run=dry_run, as_json=as_json, verbose=verbose)


@app.command()
def fetch(ctx: typer.Context, dry_run: bool = DRY_RUN, as_json: bool = AS_JSON, verbose: bool = VERBOSE) -> None:
    """The same as `scan`, over IMAP (\\[bounces.imap]); what was processed moves to processed_folder."""
    from mailer.events.imap import ImapBounces

    settings = app_context(ctx).settings
    with ImapBounces(settings.bounces.imap) as box:
        _run(ctx, box.messages(), dry_run=dry_run, as_json=as_json, verbose=verbose, on_chunk=box.processed,
             on_failed=box.failed)


@app.command("sync-sendgrid")
def sync_sendgrid(ctx: typer.Context, dry_run: bool = DRY_RUN,
                  as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON.")) -> None:
    """Read SendGrid's suppression lists (bounces, blocks, spam reports, invalid emails,
    unsubscribes) and apply them through the same policy."""
    from mailer.config import secret
    from mailer.events.suppressions import sync

    settings = app_context(ctx).settings
    key = secret(settings.delivery.sendgrid.api_key_env, key="[delivery.sendgrid] api_key_env")
    summary = sync(store_engine(ctx), settings.delivery.sendgrid, key, _limits(ctx), dry_run=dry_run)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    lists = ", ".join(f"{name} {n:,}" for name, n in summary["lists"].items())
    console().print(f"{'Would apply' if dry_run else 'Applied'}: {lists}. New events {summary['stored']:,}, "
                    f"already known {summary['duplicates']:,}, unknown addresses {summary['unknown']:,}, "
                    f"subscribers changed {summary['changed']:,}.", markup=False)


def _run(ctx, mails, *, dry_run: bool, as_json: bool, verbose: bool, on_chunk=None, on_failed=None) -> None:
    from mailer.events import bounces

    rows: list[dict] = []
    out = console()

    def each(scanned) -> None:
        if as_json:
            rows.append(scanned.as_dict())
        elif verbose and not scanned.error:
            d = scanned.as_dict()
            typer.echo(f"{d['file']}: {d['kind']} {', '.join(d['recipients'])}".rstrip())

    summary = bounces.scan(store_engine(ctx), mails, key=_key(ctx), limits=_limits(ctx), dry_run=dry_run,
                           on_message=each, on_chunk=on_chunk, on_failed=on_failed)
    _print_failed(summary.failed, moved=on_failed is not None and not dry_run)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    _print_summary(out, summary)


def _print_summary(out, summary) -> None:
    counts = {**summary.as_dict()["kinds"], "unreadable": len(summary.failed)}
    kinds = ", ".join(f"{kind} {n:,}" for kind, n in counts.items() if n)
    head = f"{summary.messages:,} messages" + (f": {kinds}" if kinds else "")
    out.print(head + ".", markup=False)
    if summary.dry_run:
        out.print(f"Dry run: {summary.events - summary.unknown:,} events for known subscribers, "
                  f"{summary.unknown:,} for unknown addresses; nothing changed.", markup=False)
    else:
        out.print(f"New events {summary.stored:,}, already seen {summary.duplicates:,}, unknown addresses "
                  f"{summary.unknown:,}, subscribers changed {summary.changed:,}.", markup=False)
    _print_unverified(out, summary.unverified)


def _print_failed(failed: list, *, moved: bool) -> None:
    """Messages no reader could read (on stderr): they changed nothing, and the rest were applied."""
    if not failed:
        return
    where = "set aside in [bounces.imap] failed_folder" if moved else "left where they are"
    typer.echo(f"warning: {len(failed):,} message(s) could not be read ({where}); the others were applied:",
               err=True)
    for item in failed:
        typer.echo(f"  {item.label}: {item.error}", err=True)


def _print_unverified(out, scanned: list) -> None:
    """The reports that name someone but prove nothing (docs/bounces.md): they changed nobody."""
    if not scanned:
        return
    out.print(f"Unverified {len(scanned):,}: not tied to a message we sent, so they changed nobody:", markup=False)
    for item in scanned:                         # one line each, never wrapped: greppable
        named = item.report.recipients
        shown = ", ".join(named[:3]) + (f" and {len(named) - 3:,} more" if len(named) > 3 else "")
        typer.echo(f"  {item.label}: {item.report.kind} {shown} ({item.why})")


def _key(ctx) -> str:
    """The secret key that signs refs; without it no ref is trusted."""
    key = secret(ctx, required=False)
    if not key:
        typer.echo("warning: MAILER_SECRET_KEY is not set: no ref can be verified, so only reports quoting "
                   "a Message-ID of ours that the ledger has can change a subscriber", err=True)
    return key or ""


def _limits(ctx):
    return app_context(ctx).settings.bounces.limits()
