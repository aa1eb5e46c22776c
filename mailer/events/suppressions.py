"""SendGrid's suppression lists -> DeliveryEvents -> the one policy (subscribers/policy.py), for
senders who do not run the Event Webhook (`mailer bounces sync-sendgrid`).

Five lists, read a page at a time (`limit`/`offset`, PAGE entries) with the API key:

    /v3/suppression/bounces         bounced   hard, or soft when its status is 4.x.x / x.2.2
    /v3/suppression/blocks          blocked   recorded, the address left alone
    /v3/suppression/spam_reports    complained
    /v3/suppression/invalid_emails  bounced   hard (SendGrid found the address unusable)
    /v3/suppression/unsubscribes    unsubscribed (SendGrid's global unsubscribes: every list)

Each entry's event id is (list, address, created), so a second sync stores nothing twice; an
entry older than the reader's latest consent changes nothing (the policy's rule), so a reader who
subscribed again after an old bounce stays subscribed.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime

from mailer.errors import PermanentDelivery, TemporaryDelivery
from mailer.events.bounce_mail import BounceKind, classify
from subscribers.events import DeliveryEvent, EventType, Severity
from subscribers.policy import ingest, subscriber_ids

SOURCE = "sendgrid-suppressions"
PAGE = 500
LISTS = ("bounces", "blocks", "spam_reports", "invalid_emails", "unsubscribes")


def sync(engine, settings, api_key: str, limits, *, dry_run: bool = False, opener=urllib.request.urlopen) -> dict:
    """Read every list and ingest its entries; returns counts per list and what the policy did."""
    counts, events = {}, []
    for name in LISTS:
        entries = list(_entries(settings, api_key, name, opener))
        counts[name] = len(entries)
        events += [e for e in (to_event(name, item) for item in entries) if e is not None]
    out = {"lists": counts, "events": len(events), "stored": 0, "duplicates": 0, "unknown": 0, "changed": 0,
           "dry_run": dry_run}
    if dry_run:
        with engine.connect() as conn:
            known = subscriber_ids(conn, {e.recipient for e in events})
        out["unknown"] = sum(e.recipient not in known for e in events)
        return out
    with engine.begin() as conn:
        out.update(ingest(conn, events, limits).as_dict())
    return out


def to_event(name: str, item: dict) -> DeliveryEvent | None:
    address = str(item.get("email") or "").strip().lower()
    if "@" not in address:
        return None
    created = _created(item.get("created"))
    reason = str(item.get("reason") or "")[:500] or None
    kind, severity = _KINDS[name](item)
    return DeliveryEvent(type=kind, recipient=address, at=created, source=SOURCE,
                         event_id=f"{name}:{address}:{int(created.timestamp())}", severity=severity,
                         detail=" ".join(x for x in (str(item.get("status") or ""), reason or "") if x) or None,
                         raw={"list": name, **item})


def _bounce(item: dict) -> tuple[EventType, Severity | None]:
    kind = classify(str(item.get("status") or ""), str(item.get("reason") or ""))
    if kind is BounceKind.BLOCKED:
        return EventType.BLOCKED, None
    return EventType.BOUNCED, Severity.SOFT if kind is BounceKind.SOFT else Severity.HARD


_KINDS = {
    "bounces": _bounce,
    "blocks": lambda item: (EventType.BLOCKED, None),
    "spam_reports": lambda item: (EventType.COMPLAINED, None),
    "invalid_emails": lambda item: (EventType.BOUNCED, Severity.HARD),
    "unsubscribes": lambda item: (EventType.UNSUBSCRIBED, None),
}


def _entries(settings, api_key: str, name: str, opener):
    offset = 0
    while True:
        page = _get(settings, api_key, f"/v3/suppression/{name}", {"limit": PAGE, "offset": offset}, opener)
        if not isinstance(page, list):
            raise PermanentDelivery(f"GET /v3/suppression/{name} did not answer a JSON list", backend="sendgrid")
        yield from (item for item in page if isinstance(item, dict))
        if len(page) < PAGE:
            return
        offset += PAGE


def _get(settings, api_key: str, path: str, query: dict, opener):
    url = f"{settings.host.rstrip('/')}{path}?{urllib.parse.urlencode(query)}"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {api_key}",
                                                   "Accept": "application/json"})
    try:
        with opener(request, timeout=settings.timeout) as response:
            return json.loads(response.read() or b"[]")
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:300].decode("utf-8", "replace")
        kind = TemporaryDelivery if exc.code == 429 or exc.code >= 500 else PermanentDelivery
        what = "refused the API key" if exc.code in (401, 403) else f"answered {exc.code} to GET {path}"
        raise kind(what, backend="sendgrid", status=exc.code, detail=detail) from exc
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TemporaryDelivery(f"cannot reach {settings.host}: {reason}", backend="sendgrid") from exc
    except ValueError as exc:
        raise PermanentDelivery(f"GET {path} did not answer JSON", backend="sendgrid") from exc


def _created(value) -> datetime:
    try:
        return datetime.fromtimestamp(int(value), tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return datetime.now(UTC)
