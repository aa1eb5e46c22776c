"""Standard Webhooks signatures (https://www.standardwebhooks.com/, "Signature scheme").

The secret is `whsec_` and base64 of the key (24-64 bytes); a post carries `webhook-id` (the
event's id, the same on every try), `webhook-timestamp` (Unix seconds, of this try) and
`webhook-signature`: `v1,` and base64 of HMAC-SHA256(key, "{id}.{timestamp}.{body}").
tests/test_webhooks_out.py checks ours with the spec's own library (`standardwebhooks`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from mailer.errors import ConfigError

PREFIX = "whsec_"


def key_of(secret: str, where: str) -> bytes:
    """The key in a `whsec_...` secret; ConfigError naming `where` if it is not one."""
    if not secret.startswith(PREFIX):
        raise ConfigError(f"{where}: the secret must start with {PREFIX} (a Standard Webhooks secret)")
    try:
        key = base64.b64decode(secret[len(PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{where}: the secret after {PREFIX} is not base64") from None
    if not 24 <= len(key) <= 64:
        raise ConfigError(f"{where}: the secret's key must be 24 to 64 bytes, not {len(key)}")
    return key


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def headers(key: bytes, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(key, msg_id, timestamp, body)}
