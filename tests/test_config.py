"""config.toml -> Settings: every wrong key is named by its TOML path."""

from __future__ import annotations

import pytest

from mailer.config import database_url, load_settings
from mailer.errors import ConfigError


def test_repo_config_loads(repo):
    s = load_settings(repo / "config.toml")
    assert s.newsletter.name == "CRANK Call"
    assert s.delivery.backend == "outbox"
    assert s.delivery.outbox_dir == repo / "outbox"
    assert database_url(s) == f"sqlite:///{repo / 'mailer.db'}"
    assert s.bounces.soft_bounce_limit == 3
    assert s.webhooks.sendgrid.max_age_seconds == 600


NEWSLETTER = """[newsletter]
name = "CRANK Call"
from_email = "news@example.org"
from_name = "CRANK Call"
reply_to = "editor@example.org"
postal_address = "1 Example St"
base_url = "https://news.example.org"
"""

BAD = [
    ('[delivery]\nbackend = "pigeon"\n', "[delivery] backend"),
    ('[delivery]\nbackned = "outbox"\n', "unknown key [delivery] backned"),
    ('[delivery.smtp]\nport = "25"\n', "[delivery.smtp] port must be int"),
    ('[delivery.smtp]\nstarttls = 1\n', "[delivery.smtp] starttls must be bool"),
    ('[bounces]\nsoft_bounce_limit = true\n', "[bounces] soft_bounce_limit must be int"),
    ('[delivery]\non_interrupted = "maybe"\n', "[delivery] on_interrupted"),
    ('[delivery]\nretry_hours = -1\n', "[delivery] retry_hours must be between 0 and 168"),
    ('[delivery]\nretry_first_seconds = 0\n', "[delivery] retry_first_seconds must be between 1 and 3,600"),
    ('[delivery]\nretry_wait_seconds = 7200\n', "[delivery] retry_wait_seconds must be between 0 and 3,600"),
    ('[delivery.smtp]\nconnect_retry_seconds = 3600\n', "[delivery.smtp] connect_retry_seconds must be between"),
    ('[delivery.smtp]\nca_file = "no-such.pem"\n', "[delivery.smtp] ca_file: no such file"),
    ('[delivery.smtp]\nehlo_name = "my host"\n', "[delivery.smtp] ehlo_name must be a host name"),
    ('[schedule]\neditors = ["ed@example.org", "ed@localhost"]\n',
     "[schedule] editors must be email addresses, not 'ed@localhost'"),
    ('[schedule]\neditors = ["jöhn@example.org"]\n', "[schedule] editors must be email addresses"),
    ('[web]\nblocked_domains = ["@spam.example"]\n', "[web] blocked_domains must be domain names"),
    ('[web]\nblocked_domains = ["spam example"]\n', "[web] blocked_domains must be domain names"),
    ('[web]\nblocked_domains = "spam.example"\n', "[web] blocked_domains must be a list of strings"),
    ('[web]\nsignup_challenge = "yes"\n', "[web] signup_challenge must be bool"),
    ('[web]\ncheck_mx = 1\n', "[web] check_mx must be bool"),
    ('[dns]\nnameservers = ["127.0.0.1:99999"]\n', "[dns] nameservers must be \"HOST\" or \"HOST:PORT\""),
    ('[dns]\nnameservers = [":53"]\n', "[dns] nameservers must be"),
    ('[doctor]\nnameservers = ["127.0.0.1:0"]\n', "[doctor] nameservers must be \"HOST\" or \"HOST:PORT\""),
]


OUT_OF_RANGE = [
    # (extra TOML, the error's start) - every numeric key has a range, checked at load time
    ("[web]\nsubscribe_burst = 0\n", "[web] subscribe_burst must be between 1 and 10,000, not 0"),
    ("[web]\nconfirm_link_days = 100000000\n", "[web] confirm_link_days must be between 1 and 365"),
    ("[web]\nconfirm_resend_minutes = -1\n", "[web] confirm_resend_minutes must be between"),
    ("[web]\nsubscribe_per_hour = 0\n", "[web] subscribe_per_hour must be between"),
    ("[web]\nport = 70000\n", "[web] port must be between 0 and 65,535"),
    ("[bounces]\nsoft_bounce_limit = 0\n", "[bounces] soft_bounce_limit must be between"),
    ("[bounces]\nsoft_bounce_window_days = 99999999\n", "[bounces] soft_bounce_window_days must be between"),
    ("[webhooks.sendgrid]\nmax_age_seconds = 0\n", "[webhooks.sendgrid] max_age_seconds must be between"),
    ("[delivery.sendgrid]\nbatch_size = 1001\n", "[delivery.sendgrid] batch_size must be between 1 and 1,000"),
    ("[delivery.sendgrid]\nmax_retries = -1\n", "[delivery.sendgrid] max_retries must be between"),
    ("[delivery.sendgrid]\ntimeout = 0\n", "[delivery.sendgrid] timeout must be between"),
    ("[delivery.smtp]\nport = 0\n", "[delivery.smtp] port must be between"),
    ("[delivery.smtp]\nconnections = 0\n", "[delivery.smtp] connections must be between"),
    ("[delivery.smtp]\nbatch_size = 0\n", "[delivery.smtp] batch_size must be between"),
    ("[delivery.smtp]\ntimeout = 1e9\n", "[delivery.smtp] timeout must be between"),
    ("[web]\nchallenge_max_counter = 1\n", "[web] challenge_max_counter must be between 2 and"),
    ("[web]\nchallenge_cost = 0\n", "[web] challenge_cost must be between 1 and"),
    ("[web]\nmin_fill_seconds = -1\n", "[web] min_fill_seconds must be between 0 and"),
    ("[dns]\ntimeout = 0\n", "[dns] timeout must be between"),
]


