"""`mailer admin add-user | remove-user | users | set-role | totp | log`: who may log in to the web
interface (/admin), with which role and second factor, and the audit log of what admins changed.

Only typer is imported at module level; argon2 and the database load inside each command.
"""

from __future__ import annotations

import sys

import typer

from mailer.commands.common import console
from mailer.commands.db import audited

# The stages are imported inside each command, not here: start-up (mailer/commands/__init__.py).

app = typer.Typer(help="Users of the admin web interface (/admin, served by `mailer serve`), and the audit log.",
                  no_args_is_help=True)

NAME = typer.Argument(..., help="The user name typed at the login page.", show_default=False)
ROLES = "owner, editor or viewer"


def _say(message: str) -> None:
    console().print(message, markup=False, highlight=False, soft_wrap=True)


def _read_password(from_stdin: bool) -> str:
    from mailer.admin_users import check_password

    if from_stdin:
        return check_password(sys.stdin.readline().rstrip("\r\n"))
    # Typer asks twice and repeats the question until both entries match.
    return check_password(typer.prompt("Password", hide_input=True, confirmation_prompt=True))


@app.command("add-user")
def add_user(ctx: typer.Context, name: str = NAME,
             role: str | None = typer.Option(None, "--role", help=f"{ROLES}; default: owner for the first user, "
                                                                  "editor after.", show_default=False),
             password_stdin: bool = typer.Option(False, "--password-stdin",
                                                 help="Read the password from the first line of standard input "
                                                      "instead of asking twice.")) -> None:
    """Add a user who can log in to /admin (the password is stored as an argon2id hash)."""
    from mailer import admin_users, audit

    admin_users.check_name(name)
    if role is not None:
        admin_users.check_role(role)
    password = _read_password(password_stdin)
    engine, who = audited(ctx)
    with engine.begin() as conn:
        given = admin_users.add_user(conn, name, password, role)
        audit.record(conn, **who._asdict(), action=audit.Action.USER_ADD, target=name, detail={"role": given})
    _say(f"Added admin user {name} ({given}).")


@app.command("remove-user")
def remove_user(ctx: typer.Context, name: str = NAME) -> None:
    """Remove a user; their sessions end at their next request."""
    from mailer import admin_users, audit

    engine, who = audited(ctx)
    with engine.begin() as conn:
        admin_users.remove_user(conn, name)
        audit.record(conn, **who._asdict(), action=audit.Action.USER_REMOVE, target=name)
    _say(f"Removed admin user {name}.")


@app.command("set-role")
def set_role(ctx: typer.Context, name: str = NAME,
             role: str = typer.Argument(..., help=ROLES, show_default=False)) -> None:
    """Give a user another role (it applies at their next click)."""
    from mailer import admin_users, audit

    engine, who = audited(ctx)
    with engine.begin() as conn:
        old, new = admin_users.set_role(conn, name, role)
        if old is not new:
            audit.record(conn, **who._asdict(), action=audit.Action.USER_ROLE, target=name,
                         detail={"from": old, "to": new})
    _say(f"{name} is now {new} (was {old})." if old is not new else f"{name} is already {new}; nothing changed.")


@app.command("users")
def users(ctx: typer.Context) -> None:
    """List the users who can log in to /admin, with their roles."""
    from mailer import admin_users

    engine, _ = audited(ctx)
    with engine.connect() as conn:
        found = admin_users.all_users(conn)
    if not found:
        _say("No admin users yet. Add one with `mailer admin add-user NAME`.")
        return
    for user in found:
        last = user.last_login_at.strftime("%Y-%m-%d %H:%M UTC") if user.last_login_at else "never"
        factor = ", second factor" if user.totp else ""
        _say(f"{user.name}  {user.role}{factor}  (added {user.created_at:%Y-%m-%d}, last login {last})")


@app.command("totp")
def totp(ctx: typer.Context, name: str = NAME,
         off: bool = typer.Option(False, "--off", help="Remove the user's second factor instead.")) -> None:
    """Enrol a TOTP second factor: scan the QR code (or type the otpauth URI) into an authenticator
    app; the login then asks for its 6-digit code. Prints 10 one-time recovery codes, once."""
    import segno

    from mailer import admin_users, audit

    engine, who = audited(ctx)
    if off:
        with engine.begin() as conn:
            had = admin_users.disable_totp(conn, name)
            if had:
                audit.record(conn, **who._asdict(), action=audit.Action.USER_TOTP, target=name,
                             detail={"second factor": "removed"})
        _say(f"Removed {name}'s second factor." if had else f"{name} had no second factor; nothing changed.")
        return
    with engine.begin() as conn:
        enrolled = admin_users.enrol_totp(conn, name)
        audit.record(conn, **who._asdict(), action=audit.Action.USER_TOTP, target=name,
                     detail={"second factor": "enrolled"})
    segno.make(enrolled.uri, error="m").terminal(out=sys.stdout, compact=True)
    _say(f"Scan this into an authenticator app, or type the key:\n{enrolled.uri}\n")
    _say("Recovery codes (each works once, instead of a code; keep them somewhere safe, they are not shown again):")
    for code in enrolled.recovery:
        _say(f"  {code}")


