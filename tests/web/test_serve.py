"""`mailer serve` as a real process: it listens where told and answers /healthz."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

MAILER = Path(sys.executable).with_name("mailer")


def started_on(proc: subprocess.Popen) -> int:
    """The port `mailer serve --port 0` got, from uvicorn's start-up line on stderr."""
    for line in proc.stderr:
        found = re.search(r"running on http://127\.0\.0\.1:(\d+)", line)
        if found:
            return int(found.group(1))
    raise AssertionError(f"mailer serve exited with {proc.wait()} before saying where it listens")


def wait_for(url: str, proc: subprocess.Popen, timeout: float = 20.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"mailer serve exited with {proc.returncode}: {proc.stderr.read()}")
        try:
            return httpx.get(url, timeout=2)
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError(f"nothing answered at {url}")


def test_serve_answers_healthz(config_file):
    from tests.conftest import REPO

    text = config_file.read_text(encoding="utf-8")       # (the service will not start without its templates)
    config_file.write_text(text.replace('templates_dir = "templates"', f'templates_dir = "{REPO / "templates"}"'),
                           encoding="utf-8")
    env = {**os.environ, "MAILER_SECRET_KEY": "serve-test-secret-0123456789"}
    proc = subprocess.Popen([str(MAILER), "--config", str(config_file), "serve", "--host", "127.0.0.1",
                             "--port", "0"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        port = started_on(proc)
        r = wait_for(f"http://127.0.0.1:{port}/healthz", proc)
        assert (r.status_code, r.json()["status"]) == (200, "ok")
        assert "server" not in r.headers
    finally:
        proc.terminate()
        proc.wait(10)


def test_serve_without_a_secret_stops_at_once(cli, config_file, monkeypatch):
    monkeypatch.delenv("MAILER_SECRET_KEY", raising=False)
    result = cli("--config", config_file, "serve", "--port", "1")
    assert result.code == 2
    assert "MAILER_SECRET_KEY" in result.err and result.err.startswith("error:")
