"""The one normalized delivery-event type that every inbound signal becomes.

SendGrid's signed webhook, bounce mail (DSN/ARF), SendGrid's suppression lists and SMTP refusals
are parsed into `DeliveryEvent`s; `subscribers.policy.apply_event` is the single place that turns
them into subscriber state.
It lives here, not in mailer, because the policy needs it and subscribers never imports mailer.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime


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
        # every parser's time in one form (a naive one is taken as UTC), so the policy compares
        # and dedupe keys are made from one value whatever the parser gave
        if self.at.tzinfo is None:
            object.__setattr__(self, "at", self.at.replace(tzinfo=UTC))
        elif self.at.utcoffset():
            object.__setattr__(self, "at", self.at.astimezone(UTC))
