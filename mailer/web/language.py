"""Web service: each request -> the language its page is written in (mailer/i18n.py decides how).

The middleware starts every request in the reader's language: the best of their Accept-Language
among the shipped ones, else `[newsletter] language`. A route whose page is about one list calls
`speak(list_language)`: a list with a language of its own wins over the browser. The choice lives
in a context variable, which a sync route's worker thread sees as a copy: what a route sets stays
with its own request. Pages.render reads it (`current()`).
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from mailer.i18n import known, negotiate


@dataclass(frozen=True)
class Choice:
    language: str
    negotiated: bool       # from Accept-Language: the page then varies by that header


_CURRENT: ContextVar[Choice | None] = ContextVar("mailer_web_language", default=None)
_DEFAULT: ContextVar[str] = ContextVar("mailer_web_default_language", default="en")


def current() -> Choice:
    """This request's language (the newsletter's default outside a request)."""
    return _CURRENT.get() or Choice(_DEFAULT.get(), negotiated=False)


def speak(*languages: str | None) -> str:
    """The page is about these lists: when they share one language of their own (a shipped one),
    the page is in it. Returns the page's language either way."""
    own = {known(language) for language in languages}
    if len(own) == 1 and (language := own.pop()) is not None:
        _CURRENT.set(Choice(language, negotiated=False))
    return current().language


def mail_language(*languages: str | None) -> str:
    """A system mail about these lists: their shared language, else the page's (the one the
    reader read the form in). Same rule as `speak`, without changing the page."""
    own = {known(language) for language in languages}
    if len(own) == 1 and (language := own.pop()) is not None:
        return language
    return current().language


class Negotiation:
    """Pure ASGI middleware: each HTTP request starts in its reader's language."""

    def __init__(self, app, *, default: str) -> None:
        self.app, self.default = app, default

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        header = dict(scope.get("headers", [])).get(b"accept-language", b"").decode("latin-1")
        language = negotiate(header, self.default)
        default = _DEFAULT.set(self.default)
        chosen = _CURRENT.set(Choice(language, negotiated=True))
        try:
            await self.app(scope, receive, send)
        finally:
            _CURRENT.reset(chosen)
            _DEFAULT.reset(default)
