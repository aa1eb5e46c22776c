"""`mailer send` and `mailer issue proof` from the command line, including a real kill -9 mid-send."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.deliver.helpers import seed

SECRET = "test-secret-key-0123456789abcdef"
SUBJECT = "CRANK Call | November 2024"


@pytest.fixture(autouse=True)
def secrets_in_env(monkeypatch):
    monkeypatch.setenv("MAILER_SECRET_KEY", SECRET)
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.test")


@pytest.fixture
def config_file(config_file, repo):
    """The shared copy of config.toml, with the repo's templates and issues beside it."""
    for folder in ("templates", "issues"):
        (config_file.parent / folder).symlink_to(repo / folder)
    return config_file


@pytest.fixture
def store(config_file) -> str:
    url = f"sqlite:///{config_file.parent / 'mailer.db'}"
    seed(url, 3)
    return url


def issue_file(repo: Path) -> str:
    return str(repo / "issues" / "2024-11.md")


@pytest.mark.parametrize("answer, code, sent", [("n\n", 1, 0), ("y\n", 0, 3)])
def test_send_asks_first(cli, config_file, store, repo, answer, code, sent):
    result = cli("--config", config_file, "send", issue_file(repo), "--list", "crank", input=answer)
    assert f"Send '{SUBJECT}' to 3 active subscribers of crank via outbox?" in result.err
    assert result.code == code
    outbox = config_file.parent / "outbox"
    assert len(list(outbox.glob("*.eml"))) == sent
    if sent:
        assert f"Sent '{SUBJECT}' to crank via outbox: 3 sent, 0 failed, 0 skipped" in result.out


def test_json_summary_and_a_second_run_that_sends_nothing(cli, config_file, store):
    first = cli("--config", config_file, "send", "2024-11", "--list", "crank", "--yes", "--json")
    assert first.code == 0, first.err
    data = json.loads(first.out)
    assert {k: data[k] for k in ("sent", "failed", "skipped", "already_sent")} == {
        "sent": 3, "failed": 0, "skipped": 0, "already_sent": False}
    assert isinstance(data["duration"], float)
    again = cli("--config", config_file, "send", "2024-11", "--list", "crank", "--yes")
    assert again.code == 0
    assert f"'{SUBJECT}' was already sent to crank (send #1: 3 sent, 0 failed, 0 skipped); nothing sent." in again.out


def test_dry_run_sends_nothing(cli, config_file, store):
    result = cli("--config", config_file, "send", "2024-11", "--list", "crank", "--dry-run")
    assert result.code == 0
    assert "Dry run: would send" in result.out and "3 subscribers of crank" in result.out
    assert not (config_file.parent / "outbox").exists()


@pytest.mark.parametrize("args, words", [
    (["--list", "nope", "--yes"], "nope"),
    (["--list", "crank", "--yes", "--backend", "pigeon"], "pigeon"),
])
def test_bad_arguments_get_one_clear_line(cli, config_file, store, args, words):
    result = cli("--config", config_file, "send", "2024-11", *args)
    assert result.code != 0 and words in result.err
    assert "Traceback" not in result.err


def test_missing_secret_is_named(cli, config_file, store, monkeypatch):
    monkeypatch.delenv("MAILER_SECRET_KEY")   # a dry run reads the key but never makes one
    result = cli("--config", config_file, "send", "2024-11", "--list", "crank", "--dry-run")
    assert result.code == 2 and "MAILER_SECRET_KEY" in result.err and "mailer init" in result.err


def test_proof(cli, config_file, repo):
    """Every proof keeps its own file (a second proof overwrites nothing), and each line says which."""
    outbox = config_file.parent / "outbox"
    written = []
    for _ in range(2):
        result = cli("--config", config_file, "issue", "proof", issue_file(repo), "--to",
                     "ed@example.org, ed2@example.org")
        assert result.code == 0, result.err
        lines = result.out.splitlines()
        assert [line.split(": written to ")[0] for line in lines] == ["ed@example.org", "ed2@example.org"]
        written += [Path(line.split(": written to ")[1]) for line in lines]
    assert sorted(written) == sorted(outbox.glob("*.eml")) and len(set(written)) == 4
    for path, to in zip(written, ["ed@example.org", "ed2@example.org"] * 2, strict=True):
        assert path.name.startswith("2024-11.proof.") and path.parent == outbox
        data = path.read_bytes()
        assert b"Subject: [PROOF] CRANK Call | November 2024" in data and f"To: {to}".encode() in data


