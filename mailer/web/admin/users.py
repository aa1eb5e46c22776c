"""/admin/audit, /admin/users and /admin/account: who changed what; the users and their roles
(owners manage them); one's own second factor.

The audit log (mailer/audit.py) is read a page (50) at a time, newest first, filtered by user,
subscriber (an address or an id) and action. Users are changed exactly as `mailer admin add-user |
set-role | remove-user` change them, each change an audit entry. Enrolling a second factor here
shows the QR code as inline SVG (no script, no image request) and asks for a first code before it
is stored, so a typo in the app never locks anyone out.
"""

from __future__ import annotations

import segno
from fastapi import APIRouter, Depends, Form, Request
from itsdangerous import BadSignature
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.responses import RedirectResponse, Response

from mailer import admin_users, audit
from mailer.errors import AdminUserError
from mailer.web.admin.auth import owner
from subscribers import store
from subscribers.errors import SubscriberError

router = APIRouter()
ENROL_SECONDS = 600


# ---------------------------------------------------------------- the audit log

def _audit(conn, user: str, subscriber: str, action: str, before: int | None):
    sid = None
    if subscriber:
        if subscriber.isdigit():
            sid = int(subscriber)
        else:
            try:
                sid = store.get_subscriber(conn, subscriber).id
            except SubscriberError as exc:
                raise HTTPException(404, f"{exc} (forgotten subscribers are found by their number)") from None
    page = audit.entries(conn, actor=user or None, action=action or None, subscriber_id=sid, before=before)
    return {"page": page, "actors": [u.name for u in admin_users.all_users(conn)], "subscriber_id": sid}


@router.get("/audit", include_in_schema=False)
async def audit_log(request: Request, user: str = "", subscriber: str = "", action: str = "",
                    before: int | None = None) -> Response:
    ctx = request.app.state.admin
    user, subscriber, action = user.strip()[:64], subscriber.strip()[:320], action.strip()[:32]
    data = await run_in_threadpool(ctx.web.read, _audit, user, subscriber, action, before)
    query = "&".join(f"{k}={v}" for k, v in (("user", user), ("subscriber", subscriber), ("action", action)) if v)
    return ctx.page(request, "audit.html.j2", user=user, subscriber=subscriber, action=action, query=query,
                    actions=[str(a) for a in audit.Action], describe=audit.describe, **data)


# ---------------------------------------------------------------- users (owners)

@router.get("/users", include_in_schema=False)
async def users(request: Request, done: str = "") -> Response:
    ctx = request.app.state.admin
    found = await run_in_threadpool(ctx.web.read, admin_users.all_users)
    return ctx.page(request, "users.html.j2", users=found, roles=[str(r) for r in admin_users.Role], error="",
                    done=done[:200])


async def _user_change(request: Request, fn, *args) -> Response:
    ctx = request.app.state.admin
    try:
        said = await run_in_threadpool(ctx.web.write, fn, request.state.admin, *args)
    except AdminUserError as exc:
        found = await run_in_threadpool(ctx.web.read, admin_users.all_users)
        return ctx.page(request, "users.html.j2", 400, users=found, roles=[str(r) for r in admin_users.Role],
                        error=str(exc), done="")
    found = await run_in_threadpool(ctx.web.read, admin_users.all_users)
    return ctx.page(request, "users.html.j2", users=found, roles=[str(r) for r in admin_users.Role], error="",
                    done=said)


def _add_user(conn, admin, name: str, role: str, password: str, again: str) -> str:
    if password != again:
        raise AdminUserError("the two passwords differ")
    given = admin_users.add_user(conn, name.strip(), password, role or None)
    audit.record(conn, **admin.who._asdict(), action=audit.Action.USER_ADD, target=name.strip(),
                 detail={"role": given})
    return f"Added {name.strip()} ({given})."


def _set_role(conn, admin, name: str, role: str) -> str:
    old, new = admin_users.set_role(conn, name, role)
    if old is new:
        return f"{name} is already {new}."
    audit.record(conn, **admin.who._asdict(), action=audit.Action.USER_ROLE, target=name,
                 detail={"from": old, "to": new})
    return f"{name} is now {new} (was {old})."


