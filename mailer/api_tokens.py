"""The REST API's bearer tokens and idempotency keys (m0018_api_webhooks; docs/api.md).

    made = create(conn, "crm", {Scope.SUBSCRIBERS_READ})   # made.token: shown once, never stored
    token = find(conn, presented)                          # None: unknown or revoked
    revoke(conn, "crm")

A token is `mk_` and 43 characters of `secrets.token_urlsafe(32)` (256 random bits); the table
keeps its SHA-256 only, so a copy of the database lets nobody call the API. A slow hash (argon2,
as for passwords) protects guessable secrets; this one is not guessable, and every request checks
it, so one fast hash is the right cost.

Idempotency: `remembered(conn, token_id, key)` is the answer a create or update with that
`Idempotency-Key` gave in the last `KEEP` (24 h), with the hash of its request; `remember` stores
one in the transaction of the change itself, so either both are committed or neither.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Column, ForeignKey, Index, Integer, MetaData, String, Table, delete, insert, select, update
from sqlalchemy.engine import Connection

from mailer.errors import ApiTokenError
from subscribers.models import Json, UtcDateTime, utcnow

metadata = MetaData()

api_tokens = Table(
    "api_tokens", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("scopes", String(200), nullable=False),      # space-separated Scope values
    Column("created_at", UtcDateTime, nullable=False),
    Column("last_used_at", UtcDateTime),
    Column("revoked_at", UtcDateTime),
)

api_idempotency = Table(
    "api_idempotency", metadata,
    Column("token_id", Integer, ForeignKey(api_tokens.c.id, ondelete="CASCADE"), primary_key=True),
    Column("key", String(200), primary_key=True),
    Column("request_hash", String(64), nullable=False),   # method, path and body: a key reused for another request
    Column("status", Integer, nullable=False),
    Column("body", Json),
    Column("created_at", UtcDateTime, nullable=False),
    Index("ix_api_idempotency_created_at", "created_at"),
)

PREFIX = "mk_"
KEEP = timedelta(hours=24)
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_KEY = 200


class Scope(enum.StrEnum):
    LISTS_READ = "lists:read"
    SUBSCRIBERS_READ = "subscribers:read"
    SUBSCRIBERS_WRITE = "subscribers:write"
    SUBSCRIBERS_IMPORT = "subscribers:import"    # create readers as confirmed, with a consent record
    REPORTS_READ = "reports:read"


@dataclass(frozen=True)
class Token:
    id: int
    name: str
    scopes: frozenset[Scope]
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


@dataclass(frozen=True)
class Made:
    name: str
    token: str          # the secret itself: shown once
    scopes: frozenset[Scope]


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def parse_scopes(raw: list[str] | tuple[str, ...]) -> frozenset[Scope]:
    if not raw:
        raise ApiTokenError(f"a token needs at least one --scope: {', '.join(Scope)}")
    scopes = set()
    for item in raw:
        try:
            scopes.add(Scope(item.strip()))
        except ValueError:
            raise ApiTokenError(f"unknown scope {item!r}; the scopes are {', '.join(Scope)}") from None
    return frozenset(scopes)


def create(conn: Connection, name: str, scopes: frozenset[Scope]) -> Made:
    """A new token; ApiTokenError if the name is taken (a revoked token keeps its name) or not a name."""
    if not NAME.fullmatch(name):
        raise ApiTokenError(f"token name {name!r}: 1-64 letters, digits, '.', '_' or '-', starting with a "
                            "letter or digit")
    if conn.execute(select(api_tokens.c.id).where(api_tokens.c.name == name)).first() is not None:
        raise ApiTokenError(f"a token named {name!r} exists already (names stay taken after revoking, "
                            "so the audit log names one token); choose another name")
    token = PREFIX + secrets.token_urlsafe(32)
    conn.execute(insert(api_tokens).values(name=name, token_hash=digest(token), created_at=utcnow(),
                                           scopes=" ".join(sorted(scopes))))
    return Made(name, token, scopes)


def _token(row) -> Token:
    return Token(row.id, row.name, frozenset(Scope(s) for s in row.scopes.split()), row.created_at,
                 row.last_used_at, row.revoked_at)


def all_tokens(conn: Connection) -> list[Token]:
    return [_token(row) for row in conn.execute(select(api_tokens).order_by(api_tokens.c.name))]


def revoke(conn: Connection, name: str) -> bool:
    """Revoke the token named `name` (at once: the next request with it gets 401); False if it
    was revoked already. ApiTokenError if there is no such token."""
    row = conn.execute(select(api_tokens.c.id, api_tokens.c.revoked_at).where(api_tokens.c.name == name)).first()
    if row is None:
        raise ApiTokenError(f"no API token named {name!r} (see `mailer admin token list`)")
    if row.revoked_at is not None:
        return False
    conn.execute(update(api_tokens).where(api_tokens.c.id == row.id).values(revoked_at=utcnow()))
    return True


def find(conn: Connection, presented: str) -> Token | None:
    """The live token whose secret was presented, or None (unknown, malformed or revoked)."""
    if not presented.startswith(PREFIX) or len(presented) > 100:
        return None
    row = conn.execute(select(api_tokens).where(api_tokens.c.token_hash == digest(presented))).first()
    if row is None or row.revoked_at is not None:
        return None
    return _token(row)


def touch(conn: Connection, token_id: int, at: datetime | None = None) -> None:
    conn.execute(update(api_tokens).where(api_tokens.c.id == token_id).values(last_used_at=at or utcnow()))


# ---------------------------------------------------------------- idempotency keys

@dataclass(frozen=True)
class Answer:
    status: int
    body: dict | list | None
    request_hash: str


def request_hash(method: str, path: str, body: bytes) -> str:
    return hashlib.sha256(json.dumps([method, path, body.decode("utf-8", "replace")]).encode()).hexdigest()


def remembered(conn: Connection, token_id: int, key: str, now: datetime | None = None) -> Answer | None:
    """The answer kept for this token's key, if it is younger than KEEP."""
    row = conn.execute(select(api_idempotency.c.status, api_idempotency.c.body, api_idempotency.c.request_hash)
                       .where(api_idempotency.c.token_id == token_id, api_idempotency.c.key == key,
                              api_idempotency.c.created_at > (now or utcnow()) - KEEP)).first()
    return None if row is None else Answer(row.status, row.body, row.request_hash)


def remember(conn: Connection, token_id: int, key: str, answer: Answer, now: datetime | None = None) -> None:
    """Keep the answer (in the change's transaction); an expired row of the same key is replaced,
    and expired rows are swept as they are met."""
    now = now or utcnow()
    conn.execute(delete(api_idempotency).where(api_idempotency.c.created_at <= now - KEEP))
    conn.execute(insert(api_idempotency).values(token_id=token_id, key=key, request_hash=answer.request_hash,
                                                status=answer.status, body=answer.body, created_at=now))
