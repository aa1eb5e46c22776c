"""Stage 6c: SendGrid over real HTTP to the local SendGrid-compatible server."""

from __future__ import annotations

import dataclasses
import json

import pytest

from mailer.errors import AmbiguousDelivery, PermanentDelivery, TemporaryDelivery
from mailer.send.deliver.base import ResultStatus
from mailer.send.deliver.sendgrid import SendGridBackend
from tests.deliver.helpers import readers


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def make_backend(settings, sendgrid_server, sleeps):
    def make(api_key="SG.test", **overrides):
        fields = {"host": sendgrid_server.url, "timeout": 2.0, **overrides}
        sg = dataclasses.replace(settings.delivery.sendgrid, **fields)
        return SendGridBackend(sg, api_key=api_key, sleep=sleeps.append, rng=lambda: 0.5)

    return make


def test_mail_to_a_list_carries_list_id_and_precedence_bulk(make_backend, sendgrid_server, edition):
    to_a_list = dataclasses.replace(edition, list_id="CRANK Call <crank.example.org>")
    with make_backend() as backend:
        assert all(r.ok for r in backend.send_batch(readers(to_a_list, 2)))
    (body,) = sendgrid_server.accepted
    assert body["headers"]["List-Id"] == "CRANK Call <crank.example.org>"
    assert body["headers"]["Precedence"] == "bulk"


def test_a_thousand_readers_in_one_request_each_with_their_own_values(make_backend, sendgrid_server, edition):
    batch = readers(edition, 1000, names=lambda i: f"Reader, {i}; <b>")
    with make_backend() as backend:
        results = backend.send_batch(batch)
    assert sendgrid_server.stats.requests == 1 and backend.calls == 1
    assert all(r.ok for r in results)
    assert len({r.provider_id for r in results}) == 1  # one X-Message-Id per request (docs/mail-facts.md)
    (body,) = sendgrid_server.accepted
    assert [c["type"] for c in body["content"]] == ["text/plain", "text/html"]
    assert body["content"][1]["value"] == edition.html and body["custom_args"] == {"mailer_issue": "2024-11"}
    assert body["headers"] == {"List-Unsubscribe-Post": "List-Unsubscribe=One-Click", "X-Mailer-Issue": "2024-11",
                               "Content-Language": "en"}
    for i, p in enumerate(body["personalizations"]):
        out = batch[i]
        assert p["to"] == [{"email": f"r{i}@example.org", "name": f"Reader {i} <b>"}]
        assert p["headers"] == {"List-Unsubscribe": f"<{out.unsubscribe_url}>", "X-Mailer-Ref": f"1.{i}"}
        assert p["custom_args"] == {"mailer_ref": f"1.{i}"}
        assert p["substitutions"]["%%name%%"] == f"Reader, {i}; <b>"
        assert p["substitutions"]["%%name:html%%"] == f"Reader, {i}; &lt;b&gt;"
        assert p["substitutions"]["%%unsubscribe_url%%"] == out.unsubscribe_url
        assert p["substitutions"]["%%email:html%%"] == f"r{i}@example.org"


def test_readers_are_never_mixed_across_requests(make_backend, sendgrid_server, edition):
    batch = readers(edition, 2500)
    with make_backend() as backend:
        results = [r for k in range(0, 2500, 1000) for r in backend.send_batch(batch[k:k + 1000])]
    assert sendgrid_server.stats.requests == 3 and all(r.ok for r in results)
    assert sendgrid_server.recipients() == [f"r{i}@example.org" for i in range(2500)]
    assert len({r.provider_id for r in results}) == 3


@pytest.mark.parametrize("faults, calls, waits", [
    ([429] * 3, 4, [1.5, 1.5, 1.5]),          # reset in 1 s (+0.5 jitter) each time
    ([500], 2, [0.375]),                      # equal jitter: 0.25 + 0.5 * 0.25
    ([503, 502, 500], 4, [0.375, 0.75, 1.5]), # exponential
    ([429, 503], 3, [1.5, 0.75]),
])
def test_429_and_5xx_are_retried(make_backend, sendgrid_server, edition, sleeps, faults, calls, waits):
    for status in faults:
        sendgrid_server.fail(status)
    with make_backend() as backend:
        results = backend.send_batch(readers(edition, 10))
    assert all(r.ok for r in results)
    assert sendgrid_server.stats.requests == calls and sendgrid_server.stats.accepted == 1
    assert sleeps == pytest.approx(waits, abs=1.01)  # 429 waits depend on the clock's second
    assert all(0 <= s <= 2.6 for s in sleeps)


