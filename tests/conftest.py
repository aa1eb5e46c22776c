"""Shared fixtures: settings on a temporary folder, both databases, the CLI in-process."""

from __future__ import annotations

import dataclasses
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailer import engines
from mailer.config import load_settings
from tests.services import missing

REPO = Path(__file__).resolve().parent.parent
# The local servers' fixtures, found by name in every test module rather than imported into each.
pytest_plugins = ["tests.servers.fixtures"]

PG_URL = os.environ.get("MAILER_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(autouse=True)
def dispose_engines():
    """What mailer.cli.main does when a command ends, for the tests that call the stages directly:
    the process's Engines (mailer/engines.py) are closed after each test, the PostgreSQL server is shared."""
    yield
    engines.dispose_all()


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def settings(tmp_path):
    """The repo's config.toml with the database and outbox moved into a temporary folder, and its
    own path there too, so that nothing found next to the config file (the key file a README run
    leaves in the repo, .mailer-secret) reaches a test."""
    s = load_settings(REPO / "config.toml")
    return dataclasses.replace(
        s, path=tmp_path / "config.toml",
        database=dataclasses.replace(s.database, url=f"sqlite:///{tmp_path / 'mailer.db'}"),
        delivery=dataclasses.replace(s.delivery, outbox_dir=tmp_path / "outbox"),
    )


@pytest.fixture
def config_file(tmp_path) -> Path:
    """A copy of config.toml in a temporary folder, so relative paths land there."""
    target = tmp_path / "config.toml"
    target.write_text((REPO / "config.toml").read_text(encoding="utf-8"), encoding="utf-8")
    return target


def _pg_reachable() -> str | None:
    try:
        import psycopg

        with psycopg.connect(PG_URL.replace("postgresql+psycopg", "postgresql"), connect_timeout=3):
            return None
    except Exception as exc:  # noqa: BLE001 - any failure means "no server here"
        return f"no PostgreSQL at {PG_URL}: {exc}"


@pytest.fixture(scope="session")
def pg_server() -> str:
    reason = _pg_reachable()
    if reason:
        missing(f"PostgreSQL tests skipped: {reason}")
    return PG_URL


@pytest.fixture
def pg_url(pg_server):
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards.

    Each test gets its own schema, so parallel runs on the same `test` database never collide.
    """
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    plain = pg_server.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in pg_server else "?"
    yield f"{pg_server}{sep}options=-csearch_path%3D{schema}"
    engines.dispose_all()
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path):
    """Run the test once on SQLite and once on the machine's PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("pg_url")


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run `mailer ARGS...` in-process; returns exit code, stdout and stderr."""
    from mailer.cli import main

    monkeypatch.setenv("COLUMNS", "200")

    def run(*args: str, input: str | None = None) -> CliResult:
        import io
        import sys

        capsys.readouterr()
        if input is not None:
            monkeypatch.setattr(sys, "stdin", io.StringIO(input))
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="session")
def playwright():
    """The one Playwright of this test process: its sync API runs an event loop of its own, and a
    second `sync_playwright()` started while the first lives fails ("Sync API inside the asyncio
    loop"), so every browser fixture (tests/web/conftest.py, tests/browser/) launches from this."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        yield pw
