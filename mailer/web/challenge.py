"""Web service: the signup forms' defences against robots -> a verdict on each post, before it
touches the store (docs/signup.md).

    GET /altcha/challenge      a fresh proof-of-work challenge (ALTCHA PoW v2, JSON)
    GET /static/altcha/...     the ALTCHA widget, vendored (mailer/web/vendor/altcha/, its licence beside it)
    GET /static/signup.js      ours: gives the widget its worker and the page's words

The reader's browser solves the challenge while they type (the widget starts when a field of the
form gets focus): it must find the counter whose PBKDF2 key the challenge names, `[web]
challenge_max_counter` tries at most of `challenge_cost` iterations each, a fraction of a second
(BENCHMARKS.md). The challenge is signed with a key derived from the secret key, with the derived
key's HMAC in it, so checking a solution costs the server two HMACs. A solution signs up one form:
its challenge's signature is written to `spent_challenges` until the challenge expires, and a
second post with it is refused. Besides, a hidden honeypot field and a minimum time between the
form being shown and being sent (`started`, signed, on our own pages; the challenge's own time on
the embedded form, which is static HTML). `[web] signup_challenge = false` keeps the honeypot and
the fill time only. No cookie, no third party, no data about the reader: the widget's "human
interaction signature" (pointer movements) is turned off.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import altcha
from fastapi import APIRouter, Request
from sqlalchemy import Column, String, Table, delete
from sqlalchemy.dialects import postgresql, sqlite
from starlette.responses import JSONResponse, Response

from mailer.send.ledger import metadata
from subscribers.models import UtcDateTime

router = APIRouter()
VENDOR = Path(__file__).resolve().parent / "vendor" / "altcha"
OURS = Path(__file__).resolve().parent / "static"
ALGORITHM = "PBKDF2/SHA-256"       # native in every browser (WebCrypto), fast to check here
FORM_MAX_AGE = 2 * 86_400          # a signed `started` older than this counts as absent
STATIC = {"altcha.js": "text/javascript", "altcha.css": "text/css", "pbkdf2.js": "text/javascript"}
# Another site's page (the embedded form) loads these and asks for challenges: let it.
SHARED = {"access-control-allow-origin": "*", "cross-origin-resource-policy": "cross-origin"}

spent_challenges = Table(
    "spent_challenges", metadata,
    Column("signature", String(128), primary_key=True),
    Column("expires_at", UtcDateTime, nullable=False, index=True),
)


class Verdict(enum.Enum):
    """What a signup post earned, before anything about its address is looked at."""

    PASS = "pass"
    HONEYPOT = "honeypot"          # the hidden field was filled: a robot; answered as if all went well
    TOO_FAST = "too fast"          # sent sooner than [web] min_fill_seconds after the form was shown
    NO_SOLUTION = "no solution"    # missing, forged, expired or already used: nothing stored, nothing mailed


@dataclass(frozen=True)
class Form:
    """The guard's fields of a posted form (signup_guard.html.j2)."""

    website: str = ""              # the honeypot
    started: str = ""              # signed time the form was shown
    altcha: str = ""               # the widget's payload: challenge + solution, base64 JSON


