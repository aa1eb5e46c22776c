"""Benchmark `mailer send --workers N` on PostgreSQL: N in 1, 2, 4, through the local
SendGrid-compatible server. Writes the "workers" section of BENCHMARKS.md.

Each run gets a fresh schema in the PostgreSQL database named by MAILER_BENCH_PG_URL (default: the
tests' MAILER_TEST_PG_URL), seeded in bulk (INSERT ... SELECT generate_series) before the clock
starts; then the real command runs: `python -m mailer send 2024-11 --list crank --workers N --yes`.
Figures: wall time of the command (start of the send to the summary; composing and fixing the readers
included), SendGrid API calls, the peak RSS of the largest process (a worker, or the parent), and
the CPU the PostgreSQL server's processes used meanwhile (read from /proc: every postgres process on
the machine, so other load on the same server is counted too).

    .venv/bin/python bench/workers.py [--readers 100000] [--workers 1,2,4]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SECRET = "bench-secret-0123456789abcdef0123"
PG = os.environ.get("MAILER_BENCH_PG_URL") or os.environ.get(
    "MAILER_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def postgres_cpu() -> float:
    """CPU seconds used so far by every process called postgres: utime + stime, and cutime + cstime
    (the postmaster's reaped children: backends that closed during the run)."""
    tick, total = os.sysconf("SC_CLK_TCK"), 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        name, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        if name == "postgres":
            total += sum(int(x) for x in rest[11:15])
    return total / tick


def run(readers: int, workers: int) -> dict:
    import psycopg

    from tests.servers.sendgrid_server import SendGridServer
    from tests.test_workers import project, seed_many

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    plain = PG.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    url = f"{PG}{'&' if '?' in PG else '?'}options=-csearch_path%3D{schema}"
    try:
        seed_many(url, readers)
        with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp, SendGridServer(keep_bodies=False) as server:
            config = project(Path(tmp), ROOT, url, server=server)
            env = {**os.environ, "MAILER_SECRET_KEY": SECRET, "SENDGRID_API_KEY": "SG.test"}
            env.pop("MAILER_CONFIG", None)
            cpu, started = postgres_cpu(), time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "mailer", "--config", str(config), "send", "2024-11",
                                   "--list", "crank", "--workers", str(workers), "--yes", "--json"],
                                  cwd=tmp, env=env, capture_output=True, text=True)
            wall, db_cpu = time.perf_counter() - started, postgres_cpu() - cpu
            if done.returncode:
                raise SystemExit(f"--workers {workers} failed:\n{done.stderr}")
            summary = json.loads(done.stdout.strip().splitlines()[-1])
            stats = server.stats
            assert summary["sent"] == readers and len(stats.copies) == readers and stats.duplicate_refs == 0
            return {"wall": wall, "calls": stats.requests, "db_cpu": db_cpu,
                    "peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}
    finally:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def report(readers: int, rows: list) -> str:
    lines = [f"### `mailer send --workers N`, {readers:,} readers, PostgreSQL, local SendGrid server", "",
             "| workers | wall | readers/s | API calls | peak RSS, largest process | PostgreSQL CPU |",
             "|---|---|---|---|---|---|"]
    for n, r in rows:
        lines.append(f"| {n} | {r['wall']:.1f} s | {readers / r['wall']:,.0f} | {r['calls']:,} | "
                     f"{r['peak_mb']:.0f} MB | {r['db_cpu']:.1f} s |")
    lines += ["", "Wall time includes composing the issue in each worker and fixing the readers. Peak RSS is "
              "the largest of the parent and its workers (each run measured in a process of its own). With 1 "
              "worker `--workers 1` is the plain single-process send. PostgreSQL CPU counts every postgres "
              "process on the machine."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--readers", type=int, default=100_000)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)   # one measured run, in its own process
    args = parser.parse_args()
    if args.one:
        return print(json.dumps(run(args.readers, args.one)))
    rows = []
    for n in [int(x) for x in args.workers.split(",") if x]:
        done = subprocess.run([sys.executable, __file__, "--one", str(n), "--readers", str(args.readers)],
                              capture_output=True, text=True, cwd=ROOT)
        if done.returncode:
            raise SystemExit(done.stderr)
        r = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append((n, r))
        print(f"--workers {n}: {r}", flush=True)
    from bench.report import write_section

    write_section("workers", report(args.readers, rows), f"bench/run workers (bench/workers.py --readers "
                  f"{args.readers} --workers {args.workers})")


if __name__ == "__main__":
    main()
