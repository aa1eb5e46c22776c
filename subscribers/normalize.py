"""The address rules, all of them: raw address -> normalized address (or InvalidAddress); any
address -> the plain ASCII form we write on the wire; raw name -> clean one-line name; raw client
address -> IP address or None. mailer checks addresses only through this module.

One person is one subscriber: addresses compare case-insensitively in full (as Mailchimp and
listmonk do), surrounding whitespace is dropped, and IDN domains are stored in their ASCII
(punycode, IDNA 2008 / UTS #46) form, the form that goes on the wire to SMTP servers and SendGrid:
`Jöhn@Bücher.Example` -> `jöhn@xn--bcher-kva.example`. A non-ASCII local part stays Unicode (NFC).

Validation is email-validator's (syntax; DNS only when asked). A call is too slow for a million-row
import (docs/decisions.md), so a fast path accepts the common case itself: an ASCII dot-atom local
part (RFC 5322 §3.2.3, the exact set email-validator accepts by default) with lengths in bounds,
and a domain that email-validator already accepted (cached per domain). Everything else goes to
email-validator, so results and error messages are the library's own; tests compare both paths.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from functools import lru_cache

import idna

from subscribers.errors import InvalidAddress

# RFC 5322 atext, the characters email-validator allows in an unquoted local part (ATEXT).
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_DOT_ATOM = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*")
_MAX_LOCAL = 64      # RFC 5321 §4.5.3.1.1
_MAX_ADDRESS = 254   # RFC 5321 §4.5.3.1.3 path limit minus the angle brackets (RFC 3696 errata 1690)
# On the wire: an unquoted ASCII local part (atext and dots) @ an ASCII domain with at least one dot.
_WIRE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+\.[A-Za-z0-9-]+")


def normalize_email(raw: str, *, check_dns: bool = False) -> str:
    """The normalized form of `raw`; raises InvalidAddress with email-validator's reason."""
    if not isinstance(raw, str):
        raise InvalidAddress(str(raw), "not a string")
    text = raw.strip()
    local, at, domain = text.rpartition("@")
    if at and len(local) <= _MAX_LOCAL and len(text) <= _MAX_ADDRESS and _dot_atom(local):
        ascii_domain = (_domain_dns if check_dns else _domain)(domain.lower() if domain.isascii() else domain)
        if ascii_domain is not None and len(local) + 1 + len(ascii_domain) <= _MAX_ADDRESS:
            return f"{local.lower()}@{ascii_domain}"
    if not text:
        raise InvalidAddress(raw, "no address")
    return _full(raw, text, check_dns)


def ascii_address(raw: str) -> str:
    """The plain ASCII addr-spec written into SMTP commands, headers and SendGrid requests: an IDN
    domain in punycode, the rest as given. InvalidAddress when it cannot be written so: no delivery
    backend here speaks SMTPUTF8. Every address mailer sends from or to passes it."""
    local, _, domain = (raw or "").strip().rpartition("@")
    try:
        domain = domain.encode("idna").decode("ascii") if not domain.isascii() else domain
    except UnicodeError:
        domain = ""
    address = f"{local}@{domain}"
    if not _WIRE.fullmatch(address) or len(address) > _MAX_ADDRESS:
        raise InvalidAddress(raw, "not a plain ASCII address (SMTPUTF8 is not supported)")
    return address


def is_sendable(raw: str) -> bool:
    """Whether `ascii_address` can write `raw`: the check for addresses a person types for us to
    send from or to that are not subscribers (the config's sender, reply-to and editors, proof
    recipients), so a typo is named where it is typed instead of failing at the send."""
    try:
        ascii_address(raw)
    except InvalidAddress:
        return False
    return True


def unsendable_reason(raw: str) -> str | None:
    """None when `is_sendable(raw)`, else what is wrong, worded to follow the address itself
    ("'b@example' is incomplete: ..."), for the places a person types one (proofs)."""
    if is_sendable(raw):
        return None
    local, at, domain = (raw or "").strip().rpartition("@")
    if not at or not local:
        return "is not an email address (write name@example.org)"
    if domain and "." not in domain.strip("."):
        return f"is incomplete: {domain!r} is not a whole domain (write e.g. {local}@{domain}.org)"
    return "is not an email address (write name@example.org)"


def needs_smtputf8(address: str) -> bool:
    """Whether a normalized address has a non-ASCII local part (its domain is punycode already):
    mail to it needs SMTPUTF8, which no delivery backend here speaks, so entry points that can
    still ask the person (the web form) refuse it."""
    return not address.isascii()


def _full(raw: str, text: str, check_dns: bool) -> str:
    """Ask email-validator itself: the slow path, for everything unusual."""
    from email_validator import (  # only once an address is checked: `send` and `lists` never load it
        EmailNotValidError,
        validate_email,
    )

    try:
        result = validate_email(text, check_deliverability=check_dns)
    except EmailNotValidError as exc:
        raise InvalidAddress(raw, str(exc)) from None
    local = unicodedata.normalize("NFC", result.local_part).lower()
    return f"{local}@{result.ascii_domain}"


def _validated_domain(domain: str, check_dns: bool) -> str | None:
    """The ASCII form of a domain email-validator accepts, or None (the slow path then explains)."""
    from email_validator import EmailNotValidError, validate_email  # as in _full

    try:
        return validate_email(f"a@{domain}", check_deliverability=check_dns).ascii_domain
    except EmailNotValidError:
        return None


# Bounded caches: a hostile file with a million domains cannot grow memory. DNS answers are
# cached separately, and only for the life of the process.
_domain = lru_cache(maxsize=65536)(lambda domain: _validated_domain(domain, False))
_domain_dns = lru_cache(maxsize=65536)(lambda domain: _validated_domain(domain, True))
_dot_atom = _DOT_ATOM.fullmatch


# Names: control characters (C0, C1, DEL), line/paragraph separators and other invisible format
# characters become a space; runs of whitespace collapse. A name is one line of plain text.
# (mailer.compose.personalize cleans names in headers with the same pattern)
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")
MAX_NAME = 200


def clean_text(raw: str | None, limit: int = MAX_NAME) -> str:
    """One line of printable text: control characters and line breaks out, spaces collapsed."""
    if not raw:
        return ""
    if raw.isascii() and raw.isprintable() and "  " not in raw and raw[0] != " " and raw[-1] != " ":
        return raw[:limit]  # the common case, without a regex or a copy
    text = unicodedata.normalize("NFC", raw)
    if not text.isprintable():
        text = CONTROL.sub(" ", text)
    return " ".join(text.split())[:limit]


def normalize_ip(text: str | None) -> str | None:
    """A real IPv4 or IPv6 address in its compressed form (zone id dropped: 39 characters at
    most, so it fits the 45-character column everywhere), else None. A proxy can pass any text."""
    if not text or len(text) > 64:
        return None
    try:
        return ipaddress.ip_address(text.strip().split("%", 1)[0]).compressed
    except ValueError:
        return None


def display_email(email: str) -> str:
    """The address with its domain in Unicode, for people to read (storage keeps punycode)."""
    local, _, domain = email.rpartition("@")
    if "xn--" not in domain:
        return email
    try:
        return f"{local}@{idna.decode(domain)}"
    except idna.IDNAError:
        return email
