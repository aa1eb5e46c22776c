"""The DNS side of `mailer doctor`: SPF, DKIM, DMARC and the return path's MX, each -> a Check.

DMARC passes when SPF or DKIM passes *aligned* with the From domain; relaxed alignment (RFC 7489
3.1) compares organizational domains: the registrable domain by the Public Suffix List (RFC 7489
3.2), as the `publicsuffixlist` package bundles it (read from the package, never downloaded), so
`news.example.co.uk` and `mail.example.co.uk` align while `a.github.io` and `b.github.io` do not.
"""

from __future__ import annotations

import base64
import binascii
import functools

import dns.exception
import dns.name
import dns.resolver
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_private_key
from publicsuffixlist import PublicSuffixList

from mailer.config import Settings, secret
from mailer.doctor.result import Check, failed, passed, warned
from mailer.doctor.spf import Evaluator, Path, SpfError, spf_record, txt_records
from mailer.errors import ConfigError

DMARC_POLICIES = ("none", "quarantine", "reject")


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower().rstrip(".")


@functools.cache
def _suffixes() -> PublicSuffixList:
    return PublicSuffixList()   # the list the package ships (about 10k rules, read once)


def organizational_domain(domain: str) -> str:
    """The public suffix and one label more (RFC 7489 3.2); a public suffix itself stays as it is."""
    name = domain.lower().rstrip(".")
    return _suffixes().privatesuffix(name) or name


def aligned(one: str, other: str) -> bool:
    """Relaxed alignment (RFC 7489 3.1.1, 3.1.2): the same organizational domain."""
    return organizational_domain(one) == organizational_domain(other)


# --- SPF ------------------------------------------------------------------------------------------

def spf_check(resolver: dns.resolver.Resolver, domain: str, path: Path | None, role: str) -> Check:
    """`role`: "From domain" or "return-path domain"; `path`: what must be allowed (None: outbox)."""
    name = f"SPF ({role} {domain})"
    try:
        record = spf_record(resolver, domain)
        if record is None:
            return failed(name, f"no SPF record at {domain}",
                          f"publish a TXT record at {domain}: \"v=spf1 {_mechanism(path)} -all\"")
        if path is None:
            return warned(name, f"{record!r}; [delivery] backend is outbox, so no sending path to check",
                          "run doctor again with the backend you send with")
        if Evaluator(resolver, path).allows(domain):
            return passed(name, f"{record!r} allows {path}")
    except SpfError as exc:
        return failed(name, str(exc), f"fix the SPF record at {domain}")
    return failed(name, f"{record!r} does not allow {path}",
                  f"add {_mechanism(path)} to the SPF record at {domain} (before its \"all\")")


def _mechanism(path: Path | None) -> str:
    if path is None:
        return "ip4:RELAY-ADDRESS"
    if path.include:
        return f"include:{path.include}"
    return " ".join(f"ip{a.version}:{a}" for a in path.addresses)


# --- DKIM -----------------------------------------------------------------------------------------

def dkim_key(settings: Settings) -> rsa.RSAPrivateKey:
    """The configured DKIM private key; ConfigError naming what is wrong with it."""
    smtp = settings.delivery.smtp
    if not (smtp.dkim_domain and smtp.dkim_selector):
        raise ConfigError("no DKIM key configured: set [delivery.smtp] dkim_domain and dkim_selector, and the "
                          f"private key's PEM text in ${smtp.dkim_key_env}")
    pem = secret(smtp.dkim_key_env, key="[delivery.smtp] dkim_key_env")
    try:
        key = load_pem_private_key(pem.encode("ascii", "replace"), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"the DKIM key in ${smtp.dkim_key_env} is not a readable PEM private key ({exc})") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError(f"the DKIM key in ${smtp.dkim_key_env} is not an RSA key (we sign rsa-sha256)")
    return key


def public_half(key: rsa.RSAPrivateKey) -> str:
    """The p= value: the public key's SubjectPublicKeyInfo, base64 (RFC 6376 3.6.1)."""
    der = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode("ascii")


def dkim_record(settings: Settings) -> str:
    """The TXT record to publish for the configured key, in zone-file form (strings of <= 255)."""
    smtp = settings.delivery.smtp
    value = f"v=DKIM1; k=rsa; p={public_half(dkim_key(settings))}"
    pieces = " ".join(f'"{value[i:i + 255]}"' for i in range(0, len(value), 255))
    return f"{smtp.dkim_selector}._domainkey.{smtp.dkim_domain}. IN TXT {pieces}"


def dkim_checks(resolver: dns.resolver.Resolver, settings: Settings) -> list[Check]:
    if settings.delivery.backend == "sendgrid":
        return [warned("DKIM", "SendGrid signs with the key of its domain authentication, which doctor cannot read",
                       "check that SendGrid's Settings > Sender Authentication shows the From domain verified")]
    try:
        key = dkim_key(settings)
    except ConfigError as exc:
        return [failed("DKIM", str(exc), "configure a key of 2048 bits; `mailer doctor --dkim-record` "
                       "then prints the record to publish")]
    return [_key_size(key), _published(resolver, settings, key), _alignment(settings)]


