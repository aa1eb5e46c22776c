"""Stage 6b: outgoing batch -> SMTP transactions over one reused connection (smtplib).

One connection serves the whole send (docs/mail-facts.md: reuse connections); when the server drops
it or answers 421, we reconnect and retry that message once, unless the 421 says we send too fast
(`421 4.7.x`, or words about rate: `rate_limited`) at MAIL, RCPT or DATA: then that reader is
RETRY_LATER (the ledger defers them; [delivery.pacing] slows their provider down, pacing.py) and
the next message reconnects, the message never having been sent. A batch (`[delivery.smtp] batch_size`
messages, so one ledger claim and one results write per batch, not per message) goes one message
after another over that connection; with `connections` above 1, each of that many connections
sends its own contiguous part of the batch at once (results keep the batch's order: measured on
2 cores, two connections send about 1.4 times as fast, the sink answering one while the other
waits). Each message is its own transaction with a VERP return path `bounces+REF@domain`
(docs/mail-facts.md), REF being the delivery's opaque ref, so bounce mail maps back without
exposing the address. With `[delivery.smtp] dkim_domain` and `dkim_selector` set, each message is
DKIM-signed (deliver/dkim_sign.py: dkimpy's canonicalization, OpenSSL's RSA); `h=` covers
List-Unsubscribe and List-Unsubscribe-Post, as RFC 8058 section 4 requires for one-click.

Replies map to results: 250 accepted; 4xx for a recipient retry-later (the ledger defers the
reader: greylisting); 5xx rejected; a connection lost after the content was sent is in doubt (the
server may have queued it: RFC 5321 4.5.3.2.6). A refused return path (MAIL FROM 5xx), bad
credentials or a missing STARTTLS stop the send (PermanentDelivery). A relay that refuses or drops
connections (a restart) is retried with backoff for `connect_retry_seconds`, then TemporaryDelivery.
`ehlo_name` is the name we give in EHLO; `ca_file` the CAs trusted for the relay's certificate.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import re
import smtplib
import ssl
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING

from mailer.config import NewsletterSettings, SmtpSettings, secret
from mailer.errors import PermanentDelivery, TemporaryDelivery
from mailer.send.deliver.base import Backend, Result, ResultStatus

if TYPE_CHECKING:
    from mailer.config import Settings
    from mailer.send.deliver.dkim_sign import DkimSigner, SigningPool

# Headers the DKIM signature covers; RFC 8058 section 4 names the two List-Unsubscribe ones.
# Over-signed (RFC 6376 section 8.15): named once more than they occur, so the signature also says
# there is no other; a second From, Subject or List-Unsubscribe(-Post) prepended in transit breaks it.
DKIM_HEADERS = (b"from", b"from", b"to", b"subject", b"subject", b"date", b"message-id", b"reply-to",
                b"mime-version", b"content-type", b"list-id", b"list-unsubscribe", b"list-unsubscribe",
                b"list-unsubscribe-post", b"list-unsubscribe-post")


class Stage(enum.StrEnum):
    """How far one SMTP transaction got."""

    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"
    CONTENT = "content"            # the message was sent: from here a lost answer leaves it in doubt


class _Dropped(Exception):
    """The connection went away (or the server said 421); `stage` says how far we got."""

    def __init__(self, stage: Stage, detail: str):
        super().__init__(detail)
        self.stage = stage


class SmtpBackend(Backend["list[bytes | _Signing]"]):
    name = "smtp"
    # messages signed in the sending threads before signing processes start (a proof never starts them)
    pool_after: float = 200

    @classmethod
    def from_settings(cls, settings: Settings, **options) -> Backend:
        return cls(settings.delivery.smtp, settings.newsletter, **options)

    def __init__(self, settings: SmtpSettings, newsletter: NewsletterSettings | _Newsletter, *,
                 password: str | None = None, dkim_key: str | bytes | None = None,
                 ssl_context: ssl.SSLContext | None = None, sleep=time.sleep):
        self.settings = settings
        self._sleep = sleep
        self.max_batch = settings.batch_size   # the most a crash can resend (docs/exactly-once.md)
        self.ssl_context = ssl_context
        self.return_path = settings.return_path or newsletter.from_email
        self._password = password
        if settings.username and password is None:
            self._password = secret(settings.password_env, key="[delivery.smtp] password_env")
        if settings.dkim_domain and settings.dkim_selector and dkim_key is None:
            dkim_key = secret(settings.dkim_key_env, key="[delivery.smtp] dkim_key_env")
        self._dkim_key = dkim_key.encode("ascii") if isinstance(dkim_key, str) else dkim_key
        self._signer: DkimSigner | None = None
        self._signing: SigningPool | None = None   # DKIM in other processes, once pool_after messages were signed here
        self._encoded = 0
        self._conn: smtplib.SMTP | None = None
        self._lanes: list[SmtpBackend] = []   # with connections > 1: one single-connection backend each
        self._pool: ThreadPoolExecutor | None = None

    # --- connection ---------------------------------------------------------------------------

    def open(self) -> None:
        if self._dkim_key:
            self.sign(b"From: check@example.org\r\n\r\nkey check\r\n")  # a bad key fails now
        if self.settings.connections > 1:
            self._open_lanes()
        else:
            self._conn = self._connect()

    def _open_lanes(self) -> None:
        """The first connection now (so a bad server fails at open); the others on first use."""
        one = dataclasses.replace(self.settings, connections=1)
        self._lanes = [SmtpBackend(one, _Newsletter(self.return_path), password=self._password,
                                   dkim_key=self._dkim_key, ssl_context=self.ssl_context, sleep=self._sleep)
                       for _ in range(self.settings.connections)]
        self._pool = ThreadPoolExecutor(len(self._lanes), thread_name_prefix="smtp")
        self._lanes[0]._conn = self._lanes[0]._connect()

    def close(self) -> None:
        signing, self._signing = self._signing, None
        if signing is not None:
            signing.close()
        lanes, self._lanes = self._lanes, []
        for lane in lanes:
            lane.close()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.quit()
            except (smtplib.SMTPException, OSError):
                conn.close()

    def _connect(self) -> smtplib.SMTP:
        """Connect, retrying a relay that refuses or drops us (a restart) with backoff for
        `connect_retry_seconds`; auth and TLS failures are not retried."""
        deadline = time.monotonic() + self.settings.connect_retry_seconds
        delay = 0.5
        while True:
            try:
                return self._connect_once()
            except TemporaryDelivery:
                if time.monotonic() + delay > deadline:
                    raise
            self._sleep(delay)
            delay = min(delay * 2, 15.0)

    def _connect_once(self) -> smtplib.SMTP:
        """Connect, STARTTLS and log in: the one place connection errors are translated."""
        s, where = self.settings, f"{self.settings.host}:{self.settings.port}"
        context = self.ssl_context or ssl.create_default_context(cafile=s.ca_file or None)
        name = s.ehlo_name or None
        conn: smtplib.SMTP | None = None
        try:
            if s.tls:
                conn = smtplib.SMTP_SSL(s.host, s.port, local_hostname=name, timeout=s.timeout, context=context)
            else:
                conn = smtplib.SMTP(s.host, s.port, local_hostname=name, timeout=s.timeout)
            conn.ehlo()
            if s.starttls and not s.tls:
                conn.starttls(context=context)
                conn.ehlo()
            if s.username:
                conn.login(s.username, self._password or "")
            return conn
        except smtplib.SMTPAuthenticationError as exc:
            _close(conn)
            raise PermanentDelivery(f"{where} refused the login of {s.username!r}", backend=self.name,
                                    status=exc.smtp_code, detail=_words(exc.smtp_error)) from exc
        except (smtplib.SMTPNotSupportedError, ssl.SSLError) as exc:
            _close(conn)
            raise PermanentDelivery(f"{where}: TLS or AUTH not available as configured ({exc})",
                                    backend=self.name) from exc
        except (smtplib.SMTPException, OSError) as exc:
            _close(conn)
            raise TemporaryDelivery(f"cannot connect to {where}: {exc}", backend=self.name) from exc

    @property
    def _live(self) -> smtplib.SMTP:
        """The connection, which `_send` opens before each message."""
        if self._conn is None:
            raise RuntimeError("no SMTP connection")
        return self._conn

    def _reconnect(self) -> None:
        _close(self._conn)
        self._conn = self._connect()

    # --- sending ------------------------------------------------------------------------------

    def verp(self, ref: str) -> str:
        """The envelope sender for one delivery: `local+REF@domain` (Postfix's `+` delimiter)."""
        local, _, domain = self.return_path.rpartition("@")
        return f"{local}+{ref}@{domain}"

    def sign(self, data: bytes) -> bytes:
        """Prepend a DKIM-Signature (relaxed/relaxed, rsa-sha256): deliver/dkim_sign.py."""
        try:
            return self._dkim_signer().sign(data) + data
        except (ValueError, TypeError) as exc:  # a malformed or non-RSA PEM
            raise PermanentDelivery(f"cannot DKIM-sign with the key in ${self.settings.dkim_key_env}: {exc}",
                                    backend=self.name) from exc

    def _dkim_signer(self):
        """This backend's DkimSigner, made on first use (ValueError / TypeError for a bad key)."""
        if self._signer is None:
            from mailer.send.deliver.dkim_sign import (
                DkimSigner,  # cryptography: only with DKIM (BENCHMARKS.md)
            )

            s = self.settings
            if self._dkim_key is None:
                raise ValueError("no key")
            self._signer = DkimSigner(s.dkim_selector.encode("ascii"), s.dkim_domain.encode("ascii"),
                                      self._dkim_key, DKIM_HEADERS)
        return self._signer

    def encode(self, batch: Sequence) -> list[bytes | _Signing]:
        """Each message as the DATA content, dot-stuffed and terminated, ready for the wire. With
        DKIM, the message still to sign: by the connection's own thread as it sends it (`_Unsigned`)
        for the first `pool_after` messages, then by the signing processes, which start on the
        next batches while this one is on the wire (`_Signing`). `cryptography` holds the GIL
        while it signs, so threads alone would sign one message at a time (deliver/dkim_sign.py)."""
        if not self._dkim_key:
            return [_for_data(out.as_bytes()) for out in batch]
        messages = [out.as_bytes() for out in batch]
        pool = self._signing_pool(len(messages))
        return [_Unsigned(m) for m in messages] if pool is None else self._submit(pool, messages)

    def _signing_pool(self, count: int) -> SigningPool | None:
        self._encoded += count
        if self._signing is None and self._encoded > self.pool_after and self.settings.dkim_processes >= 0:
            from mailer.send.deliver.dkim_sign import (
                SigningPool,  # cryptography: only with DKIM (BENCHMARKS.md)
            )

            # the key is good: open() and the messages before these were signed with it
            processes = self.settings.dkim_processes or max(1, (os.cpu_count() or 2) - 1)
            self._signing = SigningPool(self._dkim_signer(), processes)
        return self._signing

    def _submit(self, pool: SigningPool, messages: list[bytes]) -> list[bytes | _Signing]:
        try:
            signatures = pool.submit(messages)
        except (BrokenProcessPool, RuntimeError):  # a signing process died: sign here from now on
            self.pool_after = float("inf")
            self._signing = None
            pool.close()
            return [_Unsigned(m) for m in messages]
        return [_Signing(m, signatures, i) for i, m in enumerate(messages)]

    def _send(self, batch: Sequence, encoded: list[bytes | _Signing]) -> list[Result]:
        """One result per message, each in its own transaction. A failure of the whole backend at
        the batch's first message raises, as for a single message; partway through (server gone
        twice, return path refused), the messages already sent keep their results and the rest are
        RETRY_LATER, so the ledger records what went instead of putting the whole batch back (the
        next batch meets the failure first and raises if it persists)."""
        if self._conn is None and not self._lanes:
            self.open()
        if self._lanes:
            return self._send_parts(batch, encoded)
        results: list[Result] = []
        for out, data in zip(batch, encoded, strict=True):
            try:
                if self._conn is None:  # a failed RSET dropped it
                    self._conn = self._connect()
                results.append(self._send_one(out, self._signed(data)))
            except (TemporaryDelivery, PermanentDelivery) as exc:
                if not results:
                    raise
                _close(self._conn)  # in an unknown state: the next batch starts on a fresh one
                self._conn = None
                why = f"not sent: {exc}"
                return results + [Result(o.ref, ResultStatus.RETRY_LATER, detail=why) for o in batch[len(results):]]
        return results

    def _signed(self, data: bytes | _Signing) -> bytes:
        """What `encode` left for a message -> its bytes for DATA, signed here if not yet."""
        if isinstance(data, _Signing):
            return _for_data(data.signed(self.sign))
        if type(data) is _Unsigned:
            return _for_data(self.sign(data))
        return data

    def _send_parts(self, batch: Sequence, encoded: list[bytes | _Signing]) -> list[Result]:
        """Contiguous parts of the batch, one per connection, at once. A part whose connection
        failed at its first message sent nothing: its readers wait (RETRY_LATER) unless every
        part failed so, which raises as a single connection would."""
        size = -(-len(batch) // len(self._lanes))
        parts = [(lane, k) for lane, k in zip(self._lanes, range(0, len(batch), size), strict=False)]
        if len(parts) == 1:
            return self._lanes[0]._send(batch, encoded)
        pool = self._pool
        assert pool is not None   # opened with the lanes
        futures = [pool.submit(lane._send, batch[k:k + size], encoded[k:k + size]) for lane, k in parts]
        results: list[Result] = []
        failures = []
        for (_, k), future in zip(parts, futures, strict=True):
            try:
                results += future.result()
            except (TemporaryDelivery, PermanentDelivery) as exc:
                failures.append(exc)
                results += [Result(o.ref, ResultStatus.RETRY_LATER, detail=f"not sent: {exc}")
                            for o in batch[k:k + size]]
        if len(failures) == len(parts):
            raise failures[0]
        return results

    def _send_one(self, out, data: bytes) -> Result:
        sender = self.verp(out.ref)
        try:
            return self._transaction(sender, out, data)
        except _Dropped as first:
            if first.stage is Stage.CONTENT:  # the server may have taken it: RFC 5321 4.5.3.2.6
                # in doubt first, reconnect later (the next message's `_send`): a relay that stays
                # down must not turn this answer into an exception that loses it
                _close(self._conn)
                self._conn = None
                return Result(out.ref, ResultStatus.IN_DOUBT, detail=f"connection lost after DATA: {first}")
            self._reconnect()
        try:
            return self._transaction(sender, out, data)
        except _Dropped as again:
            raise TemporaryDelivery("the server dropped the connection twice in a row", backend=self.name,
                                    detail=str(again)) from again

    def _transaction(self, sender: str, out, data: bytes) -> Result:
        """MAIL, RCPT, DATA and the content. Our addresses are checked ASCII addr-specs, so the
        commands are written directly (smtplib's mail()/rcpt() re-parse each address, and its
        data() dot-stuffs with a regex costing more than the rest of the message)."""
        conn, stage = self._live, Stage.MAIL
        try:
            code, reply = _command(conn, "mail", f"FROM:<{sender}>")
            if code == 250:
                stage = Stage.RCPT
                code, reply = _command(conn, "rcpt", f"TO:<{out.email}>")
            if code in (250, 251):
                stage = Stage.DATA
                code, reply = _command(conn, "data")
            if code == 354:
                stage = Stage.CONTENT
                conn.send(data)
                code, reply = conn.getreply()
        except (smtplib.SMTPServerDisconnected, ConnectionError, TimeoutError) as exc:
            raise _Dropped(stage, str(exc) or type(exc).__name__) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise TemporaryDelivery(f"SMTP error at {stage.upper()}: {exc}", backend=self.name) from exc
        if code == 250 and stage is Stage.CONTENT:
            return Result(out.ref, ResultStatus.ACCEPTED, provider_id=out.message_id, raw=f"{code} {_words(reply)}")
        return self._refused(out, stage, code, reply)

    def _refused(self, out, stage: Stage, code: int, reply: bytes) -> Result:
        words = _words(reply)
        if code == 421 and stage is not Stage.CONTENT and rate_limited(words):
            # "try later, you send too fast": nothing of this message was sent. The reader waits (the
            # ledger defers them, pacing.py slows that provider down) instead of being retried at once;
            # the server may have closed the channel, so the next message starts on a new connection.
            _close(self._conn)
            self._conn = None
            return Result(out.ref, ResultStatus.RETRY_LATER, detail=f"{code} {words}", raw=f"{stage}: {code} {words}")
        if code == 421:  # "closing transmission channel": reconnect and retry once
            raise _Dropped(stage, f"{code} {words}")
        try:
            self._live.rset()
        except (smtplib.SMTPException, OSError):
            self._conn = None  # reopened by the next _send
        if stage is Stage.MAIL and code >= 500:
            raise PermanentDelivery(self._refused_sender(code, words), backend=self.name, status=code, detail=words)
        status = ResultStatus.RETRY_LATER if 400 <= code < 500 else ResultStatus.REJECTED
        return Result(out.ref, status, detail=f"{code} {words}", raw=f"{stage}: {code} {words}")


    def _refused_sender(self, code: int, words: str) -> str:
        """What a 5xx at MAIL FROM says is wrong with us: no login, relaying refused, or the return path."""
        where = f"{self.settings.host}:{self.settings.port}"
        if code == 530 or "authenticat" in words.lower():
            login = ("set [delivery.smtp] username and password_env" if not self.settings.username
                     else f"the login of {self.settings.username!r} was not enough")
            return f"{where} requires authentication before it takes mail: {login}"
        if re.search(r"relay|client host", words, re.I):   # a 5.7.1 about the return path keeps its own words
            return f"{where} refuses to take mail from this host (relaying denied)"
        return f"the server refuses the return path {self.return_path}"


_RATE_WORDS = re.compile(r"rate|too many|throttl|unusual|volume", re.I)


def rate_limited(words: str) -> bool:
    """A 421's text that says "slow down" rather than "going away": an enhanced status 4.7.x (RFC
    3463: a policy refusal, as Gmail's `421 4.7.28`, Yahoo's `421 4.7.0 [TSS04]`, Microsoft's
    `421 4.7.500 Server busy` give), or words about rate, volume or throttling. A plain `421 4.3.2
    Service shutting down` is not: that message is retried at once on a new connection."""
    return bool(re.match(r"4\.7\.\d{1,3}\b", words.strip())) or bool(_RATE_WORDS.search(words))


class _Unsigned(bytes):
    """A message whose DKIM signature is made just before it is sent (see `encode`)."""


class _Signing:
    """A message whose DKIM signature a SigningPool process is making, with its batch's."""

    __slots__ = ("message", "signatures", "index")

    def __init__(self, message: bytes, signatures: Future, index: int):
        self.message, self.signatures, self.index = message, signatures, index

    def signed(self, sign_here) -> bytes:
        try:
            return self.signatures.result()[self.index] + self.message
        except BrokenProcessPool:  # a signing process was killed: the same signature, made here
            return sign_here(self.message)


@dataclasses.dataclass(frozen=True)
class _Newsletter:
    """What a lane needs of NewsletterSettings: its return path is already resolved."""
    from_email: str


def _command(conn: smtplib.SMTP, name: str, argument: str = "") -> tuple[int, bytes]:
    conn.putcmd(name, argument)
    return conn.getreply()


def _for_data(message: bytes) -> bytes:
    """RFC 5321 4.5.2: a line that starts with "." gets another; then the lone "." line."""
    body = message.replace(b"\r\n.", b"\r\n..")
    if body.startswith(b"."):
        body = b"." + body
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body + b".\r\n"


def _words(reply) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


def _close(conn) -> None:
    if conn is not None:
        try:
            conn.close()
        except OSError:
            pass
