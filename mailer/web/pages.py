"""Web service: template name + values -> an HTML page (templates/web/*.html.j2, autoescaped), in
the request's language (mailer/web/language.py).

Every value a reader typed or a token carried is escaped by Jinja2's autoescape; no template marks
anything `|safe`. Pages load one stylesheet, and the signup forms our own scripts only (see
security.PAGE_CSP). One Jinja2 environment per shipped language, each with its catalog installed
(mailer/i18n.py); a title or message handed over from code is a catalog entry (`N_`), translated
here.
"""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.responses import HTMLResponse

from mailer import i18n
from mailer.locale import LANGUAGES
from mailer.web.language import current
from mailer.web.security import SIGNUP_CSP

# Pages reached through a token: never cached by a shared cache, never indexed.
PRIVATE = {"cache-control": "no-store", "x-robots-tag": "noindex, nofollow"}
SIGNUP_FORMS = frozenset({"subscribe.html.j2", "preferences_ask.html.j2"})   # they carry the challenge's scripts


class Pages:
    def __init__(self, templates_dir: Path, *, newsletter_name: str, base_url: str,
                 postal_address: str, language: str = LANGUAGES[0], signup_challenge: bool = False,
                 form_started=lambda: "", **extra) -> None:
        self.dir = templates_dir / "web"
        self.language = language
        self.scripted = SIGNUP_FORMS if signup_challenge else frozenset()
        extra.update(signup_challenge=signup_challenge, form_started=form_started)
        self.envs = {lang: self._environment(lang, newsletter=newsletter_name, base_url=base_url.rstrip("/"),
                                             postal_address=postal_address, **extra)
                     for lang in LANGUAGES}
        self.env = self.envs[language]      # the newsletter's language (the feed, the embed snippet)

    def _environment(self, language: str, **values) -> Environment:
        # auto_reload off: no stat() of every template on every request; restart to pick up edits.
        env = Environment(loader=FileSystemLoader(self.dir), autoescape=True, auto_reload=False,
                          undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                          extensions=["jinja2.ext.i18n"])
        env.globals.update(values)
        return i18n.install(env, language)

    def render(self, template: str, status: int = 200, *, private: bool = False,
               headers: dict[str, str] | None = None, **context) -> HTMLResponse:
        choice = current()
        html = self.envs.get(choice.language, self.env).get_template(template).render(**context)
        language = {"content-language": choice.language}
        if choice.negotiated:      # another Accept-Language may get another page: caches must know
            language["vary"] = "Accept-Language"
        if template in self.scripted:
            language["content-security-policy"] = SIGNUP_CSP
        return HTMLResponse(html, status_code=status, headers={**(PRIVATE if private else {}), **language,
                                                               **(headers or {})})

    def error(self, status: int, title: str, message: str, **kw) -> HTMLResponse:
        """The plain 4xx page: says what is wrong, offers the way back, changes nothing. `title`
        and `message` are catalog entries (marked with N_ where written), translated here."""
        return self.render("error.html.j2", status, private=True, title=title, message=message, **kw)

    def stylesheet(self) -> bytes:
        return (self.dir / "site.css").read_bytes()
