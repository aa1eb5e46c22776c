"""config.toml + environment -> frozen settings; nothing else in the project reads either.

Every other module takes the settings objects it needs as arguments. Tests derive variants with
`dataclasses.replace`, the way `email.policy` derives policies with `clone`.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import secrets
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mailer.errors import ConfigError
from mailer.locale import LANGUAGES
from mailer.send.deliver.registry import BACKENDS
from subscribers.normalize import is_sendable

ENV_CONFIG = "MAILER_CONFIG"
DEFAULT_CONFIG = "config.toml"


def setting(default: float, low: float, high: float):
    """A numeric key's default and its allowed range (inclusive), declared together: the range is
    checked when the config is read, so a typo fails at load time, named, instead of reaching the
    database or a reader as a 500 (a huge confirm_link_days overflowed the date arithmetic;
    subscribe_burst = 0 refused every signup)."""
    return field(default=default, metadata={"range": (low, high)})


@dataclass(frozen=True)
class NewsletterSettings:
    name: str
    from_email: str
    from_name: str
    reply_to: str
    postal_address: str
    base_url: str
    privacy_url: str = ""          # the privacy notice; [tracking] clicks = "reader" needs it (docs/tracking.md)
    # the readers' pages and system mails when no list decides and the browser asks for no
    # language we ship (mailer/i18n.py); a list's own language (`mailer lists create --language`) comes first
    language: str = "en"


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = ""  # empty: a SQLite file next to the config file


@dataclass(frozen=True)
class SendGridSettings:
    api_key_env: str = "SENDGRID_API_KEY"
    host: str = "https://api.sendgrid.com"
    timeout: float = setting(30.0, 1, 600)       # seconds; the library has none by default
    batch_size: int = setting(1000, 1, 1000)     # personalizations per request (SendGrid's maximum)
    max_retries: int = setting(6, 0, 20)         # for 429, 5xx and timeouts
    # `mailer worker`s share this budget (mailer/send/ratelimit.py); 0: none
    requests_per_second: float = setting(100.0, 0, 10_000)


@dataclass(frozen=True)
class SmtpSettings:
    host: str = "127.0.0.1"
    port: int = setting(25, 1, 65535)
    username: str = ""
    password_env: str = "MAILER_SMTP_PASSWORD"
    starttls: bool = False
    tls: bool = False              # implicit TLS (port 465)
    timeout: float = setting(60.0, 1, 3600)
    return_path: str = ""          # VERP base, e.g. "bounces@news.example.org"; empty: from_email
    dkim_domain: str = ""
    dkim_selector: str = ""
    dkim_key_env: str = "MAILER_DKIM_PRIVATE_KEY"   # PEM text of the private key
    batch_size: int = setting(20, 1, 10_000)     # messages per ledger batch, sent one by one over the connection
    connections: int = setting(2, 1, 64)         # concurrent connections, each sending its part of a batch
    ehlo_name: str = ""            # the name we give in EHLO; empty: this host's FQDN
    ca_file: str = ""              # PEM file of CAs to trust for the relay's certificate; empty: the system's
    connect_retry_seconds: float = setting(60.0, 0, 600)   # keep retrying a refused/unreachable relay (backoff)
    # processes that DKIM-sign a large send; 0: one less than the CPUs (at least 1); -1: none
    dkim_processes: int = setting(0, -1, 64)


class OnInterrupted(enum.StrEnum):
    """What a rerun does with a batch that was in flight at a crash (docs/exactly-once.md)."""

    RESEND = "resend"              # the provider may have taken it: some readers may get two copies
    SKIP = "skip"                  # nobody gets two copies; some may get none


@dataclass(frozen=True)
class PacingSettings:
    """[delivery.pacing]: messages per second per mailbox provider (0: no limit), readers grouped by
    their domain's MX (mailer/send/pacing.py, docs/deliverability.md). Any limit, or `warmup`,
    also interleaves the providers through the send instead of one domain's readers in a burst."""
    gmail: float = setting(0.0, 0, 10_000)        # gmail.com, googlemail.com and Google-hosted domains
    microsoft: float = setting(0.0, 0, 10_000)    # outlook.com, hotmail, live, msn and Microsoft 365 domains
    yahoo: float = setting(0.0, 0, 10_000)        # yahoo, aol, ymail and Yahoo-hosted domains
    other: float = setting(0.0, 0, 10_000)
    hold_seconds: float = setting(60.0, 0, 3600)  # a "rate limited" answer: that provider waits this long
    lookups: int = setting(500, 0, 100_000)       # domains whose MX a send looks up (most readers first)
    warmup: bool = False                          # a new sending domain: each day's sends capped on a ramp
    warmup_first_day: int = setting(1000, 1, 10_000_000)   # the first day's cap; then 2x, 5x, 10x, doubling

    @property
    def on(self) -> bool:
        return self.warmup or any((self.gmail, self.microsoft, self.yahoo, self.other))


