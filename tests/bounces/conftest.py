"""A config file whose database is the `db_url` of the test (SQLite or PostgreSQL), the secret set."""

from __future__ import annotations

import pytest

SECRET = "bounce-test-secret-0123456789"


@pytest.fixture
def bounce_config(tmp_path, repo, monkeypatch):
    """config.toml in a temporary folder (its SQLite database there too); returns its path."""
    monkeypatch.setenv("MAILER_SECRET_KEY", SECRET)
    target = tmp_path / "config.toml"
    target.write_text((repo / "config.toml").read_text(encoding="utf-8"), encoding="utf-8")
    return target


def with_database(config, url: str):
    text = config.read_text(encoding="utf-8").replace('url = "sqlite:///mailer.db"', f'url = "{url}"')
    config.write_text(text, encoding="utf-8")
    return config
