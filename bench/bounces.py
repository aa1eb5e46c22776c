"""Benchmark: `mailer bounces scan` over a generated 100,000-message mbox (goal: >= 1,000 msgs/s).

    .venv/bin/python bench/bounces.py [--messages N] [--readers N]

The mbox mixes the shapes returned mail really has: Postfix DSNs (hard, mailbox full, delayed,
policy block) to signed VERP addresses, 20% of them for readers we know; Gmail and Office 365
DSNs, Yahoo ARF complaints and out-of-office replies (tests/fixtures/bounces/own); and prose
bounces from Exim, qmail, Sendmail, Yahoo, ... (flufl.bounce's samples, tests/fixtures/bounces/
flufl) that only the heuristic detectors read. The scan runs as the real command in a fresh
process on a SQLite store of `--readers` subscribers; then the same mbox again (every event
already stored). Figures go to BENCHMARKS.md (section bounces).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SECRET = "bench-secret"
FIXTURES = ROOT / "tests" / "fixtures" / "bounces"


def generate(path: Path, messages: int, readers: int) -> dict[str, int]:
    from mailer.send.refs import sign_ref
    from tests.bounces.samples import dsn

    own = [p.read_bytes() for p in sorted((FIXTURES / "own").glob("*.eml"))]
    prose = [_without_envelope(p.read_bytes()) for p in sorted((FIXTURES / "flufl").glob("*.txt"))
             if not p.name.startswith("dsn_")]
    kinds = ("hard", "hard", "soft", "delayed", "blocked")
    mix = {"postfix dsn": 0, "gmail/o365/arf/auto-reply": 0, "prose (heuristic detectors)": 0}
    with path.open("wb") as out:
        for i in range(messages):
            slot = i % 20
            if slot < 16:                                    # 80% standard DSNs
                sid = i % (readers * 5) + 1                  # one in five is a reader we know
                rcpt = f"reader{sid}@example.org"
                data = dsn(rcpt, f"bounces+{sign_ref(SECRET, 1, sid)}@news.example.org", kinds[i % 5], n=i)
                mix["postfix dsn"] += 1
            elif slot < 18:
                data = own[i % len(own)].replace(b"Message-I", f"X-Bench: {i}\r\nMessage-I".encode(), 1)
                mix["gmail/o365/arf/auto-reply"] += 1
            else:
                data = prose[i % len(prose)].replace(b"\nSubject:", f"\nX-Bench: {i}\nSubject:".encode(), 1)
                mix["prose (heuristic detectors)"] += 1
            out.write(b"From MAILER-DAEMON Tue Nov  5 14:02:11 2024\n")
            body = data.replace(b"\r\n", b"\n").replace(b"\nFrom ", b"\n>From ")
            out.write(body if body.endswith(b"\n") else body + b"\n")
            out.write(b"\n")
    return mix


def _without_envelope(data: bytes) -> bytes:
    """A sample saved from an mbox starts with its own "From " line: the generator writes one."""
    return data.split(b"\n", 1)[1] if data.startswith(b"From ") else data


def seed(url: str, readers: int) -> None:
    from sqlalchemy import insert

    from mailer.migrate import connect
    from subscribers import store
    from subscribers.models import memberships, subscribers, utcnow

    engine = connect(url)
    with engine.begin() as conn:
        crank = store.create_list(conn, "crank").id
        now = utcnow().replace(year=2020)
        conn.execute(insert(subscribers), [{"id": i, "email": f"reader{i}@example.org", "name": "", "created_at": now}
                                           for i in range(1, readers + 1)])
        conn.execute(insert(memberships), [{"subscriber_id": i, "list_id": crank, "status": "active",
                                            "consent_at": now, "consent_source": "import", "created_at": now}
                                           for i in range(1, readers + 1)])


def scan(config: Path, mbox: Path) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of the child, its summary)."""
    import resource

    env = {**os.environ, "MAILER_SECRET_KEY": SECRET, "MAILER_CONFIG": str(config)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "mailer", "bounces", "scan", str(mbox)], env=env, cwd=ROOT,
                          capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall, cpu, " ".join(done.stdout.split())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--readers", type=int, default=4_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-bounces-") as tmp:
        folder = Path(tmp)
        mbox = folder / "bounces.mbox"
        mix = generate(mbox, args.messages, args.readers)
        url = f"sqlite:///{folder / 'mailer.db'}"
        config = folder / "config.toml"
        config.write_text((ROOT / "config.toml").read_text().replace('url = "sqlite:///mailer.db"', f'url = "{url}"'))
        seed(url, args.readers)
        first, first_cpu, summary = scan(config, mbox)
        again, again_cpu, _ = scan(config, mbox)
        size = mbox.stat().st_size
    load = os.getloadavg()[0]
    rate, rate_again = args.messages / first, args.messages / again
    body = f"""## Bounce mail: `mailer bounces scan` over a {args.messages:,}-message mbox

{size / 1e6:,.0f} MB; {", ".join(f"{k} {v:,}" for k, v in mix.items())}; a SQLite store of
{args.readers:,} readers. Whole command in a fresh process (start-up, parsing, the store's
lookups and the policy's writes included); load average {load:.1f} on {os.cpu_count()} cores
when it ended.

| run | wall time | messages/s | CPU time | messages per CPU second |
|---|---|---|---|---|
| first scan (events stored, readers suppressed) | {first:.1f} s | **{rate:,.0f}** | {first_cpu:.1f} s | {args.messages / first_cpu:,.0f} |
| the same mbox again (every event already stored) | {again:.1f} s | {rate_again:,.0f} | {again_cpu:.1f} s | {args.messages / again_cpu:,.0f} |

Goal: at least 1,000 messages/s ({"met" if min(rate, rate_again) >= 1000 else "NOT met"} in wall time; on a
busy machine the CPU-time column is the one that says what the command costs).
First scan said: {summary}"""
    print(body)
    from bench.report import write_section

    write_section("bounces", body, f".venv/bin/python bench/bounces.py --messages {args.messages}")


if __name__ == "__main__":
    main()
