"""Web service: every response -> the same security headers; every request body -> a size cap.

Pure ASGI middleware (no BaseHTTPMiddleware), because it wraps the one-click unsubscribe path whose
latency matters (RFC 8058 clients give up quickly) and must not buffer or copy responses.
"""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException

# Our own pages load nothing but /static/site.css: no script (but the signup forms'), no inline style, no framing.
PAGE_CSP = ("default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'")
# The signup forms (templates/web/signup_guard.html.j2) add our own scripts: the vendored ALTCHA
# widget and signup.js, its worker (from our origin) and its one request, for a challenge. The
# widget sets one inline style attribute on its checkbox (altcha 3.2.2, always the same text):
# that one is allowed by its hash, no other (tests/web/test_signup.py sees no violation in Chromium).
WIDGET_STYLE = "'unsafe-hashes' 'sha256-be85zOGuGBhguQBGd1ooC4KSYE5ispDi4aCmIYqI/L0='"
SIGNUP_CSP = PAGE_CSP.replace("default-src 'none'; style-src 'self';",
                              "default-src 'none'; script-src 'self'; worker-src 'self'; connect-src 'self'; "
                              f"style-src 'self' {WIDGET_STYLE};")
# An archived issue is the email's own HTML: inline styles and remote images (as in a mail client),
# still no script, no forms, no framing.
ARCHIVE_CSP = ("default-src 'none'; style-src 'self' 'unsafe-inline' https:; img-src 'self' https: http: data:; "
               "font-src https: data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'")

COMMON = [
    (b"x-content-type-options", b"nosniff"),
    # Tokens travel in URLs (/confirm/..., /unsubscribe/...): never leak them to another site.
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), interest-cohort=()"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
HSTS = (b"strict-transport-security", b"max-age=31536000")
CSP = b"content-security-policy"


class SecurityHeaders:
    """Add COMMON headers and a CSP unless the route already set one (the archive sets its own).

    HSTS only when the public base URL is https: over plain http the header would be ignored
    anyway, and local use over http stays possible. An unhandled error becomes a plain 500 sent
    from here, headers included (Starlette's own error response is made outside every user
    middleware, so it would carry none); the error is then passed on, so it is logged once.
    """

    def __init__(self, app, *, https: bool) -> None:
        self.app = app
        self.extra = COMMON + ([HSTS] if https else [])

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        started = False

        async def send_with_headers(message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers += [(k, v) for k, v in self.extra if k not in names]
                if CSP not in names:
                    headers.append((CSP, PAGE_CSP.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            if not started:
                body = b"Internal Server Error"
                await send_with_headers({"type": "http.response.start", "status": 500, "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]})
                await send_with_headers({"type": "http.response.body", "body": body})
            raise


class BodyTooLarge(HTTPException):
    """Raised from `receive`, so FastAPI's body parsing passes it on as a 413, not a 400."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")


class BodyLimit:
    """Refuse request bodies over `limit` bytes with 413, whether announced or chunked.

    Starlette reads form and JSON bodies whole into memory; this bounds what one request can cost.
    `overrides` maps a path prefix to a larger limit (SendGrid posts batches up to 768 KB).
    """

    def __init__(self, app, *, limit: int, overrides: dict[str, int] | None = None) -> None:
        self.app, self.limit, self.overrides = app, limit, overrides or {}

    def _limit_for(self, path: str) -> int:
        return next((n for prefix, n in self.overrides.items() if path.startswith(prefix)), self.limit)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self._limit_for(scope["path"])
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            return await _too_large(send, limit)
        seen = 0
        started = False

        async def counting_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await _too_large(send, limit)


async def _too_large(send, limit: int) -> None:
    body = json.dumps({"detail": f"request body larger than {limit} bytes"}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
