"""Composed email HTML -> what an archive page shows: the email's styles and its content, without
the parts that only make sense in an inbox.

Sections with css-class `mail-only` go: the footer (templates/partials/footer.mjml.j2: "you are
receiving this because...", unsubscribe, preferences and view-in-browser links) and the
view-in-browser line above the masthead (partials/masthead.mjml.j2); on the web they are wrong.
The head's <style> blocks stay (the email's responsive and dark-mode rules), so the issue looks as
it does in a mail client, inside the site's own layout.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import lxml.html

MAIL_ONLY = "mail-only"


@dataclass(frozen=True)
class WebContent:
    styles: str        # CSS text of the email's <style> blocks
    body: str          # the email's body content, mail-only sections removed
    lang: str = ""     # the email's own language and direction (its <html lang dir>), which the
    dir: str = ""      # page keeps for the issue while the site around it speaks the reader's


def web_content(email_html: str) -> WebContent:
    doc = lxml.html.document_fromstring(email_html)
    lang, direction = doc.get("lang", ""), doc.get("dir", "")
    styles = "\n".join(style.text_content() for style in doc.iter("style"))
    for element in doc.xpath(f'//*[contains(concat(" ", normalize-space(@class), " "), " {MAIL_ONLY} ")]'):
        _remove(element)
    styles = styles.replace("</", "<\\/")
    body = doc.body
    if body is None:   # a document of a head alone (lxml adds <body> only around content)
        return WebContent(styles=styles, body="", lang=lang, dir=direction)
    for style in list(body.iter("style")):
        _remove(style)
    inner = html.escape(body.text or "") + "".join(lxml.html.tostring(child, encoding="unicode") for child in body)
    return WebContent(styles=styles, body=inner, lang=lang, dir=direction)


def _remove(element: lxml.html.HtmlElement) -> None:
    """Out of the tree, its tail text with it."""
    parent = element.getparent()
    if parent is not None:   # (only the root has none)
        parent.remove(element)
