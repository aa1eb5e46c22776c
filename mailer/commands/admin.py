"""`mailer admin add-user | remove-user | users`: who may log in to the web interface (/admin).

Only typer is imported at module level; argon2 and the database load inside each command.
"""

from __future__ import annotations

import sys

import typer

from mailer.commands.common import console, store_engine

# The stages are imported inside each command, not here: start-up (mailer/commands/__init__.py).

app = typer.Typer(help="Users of the admin web interface (/admin, served by `mailer serve`).",
                  no_args_is_help=True)

NAME = typer.Argument(..., help="The user name typed at the login page.", show_default=False)


def _engine(ctx: typer.Context):
    return store_engine(ctx)   # both schemas: admin_users lives in mailer's own history


def _say(message: str) -> None:
    console().print(message, markup=False, highlight=False)


def _read_password(from_stdin: bool) -> str:
    from mailer.admin_users import check_password

    if from_stdin:
        return check_password(sys.stdin.readline().rstrip("\r\n"))
    # Typer asks twice and repeats the question until both entries match.
    return check_password(typer.prompt("Password", hide_input=True, confirmation_prompt=True))


@app.command("add-user")
def add_user(ctx: typer.Context, name: str = NAME,
             password_stdin: bool = typer.Option(False, "--password-stdin",
                                                 help="Read the password from the first line of standard input "
                                                      "instead of asking twice.")) -> None:
    """Add a user who can log in to /admin (the password is stored as an argon2id hash)."""
    from mailer import admin_users

    admin_users.check_name(name)
    password = _read_password(password_stdin)
    with _engine(ctx).begin() as conn:
        admin_users.add_user(conn, name, password)
    _say(f"Added admin user {name}.")


@app.command("remove-user")
def remove_user(ctx: typer.Context, name: str = NAME) -> None:
    """Remove a user; their sessions end at their next request."""
    from mailer import admin_users

    with _engine(ctx).begin() as conn:
        admin_users.remove_user(conn, name)
    _say(f"Removed admin user {name}.")


@app.command("users")
def users(ctx: typer.Context) -> None:
    """List the users who can log in to /admin."""
    from mailer import admin_users

    with _engine(ctx).connect() as conn:
        found = admin_users.all_users(conn)
    if not found:
        _say("No admin users yet. Add one with `mailer admin add-user NAME`.")
        return
    for user in found:
        last = user.last_login_at.strftime("%Y-%m-%d %H:%M UTC") if user.last_login_at else "never"
        _say(f"{user.name}  (added {user.created_at:%Y-%m-%d}, last login {last})")
