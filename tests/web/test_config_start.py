"""Mistakes that used to show only later (a header split by a line break, the first page served,
the first webhook post) are config errors at start (issue 23)."""

from __future__ import annotations

import re

import pytest

from mailer.config import load_settings
from mailer.errors import ConfigError
from tests.events.signing import Signer
from tests.test_config import NEWSLETTER


@pytest.mark.parametrize("extra, message", [
    ('[webhooks.sendgrid]\npublic_key = "not a key"\n', "[webhooks.sendgrid] public_key must be the base64 ECDSA key"),
    ('[webhooks.sendgrid]\npublic_key = "aGVsbG8gd29ybGQ="\n', "[webhooks.sendgrid] public_key must be"),
])
def test_files_and_keys_read_later_are_checked_at_start(tmp_path, extra, message):
    path = tmp_path / "config.toml"
    path.write_text(NEWSLETTER + extra)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(path)


@pytest.mark.parametrize("key, value", [
    ("from_email", "news@example.org\\r\\nBcc: all@example.net"), ("from_email", "news@example.org\\n"),
    ("from_email", "news@example.org\\r"), ("reply_to", "editor@example.org\\n"), ("from_email", "news@example.org\\t"),
])
def test_a_sender_with_a_line_break_is_refused(tmp_path, key, value):
    path = tmp_path / "config.toml"
    path.write_text(re.sub(rf'(?m)^{key} = .*$', lambda _: f'{key} = "{value}"', NEWSLETTER))
    with pytest.raises(ConfigError, match=re.escape(f"[newsletter] {key} must be an email address")):
        load_settings(path)


def test_a_real_key_and_folder_are_fine(tmp_path):
    (tmp_path / "mine").mkdir()
    path = tmp_path / "config.toml"
    path.write_text(NEWSLETTER + '[compose]\ntemplates_dir = "mine"\n'
                    f'[webhooks.sendgrid]\npublic_key = "{Signer().public_key}"\n')
    settings = load_settings(path)
    assert settings.compose.templates_dir == tmp_path / "mine"


def test_the_service_does_not_start_without_its_templates(web_settings, tmp_path):
    import dataclasses

    from mailer.web import create_app

    missing = dataclasses.replace(web_settings, compose=dataclasses.replace(
        web_settings.compose, templates_dir=tmp_path / "no-such-folder"))
    with pytest.raises(ConfigError, match=re.escape(f"[compose] templates_dir: no such folder {tmp_path}")):
        create_app(missing)
