"""`mailer doctor` against real parts: a local authoritative DNS server (dnslib) serving good and
broken zones, a relay with STARTTLS and a certificate, the real web service over https, the local
SendGrid server and dovecot. Each row of ZONES changes the good zone one way."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mailer.config import load_settings
from mailer.doctor import checks as doctor
from mailer.doctor import records
from mailer.doctor.result import Status
from mailer.doctor.spf import Evaluator, Path, SpfError
from tests.conftest import REPO
from tests.servers import dovecot as dc
from tests.servers.dns_server import SILENT, dns_server
from tests.servers.smtp_sink import SmtpSink
from tests.services import missing
from tests.web.live import serve_in_thread

SELECTOR, DOMAIN = "s2026", "example.org"
KEY_ENV = "MAILER_DKIM_PRIVATE_KEY"
SECRET = "doctor-secret-0123456789abcdef"


def pem(key) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode("ascii")


@pytest.fixture(scope="module")
def keys() -> dict[str, str]:
    return {"ours": pem(rsa.generate_private_key(65537, 2048)), "other": pem(rsa.generate_private_key(65537, 2048)),
            "short": pem(rsa.generate_private_key(65537, 1024)), "ec": pem(ec.generate_private_key(ec.SECP256R1()))}


@pytest.fixture(scope="module")
def relay(tls_pair):
    with SmtpSink(tls_context=tls_pair[0]) as sink:
        yield sink


@pytest.fixture(scope="module")
def https_base(tls_files, tmp_path_factory):
    """The real web service over https on loopback (the one-click route)."""
    from mailer.web import create_app

    folder = tmp_path_factory.mktemp("web")
    base = load_settings(REPO / "config.toml")
    settings = dataclasses.replace(base, path=folder / "config.toml", database=dataclasses.replace(
        base.database, url=f"sqlite:///{folder / 'web.db'}"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(settings.secret_key_env, SECRET)
        with serve_in_thread(create_app(settings), tls_files=tls_files) as url:
            yield url


def with_smtp(settings, **smtp):
    """The settings sending over SMTP, with these [delivery.smtp] keys."""
    return dataclasses.replace(settings, delivery=dataclasses.replace(
        settings.delivery, backend="smtp", smtp=dataclasses.replace(settings.delivery.smtp, **smtp)))


def dkim_txt(key_pem: str, monkeypatch, settings) -> str:
    """The zone data `mailer doctor --dkim-record` prints for a key."""
    monkeypatch.setenv(KEY_ENV, key_pem)
    return records.dkim_record(settings).partition(" IN TXT ")[2]


def good_zone(dkim: str) -> dict:
    return {
        DOMAIN: [("TXT", '"v=spf1 a:relay.example.org -all"'), ("MX", "10 mx.example.org.")],
        "relay.example.org": [("A", "127.0.0.1")],
        "mx.example.org": [("A", "192.0.2.25")],
        "bounce.example.org": [("TXT", '"v=spf1 include:_spf.example.org ~all"'), ("MX", "10 mx.example.org.")],
        "_spf.example.org": [("TXT", '"v=spf1 ip4:127.0.0.0/8 -all"')],
        f"{SELECTOR}._domainkey.{DOMAIN}": [("TXT", dkim)],
        f"_dmarc.{DOMAIN}": [("TXT", '"v=DMARC1; p=quarantine; rua=mailto:dmarc@example.org"')],
    }


def write_config(tmp_path, nameserver: str, relay_port: int, ca_file, base_url: str, **smtp) -> str:
    smtp_keys = {"host": "127.0.0.1", "port": relay_port, "starttls": True, "ca_file": str(ca_file),
                 "return_path": "bounces@bounce.example.org", "dkim_domain": DOMAIN, "dkim_selector": SELECTOR,
                 **smtp}
    lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in smtp_keys.items())
    path = tmp_path / "config.toml"
    path.write_text(f"""[newsletter]
