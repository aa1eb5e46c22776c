"""A local SendGrid-compatible HTTP server: `POST /v3/mail/send` on 127.0.0.1, for tests and bench.

It enforces SendGrid's documented limits (docs/mail-facts.md: twilio/sendgrid-oai
tsg_mail_v3.yaml and the mail-send errors page) and answers as SendGrid does: 202 with
`X-Message-Id`; 400 `{"errors": [{"message", "field", "help"}]}` with dotted fields such as
`personalizations.3.to.0.email`; 401/403; 413 over 30 MB; rate-limit headers on every answer.
One deliberate strictness: SendGrid accepts a `to.name` holding `,` or `;` and then silently drops
the mail (sendgrid/sendgrid-python#291); this server answers 400 so a test notices.

Faults are programmed per request: `server.fail(429, times=3)`, `server.fail(503)`,
`server.stall(seconds, accept=True)` (the client times out; the mail was nevertheless taken: the
ambiguous case in docs/exactly-once.md), `server.drop(accept=True)` (the body is read, maybe taken,
and the connection closed without an answer). `SendGridServer(down=True)` holds its port but
refuses connections until `server.up()`. Accepted bodies are kept in `server.accepted` (and the
raw request bytes in `server.raw_bodies`) unless `keep_bodies=False` (the bench), when only
counts and the set of `mailer_ref`s are kept.

Suppression lists (`GET /v3/suppression/{bounces,blocks,spam_reports,invalid_emails,unsubscribes}`
with `limit` (at most 500) and `offset`) serve what a test puts in `server.suppressions[name]`.

`GET /v3/scopes` lists `server.scopes` for the key (`mailer doctor`); the forbidden key gets a list
without `mail.send`.

Run alone: `python -m tests.servers.sendgrid_server --port 8025` (GET /_stats gives the counts).
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_PERSONALIZATIONS = 1000
MAX_RECIPIENTS = 1000
MAX_BYTES = 30 * 1024 * 1024
MAX_CUSTOM_ARGS = 10_000
MAX_SUBSTITUTIONS = 10_000
RESERVED_HEADERS = {"x-sg-id", "x-sg-eid", "received", "dkim-signature", "content-type",
                    "content-transfer-encoding", "to", "from", "subject", "reply-to", "cc", "bcc"}
_EMAIL = re.compile(r"[^@\s,;<>]+@[^@\s,;<>]+\.[A-Za-z0-9-]{2,}")
_UNAUTHORIZED = "The provided authorization grant is invalid, expired, or revoked"
SUPPRESSION_LISTS = ("bounces", "blocks", "spam_reports", "invalid_emails", "unsubscribes")
MAX_SUPPRESSION_PAGE = 500


@dataclass
class Fault:
    status: int = 0                # answer this status instead of processing (0: process)
    delay: float = 0.0             # wait this long first (longer than the client's timeout)
    accept: bool = False           # after a delay or a drop, still take the mail (the ambiguous case)
    drop: bool = False             # read the body, then close the connection without an answer
    reset_in: int = 1              # 429: X-RateLimit-Reset = now + reset_in


@dataclass
class Stats:
    requests: int = 0              # every POST /v3/mail/send, faults included
    accepted: int = 0              # 202 answers
    personalizations: int = 0      # in accepted requests
    max_body: int = 0
    refs: set = field(default_factory=set)
    duplicate_refs: int = 0
    copies: Counter = field(default_factory=Counter)   # mailer_ref -> copies accepted (keep_bodies=False)


def error(message: str, field_: str | None = None) -> dict:
    return {"message": message, "field": field_, "help": None}


def validate(body) -> list[dict]:
    """SendGrid's checks on a mail/send body; [] when it would be accepted."""
    if not isinstance(body, dict):
        return [error("Bad Request", None)]
    errors = _check_personalizations(body.get("personalizations"))
    errors += _check_from(body.get("from"))
    errors += _check_content(body)
    errors += _check_headers(body.get("headers"), "headers")
    errors += _check_custom_args(body.get("custom_args"), "custom_args")
    if not body.get("subject") and not body.get("template_id"):
        pers = body.get("personalizations") or []
        if not all(isinstance(p, dict) and p.get("subject") for p in pers):
            errors.append(error("The subject is required. You can get around this requirement if you use a "
                                "template with a subject defined or if every personalization has a subject "
                                "defined.", "subject"))
    categories = body.get("categories") or []
    if len(categories) > 10 or len(set(categories)) != len(categories) or any(len(c) > 255 for c in categories):
        errors.append(error("Categories: at most 10, unique, each at most 255 characters.", "categories"))
    return errors


