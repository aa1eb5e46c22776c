"""Web service: the REST API, JSON under /api/v1, for other systems (docs/api.md).

A request carries `Authorization: Bearer mk_...` (a token of `mailer admin token create`,
mailer/api_tokens.py). No token, or an unknown or revoked one: 401; a token without the route's
scope: 403; a token over its rate (`[api] rate_burst`, `rate_per_hour`, per token, in this
process): 429 with Retry-After. Every change writes the audit log (mailer/audit.py) with the
token's name, in the change's own transaction, and an `Idempotency-Key` header on a create or
update keeps its answer 24 hours in that same transaction: a retry is answered exactly as the
first time and changes nothing (a key reused for another request: 422).

Creates follow the web form's rules (docs/signup.md, mailer/web/addresses.py): the same address
checks, the same forgotten-address rule, and double opt-in (a confirmation mail) unless the token
has `subscribers:import` and the request says `"confirmed": true` with the consent it has.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, Header, HTTPException, Path, Query, Request
from fastapi.openapi.docs import get_swagger_ui_html
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from starlette.responses import HTMLResponse, JSONResponse

from mailer import api_tokens, audit
from mailer.api_tokens import Answer, Scope, Token
from mailer.errors import ReportError
from mailer.reports import report
from mailer.send import welcome
from mailer.send.ledger import sends
from mailer.web import readers
from mailer.web.language import mail_language
from mailer.web.ratelimit import Rate, RateLimiter
from subscribers import store, tags
from subscribers.errors import (
    InvalidAddress,
    InvalidTag,
    ListNotFound,
    SubscriberError,
    SubscriberNotFound,
    SuppressedAddress,
)
from subscribers.models import ConsentSource, Status, subscribers
from subscribers.normalize import normalize_email

log = logging.getLogger("mailer.web")
router = APIRouter(prefix="/api/v1", tags=["api"])
docs_router = APIRouter()

MAX_LISTS = 50
TOUCH_EVERY = timedelta(minutes=1)
TOKEN_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "no token, or an unknown or revoked one"},
    403: {"description": "the token lacks this route's scope"},
    429: {"description": "this token's rate is spent: wait Retry-After seconds"},
}
CHANGE_ERRORS: dict[int | str, dict[str, Any]] = {
    **TOKEN_ERRORS,
    404: {"description": "no such list or subscriber"},
    409: {"description": "the address is suppressed or forgotten: not added"},
    422: {"description": "invalid request, a refused address, or an Idempotency-Key reused for another request"},
}


class Problem(Exception):
    """An answer other than success, given inside a change (its writes are rolled back)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


# ---------------------------------------------------------------- request bodies

class Consent(BaseModel):
    """The consent a reader gave elsewhere (a paper form, another system's own double opt-in)."""

    model_config = ConfigDict(extra="forbid")
    at: datetime = Field(description="When they consented (ISO 8601 with a time zone).")
    how: str = Field(min_length=1, max_length=500, description="How, in words: kept in the history and audit log.")
    ip: str | None = Field(None, max_length=64, description="Their client address then, if known.")


class NewSubscriber(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str = Field(max_length=400)
    name: str = Field("", max_length=200)
    lists: list[Annotated[str, Field(max_length=100)]] = Field(min_length=1, max_length=MAX_LISTS)
    tags: list[Annotated[str, Field(max_length=200)]] = Field(default_factory=list, max_length=100)
    confirmed: bool = Field(False, description="Active at once, without a confirmation mail: needs the scope "
                                               "subscribers:import and `consent`.")
    consent: Consent | None = None


class SubscriberChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, max_length=200)
    tags: list[Annotated[str, Field(max_length=200)]] | None = Field(
        None, max_length=100, description="The reader's tags afterwards (a full set: missing ones are removed).")


