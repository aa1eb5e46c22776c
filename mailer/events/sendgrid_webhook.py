"""Stage 7a: a signed SendGrid Event Webhook post (raw bytes + headers) -> [DeliveryEvent].

Pure functions: `verify` raises SignatureError on anything that does not verify; `parse` never
raises on event types or fields it does not know (they become EventType.UNKNOWN or are skipped).
Sources: SendGrid "Getting started with the Event Webhook security features" and the event
reference (docs/mail-facts.md, "SendGrid Event Webhook").
"""

from __future__ import annotations

import binascii
import functools
import json
import re
import time
from datetime import UTC, datetime
from typing import Any

from sendgrid.helpers.eventwebhook import EventWebhook

from mailer.errors import SignatureError
from mailer.model import ISSUE_ARG, REF_ARG
from subscribers.events import DeliveryEvent, EventType, Severity

SOURCE = "sendgrid-webhook"
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

_SIMPLE = {
    "processed": EventType.PROCESSED,
    "delivered": EventType.DELIVERED,
    "deferred": EventType.DEFERRED,
    "spamreport": EventType.COMPLAINED,
    "unsubscribe": EventType.UNSUBSCRIBED,
    "group_unsubscribe": EventType.UNSUBSCRIBED,
    "group_resubscribe": EventType.RESUBSCRIBED,
    "open": EventType.OPENED,
    "click": EventType.CLICKED,
}
# `dropped` means SendGrid suppressed the address itself; mirror its reason (docs/mail-facts.md).
_DROPPED_REASONS = {
    "bounced address": (EventType.BOUNCED, Severity.HARD),
    "spam reporting address": (EventType.COMPLAINED, None),
    "unsubscribed address": (EventType.UNSUBSCRIBED, None),
}
# A Unix time in seconds: ASCII digits only (int() would also take "1_700", " 17", Arabic-Indic
# digits, and 400 digits that overflow a float when the age is computed).
_UNIX_TIME = re.compile(r"[0-9]{1,12}")
MAX_DEPTH = 16   # SendGrid's events nest 3 deep; deeper JSON is refused before anything stores it
# Bounce classifications that describe a passing condition, not a dead address.
_SOFT_CLASSIFICATIONS = {"technical failure", "frequency or volume too high"}


@functools.lru_cache(maxsize=8)
def _public_key(public_key_b64: str):
    try:
        return EventWebhook().convert_public_key_to_ecdsa(public_key_b64)
    except ValueError as exc:
        raise SignatureError("[webhooks.sendgrid] public_key is not a valid ECDSA public key") from exc


def verify(raw_body: bytes, signature: str | None, timestamp: str | None, *, public_key: str,
           max_age_seconds: int, now: float | None = None) -> None:
    """Check SendGrid's ECDSA P-256 signature over timestamp + raw body, and the timestamp's age."""
    if not public_key:
        raise SignatureError("no [webhooks.sendgrid] public_key is configured")
    if not signature or not timestamp:
        raise SignatureError(f"missing {SIGNATURE_HEADER} or {TIMESTAMP_HEADER} header")
    if not _UNIX_TIME.fullmatch(timestamp):
        raise SignatureError("the timestamp header is not a number (a Unix time in seconds)")
    age = (time.time() if now is None else now) - int(timestamp)
    if abs(age) > max_age_seconds:
        raise SignatureError(f"the timestamp is {int(age)} s old; at most {max_age_seconds} s is accepted")
    try:
        ok = EventWebhook().verify_signature(raw_body.decode("utf-8"), signature, timestamp,
                                             public_key=_public_key(public_key))
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise SignatureError(f"malformed signature or body: {exc}") from exc
    if not ok:
        raise SignatureError("the signature does not match the body")


def parse(raw_body: bytes | str) -> list[DeliveryEvent]:
    """The events of one post; entries without an address are skipped, unknown kinds kept."""
    try:
        items = json.loads(raw_body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"the body is not JSON: {exc}") from exc
    except RecursionError:
        raise ValueError(f"the body nests deeper than {MAX_DEPTH} levels") from None
    if not isinstance(items, list):
        raise ValueError("the body must be a JSON array of events")
    if _too_deep(items, MAX_DEPTH):
        raise ValueError(f"the body nests deeper than {MAX_DEPTH} levels")
    return [e for e in map(_event, items) if e is not None]


def _too_deep(value: object, limit: int) -> bool:
    """Whether containers nest deeper than `limit` (iterative: no recursion to exhaust)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        for child in children:
            if isinstance(child, (dict, list)):
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False


def _event(item: object) -> DeliveryEvent | None:
    if not isinstance(item, dict) or not isinstance(item.get("email"), str) or not item["email"].strip():
        return None
    kind, severity = _classify(item)
    return DeliveryEvent(
        type=kind,
        recipient=item["email"].strip().lower(),
        at=_timestamp(item.get("timestamp")),
        source=SOURCE,
        event_id=_text(item.get("sg_event_id")),
        severity=severity,
        detail=_text(item.get("reason") or item.get("response")),
        message_id=_text(item.get("sg_message_id")),
        issue=_text(item.get(ISSUE_ARG)),
        send_ref=_text(item.get(REF_ARG)),
        raw=item,
    )


def _classify(item: dict) -> tuple[EventType, Severity | None]:
    name = str(item.get("event", "")).lower()
    if name == "bounce":
        if str(item.get("type", "")).lower() == "blocked":
            return EventType.BLOCKED, None
        return EventType.BOUNCED, _bounce_severity(item)
    if name == "dropped":
        return _DROPPED_REASONS.get(str(item.get("reason", "")).lower(), (EventType.DROPPED, None))
    return _SIMPLE.get(name, EventType.UNKNOWN), None


def _bounce_severity(item: dict) -> Severity:
    """Hard unless the status class is 4 (RFC 3463), it is a full mailbox (x.2.2), or SendGrid
    classifies the cause as passing. Real bounces can lack `status` (docs/mail-facts.md)."""
    status = str(item.get("status") or "")
    classification = str(item.get("bounce_classification") or "").lower()
    if status.startswith("4") or status.endswith(".2.2") or classification in _SOFT_CLASSIFICATIONS:
        return Severity.SOFT
    return Severity.HARD


def _timestamp(value: Any) -> datetime:   # whatever the JSON held
    try:
        return datetime.fromtimestamp(float(value), tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return datetime.now(UTC)


def _text(value: object) -> str | None:
    return None if value is None else str(value)[:500]