@dataclass(frozen=True)
class DeliverySettings:
    backend: str = "outbox"
    outbox_dir: Path = Path("outbox")
    on_interrupted: OnInterrupted = OnInterrupted.RESEND  # what a rerun does with the batch in flight at a crash
    retry_hours: float = setting(24.0, 0, 24 * 7)        # a reader refused temporarily (SMTP 4xx) is retried this long
    retry_first_seconds: float = setting(60.0, 1, 3600)  # first wait before retrying a deferred reader; doubling
    retry_wait_seconds: float = setting(600.0, 0, 3600)  # a run waits itself for deferred readers due within this long
    # a worker silent this long is presumed dead; its batches are reclaimed
    worker_lease_seconds: float = setting(60.0, 2, 3600)
    # a statement failing during a send (database restarting, SQLite locked, disk full) is retried this long
    database_retry_seconds: float = setting(300.0, 0, 3600)
    journal_dir: Path = Path("journal")   # results the database would not take, applied by the next run
    sendgrid: SendGridSettings = field(default_factory=SendGridSettings)
    smtp: SmtpSettings = field(default_factory=SmtpSettings)
    pacing: PacingSettings = field(default_factory=PacingSettings)


@dataclass(frozen=True)
class ScheduleSettings:
    day: str = "1st tue"           # APScheduler CronTrigger `day` expression
    time: str = "09:00"
    timezone: str = "America/New_York"
    list: str = ""                 # the list that gets each scheduled issue
    misfire_grace_minutes: int = setting(60, 0, 7 * 24 * 60)  # how late a slot may still send (scheduler down then)
    proof_hours_before: int = setting(24, 0, 24 * 14)   # a proof to the editors this long before the slot; 0: none
    editors: tuple[str, ...] = ()  # proofs and the scheduler's notices (nothing scheduled, missed)


@dataclass(frozen=True)
class ImapSettings:
    """The mailbox the VERP return path delivers to, for `mailer bounces fetch`."""
    host: str = ""
    port: int = setting(993, 1, 65535)
    tls: bool = True               # implicit TLS (993); false: plain IMAP, STARTTLS when offered
    username: str = ""
    password_env: str = "MAILER_IMAP_PASSWORD"
    folder: str = "INBOX"
    processed_folder: str = "Processed"   # created when missing; processed mail moves here
    failed_folder: str = "mailer-failed"  # created when missing; mail that crashed the reader moves here
    ca_file: str = ""              # PEM file of CAs to trust for the server's certificate; empty: the system's
    allow_plaintext_login: bool = False   # tls = false and no STARTTLS: send the password in clear anyway


@dataclass(frozen=True)
class BounceSettings:
    soft_bounce_limit: int = setting(3, 1, 100)        # soft bounces within the window that make an address bounced
    soft_bounce_window_days: int = setting(30, 1, 3650)
    imap: ImapSettings = field(default_factory=ImapSettings)

    def limits(self):
        """The store's policy limits (subscribers.policy.Limits) from these settings: subscribers
        never reads mailer's config, so this is where [bounces] becomes its value."""
        from subscribers.policy import (
            Limits,  # SQLAlchemy: not for commands that never need it
        )

        return Limits(soft_bounce_limit=self.soft_bounce_limit,
                      soft_bounce_window_days=self.soft_bounce_window_days)