def _check_personalizations(pers) -> list[dict]:
    if not isinstance(pers, list) or not pers:
        return [error("You must have at least one personalization.", "personalizations")]
    if len(pers) > MAX_PERSONALIZATIONS:
        return [error(f"The personalization block is limited to 1000 personalizations per API request. You "
                      f"have provided {len(pers)} personalizations. Please consider splitting this into "
                      "multiple requests and resending your request.", "personalizations")]
    errors, seen, total = [], set(), 0
    for i, p in enumerate(pers):
        where = f"personalizations.{i}"
        if not isinstance(p, dict) or not p.get("to"):
            errors.append(error("The to parameter is required for all personalization objects.", f"{where}.to"))
            continue
        for kind in ("to", "cc", "bcc"):
            for j, rcpt in enumerate(p.get(kind) or []):
                total += 1
                errors += _check_recipient(rcpt, f"{where}.{kind}.{j}", seen, where)
        errors += _check_headers(p.get("headers"), f"{where}.headers")
        errors += _check_custom_args(p.get("custom_args"), f"{where}.custom_args")
        subs = p.get("substitutions")
        if subs is not None and (not isinstance(subs, dict) or _size(subs) > MAX_SUBSTITUTIONS):
            errors.append(error("Substitutions must be an object of at most 10,000 bytes.", f"{where}.substitutions"))
    if total > MAX_RECIPIENTS:
        errors.append(error("There is a limit of 1000 total recipients (to + cc + bcc) per request.",
                            "personalizations"))
    return errors


def _check_recipient(rcpt, where: str, seen: set, personalization: str) -> list[dict]:
    address = rcpt.get("email") if isinstance(rcpt, dict) else None
    if not isinstance(address, str) or not _EMAIL.fullmatch(address):
        return [error("Does not contain a valid address.", f"{where}.email")]
    name = rcpt.get("name")
    if name is not None and (not isinstance(name, str) or "," in name or ";" in name):
        return [error("The to name may not include commas or semicolons.", f"{where}.name")]
    if address.lower() in seen:
        return [error(f"Each email address in the personalization block should be unique between to, cc, and "
                      f"bcc. We found the first duplicate instance of [{address}] in the {where} field.",
                      personalization)]
    seen.add(address.lower())
    return []


def _check_from(sender) -> list[dict]:
    if not isinstance(sender, dict) or not _EMAIL.fullmatch(str(sender.get("email", ""))):
        return [error("The from object must be provided for every email send. It is an object that requires "
                      "the email parameter, but may also contain a name parameter.", "from")]
    return []


def _check_content(body: dict) -> list[dict]:
    content = body.get("content")
    if content is None and body.get("template_id"):
        return []
    if not isinstance(content, list) or not content:
        return [error("Unless a valid template_id is provided, the content parameter is required.", "content")]
    types = [c.get("type") if isinstance(c, dict) else None for c in content]
    errors = [error("The content value must be a string at least one character in length.", f"content.{i}.value")
              for i, c in enumerate(content) if not isinstance(c, dict) or not isinstance(c.get("value"), str)
              or not c.get("value")]
    if "text/plain" in types and types[0] != "text/plain":
        errors.append(error("If present, text/plain must be first, followed by any other content.", "content"))
    if types.count("text/plain") > 1 or types.count("text/html") > 1:
        errors.append(error("If present, text/plain and text/html may only be provided once.", "content"))
    return errors


def _check_headers(headers, where: str) -> list[dict]:
    if headers is None:
        return []
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        return [error("Headers must be an object of string values.", where)]
    reserved = sorted(k for k in headers if k.lower() in RESERVED_HEADERS)
    if reserved:
        return [error(f"The header {reserved[0]} is reserved and may not be set.", where)]
    return []


def _check_custom_args(args, where: str) -> list[dict]:
    if args is None:
        return []
    if not isinstance(args, dict):
        return [error(f"Invalid type. Expected: object, given: {type(args).__name__}.", where)]
    if _size(args) > MAX_CUSTOM_ARGS:
        return [error("custom_args may not exceed 10,000 bytes.", where)]
    return []


