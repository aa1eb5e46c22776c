"""Membership <-> link token, through the row: what makes a link act on its own reader only.

tokens.py signs and reads; this module binds a token to the row it was made for. Every new token
carries the membership's random `token_key`; a claim is honoured only while a membership with
that subscriber, list AND key exists, so a link made for a deleted row (forgotten reader, deleted
list) acts on nobody, whatever was created since. Tokens mailed before keys existed carry none:
they apply only to a membership that already existed when keys came (id up to store_meta's
`legacy_links_upto`, written by migration 0003_consent_ids) and was created no later than the
token was signed. Reasons: docs/consent.md.

    link_token(conn, secret, purpose, subscriber_id, list_id) -> token (the key looked up)
    MembershipKeys(engine, list_id)                           -> keys(subscriber_id), for a send
    resolve(conn, secret, purpose, token, max_age)            -> Claim of a live membership, or None
    bound(conn, claim)                                        -> does the claim still name its row?
"""

from __future__ import annotations

import hmac
import secrets

from sqlalchemy import Connection, Engine, select

from subscribers.errors import SubscriberNotFound, TokenError
from subscribers.models import memberships, store_meta
from subscribers.tokens import Claim, make_token, verify_token

LEGACY_UPTO = "legacy_links_upto"
CLOCK_SLACK = 1  # seconds: a token's timestamp is whole seconds, a row's created_at is not


def new_key() -> str:
    """A fresh membership key (16 hex characters, 64 random bits)."""
    return secrets.token_hex(8)


def membership_key(conn: Connection, subscriber_id: int, list_id: int) -> str:
    key = conn.execute(select(memberships.c.token_key).where(
        memberships.c.subscriber_id == subscriber_id, memberships.c.list_id == list_id)).scalar()
    if key is None:
        raise SubscriberNotFound(f"subscriber {subscriber_id} is not on list {list_id}")
    return key


def link_token(conn: Connection, secret: str, purpose: str, subscriber_id: int, list_id: int) -> str:
    """A confirm/unsubscribe token for this membership, bound to its key."""
    return make_token(secret, purpose, subscriber_id, list_id, membership_key(conn, subscriber_id, list_id))


class MembershipKeys:
    """keys(subscriber_id) -> token_key on one list, read 5,000 at a time in subscriber order
    (the order a send goes in), so a million readers cost 200 queries, not a million. A reader
    whose membership went meanwhile gets a key no row has: their link then acts on nobody."""

    def __init__(self, engine: Engine, list_id: int, chunk: int = 5000):
        self.engine, self.list_id, self.chunk = engine, list_id, chunk
        self._keys: dict[int, str] = {}

    def __call__(self, subscriber_id: int) -> str:
        key = self._keys.get(subscriber_id)
        if key is None:
            self._load(subscriber_id)
            key = self._keys.get(subscriber_id) or new_key()
        return key

    def _load(self, start: int) -> None:
        with self.engine.connect() as conn:
            rows = conn.execute(select(memberships.c.subscriber_id, memberships.c.token_key)
                                .where(memberships.c.list_id == self.list_id, memberships.c.subscriber_id >= start)
                                .order_by(memberships.c.subscriber_id).limit(self.chunk))
            self._keys = dict(rows.all())


def resolve(conn: Connection, secret: str, purpose: str, token: str, *, max_age: int | None = None) -> Claim | None:
    """The claim of a genuine token whose membership still exists, else None."""
    try:
        claim = verify_token(secret, purpose, token, max_age=max_age)
    except TokenError:
        return None
    return claim if bound(conn, claim) else None


def bound(conn: Connection, claim: Claim) -> bool:
    """Whether the membership the claim was made for is still there (see the module's rules)."""
    row = conn.execute(select(memberships.c.id, memberships.c.token_key, memberships.c.created_at).where(
        memberships.c.subscriber_id == claim.subscriber_id, memberships.c.list_id == claim.list_id)).first()
    if row is None:
        return False
    if claim.key is not None:
        return hmac.compare_digest(row.token_key, claim.key)
    upto = conn.execute(select(store_meta.c.value).where(store_meta.c.name == LEGACY_UPTO)).scalar()
    return (upto is not None and row.id <= int(upto)
            and claim.issued + CLOCK_SLACK >= int(row.created_at.timestamp()))