def _config(tmp_path: Path, repo: Path, db_url: str, server_url: str) -> Path:
    text = (repo / "config.toml").read_text(encoding="utf-8")
    text = text.replace('url = "sqlite:///mailer.db"', f'url = "{db_url}"')
    text = text.replace('backend = "outbox"', 'backend = "sendgrid"')
    text = text.replace('host = "https://api.sendgrid.com"', f'host = "{server_url}"\nbatch_size = 20\ntimeout = 10')
    for folder in ("templates", "issues"):
        (tmp_path / folder).symlink_to(repo / folder)
    path = tmp_path / "crash.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _in_flight(db_url: str) -> set[str]:
    from mailer.send.ledger import deliveries
    from subscribers.models import subscribers

    engine = open_store_url(db_url)
    with engine.connect() as conn:
        return set(conn.execute(select(subscribers.c.email).join_from(
            deliveries, subscribers, subscribers.c.id == deliveries.c.subscriber_id)
            .where(deliveries.c.state == "sending")).scalars())


def open_store_url(url: str):
    from mailer.migrate import connect

    return connect(url)


def test_kill_9_mid_send_then_rerun_misses_nobody_and_doubles_only_the_batch_in_flight(
        cli, tmp_path, repo, db_url, sendgrid_server):
    seed(db_url, 200)
    config = _config(tmp_path, repo, db_url, sendgrid_server.url)
    sendgrid_server.stall(0.15, accept=True, times=1000)  # slow enough to be caught mid-send
    mailer = Path(sys.executable).parent / "mailer"
    child = subprocess.Popen([str(mailer), "--config", str(config), "send", "2024-11", "--list", "crank", "--yes"],
                             cwd=repo, env={**os.environ}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and child.poll() is None:  # kill while batch 4 is on the wire
        if sendgrid_server.stats.accepted >= 3 and sendgrid_server.in_flight:
            break
        time.sleep(0.005)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    sendgrid_server.settle()          # a request the child had sent is still taken by the server
    sendgrid_server.faults.clear()
    flying = _in_flight(db_url)
    assert 3 <= sendgrid_server.stats.accepted < 10 and len(flying) <= 20

    result = cli("--config", config, "send", "2024-11", "--list", "crank", "--yes")
    assert result.code == 0, result.err
    counts = Counter(sendgrid_server.recipients())
    assert set(counts) == {f"r{i}@example.org" for i in range(200)}          # nobody missed
    doubled = {address for address, n in counts.items() if n > 1}
    assert doubled <= flying and max(counts.values()) <= 2                   # only the batch in flight
    assert flying, "the kill should land while a batch is in flight"
    if flying:
        assert "was in flight when the last run stopped" in result.err and "resending it" in result.err
    assert "200 sent, 0 failed, 0 skipped" in result.out


def test_an_issue_name_too_long_for_the_ledger_is_refused_before_the_ledger_is_touched(cli, config_file, store, repo,
                                                                                        tmp_path):
    from sqlalchemy import func

    from mailer.migrate import connect
    from mailer.send.ledger import sends

    long_name = tmp_path / ("2024-11-" + "x" * 62 + ".md")     # 70 characters before .md
    long_name.write_text((repo / "issues" / "2024-11.md").read_text(encoding="utf-8"), encoding="utf-8")
    result = cli("--config", config_file, "send", str(long_name), "--list", "crank", "--yes")
    assert result.code == 1 and "Traceback" not in result.err
    assert "must be at most 64 characters (it has 70)" in result.err and len(result.err.strip().splitlines()) == 1
    with connect(store).connect() as conn:
        assert conn.execute(select(func.count()).select_from(sends)).scalar_one() == 0


def test_db_current_shows_both_schemas(cli, config_file, store):
    from mailer.migrate import head_revision

    assert cli("--config", config_file, "db", "upgrade").code == 0
    out = cli("--config", config_file, "db", "current").out
    assert "subscribers schema: " in out and f"mailer schema: {head_revision()} (up to date)" in out


def test_a_run_ending_with_deferred_readers_says_how_many_and_until_when(cli, config_file, store, repo):
    from tests.servers.smtp_sink import SmtpSink

    with SmtpSink(greylist={"r1@example.org": 3600}) as sink:
        text = config_file.read_text(encoding="utf-8")
        text = text.replace("port = 587", f"port = {sink.port}").replace("starttls = true", "starttls = false")
        config_file.write_text(text.replace("retry_wait_seconds = 600", "retry_wait_seconds = 0"), encoding="utf-8")
        first = cli("--config", config_file, "send", issue_file(repo), "--list", "crank", "--yes", "--backend", "smtp")
        again = cli("--config", config_file, "send", issue_file(repo), "--list", "crank", "--yes", "--backend", "smtp",
                    "--json")
    assert first.code == 0 and "2 sent, 0 failed, 0 skipped" in first.out
    assert "1 deferred (temporary refusals) until 20" in first.out and "run the same command then" in first.out
    summary = json.loads(again.out)
    got = (summary["sent"], summary["deferred"], summary["status"], summary["already_sent"])
    assert got == (2, 1, "stopped", False)
    assert summary["retry_at"] and sink.state.rcpt_tries["r1@example.org"] == 1
    assert Counter(r for m in sink.messages for r in m.rcpt_tos) == {"r0@example.org": 1, "r2@example.org": 1}


def test_a_dkim_signed_send_from_the_real_command_signs_every_message_in_its_signing_process(
        config_file, repo, tmp_path):
    """`mailer send` as installed (the console script, a process of its own): past the first 200
    messages the signatures come from spawned signing processes; every one verifies."""
    import base64

    import dkim
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from tests.servers.smtp_sink import SmtpSink

    url = f"sqlite:///{config_file.parent / 'mailer.db'}"
    seed(url, 300)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode("ascii")
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))
    with SmtpSink(bulk_data=True) as sink:
        text = config_file.read_text(encoding="utf-8")
        text = text.replace("port = 587", f"port = {sink.port}").replace("starttls = true", "starttls = false")
        text = text.replace("dkim_processes = 0",
                            'dkim_processes = 1\ndkim_domain = "example.org"\ndkim_selector = "news"')
        config_file.write_text(text, encoding="utf-8")
        mailer = Path(sys.executable).parent / "mailer"
        done = subprocess.run([str(mailer), "--config", str(config_file), "send", "2024-11", "--list", "crank",
                               "--yes", "--backend", "smtp"], cwd=config_file.parent, capture_output=True, text=True,
                              env={**os.environ, "MAILER_DKIM_PRIVATE_KEY": pem}, timeout=120, check=False)
        messages = list(sink.messages)
    assert done.returncode == 0, done.stderr
    assert "300 sent, 0 failed, 0 skipped" in done.stdout
    assert sorted(m.rcpt_tos[0] for m in messages) == sorted(f"r{i}@example.org" for i in range(300))
    assert all(dkim.verify(m.data, dnsfunc=lambda name, timeout=5: record) for m in messages)


