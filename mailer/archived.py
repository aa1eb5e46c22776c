"""Composed issue -> the archive copy: the mail as sent, with nobody's name, address or token.

Made once when a send starts and stored on its ledger row (mailer.ledger.sends.archive_html,
archive_text), so /archive/ISSUE serves the very copy that was mailed, from the first message on,
whatever happens later to the issue file or the templates (docs/exactly-once.md).
"""

from __future__ import annotations

import html

from mailer.model import FIELDS, ComposedIssue, marker


def neutral_values(base_url: str, slug: str) -> dict[str, str]:
    """What a reader's fields become online: nobody's name, nobody's address or token."""
    base = base_url.rstrip("/")
    return {"name": "reader", "email": "your address", "unsubscribe_url": f"{base}/subscribe",
            "archive_url": f"{base}/archive/{slug}"}


def neutral_copy(issue: ComposedIssue, base_url: str) -> tuple[str, str]:
    """(html, text) of `issue` with every marker filled by the neutral values."""
    values = neutral_values(base_url, issue.slug)
    page, text = issue.html, issue.text
    for name in FIELDS:
        page = page.replace(marker(name, "html"), html.escape(values[name], quote=True))
        text = text.replace(marker(name, "text"), values[name])
    return page, text
