"""Web service: (reader, lists, tokens) -> the double opt-in mail, sent through the configured backend.

templates/confirm.mjml.j2 goes through the same stages as an issue (Jinja2 -> MJML -> mjml-python ->
premailer -> text part), composed once per (lists' titles, language) with a placeholder where the
reader's confirm token goes; then personalize (stage 4) makes the message and the [delivery]
backend sends it, so the mail carries the same headers, List-Unsubscribe and Content-Language
included, as every issue. One mail for all the lists of a signup: its link confirms them all.
"""

from __future__ import annotations

import functools
import logging
import time

from mailer.compose.personalize import Recipient, personalize, prepare
from mailer.compose.render import HTML_MARKERS, render
from mailer.i18n import format_list, gettext_for
from mailer.model import ComposedIssue
from mailer.send.deliver.registry import create_backend

log = logging.getLogger("mailer.web")
TEMPLATE = "confirm.mjml.j2"
SLUG = "confirm"
PLACEHOLDER = "CONFIRM-TOKEN-PLACEHOLDER"


def compose_confirmation(settings, titles: tuple[str, ...], language: str) -> ComposedIssue:
    """The confirmation mail for these lists in this language, with PLACEHOLDER where the
    confirm token goes."""
    return _compose(settings, titles or (settings.newsletter.name,), language)


@functools.lru_cache(maxsize=64)
def _compose(settings, titles: tuple[str, ...], language: str) -> ComposedIssue:
    base = settings.newsletter.base_url.rstrip("/")
    _ = gettext_for(language)
    subject = _("Confirm your subscription to %(title)s") % {"title": format_list(titles, language)}
    return render_mail(settings, TEMPLATE, subject, language=language, titles=list(titles),
                       confirm_url=f"{base}/confirm/{PLACEHOLDER}", link_days=settings.web.confirm_link_days)


def render_mail(settings, template: str, subject: str, slug: str = SLUG, *, language: str, **values) -> ComposedIssue:
    """A service mail (templates/*.mjml.j2) through the issue's stages, in `language`; markers
    left for personalize."""
    context = {"newsletter": settings.newsletter, "markers": HTML_MARKERS, "subject": subject, **values}
    mjml, html, text = render(template, context, settings, language)
    return ComposedIssue(slug=slug, subject=subject, preheader="", mjml=mjml, html=html, text=text, language=language)


def with_token(composed: ComposedIssue, token: str) -> ComposedIssue:
    """The mail for one reader: tokens are URL-safe base64 and dots, safe in HTML and text as is."""
    return ComposedIssue(slug=composed.slug, subject=composed.subject, preheader=composed.preheader,
                         mjml="", html=composed.html.replace(PLACEHOLDER, token),
                         text=composed.text.replace(PLACEHOLDER, token), language=composed.language)


def send_confirmation(settings, *, email: str, name: str, subscriber_id: int, list_ids: tuple[int, ...],
                      titles: tuple[str, ...], language: str, confirm_token: str, unsubscribe_token: str):
    """Compose (cached), personalize and send one confirmation mail for these lists; returns the
    backend's Result.

    Runs after the response (a background task), so a slow SMTP server or API never delays the
    page and the page's timing says nothing about the address.
    """
    composed = with_token(compose_confirmation(settings, titles, language), confirm_token)
    ref = f"c{subscriber_id}-{list_ids[0]}-{int(time.time())}"   # opaque: ids and time, no address
    return send_one(settings, composed, ref, email, name, unsubscribe_token,
                    f"confirmation mail to subscriber {subscriber_id}")


def send_one(settings, composed: ComposedIssue, ref: str, email: str, name: str, unsubscribe_token: str,
             what: str):
    """Personalize one service mail and hand it to the configured backend; the backend's Result."""
    edition = prepare(composed, settings.newsletter)
    message = personalize(edition, Recipient(ref=ref, email=email, name=name, unsubscribe_token=unsubscribe_token))
    with create_backend(settings.delivery.backend, settings) as backend:
        [result] = backend.send_batch([message])
    if not result.ok:
        log.error("%s not accepted: %s", what, result.detail)
    return result