class Unsubscribe(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lists: list[Annotated[str, Field(max_length=100)]] | None = Field(
        None, max_length=MAX_LISTS, description="The lists to leave; all of the reader's lists when absent.")


# ---------------------------------------------------------------- tokens, scopes, rate

class Caller:
    """The token a request carries, and the client it came from."""

    def __init__(self, token: Token, client: readers.Client) -> None:
        self.token, self.client = token, client

    @property
    def who(self) -> audit.Who:
        return audit.Who(self.token.name, audit.Via.API, self.client.ip)

    @property
    def source(self) -> str:
        """The store's history source for this token's changes."""
        return f"api:{self.token.name}"


def limiter(web) -> RateLimiter:
    found = web.api_limiter
    if found is None:
        api = web.settings.api
        found = web.api_limiter = RateLimiter({"api": Rate(burst=api.rate_burst, per_hour=api.rate_per_hour)})
    return found


def need(scope: Scope) -> Callable[..., Caller]:
    def check(request: Request, authorization: Annotated[str, Header(include_in_schema=False)] = "") -> Caller:
        web = request.app.state.web
        kind, _, presented = authorization.partition(" ")
        token = web.read(api_tokens.find, presented.strip()) if kind.lower() == "bearer" else None
        if token is None:
            raise HTTPException(401, "a valid API token is needed: Authorization: Bearer mk_...",
                                headers={"www-authenticate": "Bearer"})
        rate = limiter(web)
        if not rate.allow("api", token.name):
            raise HTTPException(429, "too many requests for this token",
                                headers={"retry-after": str(max(1, rate.wait("api", token.name)))})
        if scope not in token.scopes:
            raise HTTPException(403, f"this token lacks the scope {scope}")
        now = datetime.now(UTC)
        if token.last_used_at is None or now - token.last_used_at > TOUCH_EVERY:   # (one write a minute at most)
            web.write(api_tokens.touch, token.id, now)
        return Caller(token, readers.client(request))
    return check


def change(request: Request, caller: Caller, payload: str, do: Callable[[Any], tuple[int, Any]],
           idempotency_key: str | None) -> JSONResponse:
    """Run do(conn) -> (status, body) in one transaction with its audit entries; with an
    Idempotency-Key, the answer is kept in that transaction, and a retry gets it back unchanged."""
    web = request.app.state.web
    key = (idempotency_key or "").strip() or None
    if key is not None and len(key) > api_tokens.MAX_KEY:
        raise HTTPException(422, f"Idempotency-Key longer than {api_tokens.MAX_KEY} characters")
    asked = api_tokens.request_hash(request.method, request.url.path, payload.encode())

    def run(conn) -> tuple[Answer, bool]:
        if key is not None and (old := api_tokens.remembered(conn, caller.token.id, key)) is not None:
            return old, True
        nested = conn.begin_nested()
        try:
            status, body = do(conn)
            nested.commit()
        except Problem as problem:
            nested.rollback()
            status, body = problem.status, {"detail": problem.detail}
        answer = Answer(status, body, asked)
        if key is not None:
            api_tokens.remember(conn, caller.token.id, key, answer)
        return answer, False

    try:
        answer, replayed = web.write(run)
    except IntegrityError:   # the same key, at the same moment, from another request: its answer is ours
        answer, replayed = web.write(run)
    if replayed and answer.request_hash != asked:
        raise HTTPException(422, "this Idempotency-Key was used for another request")
    headers = {"idempotent-replayed": "true"} if replayed else {}
    return JSONResponse(answer.body, status_code=answer.status, headers=headers)


def _store_errors(fn: Callable[[Any], tuple[int, Any]]) -> Callable[[Any], tuple[int, Any]]:
    """The store's errors as answers (inside the change, so its writes roll back)."""
    def wrapped(conn) -> tuple[int, Any]:
        try:
            return fn(conn)
        except (ListNotFound, SubscriberNotFound) as exc:
            raise Problem(404, str(exc)) from None
        except SuppressedAddress as exc:
            raise Problem(409, str(exc)) from None
        except (InvalidAddress, InvalidTag) as exc:
            raise Problem(422, str(exc)) from None
        except SubscriberError as exc:
            raise Problem(422, str(exc)) from None
    return wrapped


IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=400,
                                              description="Retry safely: the same key gets the first answer.")]


