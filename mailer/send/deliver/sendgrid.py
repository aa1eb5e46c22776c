"""Stage 6c: outgoing batch -> one SendGrid v3 `POST /v3/mail/send` per batch of up to 1,000.

The content goes once per request; each reader is one personalization with one `to` (readers
never see each other), their values as `substitutions` (the markers of mailer.model, HTML-escaped
for the HTML part), their own `List-Unsubscribe` and `X-Mailer-Ref` in `headers`, and
`mailer_ref` in `custom_args` so Event Webhook events map back (docs/mail-facts.md).

We build the JSON ourselves and post it through the `sendgrid` library's client
(`client.mail.send.post`): the `Mail` helper inserts personalizations at the front and its `p=`
helpers attached one reader's headers to another (docs/mail-facts.md). The part shared by every batch
(from, subject, both bodies: tens of KB) is serialized once per edition and spliced into each
request body, so a million readers cost a thousand small `json.dumps` of personalizations.

Answers (docs/mail-facts.md): 202 accepted; 429 wait until X-RateLimit-Reset, then retry;
5xx, and a request that never fully left (connection refused, reset while sending): bounded
exponential backoff with jitter. A request that left and got no answer (a timeout or a dropped
connection while waiting for the answer) may have been accepted: it is never retried, but raises
AmbiguousDelivery, which leaves the batch in flight for [delivery] on_interrupted (dispatch.py,
docs/exactly-once.md). urllib tells the two apart for us: it wraps errors while sending the
request in URLError and lets errors while reading the answer through as they are. 400 naming
`personalizations.N...`: reject those readers, send the rest; any other 400, 401, 403, 413:
PermanentDelivery with SendGrid's own words. `sleep`, `clock` and `rng` are injectable for tests.
"""

from __future__ import annotations

import enum
import html
import http.client
import json
import logging
import random
import re
import time
import urllib.error
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from python_http_client import exceptions as sg
from sendgrid import SendGridAPIClient

from mailer.compose.personalize import ISSUE_HEADER, ONE_CLICK, REF_HEADER
from mailer.config import SendGridSettings, secret
from mailer.errors import AmbiguousDelivery, DeliveryError, PermanentDelivery, TemporaryDelivery
from mailer.model import FIELDS, ISSUE_ARG, REF_ARG, marker
from mailer.send.deliver.base import Backend, Result, ResultStatus

if TYPE_CHECKING:
    from mailer.config import Settings

# A non-default JSON content type makes python-http-client send our string as it is, instead of
# json.dumps-ing it a second time (python_http_client/client.py, http_request): it calls
# `request_body.encode("utf-8")` and formats the result into a debug line. Both are internals of
# python-http-client 3.3.x, pinned in pyproject.toml and held to by tests/test_library_contracts.py;
# the public path (a dict) costs about 20% more CPU per send (docs/decisions.md, "The SendGrid
# body is handed over as text").
_CONTENT_TYPE = "application/json; charset=utf-8"
_INDEXED = re.compile(r"personalizations(?:\.|\[)(\d+)")
_NOT_IN_NAME = str.maketrans({",": " ", ";": " "})  # SendGrid drops mail whose to.name has , or ;
_BACKOFF_BASE, _BACKOFF_CAP = 0.5, 30.0
_MAX_RATE_WAIT = 120.0


class Retry(enum.StrEnum):
    """How a failed request is retried."""

    RATE = "rate"                  # 429: wait until SendGrid's X-RateLimit-Reset
    BACKOFF = "backoff"            # 5xx or a request that never fully left: exponential backoff


