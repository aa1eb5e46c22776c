"""The SendGrid request body: ours (JSON text handed to python-http-client as it is) against the
library's public path (`client.mail.send.post(request_body=dict)`), for docs/decisions.md.

Ours (mailer/send/deliver/sendgrid.py): each batch's JSON is written as text (personalizations with
the C string encoder, the shared part serialized once per edition) and handed over as `_Json`, a
`str` whose `encode` gives `_Bytes`, so the library neither json.dumps it again nor formats its
600 KB into a debug line. The public path: the same content as dicts, which the library
json.dumps on every request and whose bytes it formats into its `PAYLOAD:` debug line (the
`.format` runs whatever the log level).

    .venv/bin/python bench/sendgrid_body.py [--readers N] [--runs R]   # both ways; writes BENCHMARKS.md
    .venv/bin/python bench/sendgrid_body.py --per-batch         # client CPU per 1,000-reader request only
    .venv/bin/python bench/sendgrid_body.py --seed N FILE       # a seeded SQLite file, to copy per run
    .venv/bin/python bench/sendgrid_body.py --child ours|public FILE URL   # one whole send (prints JSON)

A whole send runs in a fresh process against the local SendGrid-compatible server, as bench/send.py
does; the database is copied from one seeded file before each, so both variants send the same.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.send import SECRET, seed, sendgrid_server  # noqa: E402


def public_path() -> None:
    """Make SendGridBackend use the library's public path: dict bodies, the library's JSON."""
    from mailer.model import REF_ARG, marker
    from mailer.send.deliver import sendgrid as sg

    def personalization(out) -> dict:
        name = " ".join(out.name.translate(sg._NOT_IN_NAME).split())
        subs = {}
        for field in out.edition.fields:
            raw = out.value(field, "text")
            subs[marker(field, "text")] = raw
            subs[marker(field, "html")] = html.escape(raw) if sg._NEEDS_ESCAPE.search(raw) else raw
        return {"to": [{"email": out.email, "name": name} if name else {"email": out.email}],
                "headers": {"List-Unsubscribe": f"<{out.unsubscribe_url}>", sg.REF_HEADER: out.ref},
                "custom_args": {REF_ARG: out.ref}, "substitutions": subs}

    def request_body(self, batch) -> dict:
        return {"personalizations": [personalization(out) for out in batch], **sg.shared_fields(batch[0].edition)}

    class Client:
        def __init__(self, client):
            self.client = client

        def post(self, request_body, request_headers=None):   # no content type of ours: the library's JSON
            return self.client.post(request_body=request_body)

    real_open = sg.SendGridBackend.open

    def open_(self) -> None:
        real_open(self)
        self._send_client = Client(self._send_client)

    sg.SendGridBackend.request_body = request_body
    sg.SendGridBackend.open = open_
    sg._Json = lambda body: body    # the dict goes through as it is


def child(variant: str, url: str, target: str) -> None:
    if variant == "public":
        public_path()
    from bench.send import child as send_child

    send_child("sendgrid", url, target)


def per_batch(n: int = 1000, rounds: int = 30) -> dict:
    """Client CPU for one request's body, each way, including what python-http-client does to it
    (json.dumps for a dict, .encode, the PAYLOAD debug line's format)."""
    import dataclasses
    import warnings

    warnings.simplefilter("ignore")
    os.environ.update(MAILER_SECRET_KEY=SECRET, SENDGRID_API_KEY="SG.test")
    from mailer.compose.personalize import Recipient, personalize, prepare
    from mailer.compose.render import compose_issue
    from mailer.config import load_settings
    from mailer.send.deliver import sendgrid as sg

    s = load_settings(ROOT / "config.toml")
    s = dataclasses.replace(s, compose=dataclasses.replace(s.compose, templates_dir=ROOT / "templates"))
    edition = prepare(compose_issue(ROOT / "issues" / "2024-11.md", s), s.newsletter)
    batch = [personalize(edition, Recipient(f"1.{i}", f"reader{i}@example.org", f"Reader {i}", "t" * 60))
             for i in range(n)]
    ours = sg.SendGridBackend(s.delivery.sendgrid, api_key="SG.test")
    ours_request_body, as_json = sg.SendGridBackend.request_body, sg._Json   # before public_path() swaps them

    def ours_body() -> int:
        data = as_json(ours_request_body(ours, batch)).encode("utf-8")
        f"PAYLOAD: {data}"  # the library's debug line, formatted whatever the log level
        return len(data)

    public_path()
    public = sg.SendGridBackend(s.delivery.sendgrid, api_key="SG.test")

    def public_body() -> int:
        data = json.dumps(public.request_body(batch)).encode("utf-8")
        f"PAYLOAD: {data}"  # the library's debug line, formatted whatever the log level
        return len(data)

    out = {}
    for name, fn in (("ours", ours_body), ("public", public_body)) * 2:   # twice: the second is kept
        size = fn()
        cpu = time.process_time()
        for _ in range(rounds):
            fn()
        out[name] = {"ms": (time.process_time() - cpu) / rounds * 1000, "bytes": size}
    return out


def seeded_file(path: Path, n: int) -> None:
    """n readers in one SQLite file, its write-ahead log folded in (so a copy of the file is whole)."""
    seed(f"sqlite:///{path}", n)
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def whole(n: int, runs: int) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-sgbody-") as tmp:
        seeded = Path(tmp) / "seed.db"
        seeded_file(seeded, n)
        target, stop = sendgrid_server()
        try:
            for _ in range(runs):
                for variant in ("ours", "public"):
                    run = Path(tmp) / "run.db"
                    shutil.copyfile(seeded, run)
                    done = subprocess.run([sys.executable, __file__, "--child", variant, f"sqlite:///{run}", target],
                                          check=False, capture_output=True, text=True, cwd=ROOT)
                    if done.returncode:
                        raise SystemExit(f"the {variant} send failed:\n{done.stderr}")
                    rows.append({"variant": variant, **json.loads(done.stdout.strip().splitlines()[-1])})
                    print(rows[-1], flush=True)
                    run.unlink()
        finally:
            stop()
    return rows


def report(batch: dict, rows: list[dict], n: int) -> str:
    def median(variant: str, key: str) -> float:
        values = sorted(r[key] for r in rows if r["variant"] == variant)
        return values[len(values) // 2]

    ratios = sorted(p["cpu"] / o["cpu"] for o, p in zip(rows[::2], rows[1::2], strict=True))
    load = os.getloadavg()[0]
    lines = ["## Send: the SendGrid request body, ours against the library's public path", "",
             "What `SendGridBackend` does with a request body (docs/decisions.md, \"The SendGrid body is handed "
             "over as text\"): ours is JSON text passed through as `_Json`; the public path is "
             "`client.mail.send.post(request_body=dict)` with the same content, which python-http-client "
             "`json.dumps`es and formats into its `PAYLOAD:` debug line on every request.", "",
             "| | ours | public path |", "|---|---|---|",
             f"| client CPU per 1,000-reader request (body, encoding, the library's debug line) | "
             f"{batch['ours']['ms']:.1f} ms | {batch['public']['ms']:.1f} ms |",
             f"| request size | {batch['ours']['bytes']:,} bytes | {batch['public']['bytes']:,} bytes |",
             f"| whole send of {n:,} readers, wall (median of {len(rows) // 2}) | {median('ours', 'wall'):.1f} s | "
             f"{median('public', 'wall'):.1f} s |",
             f"| the same, client CPU | {median('ours', 'cpu'):.1f} s | {median('public', 'cpu'):.1f} s |", "",
             f"Client CPU of the public path against ours, run by run (each pair in turn): "
             f"{', '.join(f'{r:.2f}' for r in ratios)}.", "",
             f"Load average when written: {load:.2f} (2 cores, shared with other work"
             + ("; noisy: the ratios hold better than the seconds)." if load > 2 else ").")]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", nargs=3)
    parser.add_argument("--seed", nargs=2)
    parser.add_argument("--per-batch", action="store_true")
    parser.add_argument("--readers", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if args.child:
        return child(*args.child)
    if args.seed:
        return seeded_file(Path(args.seed[1]).resolve(), int(args.seed[0]))
    batch = per_batch()
    print(json.dumps(batch), flush=True)
    if args.per_batch:
        return
    from bench.report import write_section

    rows = whole(args.readers, args.runs)
    write_section("sendgrid-body", report(batch, rows, args.readers),
                  f"bench/sendgrid_body.py --readers {args.readers} --runs {args.runs}")


if __name__ == "__main__":
    main()
