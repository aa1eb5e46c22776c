"""A database that cannot write under a real `mailer serve`: /healthz says so, and a one-click
unsubscribe that cannot be stored answers 503 with Retry-After (RFC 8058 senders retry), never 500;
once the disk has room again the same POST is stored (docs/exactly-once.md, "Disk full").

The fault: the server process runs with a file-size limit (RLIMIT_FSIZE, set by the process itself
before it becomes `mailer serve`; no root, no mount) just above SQLite's shared-memory file, so its
write-ahead log cannot grow: each write past the limit fails with EFBIG, as a write to a full disk
fails with ENOSPC. SQLite reports this one as "disk I/O error" (SQLITE_IOERR_WRITE) where ENOSPC
would be "database or disk is full" (SQLITE_FULL): both are the OperationalError the service meets."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest
from sqlalchemy import select

from subscribers.links import membership_key
from subscribers.models import memberships
from subscribers.tokens import make_token
from tests.deliver.helpers import seed
from tests.web.test_serve import started_on, wait_for

SECRET = "disk-full-secret-0123456789abcdef"
READERS = 40
LIMIT = 48 * 1024   # bytes a file of the server may reach: SQLite's -shm file (32 KB) fits, the WAL soon does not
ONE_CLICK = b"List-Unsubscribe=One-Click"
LIMITED = ("import os, resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, ({0}, {0})); "
           "os.execv(sys.argv[1], sys.argv[1:])")


def serve(config, limit: int | None) -> subprocess.Popen:
    command = [sys.executable, "-m", "mailer", "--config", str(config), "serve", "--host", "127.0.0.1", "--port", "0"]
    if limit is not None:
        command = [sys.executable, "-c", LIMITED.format(limit), sys.executable, *command[1:]]
    env = {**os.environ, "MAILER_SECRET_KEY": SECRET}
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def project(config_file, repo):
    (config_file.parent / "templates").symlink_to(repo / "templates")
    (config_file.parent / "issues").mkdir()
    url = f"sqlite:///{config_file.parent / 'mailer.db'}"
    list_id = seed(url, READERS)
    from mailer.migrate import connect

    engine = connect(url)
    with engine.connect() as conn:
        tokens = [make_token(SECRET, "unsubscribe", sid, list_id, membership_key(conn, sid, list_id))
                  for sid in range(1, READERS + 1)]
    engine.dispose()   # closed: SQLite folds its log into the file, so the server starts with an empty one
    return config_file, url, tokens


def statuses(url: str) -> dict:
    from mailer.migrate import connect

    engine = connect(url)
    try:
        with engine.connect() as conn:
            return dict(conn.execute(select(memberships.c.subscriber_id, memberships.c.status)).all())
    finally:
        engine.dispose()


def test_a_database_that_cannot_write_is_unhealthy_and_a_one_click_post_answers_503(project):
    config, url, tokens = project
    proc = serve(config, LIMIT)
    try:
        base = f"http://127.0.0.1:{started_on(proc)}"
        assert wait_for(f"{base}/healthz", proc).status_code == 200   # room for a page or two yet
        answers = []
        for token in tokens:   # each unsubscribe grows the log, until the "disk" is full
            answers.append(httpx.post(f"{base}/unsubscribe/{token}", content=ONE_CLICK, timeout=30))
            if answers[-1].status_code != 200:
                break
        refused = answers[-1]
        health = httpx.get(f"{base}/healthz", timeout=30)
    finally:
        stop(proc)
    stored = len(answers) - 1
    assert 0 < stored < READERS
    assert refused.status_code == 503 and refused.headers["retry-after"] == "120"
    assert "Please try again in a few minutes." in refused.text
    assert (health.status_code, health.json()) == (503, {"status": "unavailable", "database": "cannot write"})
    assert "disk I/O error" in proc.stderr.read()
    before = statuses(url)
    assert [before[sid] for sid in range(1, stored + 2)] == ["unsubscribed"] * stored + ["active"]   # not stored

    proc = serve(config, None)   # room again: the sender's retry is stored
    try:
        base = f"http://127.0.0.1:{started_on(proc)}"
        assert wait_for(f"{base}/healthz", proc).status_code == 200
        again = httpx.post(f"{base}/unsubscribe/{tokens[stored]}", content=ONE_CLICK, timeout=30)
    finally:
        stop(proc)
    assert again.status_code == 200
    assert statuses(url)[stored + 1] == "unsubscribed"


@pytest.mark.parametrize("read_only", [False, True])
def test_healthz_and_one_click_on_a_postgresql_that_takes_no_writes(web_settings, pg_url, read_only):
    """A PostgreSQL server in read-only mode (default_transaction_read_only, as an operator sets it
    when its disk fills, or a standby): /healthz says "cannot write", the one-click POST 503."""
    import dataclasses

    from mailer import engines
    from mailer.web import create_app
    from tests.web.conftest import SECRET as WEB_SECRET
    from tests.web.live import serve_in_thread

    seed(pg_url, 1)
    with engines.get(pg_url).connect() as conn:   # both schemas at head, before the server turns read-only
        token = make_token(WEB_SECRET, "unsubscribe", 1, 1, membership_key(conn, 1, 1))
    url = pg_url + ("%20-cdefault_transaction_read_only%3Don" if read_only else "")
    settings = dataclasses.replace(web_settings, database=dataclasses.replace(web_settings.database, url=url))
    app = create_app(settings)
    with serve_in_thread(app) as base, httpx.Client(base_url=base, timeout=30) as http:
        health = http.get("/healthz")
        post = http.post(f"/unsubscribe/{token}", content=ONE_CLICK)
    if read_only:
        assert (health.status_code, health.json()["database"]) == (503, "cannot write")
        assert post.status_code == 503 and post.headers["retry-after"] == "120"
    else:
        assert (health.status_code, post.status_code) == (200, 200)
