"""/admin/login, /admin/login/code and /admin/logout: a name and a password (and, for a user with a
second factor, a TOTP or recovery code) -> a session cookie, rate limited.

Login attempts are limited per client address and per client and user name together (token
buckets, [web] admin_login_burst and admin_login_per_hour), never per user name alone, so a
stranger's guesses cannot lock the user out; a failed attempt takes a token from both, a
successful one gives it back, so people who log in often are never locked out by it. After three
failures in a row, the same client at the same name waits 1, 2, 4, ... seconds (up to 15 minutes)
between tries. Over the limit: 429 with Retry-After, and no password check at all. The password check (argon2) runs
outside any transaction, at most [web] admin_login_checks at once, on threads of the lowest OS
priority (mailer/web/lowpriority.py); one more answers 503 with Retry-After at once, before any
database read, instead of waiting for a thread (docs/admin.md, "Login rate limits").
An unknown name and a wrong password get the same answer in the same time
(mailer/admin_users.py). A right password for a user with a second factor leads to the code form,
holding a signed cookie for five minutes; the code is limited by the same buckets.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from mailer.admin_users import (
    Stored,
    check_code,
    check_password_hash,
    end_sessions,
    has_totp,
    record_login,
    stored_password,
)
from mailer.web.admin.auth import (
    CODE_COOKIE,
    SESSION_COOKIE,
    Admin,
    check_same_site,
    check_token,
    current_admin,
    safe_next,
)
from mailer.web.ratelimit import Gate, client_key

router = APIRouter(prefix="/admin")
BUCKETS = ("login-address", "login-client-user")


def _login_page(request: Request, status: int = 200, *, error: str = "", username: str = "",
                next_url: str = "/admin", template: str = "login.html.j2", retry_after: int = 0) -> Response:
    ctx = request.app.state.admin
    nonce, new = ctx.sessions.login_nonce(request)
    page = ctx.page(request, template, status, error=error, username=username, next_url=safe_next(next_url),
                    login_csrf=ctx.sessions.token("login", nonce))
    if new:
        ctx.sessions.set_login_nonce(page, nonce)
    if retry_after:
        page.headers["retry-after"] = str(retry_after)
    return page


def _keys(request: Request, name: str) -> tuple[str, str]:
    """(the client, the client with the user name): a stranger's guesses at a name count against
    the stranger, never against the user logging in from elsewhere. IPv6 clients by their /64."""
    client = client_key(request.client.host if request.client else None)
    return client, f"{client} {name.lower()}"


def _limited(request: Request, name: str) -> int:
    """0 when this attempt may go ahead (a token taken from both buckets); else Retry-After seconds:
    the growing delay after failures of this client at this name, or an empty bucket."""
    ctx = request.app.state.admin
    keys = _keys(request, name)
    limiter = ctx.limiter
    if not all(limiter.allow(bucket, key) for bucket, key in zip(BUCKETS, keys, strict=True)):
        return max(limiter.wait(bucket, key) for bucket, key in zip(BUCKETS, keys, strict=True)) or 1
    return ctx.backoff.wait(keys)        # (a try during the delay still took its tokens)


def _refund(request: Request, name: str) -> None:
    """An attempt that does not count (no check was made): its tokens back."""
    ctx = request.app.state.admin
    for bucket, key in zip(BUCKETS, _keys(request, name), strict=True):
        ctx.limiter.refund(bucket, key)


def _succeeded(request: Request, name: str) -> None:
    """A login that succeeded: its tokens back, and no delay left for this client at this name."""
    _refund(request, name)
    request.app.state.admin.backoff.succeeded(_keys(request, name))


def _failed(request: Request, name: str) -> None:
    request.app.state.admin.backoff.failed(_keys(request, name))


async def _checked(request: Request, csrf: str) -> None:
    ctx = request.app.state.admin
    check_same_site(request, ctx.base_url)
    nonce, _ = ctx.sessions.login_nonce(request)
    check_token(csrf, ctx.sessions.token("login", nonce))


TOO_MANY = "Too many login attempts. Wait a few minutes, then try again."


@router.get("/login", include_in_schema=False)
async def login_form(request: Request, next: str = "/admin") -> Response:
    ctx = request.app.state.admin
    data = ctx.sessions.read(request.cookies.get(SESSION_COOKIE))
    if data is not None and await ctx.session_valid(data["u"], data["s"]):
        return RedirectResponse(safe_next(next), status_code=303)
    page = _login_page(request, next_url=next)
    if data is not None:          # signed but ended (a new password, a logout elsewhere): no loop back
        ctx.sessions.clear(page)
    return page


def _recorded(conn, name: str, found: Stored, new_hash: str | None) -> tuple[str | None, bool]:
    stamp = record_login(conn, found, new_hash)
    return stamp, stamp is not None and has_totp(conn, name)


BUSY = "The server is checking other logins right now. Try again in a moment."
# The answer at the door (BusyDoor): a page of its own, made once, linking back to the form.
BUSY_PAGE = ('<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Busy</title>'
             '<link rel="stylesheet" href="/admin/static/admin.css"></head><body><main><h1>Busy</h1>'
             f'<p>{BUSY}</p><p><a href="/admin/login">Log in</a></p></main></body></html>').encode()
BUSY_HEADERS = [(b"content-type", b"text/html; charset=utf-8"), (b"content-length", str(len(BUSY_PAGE)).encode()),
                (b"retry-after", b"1"), (b"cache-control", b"no-store"), (b"x-robots-tag", b"noindex, nofollow")]


class BusyDoor:
    """Pure ASGI: a login post while every password check slot is taken is answered 503 here,
    before routing, form parsing, the CSRF check, the rate limits and any template, so a flood's
    refusals cost the event loop (which also answers readers' unsubscribes) next to nothing. It
    takes nothing (no token, no slot); a post that gets past the door meets the route's own gate."""

    def __init__(self, app, *, checks: Gate) -> None:
        self.app, self.checks = app, checks

    async def __call__(self, scope, receive, send) -> None:
        if (scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/admin/login"
                and self.checks.full()):
            await send({"type": "http.response.start", "status": 503, "headers": BUSY_HEADERS})
            await send({"type": "http.response.body", "body": BUSY_PAGE})
            return
        await self.app(scope, receive, send)


@router.post("/login", include_in_schema=False)
async def login(request: Request, username: str = Form(""), password: str = Form(""), csrf: str = Form(""),
                next: str = Form("/admin")) -> Response:
    ctx = request.app.state.admin
    await _checked(request, csrf)
    name = username.strip()
    wait = _limited(request, name)
    if wait:
        return _login_page(request, 429, username=name, next_url=next, error=TOO_MANY, retry_after=wait)
    stamp, second = None, False
    if name and password:
        # only `admin_login_checks` at once; one more is refused before any database read, not
        # queued. Read, check, record: the slow check (argon2) holds no transaction and no writer
        # lock, and runs on a thread of the lowest OS priority (mailer/web/lowpriority.py)
        if not ctx.checks.enter():
            _refund(request, name)
            return _login_page(request, 503, username=name, next_url=next, error=BUSY, retry_after=1)
        try:
            found = await run_in_threadpool(ctx.web.read, stored_password, name)
            right, new_hash = await ctx.checkers.run(check_password_hash, found, password)
        finally:
            ctx.checks.leave()
        if right and found is not None:
            stamp, second = await run_in_threadpool(ctx.web.write, _recorded, name, found, new_hash)
    if stamp is None:
        _failed(request, name)
        return _login_page(request, 401, username=name, next_url=next,
                           error="That user name and password do not match.")
    if second:
        page = _login_page(request, username=name, next_url=next, template="login_code.html.j2")
        ctx.sessions.set_code(page, ctx.sessions.issue_code(name, stamp))
        return page
    _succeeded(request, name)
    return _signed_in(request, name, stamp, next)


def _signed_in(request: Request, name: str, stamp: str, next_url: str) -> Response:
    ctx = request.app.state.admin
    response = RedirectResponse(safe_next(next_url), status_code=303)
    ctx.sessions.set_session(response, ctx.sessions.issue(name, stamp))
    ctx.sessions.clear_code(response)
    return response


@router.post("/login/code", include_in_schema=False)
async def login_code(request: Request, code: str = Form(""), csrf: str = Form(""),
                     next: str = Form("/admin")) -> Response:
    ctx = request.app.state.admin
    await _checked(request, csrf)
    pending = ctx.sessions.read_code(request.cookies.get(CODE_COOKIE))
    if pending is None or not await ctx.session_valid(pending["u"], pending["s"]):
        return _login_page(request, 401, next_url=next, error="That took too long: log in again.")
    name = pending["u"]
    wait = _limited(request, name)
    if wait:
        return _login_page(request, 429, username=name, next_url=next, error=TOO_MANY, retry_after=wait,
                           template="login_code.html.j2")
    if not code.strip() or not await run_in_threadpool(ctx.web.write, check_code, name, code[:64]):
        _failed(request, name)
        return _login_page(request, 401, username=name, next_url=next, template="login_code.html.j2",
                           error="That code is not right (or was used already). Try the next one.")
    _succeeded(request, name)
    return _signed_in(request, name, pending["s"], next)


@router.post("/logout", include_in_schema=False)
async def logout(request: Request, admin: Admin = Depends(current_admin)) -> Response:
    # ended on the server: this cookie, and any copy of it, stops working (so do the user's others)
    await run_in_threadpool(request.app.state.admin.web.write, end_sessions, admin.name)
    response = RedirectResponse("/admin/login", status_code=303)
    request.app.state.admin.sessions.clear(response)
    return response
