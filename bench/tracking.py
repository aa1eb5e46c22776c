"""Benchmark click tracking: the send with and without it, and GET /c/... under load while a send runs.

  1. send: the November issue with a link on each of its 13 sources (so there is something to
     track), sent as in bench/send.py (fresh child process, SQLite ledger, local servers), without
     tracking and with `[tracking] clicks = "reader"` and `opens = true`, each pair interleaved.
     Client CPU is compared within a pair (wall time follows the shared machine's load).
  2. clicks: `mailer serve` in its own process (SQLite, then PostgreSQL); a tracked `mailer send`
     of READERS readers to the local SendGrid server runs in another, at full speed; once its
     links are stored, this process requests /c/{token} open-loop at RATE requests/s for SECONDS
     (a request starts every 1/RATE s whether or not earlier ones finished), each a random reader
     and link of that send with a browser's User-Agent; latency from scheduled start to full
     response. READERS is large enough that the send is still running when the clicks end (part 1
     sends 100,000 tracked readers in about 4.6 s on a quiet machine, so 300,000 take about 14 s
     besides the clicks; the table says whether it ran throughout, and how long it went on after).
     Then the server is stopped (it writes what its recorder holds) and the counts must add up to
     the requests answered.

    .venv/bin/python bench/tracking.py [--rate 500] [--seconds 10] [--readers 300000]
                                       [--sendgrid 100000] [--smtp 2000] [--repeat 2] [--sqlite-only]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import write_section  # noqa: E402
from bench.send import measured, sendgrid_server, smtp_sink  # noqa: E402
from bench.web import drop_pg, reset_pg, start_server, write_config  # noqa: E402

SECRET = "bench-secret-key-0123456789abcdef"      # bench/web.py's: start_server sets it
CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"


def linked_issue(folder: Path) -> Path:
    """The November issue with each "(Source)" of its items linked: 13 links to track."""
    text = (ROOT / "issues" / "2024-11.md").read_text(encoding="utf-8")
    count = 0

    def link(m) -> str:
        nonlocal count
        count += 1
        return f"{m.group(1)} ([{m.group(2)}](https://example.org/news/{count}?from=crank&issue=2024-11))\n"

    text = re.sub(r"^(- .*) \(([^()]+)\)\n", link, text, flags=re.M)
    assert count == 13, count
    path = folder / "2024-11.md"
    path.write_text(text, encoding="utf-8")
    return path


# --- 1. the send ----------------------------------------------------------------------------------

def send_rows(args, folder: Path) -> list:
    os.environ["BENCH_ISSUE"] = str(linked_issue(folder))
    rows = []
    for _ in range(args.repeat):
        for label, mode in (("without tracking", ""), ("with tracking", "reader")):
            os.environ["BENCH_TRACKING"] = mode
            r = measured("sendgrid", args.sendgrid, sendgrid_server)
            rows.append(("sendgrid", label, args.sendgrid, r))
            print(f"sendgrid {label} {args.sendgrid:,}: {r}", flush=True)
            r = measured("smtp", args.smtp, smtp_sink(True))
            rows.append(("smtp (bulk-DATA sink)", label, args.smtp, r))
            print(f"smtp {label} {args.smtp:,}: {r}", flush=True)
    os.environ.pop("BENCH_TRACKING")
    return rows


# --- 2. clicks while a send runs -----------------------------------------------------------------

def seed(db_url: str, readers: int) -> None:
    from sqlalchemy import insert

    from mailer import migrate
    from subscribers import store
    from subscribers.models import memberships, subscribers, utcnow

    engine = migrate.connect(db_url)
    now = utcnow()
    with engine.begin() as conn:
        list_id = store.create_list(conn, "crank", title="CRANK Call").id
        for start in range(1, readers + 1, 20_000):
            ids = range(start, min(readers, start + 19_999) + 1)
            conn.execute(insert(subscribers), [dict(id=i, email=f"reader{i}@example.org", name=f"Reader {i}",
                                                    attributes={}, created_at=now, updated_at=now) for i in ids])
            conn.execute(insert(memberships), [dict(list_id=list_id, subscriber_id=i, status="active",
                                                    consent_source="import", consent_at=now, created_at=now,
                                                    updated_at=now, token_key=f"{i:016x}") for i in ids])
        if conn.dialect.name == "postgresql":   # ids written by hand: the sequences must follow
            conn.exec_driver_sql("SELECT setval('subscribers_id_seq', (SELECT max(id) FROM subscribers))")
    engine.dispose()


def tracked_config(folder: Path, db_url: str, sendgrid_url: str) -> Path:
    from tests.events.signing import Signer

    config = write_config(folder, Signer().public_key, db_url)
    text = config.read_text(encoding="utf-8")
    for old, new in (('privacy_url = ""', 'privacy_url = "https://example.org/privacy"'),
                     ('clicks = "off"', 'clicks = "reader"'), ("opens = false", "opens = true"),
                     ('backend = "outbox"', 'backend = "sendgrid"'),
                     ('host = "https://api.sendgrid.com"', f'host = "{sendgrid_url}"'),
                     (f'issues_dir = "{ROOT / "issues"}"', f'issues_dir = "{folder}"')):
        assert old in text, old
        text = text.replace(old, new)
    config.write_text(text, encoding="utf-8")
    return config


def stored_links(db_url: str, timeout: float = 120.0) -> tuple[int, int]:
    """(send id, number of links) once the running send has stored its links."""
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                with engine.connect() as conn:
                    row = conn.execute(text("SELECT send_id, count(*) FROM send_links GROUP BY send_id")).first()
                    if row:
                        return int(row[0]), int(row[1])
            except Exception:  # noqa: BLE001 - the tables are not there yet: the send is migrating
                pass
            time.sleep(0.05)
    finally:
        engine.dispose()
    raise SystemExit("the send stored no links")


class Getter:
    """A lean HTTP/1.1 keep-alive GET client on asyncio streams (bench/web.py's RawClient, for GET)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.idle: list = []

    async def get(self, path: str) -> int:
        if self.idle:
            try:
                return await self._exchange(self.idle.pop(), path)
            except (OSError, asyncio.IncompleteReadError):
                pass
        return await self._exchange(await asyncio.open_connection("127.0.0.1", self.port), path)

    async def _exchange(self, conn, path: str) -> int:
        reader, writer = conn
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {CHROME}\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
        await reader.readexactly(length)
        self.idle.append(conn)
        return status

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()


async def _click(client: Getter, path: str, offset: float, go: asyncio.Future, out: list) -> None:
    due = await go + offset
    await asyncio.sleep(max(0.0, due - time.perf_counter()))
    try:
        ok = await client.get(path) == 302
    except (OSError, asyncio.IncompleteReadError, ValueError):
        ok = False
    out.append((time.perf_counter() - due, ok, offset))


async def _load(port: int, paths: list[str], rate: float) -> list:
    """(latency, answered, scheduled offset) per request. Every request's task is made before the
    clock starts: making thousands takes a loaded machine longer than any head start, and the
    first requests would be late before they were sent."""
    out: list = []
    client = Getter(port)
    go: asyncio.Future = asyncio.get_running_loop().create_future()
    tasks = [asyncio.ensure_future(_click(client, p, i / rate, go, out)) for i, p in enumerate(paths)]
    await asyncio.sleep(0)
    go.set_result(time.perf_counter() + 0.2)
    await asyncio.gather(*tasks)
    client.close()
    return out


def click_paths(send_id: int, links: int, readers: int, n: int) -> list[str]:
    from mailer.compose.tracking import Signer

    signer = Signer.from_secret(SECRET)
    rng = random.Random(27)
    made = int(time.time()) - 3600      # copies made an hour ago: the clicks are people's
    chosen = rng.sample(range(1, readers + 1), n)
    return [f"/c/{signer.link_part(send_id, rng.randrange(links))}.{signer.copy_part(send_id, True, who, made)}"
            for who in chosen]


def counted(db_url: str) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    with engine.connect() as conn:
        total = conn.execute(text("SELECT sum(clicks) + sum(machine_clicks) FROM send_tracking")).scalar()
    engine.dispose()
    return int(total or 0)


def click_run(label: str, db_url: str, args) -> dict:
    from bench.web import _cpu_seconds

    with tempfile.TemporaryDirectory(prefix="bench-tracking-") as tmp:
        folder = Path(tmp)
        if db_url.startswith("sqlite"):
            db_url = f"sqlite:///{tmp}/bench.db"
        linked_issue(folder)
        seed(db_url, args.readers)
        sg_url, sg_stop = sendgrid_server()
        config = tracked_config(folder, db_url, sg_url)
        server, port = start_server(config)
        env = {**os.environ, "MAILER_SECRET_KEY": SECRET, "SENDGRID_API_KEY": "SG.test", "PYTHONPATH": str(ROOT)}
        sending = subprocess.Popen([sys.executable, "-m", "mailer", "--config", str(config), "send", "2024-11",
                                    "--list", "crank", "--yes"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True)
        try:
            send_id, links = stored_links(db_url)
            paths = click_paths(send_id, links, args.readers, int(args.rate * args.seconds))
            cpu = _cpu_seconds(server.pid)
            results = asyncio.run(_load(port, paths, args.rate))
            cpu = _cpu_seconds(server.pid) - cpu
            ended = time.monotonic()
            running = sending.poll() is None
            sending.wait(600)
            after = time.monotonic() - ended     # how long the send went on after the clicks
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(30)
            sg_stop()
        answered = sum(ok for _, ok, _ in results)
        recorded = counted(db_url)
    latencies = sorted(1000 * lat for lat, ok, _ in results if ok)
    slowest = sorted(results, reverse=True)[:len(results) // 100]
    print(f"[{label}] the slowest 1 % were scheduled at (s): "
          f"{sorted(round(offset, 1) for _, _, offset in slowest)}", flush=True)
    q = statistics.quantiles(latencies, n=100)
    row = {"requests": len(results), "errors": len(results) - answered, "median": statistics.median(latencies),
           "p99": q[98], "max": latencies[-1], "recorded": recorded, "answered": answered,
           "send_running": running, "send_after": after if running else 0.0, "send_ok": sending.returncode == 0,
           "cpu_ms": 1000 * cpu / len(results)}
    print(f"[{label}] {row}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--readers", type=int, default=300_000)
    parser.add_argument("--sendgrid", type=int, default=100_000)
    parser.add_argument("--smtp", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--sqlite-only", action="store_true")
    parser.add_argument("--clicks-only", action="store_true", help="skip the send comparison")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    sends = []
    if not args.clicks_only:
        with tempfile.TemporaryDirectory(prefix="bench-tracking-") as tmp:
            sends = send_rows(args, Path(tmp))
    clicks = [("SQLite", click_run("SQLite", "sqlite://", args))]
    if not args.sqlite_only:
        schema = "bench_tracking"
        url = reset_pg(schema)
        if url:
            try:
                clicks.append(("PostgreSQL", click_run("PostgreSQL", url, args)))
            finally:
                drop_pg([schema])
    write_section("tracking", report(sends, clicks, args, load_before), "bench/run tracking" if _default(args)
                  else " ".join([".venv/bin/python bench/tracking.py", *sys.argv[1:]]))


def _default(args) -> bool:
    return (args.rate, args.seconds, args.readers, args.sendgrid, args.smtp, args.repeat, args.sqlite_only,
            args.clicks_only) == (500.0, 10.0, 300_000, 100_000, 2_000, 2, False, False)


def _throughout(r: dict) -> str:
    return f"yes (then {r['send_after']:.1f} s more)" if r["send_running"] else "no: it ended first"


def report(sends, clicks, args, load_before: float) -> str:
    lines = ["## Tracking: the send with and without it, and clicks while a send runs", ""]
    if sends:
        lines += ["The November issue with a link on each of its 13 sources, sent as in the send section (fresh child "
                  "process, SQLite ledger, local servers), without tracking and with `[tracking] clicks = \"reader\"`, "
                  f"`opens = true` (13 links and the open image per copy); each pair run {args.repeat} times, "
                  "interleaved.", "",
                  "| backend | tracking | readers | wall time | readers/s | client CPU | peak RSS |",
                  "|---|---|---|---|---|---|---|"]
        best: dict = {}
        for kind, label, n, r in sends:
            lines.append(f"| {kind} | {label} | {n:,} | {r['wall']:.1f} s | {n / r['wall']:,.0f} | {r['cpu']:.1f} s | "
                         f"{r['peak_mb']:.0f} MB |")
            best[kind, label] = min(best.get((kind, label), float("inf")), r["cpu"])
        lines.append("")
        for kind in dict.fromkeys(k for k, _ in best):
            plain, tracked = best[kind, "without tracking"], best[kind, "with tracking"]
            lines.append(f"- {kind}: best client CPU {plain:.2f} s without, {tracked:.2f} s with tracking "
                         f"({(tracked / plain - 1) * 100:+.0f} %; goal: within 10 %).")
        lines.append("")
    lines += [f"Clicks: `mailer serve` (one uvicorn process) while a tracked `mailer send` of {args.readers:,} "
              "readers to the local SendGrid server runs at full speed in another process (and the SendGrid "
              "server in a third); this process requests `/c/{token}` "
              f"open-loop at {args.rate:.0f} requests/s for {args.seconds:.0f} s, each a random reader and link of "
              "that send; latency from scheduled start to full response. Recorded: the counts once the server "
              "stopped (people + machine requests), against the requests answered. The last column says whether "
              "the send was still running when the clicks ended, and for how long it went on.", "",
              "| database | requests | median | p99 | max | server CPU per click | errors | recorded / answered "
              "| send running throughout |",
              "|---|---|---|---|---|---|---|---|---|"]
    for label, r in clicks:
        lines.append(f"| {label} | {r['requests']:,} | {r['median']:.1f} ms | {r['p99']:.1f} ms | {r['max']:.1f} ms | "
                     f"{r['cpu_ms']:.2f} ms | {r['errors']} | {r['recorded']:,} / {r['answered']:,} | "
                     f"{_throughout(r)}{'' if r['send_ok'] else ' (the send failed)'} |")
    lines += ["", f"Goals: p99 under 20 ms at 500 requests/s on both databases while a send runs; the send with "
              "tracking within 10 % of the one without. Load average (1 min) "
              f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after (2 cores, shared with other work)."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
