"""(purpose, subscriber, list, key) <-> signed URL token; normalized address -> keyed forget hash.

Tokens are itsdangerous URL-safe signed payloads (HMAC-SHA256), salted with their purpose so an
unsubscribe token never confirms and vice versa. They carry only opaque values (no address, no PII:
docs/mail-facts.md) and a timestamp, so a confirm link can expire while an unsubscribe link keeps
working, as CAN-SPAM asks (at least 30 days; ours: always). The payload is
`[subscriber_id, list_id, key]`, `key` being the membership's random `token_key`: a token made for
a membership that no longer exists matches no row, whatever was created since. Tokens mailed
before keys existed are `[subscriber_id, list_id]`; `verify_token` still reads them (`key` None)
and subscribers.links decides whether they still apply (docs/consent.md). About 90 characters:
short enough for a `List-Unsubscribe` header line. A *group* token names one subscriber on several
lists, `[subscriber_id, list_id, key, list_id, key, ...]` (the one confirmation mail of a signup
for several lists: its one link confirms them all, docs/readers.md); only `verify_claims` reads
it, so a path that takes one membership never acts on a group.

This module only signs and reads; subscribers.links looks the key up and checks it against the row.
"""

from __future__ import annotations

import base64
import binascii
import binascii as _binascii
import hashlib
import hmac
import json
import os
import re
import time
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from itsdangerous import BadData, SignatureExpired, TimestampSigner, URLSafeTimedSerializer
from itsdangerous.encoding import int_to_bytes

from subscribers.errors import SecretRequired, TokenError

PURPOSES = ("unsubscribe", "confirm", "preferences")  # preferences: the fresh link a reader asks for
_SALT = "crank-mailer/{purpose}/v1"


