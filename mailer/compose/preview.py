"""Preview: ComposedIssue -> what one (made-up) preview recipient gets, served on 127.0.0.1.

`preview_values` and `fill_preview` stand in for personalize (stage 4) so editors can look at a
finished email; `PreviewServer` serves the email, its text part and its lint report on loopback
and rebuilds whenever the issue file or a template changes (watchfiles). The server's imports
stay inside it: `mailer issue build` loads this module and must start fast.
"""

from __future__ import annotations

import dataclasses
import html as html_lib
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from mailer.compose.lint import lint
from mailer.compose.render import compose, templates_dir
from mailer.compose.source import read_issue
from mailer.errors import MailerError
from mailer.model import Part, fill, first_name

PREVIEW_NAME = "Preview Reader"
PREVIEW_EMAIL = "preview@example.org"


def preview_values(settings, slug: str) -> dict[str, str]:
    """The per-recipient values of the preview recipient, with URLs the web service serves."""
    base = settings.newsletter.base_url.rstrip("/")
    return {"name": PREVIEW_NAME, "first_name": first_name(PREVIEW_NAME), "email": PREVIEW_EMAIL,
            "unsubscribe_url": f"{base}/unsubscribe/preview", "archive_url": f"{base}/archive/{slug}",
            "preferences_url": f"{base}/preferences/preview"}


def fill_preview(text: str, values: dict[str, str], part: Part) -> str:
    """Replace the markers of one part; values are HTML-escaped in the HTML part."""
    return fill(text, values, part)


@dataclass(frozen=True)
class Build:
    """One build of the issue as the preview shows it; `error` keeps the last good email visible."""

    version: int
    html: str = ""
    text: str = ""
    mjml: str = ""
    report: str = ""
    error: str = ""
    subject: str = ""          # as the preview reader's inbox shows them
    preheader: str = ""


def build_preview(path: Path, settings, version: int, last: Build | None = None) -> Build:
    try:
        issue = read_issue(path)
        composed = compose(issue, settings)
    except MailerError as exc:
        last = last or Build(version)
        return dataclasses.replace(last, version=version, error=f"error: {exc}")
    values = preview_values(settings, issue.slug)
    report = lint(issue, composed, templates_dir(settings)).render(str(path))
    return Build(version, fill_preview(composed.html, values, "html"),
                 fill_preview(composed.text, values, "text"), composed.mjml, report,
                 subject=fill_preview(composed.subject, values, "text"),
                 preheader=html_lib.unescape(fill_preview(composed.preheader, values, "html")))


class PreviewServer:
    """`mailer issue preview`: http://127.0.0.1:PORT/ shows the email and rebuilds on change."""

    def __init__(self, path: str | Path, settings, *, port: int = 8025, host: str = "127.0.0.1"):
        from http.server import (
            ThreadingHTTPServer,  # only `issue preview`; `issue build` imports this module
        )

        self.path, self.settings = Path(path).resolve(), settings
        self.current = build_preview(self.path, settings, 1)
        self.stop = threading.Event()
        self.httpd = ThreadingHTTPServer((host, port), _handler(self))
        self.threads = [threading.Thread(target=self.httpd.serve_forever, daemon=True),
                        threading.Thread(target=self._watch, daemon=True)]

    @property
    def url(self) -> str:
        host, port = self.httpd.socket.getsockname()[:2]
        return f"http://{host}:{port}/"

    def start(self) -> PreviewServer:
        for thread in self.threads:
            thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        for thread in self.threads:
            thread.join(timeout=10)

    def rebuild(self) -> Build:
        self.current = build_preview(self.path, self.settings, self.current.version + 1, self.current)
        return self.current

    def _watch(self) -> None:
        import watchfiles  # only `issue preview` watches files

        templates = templates_dir(self.settings)

        def relevant(_change, changed: str) -> bool:
            path = Path(changed)
            return path == self.path or path.is_relative_to(templates)

        # Watch the folder, not the file: editors save by writing a new file and renaming it.
        for _changes in watchfiles.watch(self.path.parent, templates, watch_filter=relevant,
                                         stop_event=self.stop, debounce=200):
            self.rebuild()


