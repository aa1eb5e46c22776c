"""config.toml + environment -> frozen settings; nothing else in the project reads either.

Every other module takes the settings objects it needs as arguments. Tests derive variants with
`dataclasses.replace`, the way `email.policy` derives policies with `clone`.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from mailer.errors import ConfigError

ENV_CONFIG = "MAILER_CONFIG"
DEFAULT_CONFIG = "config.toml"
BACKENDS = ("outbox", "smtp", "sendgrid")


@dataclass(frozen=True)
class NewsletterSettings:
    name: str
    from_email: str
    from_name: str
    reply_to: str
    postal_address: str
    base_url: str


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = ""  # empty: a SQLite file next to the config file


@dataclass(frozen=True)
class SendGridSettings:
    api_key_env: str = "SENDGRID_API_KEY"
    host: str = "https://api.sendgrid.com"
    timeout: float = 30.0          # seconds; the library has none by default
    batch_size: int = 1000         # personalizations per request (SendGrid's maximum)
    max_retries: int = 6           # for 429, 5xx and timeouts


@dataclass(frozen=True)
class SmtpSettings:
    host: str = "127.0.0.1"
    port: int = 25
    username: str = ""
    password_env: str = "MAILER_SMTP_PASSWORD"
    starttls: bool = False
    tls: bool = False              # implicit TLS (port 465)
    timeout: float = 60.0
    return_path: str = ""          # VERP base, e.g. "bounces@news.example.org"; empty: from_email
    dkim_domain: str = ""
    dkim_selector: str = ""
    dkim_key_env: str = "MAILER_DKIM_PRIVATE_KEY"   # PEM text of the private key
    batch_size: int = 20           # messages per ledger batch, sent one by one over the connection
    connections: int = 2           # concurrent connections, each sending its part of a batch


@dataclass(frozen=True)
class DeliverySettings:
    backend: str = "outbox"
    outbox_dir: Path = Path("outbox")
    on_interrupted: str = "resend"  # what a rerun does with the batch in flight at a crash
    sendgrid: SendGridSettings = field(default_factory=SendGridSettings)
    smtp: SmtpSettings = field(default_factory=SmtpSettings)


@dataclass(frozen=True)
class ScheduleSettings:
    day: str = "1st tue"           # APScheduler CronTrigger `day` expression
    time: str = "09:00"
    timezone: str = "America/New_York"


@dataclass(frozen=True)
class BounceSettings:
    soft_bounce_limit: int = 3
    soft_bounce_window_days: int = 30


@dataclass(frozen=True)
class SendGridWebhookSettings:
    public_key: str = ""           # base64 DER, as SendGrid shows it (public, so not a secret)
    max_age_seconds: int = 600


@dataclass(frozen=True)
class WebhookSettings:
    sendgrid: SendGridWebhookSettings = field(default_factory=SendGridWebhookSettings)


@dataclass(frozen=True)
class WebSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    confirm_resend_minutes: int = 10   # at most one confirmation mail per membership in this time
    confirm_link_days: int = 7         # a confirmation link expires (unsubscribe links never do)
    subscribe_burst: int = 5           # per client IP: form posts at once ...
    subscribe_per_hour: int = 30       # ... and sustained
    admin_session_hours: int = 12      # an /admin login lasts this long
    admin_login_burst: int = 5         # login attempts at once, per client address and per user name ...
    admin_login_per_hour: int = 20     # ... and sustained


@dataclass(frozen=True)
class ComposeSettings:
    templates_dir: Path = Path("templates")
    issues_dir: Path = Path("issues")


@dataclass(frozen=True)
class Settings:
    path: Path                     # the config file itself
    newsletter: NewsletterSettings
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
    bounces: BounceSettings = field(default_factory=BounceSettings)
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    web: WebSettings = field(default_factory=WebSettings)
    compose: ComposeSettings = field(default_factory=ComposeSettings)
    secret_key_env: str = "MAILER_SECRET_KEY"

    @property
    def root(self) -> Path:
        return self.path.parent


def secret(env_name: str, *, key: str) -> str:
    """The secret in environment variable `env_name`, which config key `key` names."""
    value = os.environ.get(env_name, "")
    if not value:
        raise ConfigError(f"{key} names the environment variable {env_name}, which is not set")
    return value


def config_path(explicit: str | os.PathLike | None = None) -> Path:
    """--config, else $MAILER_CONFIG, else ./config.toml."""
    return Path(explicit or os.environ.get(ENV_CONFIG) or DEFAULT_CONFIG).resolve()


def load_settings(path: str | os.PathLike | None = None) -> Settings:
    """Read and check the config file; a wrong or missing key raises ConfigError naming it."""
    path = config_path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path} (use --config or {ENV_CONFIG})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text") from exc
    if "newsletter" not in data:
        raise ConfigError(f"{path}: missing section [newsletter]")
    data = {**data, "path": path}
    settings = _build(Settings, data, "", path.parent)
    _check(settings)
    return settings


def _build(cls, data: dict, where: str, root: Path):
    if not isinstance(data, dict):
        raise ConfigError(f"[{where}] must be a table")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown key {_key(where, unknown[0])}")
    values = {}
    for f in dataclasses.fields(cls):
        key = _key(where, f.name)
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"missing key {key}")
            if hints[f.name] is Path or dataclasses.is_dataclass(hints[f.name]):
                # defaults are relative to the config file's folder too, like written values
                default = f.default if f.default is not dataclasses.MISSING else {}
                values[f.name] = _value(hints[f.name], default, key, f"{where}.{f.name}".strip("."), root)
            continue
        values[f.name] = _value(hints[f.name], data[f.name], key, f"{where}.{f.name}".strip("."), root)
    return cls(**values)


def _value(kind, raw, key: str, where: str, root: Path):
    if dataclasses.is_dataclass(kind):
        return _build(kind, raw, where, root)
    if kind is Path:
        if not isinstance(raw, (str, Path)):
            raise ConfigError(f"{key} must be a path string")
        p = Path(raw).expanduser()
        return p if p.is_absolute() else (root / p)
    if kind is float and isinstance(raw, int) and not isinstance(raw, bool):
        return float(raw)
    if kind is int and isinstance(raw, bool) or not isinstance(raw, kind):
        raise ConfigError(f"{key} must be {kind.__name__}, not {type(raw).__name__} ({raw!r})")
    return raw


def _key(where: str, name: str) -> str:
    return f"[{where}] {name}" if where else name


def _check(s: Settings) -> None:
    if s.delivery.backend not in BACKENDS:
        raise ConfigError(f"[delivery] backend must be one of {', '.join(BACKENDS)}, not {s.delivery.backend!r}")
    if s.delivery.on_interrupted not in ("resend", "skip"):
        raise ConfigError(f"[delivery] on_interrupted must be 'resend' or 'skip', not {s.delivery.on_interrupted!r}")
    if not s.newsletter.base_url.startswith(("http://", "https://")):
        raise ConfigError(f"[newsletter] base_url must start with http:// or https://, not {s.newsletter.base_url!r}")
    if not 1 <= s.delivery.sendgrid.batch_size <= 1000:
        raise ConfigError("[delivery.sendgrid] batch_size must be between 1 and 1000")
    if s.delivery.smtp.batch_size < 1:
        raise ConfigError("[delivery.smtp] batch_size must be at least 1")
    if s.delivery.smtp.connections < 1:
        raise ConfigError("[delivery.smtp] connections must be at least 1")
    for key, address in (("from_email", s.newsletter.from_email), ("reply_to", s.newsletter.reply_to)):
        if "@" not in address:
            raise ConfigError(f"[newsletter] {key} must be an email address, not {address!r}")


def database_url(settings: Settings) -> str:
    """[database] url, with a relative SQLite path resolved against the config file's folder."""
    url = settings.database.url or "sqlite:///mailer.db"
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != "sqlite:///:memory:":
        return prefix + str(settings.root / url[len(prefix):])
    return url
