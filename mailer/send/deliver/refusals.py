"""A server's permanent refusal of one reader (SMTP 5xx at RCPT) -> a delivery event, or nothing.

The enhanced status code (RFC 3463, `5.1.1` in `550 5.1.1 User unknown`) says whose problem it is:

    5.1.x (bad mailbox, domain, syntax, moved), 5.2.1 (mailbox disabled), 5.4.4 (no route)
        -> a hard bounce: the address is suppressed through subscribers.policy, as the webhook does
    5.7.x (policy, authentication, reputation) and anything else, or no enhanced code
        -> nothing about the address changes: the delivery alone is `failed`
"""

from __future__ import annotations

import re

from subscribers.events import DeliveryEvent, EventType, Severity
from subscribers.models import utcnow

SOURCE = "smtp-rcpt"
_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")


def enhanced_status(reply: str | None) -> str | None:
    """`5.1.1` from `550 5.1.1 No such user`, else None."""
    found = _ENHANCED.search(reply or "")
    return ".".join(found.groups()) if found else None


def is_hard_bounce(status: str | None) -> bool:
    if not status or not status.startswith("5."):
        return False
    _, subject, detail = status.split(".")
    return subject == "1" or (subject, detail) in {("2", "1"), ("4", "4")}


def refusal_event(address: str | None, reply: str | None, ref: str, issue: str | None = None) -> DeliveryEvent | None:
    """The hard-bounce event for this refusal (of the issue's send: its figures count it), or None
    when it says nothing about the address."""
    if not address or not is_hard_bounce(enhanced_status(reply)):
        return None

    return DeliveryEvent(type=EventType.BOUNCED, recipient=address, at=utcnow(), source=SOURCE,
                         event_id=f"rcpt:{ref}", severity=Severity.HARD, detail=reply, send_ref=ref,
                         issue=issue, raw={"reply": reply})
