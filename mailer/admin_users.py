"""Admin users of the web interface: name + password -> an argon2id hash in `admin_users`, a role,
and an optional TOTP second factor with one-time recovery codes.

Used by `mailer admin add-user | remove-user | users | set-role | totp` and by the web login
(mailer/web/admin/). Roles: a viewer reads everything and changes nothing; an editor also manages
subscribers and issues; an owner also manages users and lists (docs/admin.md).
Passwords are hashed with argon2-cffi's PasswordHasher, whose default type is Argon2id with the
library's current parameters; a hash made with older parameters is re-hashed at the next login.
Nothing here ever stores or logs a password. Every function takes an open Connection and never
commits; the caller owns the transaction.
"""

from __future__ import annotations

import enum
import hashlib
import re
import secrets
from datetime import datetime
from typing import NamedTuple

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
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
    Column("role", String(16), nullable=False, server_default="owner"),   # Role
    Column("totp_secret", String(64)),          # base32; None: no second factor
    Column("totp_step", BigInteger),            # the last time step accepted: each code works once
    Column("session_epoch", Integer, nullable=False, server_default="0"),   # logging out adds one
)

recovery_codes = Table(
    "admin_recovery_codes", metadata,
    Column("user_id", Integer, ForeignKey(admin_users.c.id, ondelete="CASCADE"), primary_key=True),
    Column("code_hash", String(64), primary_key=True),
)


class Role(enum.StrEnum):
    """What a user may do; each role may do everything the ones below it may."""

    VIEWER = "viewer"      # reads every page, changes nothing
    EDITOR = "editor"      # + subscribers (add, edit, tag, act on many, import, forget) and issues
    OWNER = "owner"        # + lists and users

    def allows(self, needed: Role) -> bool:
        return RANK[self] >= RANK[needed]


RANK = {Role.VIEWER: 0, Role.EDITOR: 1, Role.OWNER: 2}
RECOVERY_CODES = 10
TOTP_ISSUER = "crank-mailer"

USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
MIN_PASSWORD = 12


class AdminUser(NamedTuple):
    name: str
    created_at: datetime
    last_login_at: datetime | None
    role: Role
    totp: bool


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


def check_role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise AdminUserError(f"role {value!r} must be one of {', '.join(Role)}") from None


def add_user(conn: Connection, name: str, password: str, role: Role | str | None = None) -> Role:
    """Add a user; without a role the first user is an owner and every later one an editor.
    Returns the role given."""
    check_name(name)
    check_password(password)
    if conn.execute(select(admin_users.c.id).where(admin_users.c.name == name)).first():
        raise AdminUserError(f"an admin user named {name!r} already exists (remove-user first to reset it)")
    if role is None:
        role = Role.EDITOR if conn.execute(select(admin_users.c.id).limit(1)).first() else Role.OWNER
    role = check_role(str(role))
    conn.execute(insert(admin_users).values(name=name, password_hash=_hasher().hash(password), created_at=utcnow(),
                                            role=str(role)))
    return role


def remove_user(conn: Connection, name: str, *, keep_an_owner: bool = False) -> None:
    """Remove a user. The command line may remove the last owner (the emergency stop: the server's
    operator adds a new one); the web pages keep one (`keep_an_owner`), or nobody could manage users."""
    row = _user(conn, name)
    if keep_an_owner and Role(row.role) is Role.OWNER and _owners(conn) == 1:
        raise AdminUserError(f"{name} is the last owner; make another user owner first (set-role)")
    conn.execute(delete(admin_users).where(admin_users.c.id == row.id))


def set_role(conn: Connection, name: str, role: Role | str) -> tuple[Role, Role]:
    """(old role, new role); the last owner cannot step down (nobody could manage users then)."""
    role = check_role(str(role))
    row = _user(conn, name)
    old = Role(row.role)
    if old is Role.OWNER and role is not Role.OWNER and _owners(conn) == 1:
        raise AdminUserError(f"{name} is the last owner; make another user owner first")
    if old is not role:
        conn.execute(update(admin_users).where(admin_users.c.id == row.id).values(role=str(role)))
    return old, role