def _remove_user(conn, admin, name: str) -> str:
    admin_users.remove_user(conn, name, keep_an_owner=True)
    audit.record(conn, **admin.who._asdict(), action=audit.Action.USER_REMOVE, target=name)
    return f"Removed {name}; their sessions end at once."


@router.post("/users", include_in_schema=False, dependencies=[Depends(owner)])
async def add_user(request: Request, name: str = Form(""), role: str = Form(""), password: str = Form(""),
                   again: str = Form("")) -> Response:
    return await _user_change(request, _add_user, name, role, password, again)


@router.post("/users/{name}/role", include_in_schema=False, dependencies=[Depends(owner)])
async def set_role(request: Request, name: str, role: str = Form("")) -> Response:
    return await _user_change(request, _set_role, name, role)


@router.post("/users/{name}/remove", include_in_schema=False, dependencies=[Depends(owner)])
async def remove_user(request: Request, name: str) -> Response:
    return await _user_change(request, _remove_user, name)


# ---------------------------------------------------------------- one's own second factor

def _account(conn, name: str) -> dict:
    on = admin_users.has_totp(conn, name)
    return {"totp": on, "left": admin_users.recovery_left(conn, name) if on else 0}


@router.get("/account", include_in_schema=False)
async def account(request: Request) -> Response:
    ctx = request.app.state.admin
    data = await run_in_threadpool(ctx.web.read, _account, request.state.admin.name)
    return ctx.page(request, "account.html.j2", enrol=None, codes=None, error="", **data)


def _qr_svg(uri: str) -> str:
    return segno.make(uri, error="m").svg_inline(scale=4, title="QR code of your authenticator key", dark="#000",
                                                  light="#fff")


@router.post("/account/totp", include_in_schema=False)
async def totp_start(request: Request) -> Response:
    """A new key, shown as a QR code and as text, and a form asking for its first code."""
    ctx = request.app.state.admin
    name = request.state.admin.name
    secret = admin_users.new_totp_secret()
    uri = admin_users.totp_uri(name, secret)
    signed = ctx.sessions.signer.dumps({"enrol": secret, "u": name})
    data = await run_in_threadpool(ctx.web.read, _account, name)
    return ctx.page(request, "account.html.j2", enrol={"uri": uri, "qr": _qr_svg(uri), "key": signed,
                                                      "secret": secret}, codes=None, error="", **data)


def _enrol(conn, admin, secret: str, code: str):
    enrolled = admin_users.enrol_totp(conn, admin.name, secret)
    if not admin_users.check_code(conn, admin.name, code):
        raise AdminUserError("That code is not right: scan the QR code again and type the code the app shows now.")
    audit.record(conn, **admin.who._asdict(), action=audit.Action.USER_TOTP, target=admin.name,
                 detail={"second factor": "enrolled"})
    return enrolled


@router.post("/account/totp/confirm", include_in_schema=False)
async def totp_confirm(request: Request, key: str = Form(""), code: str = Form("")) -> Response:
    ctx = request.app.state.admin
    admin = request.state.admin
    try:
        data = ctx.sessions.signer.loads(key, max_age=ENROL_SECONDS)
    except BadSignature:
        data = None
    if not isinstance(data, dict) or data.get("u") != admin.name or not isinstance(data.get("enrol"), str):
        return RedirectResponse("/admin/account", status_code=303)
    try:
        enrolled = await run_in_threadpool(ctx.web.write, _enrol, admin, data["enrol"], code[:64])
    except AdminUserError as exc:
        uri = admin_users.totp_uri(admin.name, data["enrol"])
        state = await run_in_threadpool(ctx.web.read, _account, admin.name)
        return ctx.page(request, "account.html.j2", 400, enrol={"uri": uri, "qr": _qr_svg(uri), "key": key,
                                                               "secret": data["enrol"]}, codes=None, error=str(exc),
                        **state)
    state = await run_in_threadpool(ctx.web.read, _account, admin.name)
    return ctx.page(request, "account.html.j2", enrol=None, codes=enrolled.recovery, error="", **state)
