"""Benchmark `mailer send --workers N` on PostgreSQL: N in 1, 2, 4, through the local
SendGrid-compatible server. Writes the "workers" section of BENCHMARKS.md.

Each run gets a fresh schema in the PostgreSQL database named by MAILER_BENCH_PG_URL (default: the
tests' MAILER_TEST_PG_URL; a database of its own keeps other work's backends out of the figures),
seeded in bulk (INSERT ... SELECT generate_series) before the clock starts; then the real command
runs: `python -m mailer send 2024-11 --list crank --workers N --yes`. Figures: wall time of the
command (start of the send to the summary; composing and fixing the readers included), SendGrid API
calls, the peak RSS of the largest process (a worker, or the parent), and CPU seconds: the
PostgreSQL backends (and autovacuum) of the benchmark's database, sampled from /proc while the
send runs; the mailer processes (parent and workers); the local SendGrid server (a thread pool
in this process).

    .venv/bin/python bench/workers.py [--readers 1000000] [--workers 1,2,4]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SECRET = "bench-secret-0123456789abcdef0123"
PG = os.environ.get("MAILER_BENCH_PG_URL") or os.environ.get(
    "MAILER_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SAMPLE = 0.2   # seconds between looks at the backends' CPU (a backend's last fraction before it exits is lost)


def backends_cpu(database: str) -> dict[str, float]:
    """pid -> CPU seconds (utime + stime) of every postgres process serving `database`: its backends
    ("postgres: USER DATABASE HOST ...") and autovacuum workers ("autovacuum worker DATABASE")."""
    tick, found = os.sysconf("SC_CLK_TCK"), {}
    needle = f" {database}".encode()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes()
            if not title.startswith(b"postgres:") or needle + b" " not in title + b" ":
                continue
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        rest = stat[stat.rindex(")") + 2:].split()
        found[pid] = (int(rest[11]) + int(rest[12])) / tick
    return found


class DatabaseCpu:
    """The CPU the database's processes used while it was running (backends come and go: each is
    sampled every SAMPLE seconds and its last sample kept)."""

    def __init__(self, database: str):
        self.database, self.seen, self.before = database, {}, backends_cpu(database)
        self._stop, self.own = threading.Event(), 0.0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid, cpu in backends_cpu(self.database).items():
                self.seen[pid] = max(self.seen.get(pid, 0.0), cpu)
            self.own = time.thread_time()
            self._stop.wait(SAMPLE)

    def __enter__(self) -> DatabaseCpu:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def seconds(self) -> float:
        return sum(cpu - self.before.get(pid, 0.0) for pid, cpu in self.seen.items())


def run(readers: int, workers: int) -> dict:
    import psycopg
    from sqlalchemy.engine import make_url

    from tests.servers.sendgrid_server import SendGridServer
    from tests.test_workers import project, seed_many

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    plain = PG.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    url = f"{PG}{'&' if '?' in PG else '?'}options=-csearch_path%3D{schema}"
    try:
        seed_many(url, readers)
        with psycopg.connect(plain, autocommit=True) as conn:   # as a list that has been there a while
            conn.execute(f'VACUUM ANALYZE "{schema}".subscribers, "{schema}".memberships')
        with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp, SendGridServer(keep_bodies=False) as server:
            config = project(Path(tmp), ROOT, url, server=server)
            env = {**os.environ, "MAILER_SECRET_KEY": SECRET, "SENDGRID_API_KEY": "SG.test"}
            env.pop("MAILER_CONFIG", None)
            load = os.getloadavg()[0]
            mine, theirs = os.times(), resource.getrusage(resource.RUSAGE_CHILDREN)
            with DatabaseCpu(make_url(PG).database) as db:
                started = time.perf_counter()
                done = subprocess.run([sys.executable, "-m", "mailer", "--config", str(config), "send", "2024-11",
                                       "--list", "crank", "--workers", str(workers), "--yes", "--json"],
                                      cwd=tmp, env=env, capture_output=True, text=True, check=False)
                wall = time.perf_counter() - started
            after, children = os.times(), resource.getrusage(resource.RUSAGE_CHILDREN)
            if done.returncode:
                raise SystemExit(f"--workers {workers} failed:\n{done.stderr}")
            summary = json.loads(done.stdout.strip().splitlines()[-1])
            stats = server.stats
            assert summary["sent"] == readers and len(stats.copies) == readers and stats.duplicate_refs == 0
            return {"wall": wall, "calls": stats.requests, "db_cpu": db.seconds, "load": load,
                    "mailer_cpu": (children.ru_utime + children.ru_stime) - (theirs.ru_utime + theirs.ru_stime),
                    "server_cpu": (after.user + after.system) - (mine.user + mine.system) - db.own,
                    "peak_mb": children.ru_maxrss / 1024}
    finally:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def report(readers: int, rows: list) -> str:
    lines = [f"### `mailer send --workers N`, {readers:,} readers, PostgreSQL, local SendGrid server", "",
             "| workers | wall | readers/s | API calls | peak RSS, largest process | CPU: PostgreSQL | "
             "CPU: mailer processes | CPU: SendGrid server | CPU, all | load average at start |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for n, r in rows:
        total = r["db_cpu"] + r["mailer_cpu"] + r["server_cpu"]
        lines.append(f"| {n} | {r['wall']:.1f} s | {readers / r['wall']:,.0f} | {r['calls']:,} | "
                     f"{r['peak_mb']:.0f} MB | {r['db_cpu']:.1f} s | {r['mailer_cpu']:.1f} s | "
                     f"{r['server_cpu']:.1f} s | {total:.1f} s | {r['load']:.2f} |")
    lines += ["", "Wall time includes composing the issue in each worker and fixing the readers. Peak RSS is "
              "the largest of the parent and its workers (each run measured in a process of its own). With 1 "
              "worker `--workers 1` is the plain single-process send. PostgreSQL CPU counts the backends "
              "and autovacuum of the benchmark's database only; the mailer processes are the parent and "
              "its workers."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--readers", type=int, default=1_000_000)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)   # one measured run, in its own process
    args = parser.parse_args()
    if args.one:
        return print(json.dumps(run(args.readers, args.one)))
    rows = []
    for n in [int(x) for x in args.workers.split(",") if x]:
        done = subprocess.run([sys.executable, __file__, "--one", str(n), "--readers", str(args.readers)],
                              capture_output=True, text=True, cwd=ROOT, check=False)
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