def _size(value: dict) -> int:
    """The object's JSON size in bytes, counted the quick way for flat string maps (the bench
    sends a million of them); anything else is serialized and measured."""
    try:
        return 2 + sum(len(k.encode()) + len(v.encode()) + 6 for k, v in value.items())
    except AttributeError:
        return len(json.dumps(value, separators=(",", ":")).encode("utf-8"))


class SendGridServer:
    """The server and what it saw. Use as a context manager, or start()/stop()."""

    def __init__(self, *, api_key: str = "SG.test", forbidden_key: str = "SG.forbidden",
                 keep_bodies: bool = True, port: int = 0, down: bool = False):
        self.api_key, self.forbidden_key, self.keep_bodies = api_key, forbidden_key, keep_bodies
        self.faults: deque[Fault] = deque()
        self.accepted: list[dict] = []
        self.raw_bodies: list[bytes] = []
        self.stats = Stats()
        self.lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), _handler(self), bind_and_activate=False)
        self._httpd.server_bind()   # the port is ours from now on; refused until it listens
        if not down:
            self._httpd.server_activate()
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread: threading.Thread | None = None
        self.in_flight = 0
        self.suppressions: dict[str, list[dict]] = {name: [] for name in SUPPRESSION_LISTS}
        self.suppression_requests: list[str] = []
        self.scopes: tuple[str, ...] = ("mail.send", "suppression.read")   # what GET /v3/scopes lists for api_key

    def settle(self, timeout: float = 5.0) -> None:
        """Wait until no request is being handled (a stalled one may still be sleeping)."""
        deadline = time.monotonic() + timeout
        while self.in_flight and time.monotonic() < deadline:
            time.sleep(0.01)

    def fail(self, status: int, *, times: int = 1, reset_in: int = 1) -> None:
        self.faults.extend(Fault(status=status, reset_in=reset_in) for _ in range(times))

    def ok(self, times: int = 1) -> None:
        """Let the next `times` requests through untouched (so a later fault hits a chosen request)."""
        self.faults.extend(Fault() for _ in range(times))

    def up(self) -> None:
        """Start listening (a server made with down=True refused connections until now)."""
        self._httpd.server_activate()

    def drop(self, *, accept: bool = False, times: int = 1) -> None:
        self.faults.extend(Fault(drop=True, accept=accept) for _ in range(times))

    def stall(self, seconds: float, *, accept: bool = False, times: int = 1) -> None:
        self.faults.extend(Fault(delay=seconds, accept=accept) for _ in range(times))

    def recipients(self) -> list[str]:
        """Every `to` address of every accepted request, in order (duplicates kept)."""
        return [t["email"] for body in self.accepted for p in body["personalizations"] for t in p["to"]]

    def personalizations(self) -> list[dict]:
        return [p for body in self.accepted for p in body["personalizations"]]

    def start(self) -> SendGridServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="sendgrid-server",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def record(self, body: dict, size: int, raw: bytes = b"") -> None:
        with self.lock:
            st = self.stats
            st.accepted += 1
            st.personalizations += len(body["personalizations"])
            st.max_body = max(st.max_body, size)
            if self.keep_bodies:
                self.accepted.append(body)
                self.raw_bodies.append(raw)
            else:
                for p in body["personalizations"]:
                    ref = (p.get("custom_args") or {}).get("mailer_ref") or p["to"][0]["email"]
                    st.duplicate_refs += ref in st.refs
                    st.refs.add(ref)
                    st.copies[ref] += 1


