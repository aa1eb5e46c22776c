"""Outgoing webhooks (docs/api.md): events written with their change, signed per Standard
Webhooks (checked with the spec's own `standardwebhooks` library), posted to a real receiver on
loopback until one 2xx, retried on 5xx, 429, timeouts and refused connections for 24 hours, and
never carrying a forgotten reader's address."""

from __future__ import annotations

import base64
import dataclasses
import itertools
import json
import os
import socket
from datetime import timedelta

import pytest
from sqlalchemy import select
from standardwebhooks import Webhook

from mailer import engines
from mailer.config import ConfigError, OutgoingWebhook, database_url, load_settings
from mailer.notify import delivery
from mailer.notify.delivery import Notifier, webhook_deliveries
from subscribers import store
from subscribers.events import DeliveryEvent, EventType, Severity
from subscribers.models import Status, outbox, utcnow
from subscribers.policy import Limits, ingest
from tests.servers.webhook_receiver import Receiver

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
ALL = ("subscriber.created", "subscriber.confirmed", "subscriber.unsubscribed", "subscriber.bounced",
       "subscriber.complained", "subscriber.forgotten", "send.started", "send.finished")
KEY = "test-secret-key-0123456789abcdef"


def hooked(settings, url: str, events=ALL, env: str = "TEST_WHSEC"):
    return dataclasses.replace(settings, webhooks=dataclasses.replace(
        settings.webhooks, out=(OutgoingWebhook(url, tuple(events), env),)))


@pytest.fixture
def env(monkeypatch):
    monkeypatch.setenv("TEST_WHSEC", SECRET)
    monkeypatch.setenv("MAILER_SECRET_KEY", KEY)


@pytest.fixture
def db(settings, db_url):
    """The settings on SQLite or PostgreSQL, the schema at head, one list `crank`."""
    s = dataclasses.replace(settings, database=dataclasses.replace(settings.database, url=db_url))
    engine = engines.get(db_url)
    with engine.begin() as conn:
        store.create_list(conn, "crank")
    return s, engine


def events(engine) -> list:
    with engine.connect() as conn:
        return list(conn.execute(select(outbox).order_by(outbox.c.id)))


def states(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(webhook_deliveries.c.state, webhook_deliveries.c.attempts,
                                                      webhook_deliveries.c.last_status)
                                               .order_by(webhook_deliveries.c.id))]


def verify(got) -> dict:
    """The spec's library accepts the post (it raises otherwise); the payload."""
    return Webhook(SECRET).verify(got.body, {k: got.headers[k] for k in
                                             ("webhook-id", "webhook-timestamp", "webhook-signature")})


def test_500_then_200_is_one_accepted_delivery_signed_per_the_spec(db, env):
    settings, engine = db
    with Receiver(statuses=[500, 200]) as receiver:
        notifier = Notifier(hooked(settings, receiver.url, ["subscriber.created"]), engine=engine)
        with engine.begin() as conn:
            sid = store.add_subscriber(conn, "ann@example.org", store.get_list(conn, "crank").id).subscriber_id
        now = utcnow()
        assert notifier.tick(now)["retry"] == 1
        assert states(engine) == [("pending", 1, 500)]
        assert notifier.tick(now + timedelta(seconds=4))["retry"] == 0     # not due yet (5 s)
        assert notifier.tick(now + timedelta(seconds=6))["delivered"] == 1
        assert notifier.tick(now + timedelta(hours=3)) == {"made": 0, "swept": 0, "delivered": 0, "failed": 0,
                                                           "retry": 0}
    first, second = receiver.received
    assert (first.status, second.status) == (500, 200)
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == events(engine)[0].event_id
    payload = verify(second)
    assert verify(first) == payload
    assert payload["type"] == "subscriber.created"
    assert payload["data"] == {"event_id": events(engine)[0].event_id, "subscriber_id": sid,
                               "email": "ann@example.org", "list": "crank", "status": "active",
                               "previous_status": None, "source": "admin"}
    assert states(engine) == [("delivered", 2, 200)]


def test_a_forged_signature_is_refused_by_the_library(db, env):
    from standardwebhooks.webhooks import WebhookVerificationError

    settings, engine = db
    with Receiver() as receiver:
        notifier = Notifier(hooked(settings, receiver.url), engine=engine)
        with engine.begin() as conn:
            store.add_subscriber(conn, "ann@example.org", store.get_list(conn, "crank").id)
        notifier.tick()
    [got] = receiver.received
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(got.body.replace(b"ann@", b"bob@"), got.headers)
    other = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(got.body, got.headers)