def _user(conn: Connection, name: str):
    row = conn.execute(select(admin_users).where(admin_users.c.name == name)).first()
    if row is None:
        raise AdminUserError(f"no admin user named {name!r} (see `mailer admin users`)")
    return row


def _owners(conn: Connection) -> int:
    return len(conn.execute(select(admin_users.c.id).where(admin_users.c.role == str(Role.OWNER))).all())


def all_users(conn: Connection) -> list[AdminUser]:
    rows = conn.execute(select(admin_users.c.name, admin_users.c.created_at, admin_users.c.last_login_at,
                               admin_users.c.role, admin_users.c.totp_secret).order_by(admin_users.c.name))
    return [AdminUser(name, created, last, Role(role), bool(totp)) for name, created, last, role, totp in rows]


# ---------------------------------------------------------------- the second factor (TOTP, RFC 6238)

class Enrolment(NamedTuple):
    secret: str
    uri: str                     # otpauth://totp/...: what an authenticator app scans
    recovery: list[str]          # shown once; stored only as hashes


def new_totp_secret() -> str:
    return pyotp.random_base32()


def totp_uri(name: str, secret: str, issuer: str = TOTP_ISSUER) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=name, issuer_name=issuer)


def enrol_totp(conn: Connection, name: str, secret: str | None = None, issuer: str = TOTP_ISSUER) -> Enrolment:
    """Give the user a second factor (a new one replaces the old, with new recovery codes)."""
    row = _user(conn, name)
    secret = secret or new_totp_secret()
    conn.execute(update(admin_users).where(admin_users.c.id == row.id).values(totp_secret=secret, totp_step=None))
    codes = [_new_code() for _ in range(RECOVERY_CODES)]
    conn.execute(delete(recovery_codes).where(recovery_codes.c.user_id == row.id))
    conn.execute(insert(recovery_codes), [{"user_id": row.id, "code_hash": _code_hash(c)} for c in codes])
    return Enrolment(secret, totp_uri(name, secret, issuer), codes)


def disable_totp(conn: Connection, name: str) -> bool:
    """Remove the second factor and its recovery codes; True if there was one."""
    row = _user(conn, name)
    conn.execute(update(admin_users).where(admin_users.c.id == row.id).values(totp_secret=None, totp_step=None))
    conn.execute(delete(recovery_codes).where(recovery_codes.c.user_id == row.id))
    return row.totp_secret is not None


def has_totp(conn: Connection, name: str) -> bool:
    return conn.execute(select(admin_users.c.totp_secret).where(admin_users.c.name == name)).scalar() is not None


def check_code(conn: Connection, name: str, code: str, at: datetime | None = None) -> bool:
    """True once for a current TOTP code (30 s steps, one step of clock drift either way) or for
    an unused recovery code, which is then used up. A code already accepted is refused."""
    row = conn.execute(select(admin_users.c.id, admin_users.c.totp_secret, admin_users.c.totp_step)
                       .where(admin_users.c.name == name)).first()
    if row is None or row.totp_secret is None:
        return False
    typed = "".join(code.split())
    if typed.isdigit() and len(typed) == 6:
        totp = pyotp.TOTP(row.totp_secret)
        now = at or utcnow()
        step = totp.timecode(now)
        for candidate in (step - 1, step, step + 1):
            if row.totp_step is not None and candidate <= row.totp_step:
                continue                                     # replayed, or older than one used
            if secrets.compare_digest(totp.generate_otp(candidate), typed):
                conn.execute(update(admin_users).where(admin_users.c.id == row.id).values(totp_step=candidate))
                return True
        return False
    gone = conn.execute(delete(recovery_codes).where(recovery_codes.c.user_id == row.id,
                                                     recovery_codes.c.code_hash == _code_hash(typed))).rowcount
    return bool(gone)


def recovery_left(conn: Connection, name: str) -> int:
    row = _user(conn, name)
    return len(conn.execute(select(recovery_codes.c.code_hash).where(recovery_codes.c.user_id == row.id)).all())