@dataclass(frozen=True)
class SendGridWebhookSettings:
    public_key: str = ""           # base64 DER, as SendGrid shows it (public, so not a secret)
    max_age_seconds: int = setting(600, 1, 86_400)


@dataclass(frozen=True)
class OutgoingWebhook:
    """One `[[webhooks.out]]` table: where to post which events, signed with the Standard
    Webhooks secret (`whsec_...`) in the environment variable `secret_env` (docs/api.md)."""
    url: str
    events: tuple[str, ...]
    secret_env: str


@dataclass(frozen=True)
class WebhookSettings:
    sendgrid: SendGridWebhookSettings = field(default_factory=SendGridWebhookSettings)
    out: tuple[OutgoingWebhook, ...] = ()


@dataclass(frozen=True)
class WebSettings:
    host: str = "127.0.0.1"
    port: int = setting(8000, 0, 65535)
    confirm_resend_minutes: int = setting(10, 1, 10_080)   # at most one confirmation mail per membership in this time
    confirm_link_days: int = setting(7, 1, 365)            # a confirmation link expires (unsubscribe links never do)
    subscribe_burst: int = setting(5, 1, 10_000)           # per client IP: form posts at once ...
    subscribe_per_hour: int = setting(30, 1, 1_000_000)    # ... and sustained
    admin_session_hours: int = setting(12, 1, 24 * 30)     # an /admin login lasts this long
    # login attempts per client address and per user name: at once ...
    admin_login_burst: int = setting(5, 1, 1000)
    admin_login_per_hour: int = setting(20, 1, 100_000)    # ... and sustained
    # password checks (argon2: 64 MiB, a fraction of a second each) running at once; more answer 503
    admin_login_checks: int = setting(2, 1, 64)
    # The public signup's defences (docs/signup.md): a proof-of-work the reader's browser solves
    # while they type (ALTCHA), a honeypot field, a minimum time to fill the form, and refusals of
    # throwaway and mail-less domains.
    signup_challenge: bool = True
    challenge_cost: int = setting(1000, 1, 1_000_000)      # PBKDF2 iterations per attempt ...
    challenge_max_counter: int = setting(800, 2, 10_000_000)  # ... and attempts: drawn in [half, all]
    challenge_minutes: int = setting(30, 1, 24 * 60)        # a challenge (and its solution) expires
    min_fill_seconds: float = setting(2.0, 0, 600)          # a form sent sooner is sent again by a person
    blocked_domains: tuple[str, ...] = ()                   # refused like throwaway domains (and their subdomains)
    check_mx: bool = False                                  # refuse a domain with no MX, A or AAAA record


@dataclass(frozen=True)
class ApiSettings:
    """The REST API under /api/v1 (docs/api.md): requests per token, at once and sustained."""
    rate_burst: int = setting(60, 1, 100_000)
    rate_per_hour: int = setting(3600, 1, 10_000_000)


@dataclass(frozen=True)
class DnsSettings:
    """The resolver every DNS question of ours goes to ([web] check_mx): the system's, unless
    `nameservers` names others as "HOST" or "HOST:PORT" (a local cache, or the tests' own server)."""
    nameservers: tuple[str, ...] = ()
    timeout: float = setting(3.0, 0.1, 60)                   # seconds for one question, all tries included


@dataclass(frozen=True)
class DoctorSettings:
    """`mailer doctor` (mailer/doctor/): the resolvers it asks about SPF, DKIM, DMARC and MX, as
    "HOST" or "HOST:PORT"; empty: `[dns] nameservers` (and so the system's when that is empty too)."""
    nameservers: tuple[str, ...] = ()
    timeout: float = setting(5.0, 0.1, 60)                   # seconds for one question, and for each server it tries


class ClickTracking(enum.StrEnum):
    """What `[tracking] clicks` keeps (docs/tracking.md)."""

    OFF = "off"                    # links go straight to their sites
    AGGREGATE = "aggregate"        # per-link counts only; no record of who clicked
    READER = "reader"              # also who clicked (needs [newsletter] privacy_url)