@pytest.mark.parametrize(("statuses", "expected"), [
    ([404], ("failed", 1, 404)),          # the receiver said no: asking again changes nothing
    ([400], ("failed", 1, 400)),
    ([301], ("failed", 1, 301)),          # a redirect is not followed
    ([429, 204], ("delivered", 2, 204)),
    ([502, 503, 201], ("delivered", 3, 201)),
])
def test_which_answers_are_retried(settings, env, statuses, expected):
    engine = engines.get(settings.database.url)
    with engine.begin() as conn:
        store.add_subscriber(conn, "ann@example.org", store.create_list(conn, "crank").id)
    with Receiver(statuses=statuses) as receiver:
        notifier = Notifier(hooked(settings, receiver.url), engine=engine)
        now = utcnow()
        for step in range(4):
            notifier.tick(now + timedelta(hours=step))
    assert states(engine) == [expected]
    assert len(receiver.received) == expected[1]


def test_refused_connections_and_timeouts_are_retried_for_24_hours(settings, env, monkeypatch):
    engine = engines.get(settings.database.url)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        refused_url = f"http://127.0.0.1:{closed.getsockname()[1]}/hook"
    with engine.begin() as conn:
        store.add_subscriber(conn, "ann@example.org", store.create_list(conn, "crank").id)
    notifier = Notifier(hooked(settings, refused_url), engine=engine)
    event_at = events(engine)[0].at
    notifier.tick(event_at)
    [(state, tries, status)] = states(engine)
    assert (state, tries, status) == ("pending", 1, None)
    with engine.connect() as conn:
        assert "no answer" in conn.execute(select(webhook_deliveries.c.last_error)).scalar()
    tried_at = [event_at]
    while states(engine)[0][0] == "pending":      # each try when it is due: the Standard Webhooks schedule
        with engine.connect() as conn:
            due = conn.execute(select(webhook_deliveries.c.next_attempt_at)).scalar()
        notifier.tick(due)
        tried_at.append(due)
    waits = [later - earlier for earlier, later in itertools.pairwise(tried_at)]
    assert waits == list(delivery.BACKOFF[:6])
    assert tried_at[-1] - event_at < timedelta(hours=24)      # the next wait would have passed the 24 hours
    assert states(engine) == [("failed", 7, None)]
    # a receiver slower than the timeout: no answer, tried again
    monkeypatch.setattr(delivery, "TIMEOUT", 0.3)
    with Receiver(delay=1.0) as slow:
        outcome = delivery.post(slow.url, b"k" * 32, "msg_1", b"{}", 0)
    assert outcome.status is None and outcome.retry and "timed out" in outcome.error


def test_events_are_written_with_their_change_and_only_then(db, env):
    _, engine = db
    with engine.begin() as conn:
        lst = store.get_list(conn, "crank")
        sid = store.add_subscriber(conn, "bob@example.org", lst.id, status=Status.UNCONFIRMED).subscriber_id
        store.set_status(conn, sid, lst.id, Status.ACTIVE, "admin")
        store.unsubscribe(conn, sid, lst.id, source="web")
        store.rename(conn, sid, "Bob")                              # no event
    with pytest.raises(RuntimeError), engine.begin() as conn:     # a change rolled back: no event either
        store.add_subscriber(conn, "cat@example.org", lst.id)
        raise RuntimeError
    with engine.begin() as conn:
        ingest(conn, [DeliveryEvent(type=EventType.BOUNCED, recipient="bob@example.org", at=utcnow(),
                                    severity=Severity.HARD, source="test", event_id="e1")], Limits(3, 30))
        dan = store.add_subscriber(conn, "dan@example.org", lst.id).subscriber_id
        ingest(conn, [DeliveryEvent(type=EventType.COMPLAINED, recipient="dan@example.org", at=utcnow(),
                                    source="test", event_id="e2")], Limits(3, 30))
    kinds = [(e.type, e.email, e.list_name) for e in events(engine)]
    assert kinds == [("subscriber.created", "bob@example.org", "crank"),
                     ("subscriber.confirmed", "bob@example.org", "crank"),
                     ("subscriber.unsubscribed", "bob@example.org", "crank"),
                     ("subscriber.bounced", "bob@example.org", None),
                     ("subscriber.created", "dan@example.org", "crank"),
                     ("subscriber.complained", "dan@example.org", None)]
    assert dan


