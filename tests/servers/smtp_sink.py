"""A local SMTP server (aiosmtpd) that records every envelope and its raw bytes, for tests and bench.

aiosmtpd's Controller cannot be given port 0 (docs/mail-facts.md), so the sink binds its own
socket to port 0 and hands it over; `sink.port` is the port the OS gave it.
Faults: `replies={"x@example.org": "450 4.2.1 Mailbox busy"}` answers RCPT for chosen recipients;
`drop_after=N` aborts the connection (no reply) at the MAIL command after N messages on that
connection, as servers that cap messages per connection do (docs/mail-facts.md, Yahoo).
`greylist={"x@example.org": 2.0}` answers RCPT for chosen recipients with 450 4.7.1 until that
many seconds after their first try (Postgrey's way; `sink.state.rcpt_tries` counts the tries);
`rate_limit={"gmail.com": 3.0}` answers RCPT for every recipient in that domain with `421 4.7.0` and
closes the connection, for that many seconds after the domain's first RCPT (a provider that finds us
too fast; `sink.state.rate_limited` counts those answers by domain);
`data_replies={"x@example.org": "421 4.7.0 ..."}` answers the DATA command of a message to that
recipient so, before any content (a 421 then closes the channel);
`drop_after_data={"x@example.org"}` queues the message, then drops the connection without the
250 reply, once per recipient (the server took it; the client cannot know).
`data_delay=0.2` waits that many seconds before answering each message's content (a slow relay: a
batch stays on the wire long enough to signal the sender meanwhile). `refuse_rcpt="554 5.7.1 Relay
access denied"` answers every RCPT so (a relay that will not relay for us). `down_after_drop=True`
stops listening once a `drop_after_data` drop happened (the relay stays down: connections refused).
`refuse_sender="553 5.7.1 Sender address rejected"` answers every MAIL FROM so once the sink has
taken `refuse_sender_after` messages (a relay that stops accepting our return path).
`tls_context` offers STARTTLS; `implicit_tls` serves TLS from the first byte (port 465 style);
`users={"name": "password"}` requires AUTH (PLAIN/LOGIN, allowed without TLS on loopback).
`bulk_data=True` (the bench) reads DATA in one piece instead of aiosmtpd's line-by-line loop,
which caps the sink's rate long before the client's (BENCHMARKS.md, "Send"); real MTAs read DATA in blocks.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
import warnings
from dataclasses import dataclass, field

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

# AUTH without TLS is what we want on loopback; aiosmtpd warns on every connection otherwise.
warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes                    # the raw message as received (CRLF line ends)
    at: float = 0.0                # time.monotonic() when its content arrived (pacing's spacing)


@dataclass
class SinkState:
    messages: list[Received] = field(default_factory=list)
    connections: int = 0
    drops: int = 0
    count_only: bool = False       # the bench: count, do not keep bytes
    count: int = 0
    rcpt_tries: dict = field(default_factory=dict)   # address -> RCPT commands seen
    helo_names: list = field(default_factory=list)   # the names clients gave in EHLO/HELO
    rate_limited: dict = field(default_factory=dict)  # domain -> 421 4.7.0 answers given


class _Handler:
    def __init__(self, state: SinkState, replies: dict[str, str], drop_after: int | None,
                 greylist: dict[str, float] | None = None, drop_after_data: set[str] | None = None,
                 refuse_sender: tuple[str, int] | None = None, data_delay: float = 0.0,
                 refuse_rcpt: str | None = None, rate_limit: dict[str, float] | None = None,
                 data_replies: dict[str, str] | None = None):
        self.state, self.replies, self.drop_after = state, replies, drop_after
        self.data_replies = {k.lower(): v for k, v in (data_replies or {}).items()}
        self.rate_limit = {k.lower(): v for k, v in (rate_limit or {}).items()}
        self.data_delay, self.refuse_rcpt = data_delay, refuse_rcpt
        self.on_drop = lambda: None   # SmtpSink: stop listening (down_after_drop)
        self.refuse_sender = refuse_sender
        self.greylist = {k.lower(): v for k, v in (greylist or {}).items()}
        self.drop_after_data = {a.lower() for a in (drop_after_data or ())}
        self.first_try: dict[str, float] = {}
        self.lock = threading.Lock()

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        with self.lock:
            self.state.helo_names.append(hostname)
        if not getattr(session, "counted", False):
            session.counted = True
            session.sent = 0
            with self.lock:
                self.state.connections += 1
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if self.drop_after is not None and getattr(session, "sent", 0) >= self.drop_after:
            with self.lock:
                self.state.drops += 1
            server.transport.abort()  # gone without a word
            return "421 4.4.2 never seen"
        if self.refuse_sender is not None and self.state.count >= self.refuse_sender[1]:
            return self.refuse_sender[0]
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        key = address.lower()
        with self.lock:
            self.state.rcpt_tries[key] = self.state.rcpt_tries.get(key, 0) + 1
            first = self.first_try.setdefault(key, time.monotonic())
        if key in self.greylist and time.monotonic() - first < self.greylist[key]:
            return "450 4.7.1 Greylisted, please try again later"
        domain = key.rpartition("@")[2]
        if domain in self.rate_limit:
            with self.lock:
                since = self.first_try.setdefault("@" + domain, time.monotonic())
                limited = time.monotonic() - since < self.rate_limit[domain]
                if limited:
                    self.state.rate_limited[domain] = self.state.rate_limited.get(domain, 0) + 1
            if limited:   # the answer goes out, then the channel closes (RFC 5321 3.8)
                asyncio.get_running_loop().call_soon(server.transport.close)
                return "421 4.7.0 Try again later, closing connection. (rate limited)"
        reply = self.replies.get(key) or self.refuse_rcpt
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        session.sent = getattr(session, "sent", 0) + 1
        with self.lock:
            self.state.count += 1
            if not self.state.count_only:
                self.state.messages.append(Received(envelope.mail_from, tuple(envelope.rcpt_tos),
                                                    bytes(envelope.original_content or envelope.content),
                                                    time.monotonic()))
            dropping = [a for a in envelope.rcpt_tos if a.lower() in self.drop_after_data]
            self.drop_after_data.difference_update(a.lower() for a in dropping)
        if dropping:  # queued, but the client never hears so
            with self.lock:
                self.state.drops += 1
            server.transport.abort()
            self.on_drop()
        return f"250 2.0.0 Ok: queued as Q{self.state.count}"


class _SinkSMTP(SMTP):
    """aiosmtpd's SMTP with the DATA command itself answerable per recipient (`data_replies`): a
    `421` there is sent, then the channel closed, before any content."""

    async def smtp_DATA(self, arg: str) -> None:
        wanted = getattr(self.event_handler, "data_replies", {})
        reply = next((wanted[a.lower()] for a in self.envelope.rcpt_tos if a.lower() in wanted), None)
        if reply is None:
            return await super().smtp_DATA(arg)
        await self.push(reply)
        if reply.startswith("421"):
            self.transport.close()
        else:
            self._set_rset_state()


class _BulkDataSMTP(_SinkSMTP):
    """aiosmtpd's SMTP with DATA read up to the terminating dot in one call (RFC 5321 4.5.2)."""

    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        if not self.envelope.rcpt_tos:
            return await self.push("503 Error: need RCPT command")
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        self._reader._limit = 64 * 1024 * 1024  # the line-length limit would refuse a whole message
        raw = await self._reader.readuntil(b"\r\n.\r\n")
        data = raw[:-3].replace(b"\r\n..", b"\r\n.")
        data = data[1:] if data.startswith(b"..") else data
        self.envelope.original_content = self.envelope.content = data
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push(status)


