"""`mailer bounces fetch` against Debian's dovecot on loopback (tests/servers/dovecot.py): the
same reading as `scan`, over IMAP, and what was processed moves to the processed folder."""

from __future__ import annotations

import json

import pytest

from tests.bounces.conftest import SECRET, with_database
from tests.bounces.samples import dsn
from tests.bounces.test_apply import statuses
from tests.conftest import REPO
from tests.servers import dovecot as dc
from tests.services import missing


@pytest.fixture
def imap():
    reason = dc.missing()
    if reason:
        missing(reason)
    with dc.Dovecot() as server:
        yield server


@pytest.fixture
def fetch_config(bounce_config, imap, monkeypatch, tmp_path):
    monkeypatch.setenv("MAILER_IMAP_PASSWORD", dc.PASSWORD)
    text = with_database(bounce_config, f"sqlite:///{tmp_path / 'fetch.db'}").read_text()
    text = text.replace('host = ""', 'host = "127.0.0.1"', 1).replace("port = 993", f"port = {imap.port}")
    text = text.replace("tls = true", "tls = false").replace('username = ""\npassword_env = "MAILER_IMAP',
                                                             f'username = "{dc.USER}"\npassword_env = "MAILER_IMAP')
    bounce_config.write_text(text.replace("allow_plaintext_login = false", "allow_plaintext_login = true"))
    return bounce_config


def test_fetch_reads_the_folder_applies_the_policy_and_moves_what_it_processed(cli, fetch_config, imap):
    from mailer.config import database_url, load_settings
    from mailer.migrate import connect
    from mailer.send.refs import sign_ref
    from subscribers import store

    assert load_settings(fetch_config).bounces.imap.username == dc.USER
    engine = connect(database_url(load_settings(fetch_config)))
    with engine.begin() as conn:
        crank = store.create_list(conn, "crank").id
        sid = store.add_subscriber(conn, "ann@example.org", crank).subscriber_id
        store.add_subscriber(conn, "bob@example.org", crank)
    ref = sign_ref(SECRET, 1, sid)
    imap.append("INBOX", [dsn("ann@example.org", f"bounces+{ref}@news.example.org", "hard", n=1),
                          dsn("bob@example.org", "bounces@news.example.org", "delayed", n=2),
                          (REPO / "tests/fixtures/bounces/own/office365_automatic_reply.eml").read_bytes()])

    dry = cli("--config", fetch_config, "bounces", "fetch", "--dry-run", "--json")
    assert dry.code == 0, dry.err
    assert [r["kind"] for r in json.loads(dry.out)] == ["hard", "delayed", "ignored"]
    assert imap.count("INBOX") == 3 and statuses(engine)["ann@example.org"] is None

    result = cli("--config", fetch_config, "bounces", "fetch", "-v")
    assert result.code == 0, result.err
    assert "imap:INBOX:1: hard ann@example.org" in result.out
    assert statuses(engine) == {"ann@example.org": "bounced", "bob@example.org": None}
    assert (imap.count("INBOX"), imap.count("Processed")) == (0, 3)
    again = cli("--config", fetch_config, "bounces", "fetch")
    assert again.code == 0 and again.out.startswith("0 messages.")


def test_a_message_that_crashes_the_parser_moves_to_the_failed_folder_and_the_rest_are_applied(cli, fetch_config,
                                                                                             imap):
    """1,000 nested multiparts (RecursionError) used to stop every fetch with the message stuck in
    INBOX; now it is reported, set aside in failed_folder, and the rest of the batch is applied."""
    from mailer.config import database_url, load_settings
    from mailer.migrate import connect
    from mailer.send.refs import sign_ref
    from subscribers import store
    from tests.bounces.samples import nested_multipart

    engine = connect(database_url(load_settings(fetch_config)))
    with engine.begin() as conn:
        crank = store.create_list(conn, "crank").id
        sid = store.add_subscriber(conn, "ann@example.org", crank).subscriber_id
    imap.append("INBOX", [nested_multipart(1000),
                          dsn("ann@example.org", f"bounces+{sign_ref(SECRET, 1, sid)}@news.example.org", "hard")])
    result = cli("--config", fetch_config, "bounces", "fetch")
    assert result.code == 0, result.err
    assert "2 messages: hard 1, unreadable 1." in result.out
    assert "imap:INBOX:1: too deeply nested to read (RecursionError)" in result.err
    assert "set aside in [bounces.imap] failed_folder" in result.err
    assert statuses(engine) == {"ann@example.org": "bounced"}
    assert (imap.count("INBOX"), imap.count("Processed"), imap.count("mailer-failed")) == (0, 1, 1)
    again = cli("--config", fetch_config, "bounces", "fetch")
    assert again.code == 0 and again.out.startswith("0 messages.")


def test_a_wrong_password_is_one_clear_line(cli, fetch_config, monkeypatch):
    monkeypatch.setenv("MAILER_IMAP_PASSWORD", "wrong")
    result = cli("--config", fetch_config, "bounces", "fetch")
    assert result.code == 1
    assert result.err.startswith("error: IMAP 127.0.0.1:") and "refused the login of 'bounces'" in result.err


def test_no_server_configured_is_one_clear_line(cli, bounce_config):
    result = cli("--config", bounce_config, "bounces", "fetch")
    assert (result.code, result.err.strip()) == (
        1, "error: no IMAP server: set [bounces.imap] host (and username, password_env)")


