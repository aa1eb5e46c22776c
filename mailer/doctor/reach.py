"""The doors `mailer doctor` knocks on: the relay (EHLO, STARTTLS, its certificate) or SendGrid's
key, the one-click unsubscribe route, the IMAP bounce mailbox and the secret key file.

Nothing is sent: the relay gets EHLO, STARTTLS and QUIT (and a login when one is configured);
SendGrid gets `GET /v3/scopes`; the one-click route gets a POST with a token that is not one,
which the service answers 400 without changing anything.
"""

from __future__ import annotations

import ipaddress
import os
import smtplib
import socket
import ssl
import stat

import httpx

from mailer.config import Settings, secret, secret_key_file
from mailer.doctor.result import Check, failed, passed, warned
from mailer.doctor.spf import Address
from mailer.errors import ConfigError, MailerError
from mailer.events.imap import ImapBounces

TIMEOUT = 10.0
PROBE_TOKEN = "mailer-doctor-probe"    # not a token: the route answers 400 ("This link does not work")


def tls_context(ca_file: str = "") -> ssl.SSLContext:
    """Verifying context: `ca_file`'s CAs, else the system's (which honours $SSL_CERT_FILE)."""
    return ssl.create_default_context(cafile=ca_file or None)


def relay_addresses(host: str) -> tuple[Address, ...]:
    """The relay's addresses as this machine reaches it (the system's resolver, as smtplib uses)."""
    try:
        return (ipaddress.ip_address(host),)
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise ConfigError(f"[delivery.smtp] host {host!r} does not resolve: {exc}") from exc
    return tuple(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))


def relay_check(settings: Settings) -> Check:
    s = settings.delivery.smtp
    name, where = "relay", f"{s.host}:{s.port}"
    try:
        with _connect(s) as conn:
            code, _ = conn.ehlo()
            if code != 250:
                return failed(name, f"{where} answered EHLO with {code}", "check [delivery.smtp] host and port")
            tls = s.tls or _starttls(conn, s)
            if s.username:
                conn.login(s.username, secret(s.password_env, key="[delivery.smtp] password_env"))
    except ssl.SSLError as exc:
        return failed(name, f"{where}: TLS failed: {exc}", "the relay needs a valid certificate for its name "
                      "(or set [delivery.smtp] ca_file to the CA that signed it)")
    except smtplib.SMTPAuthenticationError as exc:
        return failed(name, f"{where} refused the login of {s.username!r}: {exc.smtp_code}",
                      f"check [delivery.smtp] username and ${s.password_env}")
    except (smtplib.SMTPException, OSError) as exc:
        return failed(name, f"cannot reach {where}: {exc}", "check [delivery.smtp] host and port, and that the "
                      "relay is up")
    except ConfigError as exc:
        return failed(name, str(exc), f"set ${s.password_env}")
    if tls:
        return passed(name, f"{where} answers EHLO; TLS with a valid certificate")
    if not _offers_tls(settings):
        return warned(name, f"{where} answers EHLO without STARTTLS (a relay on this machine)",
                      "fine on loopback; a relay elsewhere must offer STARTTLS")
    return failed(name, f"{where} answers EHLO but offers no STARTTLS: the password and mail cross in clear",
                  "turn on STARTTLS at the relay and set [delivery.smtp] starttls = true")


def _connect(s) -> smtplib.SMTP:
    name = s.ehlo_name or None
    if s.tls:
        return smtplib.SMTP_SSL(s.host, s.port, local_hostname=name, timeout=TIMEOUT, context=tls_context(s.ca_file))
    return smtplib.SMTP(s.host, s.port, local_hostname=name, timeout=TIMEOUT)


def _starttls(conn: smtplib.SMTP, s) -> bool:
    if not conn.has_extn("starttls"):
        return False
    conn.starttls(context=tls_context(s.ca_file))   # verifies the certificate and the host name
    conn.ehlo()
    return True


def _offers_tls(settings: Settings) -> bool:
    """False when the relay is this machine (loopback), where STARTTLS protects nothing."""
    try:
        return not all(a.is_loopback for a in relay_addresses(settings.delivery.smtp.host))
    except ConfigError:
        return True


