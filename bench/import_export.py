"""Benchmark: import and export of a generated 1,000,000-row CSV on SQLite and PostgreSQL.

    .venv/bin/python bench/import_export.py [--rows N] [--skip-postgres] [--runs N]

Generates a Mailchimp-style audience export in a temporary folder (1% invalid addresses, 1%
duplicates in another case), then, for each database, runs every phase in a fresh process so
that its peak RSS is its own: import into an empty list, the same import again (nothing
changes), and export. Peak RSS of a 100,000-row import is measured too: memory must not grow
with the file. On PostgreSQL the whole sequence runs `--runs` times (default 2), each in a fresh
schema: the table shows the best run and the spread, and the server's own CPU for that
connection (read from /proc: the server runs on this machine). Figures go to BENCHMARKS.md
(section import_export).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PG = os.environ.get("MAILER_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def generate(path: Path, rows: int) -> None:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["Email Address", "First Name", "Last Name", "City", "MEMBER_RATING", "OPTIN_TIME"])
        for i in range(rows):
            if i % 100 == 37:
                email = f"broken.{i}.example.com"                 # invalid: no @
            elif i % 100 == 73:
                email = f"Reader.{i - 1}@Example{(i - 1) % 97}.COM"  # a duplicate in another case
            else:
                email = f"reader.{i}@example{i % 97}.com"
            out.writerow([email, f"Ann{i % 1000}", f"Lee{i % 777}", ("Paris", "Oslo", "Lima")[i % 3],
                          str(i % 5), "2023-01-02 10:00:00"])


def phase(kind: str, url: str, path: str) -> dict:
    """Run in a fresh process: one import or export, timed, with its own peak RSS."""
    import resource

    from subscribers import db, store
    from subscribers.exporter import export_csv
    from subscribers.importer import import_csv

    engine = db.connect(url)
    backend = _backend(engine)  # the pool hands this same connection to the import or export
    server_before = _cpu_seconds(backend)
    if kind == "import":
        with engine.begin() as conn:
            if not any(lst.name == "bench" for lst in store.all_lists(conn)):
                store.create_list(conn, "bench")
        start = time.perf_counter()
        summary = import_csv(engine, path, "bench")
        seconds = time.perf_counter() - start
        result = {"rows": summary.rows, "imported": summary.imported, "unchanged": summary.unchanged,
                  "invalid": summary.invalid, "duplicates": summary.duplicates}
    else:
        start = time.perf_counter()
        summary = export_csv(engine, "bench", path)
        seconds = time.perf_counter() - start
        result = {"rows": summary.rows}
    own, child = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    server = _cpu_seconds(backend)
    result["server_cpu_s"] = None if server is None or server_before is None else server - server_before
    return {**result, "seconds": seconds, "rss_mb": own.ru_maxrss // 1024, "reader_rss_mb": child.ru_maxrss // 1024,
            "cpu_s": own.ru_utime + own.ru_stime, "reader_cpu_s": child.ru_utime + child.ru_stime}


def _backend(engine) -> int | None:
    if engine.dialect.name != "postgresql":
        return None
    with engine.connect() as conn:
        return conn.connection.driver_connection.info.backend_pid


def _cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU of a local process (the PostgreSQL backend), from /proc/PID/stat."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss(r: dict) -> str:
    if not r["reader_rss_mb"]:
        return f"{r['rss_mb']} MB (a file under 4 MB is parsed in-process, no reader)"
    return f"{r['rss_mb']} MB + reader {r['reader_rss_mb']} MB"


def run_phase(kind: str, url: str, path: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--phase", kind, "--url", url, "--path", str(path)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def pg_schema() -> tuple[str, str]:
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG.replace("postgresql+psycopg", "postgresql"), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return schema, f"{PG}{'&' if '?' in PG else '?'}options=-csearch_path%3D{schema}"


def drop_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(PG.replace("postgresql+psycopg", "postgresql"), autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def bench_database(name: str, url: str, work: Path, big: Path) -> dict[str, dict]:
    results = {}
    for label, kind, path in (("import (empty list)", "import", big), ("same import again", "import", big),
                              ("export", "export", work / f"{name}.csv")):
        results[label] = run_phase(kind, url, path)
        print(f"{name} {label}: {results[label]}", flush=True)
    return results


def table_rows(name: str, runs: list[dict[str, dict]]) -> list[str]:
    """One row per phase: the best of the runs, and the spread of rows/s when there were several."""
    lines = []
    for label in runs[0]:
        tries = [run[label] for run in runs]
        r = min(tries, key=lambda t: t["seconds"])
        rates = sorted(t["rows"] / t["seconds"] for t in tries)
        spread = f" ({rates[0]:,.0f}-{rates[-1]:,.0f} over {len(tries)} runs)" if len(tries) > 1 else ""
        cpu = f"{r['cpu_s']:.1f} s" + (f" + reader {r['reader_cpu_s']:.1f} s" if label != "export" else "")
        server = f"{r['server_cpu_s']:.1f} s" if r.get("server_cpu_s") is not None else "-"
        rss = f"{r['rss_mb']} MB" + (f" + reader {r['reader_rss_mb']} MB" if label != "export" else "")
        lines.append(f"| {name} | {label} | {r['rows']:,} | {r['seconds']:.1f} s | "
                     f"{r['rows'] / r['seconds']:,.0f}{spread} | {cpu} | {server} | {rss} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--runs", type=int, default=2, help="PostgreSQL runs, each in a fresh schema")
    parser.add_argument("--phase")
    parser.add_argument("--url")
    parser.add_argument("--path")
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(phase(args.phase, args.url, args.path)))
        return

    from bench.report import write_section

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
        work = Path(tmp)
        big, small = work / "audience.csv", work / "small.csv"
        generate(big, args.rows)
        generate(small, max(args.rows // 10, 1000))
        print(f"generated {args.rows:,} rows ({big.stat().st_size / 1e6:.0f} MB)", flush=True)
        small_rss = run_phase("import", f"sqlite:///{work / 'small.db'}", small)
        pg_note = ""
        rows = table_rows("SQLite", [bench_database("SQLite", f"sqlite:///{work / 'bench.db'}", work, big)])
        if not args.skip_postgres:
            runs = []
            for _ in range(max(args.runs, 1)):
                schema, url = pg_schema()
                try:
                    runs.append(bench_database("PostgreSQL", url, work, big))
                finally:
                    drop_schema(schema)
            rows += table_rows("PostgreSQL", runs)
            schema, url = pg_schema()
            try:
                small_pg = run_phase("import", url, small)
            finally:
                drop_schema(schema)
            pg_note = f" On PostgreSQL a {small_pg['rows']:,}-row import peaks at {_rss(small_pg)}."
    body = "\n".join([
        "## Subscriber import and export",
        "",
        f"A generated Mailchimp-style export of {args.rows:,} rows (1% invalid addresses, 1% duplicates in "
        "another case); each phase runs in a fresh process; rows/s counts rows read from the file "
        "(import) or written (export). Peak RSS is the importing process's own; the parsing reader "
        "process (subscribers/_reader.py) is shown beside it. CPU seconds include process start-up; the "
        "PostgreSQL server's own CPU (its backend for this connection) is a column of its own. PostgreSQL: "
        f"the best of {max(args.runs, 1)} runs, each in a fresh schema, with the spread of rows/s.",
        "",
        "| database | phase | rows | time | rows/s | CPU (this process + reader) | server CPU | peak RSS |",
        "| --- | --- | ---: | ---: | ---: | --- | ---: | --- |",
        *rows,
        "",
        f"Memory does not grow with the file: a {small_rss['rows']:,}-row import into SQLite peaks at "
        f"{_rss(small_rss)}; the rest of the {args.rows:,}-row figure is SQLite's page cache, which the "
        "importer raises to a fixed 64 MB." + pg_note,
        "",
        f"Machine load (1-minute load average) at start {load_before:.1f}, at end {os.getloadavg()[0]:.1f}: "
        "on a shared 2-core machine, wall time above the larger of the two CPU figures is time spent "
        "waiting for a core (or, on PostgreSQL, for the server).",
    ])
    default = args.rows == 1_000_000 and args.runs == 2 and not args.skip_postgres
    write_section("import_export", body, "bench/run import_export" if default else
                  " ".join([".venv/bin/python bench/import_export.py", *sys.argv[1:]]))
    print(body)


if __name__ == "__main__":
    main()
