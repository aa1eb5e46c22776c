"""The REST API (/api/v1, docs/api.md) over real HTTP (uvicorn on loopback): tokens and scopes,
double opt-in by default, confirmed creates with a consent record, idempotent retries, the
per-token rate limit, the signup's address checks, the audit log, and the token commands."""

from __future__ import annotations

import dataclasses

import pytest
from sqlalchemy import func, select

from mailer import api_tokens, audit
from mailer.api_tokens import Scope
from subscribers import store
from subscribers.models import history, subscribers
from tests.web.admin_helpers import send_issue
from tests.web.conftest import LIST
from tests.web.outbox_mail import mails, wait_for_mails

ALL = frozenset(Scope)


def make_token(live, name: str = "crm", scopes=ALL) -> str:
    with live.web.engine.begin() as conn:
        return api_tokens.create(conn, name, frozenset(scopes)).token


def bearer(token: str) -> dict:
    return {"authorization": f"Bearer {token}"}


def count(live, table, *where) -> int:
    with live.web.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table).where(*where)).scalar()


def entries(live, actor: str) -> list:
    with live.web.engine.connect() as conn:
        return audit.entries(conn, actor=actor, limit=100).rows


@pytest.fixture
def outbox(live):
    return live.settings.delivery.outbox_dir


# ---------------------------------------------------------------- tokens and scopes

@pytest.mark.parametrize(("headers", "status"), [
    ({}, 401),
    ({"authorization": "Bearer mk_not-a-token"}, 401),
    ({"authorization": "Basic dXNlcjpwYXNz"}, 401),
    ({"authorization": "Bearer"}, 401),
])
def test_no_valid_token_is_401(live, headers, status):
    response = live.http.get("/api/v1/lists", headers=headers)
    assert response.status_code == status
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["detail"].startswith("a valid API token")


@pytest.mark.parametrize(("method", "path", "scope"), [
    ("GET", "/api/v1/lists", Scope.LISTS_READ),
    ("GET", "/api/v1/lists/crank", Scope.LISTS_READ),
    ("GET", "/api/v1/subscribers/1", Scope.SUBSCRIBERS_READ),
    ("POST", "/api/v1/subscribers", Scope.SUBSCRIBERS_WRITE),
    ("PATCH", "/api/v1/subscribers/1", Scope.SUBSCRIBERS_WRITE),
    ("POST", "/api/v1/subscribers/1/unsubscribe", Scope.SUBSCRIBERS_WRITE),
    ("POST", "/api/v1/subscribers/1/forget", Scope.SUBSCRIBERS_WRITE),
    ("GET", "/api/v1/sends", Scope.REPORTS_READ),
    ("GET", "/api/v1/sends/1", Scope.REPORTS_READ),
    ("GET", "/api/v1/issues", Scope.REPORTS_READ),
    ("GET", "/api/v1/issues/2024-11/report", Scope.REPORTS_READ),
])
def test_each_route_needs_its_scope(live, method, path, scope):
    token = make_token(live, scopes=ALL - {scope})
    body = {"email": "a@example.org", "lists": [LIST]} if path == "/api/v1/subscribers" else {}
    response = live.http.request(method, path, headers=bearer(token), json=body if method != "GET" else None)
    assert response.status_code == 403, response.text
    assert scope in response.json()["detail"]


def test_a_revoked_token_is_refused_at_once(live):
    token = make_token(live)
    assert live.http.get("/api/v1/lists", headers=bearer(token)).status_code == 200
    with live.web.engine.begin() as conn:
        assert api_tokens.revoke(conn, "crm") is True
        assert api_tokens.revoke(conn, "crm") is False
    assert live.http.get("/api/v1/lists", headers=bearer(token)).status_code == 401


def test_the_token_is_stored_hashed(live):
    token = make_token(live)
    with live.web.engine.connect() as conn:
        stored = conn.execute(select(api_tokens.api_tokens.c.token_hash)).scalar()
        used = conn.execute(select(api_tokens.api_tokens.c.last_used_at)).scalar()
    assert token.startswith("mk_") and len(token) == 46
    assert stored == api_tokens.digest(token) and token not in stored
    assert used is None
    live.http.get("/api/v1/lists", headers=bearer(token))
    with live.web.engine.connect() as conn:
        assert conn.execute(select(api_tokens.api_tokens.c.last_used_at)).scalar() is not None