def _new_code() -> str:
    raw = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz234567") for _ in range(10))   # 50 bits
    return f"{raw[:5]}-{raw[5:]}"


def _code_hash(code: str) -> str:
    return hashlib.sha256(code.strip().lower().replace("-", "").encode()).hexdigest()


# A valid hash of a random password: an unknown user name costs the same time as a wrong password,
# so response times do not tell which names exist.
_DUMMY: list[str] = []


class Stored(NamedTuple):
    """A user's id and password hash, read before the (slow) check, outside any transaction."""
    user_id: int
    password_hash: str
    epoch: int = 0


def stored_password(conn: Connection, name: str) -> Stored | None:
    row = conn.execute(select(admin_users.c.id, admin_users.c.password_hash, admin_users.c.session_epoch)
                       .where(admin_users.c.name == name)).first()
    return None if row is None else Stored(row.id, row.password_hash, row.session_epoch)


def check_password_hash(found: Stored | None, password: str) -> tuple[bool, str | None]:
    """(right, a new hash when the stored one has outdated parameters): argon2 alone, 64 MiB and
    a fraction of a second, so the caller runs it outside any transaction or lock. An unknown user
    (`found` None) costs the same, against a dummy hash."""
    hasher = _hasher()
    if found is None:
        if not _DUMMY:
            _DUMMY.append(hasher.hash("not a password of anyone's"))
        try:
            hasher.verify(_DUMMY[0], password)
        except VerificationError:
            pass
        return False, None
    try:
        hasher.verify(found.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False, None
    return True, hasher.hash(password) if hasher.check_needs_rehash(found.password_hash) else None


def record_login(conn: Connection, found: Stored, new_hash: str | None = None) -> str | None:
    """After a right password: the login time (and the re-hash) stored, the session stamp returned.
    None when the password was changed (or the user removed) while it was being checked."""
    values = {"last_login_at": utcnow(), **({"password_hash": new_hash} if new_hash else {})}
    changed = conn.execute(update(admin_users).where(admin_users.c.id == found.user_id,
                                                     admin_users.c.password_hash == found.password_hash)
                           .values(**values)).rowcount
    return stamp(new_hash or found.password_hash, found.epoch) if changed else None


def verify(conn: Connection, name: str, password: str) -> str | None:
    """The user's session stamp when `password` is theirs, else None (same cost either way).

    The stamp is derived from the stored hash: a new password (remove-user, add-user) changes it,
    which ends every session made with the old one (mailer/web/admin/auth.py). The web login does
    the same in three steps, the check outside any transaction (mailer/web/admin/login.py)."""
    found = stored_password(conn, name)
    right, new_hash = check_password_hash(found, password)
    return record_login(conn, found, new_hash) if right and found is not None else None


def stamp(password_hash: str, epoch: int = 0) -> str:
    """16 hex digits derived from the hash (never the hash itself: the cookie is readable) and the
    user's session epoch, which logging out moves on (`end_sessions`)."""
    text = password_hash if not epoch else f"{password_hash}|{epoch}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def end_sessions(conn: Connection, name: str) -> None:
    """Every session of the user ends now, on the server: a copied cookie stops working too."""
    conn.execute(update(admin_users).where(admin_users.c.name == name)
                 .values(session_epoch=admin_users.c.session_epoch + 1))


def current_stamp(conn: Connection, name: str) -> str | None:
    """The stamp of the user's stored hash, or None when the user no longer exists."""
    found = session_user(conn, name)
    return None if found is None else found[0]


def session_user(conn: Connection, name: str) -> tuple[str, Role] | None:
    """(stamp, role) of the user, read on every request: a new password or a logout ends their
    sessions, a new role applies at their next click. None when the user no longer exists."""
    row = conn.execute(select(admin_users.c.password_hash, admin_users.c.role, admin_users.c.session_epoch)
                       .where(admin_users.c.name == name)).first()
    return None if row is None else (stamp(row.password_hash, row.session_epoch), Role(row.role))