class SendGridBackend(Backend[list]):
    name = "sendgrid"

    @classmethod
    def from_settings(cls, settings: Settings, **options) -> Backend:
        return cls(settings.delivery.sendgrid, **options)

    def __init__(self, settings: SendGridSettings, *, api_key: str | None = None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.time,
                 rng: Callable[[], float] = random.random, budget=None):
        self.settings = settings
        self.budget = budget   # ratelimit.SharedBudget: the rate limit shared by all workers (mailer/send/workers.py)
        self.max_batch = settings.batch_size   # personalizations per request, at most SendGrid's 1,000
        self._api_key = api_key or secret(settings.api_key_env, key="[delivery.sendgrid] api_key_env")
        self._sleep, self._clock, self._rng = sleep, clock, rng
        self._send_client: Any = None   # the library's client for /v3/mail/send, while open
        self._shared: dict[int, tuple[object, str]] = {}   # id(edition) -> (edition, its JSON fragment)
        self.calls = 0                                     # HTTP requests made, retries included

    def open(self) -> None:
        _withhold_bodies()
        client = SendGridAPIClient(api_key=self._api_key, host=self.settings.host.rstrip("/"))
        client.client.timeout = self.settings.timeout  # the library has none by default
        self._send_client = client.client.mail.send

    def close(self) -> None:
        self._send_client = None  # urllib opens a connection per call: nothing to release

    # --- request body -------------------------------------------------------------------------

    def request_body(self, batch: Sequence) -> str:
        """The JSON body for one batch: the personalizations, then the shared fragment."""
        personalizations = ",".join([personalization(out) for out in batch])
        return '{"personalizations":[' + personalizations + "]," + self._fragment(batch[0].edition)

    def _fragment(self, edition) -> str:
        kept = self._shared.get(id(edition))
        if kept is None or kept[0] is not edition:
            if len(self._shared) > 4:   # a send has one edition, or two with tracking
                self._shared.clear()
            shared = json.dumps(shared_fields(edition), separators=(",", ":"))
            kept = self._shared[id(edition)] = (edition, shared[1:])  # drop the "{": spliced after personalizations
        return kept[1]

    # --- sending ------------------------------------------------------------------------------

    def encode(self, batch: Sequence) -> list[tuple[list[int], str]]:
        """One request body per edition in the batch, with the positions of its readers: one, but
        two when readers who turned tracking off (the direct edition) share it with others."""
        return [(positions, self.request_body([batch[i] for i in positions])) for positions in _by_edition(batch)]

    def _send(self, batch: Sequence, encoded: list[tuple[list[int], str]]) -> list[Result]:
        if self._send_client is None:
            self.open()
        results: list[Result | None] = [None] * len(batch)
        for n, (positions, body) in enumerate(encoded):
            try:
                got = self._send_group([batch[i] for i in positions], body)
            except DeliveryError as exc:
                if n == 0:
                    raise          # nothing of the batch has gone: the batch's usual fate
                return self._after_taken(batch, results, encoded[n:], exc)
            for i, result in zip(positions, got, strict=True):
                results[i] = result
        return [r for r in results if r is not None]

    def _after_taken(self, batch: Sequence, results: list, rest: list, exc: DeliveryError) -> list[Result]:
        """A later request of a batch failed after an earlier one was taken: its readers are in
        doubt if it may have gone, else tried again later, like those of the requests not made."""
        failed = ResultStatus.IN_DOUBT if isinstance(exc, AmbiguousDelivery) else ResultStatus.RETRY_LATER
        for k, (positions, _body) in enumerate(rest):
            for i in positions:
                results[i] = Result(batch[i].ref, failed if k == 0 else ResultStatus.RETRY_LATER,
                                    detail=f"not sent with the rest of its batch: {exc}")
        return results

    def _send_group(self, batch: Sequence, encoded: str) -> list[Result]:
        results: dict[int, Result] = {}
        todo = list(range(len(batch)))
        body = encoded
        while todo:  # each round either succeeds or removes the readers SendGrid named
            status, answer = self._post(body)
            if 200 <= status < 300:  # 202 queued; 200 only in sandbox mode (docs/mail-facts.md)
                message_id = answer.headers.get("X-Message-Id")
                raw = {"status": status, "x_message_id": message_id, "personalizations": len(todo)}
                for i in todo:
                    results[i] = Result(batch[i].ref, ResultStatus.ACCEPTED, provider_id=message_id, raw=raw)
                break
            for pos, error in answer.items():
                i = todo[pos]
                results[i] = Result(batch[i].ref, ResultStatus.REJECTED, detail=error.get("message"), raw=error)
            todo = [i for pos, i in enumerate(todo) if pos not in answer]
            body = self.request_body([batch[i] for i in todo]) if todo else ""
        return [results[i] for i in range(len(batch))]

    def _post(self, body: str):
        """(202, response) or (400, {position: error}); raises for everything else."""
        attempt = 0
        while True:
            status, answer, retry = self._attempt(body)
            if retry is None:
                return status, answer
            attempt += 1
            if attempt > self.settings.max_retries:
                raise TemporaryDelivery(f"giving up after {attempt} attempts", backend=self.name,
                                        status=status, detail=_detail(answer)) from answer
            if retry is Retry.RATE and self.budget is not None:  # every worker waits, not just this one
                self.budget.hold_until(self._clock() + self._rate_limit_wait(answer.headers, attempt))
                continue                                      # the next take() waits it out
            self._sleep(self._rate_limit_wait(answer.headers, attempt) if retry is Retry.RATE
                        else self._backoff(attempt))

    def _attempt(self, body: str):
        """One request; the single place library errors are translated.

        Returns (status, answer, None) when done, or (status, error, Retry) to retry.
        """
        if self.budget is not None:
            self.budget.take()
        self.calls += 1
        try:
            response = self._send_client.post(request_body=_Json(body), request_headers={"Content-Type": _CONTENT_TYPE})
            return response.status_code, response, None
        except sg.TooManyRequestsError as exc:
            return 429, exc, Retry.RATE
        except sg.BadRequestsError as exc:
            return 400, self._named_readers(exc), None
        except (sg.UnauthorizedError, sg.ForbiddenError) as exc:
            raise PermanentDelivery(f"SendGrid refused the API key from ${self.settings.api_key_env} "
                                    "(check the key and its Mail Send permission); nothing was sent",
                                    backend=self.name, status=exc.status_code, detail=_detail(exc)) from exc
        except sg.HTTPError as exc:
            if exc.status_code >= 500:
                return exc.status_code, exc, Retry.BACKOFF
            raise PermanentDelivery("SendGrid refused the request", backend=self.name,
                                    status=exc.status_code, detail=_detail(exc)) from exc
        except urllib.error.URLError as exc:  # raised while connecting or sending: it never fully left
            return ("timeout" if _is_timeout(exc) else "network"), exc, Retry.BACKOFF
        except (TimeoutError, http.client.HTTPException, ConnectionError) as exc:  # it left; no answer
            raise AmbiguousDelivery(f"no answer to a request that was sent ({type(exc).__name__}: {exc}); "
                                    "SendGrid may have accepted it", backend=self.name) from exc

    def _named_readers(self, exc) -> dict[int, dict]:
        """SendGrid's 400 errors by personalization index; if any error is not about one reader,
        the whole request is wrong and the send must stop with SendGrid's words."""
        errors = _errors(exc)
        named: dict[int, dict] = {}
        for error in errors:
            match = _INDEXED.match(str(error.get("field") or ""))
            if not match:
                raise PermanentDelivery("SendGrid rejected the request", backend=self.name, status=400,
                                        detail=_detail(exc)) from exc
            named.setdefault(int(match.group(1)), error)
        return named

    def _rate_limit_wait(self, headers, attempt: int) -> float:
        """Until X-RateLimit-Reset (epoch seconds), plus up to a second of jitter (docs/mail-facts.md)."""
        try:
            reset = float(headers.get("X-RateLimit-Reset"))
        except (TypeError, ValueError, AttributeError):
            return self._backoff(attempt)
        return min(_MAX_RATE_WAIT, max(0.0, reset - self._clock())) + self._rng()

    def _backoff(self, attempt: int) -> float:
        """Exponential, capped, with "equal jitter": half fixed, half random."""
        delay = min(_BACKOFF_CAP, _BACKOFF_BASE * 2 ** (attempt - 1))
        return delay / 2 + self._rng() * delay / 2