@dataclass(frozen=True)
class TrackingSettings:
    clicks: ClickTracking = ClickTracking.OFF
    opens: bool = False            # a 1x1 image per copy: a lower bound at best (docs/tracking.md)
    keep_days: int = setting(90, 1, 3650)           # who clicked is deleted after this; the counts stay
    sweep_seconds: float = setting(2.0, 0, 60)      # several links of one copy within this: a machine
    after_accept_seconds: float = setting(10.0, 0, 600)   # a request this soon after the copy went: a machine

    @property
    def on(self) -> bool:
        return self.clicks is not ClickTracking.OFF or self.opens

    @property
    def reader(self) -> bool:
        return self.clicks is ClickTracking.READER


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
    tracking: TrackingSettings = field(default_factory=TrackingSettings)
    dns: DnsSettings = field(default_factory=DnsSettings)
    doctor: DoctorSettings = field(default_factory=DoctorSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
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


SECRET_KEY_FILE = ".mailer-secret"   # next to the config file; see secret_key()


def secret_key_file(settings: Settings) -> Path:
    return settings.root / SECRET_KEY_FILE


def secret_key(settings: Settings) -> str:
    """The key that signs unsubscribe links and keys forget hashes: the environment variable
    that `secret_key_env` names, else the key file next to the config file (`mailer init` or
    the first `mailer send` writes it). It must outlive the shell: every link mailed depends on it."""
    value = os.environ.get(settings.secret_key_env, "")
    if value:
        return value
    path = secret_key_file(settings)
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ConfigError(f"no secret key: {settings.secret_key_env} is not set and there is no {path}; "
                          f"run `mailer init` to make one (or set {settings.secret_key_env})") from None
    except OSError as exc:
        raise ConfigError(f"cannot read the secret key file {path}: {exc.strerror or exc}") from exc
    if not value:
        raise ConfigError(f"the secret key file {path} is empty; restore it from your backup, or delete it "
                          "and run `mailer init` (links already mailed will stop working)")
    return value


def ensure_secret_key(settings: Settings) -> Path | None:
    """Write a new random key file (mode 0600) unless the environment or a key file has a key.
    Returns the file's path when it was written now, else None."""
    if os.environ.get(settings.secret_key_env) or secret_key_file(settings).exists():
        return None
    path = secret_key_file(settings)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:      # another process made it a moment ago: theirs is the key
        return None
    except OSError as exc:
        raise ConfigError(f"cannot write the secret key file {path}: {exc.strerror or exc}") from exc
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(secrets.token_urlsafe(32) + "\n")
    return path


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
    return _resolve_ca_file(settings)


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
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return _choice(kind, raw, key)
    if typing.get_origin(kind) is tuple and dataclasses.is_dataclass(typing.get_args(kind)[0]):   # [[tables]]
        if not isinstance(raw, list):
            raise ConfigError(f"{key} must be an array of tables ([[{where}]])")
        return tuple(_build(typing.get_args(kind)[0], item, f"{where}.{i + 1}", root) for i, item in enumerate(raw))
    if typing.get_origin(kind) is tuple:  # a TOML array of strings
        if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
            raise ConfigError(f"{key} must be a list of strings, not {raw!r}")
        return tuple(raw)
    if kind is float and isinstance(raw, int) and not isinstance(raw, bool):
        return float(raw)
    if (kind is int and isinstance(raw, bool)) or not isinstance(raw, kind):
        raise ConfigError(f"{key} must be {kind.__name__}, not {type(raw).__name__} ({raw!r})")
    return raw


def _choice(kind: type[enum.Enum], raw, key: str):
    if not isinstance(raw, str):
        raise ConfigError(f"{key} must be str, not {type(raw).__name__} ({raw!r})")
    try:
        return kind(raw)
    except ValueError:
        names = " or ".join(repr(member.value) for member in kind)
        raise ConfigError(f"{key} must be {names}, not {raw!r}") from None


def _key(where: str, name: str) -> str:
    return f"[{where}] {name}" if where else name


def key_range(where: str, name: str) -> tuple[float, float]:
    """The allowed range of the numeric key `[where] name` (for a command-line override of it)."""
    section = Settings
    for part in where.split("."):
        section = typing.get_type_hints(section)[part]
    return next(f for f in dataclasses.fields(section) if f.name == name).metadata["range"]


def _check_ranges(section, where: str = "") -> None:
    """Every numeric key against the range its `setting` declares, section by section."""
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            _check_ranges(value, f"{where}.{f.name}".strip("."))
        elif "range" in f.metadata:
            low, high = f.metadata["range"]
            if not low <= value <= high:
                raise ConfigError(f"[{where}] {f.name} must be between {low:,} and {high:,}, not {value!r}")


def _check(s: Settings) -> None:
    _check_ranges(s)
    _check_webhooks_out(s.webhooks.out)
    if s.delivery.backend not in BACKENDS:
        raise ConfigError(f"[delivery] backend must be one of {', '.join(BACKENDS)}, not {s.delivery.backend!r}")
    if not s.newsletter.base_url.startswith(("http://", "https://")):
        raise ConfigError(f"[newsletter] base_url must start with http:// or https://, not {s.newsletter.base_url!r}")
    _check_send_edges(s)
    _check_tracking(s)
    for key, address in (("from_email", s.newsletter.from_email), ("reply_to", s.newsletter.reply_to)):
        # (a line break would start a header of its own; is_sendable alone forgives a trailing one)
        if not is_sendable(address) or any(ord(c) < 32 or ord(c) == 127 for c in address):
            raise ConfigError(f"[newsletter] {key} must be an email address, not {address!r}")
    _check_schedule(s.schedule)
    _check_languages(s)
    _check_files(s)


def _check_files(s: Settings) -> None:
    """What `mailer serve` reads later, checked now: a mistake is named at start."""
    key = s.webhooks.sendgrid.public_key
    if key and not _is_ec_public_key(key):
        raise ConfigError("[webhooks.sendgrid] public_key must be the base64 ECDSA key SendGrid shows "
                          "(Settings, Mail Settings, Signed Event Webhook), not "
                          f"{key[:16] + '...' if len(key) > 16 else key!r}")


def _is_ec_public_key(text: str) -> bool:
    import base64
    import binascii

    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    try:
        return isinstance(load_der_public_key(base64.b64decode(text, validate=True)), ec.EllipticCurvePublicKey)
    except (ValueError, binascii.Error, TypeError, UnsupportedAlgorithm):
        return False


def _check_webhooks_out(hooks: tuple[OutgoingWebhook, ...]) -> None:
    if not hooks:
        return
    # (SQLAlchemy: only for a config that has outgoing webhooks)
    from subscribers.outbox import EVENTS

    for i, hook in enumerate(hooks, 1):
        where = f"[[webhooks.out]] #{i}"
        if not hook.url.startswith(("https://", "http://")) or len(hook.url) > 2000:
            raise ConfigError(f"{where} url must be an http(s) URL, not {hook.url!r}")
        unknown = [e for e in hook.events if e not in EVENTS]
        if unknown or not hook.events:
            named = repr(unknown[0]) if unknown else "none"
            raise ConfigError(f"{where} events: {named} is not one of {', '.join(EVENTS)}")
        if not hook.secret_env:
            raise ConfigError(f"{where} secret_env must name the environment variable holding its whsec_ secret")


def _check_languages(s: Settings) -> None:
    """[newsletter] language among the shipped catalogs; [web] blocked_domains and [dns]
    nameservers written as the code reads them."""
    if s.newsletter.language not in LANGUAGES:
        raise ConfigError(f"[newsletter] language must be one of {', '.join(LANGUAGES)}, not {s.newsletter.language!r}")
    for domain in s.web.blocked_domains:
        if not domain or "@" in domain or not is_sendable(f"postmaster@{domain}"):
            raise ConfigError(f"[web] blocked_domains must be domain names such as \"mailinator.com\", not {domain!r}")
    for where, servers in (("dns", s.dns.nameservers), ("doctor", s.doctor.nameservers)):
        for server in servers:
            if nameserver_problem(server):
                raise ConfigError(f"[{where}] nameservers must be \"HOST\" or \"HOST:PORT\", not {server!r}")


def nameserver_problem(server: str) -> bool:
    """True when `server` is not written as "HOST" or "HOST:PORT" (mailer/resolver.py reads them)."""
    host, _, port = server.partition(":") if server.count(":") == 1 else (server, "", "")
    return not host or bool(port and not (port.isdigit() and 0 < int(port) < 65536))


def _check_schedule(s: ScheduleSettings) -> None:
    """The [schedule] values that need no APScheduler; `day` is checked where the trigger is built
    (mailer.schedule.slots.slot_trigger), so commands that never schedule do not import it."""
    try:
        ZoneInfo(s.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"[schedule] timezone must be an IANA time zone such as \"America/New_York\", "
                          f"not {s.timezone!r}") from None
    hour, _, minute = s.time.partition(":")
    if not (hour.isdigit() and minute.isdigit() and len(minute) == 2 and int(hour) < 24 and int(minute) < 60):
        raise ConfigError(f"[schedule] time must be HH:MM (24-hour), not {s.time!r}")
    for address in s.editors:
        if not is_sendable(address):
            raise ConfigError(f"[schedule] editors must be email addresses, not {address!r}")


def tracking_problem(s: Settings) -> str | None:
    """Why these settings may not track as they say, or None (checked at load and again by the send,
    which may be handed settings made in code)."""
    privacy = s.newsletter.privacy_url
    if privacy and not privacy.startswith(("https://", "http://")):
        return f"[newsletter] privacy_url must start with https:// or http://, not {privacy!r}"
    if s.tracking.clicks is ClickTracking.READER and not privacy:
        return ('[tracking] clicks = "reader" records who clicked: set [newsletter] privacy_url to the notice '
                'that tells readers so (or use clicks = "aggregate")')
    return None


def _check_tracking(s: Settings) -> None:
    problem = tracking_problem(s)
    if problem:
        raise ConfigError(problem)


def _check_send_edges(s: Settings) -> None:
    """The relay settings that are not numbers (numbers have their ranges; docs/exactly-once.md)."""
    d = s.delivery
    if d.smtp.ca_file and not (s.root / d.smtp.ca_file).is_file():
        raise ConfigError(f"[delivery.smtp] ca_file: no such file {s.root / d.smtp.ca_file}")
    imap = s.bounces.imap
    if imap.ca_file and not (s.root / imap.ca_file).is_file():
        raise ConfigError(f"[bounces.imap] ca_file: no such file {s.root / imap.ca_file}")
    if any(c in d.smtp.ehlo_name for c in " \t\r\n<>@"):
        raise ConfigError(f"[delivery.smtp] ehlo_name must be a host name, not {d.smtp.ehlo_name!r}")


def _resolve_ca_file(s: Settings) -> Settings:
    """[delivery.smtp] and [bounces.imap] ca_file relative to the config file's folder, like every
    other path."""
    smtp, imap = s.delivery.smtp, s.bounces.imap
    if smtp.ca_file and not Path(smtp.ca_file).is_absolute():
        smtp = dataclasses.replace(smtp, ca_file=str(s.root / smtp.ca_file))
        s = dataclasses.replace(s, delivery=dataclasses.replace(s.delivery, smtp=smtp))
    if imap.ca_file and not Path(imap.ca_file).is_absolute():
        imap = dataclasses.replace(imap, ca_file=str(s.root / imap.ca_file))
        s = dataclasses.replace(s, bounces=dataclasses.replace(s.bounces, imap=imap))
    return s


def database_url(settings: Settings) -> str:
    """[database] url, with a relative SQLite path resolved against the config file's folder."""
    url = settings.database.url or "sqlite:///mailer.db"
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != "sqlite:///:memory:":
        return prefix + str(settings.root / url[len(prefix):])
    return url


def check_templates(settings: Settings) -> None:
    """The service's start: its pages and mails come from [compose] templates_dir, so a missing
    folder is named now, not as a 500 on every page."""
    if not Path(settings.compose.templates_dir).is_dir():
        raise ConfigError(f"[compose] templates_dir: no such folder {settings.compose.templates_dir}")
