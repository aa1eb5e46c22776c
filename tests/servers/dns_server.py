"""A real DNS server on loopback (dnslib, UDP, port 0) answering from a table, for `[web] check_mx`.

    with dns_server({"example.org": [("MX", "10 mail.example.org.")]}) as address:
        ...  # address is "127.0.0.1:PORT": [dns] nameservers = [address]

Names missing from the table are NXDOMAIN; a name present with no record of the asked type answers
NOERROR with nothing (what `dig` calls NODATA); SILENT names get no answer at all (a timeout).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from dnslib import QTYPE, RCODE, RR
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer

SILENT = "silent"


class _NoAnswer(Exception):
    """Raised by the resolver for a SILENT name: the handler sends nothing back."""


class _Handler(DNSHandler):
    def handle(self) -> None:
        try:
            super().handle()
        except _NoAnswer:
            pass


class TableResolver(BaseResolver):
    def __init__(self, table: dict[str, list[tuple[str, str]] | str]) -> None:
        self.table = {name.rstrip(".").lower(): records for name, records in table.items()}
        self.asked: list[tuple[str, str]] = []

    def resolve(self, request, handler):
        name = str(request.q.qname).rstrip(".").lower()
        kind = QTYPE[request.q.qtype]
        self.asked.append((name, kind))
        reply = request.reply()
        records = self.table.get(name)
        if records == SILENT:
            raise _NoAnswer(name)  # nothing goes back: the client times out
        if records is None:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        for record_kind, data in records:
            if record_kind == kind:
                reply.add_answer(*RR.fromZone(f"{name}. 60 IN {record_kind} {data}"))
        return reply


class _Quiet(DNSLogger):
    def __init__(self) -> None:
        super().__init__(log="-request,-reply,-truncated,-error,-recv,-send,-data")


@contextlib.contextmanager
def dns_server(table: dict) -> Iterator[tuple[str, TableResolver]]:
    """("127.0.0.1:PORT", the resolver, whose `asked` lists the questions) while the server runs."""
    resolver = TableResolver(table)
    server = DNSServer(resolver, address="127.0.0.1", port=0, logger=_Quiet(), handler=_Handler)
    server.start_thread()
    try:
        yield f"127.0.0.1:{server.server.server_address[1]}", resolver
    finally:
        server.stop()
        server.server.server_close()
