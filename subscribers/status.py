"""A membership's status: a plain enum with no database import, so the CLI can offer its values
without loading SQLAlchemy at start-up (subscribers.models re-exports it)."""

from __future__ import annotations

import enum


class Status(enum.StrEnum):
    """A membership's status. BOUNCED and COMPLAINED also live in subscribers.global_status."""

    UNCONFIRMED = "unconfirmed"
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"