class Guard:
    """Makes challenges and `started` stamps, and judges posts. `spend(signature, expires_at)`
    records a solution as used and says whether it was new (the web context's database write);
    `clock` gives Unix seconds (a test's instant)."""

    def __init__(self, settings, secret: str, spend: Callable[[str, datetime], bool], *,
                 clock: Callable[[], float] = time.time) -> None:
        web = settings.web
        self.enabled, self.cost, self.most = web.signup_challenge, web.challenge_cost, web.challenge_max_counter
        self.ttl, self.min_fill = web.challenge_minutes * 60, web.min_fill_seconds
        self.spend, self.clock = spend, clock
        self._sign_key = _derived(secret, "altcha/challenge")
        self._key_key = _derived(secret, "altcha/key")
        self._stamp_key = _derived(secret, "form-started").encode()

    def challenge(self) -> dict:
        """A fresh challenge, as the widget takes it: the counter is drawn in [half, all] of
        challenge_max_counter, so the work is known within a factor of two (deterministic mode)."""
        now = int(self.clock())
        counter = self.most // 2 + secrets.randbelow(self.most - self.most // 2 + 1)
        made = altcha.create_challenge(ALGORITHM, self.cost, counter=counter, expires_at=now + self.ttl,
                                       data={"at": now}, hmac_secret=self._sign_key, hmac_key_secret=self._key_key)
        return made.to_dict()

    def started(self) -> str:
        """The stamp a form carries: the time it was shown, signed."""
        now = str(int(self.clock()))
        return f"{now}.{self._mac(now)}"

    def judge(self, form: Form) -> Verdict:
        """The verdict on a post's guard fields. The same work whoever the address is: nothing
        here reads the store except the spent solutions."""
        if form.website:
            return Verdict.HONEYPOT
        shown = self._shown(form.started)
        if self.enabled:
            solved = self._solved(form.altcha)
            if solved is None:
                return Verdict.NO_SOLUTION
            shown = shown if shown is not None else solved
        if shown is not None and self.clock() - shown < self.min_fill:
            return Verdict.TOO_FAST
        return Verdict.PASS

    def _solved(self, payload: str) -> float | None:
        """When the challenge of a valid, unexpired, unused solution was made; None otherwise.
        A valid one is spent here, whatever comes next."""
        if not payload or len(payload) > 4096:
            return None
        try:
            parsed = altcha.Payload.from_base64(payload)
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            return None
        params = parsed.challenge.parameters
        if params.algorithm != ALGORITHM or not isinstance(params.expires_at, int) \
                or params.expires_at < self.clock():
            return None
        result = altcha.verify_solution(parsed, self._sign_key, hmac_key_secret=self._key_key)
        if not result.verified or not isinstance(params.data, dict) or not isinstance(params.data.get("at"), int):
            return None
        signature = parsed.challenge.signature or ""
        if not self.spend(signature, datetime.fromtimestamp(params.expires_at, UTC)):
            return None
        return float(params.data["at"])

    def _shown(self, stamp: str) -> float | None:
        at, _, mac = stamp.partition(".")
        if not (at.isdigit() and len(at) <= 12 and hmac.compare_digest(mac, self._mac(at))):
            return None
        shown = float(at)
        return shown if 0 <= self.clock() - shown <= FORM_MAX_AGE else None

    def _mac(self, text: str) -> str:
        return hmac.new(self._stamp_key, text.encode(), hashlib.sha256).hexdigest()[:32]


def _derived(secret: str, purpose: str) -> str:
    """A key of its own for each use of the secret key."""
    return hmac.new(secret.encode(), f"crank-mailer/{purpose}/v1".encode(), hashlib.sha256).hexdigest()


def spend(conn, signature: str, expires_at: datetime, now: datetime | None = None) -> bool:
    """Record a solution as used (in the caller's transaction); False if it was already.
    Expired rows go first: a challenge past its expiry is refused before it gets here."""
    conn.execute(delete(spent_challenges).where(spent_challenges.c.expires_at < (now or datetime.now(UTC))))
    upsert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    new = upsert(spent_challenges).values(signature=signature[:128], expires_at=expires_at)
    return conn.execute(new.on_conflict_do_nothing(index_elements=["signature"])
                        .returning(spent_challenges.c.signature)).first() is not None


@router.get("/altcha/challenge", summary="A proof-of-work challenge for a signup form",
            responses={200: {"content": {"application/json": {}}}})
def new_challenge(request: Request) -> JSONResponse:
    web = request.app.state.web
    return JSONResponse(web.guard.challenge(), headers={"cache-control": "no-store", **SHARED})


@router.get("/static/altcha/{name}", include_in_schema=False)
def widget_file(name: str) -> Response:
    if name not in STATIC:
        return Response(status_code=404)
    return Response((VENDOR / name).read_bytes(), media_type=STATIC[name],
                    headers={"cache-control": "public, max-age=86400", **SHARED})


@router.get("/static/signup.js", include_in_schema=False)
def signup_script() -> Response:
    return Response((OURS / "signup.js").read_bytes(), media_type="text/javascript",
                    headers={"cache-control": "public, max-age=3600", **SHARED})