def test_a_forgotten_readers_events_carry_no_address(db, env):
    settings, engine = db
    with engine.begin() as conn:
        sid = store.add_subscriber(conn, "eve@example.org", store.get_list(conn, "crank").id).subscriber_id
    with Receiver() as receiver:
        notifier = Notifier(hooked(settings, receiver.url), engine=engine)
        notifier.tick()                          # the creation went out with the address, while she was here
        with engine.begin() as conn:
            store.forget(conn, "eve@example.org", KEY)
        notifier.tick()
    created, forgotten = (verify(got) for got in receiver.received)
    assert created["data"]["email"] == "eve@example.org"
    assert forgotten["type"] == "subscriber.forgotten"
    assert forgotten["data"] == {"event_id": forgotten["data"]["event_id"], "subscriber_id": sid, "email": None,
                                 "source": "admin"}
    assert all(e.email is None for e in events(engine))      # nothing stored keeps it either


def test_a_forgotten_reader_not_yet_posted_is_posted_without_address(settings, env):
    from subscribers import many

    engine = engines.get(settings.database.url)
    with engine.begin() as conn:
        lst = store.create_list(conn, "crank")
        ids = [store.add_subscriber(conn, f"r{i}@example.org", lst.id).subscriber_id for i in range(2)]
        many.forget_many(conn, ids, KEY, "admin:ann")
    with Receiver() as receiver:
        Notifier(hooked(settings, receiver.url), engine=engine).tick()
    posted = [verify(got) for got in receiver.received]
    assert [p["type"] for p in posted] == ["subscriber.created"] * 2 + ["subscriber.forgotten"] * 2
    assert b"@example.org" not in b"".join(got.body for got in receiver.received)


def test_only_the_events_an_endpoint_asks_for(settings, env):
    engine = engines.get(settings.database.url)
    with engine.begin() as conn:
        lst = store.create_list(conn, "crank")
        sid = store.add_subscriber(conn, "ann@example.org", lst.id).subscriber_id
        store.unsubscribe(conn, sid, lst.id)
    with Receiver() as receiver:
        Notifier(hooked(settings, receiver.url, ["subscriber.unsubscribed"]), engine=engine).tick()
    assert [verify(got)["type"] for got in receiver.received] == ["subscriber.unsubscribed"]


@pytest.mark.filterwarnings("ignore::mailer.compose.personalize.UnsafeUnsubscribeUrl")
def test_send_started_and_finished(settings, env, repo):
    import shutil

    from mailer.compose.render import compose_issue
    from mailer.send import dispatch

    engine = engines.get(settings.database.url)
    with engine.begin() as conn:
        store.add_subscriber(conn, "ann@example.org", store.create_list(conn, "crank").id)
    issues = settings.root / "issues"
    issues.mkdir()
    shutil.copy(repo / "issues" / "2024-11.md", issues / "2024-11.md")
    settings = dataclasses.replace(settings, compose=dataclasses.replace(settings.compose, issues_dir=issues))
    dispatch.run_send(settings, dispatch.plan_send(settings, compose_issue(issues / "2024-11.md", settings), "crank"))
    with Receiver() as receiver:
        Notifier(hooked(settings, receiver.url, ["send.started", "send.finished"]), engine=engine).tick()
    started, finished = (verify(got) for got in receiver.received)
    assert started["type"] == "send.started" and started["data"]["issue"] == "2024-11"
    assert started["data"]["readers"] == 1 and started["data"]["list"] == "crank"
    assert finished["type"] == "send.finished" and finished["data"]["accepted"] == 1
    assert "email" not in finished["data"]


def test_events_older_than_a_week_are_swept_once_delivered(settings, env):
    engine = engines.get(settings.database.url)
    with engine.begin() as conn:
        store.add_subscriber(conn, "ann@example.org", store.create_list(conn, "crank").id)
    with Receiver() as receiver:
        notifier = Notifier(hooked(settings, receiver.url), engine=engine)
        notifier.tick()
        assert notifier.tick(utcnow() + timedelta(days=8))["swept"] == 1
    assert events(engine) == [] and states(engine) == []