# ---------------------------------------------------------------- lists

def test_lists_are_read_with_their_counts(live):
    token = make_token(live, scopes={Scope.LISTS_READ})
    with live.web.engine.begin() as conn:
        lst = store.get_list(conn, LIST)
        store.add_subscriber(conn, "ann@example.org", lst.id)
    found = live.http.get("/api/v1/lists", headers=bearer(token)).json()
    assert [(x["name"], x["title"], x["private"]) for x in found] == [(LIST, "CRANK Call", False)]
    assert found[0]["counts"]["active"] == 1
    assert live.http.get(f"/api/v1/lists/{LIST}", headers=bearer(token)).json()["name"] == LIST
    missing = live.http.get("/api/v1/lists/nope", headers=bearer(token))
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]


# ---------------------------------------------------------------- creates

def test_a_create_is_double_opt_in_and_its_link_confirms(live, outbox):
    token = make_token(live)
    response = live.http.post("/api/v1/subscribers", headers=bearer(token),
                              json={"email": "Ann@Example.org", "name": "Ann", "lists": [LIST], "tags": ["press"]})
    assert response.status_code == 202, response.text
    assert response.json() == {"email": "ann@example.org", "lists": [LIST], "status": "confirmation requested"}
    mail = wait_for_mails(outbox, 1)[0]
    assert mail.message["To"].addresses[0].addr_spec == "ann@example.org"
    got = live.http.get("/api/v1/subscribers/ann@example.org", headers=bearer(token)).json()
    assert got["lists"][0]["status"] == "unconfirmed" and got["tags"] == ["press"] and got["name"] == "Ann"
    path = mail.confirm_url.split(live.url, 1)[1]
    assert live.http.post(path).status_code == 200
    got = live.http.get(f"/api/v1/subscribers/{got['id']}", headers=bearer(token)).json()
    assert got["lists"][0]["status"] == "active" and got["lists"][0]["consent_source"] == "web"
    [entry] = [e for e in entries(live, "crm") if e.action == "subscriber.add"]
    assert entry.via == "api" and entry.target == LIST and entry.subscriber_id == got["id"]


def test_an_active_reader_is_answered_alike_and_changed_in_nothing(live, outbox):
    token = make_token(live)
    with live.web.engine.begin() as conn:
        store.add_subscriber(conn, "ann@example.org", store.get_list(conn, LIST).id)
    before = count(live, history)
    response = live.http.post("/api/v1/subscribers", headers=bearer(token),
                              json={"email": "ann@example.org", "lists": [LIST]})
    assert response.status_code == 202
    assert response.json()["status"] == "confirmation requested"
    assert count(live, history) == before and mails(outbox) == []


@pytest.mark.parametrize(("email", "message"), [
    ("not-an-address", "does not look like an email address"),
    ("someone@mailinator.com", "throwaway"),
    ("someone@blocked.example", "cannot subscribe here"),
    ("jos\u00e9@example.org", "non-ASCII"),
])
def test_creates_apply_the_signup_address_checks(live, outbox, email, message):
    live.web.addresses = dataclasses.replace(live.web.addresses, blocked=frozenset({"blocked.example"}))
    token = make_token(live)
    response = live.http.post("/api/v1/subscribers", headers=bearer(token), json={"email": email, "lists": [LIST]})
    assert response.status_code == 422
    assert message in response.json()["detail"]
    assert count(live, subscribers) == 0 and mails(outbox) == []


def test_a_forgotten_address_is_not_stored_by_a_create(live, outbox):
    token = make_token(live)
    with live.web.engine.begin() as conn:
        store.forget(conn, "gone@example.org", live.web.secret)
    response = live.http.post("/api/v1/subscribers", headers=bearer(token),
                              json={"email": "gone@example.org", "lists": [LIST]})
    assert response.status_code == 202
    assert count(live, subscribers) == 0
    assert len(wait_for_mails(outbox, 1)) == 1        # the mail's sealed link brings them back if they click
    confirmed = live.http.post("/api/v1/subscribers", headers=bearer(token),
                               json={"email": "gone@example.org", "lists": [LIST], "confirmed": True,
                                     "consent": {"at": "2026-01-01T10:00:00Z", "how": "paper form"}})
    assert confirmed.status_code == 409 and "forgotten" in confirmed.json()["detail"]
    assert count(live, subscribers) == 0