def sendgrid_check(settings: Settings) -> Check:
    sg = settings.delivery.sendgrid
    name = "SendGrid key"
    try:
        key = secret(sg.api_key_env, key="[delivery.sendgrid] api_key_env")
        answer = httpx.get(f"{sg.host.rstrip('/')}/v3/scopes", headers={"Authorization": f"Bearer {key}"},
                           timeout=TIMEOUT)
    except ConfigError as exc:
        return failed(name, str(exc), f"set ${sg.api_key_env} to an API key with Mail Send access")
    except httpx.HTTPError as exc:
        return failed(name, f"cannot reach {sg.host}: {exc}", "check [delivery.sendgrid] host")
    if answer.status_code in (401, 403):
        return failed(name, f"SendGrid refused the key in ${sg.api_key_env} ({answer.status_code})",
                      "make a new API key with Mail Send access")
    scopes = _scopes(answer)
    if scopes is None:
        return failed(name, f"GET /v3/scopes answered {answer.status_code}", "check [delivery.sendgrid] host")
    if "mail.send" not in scopes:
        return failed(name, f"the key in ${sg.api_key_env} lacks the mail.send scope",
                      "give the key Mail Send access (Settings > API Keys)")
    return passed(name, "the key is accepted and may send (mail.send)")


def _scopes(answer: httpx.Response) -> list[str] | None:
    if answer.status_code != 200:
        return None
    try:
        scopes = answer.json().get("scopes")
    except (ValueError, AttributeError):
        return None
    return scopes if isinstance(scopes, list) else None


def one_click_check(settings: Settings) -> Check:
    base = settings.newsletter.base_url.rstrip("/")
    name = "one-click unsubscribe"
    if not base.startswith("https://"):
        return failed(name, f"[newsletter] base_url is {base}, not https: Gmail and Yahoo offer one-click "
                      "unsubscribe only over https (RFC 8058)", "serve the web service over https and set base_url")
    url = f"{base}/unsubscribe/{PROBE_TOKEN}"
    try:
        answer = httpx.post(url, content=b"List-Unsubscribe=One-Click", timeout=TIMEOUT, follow_redirects=False,
                            headers={"Content-Type": "application/x-www-form-urlencoded"}, verify=tls_context())
    except httpx.HTTPError as exc:
        return failed(name, f"POST {url} failed: {exc}", "run `mailer serve` behind https at base_url")
    if answer.status_code in (200, 400):
        return passed(name, f"POST {base}/unsubscribe/... answers directly ({answer.status_code})")
    if answer.is_redirect:
        return failed(name, f"POST {url} answered a redirect ({answer.status_code}); RFC 8058 forbids it",
                      "route /unsubscribe/ straight to `mailer serve`, without a redirect")
    return failed(name, f"POST {url} answered {answer.status_code}", "route /unsubscribe/ to `mailer serve`")


def imap_check(settings: Settings) -> Check | None:
    """None when no bounce mailbox is configured and none is needed (not SMTP)."""
    imap = settings.bounces.imap
    if not imap.host:
        if settings.delivery.backend != "smtp":
            return None
        return warned("bounce mailbox", "no [bounces.imap] host: bounce mail to the return path is never read",
                      "set [bounces.imap] and run `mailer bounces fetch` (docs/bounces.md)")
    try:
        with ImapBounces(imap):     # its own TLS rules: [bounces.imap] ca_file, allow_plaintext_login
            pass
    except (MailerError, ConfigError) as exc:
        return failed("bounce mailbox", str(exc), "check [bounces.imap] and its password")
    return passed("bounce mailbox", f"logged in to {imap.host}:{imap.port} and opened {imap.folder}")


def secret_key_check(settings: Settings) -> Check:
    name = "secret key"
    if os.environ.get(settings.secret_key_env):
        return passed(name, f"from ${settings.secret_key_env}")
    path = secret_key_file(settings)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return failed(name, f"no {path} and ${settings.secret_key_env} is not set", "run `mailer init`")
    if mode != 0o600:
        return failed(name, f"{path} has mode {mode:04o}: others may read the key that signs every link",
                      f"chmod 600 {path}")
    return passed(name, f"{path} (mode 0600)")