def test_retries_are_bounded(make_backend, sendgrid_server, edition, sleeps):
    sendgrid_server.fail(500, times=10)
    with make_backend(max_retries=3) as backend, pytest.raises(TemporaryDelivery, match="giving up after 4 attempts"):
        backend.send_batch(readers(edition, 5))
    assert sendgrid_server.stats.requests == 4 and sendgrid_server.accepted == []
    assert len(sleeps) == 3 and sleeps == sorted(sleeps)


@pytest.mark.parametrize("fault", ["stall", "drop"])
@pytest.mark.parametrize("accepted_anyway, copies", [(False, 0), (True, 1)])
def test_a_request_that_left_without_an_answer_is_never_retried(make_backend, sendgrid_server, edition, sleeps,
                                                                  fault, accepted_anyway, copies):
    if fault == "stall":
        sendgrid_server.stall(0.6, accept=accepted_anyway)   # answers after the client's timeout
    else:
        sendgrid_server.drop(accept=accepted_anyway)         # reads the body, hangs up
    with make_backend(timeout=0.2) as backend, pytest.raises(AmbiguousDelivery, match="may have accepted it"):
        backend.send_batch(readers(edition, 3))
    sendgrid_server.settle()
    assert sendgrid_server.stats.requests == 1 and sleeps == []
    assert sendgrid_server.stats.accepted == copies          # at most one copy, whatever happened


def test_a_refused_connection_provably_sent_nothing_and_is_retried(settings, edition, sleeps):
    from tests.servers.sendgrid_server import SendGridServer

    with SendGridServer(down=True) as server:
        sg = dataclasses.replace(settings.delivery.sendgrid, host=server.url, timeout=2.0)
        backend = SendGridBackend(sg, api_key="SG.test", sleep=lambda s: (sleeps.append(s), server.up()),
                                  rng=lambda: 0.5)
        with backend:
            assert all(r.ok for r in backend.send_batch(readers(edition, 4)))
        assert len(sleeps) == 1 and server.stats.requests == 1 and len(server.recipients()) == 4


def test_a_400_naming_one_bad_address_fails_that_reader_and_sends_the_rest(make_backend, sendgrid_server, edition):
    batch = readers(edition, 6)
    batch[2] = dataclasses.replace(batch[2], email="not-an-address")
    batch[4] = dataclasses.replace(batch[4], email="r0@example.org")  # the same address twice in one request
    with make_backend() as backend:
        results = backend.send_batch(batch)
    assert [r.status for r in results] == [ResultStatus.ACCEPTED, ResultStatus.ACCEPTED, ResultStatus.REJECTED,
                                           ResultStatus.ACCEPTED, ResultStatus.REJECTED, ResultStatus.ACCEPTED]
    assert results[2].detail == "Does not contain a valid address."
    assert results[2].raw["field"] == "personalizations.2.to.0.email"
    assert "duplicate" in results[4].detail
    assert sendgrid_server.recipients() == ["r0@example.org", "r1@example.org", "r3@example.org", "r5@example.org"]


@pytest.mark.parametrize("api_key, status", [("SG.wrong", 401), ("SG.forbidden", 403)])
def test_bad_credentials_stop_the_send_with_a_clear_message(make_backend, sendgrid_server, edition, api_key, status):
    refused = pytest.raises(PermanentDelivery, match=r"SENDGRID_API_KEY.*nothing was sent")
    with make_backend(api_key=api_key) as backend, refused as caught:
        backend.send_batch(readers(edition, 3))
    assert caught.value.status == status and sendgrid_server.stats.requests == 1


def test_a_400_about_the_whole_request_stops_the_send_with_sendgrids_words(make_backend, sendgrid_server, edition):
    sendgrid_server.fail(400)
    with make_backend() as backend, pytest.raises(PermanentDelivery, match="internal error") as caught:
        backend.send_batch(readers(edition, 3))
    assert caught.value.status == 400


def test_the_api_key_comes_from_the_environment_variable_config_names(settings, monkeypatch):
    from mailer.errors import ConfigError

    monkeypatch.delenv("SENDGRID_API_KEY", raising=False)
    with pytest.raises(ConfigError, match=r"\[delivery.sendgrid\] api_key_env names .*SENDGRID_API_KEY"):
        SendGridBackend(settings.delivery.sendgrid)


