"""Sign webhook posts the way SendGrid does, with a key pair made in the test."""

from __future__ import annotations

import base64
import json
import time

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec


class Signer:
    def __init__(self) -> None:
        self.private_key = ec.generate_private_key(ec.SECP256R1())
        der = self.private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.public_key = base64.b64encode(der).decode()

    def sign(self, body: bytes, timestamp: str | None = None) -> dict[str, str]:
        ts = timestamp or str(int(time.time()))
        sig = self.private_key.sign(ts.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {"X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(sig).decode(),
                "X-Twilio-Email-Event-Webhook-Timestamp": ts}


def body(events: list[dict]) -> bytes:
    return (json.dumps(events, separators=(",", ":")) + "\r\n").encode()
