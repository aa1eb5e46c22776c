"""The one normalized delivery-event type that every inbound signal becomes.

SendGrid's signed webhook, bounce mail (DSN/ARF), SendGrid's suppression lists and SMTP refusals
are parsed into `DeliveryEvent`s; `subscribers.policy.apply_event` is the single place that turns
them into subscriber state.
It lives here, not in mailer, because the policy needs it and subscribers never imports mailer.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

# What no database of ours stores as text: NUL (PostgreSQL refuses it in text and jsonb) and lone
# surrogates (not UTF-8 at all; JSON's "\ud800" escape decodes to one). A str from json.loads holds
# a surrogate only unpaired: a pair becomes one character.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class EventType(enum.StrEnum):
    PROCESSED = "processed"
    DELIVERED = "delivered"
    DEFERRED = "deferred"
    BOUNCED = "bounced"
    BLOCKED = "blocked"
    DROPPED = "dropped"
    COMPLAINED = "complained"
    UNSUBSCRIBED = "unsubscribed"
    RESUBSCRIBED = "resubscribed"
    OPENED = "opened"
    CLICKED = "clicked"
    UNKNOWN = "unknown"


class Severity(enum.StrEnum):
    HARD = "hard"
    SOFT = "soft"


@dataclass(frozen=True)
class DeliveryEvent:
    type: EventType
    recipient: str                  # normalized address
    at: datetime                    # aware, UTC
    source: str                     # "sendgrid-webhook", "bounce-mail", ...
    event_id: str | None = None     # the provider's own id (SendGrid sg_event_id): dedupe key
    severity: Severity | None = None
    detail: str | None = None       # the MTA's or provider's own words
    message_id: str | None = None   # provider message id, round-tripped
    issue: str | None = None        # our issue slug, from correlation headers / custom_args
    send_ref: str | None = None     # our opaque delivery reference, from custom_args / VERP
    raw: object = field(default=None, compare=False, repr=False)  # never dropped

    def __post_init__(self) -> None:
        # anyone can put anything in a provider's fields (SendGrid's custom_args, an MTA's reason):
        # cleaned here, so every source stores what it was given, minus what cannot be stored
        for name in ("recipient", "event_id", "detail", "message_id", "issue", "send_ref"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, storable(value))
        if self.raw is not None:
            object.__setattr__(self, "raw", storable(self.raw))
        # every parser's time in one form (a naive one is taken as UTC), so the policy compares
        # and dedupe keys are made from one value whatever the parser gave
        if self.at.tzinfo is None:
            object.__setattr__(self, "at", self.at.replace(tzinfo=UTC))
        elif self.at.utcoffset():
            object.__setattr__(self, "at", self.at.astimezone(UTC))


def storable(value):
    """`value` (text, or JSON's lists, dicts and numbers) as every database stores it: NUL
    removed, a lone surrogate replaced by U+FFFD (in keys too), and NaN or an infinity (JSON
    allows neither; Python's json reads them) as None."""
    if isinstance(value, str):
        return _UNSTORABLE.sub(_replacement, value) if _UNSTORABLE.search(value) else value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [storable(v) for v in value]
    if isinstance(value, dict):
        return {storable(str(k)): storable(v) for k, v in value.items()}
    return value


def _replacement(found: re.Match) -> str:
    return "" if found.group() == "\x00" else "\ufffd"
