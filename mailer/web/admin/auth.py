"""Admin web interface: request -> who is logged in, or a refusal (login, sessions, CSRF).

- A session is a cookie signed with MAILER_SECRET_KEY (itsdangerous, its own salt) holding the
  user name, a stamp of their password hash and a random nonce; it expires after
  [web] admin_session_hours, is HttpOnly, SameSite=Lax, scoped to /admin, and Secure when
  base_url is https. Each request re-reads the stamp, so removing a user (or giving them a new
  password) ends their sessions at once.
- CSRF: every form carries `csrf`, an HMAC of the session's nonce (the login form: of a nonce in
  its own short-lived cookie). A POST without the right token gets 403, and so does any POST whose
  Origin is another site or whose Sec-Fetch-Site says cross-site, token or not.
- Without a session nothing answers: a page (GET asking for HTML) redirects to /admin/login,
  anything else gets 401.
Reasons and trade-offs: docs/admin.md.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from fastapi import Request
from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.exceptions import HTTPException

from mailer.admin_users import Role
from mailer.audit import Via, Who

SESSION_COOKIE = "mailer_admin"
LOGIN_COOKIE = "mailer_admin_login"
CODE_COOKIE = "mailer_admin_code"     # password right, second factor still to come
CODE_SECONDS = 300
COOKIE_PATH = "/admin"
LOGIN_COOKIE_SECONDS = 3600
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
# A form's fields: up to 1,000 ticked subscribers (`selected`) and a few more; the body's size
# limit (mailer/web/app.py) bounds the work anyway. Starlette's default is 1,000.
MAX_FIELDS = 5000


class NotLoggedIn(Exception):
    """No valid session: app.py turns it into a redirect (pages) or a 401 (anything else)."""


class Forbidden(Exception):
    """A POST without a valid CSRF token, or from another site: 403."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Admin:
    name: str
    csrf: str            # the token this session's forms carry
    role: Role = Role.OWNER
    ip: str | None = None

    def can(self, role: str) -> bool:
        """May this user do what `role` may? (templates hide what they may not do)"""
        return self.role.allows(Role(role))

    @property
    def who(self) -> Who:
        """For the audit log (mailer/audit.py)."""
        return Who(self.name, Via.WEB, self.ip)

    @property
    def source(self) -> str:
        """The history's source for this user's changes: `admin:NAME`."""
        return f"admin:{self.name}"[:64]


class Sessions:
    def __init__(self, secret: str, *, hours: int, https: bool) -> None:
        self.secret = secret.encode()
        self.max_age = hours * 3600
        self.https = https
        self.signer = URLSafeTimedSerializer(secret, salt="mailer-admin-session")

    # ---- the session cookie
    def issue(self, name: str, stamp: str) -> str:
        return self.signer.dumps({"u": name, "s": stamp, "n": secrets.token_urlsafe(16)})

    def read(self, cookie: str | None) -> dict | None:
        if not cookie:
            return None
        try:
            data = self.signer.loads(cookie, max_age=self.max_age)
        except BadSignature:                       # forged, tampered or expired (SignatureExpired)
            return None
        return data if isinstance(data, dict) and {"u", "s", "n"} <= set(data) else None

    def token(self, purpose: str, nonce: str) -> str:
        return hmac.new(self.secret, f"{purpose}|{nonce}".encode(), hashlib.sha256).hexdigest()

    def cookie_args(self, max_age: int) -> dict:
        return dict(max_age=max_age, path=COOKIE_PATH, httponly=True, samesite="lax", secure=self.https)

    def set_session(self, response, value: str) -> None:
        response.set_cookie(SESSION_COOKIE, value, **self.cookie_args(self.max_age))

    def clear(self, response) -> None:
        response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH, httponly=True, samesite="lax", secure=self.https)

    # ---- between a right password and the second factor: who, signed, for a few minutes
    def issue_code(self, name: str, stamp: str) -> str:
        return self.signer.dumps({"u": name, "s": stamp, "2fa": True})

    def read_code(self, cookie: str | None) -> dict | None:
        if not cookie:
            return None
        try:
            data = self.signer.loads(cookie, max_age=CODE_SECONDS)
        except BadSignature:
            return None
        return data if isinstance(data, dict) and data.get("2fa") is True and {"u", "s"} <= set(data) else None

    def set_code(self, response, value: str) -> None:
        response.set_cookie(CODE_COOKIE, value, **self.cookie_args(CODE_SECONDS))

    def clear_code(self, response) -> None:
        response.delete_cookie(CODE_COOKIE, path=COOKIE_PATH, httponly=True, samesite="lax", secure=self.https)

    # ---- the login form's own token, before there is a session
    def login_nonce(self, request: Request) -> tuple[str, bool]:
        """(nonce, is_new): the login cookie's nonce, or a fresh one to set."""
        found = request.cookies.get(LOGIN_COOKIE, "")
        if 16 <= len(found) <= 64 and found.replace("-", "").replace("_", "").isalnum():
            return found, False
        return secrets.token_urlsafe(16), True

    def set_login_nonce(self, response, nonce: str) -> None:
        response.set_cookie(LOGIN_COOKIE, nonce, **self.cookie_args(LOGIN_COOKIE_SECONDS))