@app.command("log")
def log(ctx: typer.Context,
        user: str | None = typer.Option(None, "--user", help="Only what this user (or system user, or API "
                                                            "token) did.", show_default=False),
        subscriber: str | None = typer.Option(None, "--subscriber", help="Only what was done to this address.",
                                              show_default=False),
        action: str | None = typer.Option(None, "--action", help="Only this action (e.g. subscriber.tag).",
                                          show_default=False),
        limit: int = typer.Option(50, "--limit", min=1, max=10_000, help="Show at most this many, newest first."),
        as_json: bool = typer.Option(False, "--json", help="Print the entries as JSON.")) -> None:
    """The audit log: every change made in /admin, by an admin command or through the API."""
    import json

    from mailer import audit
    from subscribers import store

    engine, _ = audited(ctx)
    with engine.connect() as conn:
        sid = store.get_subscriber(conn, subscriber).id if subscriber else None
        page = audit.entries(conn, actor=user, action=action, subscriber_id=sid, limit=limit)
    if as_json:
        typer.echo(json.dumps([row._asdict() for row in page.rows], indent=2, ensure_ascii=False, default=str))
        return
    if not page.rows:
        _say("No entries.")
        return
    for row in page.rows:
        on = row.email or (f"subscriber #{row.subscriber_id} (forgotten)" if row.subscriber_id else "")
        where = f" from {row.ip}" if row.ip else ""
        parts = [f"{row.at:%Y-%m-%d %H:%M:%S}", f"{row.actor} ({row.via}{where})", row.action,
                 " ".join(filter(None, [on, row.target or ""])), audit.describe(row.detail)]
        _say("  ".join(p for p in parts if p))
    if page.has_older:
        _say(f"... older entries: --limit {limit * 2}")


token_app = typer.Typer(help="Tokens of the REST API (/api/v1, docs/api.md): make, list, revoke.",
                        no_args_is_help=True)
app.add_typer(token_app, name="token")
TOKEN_NAME = typer.Argument(..., help="The token's name: the audit log's actor for what it changes.",
                            show_default=False)


@token_app.command("create")
def token_create(ctx: typer.Context, name: str = TOKEN_NAME,
                 scope: list[str] = typer.Option(..., "--scope", help="lists:read, subscribers:read, "
                                                 "subscribers:write, subscribers:import or reports:read; "
                                                 "repeat for several.", show_default=False)) -> None:
    """Make an API token. The token is printed once, as the last line: only its hash is stored."""
    from mailer import api_tokens, audit

    scopes = api_tokens.parse_scopes(scope)
    engine, who = audited(ctx)
    with engine.begin() as conn:
        made = api_tokens.create(conn, name, scopes)
        audit.record(conn, **who._asdict(), action=audit.Action.TOKEN_CREATE, target=name,
                     detail={"scopes": sorted(scopes)})
    _say(f"Made API token {name} ({', '.join(sorted(scopes))}). It is shown only now; keep it secret:")
    typer.echo(made.token)


@token_app.command("list")
def token_list(ctx: typer.Context) -> None:
    """The API tokens: name, scopes, when made, last used and revoked."""
    from mailer import api_tokens

    engine, _ = audited(ctx)
    with engine.connect() as conn:
        found = api_tokens.all_tokens(conn)
    if not found:
        _say("No API tokens. Make one with `mailer admin token create NAME --scope S`.")
        return
    for token in found:
        used = f"{token.last_used_at:%Y-%m-%d %H:%M} UTC" if token.last_used_at else "never"
        state = f"revoked {token.revoked_at:%Y-%m-%d %H:%M} UTC" if token.revoked_at else "live"
        _say(f"{token.name}  {' '.join(sorted(token.scopes))}  (made {token.created_at:%Y-%m-%d}, "
             f"last used {used}, {state})")


@token_app.command("revoke")
def token_revoke(ctx: typer.Context, name: str = TOKEN_NAME) -> None:
    """Revoke a token: its next request is refused (401)."""
    from mailer import api_tokens, audit

    engine, who = audited(ctx)
    with engine.begin() as conn:
        changed = api_tokens.revoke(conn, name)
        if changed:
            audit.record(conn, **who._asdict(), action=audit.Action.TOKEN_REVOKE, target=name)
    _say(f"Revoked API token {name}." if changed else f"API token {name} was revoked already; nothing changed.")