def test_a_missing_folder_is_one_clear_line(cli, fetch_config):
    text = fetch_config.read_text().replace('folder = "INBOX"', 'folder = "Bounces"')
    fetch_config.write_text(text)
    result = cli("--config", fetch_config, "bounces", "fetch")
    assert result.code == 1
    assert result.err.startswith("error: IMAP 127.0.0.1:") and "cannot open folder 'Bounces'" in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_a_server_that_hangs_up_is_one_clear_line(cli, bounce_config, monkeypatch):
    import socket
    import threading

    monkeypatch.setenv("MAILER_IMAP_PASSWORD", "x")
    listener = socket.create_server(("127.0.0.1", 0))

    def hang_up():
        conn, _ = listener.accept()
        conn.close()

    threading.Thread(target=hang_up, daemon=True).start()
    port = listener.getsockname()[1]
    text = bounce_config.read_text().replace('host = ""', 'host = "127.0.0.1"', 1)
    bounce_config.write_text(text.replace("port = 993", f"port = {port}").replace("tls = true", "tls = false"))
    result = cli("--config", bounce_config, "bounces", "fetch")
    listener.close()
    assert result.code == 1
    assert result.err.startswith(f"error: cannot reach IMAP server 127.0.0.1:{port}")


# ----------------------------------------------------------------------------- TLS and the password

@pytest.fixture(params=["starttls", "implicit"])
def tls_imap(request, tls_files):
    """dovecot with a self-signed certificate for 127.0.0.1: offering STARTTLS on a plain port
    (tls = false), or TLS from the first byte (tls = true)."""
    reason = dc.missing()
    if reason:
        missing(reason)
    with dc.Dovecot(tls_files, implicit_tls=request.param == "implicit") as server:
        yield server


def imap_config(config, port: int, *, tls: bool = False, **keys: str):
    text = config.read_text().replace('host = ""', 'host = "127.0.0.1"', 1).replace("port = 993", f"port = {port}")
    text = text.replace("tls = true", f"tls = {'true' if tls else 'false'}").replace(
        'username = ""\npassword_env = "MAILER_IMAP', f'username = "{dc.USER}"\npassword_env = "MAILER_IMAP')
    head, section, imap = text.partition("[bounces.imap]")
    for key, value in keys.items():
        imap = imap.replace(f"{key} = " + ('""' if key == "ca_file" else "false"), f"{key} = {value}", 1)
    config.write_text(head + section + imap)
    return config


def test_tls_with_the_ca_file_logs_in(cli, bounce_config, tls_imap, tls_files, monkeypatch):
    monkeypatch.setenv("MAILER_IMAP_PASSWORD", dc.PASSWORD)
    config = imap_config(bounce_config, tls_imap.port, tls=tls_imap.implicit_tls, ca_file=f'"{tls_files[0]}"')
    tls_imap.append("INBOX", [(REPO / "tests/fixtures/bounces/own/office365_automatic_reply.eml").read_bytes()])
    result = cli("--config", config, "bounces", "fetch")
    assert result.code == 0, result.err
    assert result.out.startswith("1 messages: ignored 1.")
    assert tls_imap.count("Processed") == 1


def test_a_certificate_we_do_not_trust_says_so(cli, bounce_config, tls_imap, monkeypatch):
    """The self-signed certificate without ca_file: a certificate failure, not "cannot reach"."""
    monkeypatch.setenv("MAILER_IMAP_PASSWORD", dc.PASSWORD)
    result = cli("--config", imap_config(bounce_config, tls_imap.port, tls=tls_imap.implicit_tls), "bounces", "fetch")
    assert result.code == 1
    assert result.err.startswith(f"error: IMAP server 127.0.0.1:{tls_imap.port}: its TLS certificate is not trusted (")
    assert "set [bounces.imap] ca_file" in result.err and "cannot reach" not in result.err
    assert f"Login: user=<{dc.USER}>" not in tls_imap.log()


@pytest.mark.parametrize(("allow", "logged_in"), [("false", False), ("true", True)])
def test_no_password_in_clear_unless_allowed(cli, bounce_config, imap, monkeypatch, allow, logged_in):
    """dovecot without TLS (no STARTTLS) and tls = false: the password is never sent unless
    allow_plaintext_login = true."""
    monkeypatch.setenv("MAILER_IMAP_PASSWORD", dc.PASSWORD)
    result = cli("--config", imap_config(bounce_config, imap.port, allow_plaintext_login=allow), "bounces", "fetch")
    if logged_in:
        assert result.code == 0, result.err
    else:
        assert result.code == 1
        assert result.err.strip() == (
            f"error: IMAP server 127.0.0.1:{imap.port} offers no STARTTLS and tls = false: refusing to send the "
            "password in clear (use tls = true, or set [bounces.imap] allow_plaintext_login = true for a server "
            "on this machine)")
        assert f"Login: user=<{dc.USER}>" not in imap.log()


def test_a_missing_ca_file_is_a_config_error(cli, bounce_config, tmp_path):
    config = imap_config(bounce_config, 993, ca_file='"no-such-ca.pem"')
    result = cli("--config", config, "bounces", "fetch")
    assert result.code != 0
    assert f"[bounces.imap] ca_file: no such file {tmp_path / 'no-such-ca.pem'}" in result.err


def test_a_ca_file_that_is_no_certificate_is_one_clear_line(cli, bounce_config, tmp_path, monkeypatch):
    monkeypatch.setenv("MAILER_IMAP_PASSWORD", "x")
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    result = cli("--config", imap_config(bounce_config, 993, ca_file='"ca.pem"'), "bounces", "fetch")
    assert result.code == 1
    assert result.err.startswith(f"error: [bounces.imap] ca_file {tmp_path / 'ca.pem'}: not a readable PEM file")
