"""Settings -> every check, in the order a sender would fix them; the exit code they make."""

from __future__ import annotations

from collections.abc import Sequence

import dns.resolver

from mailer.config import Settings
from mailer.doctor import reach, records
from mailer.doctor.result import Check, Status, failed, warned
from mailer.doctor.spf import Path
from mailer.errors import ConfigError
from mailer.resolver import make_resolver

SENDGRID_SPF = "sendgrid.net"      # SendGrid's documented SPF include


def doctor_resolver(settings: Settings) -> dns.resolver.Resolver:
    """`[doctor] nameservers`, else `[dns] nameservers`, else the system's."""
    return make_resolver(settings.doctor.nameservers or settings.dns.nameservers, settings.doctor.timeout)


def sending_path(settings: Settings) -> Path | None:
    """What SPF must allow: the relay's addresses, SendGrid's include, or nothing (outbox)."""
    if settings.delivery.backend == "sendgrid":
        return Path(include=SENDGRID_SPF)
    if settings.delivery.backend == "smtp":
        return Path(addresses=reach.relay_addresses(settings.delivery.smtp.host))
    return None


def return_path_domain(settings: Settings) -> str | None:
    """Where bounces go: our VERP return path over SMTP; SendGrid's own otherwise (None)."""
    if settings.delivery.backend != "smtp":
        return None
    return records.domain_of(settings.delivery.smtp.return_path or settings.newsletter.from_email)


def run_checks(settings: Settings, resolver: dns.resolver.Resolver | None = None) -> list[Check]:
    resolver = resolver or doctor_resolver(settings)
    from_domain = records.domain_of(settings.newsletter.from_email)
    checks = _spf(resolver, settings, from_domain)
    checks += records.dkim_checks(resolver, settings)
    checks.append(records.dmarc_check(resolver, from_domain))
    bounce_domain = return_path_domain(settings)
    if bounce_domain:
        checks.append(records.mx_check(resolver, bounce_domain))
    checks.append(reach.one_click_check(settings))
    checks += _path(settings)
    checks.append(reach.secret_key_check(settings))
    return checks


def _spf(resolver, settings: Settings, from_domain: str) -> list[Check]:
    try:
        path = sending_path(settings)
    except ConfigError as exc:
        return [failed("SPF", str(exc), "set [delivery.smtp] host to the relay's name or address")]
    checks = [records.spf_check(resolver, from_domain, path, "From domain")]
    bounce_domain = return_path_domain(settings)
    if bounce_domain and bounce_domain != from_domain:
        checks.append(records.spf_check(resolver, bounce_domain, path, "return-path domain"))
    return checks


def _path(settings: Settings) -> list[Check]:
    backend = settings.delivery.backend
    checks: list[Check | None] = []
    if backend == "smtp":
        checks.append(reach.relay_check(settings))
    elif backend == "sendgrid":
        checks.append(reach.sendgrid_check(settings))
    else:
        checks.append(warned("delivery", f"[delivery] backend is {backend}: messages are written to files, "
                             "nothing is delivered", 'set [delivery] backend = "smtp" or "sendgrid"'))
    checks.append(reach.imap_check(settings))
    return [c for c in checks if c is not None]


def exit_code(checks: Sequence[Check]) -> int:
    """0 when nothing failed (warnings allowed), else 1."""
    return 1 if any(c.status is Status.FAIL for c in checks) else 0