def personalization(out) -> str:
    """One reader as JSON: their own `to`, headers, custom_args and substitutions, nobody else's.

    Written with the C string encoder rather than json.dumps of a dict: a third of the cost,
    which matters a thousand times per request (tests parse it back with json.loads).
    """
    name = " ".join(out.name.translate(_NOT_IN_NAME).split())
    to = f'{{"email":{_str(out.email)},"name":{_str(name)}}}' if name else f'{{"email":{_str(out.email)}}}'
    ref = _str(out.ref)
    subs = ",".join(_substitution(out, field) for field in out.edition.fields)
    return (f'{{"to":[{to}],"headers":{{"List-Unsubscribe":{_str("<" + out.unsubscribe_url + ">")},'
            f'"{REF_HEADER}":{ref}}},"custom_args":{{"{REF_ARG}":{ref}}},"substitutions":{{{subs}}}}}')


def _substitution(out, field: str) -> str:
    """`"%%field%%":"value","%%field:html%%":"value, HTML-escaped"` for one reader."""
    raw = out.value(field, "text")   # merge fields with a fallback resolve it here
    text = _str(raw)
    html_value = _str(html.escape(raw)) if _NEEDS_ESCAPE.search(raw) else text   # URLs: encoded once
    keys = _MARKERS.get(field) or (_str(marker(field, "text")), _str(marker(field, "html")))
    return f"{keys[0]}:{text},{keys[1]}:{html_value}"