# ---------------------------------------------------------------- lists

def _list_json(lst, counts: dict[str, dict[str, int]]) -> dict:
    return {"id": lst.id, "name": lst.name, "title": lst.title or lst.name, "description": lst.description or "",
            "language": lst.language, "private": bool(lst.private), "counts": counts.get(lst.name, {})}


def _counts(conn) -> dict[str, dict[str, int]]:
    return {row.name: {str(status): n for status, n in figures.items()} for row, figures in store.list_counts(conn)}


@router.get("/lists", summary="Every list, with its readers counted by status", responses=TOKEN_ERRORS)
def all_lists(request: Request, caller: Annotated[Caller, Depends(need(Scope.LISTS_READ))]) -> list[dict]:
    web = request.app.state.web
    return web.read(lambda conn: [_list_json(lst, _counts(conn)) for lst in store.all_lists(conn)])


@router.get("/lists/{name}", summary="One list", responses={**TOKEN_ERRORS, 404: {"description": "no such list"}})
def one_list(request: Request, name: Annotated[str, Path(max_length=100)],
             caller: Annotated[Caller, Depends(need(Scope.LISTS_READ))]) -> dict:
    def read(conn):
        try:
            return _list_json(store.get_list(conn, name), _counts(conn))
        except ListNotFound as exc:
            raise HTTPException(404, str(exc)) from None
    return request.app.state.web.read(read)


# ---------------------------------------------------------------- subscribers

def _find(conn, ref: str):
    """A subscriber by id (digits) or address; Problem 404 when there is none."""
    if ref.isdigit():
        row = conn.execute(select(subscribers).where(subscribers.c.id == int(ref))).first()
    else:
        try:
            row = store.find_subscriber(conn, ref)
        except InvalidAddress:
            row = None
    if row is None:
        raise Problem(404, f"no subscriber {ref!r}")
    return row


def _subscriber_json(conn, row) -> dict:
    return {"id": row.id, "email": row.email, "name": row.name or "", "global_status": row.global_status,
            "created_at": row.created_at.isoformat(), "tags": tags.tags_of(conn, row.id),
            "lists": [{"list": m.list, "status": m.effective, "consent_at": _iso(m.consent_at),
                       "consent_source": m.consent_source, "consent_ip": m.consent_ip}
                      for m in store.memberships_of(conn, row.id)]}


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at else None


@router.get("/subscribers/{ref}", summary="A subscriber, by id or address",
            responses={**TOKEN_ERRORS, 404: {"description": "no such subscriber"}})
def get_subscriber(request: Request, ref: Annotated[str, Path(max_length=400)],
                   caller: Annotated[Caller, Depends(need(Scope.SUBSCRIBERS_READ))]) -> dict:
    def read(conn):
        try:
            return _subscriber_json(conn, _find(conn, ref))
        except Problem as problem:
            raise HTTPException(problem.status, problem.detail) from None
    return request.app.state.web.read(read)


@router.post("/subscribers", status_code=202, responses=CHANGE_ERRORS,
             summary="Subscribe a reader: a confirmation mail (double opt-in), or confirmed with a consent record")