CONSENT = {"at": "2026-11-30T09:00:00+00:00", "how": "signed the paper form at the fair", "ip": "192.0.2.9"}


def test_a_confirmed_create_needs_the_import_scope_and_a_consent(live, outbox):
    body = {"email": "bob@example.org", "lists": [LIST], "confirmed": True, "consent": CONSENT}
    writer = make_token(live, "writer", {Scope.SUBSCRIBERS_WRITE})
    refused = live.http.post("/api/v1/subscribers", headers=bearer(writer), json=body)
    assert refused.status_code == 403 and "subscribers:import" in refused.json()["detail"]
    importer = make_token(live, "importer", {Scope.SUBSCRIBERS_WRITE, Scope.SUBSCRIBERS_IMPORT})
    no_consent = live.http.post("/api/v1/subscribers", headers=bearer(importer),
                                json={**body, "consent": None})
    assert no_consent.status_code == 422 and "consent" in no_consent.json()["detail"]
    future = live.http.post("/api/v1/subscribers", headers=bearer(importer),
                            json={**body, "consent": {**CONSENT, "at": "2999-01-01T00:00:00Z"}})
    assert future.status_code == 422
    naive = live.http.post("/api/v1/subscribers", headers=bearer(importer),
                           json={**body, "consent": {**CONSENT, "at": "2026-01-01T00:00:00"}})
    assert naive.status_code == 422
    response = live.http.post("/api/v1/subscribers", headers=bearer(importer), json=body)
    assert response.status_code == 201, response.text
    assert response.json()["lists"][0]["status"] == "active"
    made = response.json()["lists"][0]
    assert (made["consent_source"], made["consent_ip"]) == ("import", "192.0.2.9")
    assert made["consent_at"].startswith("2026-11-30T09:00:00")
    assert mails(outbox) == []
    [entry] = entries(live, "importer")
    assert entry.detail["consent"] == {"at": "2026-11-30T09:00:00+00:00", "how": CONSENT["how"]}


@pytest.mark.parametrize("body", [
    {"email": "a@example.org"},                                    # no list
    {"email": "a@example.org", "lists": []},
    {"email": "a@example.org", "lists": [LIST], "extra": 1},       # unknown field
    {"email": "a" * 401, "lists": [LIST]},
    {"email": "a@example.org", "lists": [LIST], "tags": [","]},   # a tag the store refuses
])
def test_bad_bodies_are_422_and_store_nothing(live, body):
    token = make_token(live)
    response = live.http.post("/api/v1/subscribers", headers=bearer(token), json=body)
    assert response.status_code == 422, response.text
    assert count(live, subscribers) == 0


def test_a_create_for_an_unknown_list_is_404(live):
    token = make_token(live)
    response = live.http.post("/api/v1/subscribers", headers=bearer(token),
                              json={"email": "a@example.org", "lists": [LIST, "nope"]})
    assert response.status_code == 404 and count(live, subscribers) == 0


# ---------------------------------------------------------------- idempotency

def test_a_replayed_create_changes_nothing_and_answers_the_same(live, outbox):
    token = make_token(live)
    headers = {**bearer(token), "Idempotency-Key": "order-1234"}
    body = {"email": "cat@example.org", "lists": [LIST]}
    first = live.http.post("/api/v1/subscribers", headers=headers, json=body)
    wait_for_mails(outbox, 1)
    state = (count(live, subscribers), count(live, history), len(entries(live, "crm")))
    again = live.http.post("/api/v1/subscribers", headers=headers, json=body)
    assert (again.status_code, again.json()) == (first.status_code, first.json())
    assert again.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
    assert (count(live, subscribers), count(live, history), len(entries(live, "crm"))) == state
    assert len(mails(outbox)) == 1
    other = live.http.post("/api/v1/subscribers", headers=headers, json={**body, "name": "Cat"})
    assert other.status_code == 422 and "another request" in other.json()["detail"]
    # another token's same key is its own
    second = make_token(live, "other")
    assert live.http.post("/api/v1/subscribers", headers={**bearer(second), "Idempotency-Key": "order-1234"},
                          json=body).headers.get("idempotent-replayed") is None