_str = json.encoder.encode_basestring_ascii  # a JSON string literal, quotes included (C code)
_NEEDS_ESCAPE = re.compile("[&<>\"']")
_MARKERS = {f: (_str(marker(f, "text")), _str(marker(f, "html"))) for f in FIELDS}


def shared_fields(edition) -> dict:
    """Everything but the personalizations, the same for every batch of the edition."""
    sender = {"email": edition.from_email}
    if edition.from_name:
        sender["name"] = edition.from_name
    return {"from": sender, "reply_to": {"email": edition.reply_to}, "subject": edition.subject,
            "content": [{"type": "text/plain", "value": edition.text},      # plain before html
                        {"type": "text/html", "value": edition.html}],
            "headers": {"List-Unsubscribe-Post": ONE_CLICK, ISSUE_HEADER: edition.slug,
                        "Content-Language": edition.language, **edition.bulk_headers()},
            "custom_args": {ISSUE_ARG: edition.slug},
            "tracking_settings": _tracking_settings(edition)}


def _tracking_settings(edition) -> dict:
    """We own unsubscribes (RFC 8058 headers): SendGrid must not add its own (docs/mail-facts.md).
    With our [tracking] on, SendGrid's click and open tracking are off too, for every edition of
    the send: its links would hide ours, and a reader who turned tracking off gets direct links."""
    settings: dict = {"subscription_tracking": {"enable": False}}
    if edition.ours_only:
        settings.update(click_tracking={"enable": False, "enable_text": False}, open_tracking={"enable": False})
    return settings


def _by_edition(batch: Sequence) -> list[list[int]]:
    """The positions of the batch's readers, grouped by the edition their message is made from."""
    first = batch[0].edition
    if all(out.edition is first for out in batch):
        return [list(range(len(batch)))]
    groups: dict[int, list[int]] = {}
    for i, out in enumerate(batch):
        groups.setdefault(id(out.edition), []).append(i)
    return list(groups.values())


class _NoBodies(logging.Filter):
    """python-http-client debug-logs every request payload and every error response body, both of
    which hold readers' addresses, and every request's headers, which hold the API key
    (`Authorization: Bearer SG...`); its records keep their first words only."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if message.startswith("HEADERS"):
            record.msg, record.args = "HEADERS: (withheld: they hold the API key)", ()
        elif message.startswith("PAYLOAD") or "Response:" in message:
            record.msg, record.args = message.split(":", 1)[0] + ": (body withheld)", ()
        return True


def _withhold_bodies() -> None:
    lib = logging.getLogger("python_http_client.client")
    if not any(isinstance(f, _NoBodies) for f in lib.filters):
        lib.addFilter(_NoBodies())


class _Bytes(bytes):
    """The request body as sent. python-http-client formats the whole payload into a debug log
    line on every call, whatever the log level (client.py, http_request): 600 KB of repr per
    request, and readers' addresses in any debug log. This keeps that line to its size."""

    def __format__(self, spec: str) -> str:
        return f"<{len(self):,} bytes of JSON>"

    __str__ = __repr__ = lambda self: self.__format__("")


class _Json(str):
    """Our JSON text; the library calls .encode("utf-8") on it when the content type is ours."""

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return _Bytes(str.encode(self, encoding, errors))


def _errors(exc) -> list[dict]:
    try:
        errors = json.loads(exc.body or b"{}").get("errors") or []
    except (ValueError, AttributeError):
        return [{"message": _detail(exc), "field": None}]
    return [e for e in errors if isinstance(e, dict)] or [{"message": _detail(exc), "field": None}]


def _detail(exc) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    return (body or str(exc) or type(exc).__name__)[:2000]


def _is_timeout(exc) -> bool:
    return isinstance(exc, TimeoutError) or isinstance(getattr(exc, "reason", None), TimeoutError)
