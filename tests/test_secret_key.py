"""The secret key outlives the shell: `mailer init` or the first send keeps it in .mailer-secret."""

from __future__ import annotations

import re
import shutil
import subprocess
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest

from tests.deliver.helpers import seed


@pytest.fixture(autouse=True)
def no_key_in_env(monkeypatch):
    monkeypatch.delenv("MAILER_SECRET_KEY", raising=False)


@pytest.fixture
def folder(config_file, repo) -> Path:
    for name in ("templates", "issues"):
        (config_file.parent / name).symlink_to(repo / name)
    return config_file.parent


def key_file(folder: Path) -> Path:
    return folder / ".mailer-secret"


def test_init_writes_a_private_key_file_once(cli, folder):
    first = cli("--config", folder / "config.toml", "init")
    assert first.code == 0, first.err
    assert f"Made a secret key in {key_file(folder)} (mode 0600" in first.out and "back it up" in first.out
    key = key_file(folder).read_text(encoding="utf-8").strip()
    assert len(key) >= 43 and key_file(folder).stat().st_mode & 0o777 == 0o600
    again = cli("--config", folder / "config.toml", "init")
    assert again.code == 0 and "already; nothing changed" in again.out
    assert key_file(folder).read_text(encoding="utf-8").strip() == key      # never replaced


def test_init_with_the_variable_set_writes_nothing(cli, folder, monkeypatch):
    monkeypatch.setenv("MAILER_SECRET_KEY", "from-the-environment-0123456789")
    result = cli("--config", folder / "config.toml", "init")
    assert result.code == 0 and "MAILER_SECRET_KEY is set" in result.out
    assert not key_file(folder).exists()


def unsubscribe_token(message: Path) -> str:
    msg = BytesParser(policy=policy.default).parsebytes(message.read_bytes())
    return re.fullmatch(r"<\S+/unsubscribe/(\S+)>", msg["List-Unsubscribe"]).group(1)


def test_the_first_send_makes_the_key_and_its_links_verify_in_a_later_shell(cli, folder):
    list_id = seed(f"sqlite:///{folder / 'mailer.db'}", 2)
    result = cli("--config", folder / "config.toml", "send", "2024-11", "--list", "crank", "--yes")
    assert result.code == 0, result.err
    assert f"note: made a secret key in {key_file(folder)}" in result.err
    key = key_file(folder).read_text(encoding="utf-8").strip()
    from subscribers.tokens import verify_token

    for message in sorted((folder / "outbox").rglob("*.eml")):
        assert verify_token(key, "unsubscribe", unsubscribe_token(message))[1] == list_id
    # a new shell (nothing in the environment) reads the same key from the file
    from mailer.config import load_settings, secret_key

    assert secret_key(load_settings(folder / "config.toml")) == key


def test_the_variable_wins_over_the_file(folder, monkeypatch):
    from mailer.config import load_settings, secret_key

    key_file(folder).write_text("from-the-file\n", encoding="utf-8")
    settings = load_settings(folder / "config.toml")
    assert secret_key(settings) == "from-the-file"
    monkeypatch.setenv("MAILER_SECRET_KEY", "from-the-environment")
    assert secret_key(settings) == "from-the-environment"


@pytest.mark.parametrize("content, words", [
    (None, "no secret key: MAILER_SECRET_KEY is not set and there is no {file}; run `mailer init` to "
           "make one (or set MAILER_SECRET_KEY)"),
    ("\n", "the secret key file {file} is empty; restore it from your backup"),
])
def test_commands_that_only_read_the_key_say_how_to_make_one(cli, folder, content, words):
    if content is not None:
        key_file(folder).write_text(content, encoding="utf-8")
    seed(f"sqlite:///{folder / 'mailer.db'}", 1)
    result = cli("--config", folder / "config.toml", "subscribers", "forget", "r0@example.org", "--yes")
    assert result.code == 2 and words.format(file=key_file(folder)) in result.err
    assert "Traceback" not in result.err


def test_git_ignores_the_key_file(repo):
    if shutil.which("git") is None or not (repo / ".git").exists():
        pytest.skip("not a git checkout")
    found = subprocess.run(["git", "check-ignore", "-q", ".mailer-secret"], cwd=repo, check=False)
    assert found.returncode == 0
