"""Hostile input at the web service's doors: every answer is a 4xx with one log line, never a 500,
and every response (a 500 too) carries the security headers."""

from __future__ import annotations

import logging
import time

import pytest

from tests.events.signing import body

TS = "X-Twilio-Email-Event-Webhook-Timestamp"
EVENTS = [{"email": "a@example.com", "event": "delivered", "timestamp": 1700000000, "sg_event_id": "e1"}]


def post(live, raw: bytes, headers: dict[str, str]):
    return live.http.post("/webhooks/sendgrid", content=raw,
                          headers={"content-type": "application/json", **headers})


def _huge(signer, raw):
    return raw, signer.sign(raw, "9" * 400)                    # a float overflows when the age is taken


def _underscored(signer, raw):
    return raw, signer.sign(raw, f"{int(time.time()):_}")      # int() would take it


def _negative(signer, raw):
    return raw, signer.sign(raw, "-1")


ODD_TIMESTAMPS = [_huge, _underscored, _negative]


def test_verify_takes_only_ascii_digits(signer):
    from mailer.errors import SignatureError
    from mailer.events.sendgrid_webhook import verify

    raw = body(EVENTS)
    now = str(int(time.time()))
    for ts in ("9" * 400, now.translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")), f"+{now}", ""):
        with pytest.raises(SignatureError):
            verify(raw, signer.sign(raw, ts or now)["X-Twilio-Email-Event-Webhook-Signature"], ts,
                   public_key=signer.public_key, max_age_seconds=600)


def one_line(caplog) -> list[logging.LogRecord]:
    records = [r for r in caplog.records if r.name.startswith(("mailer", "uvicorn"))]
    assert len(records) == 1, [r.getMessage() for r in records]
    assert records[0].exc_info is None and "\n" not in records[0].getMessage()
    return records


@pytest.mark.parametrize("forge", ODD_TIMESTAMPS, ids=lambda f: f.__name__.strip("_"))
def test_odd_timestamps_are_403_with_one_log_line(live, signer, forge, caplog):
    raw, headers = forge(signer, body(EVENTS))
    with caplog.at_level(logging.INFO):
        r = post(live, raw, headers)
    assert r.status_code == 403, r.text
    one_line(caplog)


@pytest.mark.parametrize("depth", [17, 5000, 200_000])
def test_deeply_nested_signed_body_is_400_with_one_log_line(live, signer, depth, caplog):
    event = {"email": "a@example.com", "event": "delivered", "timestamp": 1700000000, "sg_event_id": "n"}
    raw = ('[' + '{"email":"a@example.com","event":"delivered","x":' + "[" * depth + "]" * depth + "}]").encode()
    with caplog.at_level(logging.INFO):
        r = post(live, raw, signer.sign(raw))
    assert r.status_code == 400, r.text
    assert "nests deeper" in r.json()["detail"]
    one_line(caplog)
    shallow = body([{**event, "category": ["a", "b"], "unique_args": {"k": {"v": [1]}}}])
    assert post(live, shallow, signer.sign(shallow)).status_code == 200


SECURITY_HEADERS = ["x-content-type-options", "referrer-policy", "x-frame-options",
                    "content-security-policy", "cross-origin-opener-policy", "permissions-policy"]


def test_a_500_carries_the_security_headers(live):
    def boom():
        raise RuntimeError("a bug")

    live.app.add_api_route("/boom-for-test", boom)
    r = live.http.get("/boom-for-test")
    assert r.status_code == 500
    assert all(r.headers.get(h) for h in SECURITY_HEADERS), dict(r.headers)
    assert "a bug" not in r.text


def test_a_signed_soft_bounce_without_an_id_replayed_counts_once(live, signer):
    from subscribers import store
    from subscribers.models import Status
    from tests.web.conftest import LIST, SECRET

    with live.web.engine.begin() as conn:
        lid = store.get_list(conn, LIST).id
        sid = store.add_subscriber(conn, "soft@example.com", lid, secret=SECRET).subscriber_id
    soft = {"email": "soft@example.com", "event": "bounce", "type": "bounce", "status": "4.2.2",
            "reason": "mailbox full", "timestamp": int(time.time())}
    raw = body([soft])
    for _ in range(3):                                   # within max_age_seconds: all verify
        r = post(live, raw, signer.sign(raw))
        assert r.status_code == 200, r.text
    assert r.json()["duplicates"] == 1
    with live.web.engine.connect() as conn:
        assert store.membership_status(conn, sid, lid) is Status.ACTIVE
        assert conn.execute(store.recipients_select(lid)).first() is not None