def create_subscriber(request: Request, body: NewSubscriber, background: BackgroundTasks,
                      caller: Annotated[Caller, Depends(need(Scope.SUBSCRIBERS_WRITE))],
                      idempotency_key: IdempotencyKey = None) -> JSONResponse:
    web = request.app.state.web
    if body.confirmed and Scope.SUBSCRIBERS_IMPORT not in caller.token.scopes:
        raise HTTPException(403, "\"confirmed\": true needs a token with the scope subscribers:import")
    if body.confirmed and body.consent is None:
        raise HTTPException(422, "\"confirmed\": true needs \"consent\": when and how the reader agreed")
    if body.consent and body.consent.at.tzinfo is None:
        raise HTTPException(422, "consent.at needs a time zone (e.g. 2026-12-01T10:00:00Z)")
    if body.consent and body.consent.at > datetime.now(UTC):
        raise HTTPException(422, "consent.at is in the future")
    problem = readers.address_problem(web, body.email)   # the web form's check: no bypass (docs/signup.md)
    if problem:
        raise HTTPException(422, problem)
    mails: list[readers.ConfirmationMail] = []

    def do(conn) -> tuple[int, Any]:
        chosen = [store.get_list(conn, name) for name in dict.fromkeys(body.lists)]
        if body.confirmed:
            return _create_confirmed(conn, caller, body, chosen, web.secret, web.settings)
        mail = readers.sign_up_in(conn, web, chosen, body.email, body.name, caller.client,
                                  mail_language(*(lst.language for lst in chosen)))
        sid = mail.subscriber_id if mail else _id_of(conn, body.email)
        if sid and body.tags:
            _tag(conn, caller, sid, set(tags.normalize_tags(body.tags)), replace=False)
        audit.record(conn, **caller.who._asdict(), action=audit.Action.SUBSCRIBER_ADD, subscriber_id=sid or None,
                     target=",".join(lst.name for lst in chosen)[:200], detail={"double opt-in": True})
        if mail is not None:
            mails.append(mail)
        return 202, {"email": normalize_email(body.email), "lists": [lst.name for lst in chosen],
                     "status": "confirmation requested"}

    answer = change(request, caller, body.model_dump_json(), _store_errors(do), idempotency_key)
    for mail in mails:    # only a first answer sends: a replay ran nothing
        background.add_task(readers.send_confirmation_mail, web, mail)
    if body.confirmed:
        background.add_task(readers.send_welcomes, web)
    return answer


def _id_of(conn, email: str) -> int | None:
    found = store.find_subscriber(conn, email)
    return found.id if found else None


def _create_confirmed(conn, caller: Caller, body: NewSubscriber, chosen: list, secret: str,
                      settings) -> tuple[int, Any]:
    consent = body.consent
    assert consent is not None   # (checked before)
    results = [store.add_subscriber(conn, body.email, lst.id, name=body.name or None, status=Status.ACTIVE,
                                    source=ConsentSource.IMPORT, secret=secret, actor=caller.source,
                                    consent_ip=consent.ip, consent_at=consent.at)
               for lst in chosen]
    sid = results[0].subscriber_id
    for lst in chosen:   # confirmed now: each list's welcome mail, once (sent after the commit)
        welcome.enqueue(conn, settings, sid, lst.id)
    if body.tags:
        _tag(conn, caller, sid, set(tags.normalize_tags(body.tags)), replace=False)
    # (the reader's address and IP stay out of the audit log: they are in the membership's consent record)
    detail = {"consent": {"at": consent.at.isoformat(), "how": consent.how},
              "added": [lst.name for lst, r in zip(chosen, results, strict=True)
                        if r.outcome is not store.Outcome.UNCHANGED]}
    audit.record(conn, **caller.who._asdict(), action=audit.Action.SUBSCRIBER_ADD, subscriber_id=sid,
                 target=",".join(lst.name for lst in chosen)[:200], detail=detail)
    row = conn.execute(select(subscribers).where(subscribers.c.id == sid)).one()
    return 201, _subscriber_json(conn, row)


def _tag(conn, caller: Caller, sid: int, wanted: set[str], *, replace: bool) -> None:
    have = set(tags.tags_of(conn, sid))
    added = tags.add_tags(conn, sid, wanted - have, source=caller.source)
    removed = tags.remove_tags(conn, sid, have - wanted, source=caller.source) if replace else []
    for action, changed in ((audit.Action.TAG, added), (audit.Action.UNTAG, removed)):
        if changed:
            audit.record(conn, **caller.who._asdict(), action=action, subscriber_id=sid,
                         detail={"added" if action is audit.Action.TAG else "removed": sorted(changed)})


