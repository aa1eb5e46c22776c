"""Stage 6b: SMTP over the wire to a real aiosmtpd on loopback."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import re
import socket

import pytest

from mailer.errors import PermanentDelivery, TemporaryDelivery
from mailer.send.deliver.base import ResultStatus
from mailer.send.deliver.smtp import SmtpBackend
from tests.deliver.helpers import readers
from tests.servers.smtp_sink import SmtpSink

# AUTH without TLS on loopback is deliberate; aiosmtpd warns about it on every connection.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


def backend_for(settings, port: int, **overrides) -> SmtpBackend:
    options = {k: overrides.pop(k) for k in ("password", "dkim_key", "ssl_context") if k in overrides}
    fields = {"host": "127.0.0.1", "port": port, "starttls": False, "timeout": 5.0, "connect_retry_seconds": 0,
              "return_path": "bounces@news.example.org", **overrides}
    smtp = dataclasses.replace(settings.delivery.smtp, **fields)
    return SmtpBackend(smtp, settings.newsletter, **options)


def send_all(backend, batch):
    with backend:
        return [r for out in batch for r in backend.send_batch([out])]


def test_each_message_is_one_transaction_with_a_verp_return_path(settings, edition, smtp_sink):
    batch = readers(edition, 3)
    results = send_all(backend_for(settings, smtp_sink.port), batch)
    assert [r.status for r in results] == [ResultStatus.ACCEPTED] * 3
    assert [(m.mail_from, m.rcpt_tos) for m in smtp_sink.messages] == [
        (f"bounces+1.{i}@news.example.org", (f"r{i}@example.org",)) for i in range(3)]
    assert smtp_sink.state.connections == 1  # reused
    msg = email.message_from_bytes(smtp_sink.messages[1].data, policy=email.policy.default)
    assert msg["Message-ID"] == batch[1].message_id == results[1].provider_id
    assert msg["List-Unsubscribe"] == f"<{batch[1].unsubscribe_url}>"
    assert results[0].raw.startswith("250 2.0.0 Ok: queued as")


@pytest.mark.parametrize("reply, status", [
    ("450 4.2.1 Mailbox busy, try later", ResultStatus.RETRY_LATER),
    ("452 4.5.3 Too many recipients", ResultStatus.RETRY_LATER),
    ("550 5.1.1 No such user here", ResultStatus.REJECTED),
    ("553 5.7.1 Relaying denied", ResultStatus.REJECTED),
])
def test_recipient_replies_become_results(settings, edition, reply, status):
    with SmtpSink(replies={"r1@example.org": reply}) as sink:
        results = send_all(backend_for(settings, sink.port), readers(edition, 3))
    assert [r.status for r in results] == [ResultStatus.ACCEPTED, status, ResultStatus.ACCEPTED]
    assert results[1].detail == reply
    assert [m.rcpt_tos for m in sink.messages] == [("r0@example.org",), ("r2@example.org",)]


@pytest.mark.parametrize("drop_after, connections", [(1, 5), (2, 3), (4, 2)])
def test_a_dropped_connection_is_reopened_and_nobody_is_missed_or_doubled(settings, edition, drop_after,
                                                                            connections):
    with SmtpSink(drop_after=drop_after) as sink:
        results = send_all(backend_for(settings, sink.port), readers(edition, 5))
    assert all(r.ok for r in results)
    assert [m.rcpt_tos[0] for m in sink.messages] == [f"r{i}@example.org" for i in range(5)]
    assert (sink.state.connections, sink.state.drops) == (connections, connections - 1)


A, LATER, REFUSED, DOUBT = ResultStatus.ACCEPTED, ResultStatus.RETRY_LATER, ResultStatus.REJECTED, ResultStatus.IN_DOUBT
CLOSING = "421 4.3.2 Service shutting down"
SENDER_REFUSED = "553 5.7.1 Sender address rejected: not owned by user"
SLOW_DOWN = "421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume"


@pytest.mark.parametrize("case, lanes, sink_options, statuses, received, connections", [
    ("all taken", 1, {}, [A] * 5, [0, 1, 2, 3, 4], 1),
    ("one reader refused", 1, {"replies": {"r2@example.org": "550 5.1.1 No such user"}},
     [A, A, REFUSED, A, A], [0, 1, 3, 4], 1),
    ("one reader busy", 1, {"replies": {"r1@example.org": "450 4.2.1 Mailbox busy"}},
     [A, LATER, A, A, A], [0, 2, 3, 4], 1),
    ("dropped mid-batch", 1, {"drop_after": 2}, [A] * 5, [0, 1, 2, 3, 4], 3),
    ("421 twice mid-batch: the rest waits", 1, {"replies": {"r2@example.org": CLOSING}},
     [A, A, LATER, LATER, LATER], [0, 1], 2),
    ("two connections, all taken", 2, {}, [A] * 5, [0, 1, 2, 3, 4], 2),
    ("two connections, one reader refused", 2, {"replies": {"r4@example.org": "550 5.1.1 No such user"}},
     [A, A, A, A, REFUSED], [0, 1, 2, 3], 2),
    ("two connections, dropped mid-part", 2, {"drop_after": 1}, [A] * 5, [0, 1, 2, 3, 4], 5),
    ("two connections, the second part's server gone", 2, {"replies": {"r3@example.org": CLOSING}},
     [A, A, A, LATER, LATER], [0, 1, 2], 3),
    # the server took r2's content and hung up before its reply: in doubt, never sent again
    ("connection lost after DATA", 1, {"drop_after_data": {"r2@example.org"}}, [A, A, DOUBT, A, A],
     [0, 1, 2, 3, 4], 2),
    ("return path refused mid-batch: the rest waits", 1,
     {"refuse_sender": SENDER_REFUSED, "refuse_sender_after": 3}, [A, A, A, LATER, LATER], [0, 1, 2], 1),
    # "slow down" (421 4.7.x, or words about rate): that reader waits, not retried at once; the next
    # message goes on a new connection, and a first message so answered does not stop the batch
    ("421 4.7.0 at RCPT: that reader waits", 1, {"replies": {"r2@example.org": SLOW_DOWN}},
     [A, A, LATER, A, A], [0, 1, 3, 4], 2),
    ("421 too many at RCPT: that reader waits", 1,
     {"replies": {"r0@example.org": "421 4.4.5 Too many connections from your host"}}, [LATER, A, A, A, A],
     [1, 2, 3, 4], 2),
    ("421 4.7.0 at MAIL mid-batch: the rest waits", 1, {"refuse_sender": SLOW_DOWN, "refuse_sender_after": 3},
     [A, A, A, LATER, LATER], [0, 1, 2], 2),
    ("421 4.7.0 at DATA: that reader waits", 1, {"data_replies": {"r2@example.org": SLOW_DOWN}},
     [A, A, LATER, A, A], [0, 1, 3, 4], 2),
    ("421 shutting down at DATA twice: the rest waits", 1, {"data_replies": {"r2@example.org": CLOSING}},
     [A, A, LATER, LATER, LATER], [0, 1], 2),
    ("421 4.7.0 and closed for the whole domain", 1, {"rate_limit": {"example.org": 60}}, [LATER] * 5, [], 5),
    ("two connections, 421 4.7.0 at RCPT", 2, {"replies": {"r1@example.org": SLOW_DOWN}},
     [A, LATER, A, A, A], [0, 2, 3, 4], 3),
])
def test_a_batch_goes_message_by_message_with_one_result_per_reader(settings, edition, case, lanes, sink_options,
                                                                     statuses, received, connections):
    batch = readers(edition, 5)
    with SmtpSink(**sink_options) as sink:
        backend = backend_for(settings, sink.port, batch_size=5, connections=lanes)
        with backend:
            results = backend.send_batch(batch)
    assert [r.status for r in results] == statuses
    assert [r.ref for r in results] == [out.ref for out in batch]
    assert sorted(m.rcpt_tos[0] for m in sink.messages) == [f"r{i}@example.org" for i in received]
    assert sink.state.connections == connections


@pytest.mark.parametrize("lanes, gone", [(1, ["r0@example.org"]), (2, ["r0@example.org", "r3@example.org"])])
def test_a_backend_failure_at_the_first_message_of_every_part_raises_as_for_one(settings, edition, lanes, gone):
    with SmtpSink(replies=dict.fromkeys(gone, CLOSING)) as sink:
        backend = backend_for(settings, sink.port, batch_size=5, connections=lanes)
        with backend, pytest.raises(TemporaryDelivery, match="dropped the connection twice"):
            backend.send_batch(readers(edition, 5))
    assert sink.messages == []


def test_a_connection_lost_after_data_says_so_and_the_next_message_goes_on_a_new_one(settings, edition):
    with SmtpSink(drop_after_data={"r1@example.org"}) as sink:
        results = send_all(backend_for(settings, sink.port), readers(edition, 3))
    assert [r.status for r in results] == [A, DOUBT, A]
    assert results[1].detail.startswith("connection lost after DATA")
    assert [m.rcpt_tos for m in sink.messages] == [(f"r{i}@example.org",) for i in range(3)]   # r1 once
    assert (sink.state.connections, sink.state.drops) == (2, 1)


@pytest.mark.parametrize("lanes", [1, 2])
def test_a_refused_return_path_stops_the_send_before_anything_goes(settings, edition, lanes):
    with SmtpSink(refuse_sender=SENDER_REFUSED) as sink:
        backend = backend_for(settings, sink.port, batch_size=4, connections=lanes)
        refused = pytest.raises(PermanentDelivery, match=r"refuses the return path bounces@news\.example\.org")
        with backend, refused as caught:
            backend.send_batch(readers(edition, 4))
    assert (caught.value.status, sink.messages) == (553, [])


def test_starttls_and_login(settings, edition, tls_pair):
    server_ctx, client_ctx = tls_pair
    with SmtpSink(tls_context=server_ctx, users={"mailer": "s3cret"}) as sink:
        backend = backend_for(settings, sink.port, starttls=True, username="mailer", password="s3cret",
                              ssl_context=client_ctx)
        assert all(r.ok for r in send_all(backend, readers(edition, 2)))
    assert len(sink.messages) == 2


def test_implicit_tls(settings, edition, tls_pair):
    server_ctx, client_ctx = tls_pair
    with SmtpSink(tls_context=server_ctx, implicit_tls=True) as sink:
        backend = backend_for(settings, sink.port, tls=True, ssl_context=client_ctx)
        assert all(r.ok for r in send_all(backend, readers(edition, 2)))
    assert len(sink.messages) == 2


def test_password_comes_from_the_environment_variable_config_names(settings, edition, monkeypatch):
    from mailer.errors import ConfigError

    monkeypatch.delenv("MAILER_SMTP_PASSWORD", raising=False)
    with pytest.raises(ConfigError, match="MAILER_SMTP_PASSWORD"):
        backend_for(settings, 25, username="mailer")
    monkeypatch.setenv("MAILER_SMTP_PASSWORD", "s3cret")
    with SmtpSink(users={"mailer": "s3cret"}) as sink:
        assert all(r.ok for r in send_all(backend_for(settings, sink.port, username="mailer"), readers(edition, 1)))


@pytest.mark.parametrize("case, error, words", [
    ("wrong password", PermanentDelivery, "refused the login"),
    ("nobody listening", TemporaryDelivery, "cannot connect"),
    ("no STARTTLS offered", PermanentDelivery, "TLS or AUTH"),
])
def test_connection_failures_stop_with_a_clear_error(settings, edition, case, error, words):
    with SmtpSink(users={"mailer": "s3cret"}) as sink, socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))                   # ours, never listening: connections are refused
        port = {"nobody listening": closed.getsockname()[1]}.get(case, sink.port)
        extra = {"wrong password": {"username": "mailer", "password": "nope"},
                 "no STARTTLS offered": {"starttls": True}}.get(case, {})
        with pytest.raises(error, match=words):
            send_all(backend_for(settings, port, **extra), readers(edition, 1))


@pytest.fixture(scope="module")
def dkim_pair():
    """A fresh 2048-bit key: its PEM, and a DNS lookup answering with its public key record."""
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)

    def dns(name, timeout=5):
        assert name == b"news._domainkey.example.org."
        return record

    return pem.decode(), dns


def test_dkim_signature_covers_the_one_click_headers_and_verifies(settings, edition, smtp_sink, dkim_pair):
    import dkim

    pem, dns = dkim_pair
    backend = backend_for(settings, smtp_sink.port, dkim_domain="example.org", dkim_selector="news", dkim_key=pem)
    send_all(backend, readers(edition, 2, names=lambda i: "Zoë \"Z\" O'Brien"))
    for message in smtp_sink.messages:
        assert dkim.verify(message.data, dnsfunc=dns)
        signature = email.message_from_bytes(message.data, policy=email.policy.compat32)["DKIM-Signature"]
        signed = {h.strip().lower() for h in re.search(r"h=([^;]+)", re.sub(r"\s+", "", signature)).group(1).split(":")}
        assert {"list-unsubscribe", "list-unsubscribe-post", "from", "to", "subject"} <= signed
        tampered = message.data.replace(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click",
                                        b"List-Unsubscribe-Post: List-Unsubscribe=Two-Click")
        assert not dkim.verify(tampered, dnsfunc=dns)


@pytest.mark.parametrize(("prepended", "verifies"), [
    (b"From: Not Us <ceo@example.org>\r\n", False),
    (b"Subject: Your account is suspended\r\n", False),
    (b"List-Unsubscribe: <https://attacker.example/u>\r\n", False),
    (b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n", False),
    (b"List-Id: <other.example.org>\r\n", True),       # signed once, not over-signed: the control
    (b"X-Added-In-Transit: yes\r\n", True),              # not signed at all: the control
], ids=["from", "subject", "list-unsubscribe", "list-unsubscribe-post", "list-id", "unsigned"])
def test_a_second_from_subject_or_one_click_header_prepended_breaks_the_signature(
        settings, sample_issue, smtp_sink, dkim_pair, prepended, verifies):
    """Over-signing (RFC 6376 section 8.15): From, Subject, List-Unsubscribe and
    List-Unsubscribe-Post are named twice in h=, so a second one added above ours fails."""
    import warnings

    import dkim

    from mailer.compose.personalize import prepare

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the test config's base_url is http on purpose
        edition = prepare(sample_issue, settings.newsletter, list_name="crank")
    pem, dns = dkim_pair
    send_all(backend_for(settings, smtp_sink.port, dkim_domain="example.org", dkim_selector="news", dkim_key=pem),
             readers(edition, 1))
    [message] = smtp_sink.messages
    assert dkim.verify(message.data, dnsfunc=dns)
    signature = re.sub(rb"\s+", b"", re.search(rb"DKIM-Signature:(.*?)\r\n(?! )(?!\t)", message.data, re.S).group(1))
    signed = re.search(rb"h=([^;]+)", signature).group(1).split(b":")
    assert [h for h in signed if signed.count(h) == 2][::2] == [b"from", b"subject", b"list-unsubscribe",
                                                                 b"list-unsubscribe-post"]
    assert dkim.verify(prepended + message.data, dnsfunc=dns) is verifies


def _kill(pool) -> None:
    for process in pool._pool._processes.values():
        process.kill()
        process.join()


@pytest.mark.parametrize("kill", [None, "between batches", "while signing"])
def test_a_large_send_is_signed_in_other_processes_and_every_signature_verifies(settings, edition, smtp_sink,
                                                                                dkim_pair, kill):
    """After `pool_after` messages the signatures come from a SigningPool process; one killed
    mid-send costs nothing: its messages are signed in the sending process instead."""
    import dkim

    pem, dns = dkim_pair
    backend = backend_for(settings, smtp_sink.port, dkim_domain="example.org", dkim_selector="news",
                          dkim_key=pem, dkim_processes=1, connections=2)
    backend.pool_after = 20
    batch, results, pools = readers(edition, 80), [], []
    with backend:
        for k in range(0, len(batch), 20):
            part = batch[k:k + 20]
            if kill == "between batches" and backend._signing is not None and not pools:
                pools.append(backend._signing)
                _kill(backend._signing)
            encoded = backend.encode(part)
            if kill == "while signing" and backend._signing is not None and not pools:
                pools.append(backend._signing)
                _kill(backend._signing)
            pools += [backend._signing] if backend._signing is not None else []
            results += backend.send_batch(part, encoded)
    assert pools, "the signing processes never started"
    assert [r.status for r in results] == [ResultStatus.ACCEPTED] * 80
    assert sorted(m.rcpt_tos[0] for m in smtp_sink.messages) == sorted(o.email for o in batch)
    assert all(dkim.verify(m.data, dnsfunc=dns) for m in smtp_sink.messages)


def test_a_bad_dkim_key_fails_before_anything_is_sent(settings, edition, smtp_sink):
    backend = backend_for(settings, smtp_sink.port, dkim_domain="example.org", dkim_selector="news",
                          dkim_key="-----BEGIN RSA PRIVATE KEY-----\nnot a key\n-----END RSA PRIVATE KEY-----\n")
    with pytest.raises(PermanentDelivery, match="DKIM"):
        send_all(backend, readers(edition, 1))
    assert smtp_sink.messages == []


def test_the_bench_sinks_bulk_data_reader_receives_the_same_bytes(settings, edition):
    batch = readers(edition, 3, names=lambda i: ".leading dot")  # dot-stuffing round trip
    with SmtpSink(bulk_data=True) as bulk, SmtpSink() as plain:
        send_all(backend_for(settings, bulk.port), batch)
        send_all(backend_for(settings, plain.port), batch)
    undated = lambda m: re.sub(rb"^Date: .*\r\n", b"", m.data, flags=re.M)  # noqa: E731
    assert [undated(m) for m in bulk.messages] == [undated(m) for m in plain.messages]
    assert [m.rcpt_tos for m in bulk.messages] == [m.rcpt_tos for m in plain.messages]


def test_our_dkim_signature_is_byte_for_byte_dkimpys_own(edition):
    import dkim
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from mailer.send.deliver.dkim_sign import DkimSigner
    from mailer.send.deliver.smtp import DKIM_HEADERS

    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption())
    signer = DkimSigner(b"news", b"example.org", pem, DKIM_HEADERS)
    odd = [b"From: a@example.org\r\nSubject:  x \r\n\r\n" + body for body in
           (b"", b"\r\n\r\n", b"a \t b\t\r\n  \r\n\r\n", b"last line ", b"x\r\n ", b"bare\nLF \r\n",
            b"  lead\r\nmid    dle\r\ntrail   \r\n", b"one two  three   four" + b" " * 17 + b"five\r\n",
            b"\t \t x \t\r\n \r\n", b"end  ", b" " * 1000)]
    messages = [out.as_bytes() for out in readers(edition, 3, names=lambda i: ["Zoë  O'Brien", "  a   b ", ".d"][i])]
    for message in messages + odd:
        theirs = dkim.sign(message, b"news", b"example.org", pem, include_headers=list(DKIM_HEADERS),
                           canonicalize=(b"relaxed", b"relaxed"))
        signed_at = int(re.search(rb"\bt=(\d+);", theirs).group(1))   # dkimpy reads the clock itself
        assert signer.sign(message, timestamp=signed_at) == theirs


def test_ehlo_name_and_ca_file_come_from_the_settings(settings, edition, tls_pair, tls_files):
    server_ctx, _ = tls_pair
    with SmtpSink(tls_context=server_ctx) as sink:
        backend = backend_for(settings, sink.port, starttls=True, ehlo_name="news.example.org",
                              ca_file=str(tls_files[0]))
        assert all(r.ok for r in send_all(backend, readers(edition, 2)))
        assert set(sink.state.helo_names) == {"news.example.org"} and len(sink.messages) == 2
        untrusted = backend_for(settings, sink.port, starttls=True)   # the system's CAs only
        with pytest.raises(PermanentDelivery, match="TLS"):
            send_all(untrusted, readers(edition, 1))