def _handler(server: PreviewServer):
    from http.server import (
        BaseHTTPRequestHandler,  # as in PreviewServer: not at `issue build`'s start-up
    )

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            build = server.current
            dark = "dark=1" in self.path.partition("?")[2]
            routes = {"/": (_index(build, server.path), "text/html"),
                      "/email.html": (dark_mode(build.html) if dark else build.html, "text/html"),
                      "/email.txt": (build.text, "text/plain"),
                      "/email.mjml": (build.mjml, "text/plain"),
                      "/version": (str(build.version), "text/plain")}
            body, kind = routes.get(self.path.split("?")[0], ("not found", "text/plain"))
            data = body.encode("utf-8")
            self.send_response(200 if self.path.split("?")[0] in routes else 404)
            self.send_header("Content-Type", f"{kind}; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_args):   # quiet: the editor watches the page, not the log
            pass

    return Handler


_SCHEME_META = re.compile(r'<meta\s+name="(?:color-scheme|supported-color-schemes)"\s+content="([^"]*)"\s*/?>', re.I)


def dark_mode(html: str) -> str:
    """The email as a client whose reader prefers dark shows it, inside a page that does not: its
    `prefers-color-scheme: dark` rules always apply (their `light` ones never), and where the email
    declares `color-scheme: light dark` the browser's own defaults turn dark too (text that no rule
    colours, such as a picture's alt text, is white on a dark canvas; docs/editor.md, "Preview")."""
    html = re.sub(r"prefers-color-scheme\s*:\s*dark", "min-width: 0px", html)
    html = re.sub(r"prefers-color-scheme\s*:\s*light", "max-width: 0px", html)
    declared = " ".join(found.group(1) for found in _SCHEME_META.finditer(html))
    if "dark" in declared:
        html = _SCHEME_META.sub("", html)
        html = re.sub(r"<head([^>]*)>", r'<head\1><meta name="color-scheme" content="dark">', html, count=1)
    return html


def _index(build: Build, path: Path) -> str:
    esc = html_lib.escape
    error = f'<pre class="error">{esc(build.error)}</pre>' if build.error else ""
    if build.error and build.html:   # what follows is the last good build, not this file
        error += ('<p class="stale-note">Stale: the email and report below are from before this '
                  "error; they update when the file builds again.</p>")
    stale = " stale" if build.error else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Preview: {esc(path.name)}</title>
<style>body{{font:14px system-ui,sans-serif;margin:0;background:#eee}} header{{padding:8px 16px;
background:#222;color:#eee}} header a{{color:#9cf;margin-right:12px}} pre{{margin:0;padding:8px 16px;
white-space:pre-wrap}} .error{{background:#fdd;color:#900}} iframe{{border:0;width:100%;height:80vh;
background:#fff;display:block;margin:0 auto}} .stale{{opacity:.45}} .stale-note{{margin:0;padding:6px 16px;
background:#fec;color:#630}} button{{margin-left:8px}} body.phone iframe{{width:375px}}
#inbox{{padding:8px 16px;background:#fff;border-bottom:1px solid #ccc;line-height:1.5}}
#inbox .label{{display:inline-block;width:6em;color:#555}}</style></head><body>
<header><strong>{esc(path.name)}</strong> (build {build.version}) &#8212;
<a href="/email.html">HTML</a><a href="/email.txt">text part</a><a href="/email.mjml">MJML</a>
<button id="phone" aria-pressed="false">Phone width (375 px)</button>
<button id="dark" aria-pressed="false">Dark mode</button></header>
{error}<div id="inbox" class="{stale.strip()}"><span class="label">Subject</span>
<strong id="subject">{esc(build.subject)}</strong><br><span class="label">Preheader</span>
<span id="preheader">{esc(build.preheader)}</span></div>
<pre id="report" class="{stale.strip()}">{esc(build.report)}</pre>
<iframe id="email" class="{stale.strip()}" src="/email.html" title="The email"></iframe>
<script>
// The two views survive the reload after each rebuild (localStorage).
const toggles = {{phone: () => document.body.classList.toggle("phone", on("phone")),
                  dark: () => document.getElementById("email").src =
                                on("dark") ? "/email.html?dark=1" : "/email.html"}};
function on(name) {{ return localStorage.getItem("preview-" + name) === "1"; }}
for (const name in toggles) {{
  const button = document.getElementById(name);
  const show = () => {{ button.setAttribute("aria-pressed", String(on(name))); toggles[name](); }};
  button.onclick = () => {{ localStorage.setItem("preview-" + name, on(name) ? "0" : "1"); show(); }};
  if (on(name)) show();
}}
const seen = "{build.version}";
setInterval(async () => {{ try {{ const v = await (await fetch("/version")).text();
  if (v !== seen) location.reload(); }} catch (e) {{}} }}, 1000);</script>
</body></html>"""
