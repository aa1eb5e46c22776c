"""One-click unsubscribes during an admin login flood (issue 23), on SQLite and PostgreSQL.

`mailer serve` runs in its own process. First 200 one-click unsubscribes one after another (the
baseline); then six threads post wrong passwords to /admin/login as fast as answers come (each
attempt a fresh name, and the config's login limits raised, so every attempt reaches the
password check: a flood from many addresses), and 200 more unsubscribes are timed meanwhile.
Reported: the unsubscribes' p50, p99 and max, the login answers (401: checked, 503: refused
because `[web] admin_login_checks` were already running), and the server's peak memory (VmHWM).

    .venv/bin/python bench/login_flood.py [--requests 200] [--sqlite-only]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.report import write_section  # noqa: E402
from bench.web import drop_pg, reset_pg, seed, start_server, write_config  # noqa: E402
from tests.events.signing import Signer  # noqa: E402

FLOODERS = 6
P99S: list[float] = []                                      # each run's p99 during the flood, ms


def _config(folder: Path, db_url: str, checks: int) -> Path:
    path = write_config(folder, Signer().public_key, db_url)
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"(?m)^admin_login_checks = \d+", f"admin_login_checks = {checks}", text)
    text = re.sub(r"(?m)^admin_login_burst = \d+", "admin_login_burst = 1000", text)
    text = re.sub(r"(?m)^admin_login_per_hour = \d+", "admin_login_per_hour = 100000", text)
    path.write_text(text, encoding="utf-8")
    return path


def _unsubscribes(url: str, tokens: list[str]) -> list[float]:
    took = []
    with httpx.Client(base_url=url, timeout=60) as client:
        for token in tokens:
            start = time.perf_counter()
            reply = client.post(f"/unsubscribe/{token}", content=b"List-Unsubscribe=One-Click")
            took.append(time.perf_counter() - start)
            assert reply.status_code == 200, reply.status_code
    return took


def _flood(url: str, done: threading.Event, codes: Counter, n: int) -> None:
    tries = 0
    with httpx.Client(base_url=url, timeout=60) as client:
        while not done.is_set():
            tries += 1
            page = client.get("/admin/login", headers={"accept": "text/html"})
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
            codes[client.post("/admin/login", data={"username": f"stranger{n}-{tries}",
                                                    "password": "not the password", "csrf": csrf}).status_code] += 1


def _peak_kib(pid: int) -> int:
    found = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(found.group(1)) if found else 0


def _ms(values: list[float], q: float) -> str:
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000:.1f}"


def run(label: str, db_url: str, requests: int, checks: int) -> str:
    with tempfile.TemporaryDirectory() as folder:
        config = _config(Path(folder), db_url, checks)
        _, tokens = seed(db_url, 2 * requests)
        proc, port = start_server(config)
        url = f"http://127.0.0.1:{port}"
        try:
            quiet = _unsubscribes(url, tokens[:requests])
            done, codes = threading.Event(), Counter()
            threads = [threading.Thread(target=_flood, args=(url, done, codes, n)) for n in range(FLOODERS)]
            for t in threads:
                t.start()
            time.sleep(2)                                    # the flood is on
            busy = _unsubscribes(url, tokens[requests:])
            done.set()
            for t in threads:
                t.join(60)
            peak = _peak_kib(proc.pid)
        finally:
            proc.terminate()
            proc.wait(10)
    answers = ", ".join(f"{code}: {n:,}" for code, n in sorted(codes.items()))
    P99S.append(float(_ms(busy, .99)))
    return (f"| {label} | {checks} | {_ms(quiet, .5)} / {_ms(quiet, .99)} | {_ms(busy, .5)} / {_ms(busy, .99)} / "
            f"{max(busy) * 1000:.1f} | {answers} | {peak / 1024:.0f} MB | {os.getloadavg()[0]:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--sqlite-only", action="store_true")
    args = parser.parse_args()
    rows = []
    for checks in (2, 1):                                    # the default, and one on a small machine
        with tempfile.TemporaryDirectory() as folder:
            rows.append(run("SQLite", f"sqlite:///{Path(folder) / 'bench.db'}", args.requests, checks))
        if not args.sqlite_only:
            schema = f"bench_login_flood_{checks}"       # (each run its own: migrations run once per URL)
            pg = reset_pg(schema)
            if pg:
                rows.append(run("PostgreSQL", pg, args.requests, checks))
                drop_pg([schema])
    print("\n".join(rows))
    load = os.getloadavg()[0]
    met = ("met in every run above" if P99S and max(P99S) < 50 else
           f"not met in {sum(p >= 50 for p in P99S)} of the {len(P99S)} runs above")
    body = f"""## Web service: one-click unsubscribes during an admin login flood

{FLOODERS} threads post wrong passwords to `/admin/login` without pause (each a new name and the login limits
raised, so no limit refuses them) while {args.requests} one-click unsubscribes are sent one after another;
before the flood, {args.requests} more are the baseline. The password check runs outside any transaction or
lock, at most `[web] admin_login_checks` at once (2 by default), on threads at the lowest CPU priority
(nice 19); while both slots are taken a login post is refused 503 at the door, before routing, form
parsing and templates (`bench/login_flood.py`, `tests/web/test_strangers.py`, docs/admin.md "Login
rate limits"). Milliseconds, from the client; the load average (1 min) after each run is in the last
column, {load:.1f} at the end (2 cores, shared with other work).

The server's memory stays flat (90 attempts once took the service on PostgreSQL from 121 MB
to 1 GB), and no unsubscribe waits on a lock held by a login or on a password check for the CPU
(the tests show both). The issue's goal, p99 under 50 ms during the flood, is {met}. What remains is
the one event loop that answers the flood's own requests (a login form and a refusal each) and the
unsubscribes alike, and on a loaded machine whatever else runs: compare the quiet column, taken
moments before on the same machine.

| database | checks at once | quiet p50 / p99 | flood p50 / p99 / max | login answers | server peak memory | load |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}
"""
    write_section("login_flood", body, "bench/run login_flood")


if __name__ == "__main__":
    main()
