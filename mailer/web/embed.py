"""(settings, list) -> an HTML form to paste into another site (`mailer lists embed NAME`).

The form posts to [newsletter] base_url + /subscribe with the same fields as our own page (list,
email, optional name, the hidden honeypot, the proof-of-work widget), so the double opt-in and
the defences are the same: the reader lands on our "check your inbox" page. Its scripts (the
ALTCHA widget and signup.js) and the widget's stylesheet come from base_url, nothing from a third
party; with `[web] signup_challenge = false` there is no script at all. It speaks the list's
language (else [newsletter] language); class names (`crank-subscribe...`) let the host site style it.
"""

from __future__ import annotations

from mailer.errors import ListIsPrivate
from mailer.i18n import known
from mailer.web.pages import Pages

TEMPLATE = "embed.html.j2"


def embed_form(settings, lst) -> str:
    """The snippet for a public list; ListIsPrivate for a private one (its signups are refused)."""
    if lst.private:
        raise ListIsPrivate(f"list {lst.name} is private: readers cannot subscribe to it themselves "
                            f"(`mailer lists edit {lst.name} --public` offers it)")
    n = settings.newsletter
    pages = Pages(settings.compose.templates_dir, newsletter_name=n.name, base_url=n.base_url,
                  postal_address=n.postal_address, language=known(lst.language) or n.language,
                  signup_challenge=settings.web.signup_challenge)
    return pages.env.get_template(TEMPLATE).render(lst=lst).strip()
