"""A command's database connections close when the command ends (mailer/engines.py), on SQLite and
on PostgreSQL, whether it succeeded or failed; within a command every stage shares one Engine."""

from __future__ import annotations

import time
import uuid

import psycopg
import pytest

from mailer import engines
from mailer.send import dispatch
from tests.deliver.helpers import seed

SECRET = "test-secret-key-0123456789abcdef"

# (command after `mailer --config FILE`, expected exit code): reads, writes, a whole send, a failure
COMMANDS = [
    (["lists"], 0),
    (["lists", "create", "press", "--title", "Press"], 0),
    (["subscribers", "add", "new@example.org", "--list", "crank"], 0),
    (["send", "issues/2024-11.md", "--list", "crank", "--yes"], 0),
    (["send", "issues/2024-11.md", "--list", "nobody", "--yes"], 1),
    (["report", "2024-11", "--list", "crank"], 0),
    (["db", "current"], 0),
    (["db", "upgrade"], 0),
]


@pytest.fixture(autouse=True)
def secret_in_env(monkeypatch):
    monkeypatch.setenv("MAILER_SECRET_KEY", SECRET)


@pytest.fixture
def project(config_file, repo, db_url):
    """config.toml beside the repo's templates and issues, on the test's database; on PostgreSQL
    the commands' connections carry an application_name of their own, so they can be counted."""
    for folder in ("templates", "issues"):
        (config_file.parent / folder).symlink_to(repo / folder)
    seed(db_url, 3)
    engines.dispose_all()
    url = db_url
    if db_url.startswith("postgresql"):
        url = f"{db_url}&application_name=mailer_test_{uuid.uuid4().hex[:12]}"
    text = config_file.read_text(encoding="utf-8").replace('url = "sqlite:///mailer.db"', f'url = "{url}"', 1)
    config_file.write_text(text, encoding="utf-8")
    return config_file, url


def _open_on_server(url: str) -> int:
    """Connections to the PostgreSQL server under this URL's application_name, once the ones that
    were just closed have gone (a backend leaves pg_stat_activity shortly after its client closes)."""
    name = url.rsplit("application_name=", 1)[1]
    plain = url.split("?", 1)[0].replace("postgresql+psycopg", "postgresql")
    deadline = time.monotonic() + 10
    with psycopg.connect(plain, autocommit=True) as conn:
        while True:
            count = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                                 (name,)).fetchone()[0]
            if count == 0 or time.monotonic() > deadline:
                return count
            time.sleep(0.05)


def test_every_command_leaves_no_engine_and_no_connection(cli, project):
    config, url = project
    for args, code in COMMANDS:
        result = cli("--config", config, *args)
        assert result.code == code, (args, result.err)
        assert engines.open_count() == 0, args
        if url.startswith("postgresql"):
            assert _open_on_server(url) == 0, args


def test_a_command_reuses_one_engine_for_every_stage(settings, db_url, repo):
    """plan_send, the send and the scheduler's store all get the process's one Engine."""
    from dataclasses import replace

    from mailer.compose.render import compose_issue
    from mailer.schedule.scheduler import store

    s = replace(settings, database=replace(settings.database, url=db_url))
    seed(db_url, 2)
    composed = compose_issue(repo / "issues" / "2024-11.md", s)
    first = dispatch.plan_send(s, composed, "crank")
    second = dispatch.plan_send(s, composed, "crank")
    assert first.engine is second.engine is store(s) is dispatch.open_store(s)
    assert engines.open_count() == 1
    engines.dispose_all()
    assert engines.open_count() == 0