@pytest.mark.parametrize(("hook", "message"), [
    ({"url": "ftp://x", "events": ["send.started"], "secret_env": "X"}, "url must be an http(s) URL"),
    ({"url": "https://x", "events": ["send.sent"], "secret_env": "X"}, "'send.sent' is not one of"),
    ({"url": "https://x", "events": [], "secret_env": "X"}, "none is not one of"),
    ({"url": "https://x", "events": ["send.started"], "secret_env": ""}, "secret_env must name"),
    ({"url": "https://x", "events": ["send.started"]}, "missing key [webhooks.out.1] secret_env"),
])
def test_config_errors(config_file, hook, message):
    lines = [f"{k} = {json.dumps(v)}" for k, v in hook.items()]
    config_file.write_text(config_file.read_text() + "\n[[webhooks.out]]\n" + "\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as raised:
        load_settings(config_file)
    assert message in str(raised.value)


@pytest.mark.parametrize(("value", "message"), [
    (None, "which is not set"),
    ("secret", "must start with whsec_"),
    ("whsec_***", "not base64"),
    ("whsec_" + base64.b64encode(b"short").decode(), "24 to 64 bytes"),
])
def test_a_bad_secret_stops_at_start(settings, monkeypatch, value, message):
    if value is None:
        monkeypatch.delenv("TEST_WHSEC", raising=False)
    else:
        monkeypatch.setenv("TEST_WHSEC", value)
    with pytest.raises(ConfigError, match=message):
        Notifier(hooked(settings, "https://example.org/hook"))


def test_the_webhooks_commands(cli, config_file, env):
    with Receiver(statuses=[200, 500]) as receiver:
        config_file.write_text(config_file.read_text() + f'\n[[webhooks.out]]\nurl = "{receiver.url}"\n'
                               'events = ["subscriber.created"]\nsecret_env = "TEST_WHSEC"\n')
        assert "No deliveries yet." in cli("--config", config_file, "webhooks").out
        ok = cli("--config", config_file, "webhooks", "test", receiver.url)
        assert ok.code == 0 and "accepted" in ok.out
        assert verify(receiver.received[0])["type"] == "ping"
        bad = cli("--config", config_file, "webhooks", "test", receiver.url)
        assert bad.code == 1 and "answered HTTP 500" in bad.err
        unknown = cli("--config", config_file, "webhooks", "test", "https://other.example/")
        assert unknown.code == 1 and "--secret-env" in unknown.err
        settings = load_settings(config_file)
        engine = engines.get(database_url(settings))
        with engine.begin() as conn:
            store.add_subscriber(conn, "ann@example.org", store.create_list(conn, "crank").id)
        receiver.statuses = [404]
        receiver.received.clear()
        Notifier(settings, engine=engine).tick()
        listed = cli("--config", config_file, "webhooks").out
        assert "subscriber.created" in listed and "failed after 1 try (HTTP 404)" in listed
        assert "failed" in cli("--config", config_file, "webhooks", "--failed").out
        receiver.statuses = [503]
        with engine.begin() as conn:
            store.add_subscriber(conn, "bob@example.org", store.get_list(conn, "crank").id)
        worked = cli("--config", config_file, "worker")       # the webhook loop runs while it works, then stops
        assert worked.code == 0, worked.err
        Notifier(settings, engine=engine).tick()
        assert "pending after 1 try (HTTP 503), next try" in cli("--config", config_file, "webhooks").out


def test_the_background_loop_delivers_and_stops(settings, env, monkeypatch):
    import time

    engine = engines.get(settings.database.url)
    monkeypatch.setattr(delivery, "POLL", 0.05)
    with engine.begin() as conn:
        store.add_subscriber(conn, "ann@example.org", store.create_list(conn, "crank").id)
    with Receiver() as receiver:
        notifier = Notifier(hooked(settings, receiver.url), engine=engine)
        notifier.start()
        try:
            deadline = time.monotonic() + 10
            while not receiver.received and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            notifier.stop()
    assert len(receiver.received) == 1 and states(engine) == [("delivered", 1, 200)]


def test_an_endpoint_taken_out_of_the_config_fails_its_deliveries(settings, env):
    engine = engines.get(settings.database.url)
    with engine.begin() as conn:
        store.add_subscriber(conn, "ann@example.org", store.create_list(conn, "crank").id)
    with Receiver() as receiver:
        now = utcnow()
        with engine.begin() as conn:
            delivery.fan_out(conn, delivery.endpoints(hooked(settings, receiver.url).webhooks.out), now)
        Notifier(hooked(settings, "https://elsewhere.example/"), engine=engine).tick(now)
    assert receiver.received == []
    with engine.connect() as conn:
        assert conn.execute(select(webhook_deliveries.c.state, webhook_deliveries.c.last_error)).one() == (
            "failed", "no longer in [[webhooks.out]]")
