"""Admin users of the web interface: name + password -> an argon2id hash in `admin_users`.

Used by `mailer admin add-user | remove-user | users` and by the web login (mailer/web/admin/).
Passwords are hashed with argon2-cffi's PasswordHasher, whose default type is Argon2id with the
library's current parameters; a hash made with older parameters is re-hashed at the next login.
Nothing here ever stores or logs a password. Every function takes an open Connection and never
commits; the caller owns the transaction.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import NamedTuple

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection

from mailer.errors import AdminUserError
from subscribers.models import UtcDateTime, utcnow

metadata = MetaData()

admin_users = Table(
    "admin_users", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("password_hash", String(200), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("last_login_at", UtcDateTime),
)

USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
MIN_PASSWORD = 12


class AdminUser(NamedTuple):
    name: str
    created_at: datetime
    last_login_at: datetime | None


def _hasher():
    return PasswordHasher()  # Argon2id, RFC 9106's second recommended parameter set


def check_name(name: str) -> str:
    if not USER_NAME.fullmatch(name or ""):
        raise AdminUserError(f"user name {name!r} must be 1-64 letters, digits, '.', '_', '@' or '-'")
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise AdminUserError(f"the password must be at least {MIN_PASSWORD} characters long")
    if password != password.strip() or "\n" in password:
        raise AdminUserError("the password must not start or end with spaces or contain line breaks")
    return password


def add_user(conn: Connection, name: str, password: str) -> None:
    check_name(name)
    check_password(password)
    if conn.execute(select(admin_users.c.id).where(admin_users.c.name == name)).first():
        raise AdminUserError(f"an admin user named {name!r} already exists (remove-user first to reset it)")
    conn.execute(insert(admin_users).values(name=name, password_hash=_hasher().hash(password), created_at=utcnow()))


def remove_user(conn: Connection, name: str) -> None:
    if not conn.execute(delete(admin_users).where(admin_users.c.name == name)).rowcount:
        raise AdminUserError(f"no admin user named {name!r} (see `mailer admin users`)")


def all_users(conn: Connection) -> list[AdminUser]:
    rows = conn.execute(select(admin_users.c.name, admin_users.c.created_at, admin_users.c.last_login_at)
                        .order_by(admin_users.c.name))
    return [AdminUser(*row) for row in rows]


# A valid hash of a random password: an unknown user name costs the same time as a wrong password,
# so response times do not tell which names exist.
_DUMMY: list[str] = []


def verify(conn: Connection, name: str, password: str) -> str | None:
    """The user's session stamp when `password` is theirs, else None (same cost either way).

    The stamp is derived from the stored hash: a new password (remove-user, add-user) changes it,
    which ends every session made with the old one (mailer/web/admin/auth.py)."""
    hasher = _hasher()
    row = conn.execute(select(admin_users.c.id, admin_users.c.password_hash)
                       .where(admin_users.c.name == name)).first()
    if row is None:
        if not _DUMMY:
            _DUMMY.append(hasher.hash("not a password of anyone's"))
        try:
            hasher.verify(_DUMMY[0], password)
        except VerificationError:
            pass
        return None
    try:
        hasher.verify(row.password_hash, password)
    except (VerificationError, InvalidHashError):
        return None
    values = {"last_login_at": utcnow()}
    if hasher.check_needs_rehash(row.password_hash):
        values["password_hash"] = hasher.hash(password)
    conn.execute(update(admin_users).where(admin_users.c.id == row.id).values(**values))
    return stamp(values.get("password_hash", row.password_hash))


def stamp(password_hash: str) -> str:
    """16 hex digits derived from the hash (never the hash itself: the cookie is readable)."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


def current_stamp(conn: Connection, name: str) -> str | None:
    """The stamp of the user's stored hash, or None when the user no longer exists."""
    value = conn.execute(select(admin_users.c.password_hash).where(admin_users.c.name == name)).scalar()
    return None if value is None else stamp(value)