def _handler(server: SendGridServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def do_GET(self):
            if self.path == "/_stats":
                st = server.stats
                self._answer(200, {"requests": st.requests, "accepted": st.accepted, "max_body": st.max_body,
                                   "personalizations": st.personalizations, "unique_refs": len(st.refs),
                                   "duplicate_refs": st.duplicate_refs})
            elif self.path.startswith("/v3/suppression/"):
                self._suppressions()
            elif self.path.rstrip("/") == "/v3/scopes":
                self._scopes()
            else:
                self._answer(404, {"errors": [error("not found")]})

        def _suppressions(self):
            from urllib.parse import parse_qs, urlsplit

            parts = urlsplit(self.path)
            name = parts.path.rstrip("/").rsplit("/", 1)[-1]
            server.suppression_requests.append(self.path)
            auth = self.headers.get("Authorization", "")
            if auth != f"Bearer {server.api_key}":
                return self._answer(401, {"errors": [error(_UNAUTHORIZED)]})
            if name not in server.suppressions:
                return self._answer(404, {"errors": [error("not found")]})
            query = parse_qs(parts.query)
            try:
                limit = int(query.get("limit", ["500"])[0])
                offset = int(query.get("offset", ["0"])[0])
            except ValueError:
                return self._answer(400, {"errors": [error("limit and offset must be integers")]})
            if not 1 <= limit <= MAX_SUPPRESSION_PAGE or offset < 0:
                return self._answer(400, {"errors": [error(f"limit must be 1-{MAX_SUPPRESSION_PAGE}", "limit")]})
            self._answer(200, server.suppressions[name][offset:offset + limit])

        def _scopes(self):
            """GET /v3/scopes: the key's permissions (`mailer doctor`); the forbidden key lacks mail.send."""
            auth = self.headers.get("Authorization", "")
            if auth == f"Bearer {server.api_key}":
                return self._answer(200, {"scopes": list(server.scopes)})
            if auth == f"Bearer {server.forbidden_key}":
                return self._answer(200, {"scopes": ["suppression.read"]})
            self._answer(401, {"errors": [error(_UNAUTHORIZED)]})

        def do_POST(self):
            with server.lock:
                server.in_flight += 1
            try:
                self._post()
            finally:
                with server.lock:
                    server.in_flight -= 1

        def _post(self):
            size = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(size) if size <= MAX_BYTES else self._discard(size)
            if self.path.rstrip("/") != "/v3/mail/send":
                return self._answer(404, {"errors": [error("not found")]})
            with server.lock:
                server.stats.requests += 1
                fault = server.faults.popleft() if server.faults else None
            if fault and fault.drop:
                if fault.accept:
                    server.record(json.loads(raw), size, raw)
                self.close_connection = True
                self.connection.shutdown(2)   # gone without a word, the body read
                return
            if fault and (fault.status or fault.delay) and not self._fault(fault):
                return
            auth = self.headers.get("Authorization", "")
            if auth == f"Bearer {server.forbidden_key}":
                return self._answer(403, {"errors": [error("access forbidden")]})
            if auth != f"Bearer {server.api_key}":
                return self._answer(401, {"errors": [error(_UNAUTHORIZED)]})
            if raw is None:
                self.close_connection = True
                return self._answer(413, {"errors": [error("Request entity too large")]})
            try:
                body = json.loads(raw)
            except ValueError:
                return self._answer(400, {"errors": [error("Bad Request")]})
            errors = validate(body)
            if errors:
                return self._answer(400, {"errors": errors})
            server.record(body, size, raw)
            self._answer(202, None, {"X-Message-Id": secrets.token_urlsafe(16)[:22]})

        def _discard(self, size: int) -> None:
            """Read and drop an oversized body, so the client sees the 413, not a broken pipe."""
            while size > 0:
                size -= len(self.rfile.read(min(size, 1 << 20)) or b"x" * size)

        def _fault(self, fault: Fault) -> bool:
            """Play a fault; True when the request should then be processed normally."""
            if fault.delay:
                time.sleep(fault.delay)
                if not fault.accept:
                    self.close_connection = True
                    return False
                return True
            extra = {"X-RateLimit-Reset": str(int(time.time()) + fault.reset_in)} if fault.status == 429 else {}
            message = "too many requests" if fault.status == 429 else "internal error"
            self._answer(fault.status, {"errors": [{"field": None, "message": message}]}, extra)
            return False

        def _answer(self, status: int, payload, extra: dict | None = None):
            data = b"" if payload is None else json.dumps(payload).encode()
            try:
                self.send_response(status)
                headers = {"Content-Type": "application/json", "Content-Length": str(len(data)),
                           "X-RateLimit-Limit": "600", "X-RateLimit-Remaining": "599",
                           "X-RateLimit-Reset": str(int(time.time()) + 1), **(extra or {})}
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                pass

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--keep-bodies", action="store_true")
    args = parser.parse_args()
    server = SendGridServer(port=args.port, keep_bodies=args.keep_bodies)
    print(f"listening on {server.url}", flush=True)
    try:
        server._httpd.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
