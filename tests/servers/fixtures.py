"""Pytest fixtures for the local servers, for every test (tests/conftest.py names this module in `pytest_plugins`)."""

from __future__ import annotations

import datetime
import ssl
import warnings

import pytest

from mailer.model import ComposedIssue, marker
from tests.servers.sendgrid_server import SendGridServer
from tests.servers.smtp_sink import SmtpSink

__all__ = ["sendgrid_server", "smtp_sink", "tls_files", "tls_pair", "sample_issue", "edition"]


@pytest.fixture
def sendgrid_server():
    """A SendGrid-compatible server on a free loopback port; API key "SG.test"."""
    with SendGridServer() as server:
        yield server


@pytest.fixture
def smtp_sink():
    with SmtpSink() as sink:
        yield sink


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory):
    """(certificate PEM file, key PEM file): a self-signed certificate for 127.0.0.1."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("tls")
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


@pytest.fixture(scope="session")
def tls_pair(tls_files):
    """(server SSLContext, client SSLContext trusting it) for the self-signed 127.0.0.1 certificate."""
    cert_file, key_file = tls_files
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    return server, client


@pytest.fixture
def sample_issue() -> ComposedIssue:
    """A small composed issue carrying every marker, in both parts."""
    html = (f'<html><body><p>Dear {marker("name", "html")},</p>\n'
            + '<p style="font-family:Georgia,serif">CRANK Call — “a monthly review” of café culture.</p>\n' * 40
            + f'<p>Sent to {marker("email", "html")}. <a href="{marker("unsubscribe_url", "html")}">Unsubscribe</a>'
            f' · <a href="{marker("archive_url", "html")}">View online</a></p></body></html>\n')
    text = (f"Dear {marker('name', 'text')},\n\n" + "CRANK Call — “a monthly review” of café culture.\n" * 40
            + f"\nSent to {marker('email', 'text')}.\nUnsubscribe: {marker('unsubscribe_url', 'text')}\n"
            f"View online: {marker('archive_url', 'text')}\n")
    return ComposedIssue(slug="2024-11", subject="CRANK Call | November 2024", preheader="The month in review",
                         mjml="<mjml></mjml>", html=html, text=text)


@pytest.fixture
def edition(sample_issue, settings):
    from mailer.compose.personalize import prepare

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the test config's base_url is http on purpose
        return prepare(sample_issue, settings.newsletter)
