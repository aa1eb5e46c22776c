"""Signup challenge benchmark: how long a reader's browser takes to solve the proof-of-work at the
default difficulty ([web] challenge_cost, challenge_max_counter), and what it costs the server.

The real app (the repository's config, SQLite in a temporary folder) runs on loopback; Debian's
Chromium, driven by Playwright, opens /subscribe RUNS times, each in a fresh page, and types an
address: the widget fetches a challenge and solves it in its worker while the reader types.
  - solve: the worker's own time from start to solution (the payload's `solution.time`);
  - ready: from the first keystroke to the form being ready to send (the hidden field filled),
    which includes fetching the challenge and the widget's 500 ms minimum display;
  - server: creating a challenge (one PBKDF2 at the drawn counter) and judging a solved post (two
    HMACs and the spent-solution row), per call, in this process.

    .venv/bin/python bench/signup_challenge.py [--runs 20]
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import os
import re
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import altcha  # noqa: E402
from playwright.sync_api import expect, sync_playwright  # noqa: E402

from bench.report import write_section  # noqa: E402
from mailer.config import load_settings  # noqa: E402
from mailer.web import create_app  # noqa: E402
from mailer.web.challenge import Form, Guard  # noqa: E402
from subscribers import store  # noqa: E402
from tests.web.conftest import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from tests.web.live import free_socket, serve_in_thread  # noqa: E402

SECRET = "bench-secret-key-0123456789abcdef"


def settings_in(folder: Path):
    s = load_settings(ROOT / "config.toml")
    sock = free_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    s = dataclasses.replace(
        s, path=folder / "config.toml",
        database=dataclasses.replace(s.database, url=f"sqlite:///{folder / 'mailer.db'}"),
        delivery=dataclasses.replace(s.delivery, outbox_dir=folder / "outbox"),
        newsletter=dataclasses.replace(s.newsletter, base_url=url))
    return s, sock, url


def browser_runs(runs: int) -> tuple[list[float], list[float]]:
    """(solve times, ready times) in milliseconds, one per fresh page."""
    os.environ["MAILER_SECRET_KEY"] = SECRET
    solve, ready = [], []
    with tempfile.TemporaryDirectory() as tmp:
        settings, sock, url = settings_in(Path(tmp))
        app = create_app(settings)
        with app.state.web.engine.begin() as conn:
            store.create_list(conn, "crank", title="CRANK Call")
        with serve_in_thread(app, sock=sock), sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
            for _ in range(runs):
                page = browser.new_context(locale="en-US").new_page()
                page.goto(f"{url}/subscribe")
                started = time.perf_counter()
                page.fill("#email", "ann@example.com")
                field = page.locator("input[name=altcha]")
                expect(field).to_have_value(re.compile(".+"), timeout=60_000)
                ready.append((time.perf_counter() - started) * 1000)
                payload = json.loads(base64.b64decode(field.input_value()))
                solve.append(float(payload["solution"]["time"]))
                page.context.close()
            browser.close()
    return solve, ready


def server_costs(settings, calls: int = 200) -> tuple[float, float]:
    """(ms to create a challenge, ms to judge a solved post), each the mean of `calls`."""
    guard = Guard(settings, SECRET, lambda *_: True)
    started = time.perf_counter()
    challenges = [guard.challenge() for _ in range(calls)]
    create = (time.perf_counter() - started) * 1000 / calls
    payloads = []
    for made in challenges[:20]:
        challenge = altcha.Challenge.from_dict(made)
        payloads.append(altcha.Payload(challenge, altcha.solve_challenge(challenge)).to_base64())
    started = time.perf_counter()
    for i in range(calls):
        guard.judge(Form(altcha=payloads[i % len(payloads)]))
    judge = (time.perf_counter() - started) * 1000 / calls
    return create, judge


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    settings = load_settings(ROOT / "config.toml")
    web = settings.web
    load_before = os.getloadavg()[0]
    solve, ready = browser_runs(args.runs)
    create, judge = server_costs(settings)
    load_after = os.getloadavg()[0]

    def row(name: str, values: list[float]) -> str:
        q = statistics.quantiles(values, n=20)
        return (f"| {name} | {statistics.median(values):.0f} ms | {q[18]:.0f} ms | {max(values):.0f} ms "
                f"| {min(values):.0f} ms |")

    body = f"""## Signup challenge: the proof-of-work in Chromium

`mailer serve`'s /subscribe in Debian's Chromium (headless, Playwright), {args.runs} fresh pages; the
default difficulty: PBKDF2/SHA-256, {web.challenge_cost:,} iterations per try, the counter drawn in
[{web.challenge_max_counter // 2:,}, {web.challenge_max_counter:,}] (`[web] challenge_cost`, `challenge_max_counter`).
Solve: the widget's worker, start to solution. Ready: first keystroke to the form ready to send
(fetching the challenge, solving, and the widget's 500 ms minimum display).

| measure | median | p95 | max | min |
|---|---|---|---|---|
{row("solve", solve)}
{row("ready", ready)}

Server, per call (this process, Python): creating a challenge {create:.2f} ms (one PBKDF2 at the
drawn counter), judging a solved post {judge:.3f} ms (two HMACs; the spent-solution row not counted).
Goal: the solve under a second on this machine. Load average (1 min) {load_before:.1f} before,
{load_after:.1f} after; measured {datetime.now(UTC):%Y-%m-%d}.
"""
    write_section("signup-challenge", body, "bench/run signup_challenge")
    print(body)


if __name__ == "__main__":
    main()