# --- the local server itself enforces SendGrid's documented limits --------------------------------

def _valid(n=1, **extra):
    body = {"personalizations": [{"to": [{"email": f"r{i}@example.org"}]} for i in range(n)],
            "from": {"email": "news@example.org"}, "subject": "S",
            "content": [{"type": "text/plain", "value": "t"}, {"type": "text/html", "value": "<p>h</p>"}]}
    body.update(extra)
    return body


def _post(server, body, key="SG.test"):
    import urllib.error
    import urllib.request

    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(f"{server.url}/v3/mail/send", data=data, method="POST",
                                 headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers, b""
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def _with(body, path, value):
    *parents, last = path
    target = body
    for key in parents:
        target = target[key]
    target[last] = value
    return body


@pytest.mark.parametrize("body, field", [
    (_valid(1001), "personalizations"),
    (_valid(0), "personalizations"),
    (_with(_valid(2), ["personalizations", 1, "to"], []), "personalizations.1.to"),
    (_with(_valid(2), ["personalizations", 1, "to"], [{"email": "r0@example.org"}]), "personalizations.1"),
    (_with(_valid(1), ["personalizations", 0, "cc"], [{"email": f"c{i}@example.org"} for i in range(1000)]),
     "personalizations"),
    (_with(_valid(1), ["personalizations", 0, "to", 0, "email"], "nope"), "personalizations.0.to.0.email"),
    (_with(_valid(1), ["personalizations", 0, "to", 0, "name"], "Doe, Jane"), "personalizations.0.to.0.name"),
    (_with(_valid(1), ["from"], None), "from"),
    (_valid(1, content=[{"type": "text/html", "value": "h"}, {"type": "text/plain", "value": "t"}]), "content"),
    (_valid(1, content=[{"type": "text/plain", "value": "a"}, {"type": "text/plain", "value": "b"}]), "content"),
    (_valid(1, content=[{"type": "text/plain", "value": ""}]), "content.0.value"),
    (_valid(1, subject=""), "subject"),
    (_valid(1, custom_args="issue-1"), "custom_args"),
    (_valid(1, custom_args={"k": "v" * 10_001}), "custom_args"),
    (_with(_valid(1), ["personalizations", 0, "substitutions"], {"%%x%%": "v" * 10_001}),
     "personalizations.0.substitutions"),
    (_with(_valid(1), ["personalizations", 0, "headers"], {"Subject": "x"}), "personalizations.0.headers"),
    (_valid(1, headers={"DKIM-Signature": "x"}), "headers"),
])
def test_server_rejects_what_sendgrid_rejects(sendgrid_server, body, field):
    status, _, raw = _post(sendgrid_server, body)
    assert status == 400
    assert field in [e["field"] for e in json.loads(raw)["errors"]]


@pytest.mark.parametrize("body, key, status", [
    (_valid(1000), "SG.test", 202),
    (_valid(1), "SG.other", 401),
    (_valid(1), "SG.forbidden", 403),
    (b"{" + b" " * (30 * 1024 * 1024) + b"}", "SG.test", 413),
])
def test_server_answers(sendgrid_server, body, key, status):
    got, headers, _ = _post(sendgrid_server, body, key)
    assert got == status
    assert headers["X-RateLimit-Reset"]
    assert (headers.get("X-Message-Id") is not None) == (status == 202)


def test_the_body_goes_out_byte_for_byte_and_no_reader_address_reaches_a_log(make_backend, sendgrid_server, edition,
                                                                             caplog):
    import logging

    caplog.set_level(logging.DEBUG)          # every logger, the library's included
    batch = readers(edition, 4) + readers(edition, 1, start=1, send=2)   # r1 twice: SendGrid's 400 names it
    with make_backend() as backend:
        results = backend.send_batch(batch)
        expected = [backend.request_body(batch[:4]).encode("utf-8")]
    assert [r.status for r in results] == [ResultStatus.ACCEPTED] * 4 + [ResultStatus.REJECTED]
    assert sendgrid_server.raw_bodies == expected                         # byte for byte
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "Response" in logged and "PAYLOAD" in logged                   # the library did log ...
    assert not any(f"r{i}@example.org" in logged for i in range(4))       # ... and no reader's address