def check_same_site(request: Request, base_url: str) -> None:
    """Refuse a state-changing request that a browser says came from another site.

    Sec-Fetch-Site is the browser's own word and wins when present. Our pages send
    `Referrer-Policy: no-referrer`, under which Chromium sends `Origin: null` even for our own
    forms, so Origin decides only for browsers without Sec-Fetch-Site: it must then be ours."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:
        if fetch_site not in ("same-origin", "none"):
            raise Forbidden("cross-site request refused")
        return
    origin = request.headers.get("origin")
    if origin is None:
        return
    own = {_origin(base_url), f"{request.url.scheme}://{request.headers.get('host', '')}"}
    if origin.rstrip("/") not in own:
        raise Forbidden("cross-site request refused")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def check_token(sent: str | None, expected: str) -> None:
    # (as bytes: compare_digest refuses str with non-ASCII characters, which anyone can post)
    if not sent or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise Forbidden("the form's security token is missing or out of date; reload the page and try again")


def is_page_request(request: Request) -> bool:
    return request.method in ("GET", "HEAD") and "text/html" in request.headers.get("accept", "")


def login_redirect_target(request: Request) -> str:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return f"/admin/login?next={quote(target, safe='')}"


def safe_next(value: str | None) -> str:
    """Only our own /admin paths: never an open redirect to another site."""
    if value and value.startswith("/admin") and not value.startswith("//") and "\\" not in value:
        return value
    return "/admin"


async def current_admin(request: Request) -> Admin:
    """The dependency of every /admin route except login: the session, and for a POST its CSRF."""
    ctx = request.app.state.admin
    data = ctx.sessions.read(request.cookies.get(SESSION_COOKIE))
    role = await ctx.session_role(data["u"], data["s"]) if data is not None else None
    if data is None or role is None:
        raise NotLoggedIn()
    admin = Admin(data["u"], ctx.sessions.token("csrf", data["n"]), role,
                  request.client.host if request.client else None)
    request.state.admin = admin
    if request.method not in SAFE_METHODS:
        check_same_site(request, ctx.base_url)
        sent = (await request.form(max_fields=MAX_FIELDS)).get("csrf")
        check_token(sent if isinstance(sent, str) else None, admin.csrf)   # (a file is no token)
        if request.url.path != "/admin/logout":
            needs(admin, Role.EDITOR)             # a viewer changes nothing
        ctx.counts.clear()                       # the action may change them: recount next time
    return admin


def needs(admin: Admin, role: Role) -> None:
    """Forbidden unless the user's role allows what `role` may do."""
    if not admin.role.allows(role):
        what = {Role.EDITOR: "change anything", Role.OWNER: "manage lists and users"}[role]
        raise Forbidden(f"{admin.name} is {'an' if admin.role is Role.EDITOR else 'a'} {admin.role}: "
                        f"only {'owners' if role is Role.OWNER else 'editors and owners'} may {what}.")


async def owner(request: Request) -> None:
    """The dependency of the routes that manage lists and users (after current_admin)."""
    needs(request.state.admin, Role.OWNER)


MAX_ID = 2**31 - 1                    # ids are INTEGER (PostgreSQL: 4 bytes); nothing is numbered past it
ID_PARAMS = frozenset({"subscriber_id", "after", "before", "subscriber"})


async def plain_request(request: Request) -> None:
    """The dependency after current_admin: a NUL anywhere in the path or the query (no database
    stores one), or an id past any id there is, answers 400 before any query sees it, not 500."""
    for key, value in (*request.query_params.multi_items(), *request.path_params.items()):
        if not isinstance(value, str):
            continue
        if "\x00" in value:
            raise HTTPException(400, "A NUL character is not allowed in the address.")
        number = value.strip()
        if key in ID_PARAMS and number.lstrip("-").isdigit() and abs(int(number[:20])) > MAX_ID:
            raise HTTPException(400 if key != "subscriber_id" else 404, f"No such {key.replace('_', ' ')}.")