def test_a_replayed_update_answers_as_the_first_time(live):
    token = make_token(live)
    with live.web.engine.begin() as conn:
        sid = store.add_subscriber(conn, "dan@example.org", store.get_list(conn, LIST).id).subscriber_id
    headers = {**bearer(token), "Idempotency-Key": "rename-1"}
    first = live.http.patch(f"/api/v1/subscribers/{sid}", headers=headers, json={"name": "Dan", "tags": ["a", "b"]})
    assert first.status_code == 200 and first.json()["name"] == "Dan" and first.json()["tags"] == ["a", "b"]
    # someone changes the name meanwhile; the retry answers as the first time and undoes nothing
    live.http.patch(f"/api/v1/subscribers/{sid}", headers=bearer(token), json={"name": "Daniel"})
    again = live.http.patch(f"/api/v1/subscribers/{sid}", headers=headers, json={"name": "Dan", "tags": ["a", "b"]})
    assert again.json() == first.json()
    assert live.http.get(f"/api/v1/subscribers/{sid}", headers=bearer(token)).json()["name"] == "Daniel"


def test_an_error_answer_is_kept_too(live):
    token = make_token(live)
    headers = {**bearer(token), "Idempotency-Key": "k"}
    first = live.http.post("/api/v1/subscribers/999/unsubscribe", headers=headers, json={})
    assert first.status_code == 404
    assert live.http.post("/api/v1/subscribers/999/unsubscribe", headers=headers, json={}).status_code == 404


def test_an_idempotency_key_expires_after_a_day(live):
    from datetime import timedelta

    from subscribers.models import utcnow

    token = make_token(live)
    with live.web.engine.begin() as conn:
        tid = api_tokens.find(conn, token).id
        api_tokens.remember(conn, tid, "old", api_tokens.Answer(200, {"x": 1}, "h"),
                            now=utcnow() - api_tokens.KEEP - timedelta(seconds=1))
        assert api_tokens.remembered(conn, tid, "old") is None
        api_tokens.remember(conn, tid, "old", api_tokens.Answer(200, {"x": 2}, "h"))   # replaces the stale one
        assert api_tokens.remembered(conn, tid, "old").body == {"x": 2}


# ---------------------------------------------------------------- updates, unsubscribe, forget

def test_update_unsubscribe_and_forget_are_audited_with_the_token(live):
    token = make_token(live)
    with live.web.engine.begin() as conn:
        lst = store.get_list(conn, LIST)
        other = store.create_list(conn, "other")
        sid = store.add_subscriber(conn, "eve@example.org", lst.id).subscriber_id
        store.add_subscriber(conn, "eve@example.org", other.id)
    patched = live.http.patch("/api/v1/subscribers/eve@example.org", headers=bearer(token),
                              json={"name": "Eve", "tags": ["x"]})
    assert patched.status_code == 200
    left = live.http.post(f"/api/v1/subscribers/{sid}/unsubscribe", headers=bearer(token), json={"lists": [LIST]})
    assert left.json()["unsubscribed"] == [LIST]
    assert {m["list"]: m["status"] for m in left.json()["lists"]} == {LIST: "unsubscribed", "other": "active"}
    not_on = live.http.post(f"/api/v1/subscribers/{sid}/unsubscribe", headers=bearer(token), json={"lists": ["x"]})
    assert not_on.status_code == 404
    everything = live.http.post(f"/api/v1/subscribers/{sid}/unsubscribe", headers=bearer(token), json={})
    assert everything.json()["unsubscribed"] == ["other"]
    with live.web.engine.connect() as conn:
        sources = {row.source for row in conn.execute(select(history.c.source).where(history.c.subscriber_id == sid))}
    assert "api:crm" in sources
    gone = live.http.post(f"/api/v1/subscribers/{sid}/forget", headers=bearer(token))
    assert gone.json() == {"id": sid, "forgotten": True}
    assert live.http.get(f"/api/v1/subscribers/{sid}", headers=bearer(token)).status_code == 404
    assert live.http.post(f"/api/v1/subscribers/{sid}/forget", headers=bearer(token)).status_code == 404
    actions = [(e.action, e.via, e.subscriber_id, e.email) for e in reversed(entries(live, "crm"))]
    assert actions == [("subscriber.edit", "api", sid, None), ("subscriber.tag", "api", sid, None),
                       ("subscriber.unsubscribe", "api", sid, None), ("subscriber.unsubscribe", "api", sid, None),
                       ("subscriber.forget", "api", sid, None)]


