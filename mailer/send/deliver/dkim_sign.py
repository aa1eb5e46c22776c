"""Message bytes -> a DKIM-Signature header (rsa-sha256, relaxed/relaxed), signed in C.

dkimpy signs with its own pure-Python RSA: about 12 ms a message, which capped a signed SMTP
send near 80 messages a second. Here dkimpy still does the header side exactly as before (parsing
the header block, relaxed header canonicalization, choosing the header fields `h=` names, the tag
order and the folding), and the RSA signature moves to `cryptography` (OpenSSL): the SHA-256 of
the canonical headers is signed as a pre-hashed digest. The body's relaxed canonicalization
(RFC 6376 3.4.4) is done here for a CRLF message by finding the few runs of spaces (bytes.find)
instead of rewriting the whole body once per pass; any other message goes through dkimpy's own.
The result is byte for byte what `dkim.sign` makes for the same message, key and time
(tests/deliver/test_smtp.py).

`cryptography` holds the GIL while OpenSSL signs, so signing threads do not run in parallel with
the thread that sends: `SigningPool` signs batches in other processes instead (BENCHMARKS.md,
"Send: DKIM-signed SMTP"; the choice in docs/decisions.md).
"""

from __future__ import annotations

import base64
import hashlib
import multiprocessing
import re
import time
from concurrent.futures import Future, ProcessPoolExecutor

import dkim
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from dkim.canonicalization import CanonicalizationPolicy, Relaxed

_POLICY = CanonicalizationPolicy(Relaxed, Relaxed)
_NAME = b"DKIM-Signature"


class DkimSigner:
    """One key, selector and domain; `sign(message)` returns the header line to prepend."""

    def __init__(self, selector: bytes, domain: bytes, private_key_pem: bytes, include_headers):
        self.args = (selector, domain, private_key_pem, tuple(include_headers))   # to rebuild it elsewhere
        key = load_pem_private_key(private_key_pem, password=None)  # ValueError / TypeError when bad
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("the DKIM key must be an RSA private key (rsa-sha256)")
        self.key, self.selector, self.domain = key, selector, domain
        self.include = tuple(h.lower() for h in include_headers)
        if b"from" not in self.include:
            raise ValueError("the From header field must be signed")

    def sign(self, message: bytes, timestamp: int | None = None) -> bytes:
        headers, body = _parse(message)
        body_hash = base64.b64encode(hashlib.sha256(body).digest())
        fields = [(b"v", b"1"), (b"a", b"rsa-sha256"), (b"c", b"relaxed/relaxed"), (b"d", self.domain),
                  (b"i", b"@" + self.domain), (b"q", b"dns/txt"), (b"s", self.selector),
                  (b"t", str(int(time.time() if timestamp is None else timestamp)).encode("ascii")),
                  (b"h", b" : ".join(self.include)), (b"bh", body_hash), (b"b", b"0" * 60)]
        unsigned = dkim.fold(b"; ".join(b"=".join(f) for f in fields), namelen=len(_NAME), linesep=b"\r\n")
        unsigned = dkim.RE_BTAG.sub(b"\\1", unsigned)
        digest = hashlib.sha256()
        dkim.hash_headers(digest, _POLICY, _POLICY.canonicalize_headers(headers), self.include,
                          (_NAME, b" " + unsigned), None)
        fields[-1] = (b"b", base64.b64encode(self._rsa(digest.digest())))
        value = dkim.fold(b"; ".join(b"=".join(f) for f in fields) + b"\r\n", namelen=len(_NAME), linesep=b"\r\n")
        return _NAME + b": " + value

    def _rsa(self, digest: bytes) -> bytes:
        return self.key.sign(digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))


def _parse(message: bytes) -> tuple[list, bytes]:
    """(header fields as dkimpy parses them, the relaxed canonical body)."""
    end = message.find(b"\r\n\r\n")
    crlf = message.count(b"\r\n")
    if end <= 0 or message.count(b"\r") != crlf or message.count(b"\n") != crlf:
        headers, body = dkim.rfc822_parse(message)
        return headers, _POLICY.canonicalize_body(body)
    headers, _ = dkim.rfc822_parse(message[:end + 2])
    return headers, relaxed_body(message[end + 4:])


def relaxed_body(body: bytes) -> bytes:
    """RFC 6376 3.4.4 for a body whose CRs and LFs all come as CRLF: WSP runs to one space, no WSP
    before a CRLF, no empty lines at the end (an empty body stays empty), as dkimpy does it."""
    if b"\t" in body:
        body = body.replace(b"\t", b" ")
    if b"  " in body:
        body = _single_spaces(body)
    if b" \r\n" in body:
        body = body.replace(b" \r\n", b"\r\n")
    body = body.rstrip(b"\r\n")   # every CR and LF here is one CRLF pair: whole empty lines go
    return body + b"\r\n" if body else b""


_SPACES = re.compile(rb" +")


def _single_spaces(body: bytes) -> bytes:
    """Each run of spaces as one space. A composed issue has a few dozen runs in 45 KB: finding
    them costs far less than rewriting the whole body once per halving pass."""
    pieces, start = [], 0
    while (at := body.find(b"  ", start)) >= 0:
        pieces.append(body[start:at + 1])
        run = _SPACES.match(body, at)
        assert run is not None   # the run `find` found
        start = run.end()
    pieces.append(body[start:])
    return b"".join(pieces)


class SigningPool:
    """Signs batches of messages in `processes` other processes, each with its own DkimSigner.

    `submit(messages)` returns a Future of their DKIM-Signature headers, in order. The processes
    are spawned (not forked: the sending process has threads), so starting costs an interpreter
    and the imports; the caller starts a pool only for a send large enough to pay for it."""

    def __init__(self, signer: DkimSigner, processes: int):
        self._pool = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_start_signer, initargs=signer.args)

    def submit(self, messages: list[bytes]) -> Future:
        return self._pool.submit(_sign_all, messages)

    def close(self) -> None:
        self._pool.shutdown(cancel_futures=True)


_signer: DkimSigner | None = None   # in a SigningPool process: its one signer


def _start_signer(*args) -> None:
    global _signer  # noqa: PLW0603 - one signer per pool process, made by its initializer
    _signer = DkimSigner(*args)


def _sign_all(messages: list[bytes]) -> list[bytes]:
    signer = _signer
    assert signer is not None   # set by _start_signer, the pool's initializer
    return [signer.sign(m) for m in messages]
