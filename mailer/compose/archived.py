"""Composed issue -> the archive copy: the mail as sent, with nobody's name, address or token.

Made once when a send starts and stored on its ledger row (mailer.send.ledger.sends.archive_html,
archive_text), so /archive/ISSUE serves the very copy that was mailed, from the first message on,
whatever happens later to the issue file or the templates (docs/exactly-once.md).
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from mailer.model import ArchiveCopy, ComposedIssue, fill

KEY_CHARS = 22   # 132 bits of the HMAC, base64url


def archive_key(secret: str, slug: str) -> str:
    """The key in a private send's browser link, `/archive/ISSUE?key=...`: it opens the issue's
    stored copy although the archive does not list it (docs/readers.md#what-the-archive-shows).
    One per issue, the same for all its readers (the page holds nobody's data)."""
    digest = hmac.new(secret.encode("utf-8"), f"archive:{slug}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")[:KEY_CHARS]


def neutral_values(base_url: str, slug: str) -> dict[str, str]:
    """What a reader's fields become online: nobody's name, nobody's address or token."""
    base = base_url.rstrip("/")
    return {"name": "reader", "first_name": "reader", "email": "your address",
            "unsubscribe_url": f"{base}/subscribe", "archive_url": f"{base}/archive/{slug}",
            "preferences_url": f"{base}/preferences"}


def neutral_copy(issue: ComposedIssue, base_url: str) -> ArchiveCopy:
    """`issue` with every marker (merge fields too) filled by the neutral values, and its date and
    preheader for the archive's pages."""
    values = neutral_values(base_url, issue.slug)
    return ArchiveCopy(fill(issue.html, values, "html"), fill(issue.text, values, "text"), issue.date,
                       fill(issue.preheader, values, "text"), issue.archive)
