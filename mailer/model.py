"""Values that cross stage boundaries: what compose hands to personalize and deliver.

The issue is composed once. Its HTML and text carry markers for the per-recipient fields, which
`personalize` fills in cheaply (string replacement, never MJML or premailer again) and which the
SendGrid backend passes as `substitutions`. HTML and text use different markers so that a value
can be HTML-escaped in one part and left as it is in the other, even when the provider fills them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# Per-recipient fields, filled after composing.
FIELDS = ("name", "email", "unsubscribe_url", "archive_url", "preferences_url")

Part = Literal["html", "text"]

# SendGrid custom_args naming the issue and the delivery; SendGrid merges them into every webhook
# event, which is how events find their way back (deliver/sendgrid.py writes, events/ reads).
ISSUE_ARG = "mailer_issue"
REF_ARG = "mailer_ref"


def marker(field: str, part: Part) -> str:
    """The placeholder for `field` in the HTML or text part: `%%name%%` / `%%name:html%%`."""
    if field not in FIELDS:
        raise KeyError(field)
    return f"%%{field}:html%%" if part == "html" else f"%%{field}%%"


@dataclass(frozen=True)
class ComposedIssue:
    """One issue, composed once: MJML source, final inlined HTML and text, both with markers."""

    slug: str          # "2024-11", from the file name; names the archive page and the ledger
    subject: str
    preheader: str
    mjml: str
    html: str
    text: str
