"""The one DNS resolver helper: configured nameservers ("HOST", "HOST:PORT") -> a dnspython Resolver.

`[web] check_mx` (mailer/web/addresses.py) and `mailer doctor` (mailer/doctor/) ask their
questions through it; an empty list means the system's resolver (/etc/resolv.conf).
"""

from __future__ import annotations

import dns.nameserver
import dns.resolver


def make_resolver(nameservers: tuple[str, ...] = (), timeout: float = 3.0) -> dns.resolver.Resolver:
    """A Resolver asking `nameservers` (the system's when empty), `timeout` seconds per question."""
    resolver = dns.resolver.Resolver(configure=not nameservers)
    if nameservers:
        resolver.nameservers = [dns.nameserver.Do53Nameserver(*host_port(server)) for server in nameservers]
    resolver.lifetime = resolver.timeout = timeout
    return resolver


def host_port(server: str) -> tuple[str, int]:
    """"HOST", "HOST:PORT", "[V6]:PORT" or a bare IPv6 address -> (host, port)."""
    if server.startswith("["):
        host, _, port = server[1:].partition("]")
        return host, int(port.lstrip(":") or 53)
    if server.count(":") == 1:
        host, _, port = server.partition(":")
        return host, int(port)
    return server, 53

