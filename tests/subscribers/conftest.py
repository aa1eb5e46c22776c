"""Fixtures for the subscriber store: an engine on each database, lists, the CLI on that database."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from subscribers.policy import Limits

SECRET = "test-secret-key-0123456789"
RESEND = timedelta(minutes=10)                                     # [web] confirm_resend_minutes, as config.toml has it
LIMITS = Limits(soft_bounce_limit=3, soft_bounce_window_days=30)   # [bounces], likewise
CSV = Path(__file__).resolve().parent.parent / "fixtures" / "csv"


@pytest.fixture
def engine(db_url):
    from subscribers.db import connect

    eng = connect(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def crank(engine) -> int:
    from subscribers import store

    with engine.begin() as conn:
        return store.create_list(conn, "crank", "CRANK Call").id


@pytest.fixture
def digest(engine) -> int:
    from subscribers import store

    with engine.begin() as conn:
        return store.create_list(conn, "digest", "The Digest").id


@pytest.fixture
def secret_env(monkeypatch) -> str:
    monkeypatch.setenv("MAILER_SECRET_KEY", SECRET)
    return SECRET


@pytest.fixture
def mailer(cli, config_file, db_url, secret_env):
    """`mailer ARGS` against a config whose database is this test's db_url."""
    text = config_file.read_text(encoding="utf-8")
    config_file.write_text(re.sub(r'(?m)^url = .*$', f'url = "{db_url}"', text, count=1), encoding="utf-8")

    def run(*args, input=None):
        return cli("--config", str(config_file), *args, input=input)

    return run
