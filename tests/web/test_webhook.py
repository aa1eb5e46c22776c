"""POST /webhooks/sendgrid on the real server: signed by a key pair made here, then tampered with."""

from __future__ import annotations

import time

import pytest

from tests.events.signing import body

EVENTS = [
    {"email": "a@example.com", "event": "delivered", "timestamp": 1700000000, "sg_event_id": "ev-1"},
    {"email": "b@example.com", "event": "bounce", "type": "bounce", "status": "5.1.1",
     "timestamp": 1700000001, "sg_event_id": "ev-2"},
]


def post(live, raw: bytes, headers: dict[str, str]):
    return live.http.post("/webhooks/sendgrid", content=raw,
                          headers={"content-type": "application/json", **headers})


def test_signed_post_is_accepted(live, signer):
    raw = body(EVENTS)
    r = post(live, raw, signer.sign(raw))
    assert r.status_code == 200, r.text
    assert r.json()["received"] == 2


def _tampered_body(signer, raw):
    return raw.replace(b"delivered", b"processed"), signer.sign(raw)


def _stale(signer, raw):
    return raw, signer.sign(raw, str(int(time.time()) - 601))


def _future(signer, raw):
    return raw, signer.sign(raw, str(int(time.time()) + 3600))


def _other_key(signer, raw):
    from tests.events.signing import Signer

    return raw, Signer().sign(raw)


def _timestamp_swapped(signer, raw):
    headers = signer.sign(raw)
    headers["X-Twilio-Email-Event-Webhook-Timestamp"] = str(int(time.time()) - 1)
    return raw, headers


def _no_headers(signer, raw):
    return raw, {}


def _garbage_signature(signer, raw):
    headers = signer.sign(raw)
    headers["X-Twilio-Email-Event-Webhook-Signature"] = "%%%not-base64%%%"
    return raw, headers


def _reserialized(signer, raw):
    # Verification is over the raw bytes: the same JSON without the trailing CRLF is another body.
    return raw.rstrip(b"\r\n"), signer.sign(raw)


REFUSED = [_tampered_body, _stale, _future, _other_key, _timestamp_swapped, _no_headers,
           _garbage_signature, _reserialized]


@pytest.mark.parametrize("forge", REFUSED, ids=lambda f: f.__name__.strip("_"))
def test_refused_with_403(live, signer, forge):
    raw, headers = forge(signer, body(EVENTS))
    r = post(live, raw, headers)
    assert r.status_code == 403, r.text
    assert r.json()["detail"].startswith("refused")


MALFORMED = [
    b'{"email": "a@example.com", "event": "delivered"}',      # an object, not an array
    b'[{"email": "a@example.com", "event": "deliv',            # cut off
    b"\xff\xfe not utf-8",
    b"",
]


@pytest.mark.parametrize("raw", MALFORMED)
def test_malformed_but_signed_is_400(live, signer, raw):
    r = post(live, raw, signer.sign(raw))
    assert r.status_code in (400, 403), r.text   # bytes that are not UTF-8 cannot be verified: 403
    if raw and not raw.startswith(b"\xff"):
        assert r.status_code == 400


def test_unknown_types_and_junk_entries_still_2xx(live, signer):
    raw = body([{"email": "c@example.com", "event": "account_status_change", "timestamp": 1},
                {"event": "delivered"}, 42, "text", None])
    r = post(live, raw, signer.sign(raw))
    assert r.status_code == 200
    assert r.json()["received"] == 1    # the entry without an address is skipped, unknown kept


def test_oversized_body_is_413(live, signer):
    raw = b"[" + b" " * (9 * 1024 * 1024) + b"]"
    r = post(live, raw, signer.sign(raw))
    assert r.status_code == 413