class _Controller(Controller):
    def __init__(self, *args, bulk_data: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.bulk_data = bulk_data

    def factory(self):
        return (_BulkDataSMTP if self.bulk_data else _SinkSMTP)(self.handler, **self.SMTP_kwargs)

    def _create_server(self):
        """Listen on a socket bound to port 0 here (no port picked, closed and reused: others run
        tests at the same time); `self.port` is the one the OS gave, before start() connects to it."""
        sock = socket.create_server((self.hostname, 0))
        self.port = sock.getsockname()[1]
        return self.loop.create_server(self._factory_invoker, sock=sock, ssl=self.ssl_context)


class SmtpSink:
    """Start with `with SmtpSink() as sink:`; `sink.port`, `sink.messages`."""

    def __init__(self, *, replies: dict[str, str] | None = None, drop_after: int | None = None,
                 greylist: dict[str, float] | None = None, drop_after_data: set[str] | None = None,
                 refuse_sender: str | None = None, refuse_sender_after: int = 0,
                 data_delay: float = 0.0, refuse_rcpt: str | None = None, down_after_drop: bool = False,
                 rate_limit: dict[str, float] | None = None, data_replies: dict[str, str] | None = None,
                 tls_context: ssl.SSLContext | None = None, implicit_tls: bool = False,
                 users: dict[str, str] | None = None, count_only: bool = False, bulk_data: bool = False):
        self.state = SinkState(count_only=count_only)
        handler = _Handler(self.state, {k.lower(): v for k, v in (replies or {}).items()}, drop_after,
                           greylist, drop_after_data,
                           (refuse_sender, refuse_sender_after) if refuse_sender else None,
                           data_delay, refuse_rcpt, rate_limit, data_replies)
        if down_after_drop:
            handler.on_drop = self._stop_listening
        kwargs: dict = {"data_size_limit": 40 * 1024 * 1024}
        if users is not None:
            kwargs.update(auth_required=True, auth_require_tls=False, authenticator=_authenticator(users))
        if tls_context and not implicit_tls:
            kwargs["tls_context"] = tls_context
        self.controller = _Controller(handler, hostname="127.0.0.1", port=0, bulk_data=bulk_data,
                                      ssl_context=tls_context if implicit_tls else None, **kwargs)

    @property
    def port(self) -> int:
        """The port the OS gave the sink (once started)."""
        return self.controller.port

    @property
    def messages(self) -> list[Received]:
        return self.state.messages

    def _stop_listening(self) -> None:
        """New connections are refused from now on (called in the sink's own event loop)."""
        server = self.controller.server
        if server is not None:
            server.close()

    def start(self) -> SmtpSink:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _authenticator(users: dict[str, str]):
    def check(server, session, envelope, mechanism, auth_data):
        ok = (isinstance(auth_data, LoginPassword)
              and users.get(auth_data.login.decode()) == auth_data.password.decode())
        return AuthResult(success=ok, handled=False)

    return check


def main() -> None:
    """Run alone (the bench): print the port, serve until killed; `GET`-free, counts on SIGTERM."""
    import argparse
    import signal
    import sys

    parser = argparse.ArgumentParser(description="local SMTP sink")
    parser.add_argument("--bulk-data", action="store_true")
    args = parser.parse_args()
    sink = SmtpSink(count_only=True, bulk_data=args.bulk_data).start()
    print(sink.port, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: (print(sink.state.count, flush=True), sink.stop(), sys.exit(0)))
    signal.pause()


if __name__ == "__main__":
    main()
