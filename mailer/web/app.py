"""Web service: Settings -> the FastAPI app (public pages, SendGrid webhook, archive, health, /admin).

`create_app(settings)` wires the routers, middleware and error pages and nothing else; each route
module does one job. Run it with `mailer serve` (uvicorn, one process: the rate limiter and caches
live in memory).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, RedirectResponse, Response

from mailer.i18n import N_
from mailer.notify.delivery import Notifier
from mailer.web import admin, api, archive, challenge, preferences, public, tracking, webhooks
from mailer.web.context import WebContext
from mailer.web.language import Negotiation
from mailer.web.security import BodyLimit, SecurityHeaders

log = logging.getLogger("mailer.web")

FORM_LIMIT = 64 * 1024                 # a subscribe form is a few hundred bytes
WEBHOOK_LIMIT = 8 * 1024 * 1024        # SendGrid batches up to 768 KB (docs/mail-facts.md); room to spare
API_PATHS = ("/webhooks/", "/healthz", "/api/")  # answered in JSON; everything else is a page
# The error page of a status, in the reader's language (the detail is for the API's JSON only).
ERRORS = {404: (N_("Page not found"), N_("There is nothing at this address.")),
          405: (N_("Not allowed"), N_("This page cannot be used that way.")),
          413: (N_("Too large"), N_("What was sent is too large for this form."))}


def create_app(settings) -> FastAPI:
    app = FastAPI(title=f"{settings.newsletter.name} web service", version="1",
                  docs_url=None, redoc_url=None)   # the Swagger UI needs inline script: CSP forbids it
    app.state.web = WebContext(settings)
    app.state.web.tracking = tracking.Tracking(app.state.web)
    for module in (public, preferences, webhooks, archive, challenge, tracking, api):
        app.include_router(module.router)
    app.include_router(api.docs_router)
    admin.install(app, app.state.web)
    _add_basics(app)
    _add_error_pages(app)
    app.add_middleware(BodyLimit, limit=FORM_LIMIT, overrides={"/webhooks/": WEBHOOK_LIMIT,
                                                               "/admin/lists/": admin.UPLOAD_LIMIT})
    app.add_middleware(Negotiation, default=settings.newsletter.language)   # each page in its reader's language
    app.add_middleware(tracking.FastPath, tracking=app.state.web.tracking)   # /c/ and /o/: the busiest paths
    app.add_middleware(SecurityHeaders, https=settings.newsletter.base_url.startswith("https://"))
    notifier = Notifier(settings)        # the outgoing webhooks (a bad whsec_ secret stops us here)
    app.router.add_event_handler("startup", notifier.start)
    app.router.add_event_handler("shutdown", notifier.stop)
    app.router.add_event_handler("shutdown", app.state.web.tracking.close)   # its last clicks, then the database
    app.router.add_event_handler("shutdown", app.state.web.close)
    return app


def _add_basics(app: FastAPI) -> None:
    @app.get("/healthz", summary="200 when the app and its database answer and take a write",
             responses={503: {"description": "database unavailable, or it cannot write (disk full)"}})
    async def healthz(request: Request) -> JSONResponse:
        web = request.app.state.web
        try:
            await run_in_threadpool(_ping, web)
        except Exception as exc:  # noqa: BLE001 - any failure means "not healthy"
            log.error("healthz: database does not answer: %s", exc)
            return JSONResponse({"status": "unavailable", "database": "error"}, status_code=503)
        try:
            await run_in_threadpool(web.can_write)
        except Exception as exc:  # noqa: BLE001 - any failure means "cannot store an unsubscribe"
            log.error("healthz: database cannot write: %s", str(exc).splitlines()[0])
            return JSONResponse({"status": "unavailable", "database": "cannot write"}, status_code=503)
        return JSONResponse({"status": "ok", "database": "ok"})

    @app.get("/static/site.css", include_in_schema=False)
    def stylesheet(request: Request) -> Response:
        return Response(request.app.state.web.pages.stylesheet(), media_type="text/css",
                        headers={"cache-control": "public, max-age=3600"})

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:   # browsers ask on every page that names none (the archived mails)
        return Response(status_code=204, headers={"cache-control": "public, max-age=86400"})

    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse("/subscribe", status_code=303)


def _ping(web: WebContext) -> None:
    web.read(lambda conn: conn.execute(text("SELECT 1")))


def _add_error_pages(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path.startswith(API_PATHS):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
        title, message = ERRORS.get(exc.status_code, (N_("Error"), str(exc.detail)))
        if admin.is_admin_path(request.url.path):
            return await admin.error_page(request, exc.status_code, title, str(exc.detail))
        page = request.app.state.web.pages.error(exc.status_code, title, message)
        page.headers.update(exc.headers or {})
        return page

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        if request.url.path.startswith("/api/"):   # what is wrong, where (never the value sent)
            problems = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
            return JSONResponse({"detail": "invalid request", "errors": problems}, status_code=422)
        if request.url.path.startswith(API_PATHS):
            return JSONResponse({"detail": "invalid request"}, status_code=400)
        return request.app.state.web.pages.error(400, N_("Bad request"), N_("The request is not valid."))