@router.patch("/subscribers/{ref}", summary="Change a subscriber's name or tags", responses=CHANGE_ERRORS)
def update_subscriber(request: Request, ref: Annotated[str, Path(max_length=400)], body: SubscriberChange,
                      caller: Annotated[Caller, Depends(need(Scope.SUBSCRIBERS_WRITE))],
                      idempotency_key: IdempotencyKey = None) -> JSONResponse:
    def do(conn) -> tuple[int, Any]:
        row = _find(conn, ref)
        if body.name is not None and store.rename(conn, row.id, body.name, source=caller.source):
            audit.record(conn, **caller.who._asdict(), action=audit.Action.SUBSCRIBER_EDIT, subscriber_id=row.id,
                         detail={"fields": ["name"]})
        if body.tags is not None:
            _tag(conn, caller, row.id, set(tags.normalize_tags(body.tags)), replace=True)
        return 200, _subscriber_json(conn, conn.execute(select(subscribers).where(subscribers.c.id == row.id)).one())

    return change(request, caller, body.model_dump_json(), _store_errors(do), idempotency_key)


@router.post("/subscribers/{ref}/unsubscribe", summary="Unsubscribe a reader from some or all of their lists",
             responses=CHANGE_ERRORS)
def unsubscribe(request: Request, ref: Annotated[str, Path(max_length=400)], body: Unsubscribe,
                caller: Annotated[Caller, Depends(need(Scope.SUBSCRIBERS_WRITE))],
                idempotency_key: IdempotencyKey = None) -> JSONResponse:
    def do(conn) -> tuple[int, Any]:
        row = _find(conn, ref)
        mine = {m.list for m in store.memberships_of(conn, row.id)}
        names = list(dict.fromkeys(body.lists)) if body.lists is not None else sorted(mine)
        left = []
        for name in names:
            found = store.get_list(conn, name)
            if name not in mine:
                raise Problem(404, f"{row.email} is not on the list {name!r}")
            if store.unsubscribe(conn, row.id, found.id, source=caller.source,
                                 ip=caller.client.ip, user_agent=caller.client.user_agent):
                left.append(name)
                audit.record(conn, **caller.who._asdict(), action=audit.Action.UNSUBSCRIBE, subscriber_id=row.id,
                             target=name)
        return 200, {**_subscriber_json(conn, row), "unsubscribed": left}

    return change(request, caller, body.model_dump_json(), _store_errors(do), idempotency_key)


@router.post("/subscribers/{ref}/forget", summary="Forget a reader (erasure): only a keyed hash of the address stays",
             responses=CHANGE_ERRORS)
def forget(request: Request, ref: Annotated[str, Path(max_length=400)],
           caller: Annotated[Caller, Depends(need(Scope.SUBSCRIBERS_WRITE))],
           idempotency_key: IdempotencyKey = None) -> JSONResponse:
    web = request.app.state.web

    def do(conn) -> tuple[int, Any]:
        row = _find(conn, ref)
        store.forget(conn, row.email, web.secret, source=caller.source)
        audit.record(conn, **caller.who._asdict(), action=audit.Action.FORGET, subscriber_id=row.id)
        return 200, {"id": row.id, "forgotten": True}

    return change(request, caller, "", _store_errors(do), idempotency_key)


# ---------------------------------------------------------------- issues and sends

SEND_FIELDS = ("id", "issue", "list_name", "subject", "backend", "status", "total", "sent", "failed", "skipped",
               "segment", "started_at", "finished_at", "last_error")


def _send_json(row) -> dict:
    out = {name: getattr(row, name) for name in SEND_FIELDS}
    out["list"] = out.pop("list_name")
    for name in ("started_at", "finished_at"):
        out[name] = _iso(out[name])
    return out


