"""Web service: (reader, list, tokens) -> the double opt-in mail, sent through the configured backend.

templates/confirm.mjml.j2 goes through the same stages as an issue (Jinja2 -> MJML -> mjml-python ->
premailer -> text part), composed once per list title with a placeholder where the reader's confirm
token goes; then personalize (stage 4) makes the message and the [delivery] backend sends it, so
the mail carries the same headers, List-Unsubscribe included, as every issue.
"""

from __future__ import annotations

import functools
import logging
import time

from mailer.model import ComposedIssue

log = logging.getLogger("mailer.web")
TEMPLATE = "confirm.mjml.j2"
SLUG = "confirm"
PLACEHOLDER = "CONFIRM-TOKEN-PLACEHOLDER"


def compose_confirmation(settings, list_title: str) -> ComposedIssue:
    """The confirmation mail for a list, with PLACEHOLDER where the confirm token goes."""
    return _compose(settings, list_title or settings.newsletter.name)


@functools.lru_cache(maxsize=16)
def _compose(settings, list_title: str) -> ComposedIssue:
    from mailer.compose import HTML_MARKERS, mjml_to_html, render_mjml
    from mailer.inline import html_to_text, inline_css

    base = settings.newsletter.base_url.rstrip("/")
    context = {"newsletter": settings.newsletter, "list_title": list_title, "markers": HTML_MARKERS,
               "confirm_url": f"{base}/confirm/{PLACEHOLDER}", "link_days": settings.web.confirm_link_days}
    templates = settings.compose.templates_dir
    mjml = render_mjml(TEMPLATE, context, templates)
    html = inline_css(mjml_to_html(mjml, templates))
    subject = f"Confirm your subscription to {list_title}"
    return ComposedIssue(slug=SLUG, subject=subject, preheader="", mjml=mjml, html=html,
                         text=html_to_text(html))


def with_token(composed: ComposedIssue, token: str) -> ComposedIssue:
    """The mail for one reader: tokens are URL-safe base64 and dots, safe in HTML and text as is."""
    return ComposedIssue(slug=composed.slug, subject=composed.subject, preheader=composed.preheader,
                         mjml="", html=composed.html.replace(PLACEHOLDER, token),
                         text=composed.text.replace(PLACEHOLDER, token))


def send_confirmation(settings, *, email: str, name: str, subscriber_id: int, list_id: int,
                      list_title: str, confirm_token: str, unsubscribe_token: str):
    """Compose (cached), personalize and send one confirmation mail; returns the backend's Result.

    Runs after the response (a background task), so a slow SMTP server or API never delays the
    page and the page's timing says nothing about the address.
    """
    from mailer.deliver.base import create_backend
    from mailer.personalize import Recipient, personalize, prepare

    composed = with_token(compose_confirmation(settings, list_title), confirm_token)
    edition = prepare(composed, settings.newsletter)
    ref = f"c{subscriber_id}-{list_id}-{int(time.time())}"   # opaque: ids and time, no address
    message = personalize(edition, Recipient(ref=ref, email=email, name=name,
                                             unsubscribe_token=unsubscribe_token))
    with create_backend(settings.delivery.backend, settings) as backend:
        [result] = backend.send_batch([message])
    if not result.ok:
        log.error("confirmation mail to subscriber %s not accepted: %s", subscriber_id, result.detail)
    return result