name = "CRANK Call"
from_email = "crankcall@{DOMAIN}"
from_name = "CRANK Call"
reply_to = "editor@{DOMAIN}"
postal_address = "1 Example Avenue"
base_url = "{base_url}"

[delivery]
backend = "smtp"

[delivery.smtp]
{lines}

[dns]
nameservers = ["192.0.2.53:53"]   # never asked: [doctor] nameservers comes first

[doctor]
nameservers = ["{nameserver}"]
""")
    return str(path)


def _other(zone, keys, mp, s):
    zone[f"{SELECTOR}._domainkey.{DOMAIN}"] = [("TXT", dkim_txt(keys["other"], mp, s))]


def _set(name, records_):
    def change(zone, keys, mp, s):
        zone[name] = records_
    return change


def _drop(name):
    def change(zone, keys, mp, s):
        del zone[name]
    return change


# (what changes in the good zone, exit code, names that fail, names that warn)
ZONES = [
    ("everything published", None, 0, set(), {"bounce mailbox"}),
    ("no DMARC record", _drop(f"_dmarc.{DOMAIN}"), 1, {"DMARC"}, {"bounce mailbox"}),
    ("another key's DKIM record", _other, 1, {"DKIM"}, {"bounce mailbox"}),
    ("DMARC p=none", _set(f"_dmarc.{DOMAIN}", [("TXT", '"v=DMARC1; p=none"')]), 0, set(), {"DMARC", "bounce mailbox"}),
    ("DMARC without a policy", _set(f"_dmarc.{DOMAIN}", [("TXT", '"v=DMARC1; rua=mailto:x@example.org"')]),
     1, {"DMARC"}, {"bounce mailbox"}),
    ("two DMARC records", _set(f"_dmarc.{DOMAIN}", [("TXT", '"v=DMARC1; p=none"'), ("TXT", '"v=DMARC1; p=reject"')]),
     1, {"DMARC"}, {"bounce mailbox"}),
    ("no DKIM record", _drop(f"{SELECTOR}._domainkey.{DOMAIN}"), 1, {"DKIM"}, {"bounce mailbox"}),
    ("revoked DKIM key", _set(f"{SELECTOR}._domainkey.{DOMAIN}", [("TXT", '"v=DKIM1; p="')]), 1, {"DKIM"},
     {"bounce mailbox"}),
    ("SPF without the relay", _set(DOMAIN, [("TXT", '"v=spf1 ip4:192.0.2.1 -all"'), ("MX", "10 mx.example.org.")]),
     1, {"SPF (From domain example.org)"}, {"bounce mailbox"}),
    ("two SPF records", _set(DOMAIN, [("TXT", '"v=spf1 -all"'), ("TXT", '"v=spf1 a -all"'),
                                      ("MX", "10 mx.example.org.")]),
     1, {"SPF (From domain example.org)"}, {"bounce mailbox"}),
    ("return path without SPF or MX", _drop("bounce.example.org"), 1,
     {"SPF (return-path domain bounce.example.org)", "MX (return-path domain bounce.example.org)"}, {"bounce mailbox"}),
    ("return path with a null MX", _set("bounce.example.org", [("TXT", '"v=spf1 a:relay.example.org -all"'),
                                                                ("MX", "0 .")]),
     1, {"MX (return-path domain bounce.example.org)"}, {"bounce mailbox"}),
    ("DNS silent about DMARC", _set(f"_dmarc.{DOMAIN}", SILENT), 1, {"DMARC"}, {"bounce mailbox"}),
]


@pytest.mark.parametrize(("change", "code", "fails", "warns"), [row[1:] for row in ZONES], ids=[r[0] for r in ZONES])
def test_doctor_over_a_table_of_zones(cli, tmp_path, monkeypatch, keys, relay, https_base, tls_files,
                                      settings, change, code, fails, warns):
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_files[0]))     # the https service's self-signed certificate
    monkeypatch.setenv(settings.secret_key_env, SECRET)
    dkim_settings = with_smtp(settings, dkim_domain=DOMAIN, dkim_selector=SELECTOR)
    zone = good_zone(dkim_txt(keys["ours"], monkeypatch, dkim_settings))
    if change:
        change(zone, keys, monkeypatch, dkim_settings)
    monkeypatch.setenv(KEY_ENV, keys["ours"])
    with dns_server(zone) as (address, _):
        config = write_config(tmp_path, address, relay.port, tls_files[0], https_base)
        if code == 0:   # the same verdict in words
            assert cli("--config", config, "doctor").code == 0
        result = cli("--config", config, "doctor", "--json")
    report = json.loads(result.out)
    assert result.code == code, result.out
    assert {c["name"] for c in report["checks"] if c["status"] == "fail"} == fails
    assert {c["name"] for c in report["checks"] if c["status"] == "warn"} == warns
    assert report["ok"] is (code == 0)
    assert all(c["fix"] for c in report["checks"] if c["status"] != "pass")


def test_words_name_what_failed_and_what_to_do(cli, tmp_path, monkeypatch, keys, relay, tls_files, settings):
    monkeypatch.setenv(KEY_ENV, keys["ours"])
    with dns_server({}) as (address, _):
        result = cli("--config", write_config(tmp_path, address, relay.port, tls_files[0], "http://127.0.0.1:9"),
                     "doctor")
    assert result.code == 1
    assert "fail  DMARC: no DMARC record at _dmarc.example.org" in result.out
    assert "what to do: publish a TXT record at _dmarc.example.org" in result.out
    assert "not https" in result.out and "[newsletter] base_url" in result.out
    assert result.out.rstrip().endswith("failed") and "0 failed" not in result.out


def test_dkim_record_prints_what_to_publish(cli, tmp_path, monkeypatch, keys, settings):
    monkeypatch.setenv(KEY_ENV, keys["ours"])
    config = write_config(tmp_path, "127.0.0.1:53", 25, REPO / "config.toml", "https://example.org")
    result = cli("--config", config, "doctor", "--dkim-record")
    assert result.code == 0
    name, _, data = result.out.strip().partition(" IN TXT ")
    assert name == f"{SELECTOR}._domainkey.{DOMAIN}."
    assert all(len(piece) <= 255 for piece in data.strip('"').split('" "'))
    assert "".join(data.strip('"').split('" "')).startswith("v=DKIM1; k=rsa; p=MIIBIjAN")
    monkeypatch.setenv(KEY_ENV, "not a key")
    bad = cli("--config", config, "doctor", "--dkim-record")
    assert bad.code == 2 and "not a readable PEM private key" in bad.err   # a ConfigError


@pytest.mark.parametrize(("key", "status", "words"), [
    ("ours", Status.PASS, "2048 bits"),
    ("short", Status.WARN, "1024 bits"),
    ("ec", Status.FAIL, "not an RSA key"),
    ("garbage", Status.FAIL, "not a readable PEM"),
    (None, Status.FAIL, "which is not set"),
])
def test_dkim_keys(settings, monkeypatch, keys, key, status, words):
    s = with_smtp(settings, dkim_domain=DOMAIN, dkim_selector=SELECTOR)
    monkeypatch.delenv(KEY_ENV, raising=False)
    if key:
        monkeypatch.setenv(KEY_ENV, keys.get(key, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"))
    with dns_server({}) as (address, _):
        found = records.dkim_checks(doctor.make_resolver((address,), 2.0), s)
    assert found[0].status is status and words in found[0].found     # the key size, or why there is no key


def test_dkim_key_under_1024_bits_fails():
    class Small:
        key_size = 768
    assert records._key_size(Small()).status is Status.FAIL   # cryptography no longer makes such keys


@pytest.mark.parametrize(("dkim_domain", "from_domain", "aligned"), [
    ("example.org", "example.org", True),
    ("mail.example.org", "example.org", True),
    ("example.org", "news.example.org", True),
    ("example.co.uk", "news.example.co.uk", True),
    ("other.co.uk", "example.co.uk", False),
    ("example.net", "example.org", False),
    ("mail.news.example.co.uk", "example.co.uk", True),
    ("example.co.uk", "co.uk", False),                  # a public suffix is nobody's organization
    ("a.github.io", "b.github.io", False),              # the list's private part: two owners
    ("mail.a.github.io", "a.github.io", True),
    ("bar.blogspot.com", "foo.blogspot.com", False),
])
def test_relaxed_alignment(dkim_domain, from_domain, aligned):
    assert records.aligned(dkim_domain, from_domain) is aligned


@pytest.mark.parametrize(("domain", "organizational"), [
    ("example.co.uk", "example.co.uk"),
    ("www.example.co.uk", "example.co.uk"),
    ("News.Example.CO.UK.", "example.co.uk"),
    ("co.uk", "co.uk"),
    ("a.b.example.org", "example.org"),
    ("mail.example.com.au", "example.com.au"),
    ("x.user.github.io", "user.github.io"),
])
def test_the_organizational_domain_is_the_public_suffix_lists(domain, organizational):
    """By the Public Suffix List the publicsuffixlist package bundles (no download: the file is the package's)."""
    from pathlib import Path

    import publicsuffixlist

    assert records.organizational_domain(domain) == organizational
    bundled = Path(publicsuffixlist.__file__).parent
    assert any(bundled.glob("public_suffix_list*.dat"))


# (zone, path, allowed: True / False / "error")
SPF = [
    ({"d.test": [("TXT", '"v=spf1 ip4:10.0.0.0/8 -all"')]}, "10.1.2.3", True),
    ({"d.test": [("TXT", '"v=spf1 ip4:10.0.0.0/8 -all"')]}, "11.1.2.3", False),
    ({"d.test": [("TXT", '"v=spf1 ?ip4:10.0.0.0/8 -all"')]}, "10.1.2.3", False),
    ({"d.test": [("TXT", '"v=spf1 ip6:2001:db8::/32 -all"')]}, "2001:db8::1", True),
    ({"d.test": [("TXT", '"v=spf1 a/24 -all"'), ("A", "10.0.0.1")]}, "10.0.0.200", True),
    ({"d.test": [("TXT", '"v=spf1 mx -all"'), ("MX", "10 mx.d.test.")], "mx.d.test": [("A", "10.0.0.5")]},
     "10.0.0.5", True),
    ({"d.test": [("TXT", '"v=spf1 redirect=r.test"')], "r.test": [("TXT", '"v=spf1 ip4:10.0.0.5 -all"')]},
     "10.0.0.5", True),
    ({"d.test": [("TXT", '"v=spf1 exists:e.test -all"')], "e.test": [("A", "127.0.0.2")]}, "10.0.0.5", True),
    ({"d.test": [("TXT", '"v=spf1 ptr -all"')]}, "10.0.0.5", False),
    ({"d.test": [("TXT", '"v=spf1 include:gone.test -all"')]}, "10.0.0.5", "error"),
    ({"d.test": [("TXT", '"v=spf1 ip4:300.1.1.1 -all"')]}, "10.0.0.5", "error"),
    ({"d.test": [("TXT", '"v=spf1 frob:x -all"')]}, "10.0.0.5", "error"),
    ({"d.test": [("TXT", '"v=spf1 include:sendgrid.net -all"')]}, "include", True),
    ({"d.test": [("TXT", '"v=spf1 include:i.test -all"')], "i.test": [("TXT", '"v=spf1 include:sendgrid.net -all"')]},
     "include", True),
    ({"d.test": [("TXT", '"v=spf1 include:mailgun.org -all"')], "mailgun.org": [("TXT", '"v=spf1 -all"')]},
     "include", False),
    ({f"d{i}.test" if i else "d.test": [("TXT", f'"v=spf1 include:d{i + 1}.test -all"')] for i in range(12)},
     "10.0.0.5", "error"),
]


@pytest.mark.parametrize(("zone", "target", "allowed"), SPF)
def test_spf_evaluation(zone, target, allowed):
    import ipaddress

    path = Path(include="sendgrid.net") if target == "include" else Path(addresses=(ipaddress.ip_address(target),))
    with dns_server(zone) as (address, _):
        evaluator = Evaluator(doctor.make_resolver((address,), 2.0), path)
        if allowed == "error":
            with pytest.raises(SpfError):
                evaluator.allows("d.test")
        else:
            assert evaluator.allows("d.test") is allowed


@pytest.mark.parametrize(("key", "scopes", "status", "words"), [
    ("SG.test", ("mail.send",), Status.PASS, "may send"),
    ("SG.forbidden", ("mail.send",), Status.FAIL, "lacks the mail.send scope"),
    ("SG.wrong", ("mail.send",), Status.FAIL, "refused the key"),
    (None, ("mail.send",), Status.FAIL, "is not set"),
])
def test_sendgrid_key(settings, sendgrid_server, monkeypatch, key, scopes, status, words):
    from mailer.doctor.reach import sendgrid_check

    sendgrid_server.scopes = scopes
    s = dataclasses.replace(settings, delivery=dataclasses.replace(settings.delivery, backend="sendgrid", sendgrid=(
        dataclasses.replace(settings.delivery.sendgrid, host=sendgrid_server.url))))
    monkeypatch.delenv("SENDGRID_API_KEY", raising=False)
    if key:
        monkeypatch.setenv("SENDGRID_API_KEY", key)
    check = sendgrid_check(s)
    assert check.status is status and words in check.found


def test_sendgrid_path_checks_the_include_and_no_return_path(settings, sendgrid_server, monkeypatch, tmp_path):
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.test")
    monkeypatch.setenv(settings.secret_key_env, SECRET)
    s = dataclasses.replace(settings, delivery=dataclasses.replace(settings.delivery, backend="sendgrid", sendgrid=(
        dataclasses.replace(settings.delivery.sendgrid, host=sendgrid_server.url))))
    zone = {DOMAIN: [("TXT", '"v=spf1 include:sendgrid.net -all"')],
            f"_dmarc.{DOMAIN}": [("TXT", '"v=DMARC1; p=reject"')]}
    with dns_server(zone) as (address, _):
        found = {c.name: c for c in doctor.run_checks(s, doctor.make_resolver((address,), 2.0))}
    assert found["SPF (From domain example.org)"].status is Status.PASS
    assert found["DKIM"].status is Status.WARN and found["DMARC"].status is Status.PASS
    assert found["SendGrid key"].status is Status.PASS
    assert not any(name.startswith("MX") for name in found) and "bounce mailbox" not in found


def test_outbox_and_a_relay_that_is_down(settings, monkeypatch, tmp_path):
    monkeypatch.setenv(settings.secret_key_env, SECRET)
    with dns_server({DOMAIN: [("TXT", '"v=spf1 -all"')]}) as (address, _):
        found = {c.name: c for c in doctor.run_checks(settings, doctor.make_resolver((address,), 2.0))}
    assert found["delivery"].status is Status.WARN and "outbox" in found["SPF (From domain example.org)"].found
    with SmtpSink() as sink:
        port = sink.port
    s = dataclasses.replace(settings, delivery=dataclasses.replace(settings.delivery, backend="smtp", smtp=(
        dataclasses.replace(settings.delivery.smtp, host="127.0.0.1", port=port))))
    from mailer.doctor.reach import relay_check

    check = relay_check(s)
    assert check.status is Status.FAIL and "cannot reach 127.0.0.1" in check.found


@pytest.mark.parametrize(("sink_tls", "trusted", "status", "words"), [
    (False, False, Status.WARN, "without STARTTLS"),
    (True, False, Status.FAIL, "TLS failed"),
    (True, True, Status.PASS, "valid certificate"),
])
def test_relay_tls(settings, tls_pair, tls_files, sink_tls, trusted, status, words):
    from mailer.doctor.reach import relay_check

    with SmtpSink(tls_context=tls_pair[0] if sink_tls else None) as sink:
        s = dataclasses.replace(settings, delivery=dataclasses.replace(settings.delivery, backend="smtp", smtp=(
            dataclasses.replace(settings.delivery.smtp, host="127.0.0.1", port=sink.port, starttls=True,
                                ca_file=str(tls_files[0]) if trusted else ""))))
        check = relay_check(s)
    assert check.status is status and words in check.found


def test_relay_login(settings, monkeypatch):
    from mailer.doctor.reach import relay_check

    with SmtpSink(users={"mailer": "s3cret"}) as sink:
        s = dataclasses.replace(settings, delivery=dataclasses.replace(settings.delivery, backend="smtp", smtp=(
            dataclasses.replace(settings.delivery.smtp, host="127.0.0.1", port=sink.port, username="mailer"))))
        monkeypatch.setenv("MAILER_SMTP_PASSWORD", "wrong")
        assert "refused the login" in relay_check(s).found
        monkeypatch.delenv("MAILER_SMTP_PASSWORD")
        assert "MAILER_SMTP_PASSWORD" in relay_check(s).found
        monkeypatch.setenv("MAILER_SMTP_PASSWORD", "s3cret")
        assert relay_check(s).status is Status.WARN     # loopback, no STARTTLS


def test_secret_key_file_modes(settings, monkeypatch):
    from mailer.config import secret_key_file
    from mailer.doctor.reach import secret_key_check

    monkeypatch.delenv(settings.secret_key_env, raising=False)
    path = secret_key_file(settings)
    assert secret_key_check(settings).status is Status.FAIL
    path.write_text("k\n")
    os.chmod(path, 0o644)
    check = secret_key_check(settings)
    assert check.status is Status.FAIL and "chmod 600" in check.fix
    os.chmod(path, 0o600)
    assert secret_key_check(settings).status is Status.PASS


@pytest.mark.parametrize(("base", "words"), [
    ("{live}", "answers directly (400)"),
    ("{live}/newsletter", "answered 404"),        # the service is not where base_url says
    ("https://127.0.0.1:9", "failed"),            # nothing listens
])
def test_one_click_route_must_answer(settings, https_base, tls_files, monkeypatch, base, words):
    from mailer.doctor.reach import one_click_check

    monkeypatch.setenv("SSL_CERT_FILE", str(tls_files[0]))
    s = dataclasses.replace(settings, newsletter=dataclasses.replace(settings.newsletter,
                                                                      base_url=base.format(live=https_base)))
    assert words in one_click_check(s).found


def test_bounce_mailbox_logs_in(settings, monkeypatch):
    from mailer.doctor.reach import imap_check

    reason = dc.missing()
    if reason:
        missing(reason)
    with dc.Dovecot() as server:
        imap = dataclasses.replace(settings.bounces.imap, host="127.0.0.1", port=server.port, tls=False,
                                   username=dc.USER)
        s = dataclasses.replace(settings, bounces=dataclasses.replace(settings.bounces, imap=imap))
        monkeypatch.setenv("MAILER_IMAP_PASSWORD", dc.PASSWORD)
        refused = imap_check(s)         # no STARTTLS on this dovecot: the password would cross in clear
        assert refused.status is Status.FAIL and "allow_plaintext_login" in refused.found
        imap = dataclasses.replace(imap, allow_plaintext_login=True)
        s = dataclasses.replace(settings, bounces=dataclasses.replace(settings.bounces, imap=imap))
        monkeypatch.setenv("MAILER_IMAP_PASSWORD", dc.PASSWORD)
        assert imap_check(s).status is Status.PASS
        monkeypatch.setenv("MAILER_IMAP_PASSWORD", "wrong")
        assert imap_check(s).status is Status.FAIL


@pytest.mark.parametrize(("server", "expected"), [
    ("127.0.0.1", ("127.0.0.1", 53)), ("127.0.0.1:5353", ("127.0.0.1", 5353)), ("::1", ("::1", 53)),
    ("[::1]:5353", ("::1", 5353)), ("[::1]", ("::1", 53)),
])
def test_nameservers_as_written(server, expected):
    from mailer.resolver import host_port

    assert host_port(server) == expected


def test_relay_addresses_by_name_and_a_name_that_does_not_resolve():
    from mailer.doctor.reach import relay_addresses
    from mailer.errors import ConfigError

    assert str(relay_addresses("localhost")[0]) in ("127.0.0.1", "::1")
    with pytest.raises(ConfigError, match="does not resolve"):
        relay_addresses("relay.invalid")


# (zone, the check's status, words in what it found)
MORE = [
    ("DMARC at the organizational domain", {"_dmarc.example.org": [("TXT", '"v=DMARC1; p=reject"')]},
     lambda r, s: records.dmarc_check(r, "news.example.org"), Status.PASS, "_dmarc.example.org"),
    ("SPF of a relay by its MX", {"example.org": [("TXT", '"v=spf1 mx -all"'), ("MX", "10 mx.example.org.")],
                                  "mx.example.org": [("A", "127.0.0.1")]},
     lambda r, s: records.spf_check(r, "example.org", doctor.sending_path(s), "From domain"), Status.PASS, "allows"),
    ("SPF silent", {"example.org": SILENT},
     lambda r, s: records.spf_check(r, "example.org", doctor.sending_path(s), "From domain"), Status.FAIL,
     "no answer from DNS"),
    ("DKIM record for another kind of key",
     {f"{SELECTOR}._domainkey.{DOMAIN}": [("TXT", '"v=DKIM1; k=ed25519; p=AAAA"')]},
     lambda r, s: records.dkim_checks(r, s)[1], Status.FAIL, "ed25519"),
    ("DKIM record that is not base64", {f"{SELECTOR}._domainkey.{DOMAIN}": [("TXT", '"v=DKIM1; p=%%%"')]},
     lambda r, s: records.dkim_checks(r, s)[1], Status.FAIL, "another key"),
    ("MX silent", {"example.org": SILENT}, lambda r, s: records.mx_check(r, "example.org"), Status.FAIL,
     "no answer from DNS"),
]


@pytest.mark.parametrize(("zone", "check", "status", "words"), [row[1:] for row in MORE], ids=[r[0] for r in MORE])
def test_more_records(settings, monkeypatch, keys, zone, check, status, words):
    monkeypatch.setenv(KEY_ENV, keys["ours"])
    s = with_smtp(settings, host="127.0.0.1", dkim_domain=DOMAIN, dkim_selector=SELECTOR)
    with dns_server(zone) as (address, _):
        found = check(doctor.make_resolver((address,), 1.0), s)
    assert found.status is status and words in found.found


def test_dkim_domain_that_does_not_align(settings, monkeypatch, keys):
    monkeypatch.setenv(KEY_ENV, keys["ours"])
    s = with_smtp(settings, dkim_domain="example.net", dkim_selector=SELECTOR)
    with dns_server({}) as (address, _):
        found = records.dkim_checks(doctor.make_resolver((address,), 1.0), s)
    assert found[2].name == "DKIM alignment" and found[2].status is Status.FAIL


def test_relay_with_implicit_tls(settings, tls_pair, tls_files):
    from mailer.doctor.reach import relay_check

    with SmtpSink(tls_context=tls_pair[0], implicit_tls=True) as sink:
        s = with_smtp(settings, host="127.0.0.1", port=sink.port, tls=True, ca_file=str(tls_files[0]))
        assert relay_check(s).status is Status.PASS


def test_sendgrid_unreachable(settings, monkeypatch):
    from mailer.doctor.reach import sendgrid_check

    with SmtpSink() as sink:     # a port that was free a moment ago
        port = sink.port
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.test")
    s = dataclasses.replace(settings, delivery=dataclasses.replace(settings.delivery, backend="sendgrid", sendgrid=(
        dataclasses.replace(settings.delivery.sendgrid, host=f"http://127.0.0.1:{port}"))))
    check = sendgrid_check(s)
    assert check.status is Status.FAIL and "cannot reach" in check.found