class _Signer(TimestampSigner):
    """itsdangerous's TimestampSigner, reading the time from `now` (Unix seconds) when the caller
    gives one (a test's fixed instant) instead of the process's clock."""

    def __init__(self, *args, now: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._now = now

    def get_timestamp(self) -> int:
        return int(time.time() if self._now is None else self._now)


def _serializer(secret: str, purpose: str, now: float | None = None):
    if purpose not in PURPOSES:
        raise TokenError(f"unknown token purpose {purpose!r} (expected one of {', '.join(PURPOSES)})")
    if not secret:
        raise SecretRequired("signing tokens needs a secret (MAILER_SECRET_KEY)")
    return URLSafeTimedSerializer(secret, salt=_SALT.format(purpose=purpose), signer=_Signer,
                                  signer_kwargs={"digest_method": hashlib.sha256, "now": now})


KEY = re.compile(r"[0-9a-f]{16}")  # memberships.token_key


class Claim(tuple):
    """What a genuine token says: unpacks as (subscriber_id, list_id), as before keys existed;
    `.key` is the membership key it was made for (None: a token from before keys) and `.issued`
    the time it was signed (Unix seconds)."""

    key: str | None
    issued: int

    def __new__(cls, subscriber_id: int, list_id: int, key: str | None, issued: int):
        claim = super().__new__(cls, (subscriber_id, list_id))
        claim.key, claim.issued = key, issued
        return claim

    @property
    def subscriber_id(self) -> int:
        return self[0]

    @property
    def list_id(self) -> int:
        return self[1]


def make_token(secret: str, purpose: str, subscriber_id: int, list_id: int, key: str | None = None, *,
               now: float | None = None) -> str:
    """A URL-safe token binding `purpose` to this membership (`key`: its token_key, which
    subscribers.links.link_token looks up; without it, a token of the old kind, for tests),
    signed at `now` (Unix seconds; None: the clock's time)."""
    payload = [int(subscriber_id), int(list_id)] + ([_key(key)] if key is not None else [])
    return _serializer(secret, purpose, now).dumps(payload)


MAX_GROUP = 50   # lists one group token may name (the signup form takes at most as many)


def make_group_token(secret: str, purpose: str, subscriber_id: int, memberships: list[tuple[int, str]], *,
                     now: float | None = None) -> str:
    """A token for one subscriber on several lists: `memberships` is [(list_id, key), ...]. With
    one list it is the ordinary token."""
    if not 0 < len(memberships) <= MAX_GROUP:
        raise TokenError(f"a group token names 1 to {MAX_GROUP} lists")
    if len(memberships) == 1:
        return make_token(secret, purpose, subscriber_id, *memberships[0], now=now)
    payload: list = [int(subscriber_id)]
    for list_id, key in memberships:
        payload += [int(list_id), _key(key)]
    return _serializer(secret, purpose, now).dumps(payload)


def _key(key: object) -> str:
    if not isinstance(key, str) or not KEY.fullmatch(key):
        raise TokenError("a membership key is 16 lower-case hex characters")
    return key


def token_maker(secret: str, purpose: str, list_id: int,
                keys: Callable[[int], str] | None = None, *, now: float | None = None) -> Callable[[int], str]:
    """f(subscriber_id) -> the same token make_token would give at this moment, for a million
    readers per send: the key is derived and the timestamp taken once per maker (a new
    serializer per token was too slow: docs/decisions.md, "Tokens are made by hand"). `keys(subscriber_id)` gives each
    membership's token_key (subscribers.links.MembershipKeys); without it, old-kind tokens. A send
    reads each reader's key with the reader and passes it: f(subscriber_id, key). `now` as in
    make_token."""
    serializer = _serializer(secret, purpose, now)
    signer = serializer.make_signer()
    key, digest = signer.derive_key(), signer.digest_method
    sep = signer.sep.decode() if isinstance(signer.sep, bytes) else signer.sep
    stamp = _b64(int_to_bytes(signer.get_timestamp()))
    tail = f",{int(list_id)}"

    def make(subscriber_id: int, known: str | None = None) -> str:
        bound = f',"{_key(known or keys(subscriber_id))}"]' if keys is not None else "]"
        value = f"{_b64(f'[{int(subscriber_id)}{tail}{bound}'.encode())}{sep}{stamp}"
        return f"{value}{sep}{_b64(hmac.digest(key, value.encode(), digest))}"

    return make


_URLSAFE = str.maketrans("+/", "-_")


def _b64(data: bytes) -> str:
    """itsdangerous's base64 (URL-safe alphabet, no padding), without its bytes round trips."""
    return binascii.b2a_base64(data, newline=False).decode("ascii").rstrip("=").translate(_URLSAFE)


def verify_token(secret: str, purpose: str, token: str, *, max_age: int | None = None,
                 now: float | None = None) -> Claim:
    """The Claim of a genuine token (unpacks as (subscriber_id, list_id)); TokenError if forged,
    tampered, expired or made for another purpose. `max_age` in seconds (None: never expires),
    counted to `now` (Unix seconds; None: the clock's time).
    Genuine is not yet valid: subscribers.links.bound checks the claim against the row."""
    serializer = _serializer(secret, purpose, now)
    try:
        payload, issued = serializer.loads(token, max_age=max_age, return_timestamp=True)
    except SignatureExpired:
        raise TokenError(f"this {purpose} link has expired") from None
    except (BadData, OverflowError, ValueError):
        raise TokenError(f"this {purpose} link is not valid") from None
    if (not isinstance(payload, list) or len(payload) not in (2, 3)
            or not all(type(v) is int and 0 < v < 2**63 for v in payload[:2])
            or (len(payload) == 3 and not (isinstance(payload[2], str) and KEY.fullmatch(payload[2])))):
        raise TokenError(f"this {purpose} link is not valid")  # signed by us, but not our shape
    key = payload[2] if len(payload) == 3 else None
    return Claim(payload[0], payload[1], key, int(issued.timestamp()))


def verify_claims(secret: str, purpose: str, token: str, *, max_age: int | None = None,
                  now: float | None = None) -> list[Claim]:
    """The Claims of a genuine token, ordinary (one) or group (several); TokenError otherwise."""
    serializer = _serializer(secret, purpose, now)
    try:
        payload, issued = serializer.loads(token, max_age=max_age, return_timestamp=True)
    except SignatureExpired:
        raise TokenError(f"this {purpose} link has expired") from None
    except (BadData, OverflowError, ValueError):
        raise TokenError(f"this {purpose} link is not valid") from None
    if isinstance(payload, list) and len(payload) in (2, 3):
        return [verify_token(secret, purpose, token, max_age=max_age, now=now)]
    if (not isinstance(payload, list) or len(payload) % 2 == 0 or not 5 <= len(payload) <= 1 + 2 * MAX_GROUP
            or not all(type(v) is int and 0 < v < 2**63 for v in [payload[0], *payload[1::2]])
            or not all(isinstance(k, str) and KEY.fullmatch(k) for k in payload[2::2])):
        raise TokenError(f"this {purpose} link is not valid")  # signed by us, but not our shape
    stamp = int(issued.timestamp())
    return [Claim(payload[0], list_id, key, stamp) for list_id, key in zip(payload[1::2], payload[2::2], strict=True)]


def forget_hash(secret: str, email: str) -> str:
    """The keyed hash (HMAC-SHA256) of a normalized address, kept after `forget`.

    Keyed so that a copy of the database alone cannot test whether an address was ever here.
    """
    if not secret:
        raise SecretRequired(
            "forgotten addresses are checked with a keyed hash: set MAILER_SECRET_KEY "
            "(e.g. `export MAILER_SECRET_KEY=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')`)")
    return hmac.new(secret.encode(), b"forget:" + email.encode(), hashlib.sha256).hexdigest()


# ---------------------------------------------------------------- sealed requests

SEALED = "r."   # itsdangerous tokens start with "W" (base64 of "["): the two never meet


def seal_request(secret: str, list_ids: int | list[int], address: str, name: str = "", *,
                 now: float | None = None) -> str:
    """A confirm token for a request of which nothing may be stored (a forgotten address): the
    address itself travels in the link, encrypted and authenticated (AES-256-GCM, key derived
    from the secret), so the URL shows nothing and only this service can open it. One list, or
    several (a signup for several lists: one link confirms them all)."""
    asked = time.time() if now is None else now
    ids = int(list_ids) if isinstance(list_ids, int) else [int(i) for i in list_ids][:MAX_GROUP]
    plain = json.dumps([ids, address, name, asked], separators=(",", ":")).encode()
    nonce = os.urandom(12)
    sealed = nonce + AESGCM(_sealing_key(secret)).encrypt(nonce, plain, SEALED.encode())
    return SEALED + base64.urlsafe_b64encode(sealed).decode().rstrip("=")


def open_request(secret: str, token: str, *, max_age: int | None = None,
                 now: float | None = None) -> tuple[list[int], str, str, float]:
    """([list_id, ...], address, name, asked_at) of a genuine sealed token; TokenError otherwise."""
    if not token.startswith(SEALED) or len(token) > 2000:
        raise TokenError("this confirm link is not valid")
    try:
        payload = token[len(SEALED):]
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        plain = AESGCM(_sealing_key(secret)).decrypt(raw[:12], raw[12:], SEALED.encode())
        ids, address, name, asked = json.loads(plain)
        list_ids = [int(ids)] if isinstance(ids, int) else [int(i) for i in ids]
    except (ValueError, TypeError, InvalidTag, _binascii.Error):
        raise TokenError("this confirm link is not valid") from None
    if max_age is not None and (time.time() if now is None else now) - asked > max_age:
        raise TokenError("this confirm link has expired")
    return list_ids, str(address), str(name), float(asked)


def _sealing_key(secret: str) -> bytes:
    if not secret:
        raise SecretRequired("sealing a request needs a secret (MAILER_SECRET_KEY)")
    return hmac.new(secret.encode(), b"crank-mailer/sealed-request/v1", hashlib.sha256).digest()
