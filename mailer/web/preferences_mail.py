"""Web service: (reader, tokens) -> the mail with a fresh preferences link (templates/preferences.mjml.j2).

Composed once per language (cached) with a placeholder where the token goes, like the confirmation
mail (confirm_mail.py), and sent through the configured backend with the usual headers. Its
language: the list its unsubscribe link names, if that list has one, else the page's.
"""

from __future__ import annotations

import functools
import time

from mailer.i18n import gettext_for
from mailer.model import ComposedIssue
from mailer.web.confirm_mail import PLACEHOLDER, render_mail, send_one, with_token

TEMPLATE = "preferences.mjml.j2"


@functools.lru_cache(maxsize=16)
def compose_preferences(settings, language: str) -> ComposedIssue:
    base = settings.newsletter.base_url.rstrip("/")
    _ = gettext_for(language)
    subject = _("Your %(newsletter)s preferences") % {"newsletter": settings.newsletter.name}
    return render_mail(settings, TEMPLATE, subject, slug="preferences", language=language,
                       link_url=f"{base}/preferences/{PLACEHOLDER}", link_days=settings.web.confirm_link_days)


def send_preferences_link(settings, mail, token: str, unsubscribe_token: str):
    composed = with_token(compose_preferences(settings, mail.language), token)
    ref = f"p{mail.subscriber_id}-{int(time.time())}"   # opaque: an id and a time, no address
    return send_one(settings, composed, ref, mail.email, mail.name, unsubscribe_token,
                    f"preferences link to subscriber {mail.subscriber_id}")
