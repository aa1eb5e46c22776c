"""The admin web interface under /admin: users log in, then manage lists, subscribers and issues.

    auth.py        sessions, CSRF, same-site checks, "no session, no answer"
    login.py       the login (password, then the second factor if any) and logout, rate limited
    dashboard.py   /admin: lists with counts, the last issues, a chart of events, the next send
    lists.py       /admin/lists...: create, edit, delete, members, CSV import and export
    people.py      /admin/subscribers...: the filtered view, one action on many, its CSV; one
                   subscriber: edit, add/unsubscribe/resubscribe/forget
    issues.py      /admin/issues...: drafts and sent issues, preview, lint, proof, schedule, send,
                   failed readers and Retry failed, who got it (CSV), report
    users.py       /admin/audit (the audit log), /admin/users (roles), /admin/account (own TOTP)
    figures.py     what the dashboard and the reports count (ledger + events), and the SVG chart
    search.py      the fast queries: subscriber search and a list's members a page at a time

`install(app, web)` adds all of it to the readers' app (mailer/web/app.py).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import Depends, FastAPI, Request
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.concurrency import run_in_threadpool
from starlette.responses import (
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)

from mailer.admin_users import Role, session_user
from mailer.model import as_written
from mailer.schedule.slots import shown
from mailer.web.admin import dashboard, issues, lists, login, people, users
from mailer.web.admin.auth import (
    SESSION_COOKIE,
    Forbidden,
    NotLoggedIn,
    Sessions,
    current_admin,
    is_page_request,
    login_redirect_target,
    plain_request,
)
from mailer.web.admin.search import CountCache
from mailer.web.lowpriority import LowPriorityPool
from mailer.web.ratelimit import Backoff, Gate, Rate, RateLimiter
from subscribers.normalize import display_email

# Admin pages show personal data: never cached, never indexed.
NO_STORE = {"cache-control": "no-store", "x-robots-tag": "noindex, nofollow"}
UPLOAD_LIMIT = 64 * 1024 * 1024        # a CSV import; parsed from a temporary file


class AdminContext:
    def __init__(self, web) -> None:
        settings = web.settings
        self.web = web
        self.settings = settings
        self.base_url = settings.newsletter.base_url
        self.sessions = Sessions(web.secret, hours=settings.web.admin_session_hours,
                                 https=self.base_url.startswith("https://"))
        rate = Rate(burst=settings.web.admin_login_burst, per_hour=settings.web.admin_login_per_hour)
        self.limiter = RateLimiter({"login-address": rate, "login-client-user": rate})
        self.backoff = Backoff()                # per client and user name: a growing delay after failures
        self.checks = Gate(settings.web.admin_login_checks)   # password checks at once ...
        # ... each on a thread of its own at the lowest OS priority (mailer/web/lowpriority.py)
        self.checkers = LowPriorityPool(settings.web.admin_login_checks, "mailer-login-check")

        self.counts = CountCache(web.read)
        self.dir = Path(settings.compose.templates_dir) / "admin"
        self.env = Environment(loader=FileSystemLoader(self.dir), autoescape=True, auto_reload=False,
                               undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        self.env.globals.update(newsletter=settings.newsletter.name)
        self.env.filters["n"] = lambda value: f"{value or 0:,}"
        self.env.filters["as_written"] = as_written   # a subject as the editor wrote it (mailer/model.py)
        self.env.filters["when"] = lambda at: at.strftime("%Y-%m-%d %H:%M") if at else ""
        # the schedule's times in its own time zone, then UTC (as `mailer schedule show`)
        self.env.filters["unicode"] = display_email   # an IDN domain as people write it (storage: punycode)
        self.env.filters["slot"] = lambda at: shown(at, settings.schedule) if at else ""

    def page(self, request: Request, template: str, code: int = 200, /, **context) -> HTMLResponse:
        admin = getattr(request.state, "admin", None)
        html = self.env.get_template(template).render(
            admin=admin, csrf=admin.csrf if admin else "", path=request.url.path, **context)
        return HTMLResponse(html, status_code=code, headers=NO_STORE)

    async def session_valid(self, name: str, stamp: str) -> bool:
        return await self.session_role(name, stamp) is not None

    async def session_role(self, name: str, stamp: str) -> Role | None:
        """The user's role now, if the session's stamp is still theirs; else None."""
        found = await run_in_threadpool(self.web.read, session_user, name)
        return found[1] if found is not None and found[0] == stamp else None


def _refuse(request: Request) -> Response:
    if is_page_request(request):
        return RedirectResponse(login_redirect_target(request), status_code=303, headers=NO_STORE)
    return PlainTextResponse("401: log in at /admin/login first\n", status_code=401,
                             headers={**NO_STORE, "www-authenticate": 'Cookie realm="admin"'})


async def error_page(request: Request, status: int, title: str, message: str) -> Response:
    """An error under /admin (e.g. 404): shown to a logged-in user only; anyone else is refused
    exactly as on an existing page, so nothing tells which /admin paths exist."""
    ctx = request.app.state.admin
    if getattr(request.state, "admin", None) is None and request.url.path != "/admin/login":
        data = ctx.sessions.read(request.cookies.get(SESSION_COOKIE))
        if data is None or not await ctx.session_valid(data["u"], data["s"]):
            return _refuse(request)
    return ctx.page(request, "message.html.j2", status, title=title, message=message)


def is_admin_path(path: str) -> bool:
    return path == "/admin" or path.startswith("/admin/")


def install(app: FastAPI, web) -> None:
    app.state.admin = AdminContext(web)
    app.router.add_event_handler("shutdown", app.state.admin.checkers.close)
    app.add_middleware(login.BusyDoor, checks=app.state.admin.checks)   # inside the security headers
    app.include_router(login.router)
    for module in (dashboard, lists, people, issues, users):
        app.include_router(module.router, prefix="/admin", dependencies=[Depends(current_admin),
                                                                          Depends(plain_request)])

    @app.get("/admin/static/admin.css", include_in_schema=False)
    def stylesheet(request: Request) -> Response:
        css = (request.app.state.admin.dir / "admin.css").read_bytes()
        return Response(css, media_type="text/css", headers={"cache-control": "public, max-age=3600"})

    @app.exception_handler(NotLoggedIn)
    async def not_logged_in(request: Request, exc: NotLoggedIn) -> Response:
        return _refuse(request)

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden) -> Response:
        return request.app.state.admin.page(request, "message.html.j2", 403, title="Refused",
                                            message=exc.reason)
