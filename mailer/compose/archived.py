"""Composed issue -> the archive copy: the mail as sent, with nobody's name, address or token.

Made once when a send starts and stored on its ledger row (mailer.send.ledger.sends.archive_html,
archive_text), so /archive/ISSUE serves the very copy that was mailed, from the first message on,
whatever happens later to the issue file or the templates (docs/exactly-once.md).
"""

from __future__ import annotations

from mailer.model import ArchiveCopy, ComposedIssue, fill


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
