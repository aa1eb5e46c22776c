"""/admin/login and /admin/logout: a name and a password -> a session cookie, rate limited.

Login attempts are limited per client address and per user name (token buckets, [web]
admin_login_burst and admin_login_per_hour), whether the password is right or not; an unknown
name and a wrong password get the same answer in the same time (mailer/admin_users.py).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from mailer.admin_users import verify
from mailer.web.admin.auth import (
    SESSION_COOKIE,
    Admin,
    check_same_site,
    check_token,
    current_admin,
    safe_next,
)

router = APIRouter(prefix="/admin")


def _login_page(request: Request, status: int = 200, *, error: str = "", username: str = "",
                next_url: str = "/admin") -> Response:
    ctx = request.app.state.admin
    nonce, new = ctx.sessions.login_nonce(request)
    page = ctx.page(request, "login.html.j2", status, error=error, username=username, next_url=safe_next(next_url),
                    login_csrf=ctx.sessions.token("login", nonce))
    if new:
        ctx.sessions.set_login_nonce(page, nonce)
    return page


@router.get("/login", include_in_schema=False)
def login_form(request: Request, next: str = "/admin") -> Response:
    ctx = request.app.state.admin
    if ctx.sessions.read(request.cookies.get(SESSION_COOKIE)):
        return RedirectResponse(safe_next(next), status_code=303)
    return _login_page(request, next_url=next)


@router.post("/login", include_in_schema=False)
async def login(request: Request, username: str = Form(""), password: str = Form(""), csrf: str = Form(""),
                next: str = Form("/admin")) -> Response:
    ctx = request.app.state.admin
    check_same_site(request, ctx.base_url)
    nonce, _ = ctx.sessions.login_nonce(request)
    check_token(csrf, ctx.sessions.token("login", nonce))
    address = request.client.host if request.client else "unknown"
    name = username.strip()
    if not (ctx.limiter.allow("login-address", address) and ctx.limiter.allow("login-user", name.lower())):
        return _login_page(request, 429, username=name, next_url=next,
                           error="Too many login attempts. Wait a few minutes, then try again.")
    stamp = await run_in_threadpool(ctx.web.write, verify, name, password) if name and password else None
    if stamp is None:
        return _login_page(request, 401, username=name, next_url=next,
                           error="That user name and password do not match.")
    response = RedirectResponse(safe_next(next), status_code=303)
    ctx.sessions.set_session(response, ctx.sessions.issue(name, stamp))
    return response


@router.post("/logout", include_in_schema=False)
def logout(request: Request, admin: Admin = Depends(current_admin)) -> Response:
    response = RedirectResponse("/admin/login", status_code=303)
    request.app.state.admin.sessions.clear(response)
    return response
