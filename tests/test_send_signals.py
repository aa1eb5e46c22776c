"""Ctrl-C and SIGTERM of a real `mailer send` process while a batch is on the wire to a slow SMTP
relay (the local sink), then the rerun: every reader gets exactly one copy (docs/exactly-once.md,
"Stopping a send"). A second signal stops at once; with on_interrupted = "skip" nobody gets two."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from sqlalchemy import create_engine

from mailer.send import ledger
from tests.deliver.helpers import seed
from tests.servers.smtp_sink import SmtpSink

SECRET = "test-secret-key-0123456789abcdef"
READERS = 30
BATCH = 5


def project(tmp_path, repo, port: int, *, on_interrupted: str = "resend", extra: str = "", url: str | None = None,
            retry_seconds: float = 300) -> tuple:
    """A config.toml on a SQLite file (or `url`), SMTP to the sink on `port` in batches of BATCH, one
    connection; `retry_seconds`: [delivery] database_retry_seconds."""
    for folder in ("templates", "issues"):
        (tmp_path / folder).symlink_to(repo / folder)
    url = url or f"sqlite:///{tmp_path / 'mailer.db'}"
    config = (repo / "config.toml").read_text(encoding="utf-8")
    config = re.sub(r'(?m)^url = "sqlite:///mailer.db"', f'url = "{url}"', config)
    config = re.sub(r'(?m)^backend = "outbox"', 'backend = "smtp"', config)
    config = re.sub(r'(?m)^on_interrupted = "resend"', f'on_interrupted = "{on_interrupted}"', config)
    config = re.sub(r"(?m)^port = 587", f"port = {port}", config)
    config = re.sub(r"(?m)^starttls = true", "starttls = false", config)
    config = re.sub(r"(?m)^batch_size = 20 ", f"batch_size = {BATCH} ", config)
    config = re.sub(r"(?m)^connections = 2 ", "connections = 1 ", config)
    config = re.sub(r"(?m)^connect_retry_seconds = 60 ", "connect_retry_seconds = 1 ", config)
    config = config.replace("[delivery.smtp]\n", f"[delivery.smtp]\n{extra}")
    config = re.sub(r"(?m)^database_retry_seconds = 300 ", f"database_retry_seconds = {retry_seconds} ", config)
    path = tmp_path / "config.toml"
    path.write_text(config, encoding="utf-8")
    seed(url, READERS)
    return path, url


def command(config, *args: str) -> list[str]:
    return [sys.executable, "-m", "mailer", "--config", str(config), "send", "2024-11", "--list", "crank", "--yes",
            *args]


def environment() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MAILER_CONFIG"}
    env.update(MAILER_SECRET_KEY=SECRET, PYTHONUNBUFFERED="1")
    return env


def start(config, cwd) -> subprocess.Popen:
    return subprocess.Popen(command(config), cwd=cwd, env=environment(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def rerun(config, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(command(config), cwd=cwd, env=environment(), capture_output=True, text=True,
                          timeout=120, check=False)


def wait_for(check, timeout: float = 120.0, what: str = "it") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def finish(proc: subprocess.Popen, timeout: float = 120.0) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def copies(sink: SmtpSink) -> Counter:
    return Counter(to for m in sink.messages for to in m.rcpt_tos)


def counts(url: str) -> dict:
    engine = create_engine(re.sub(r"&application_name=[^&]*", "", url))   # not one the send's own name
    try:
        with engine.connect() as conn:
            return ledger.counts(conn, 1)
    finally:
        engine.dispose()


def stopped_between_batches(url: str, sink, err: str, sig: signal.Signals, continuing: str) -> dict:
    """A send stopped by `sig` the clean way: every batch on the wire recorded (none left
    `sending`), as many accepted as the sink took, in whole batches, the rest pending, and the last
    line says how to continue (`continuing`). The ledger's counts."""
    stopped = counts(url)
    assert stopped["sending"] == 0                                # the batch on the wire was recorded
    assert stopped["accepted"] == len(sink.messages) and stopped["accepted"] % BATCH == 0
    assert stopped["pending"] == READERS - stopped["accepted"] > 0
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"error: stopped by {sig.name} after {stopped['accepted']} sent"), err
    assert f"run `{continuing}` to continue" in last
    return stopped


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_finishes_and_records_the_batch_on_the_wire_and_the_rerun_sends_the_rest_once(
        tmp_path, repo, sig, code):
    with SmtpSink(data_delay=0.15) as sink:
        config, url = project(tmp_path, repo, sink.port)
        proc = start(config, tmp_path)
        wait_for(lambda: len(sink.messages) >= BATCH + 2, what="the second batch on the wire")
        proc.send_signal(sig)
        _, err = finish(proc)
        assert proc.returncode == code, err
        stopped_between_batches(url, sink, err, sig, "mailer send 2024-11 --list crank")
        assert "Traceback" not in err
        again = rerun(config, tmp_path)
        assert again.returncode == 0, again.stderr
        got = copies(sink)
    assert len(got) == READERS and set(got.values()) == {1}
    assert counts(url)["accepted"] == READERS


def test_a_second_signal_stops_at_once_and_skip_gives_nobody_two_copies(tmp_path, repo):
    with SmtpSink(data_delay=0.3) as sink:
        config, url = project(tmp_path, repo, sink.port, on_interrupted="skip")
        proc = start(config, tmp_path)
        wait_for(lambda: len(sink.messages) >= BATCH + 1, what="the second batch on the wire")
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = finish(proc)
        assert proc.returncode == 143, err
        assert "again: stopping at once" in err
        stopped = counts(url)
        assert stopped["sending"] == BATCH                          # the batch on the wire: in flight, named next
        again = rerun(config, tmp_path)
        assert again.returncode == 0, again.stderr
        assert "was in flight when the last run stopped" in again.stderr
        got = copies(sink)
    assert set(got.values()) == {1}
    after = counts(url)
    assert after["skipped"] == BATCH and after["accepted"] == READERS - BATCH
    # the readers of the skipped batch whose copy the relay had taken before the stop got it; none twice
    assert len(got) >= READERS - BATCH
