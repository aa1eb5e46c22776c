"""Web service: template name + values -> an HTML page (templates/web/*.html.j2, autoescaped).

Every value a reader typed or a token carried is escaped by Jinja2's autoescape; no template marks
anything `|safe`. Pages load one stylesheet and no script (see security.PAGE_CSP).
"""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.responses import HTMLResponse

# Pages reached through a token: never cached by a shared cache, never indexed.
PRIVATE = {"cache-control": "no-store", "x-robots-tag": "noindex, nofollow"}


class Pages:
    def __init__(self, templates_dir: Path, *, newsletter_name: str, base_url: str,
                 postal_address: str) -> None:
        self.dir = templates_dir / "web"
        # auto_reload off: no stat() of every template on every request; restart to pick up edits.
        self.env = Environment(loader=FileSystemLoader(self.dir), autoescape=True, auto_reload=False,
                               undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        self.env.globals.update(newsletter=newsletter_name, base_url=base_url.rstrip("/"),
                                postal_address=postal_address)

    def render(self, template: str, status: int = 200, *, private: bool = False,
               headers: dict[str, str] | None = None, **context) -> HTMLResponse:
        html = self.env.get_template(template).render(**context)
        return HTMLResponse(html, status_code=status, headers={**(PRIVATE if private else {}),
                                                               **(headers or {})})

    def error(self, status: int, title: str, message: str, **kw) -> HTMLResponse:
        """The plain 4xx page: says what is wrong, offers the way back, changes nothing."""
        return self.render("error.html.j2", status, private=True, title=title, message=message, **kw)

    def stylesheet(self) -> bytes:
        return (self.dir / "site.css").read_bytes()