def test_an_unknown_subscriber_is_404(live):
    token = make_token(live)
    for ref in ("12345", "nobody@example.org", "not an address"):
        assert live.http.get(f"/api/v1/subscribers/{ref}", headers=bearer(token)).status_code == 404


# ---------------------------------------------------------------- rate limit

def test_each_token_has_its_own_rate(live):
    live.app.state.web.settings = dataclasses.replace(
        live.settings, api=dataclasses.replace(live.settings.api, rate_burst=3, rate_per_hour=1))
    first, second = make_token(live, "a"), make_token(live, "b")
    statuses = [live.http.get("/api/v1/lists", headers=bearer(first)).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    refused = live.http.get("/api/v1/lists", headers=bearer(first))
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 3000
    assert live.http.get("/api/v1/lists", headers=bearer(second)).status_code == 200


# ---------------------------------------------------------------- issues and sends

def test_sends_and_the_report(live, repo):
    token = make_token(live, scopes={Scope.REPORTS_READ})
    with live.web.engine.begin() as conn:
        store.add_subscriber(conn, "fay@example.org", store.get_list(conn, LIST).id)
    send_issue(live, repo)
    [sent] = live.http.get("/api/v1/sends", headers=bearer(token)).json()
    assert (sent["issue"], sent["list"], sent["status"], sent["total"], sent["sent"]) == ("2024-11", LIST, "done", 1, 1)
    assert live.http.get(f"/api/v1/sends/{sent['id']}", headers=bearer(token)).json() == sent
    assert live.http.get("/api/v1/sends/999", headers=bearer(token)).status_code == 404
    assert live.http.get("/api/v1/sends?issue=2099-01", headers=bearer(token)).json() == []
    [issue] = live.http.get("/api/v1/issues", headers=bearer(token)).json()
    assert (issue["issue"], issue["sends"], issue["readers"], issue["sent"]) == ("2024-11", 1, 1, 1)
    figures = live.http.get("/api/v1/issues/2024-11/report", headers=bearer(token)).json()
    assert figures["figures"]["readers"] == 1 and figures["lists"] == [LIST]
    assert live.http.get("/api/v1/issues/2099-01/report", headers=bearer(token)).status_code == 404


# ---------------------------------------------------------------- documentation

def test_the_api_is_documented(live):
    spec = live.http.get("/api/openapi.json").json()
    assert {"/api/v1/lists", "/api/v1/subscribers", "/api/v1/subscribers/{ref}", "/api/v1/sends",
            "/api/v1/issues/{issue}/report"} <= set(spec["paths"])
    assert all(path.startswith("/api/v1/") for path in spec["paths"])
    assert spec["components"]["securitySchemes"]["token"]["scheme"] == "bearer"
    page = live.http.get("/api/docs")
    assert page.status_code == 200 and "/api/openapi.json" in page.text
    assert "'sha256-" in page.headers["content-security-policy"]


# ---------------------------------------------------------------- the token commands

def test_token_commands(cli, config_file, tmp_path, monkeypatch):
    monkeypatch.setenv("MAILER_SECRET_KEY", "k" * 32)
    made = cli("--config", config_file, "admin", "token", "create", "crm", "--scope", "lists:read",
               "--scope", "subscribers:write")
    assert made.code == 0, made.err
    token = made.out.strip().splitlines()[-1]
    assert token.startswith("mk_") and "shown only now" in made.out
    listed = cli("--config", config_file, "admin", "token", "list")
    assert "crm  lists:read subscribers:write" in listed.out and "live" in listed.out and token not in listed.out
    again = cli("--config", config_file, "admin", "token", "create", "crm", "--scope", "lists:read")
    assert again.code == 1 and "exists already" in again.err
    bad = cli("--config", config_file, "admin", "token", "create", "x", "--scope", "lists:write")
    assert bad.code == 1 and "unknown scope 'lists:write'" in bad.err
    assert cli("--config", config_file, "admin", "token", "create", "bad name", "--scope", "lists:read").code == 1
    assert "Revoked API token crm." in cli("--config", config_file, "admin", "token", "revoke", "crm").out
    assert "revoked already" in cli("--config", config_file, "admin", "token", "revoke", "crm").out
    assert "no API token named 'nope'" in cli("--config", config_file, "admin", "token", "revoke", "nope").err
    assert "revoked" in cli("--config", config_file, "admin", "token", "list").out
    log = cli("--config", config_file, "admin", "log", "--action", "token.create").out
    assert "token.create" in log and "crm" in log


def test_tokens_and_keys_on_both_databases(db_url):
    from mailer import engines

    engine = engines.get(db_url)
    with engine.begin() as conn:
        made = api_tokens.create(conn, "crm", frozenset({Scope.LISTS_READ}))
        token = api_tokens.find(conn, made.token)
        assert token is not None and token.scopes == {Scope.LISTS_READ}
        api_tokens.remember(conn, token.id, "k", api_tokens.Answer(201, {"id": 1, "ü": "x"}, "h"))
        assert api_tokens.remembered(conn, token.id, "k") == api_tokens.Answer(201, {"id": 1, "ü": "x"}, "h")
        api_tokens.revoke(conn, "crm")
        assert api_tokens.find(conn, made.token) is None
        assert api_tokens.find(conn, "not mk_") is None


def test_the_welcome_mail_follows_a_web_or_api_confirmation_once(live, outbox):
    from mailer.send import welcome

    path = live.settings.compose.issues_dir / "hello.md"
    path.write_text('+++\nsubject = "Hello reader"\ndate = 2024-11-01\npreheader = "Hi"\n+++\n# Hello\n\n'
                    'Glad you are here.\n\n## More\n\nSoon.\n', encoding="utf-8")
    with live.web.engine.begin() as conn:
        welcome.set_welcome(conn, store.get_list(conn, LIST).id, path, "hello", "Hello reader")
    token = make_token(live)
    live.http.post("/api/v1/subscribers", headers=bearer(token), json={"email": "gil@example.org", "lists": [LIST]})
    confirm = wait_for_mails(outbox, 1)[0].confirm_url.split(live.url, 1)[1]
    assert live.http.post(confirm).status_code == 200
    assert live.http.post(confirm).status_code == 200          # confirmed twice: "already"
    importer = live.http.post("/api/v1/subscribers", headers=bearer(token), json={
        "email": "hal@example.org", "lists": [LIST], "confirmed": True, "consent": CONSENT})
    assert importer.status_code == 201

    def welcomes() -> list[str]:
        return sorted(p.name.split(".")[0] for p in outbox.glob("hello.*.eml"))

    import time
    deadline = time.monotonic() + 10
    while len(welcomes()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    assert welcomes() == ["hello", "hello"]
    assert "Hello reader" not in live.http.get("/archive").text


def test_a_replay_changes_nothing_on_both_databases(web_settings, db_url):
    import httpx

    from mailer.web import create_app
    from tests.web.live import free_socket, serve_in_thread

    settings = dataclasses.replace(web_settings, database=dataclasses.replace(web_settings.database, url=db_url))
    app = create_app(settings)
    with app.state.web.engine.begin() as conn:
        store.create_list(conn, LIST)
        token = api_tokens.create(conn, "crm", ALL).token
    headers = {**bearer(token), "Idempotency-Key": "k1"}
    body = {"email": "ivy@example.org", "lists": [LIST], "confirmed": True, "consent": CONSENT, "tags": ["t"]}
    sock = free_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with serve_in_thread(app, sock=sock), httpx.Client(base_url=url, timeout=10) as client:
        first = client.post("/api/v1/subscribers", headers=headers, json=body)
        assert first.status_code == 201, first.text
        with app.state.web.engine.connect() as conn:
            before = [conn.execute(select(func.count()).select_from(t)).scalar() for t in (subscribers, history)]
        again = client.post("/api/v1/subscribers", headers=headers, json=body)
        assert (again.status_code, again.json()) == (201, first.json())
        refused = client.patch(f"/api/v1/subscribers/{first.json()['id']}", json={"tags": [","]},
                               headers={**bearer(token), "Idempotency-Key": "k2"})
        assert refused.status_code == 422
        with app.state.web.engine.connect() as conn:
            after = [conn.execute(select(func.count()).select_from(t)).scalar() for t in (subscribers, history)]
    assert after == before
