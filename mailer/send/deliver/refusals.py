"""A server's permanent refusal of one reader (SMTP 5xx at RCPT) -> a delivery event, or nothing.

The enhanced status code (RFC 3463, `5.1.1` in `550 5.1.1 User unknown`) says whose problem it is:

    5.1.x (bad mailbox, domain, syntax, moved), 5.2.1 (mailbox disabled), 5.4.4 (no route)
        -> a hard bounce: the address is suppressed through subscribers.policy, as the webhook does
    5.7.x (policy, authentication, reputation) and anything else, or no enhanced code
        -> nothing about the address changes: the delivery alone is `failed`

`sender_refusal` tells a refusal about us (530 authentication required, 5.7.x "Relay access
denied", "Client host rejected") from one about the reader: when it meets every reader of a run's
first batch, the run stops instead of failing the list (mailer/send/batches.py).
"""

from __future__ import annotations

import re

from subscribers.events import DeliveryEvent, EventType, Severity
from subscribers.models import utcnow

SOURCE = "smtp-rcpt"
_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_ABOUT_US = re.compile(r"relay|client host|authenticat|not permitted|access denied", re.I)


def enhanced_status(reply: str | None) -> str | None:
    """`5.1.1` from `550 5.1.1 No such user`, else None."""
    found = _ENHANCED.search(reply or "")
    return ".".join(found.groups()) if found else None


def is_hard_bounce(status: str | None) -> bool:
    if not status or not status.startswith("5."):
        return False
    _, subject, detail = status.split(".")
    return subject == "1" or (subject, detail) in {("2", "1"), ("4", "4")}


def refusal_event(address: str | None, reply: str | None, ref: str) -> DeliveryEvent | None:
    """The hard-bounce event for this refusal, or None when it says nothing about the address."""
    if not address or not is_hard_bounce(enhanced_status(reply)):
        return None

    return DeliveryEvent(type=EventType.BOUNCED, recipient=address, at=utcnow(), source=SOURCE,
                         event_id=f"rcpt:{ref}", severity=Severity.HARD, detail=reply, send_ref=ref,
                         raw={"reply": reply})


def sender_refusal(reply: str | None) -> bool:
    """A permanent refusal that says the relay will not take mail from us, whoever the reader:
    530 (authentication required), a 5.7.x policy status, or a 5xx naming relaying, the client host
    or authentication (`554 5.7.1 <r@example.org>: Relay access denied`, `550 relay not permitted`)."""
    reply = reply or ""
    code = reply[:3]
    if not (code.isdigit() and code.startswith("5")):
        return False
    status = enhanced_status(reply)
    return code == "530" or bool(status and status.startswith("5.7.")) or bool(_ABOUT_US.search(reply))


def refusal_kind(reply: str | None) -> str:
    """What to compare to call two refusals "the same": the code and the enhanced status."""
    reply = reply or ""
    return f"{reply[:3]} {enhanced_status(reply) or ''}".strip()