@pytest.mark.parametrize("language, good", [("fr", True), ("es", True), ("pt", False), ("FR", False), ("", False)])
def test_the_newsletters_language_is_a_shipped_one(tmp_path, language, good):
    path = tmp_path / "config.toml"
    path.write_text(NEWSLETTER + f'language = "{language}"\n')
    if good:
        assert load_settings(path).newsletter.language == language
    else:
        with pytest.raises(ConfigError, match=r"\[newsletter\] language must be one of en, fr, de, es"):
            load_settings(path)


def test_nameservers_and_blocked_domains_as_written(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(NEWSLETTER + '[web]\nblocked_domains = ["Spam.Example", "bücher.example"]\n'
                    '[dns]\nnameservers = ["127.0.0.1:5353", "::1", "[::1]:53", "192.0.2.53"]\n')
    settings = load_settings(path)
    assert settings.dns.nameservers == ("127.0.0.1:5353", "::1", "[::1]:53", "192.0.2.53")
    assert load_settings(tmp_path / "config.toml").newsletter.language == "en"      # the default


@pytest.mark.parametrize("extra, message", BAD + OUT_OF_RANGE)
def test_bad_keys_are_named(tmp_path, extra, message):
    path = tmp_path / "config.toml"
    path.write_text(NEWSLETTER + extra)
    with pytest.raises(ConfigError, match=__import__("re").escape(message)):
        load_settings(path)


@pytest.mark.parametrize("key, value", [("from_email", "news"), ("from_email", "news@localhost"),
                                        ("reply_to", "Editor <editor@example.org>"), ("reply_to", "jöhn@example.org")])
def test_sender_addresses_are_checked_as_the_send_writes_them(tmp_path, key, value):
    path = tmp_path / "config.toml"
    path.write_text(NEWSLETTER.replace(f'{key} = "', f'{key} = "{value}"  # ', 1))
    message = f"[newsletter] {key} must be an email address, not {value!r}"
    with pytest.raises(ConfigError, match=__import__("re").escape(message)):
        load_settings(path)


def test_missing_required_key(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[newsletter]\nname = "X"\n')
    with pytest.raises(ConfigError, match=r"missing key \[newsletter\] from_email"):
        load_settings(path)


def test_missing_file_and_env(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "nope.toml")
    monkeypatch.setenv("MAILER_CONFIG", str(tmp_path / "env.toml"))
    with pytest.raises(ConfigError, match=r"env\.toml"):
        load_settings()


def test_relative_paths_resolve_against_config_folder(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(NEWSLETTER + '[delivery]\noutbox_dir = "out/box"\n[database]\nurl = "sqlite:///d.db"\n')
    s = load_settings(path)
    assert s.delivery.outbox_dir == tmp_path / "out" / "box"
    assert database_url(s) == f"sqlite:///{tmp_path / 'd.db'}"


def test_default_paths_resolve_against_config_folder(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(NEWSLETTER)
    s = load_settings(path)
    assert s.compose.templates_dir == tmp_path / "templates"
    assert s.compose.issues_dir == tmp_path / "issues"
    assert s.delivery.outbox_dir == tmp_path / "outbox"


def test_every_numeric_key_declares_its_default_and_range_together():
    import dataclasses
    import typing

    from mailer.config import Settings, key_range

    def numeric(cls, where):
        for f in dataclasses.fields(cls):
            kind = typing.get_type_hints(cls)[f.name]
            if dataclasses.is_dataclass(kind):
                yield from numeric(kind, f"{where}.{f.name}".strip("."))
            elif kind in (int, float):
                yield where, f

    keys = list(numeric(Settings, ""))
    assert len(keys) >= 37  # a floor, not a census: every branch that adds a key would conflict here
    for where, f in keys:
        low, high = f.metadata["range"]
        assert low <= f.default <= high, (where, f.name)
        assert key_range(where, f.name) == (low, high)


def test_the_store_gets_the_configs_bounce_limits(repo):
    from subscribers.policy import Limits

    assert load_settings(repo / "config.toml").bounces.limits() == Limits(3, 30)


def test_range_error_on_the_command_line(tmp_path, cli):
    path = tmp_path / "config.toml"
    path.write_text(NEWSLETTER + "[web]\nsubscribe_burst = 0\n")
    result = cli("--config", str(path), "lists")
    assert result.code != 0
    assert result.err.strip() == "error: [web] subscribe_burst must be between 1 and 10,000, not 0"


@pytest.mark.parametrize("lease", ["1", "3601"])
def test_a_command_line_override_has_the_keys_range(tmp_path, cli, lease):
    path = tmp_path / "config.toml"
    path.write_text(NEWSLETTER)
    result = cli("--config", str(path), "worker", "--lease", lease)
    assert result.code == 2 and "--lease" in result.err and "2<=x<=3600" in result.err


def test_ca_file_resolves_against_config_folder(tmp_path):
    (tmp_path / "relay-ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    path = tmp_path / "config.toml"
    path.write_text(NEWSLETTER + '[delivery.smtp]\nca_file = "relay-ca.pem"\nehlo_name = "news.example.org"\n')
    s = load_settings(path)
    assert s.delivery.smtp.ca_file == str(tmp_path / "relay-ca.pem") and s.delivery.retry_hours == 24