def _key_size(key: rsa.RSAPrivateKey) -> Check:
    bits = key.key_size
    if bits < 1024:
        return failed("DKIM key size", f"{bits} bits", "Gmail and Yahoo require at least 1024 bits: make a "
                      "2048-bit key, publish it under a new selector, then switch")
    if bits < 2048:
        return warned("DKIM key size", f"{bits} bits", "2048 bits is recommended (Gmail): rotate to a "
                      "2048-bit key under a new selector")
    return passed("DKIM key size", f"{bits} bits")


def _published(resolver: dns.resolver.Resolver, settings: Settings, key: rsa.RSAPrivateKey) -> Check:
    smtp = settings.delivery.smtp
    where = f"{smtp.dkim_selector}._domainkey.{smtp.dkim_domain}"
    fix = f"publish the record `mailer doctor --dkim-record` prints at {where}"
    try:
        records = [t for t in txt_records(resolver, where) if "p=" in t]
    except SpfError as exc:
        return failed("DKIM", str(exc), fix)
    if not records:
        return failed("DKIM", f"no DKIM record at {where}", fix)
    tags = _tags(records[0])
    if tags.get("k", "rsa").lower() != "rsa":
        return failed("DKIM", f"the record at {where} is for a {tags['k']} key, ours is RSA", fix)
    if not tags.get("p"):
        return failed("DKIM", f"the record at {where} revokes the key (empty p=)", fix)
    if _normal(tags["p"]) != public_half(key):
        return failed("DKIM", f"the record at {where} holds another key's public half, not the configured key's",
                      f"{fix} (or configure the private key that record belongs to)")
    return passed("DKIM", f"the record at {where} holds the configured key's public half")


def _normal(p: str) -> str:
    try:
        return base64.b64encode(base64.b64decode("".join(p.split()), validate=True)).decode("ascii")
    except (binascii.Error, ValueError):
        return ""


def _alignment(settings: Settings) -> Check:
    d, sender = settings.delivery.smtp.dkim_domain.lower(), domain_of(settings.newsletter.from_email)
    if aligned(d, sender):
        return passed("DKIM alignment", f"d={d} aligns with the From domain {sender} (relaxed)")
    return failed("DKIM alignment", f"d={d} does not align with the From domain {sender}: DMARC fails on DKIM",
                  f"sign with a key of {sender} (or a subdomain of it): set [delivery.smtp] dkim_domain")


def _tags(record: str) -> dict[str, str]:
    """"v=DKIM1; k=rsa; p=..." -> {"v": ..., "k": ..., "p": ...} (RFC 6376 3.2 tag-lists)."""
    pairs = (part.partition("=") for part in record.split(";"))
    return {name.strip().lower(): value.strip() for name, sep, value in pairs if sep}


# --- DMARC and MX ---------------------------------------------------------------------------------

def dmarc_check(resolver: dns.resolver.Resolver, from_domain: str) -> Check:
    """_dmarc.DOMAIN, else the organizational domain's (RFC 7489 6.6.3)."""
    fix = (f"publish a TXT record at _dmarc.{from_domain}: \"v=DMARC1; p=none; rua=mailto:dmarc@{from_domain}\" "
           "(then p=quarantine once the reports look right)")
    try:
        where, records = _dmarc_records(resolver, from_domain)
    except SpfError as exc:
        return failed("DMARC", str(exc), fix)
    if not records:
        return failed("DMARC", f"no DMARC record at _dmarc.{from_domain}", fix)
    if len(records) > 1:
        return failed("DMARC", f"{len(records)} DMARC records at {where}: receivers ignore them all", "keep one")
    policy = _tags(records[0]).get("p", "").lower()
    if policy not in DMARC_POLICIES:
        return failed("DMARC", f"{records[0]!r} at {where} has no valid p= policy", fix)
    if policy == "none":
        return warned("DMARC", f"{records[0]!r} at {where}: p=none (monitoring only; enough for Gmail and Yahoo)",
                      "move to p=quarantine once the aggregate reports show your mail passing")
    return passed("DMARC", f"{records[0]!r} at {where}")


def _dmarc_records(resolver: dns.resolver.Resolver, domain: str) -> tuple[str, list[str]]:
    for candidate in dict.fromkeys((domain, organizational_domain(domain))):
        where = f"_dmarc.{candidate}"
        records = [t for t in txt_records(resolver, where) if t.replace(" ", "").lower().startswith("v=dmarc1")]
        if records:
            return where, records
    return f"_dmarc.{domain}", []


def mx_check(resolver: dns.resolver.Resolver, domain: str) -> Check:
    name = f"MX (return-path domain {domain})"
    fix = f"publish an MX record for {domain} pointing at the mailbox bounces go to"
    try:
        exchanges = [r.exchange for r in resolver.resolve(domain, "MX", search=False)]
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return failed(name, f"{domain} has no MX record: bounces cannot come back", fix)
    except dns.exception.DNSException as exc:
        return failed(name, f"no answer from DNS about {domain} ({type(exc).__name__})", fix)
    if all(exchange == dns.name.root for exchange in exchanges):
        return failed(name, f"{domain} publishes a null MX (RFC 7505): it takes no mail", fix)
    return passed(name, "MX " + ", ".join(sorted(str(e).rstrip(".") for e in exchanges)))