@router.get("/sends", summary="Sends, newest first (one per issue and list)", responses=TOKEN_ERRORS)
def all_sends(request: Request, caller: Annotated[Caller, Depends(need(Scope.REPORTS_READ))],
              issue: Annotated[str | None, Query(max_length=64)] = None,
              limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[dict]:
    query = select(*(sends.c[name] for name in SEND_FIELDS)).order_by(sends.c.id.desc()).limit(limit)
    if issue:
        query = query.where(sends.c.issue == issue)
    return request.app.state.web.read(lambda conn: [_send_json(row) for row in conn.execute(query)])


@router.get("/sends/{send_id}", summary="One send's status",
            responses={**TOKEN_ERRORS, 404: {"description": "no such send"}})
def one_send(request: Request, send_id: int, caller: Annotated[Caller, Depends(need(Scope.REPORTS_READ))]) -> dict:
    query = select(*(sends.c[name] for name in SEND_FIELDS)).where(sends.c.id == send_id)
    row = request.app.state.web.read(lambda conn: conn.execute(query).first())
    if row is None:
        raise HTTPException(404, f"no send {send_id}")
    return _send_json(row)


@router.get("/issues", summary="Every issue sent, with its sends' status", responses=TOKEN_ERRORS)
def all_issues(request: Request, caller: Annotated[Caller, Depends(need(Scope.REPORTS_READ))]) -> list[dict]:
    query = (select(sends.c.issue, func.count().label("sends"), func.min(sends.c.started_at).label("started_at"),
                    func.sum(sends.c.total).label("readers"), func.sum(sends.c.sent).label("sent"))
             .group_by(sends.c.issue).order_by(sends.c.issue.desc()))
    rows = request.app.state.web.read(lambda conn: list(conn.execute(query)))
    return [{"issue": r.issue, "sends": r.sends, "started_at": _iso(r.started_at), "readers": int(r.readers or 0),
             "sent": int(r.sent or 0)} for r in rows]


@router.get("/issues/{issue}/report", summary="An issue's figures: the ledger's and the events'",
            responses={**TOKEN_ERRORS, 404: {"description": "the issue was never sent"}})
def issue_report(request: Request, issue: Annotated[str, Path(max_length=64)],
                 caller: Annotated[Caller, Depends(need(Scope.REPORTS_READ))],
                 list_name: Annotated[str | None, Query(alias="list", max_length=100)] = None) -> dict:
    try:
        return request.app.state.web.read(lambda conn: report.build(conn, issue, list_name).as_dict())
    except ReportError as exc:
        raise HTTPException(404, str(exc)) from None


# ---------------------------------------------------------------- the documentation

SWAGGER_CDN = "https://cdn.jsdelivr.net"


@docs_router.get("/api/openapi.json", include_in_schema=False)
def openapi(request: Request) -> JSONResponse:
    """The API's part of the app's OpenAPI description."""
    spec = request.app.openapi()
    paths = {path: item for path, item in spec["paths"].items() if path.startswith("/api/v1/")}
    return JSONResponse({**spec, "paths": paths, "components": {
        **spec.get("components", {}), "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}}},
        "security": [{"token": []}]})


@docs_router.get("/api/docs", include_in_schema=False)
def docs() -> HTMLResponse:
    """Swagger UI for /api/openapi.json. Its script and style come from its CDN and its one inline
    script is allowed by its hash: the page's own CSP, stricter than none."""
    page = get_swagger_ui_html(openapi_url="/api/openapi.json", title="API")
    body = bytes(page.body).decode()
    start = body.index("<script>") + len("<script>")
    inline = body[start:body.index("</script>", start)]
    digest = hashlib.sha256(inline.encode()).digest()
    csp = (f"default-src 'none'; script-src {SWAGGER_CDN} 'sha256-{base64.b64encode(digest).decode()}'; "
           f"style-src {SWAGGER_CDN}; img-src 'self' data: https:; connect-src 'self'; "
           "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
    return HTMLResponse(body, headers={"content-security-policy": csp})
