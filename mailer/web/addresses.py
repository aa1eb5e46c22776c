"""Web service: an address someone typed to sign up by themselves -> what is wrong with it, or None.

`address_problem(email, rules)` is the one check every self-service door applies: the /subscribe
form, the "email me a link" form, and the API's creates (which authenticate by token instead of
a challenge, but take the same addresses). In order:

1. the address rules of subscribers/normalize.py (what an address is; no SMTPUTF8 local parts);
2. throwaway mail services: the `disposable-email-domains` list, kept as a dependency, plus
   `[web] blocked_domains`; a subdomain of a listed domain is listed too;
3. with `[web] check_mx = true`, a domain that can receive no mail: no MX record and no A or AAAA
   record (RFC 5321 5.1: mail then goes to the address record), or a "null MX" (RFC 7505: the
   domain says it takes none). A DNS server that does not answer refuses nobody: a reader must not
   be turned away because our resolver is down (docs/signup.md).

None of this depends on who is subscribed, so the answer, and the time it takes, say nothing
about the store.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import dns.exception
import dns.name
import dns.resolver
from disposable_email_domains import blocklist

from mailer.i18n import N_
from mailer.resolver import make_resolver
from subscribers.errors import InvalidAddress
from subscribers.normalize import needs_smtputf8, normalize_email

log = logging.getLogger("mailer.web")
CACHE_SECONDS = 600.0            # a domain's answer is kept this long
CACHE_SIZE = 10_000


class Problem(enum.Enum):
    """Why an address cannot sign up; each value is the reader's message (a catalog entry)."""

    NOT_AN_ADDRESS = N_("That does not look like an email address. Please check it.")
    NON_ASCII = N_("We cannot send to addresses with non-ASCII characters before the @ yet, sorry.")
    DISPOSABLE = N_("Addresses from throwaway mail services cannot subscribe. Please use an address you keep.")
    BLOCKED = N_("Addresses at this domain cannot subscribe here. Please use another address.")
    NO_MAIL = N_("That domain cannot receive email. Please check the part after the @.")

    @property
    def message(self) -> str:
        return self.value


class MailDomains:
    """domain -> can it receive mail? (True, False, or None when DNS did not answer), asked of
    the resolver `[dns] nameservers` names (the system's when empty), answers cached a while."""

    def __init__(self, nameservers: tuple[str, ...] = (), timeout: float = 3.0, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.resolver = make_resolver(nameservers, timeout)
        self.clock = clock
        self._cache: dict[str, tuple[float, bool | None]] = {}
        self._lock = threading.Lock()

    def receives_mail(self, domain: str) -> bool | None:
        with self._lock:
            hit = self._cache.get(domain)
        if hit and self.clock() - hit[0] < CACHE_SECONDS:
            return hit[1]
        answer = self._ask(domain)
        with self._lock:
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()
            self._cache[domain] = (self.clock(), answer)
        return answer

    def _ask(self, domain: str) -> bool | None:
        try:
            exchanges = [record.exchange for record in self.resolver.resolve(domain, "MX", search=False)]
            return not all(exchange == dns.name.root for exchange in exchanges)   # a null MX takes no mail
        except dns.resolver.NXDOMAIN:
            return False
        except dns.resolver.NoAnswer:
            pass
        except dns.exception.DNSException as exc:    # timeout, SERVFAIL, no server: we cannot tell
            log.warning("check_mx: no answer about %s (%s); not refused", domain, type(exc).__name__)
            return None
        for kind in ("A", "AAAA"):
            try:
                self.resolver.resolve(domain, kind, search=False)
                return True
            except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
                continue
            except dns.exception.DNSException as exc:
                log.warning("check_mx: no answer about %s (%s); not refused", domain, type(exc).__name__)
                return None
        return False


@dataclass(frozen=True)
class AddressRules:
    """What a self-service signup refuses beyond a malformed address (built from the settings)."""

    blocked: frozenset[str] = field(default_factory=frozenset)   # [web] blocked_domains, ASCII, lower case
    domains: MailDomains | None = None                           # [web] check_mx: who to ask

    @classmethod
    def from_settings(cls, settings) -> AddressRules:
        web, resolver = settings.web, settings.dns
        return cls(blocked=frozenset(_ascii_domain(d) for d in web.blocked_domains),
                   domains=MailDomains(resolver.nameservers, resolver.timeout) if web.check_mx else None)


def address_problem(email: str, rules: AddressRules) -> Problem | None:
    """What is wrong with the typed address for a self-service signup; None when it will do."""
    try:
        address = normalize_email(email)
    except InvalidAddress:
        return Problem.NOT_AN_ADDRESS
    if needs_smtputf8(address):
        return Problem.NON_ASCII
    domain = address.rpartition("@")[2]
    suffixes = _suffixes(domain)
    if any(suffix in blocklist for suffix in suffixes):
        return Problem.DISPOSABLE
    if any(suffix in rules.blocked for suffix in suffixes):
        return Problem.BLOCKED
    if rules.domains is not None and rules.domains.receives_mail(domain) is False:
        return Problem.NO_MAIL
    return None


def _suffixes(domain: str) -> list[str]:
    """"a.b.example.com" -> the domain and every parent that is still a name ("b.example.com",
    "example.com"), so a subdomain of a listed domain is listed too."""
    labels = domain.split(".")
    return [".".join(labels[i:]) for i in range(len(labels) - 1)]


def _ascii_domain(domain: str) -> str:
    """A configured domain as stored addresses hold theirs (lower case, IDN labels in punycode):
    the store's own rule, applied to an address at it (the config's reader checked it is one)."""
    return normalize_email(f"postmaster@{domain}").rpartition("@")[2]
