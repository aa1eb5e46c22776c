"""Delivery refs: "SEND.SUBSCRIBER.MAC", the opaque id in X-Mailer-Ref, the VERP return path
(`bounces+REF@domain`) and SendGrid's custom_args `mailer_ref`.

Before signing, a ref was "SEND.SUBSCRIBER": two sequential integers anyone could write into a
forged bounce to suppress somebody else. The MAC is a keyed HMAC-SHA256 over both numbers with
the secret key (MAILER_SECRET_KEY), cut to 10 base32 characters (50 bits; lower case, because
mail servers may fold the case of a VERP local part). `read_ref` still reads old unsigned refs
and forged ones, but says they are unsigned: docs/bounces.md gives the rule for trusting them
(an unsigned ref proves nothing).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from typing import NamedTuple

MAC_LENGTH = 10
_SALT = b"crank-mailer/delivery-ref/v1"
_REF = re.compile(r"(\d{1,18})\.(\d{1,18})(?:\.([A-Za-z2-7]{%d}))?" % MAC_LENGTH)


class Ref(NamedTuple):
    send_id: int
    subscriber_id: int
    signed: bool          # True only when the MAC verified under our key


def _mac(key: str | bytes, send_id: int, subscriber_id: int) -> str:
    """The first 50 bits of HMAC-SHA256(sha256(salt + key), "SEND.SUBSCRIBER") in lower-case
    base32, i.e. base64.b32encode(digest)[:10].lower(), written out: a send makes one per reader."""
    digest = hmac.digest(_mac_key(key), f"{send_id}.{subscriber_id}".encode(), "sha256")
    n = int.from_bytes(digest[:7], "big") >> 6   # 56 bits, less the 6 past the tenth character
    return _PAIRS[n >> 40] + _PAIRS[n >> 30 & 1023] + _PAIRS[n >> 20 & 1023] + _PAIRS[n >> 10 & 1023] + _PAIRS[n & 1023]


@functools.lru_cache(maxsize=8)
def _mac_key(key: str | bytes) -> bytes:
    raw = key.encode("utf-8") if isinstance(key, str) else key
    return hashlib.sha256(_SALT + raw).digest()


_PAIRS = [a + b for a in "abcdefghijklmnopqrstuvwxyz234567" for b in "abcdefghijklmnopqrstuvwxyz234567"]  # 10 bits each


def sign_ref(key: str | bytes, send_id: int, subscriber_id: int) -> str:
    return f"{int(send_id)}.{int(subscriber_id)}.{_mac(key, send_id, subscriber_id)}"


def read_ref(ref: str | None, key: str | bytes | None = None) -> Ref | None:
    """The ref's numbers and whether its MAC verifies (never without a key); None if not a ref."""
    m = _REF.fullmatch((ref or "").strip())
    if not m:
        return None
    send_id, subscriber_id = int(m[1]), int(m[2])
    signed = bool(key and m[3] and hmac.compare_digest(m[3].lower(), _mac(key, send_id, subscriber_id)))
    return Ref(send_id, subscriber_id, signed)