def test_a_reader_that_failed_makes_mailer_send_exit_non_zero(cli, config_file, store, repo):
    from tests.servers.smtp_sink import SmtpSink

    with SmtpSink(replies={"r1@example.org": "550 5.1.1 No such user"}) as sink:
        text = config_file.read_text(encoding="utf-8")
        text = text.replace("port = 587", f"port = {sink.port}").replace("starttls = true", "starttls = false")
        config_file.write_text(text, encoding="utf-8")
        result = cli("--config", config_file, "send", issue_file(repo), "--list", "crank", "--yes", "--backend", "smtp")
    assert result.code == 1
    assert "2 sent, 1 failed, 0 skipped" in result.out
    assert "error: 1 readers failed and 0 are in doubt" in result.err


def test_json_prints_the_summary_when_the_run_stops_with_an_error(cli, config_file, store, repo, monkeypatch):
    """SendGrid refuses the key (401): the run stops with readers pending; --json still says what it did."""
    from tests.servers.sendgrid_server import SendGridServer

    monkeypatch.setenv("SENDGRID_API_KEY", "SG.revoked")
    with SendGridServer() as server:
        text = config_file.read_text(encoding="utf-8")
        config_file.write_text(text.replace('host = "https://api.sendgrid.com"', f'host = "{server.url}"'),
                               encoding="utf-8")
        result = cli("--config", config_file, "send", issue_file(repo), "--list", "crank", "--yes", "--backend",
                     "sendgrid", "--json")
    assert result.code == 1 and "error: send stopped after 0 sent" in result.err
    summary = json.loads(result.out)
    assert (summary["sent"], summary["total"], summary["status"]) == (0, 3, "stopped")
    assert summary["error"].startswith("send stopped after 0 sent") and "401" in summary["error"]


def test_json_prints_the_error_when_the_send_is_refused_before_it_starts(cli, config_file, store, repo):
    from sqlalchemy import update

    from mailer.migrate import connect
    from mailer.send import ledger

    first = cli("--config", config_file, "send", issue_file(repo), "--list", "crank", "--yes")
    assert first.code == 0
    engine = connect(store)
    with engine.begin() as conn:   # the same send, running in another live process elsewhere
        conn.execute(update(ledger.sends).values(status="sending", runner="elsewhere:1",
                                                 heartbeat_at=ledger.db_now(conn)))
        conn.execute(update(ledger.deliveries).where(ledger.deliveries.c.id == 1).values(state="pending"))
    engine.dispose()
    refused = cli("--config", config_file, "send", issue_file(repo), "--list", "crank", "--yes", "--json")
    assert refused.code == 1
    assert json.loads(refused.out) == {"issue": issue_file(repo), "list": "crank",
                                       "error": json.loads(refused.out)["error"]}
    assert "is running in another process (elsewhere:1" in json.loads(refused.out)["error"]
