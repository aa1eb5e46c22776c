"""SPF (RFC 7208): does a domain's record allow our sending path? A small evaluator, not a full one.

The path is either the relay's addresses (SMTP: the receiving server sees the relay connect) or
an include (SendGrid: `include:sendgrid.net`). Mechanisms `all`, `ip4`, `ip6`, `a`, `mx`,
`include`, `exists` (without macros) and the `redirect=` modifier are evaluated; `ptr` and macros
(`%{i}`...) never match here, so a record relying on them is reported as not allowing the path,
which `mailer doctor` says (docs/deliverability.md). RFC 7208 4.6.4: more than 10 terms that
cause DNS lookups make the whole record a permerror at receivers, so that is a failure too.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import dns.exception
import dns.resolver

MAX_LOOKUPS = 10                   # RFC 7208 4.6.4
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class SpfError(Exception):
    """The record cannot be evaluated as a receiver would (a permerror, or DNS did not answer)."""


@dataclass(frozen=True)
class Path:
    """What must be allowed: every one of `addresses`, or a record that includes `include`."""
    addresses: tuple[Address, ...] = ()
    include: str = ""

    def __str__(self) -> str:
        return f"include:{self.include}" if self.include else ", ".join(map(str, self.addresses))


def txt_records(resolver: dns.resolver.Resolver, name: str) -> list[str]:
    """The TXT strings at `name`, each record's pieces joined; [] when there is no such record.
    Raises SpfError when DNS does not answer (timeout, SERVFAIL)."""
    try:
        answer = resolver.resolve(name, "TXT", search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except dns.exception.DNSException as exc:
        raise SpfError(f"no answer from DNS about {name} ({type(exc).__name__})") from exc
    return [b"".join(record.strings).decode("utf-8", "replace") for record in answer]


def spf_record(resolver: dns.resolver.Resolver, domain: str) -> str | None:
    """The domain's one SPF record, or None; two records are a permerror (RFC 7208 4.5)."""
    records = [t for t in txt_records(resolver, domain) if t.lower() == "v=spf1" or t.lower().startswith("v=spf1 ")]
    if len(records) > 1:
        raise SpfError(f"{domain} publishes {len(records)} SPF records; receivers treat that as an error "
                       "(RFC 7208 4.5): merge them into one")
    return records[0] if records else None


class Evaluator:
    """One evaluation of `path` against a domain's record, counting the DNS lookups it causes."""

    def __init__(self, resolver: dns.resolver.Resolver, path: Path):
        self.resolver, self.path, self.lookups = resolver, path, 0

    def allows(self, domain: str) -> bool:
        record = spf_record(self.resolver, domain)
        if record is None:
            raise SpfError(f"{domain} has no SPF record (an include or redirect points there)")
        return self._evaluate(domain, record)

    def _evaluate(self, domain: str, record: str) -> bool:
        redirect = ""
        for written in record.split()[1:]:
            qualifier, term = (written[0], written[1:]) if written[0] in "+-~?" else ("+", written)
            name, _, value = term.partition("=")
            if value and ":" not in name and "/" not in name:      # a modifier
                redirect = value if name.lower() == "redirect" else redirect
                continue
            if self._matches(term, domain):
                return qualifier == "+"
        if redirect:
            self._count()
            return self.allows(redirect)
        return False

    def _matches(self, term: str, domain: str) -> bool:
        kind, _, arg = term.partition(":")
        kind, _, cidr = kind.partition("/")
        kind = kind.lower()
        if kind == "all":
            return True
        if kind in ("ip4", "ip6"):
            try:
                network = ipaddress.ip_network(arg, strict=False)
            except ValueError:
                raise SpfError(f"{term!r} in {domain}'s record is not an address (RFC 7208 5.6)") from None
            return bool(self.path.addresses) and all(a in network for a in self.path.addresses)
        if kind == "include":
            self._count()
            return arg.lower().rstrip(".") == self.path.include or self.allows(arg)
        if kind in ("a", "mx", "exists"):
            self._count()
            target, _, cidr2 = (arg or domain).partition("/")
            return self._by_address(kind, target, cidr or cidr2)
        if kind == "ptr":
            self._count()
            return False
        raise SpfError(f"unknown SPF mechanism {term!r} in {domain}'s record (RFC 7208 5): receivers fail it")

    def _by_address(self, kind: str, target: str, cidr: str) -> bool:
        if "%" in target:          # a macro: not evaluated here
            return False
        hosts = self._exchanges(target) if kind == "mx" else [target]
        found = [a for host in hosts for a in self._addresses(host)]
        if kind == "exists":
            return bool(found)
        networks = [ipaddress.ip_network(f"{a}/{cidr}" if cidr and a.version == 4 else a, strict=False)
                    for a in found]
        return bool(self.path.addresses) and all(any(a in n for n in networks) for a in self.path.addresses)

    def _exchanges(self, domain: str) -> list[str]:
        try:
            return [str(r.exchange).rstrip(".") for r in self.resolver.resolve(domain, "MX", search=False)]
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.DNSException as exc:
            raise SpfError(f"no answer from DNS about {domain}'s MX ({type(exc).__name__})") from exc

    def _addresses(self, host: str) -> list[Address]:
        found: list[Address] = []
        for kind in ("A", "AAAA"):
            try:
                found += [ipaddress.ip_address(r.address) for r in self.resolver.resolve(host, kind, search=False)]
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                continue
            except dns.exception.DNSException as exc:
                raise SpfError(f"no answer from DNS about {host} ({type(exc).__name__})") from exc
        return found

    def _count(self) -> None:
        self.lookups += 1
        if self.lookups > MAX_LOOKUPS:
            raise SpfError(f"the record needs more than {MAX_LOOKUPS} DNS lookups; receivers fail it "
                           "(RFC 7208 4.6.4): flatten some includes")
