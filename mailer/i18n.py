"""A reader's language -> the words, direction and dates of the pages and mails they get.

The catalogs are in mailer/locale/ (docs/languages.md). Which language a page or a mail is in:
the list's own (`mailer lists create NAME --language fr`) where one list is concerned, else the
best one of the reader's Accept-Language that we ship, else `[newsletter] language`.

    translations("fr")                       -> gettext catalog (English: the text as written)
    negotiate("fr-CH, de;q=0.8", "en")       -> "fr"
    direction("fr")                          -> "ltr" (the `dir` of pages and mails)
    format_date(date(2024, 11, 5), "de")     -> "5. November 2024"
    install(environment, "fr")               -> the Jinja2 environment speaks French
"""

from __future__ import annotations

import datetime as dt
import functools
import gettext
import re
from collections.abc import Iterable

from babel import Locale
from babel.dates import format_date as babel_date
from babel.lists import format_list as babel_list
from jinja2 import Environment

from mailer.locale import DIRECTORY, DOMAIN, LANGUAGES

_TAG = re.compile(r"[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*|\*")
_MAX_ITEMS = 32          # a header longer than this is a prober's, not a browser's


def N_(message: str) -> str:
    """Marks a message for the catalog where it is written; it is translated where it is shown."""
    return message


@functools.cache
def translations(language: str) -> gettext.NullTranslations:
    """The catalog of a shipped language; English (and anything unknown) is the text as written."""
    if language == LANGUAGES[0] or language not in LANGUAGES:
        return gettext.NullTranslations()
    return gettext.translation(DOMAIN, DIRECTORY, languages=[language])


def gettext_for(language: str):
    """`_` for code that is not a template: the message in `language`."""
    return translations(language).gettext


def known(language: str | None) -> str | None:
    """The language if we ship it (a list's column may hold one we no longer do), else None."""
    return language if language in LANGUAGES else None


def negotiate(header: str | None, default: str, shipped: Iterable[str] = LANGUAGES) -> str:
    """The best language of an Accept-Language header (RFC 9110 12.5.4) among those shipped:
    highest weight first, in the header's order among equals; a regional tag ("fr-CH") matches its
    language. `default` when none matches (or the header is absent or malformed)."""
    offered = set(shipped)
    weighted = []
    for position, item in enumerate((header or "").split(",")[:_MAX_ITEMS]):
        tag, _, params = item.strip().partition(";")
        weight = _weight(params)
        if _TAG.fullmatch(tag.strip()) and weight > 0:
            weighted.append((-weight, position, tag.strip().split("-")[0].lower()))
    for _, _, language in sorted(weighted):
        if language in offered:
            return language
    return default


def _weight(params: str) -> float:
    name, _, value = params.strip().partition("=")
    if name.strip().lower() != "q":
        return 1.0
    try:
        weight = float(value)
    except ValueError:
        return 0.0
    return weight if 0 <= weight <= 1 else 0.0


@functools.cache
def direction(language: str) -> str:
    """"rtl" for a language written right to left, else "ltr" (the CLDR's character order)."""
    return "rtl" if Locale.parse(language).character_order == "right-to-left" else "ltr"


def format_date(day: dt.date, language: str) -> str:
    """A date as the language writes it in running text ("5 November 2024", "5 novembre 2024")."""
    return babel_date(day, format="long", locale=language)


def format_list(items: Iterable[str], language: str) -> str:
    """Titles in a sentence as the language joins them ("A, B and C", "A, B et C")."""
    return babel_list(list(items), locale=language)


def install(environment: Environment, language: str) -> Environment:
    """Give a Jinja2 environment (with the i18n extension) this language: `_`, `gettext`,
    `ngettext` and `{% trans %}` (new style: values are escaped and filled in after translating;
    whitespace inside a block trimmed, so a sentence may wrap in the template), and the globals
    `lang`, `dir`, `start` (the side a line starts on, for MJML's align), `format_date` and
    `format_list`."""
    environment.policies["ext.i18n.trimmed"] = True
    environment.install_gettext_translations(translations(language), newstyle=True)  # type: ignore[attr-defined]
    text_direction = direction(language)
    environment.globals.update(lang=language, dir=text_direction, start="right" if text_direction == "rtl" else "left",
                               format_date=functools.partial(format_date, language=language),
                               format_list=functools.partial(format_list, language=language))
    return environment
